"""Each exported backend is checked and timed on the CPU it runs on, and int8 keeps its contract
on every CPU: refused below its floor, batch-independent when it runs, chosen by auto only when
every figure of the gate holds. Tests read the machine's own answer from export.json, and
force the other outcome.

The tests marked `backends` run again under `make test-avx2`, on an emulated CPU with AVX2 and
no AVX-512, whose int8 kernels are the ones most laptops run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import edit_cpu_record, own_fingerprint, without_torch

from clipcli.encoders import choose, tower_checks
from clipcli.encoders.agreement import FLOORS, Agreement
from clipcli.encoders.choose import load_encoder
from clipcli.encoders.export_cache import ExportFolder
from clipcli.encoders.quantise import VARIANTS
from clipcli.errors import UsageError
from clipcli.models import cpu
from clipcli.vectors import normalise

VARIANT_NAMES = [variant.name for variant in VARIANTS]
SPLIT = tower_checks.variants_for_this_cpu()[-1].name


@pytest.fixture(scope="module")
def batch():
    torch.manual_seed(3)
    return torch.rand(6, 3, 64, 64) * 2 - 1


@pytest.fixture
def own_vit(vit_spec, tmp_path):
    """The tiny ViT under a fingerprint of its own: its export is this test's to change."""
    return own_fingerprint(vit_spec.pretrained, tmp_path, vit_spec.name)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1)


def this_cpu(spec) -> dict:
    return ExportFolder.for_spec(spec).read_meta()["cpus"][cpu.signature()]


def distorting(monkeypatch, amounts: dict[str, float]) -> None:
    """Make the named int8 variants less faithful, as a CPU whose kernels saturate would:
    each embedding is pulled towards a fixed direction by `amount`."""
    real = tower_checks.per_image_runner
    pull = np.random.default_rng(7).standard_normal(4096).astype(np.float32)

    def runner(path, *args, **kwargs):
        run = real(path, *args, **kwargs)
        stem = path.stem
        amount = next((a for name, a in amounts.items() if f"image-int8-{name}" in stem), 0.0)
        if not amount:
            return run
        return lambda batch: normalise((out := run(batch)) + amount * pull[: out.shape[1]])

    monkeypatch.setattr(tower_checks, "per_image_runner", runner)


def judged(monkeypatch, cosine: float = 1.0, centred: float = 1.0, top5=1.0, labels=1.0) -> None:
    """Every backend checked from now on gets these figures."""
    figures = Agreement(cosine, centred, top5, labels)
    monkeypatch.setattr(tower_checks.Calibration, "judge", lambda self, run: figures)


@pytest.mark.backends
def test_every_backend_is_measured_here_and_recorded_under_this_cpu(own_vit, batch):
    encoder = load_encoder(own_vit, "cpu", "auto")
    record = this_cpu(own_vit)
    assert set(record) == {"torch", "fp32", "int8"}
    assert record["torch"]["rate"] > 0 and record["torch"]["estimated"] is False
    for kind in ("fp32", "int8"):
        assert {"cosine", "centred", "top5", "labels", "rate", "start_s"} <= record[kind].keys()
    assert record["int8"]["variant"] in VARIANT_NAMES
    assert record["int8"]["variant"] in record["int8"]["tried"]
    chosen = choose.fastest(record)
    assert encoder.backend == ("torch-fp32" if chosen == "torch" else f"onnx-{chosen}")
    reference = load_encoder(own_vit, "cpu", "fp32")
    assert cosines(encoder.encode_images(batch), reference.encode_images(batch)).min() > 0.999


@pytest.mark.backends
def test_int8_is_accepted_or_refused_on_this_cpu_as_its_record_says(vit_spec, batch):
    load_encoder(vit_spec, "cpu", "auto")
    cosine = this_cpu(vit_spec)["int8"].get("cosine", 0.0)
    if cosine >= tower_checks.MIN_COSINE["int8"]:
        encoder = load_encoder(vit_spec, "cpu", "int8")
        assert encoder.backend == "onnx-int8"
        reference = load_encoder(vit_spec, "cpu", "fp32")
        assert cosines(encoder.encode_images(batch), reference.encode_images(batch)).min() > 0.9
    else:
        with pytest.raises(UsageError, match=f"lowest cosine {cosine:.4f}"):
            load_encoder(vit_spec, "cpu", "int8")


@pytest.mark.backends
def test_a_backend_below_its_floor_is_refused_and_auto_keeps_torch(own_vit, monkeypatch):
    judged(monkeypatch, cosine=0.97, centred=0.9)
    assert load_encoder(own_vit, "cpu", "auto").backend == "torch-fp32"
    for precision in ("onnx", "int8"):
        with pytest.raises(UsageError, match=r"does not agree with torch \(lowest cosine 0.9700\)"):
            load_encoder(own_vit, "cpu", precision)


@pytest.mark.backends
def test_an_accepted_int8_embeds_each_image_alone(own_vit, batch, monkeypatch):
    judged(monkeypatch)  # int8 accepted here
    encoder = load_encoder(own_vit, "cpu", "int8")
    assert encoder.backend == "onnx-int8"
    alone = np.concatenate([encoder.encode_images(batch[i : i + 1]) for i in range(len(batch))])
    np.testing.assert_array_equal(encoder.encode_images(batch), alone)
    np.testing.assert_array_equal(encoder.encode_images(batch[2:4]), alone[2:4])


@pytest.mark.parametrize("figure", sorted(FLOORS))
def test_auto_takes_int8_only_with_every_figure_at_its_floor(own_vit, figure):
    load_encoder(own_vit, "cpu", "auto")
    exact = {"cosine": 1.0, "centred": 1.0, "top5": 1.0, "labels": 1.0}
    for value, chosen in [(FLOORS[figure] - 0.0001, "onnx-fp32"), (FLOORS[figure], "onnx-int8")]:
        edit_cpu_record(
            own_vit,
            torch={"rate": 0.001},
            fp32={**exact, "rate": 1.0},
            int8={**exact, figure: value, "rate": 1000.0},
        )
        assert load_encoder(own_vit, "cpu", "auto").backend == chosen, (figure, value)


def test_the_first_int8_variant_that_keeps_the_gate_is_kept(own_vit, monkeypatch):
    distorting(monkeypatch, {"s8": 1.0})  # as on trained weights: plain int8 fails the gate
    load_encoder(own_vit, "cpu", "auto")
    int8 = this_cpu(own_vit)["int8"]
    assert int8["variant"] == SPLIT and int8["refused"] is None
    assert list(int8["tried"]) == ["s8", SPLIT]
    assert int8["tried"]["s8"]["centred"] < FLOORS["centred"] <= int8["centred"]
    assert 0 <= int8["fp32_kept"] < int8["products"]
    assert int8["counts"][str(int8["fp32_kept"])] is True
    folder = ExportFolder.for_spec(own_vit)
    assert folder.graph_saved(folder.tower(int8["graph"]))
    assert not folder.graph_saved(folder.tower("image-int8-s8"))  # not kept: tens of MB
    assert sorted(p.name for p in folder.path.glob("image-int8-*")) == [
        f"{int8['graph']}.opt.onnx",
        f"{int8['graph']}.opt.weights",
    ]  # the sweep's probes are gone


def test_with_no_variant_keeping_the_gate_the_closest_is_kept_for_explicit_use_only(
    own_vit, monkeypatch
):
    distorting(monkeypatch, {"s8": 1.0, "split": 0.05})
    encoder = load_encoder(own_vit, "cpu", "auto")
    int8 = this_cpu(own_vit)["int8"]
    assert list(int8["tried"]) == ["s8", SPLIT]
    assert int8["variant"] == max(int8["tried"], key=lambda name: int8["tried"][name]["centred"])
    assert int8["centred"] < FLOORS["centred"]
    assert "centred" in int8["refused"] and SPLIT in int8["refused"]  # why, in export.json
    assert encoder.backend != "onnx-int8"
    if int8["cosine"] >= tower_checks.MIN_COSINE["int8"]:
        assert load_encoder(own_vit, "cpu", "int8").backend == "onnx-int8"


def test_an_export_from_another_cpu_is_checked_here_without_torch(own_vit):
    load_encoder(own_vit, "cpu", "auto")  # exported and checked on this CPU
    found = without_torch(
        "from clipcli.models.names import ModelSpec\n"
        "from clipcli.encoders.choose import exported_image_encoder\n"
        "from clipcli.encoders.tower_checks import cpu_record\n"
        "from clipcli.encoders.export_cache import ExportFolder\n"
        f"spec = ModelSpec({own_vit.name!r}, {own_vit.pretrained!r})\n"
        "encoder = exported_image_encoder(spec, images=1)\n"
        "result = {'backend': encoder and encoder.backend,\n"
        "          'record': cpu_record(ExportFolder.for_spec(spec).read_meta())}",
        signature="test-cpu-elsewhere",
    )
    record = found["record"]
    assert record["torch"]["estimated"] is True and record["torch"]["rate"] > 0
    assert record["fp32"]["cosine"] > 0.999
    assert found["backend"] == f"onnx-{choose.fastest(record, 1)}"
    cpus = ExportFolder.for_spec(own_vit).read_meta()["cpus"]
    assert set(cpus) == {cpu.signature(), "test-cpu-elsewhere"}


def test_a_variant_unfaithful_on_the_new_cpu_is_replaced_there(own_vit, monkeypatch):
    monkeypatch.setattr(cpu, "signature", lambda: "test-cpu-with-vnni")
    with monkeypatch.context() as there:
        judged(there)
        load_encoder(own_vit, "cpu", "auto")
    assert this_cpu(own_vit)["int8"]["variant"] == "s8"

    monkeypatch.setattr(cpu, "signature", lambda: "test-cpu-avx2-only")
    monkeypatch.setattr(cpu, "int8_dot_products", lambda: False)
    distorting(monkeypatch, {"s8": 1.0})
    assert choose.exported_image_encoder(own_vit) is not None  # checked here, no torch
    there = this_cpu(own_vit)["int8"]
    assert there["variant"] == "split-u8"  # uint8 weights, which AVX2 sums without saturating
    folder = ExportFolder.for_spec(own_vit)
    for graph in ("image-int8-s8", there["graph"]):  # each CPU's record still names a graph
        assert folder.graph_saved(folder.tower(graph))


def test_a_few_images_skip_torch_even_where_it_is_faster_per_image(own_vit):
    load_encoder(own_vit, "cpu", "auto")
    edit_cpu_record(
        own_vit,
        torch={"rate": 1000.0, "start_s": 5.0},
        fp32={"cosine": 1.0, "rate": 100.0, "start_s": 0.1},
        int8={"centred": 0.9, "rate": 100.0},
    )
    assert choose.exported_image_encoder(own_vit, images=4).backend == "onnx-fp32"
    assert choose.exported_image_encoder(own_vit, images=100_000) is None  # torch then


def test_torch_start_up_is_timed_in_a_process_that_starts_without_it(random_checkpoint, tmp_path):
    import subprocess
    import sys

    spec = own_fingerprint(random_checkpoint, tmp_path)
    code = (
        "from clipcli.encoders.choose import load_encoder\n"
        "from clipcli.models.names import resolve_model_spec\n"
        f"load_encoder(resolve_model_spec({spec.name!r}, {spec.pretrained!r}), 'cpu')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    torch = this_cpu(spec)["torch"]
    assert torch["start_s"] != tower_checks.DEFAULT_TORCH_START_S  # measured, not assumed
    assert torch["start_s"] > 0.2  # importing torch alone takes longer than that anywhere
