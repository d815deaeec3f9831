"""The ONNX Runtime fast path: same answers as open_clip's torch reference, chosen only when so."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import TEST_MODEL, make_image

from clipcli import onnx_towers
from clipcli.encoder import ModelSpec, load_encoder
from clipcli.errors import UsageError
from clipcli.tokenizer import PROBES, FastTokenizer, build_from_open_clip


@pytest.fixture(scope="module")
def spec(random_checkpoint):
    return ModelSpec(TEST_MODEL, str(random_checkpoint))


@pytest.fixture(scope="module")
def batch():
    torch.manual_seed(3)
    return torch.rand(6, 3, 64, 64) * 2 - 1


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1)


def test_auto_runs_the_image_tower_on_onnx_runtime_when_it_agrees(spec, batch):
    encoder = load_encoder(spec, "cpu", "auto")
    assert encoder.backend == "onnx-fp32"
    meta = onnx_towers.ExportFolder.for_spec(spec).read_meta()
    assert meta["image_fp32_cosine"] >= 0.999
    assert cosines(encoder.encode_images(batch), encoder.encode_images_torch(batch)).min() > 0.999


def test_fp32_is_the_open_clip_reference(spec, batch):
    encoder = load_encoder(spec, "cpu", "fp32")
    assert (encoder.backend, encoder.image_runner) == ("torch-fp32", None)
    with torch.no_grad():
        expected = encoder.model.encode_image(batch, normalize=True).numpy()
    np.testing.assert_array_equal(encoder.encode_images(batch), expected)


def test_int8_is_opt_in_and_reports_its_agreement(spec, batch):
    encoder = load_encoder(spec, "cpu", "int8")
    assert encoder.backend == "onnx-int8"
    meta = onnx_towers.ExportFolder.for_spec(spec).read_meta()
    measured = cosines(encoder.encode_images(batch), encoder.encode_images_torch(batch)).min()
    assert 0.9 < meta["image_int8_cosine"] <= 1.0 + 1e-6
    assert measured > 0.9  # a random tiny model; bench/RESULTS.md reports ViT-B-32's figure


def test_exports_are_made_once_per_model(spec):
    load_encoder(spec, "cpu", "onnx")
    tower = onnx_towers.ExportFolder.for_spec(spec).tower("image-fp32")
    before = tower.stat().st_mtime_ns
    load_encoder(spec, "cpu", "onnx")
    assert tower.stat().st_mtime_ns == before


def test_unknown_precision_is_a_usage_error(spec):
    with pytest.raises(UsageError, match="unknown precision"):
        load_encoder(spec, "cpu", "fp8")


def test_bf16_on_a_cpu_without_bf16_is_refused(spec):
    from clipcli.encoder import _cpu_has_bf16

    if _cpu_has_bf16():
        encoder = load_encoder(spec, "cpu", "bf16")
        assert encoder.backend == "torch-bf16"
    else:
        with pytest.raises(UsageError, match="bf16"):
            load_encoder(spec, "cpu", "bf16")


def test_fast_tokenizer_gives_open_clips_tokens(tmp_path):
    import open_clip

    reference = open_clip.get_tokenizer("ViT-B-32")
    path = tmp_path / "tokenizer.json"
    build_from_open_clip(reference).save(str(path))
    fast = FastTokenizer.load(path, reference.sot_token_id, reference.eot_token_id, 77)
    texts = [*PROBES, "a photo of a red star.", "Zürich at NIGHT", "don't stop", "x" * 500]
    np.testing.assert_array_equal(fast(texts), reference(texts).numpy())


def test_search_answers_without_importing_torch_and_like_torch(
    cli, model_args, photo_folder, tmp_path
):
    index = tmp_path / "index"
    assert cli("index", photo_folder, "--index", index, *model_args).exit_code == 0
    script = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from clipcli.searcher import search_index\n"
        f"hits = search_index(Path({str(index)!r}), 'a red square', top_k=5)\n"
        "print(json.dumps({'torch': 'torch' in sys.modules, 'paths': [h.path for h in hits],"
        " 'scores': [h.score for h in hits]}))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    fast = json.loads(out.stdout)
    assert fast["torch"] is False

    # The torch reference: open_clip's text tower, then the same vector index.
    from clipcli import vector_index
    from clipcli.catalog import Catalog

    spec = ModelSpec(model_args[1], model_args[3])
    torch_query = load_encoder(spec, "cpu", "fp32").encode_texts(["a red square"])[0]
    with Catalog(index) as catalog:
        hits = vector_index.search(vector_index.refresh(index, catalog), torch_query, 5)
        paths = catalog.paths_for([h.id for h in hits])
    assert fast["paths"] == [paths[h.id] for h in hits]
    np.testing.assert_allclose(fast["scores"], [h.score for h in hits], atol=1e-3)


def test_classify_results_agree_across_backends(cli, model_args, tmp_path):
    images = [make_image(tmp_path / f"{c}.png", c, (90, 70)) for c in ("red", "navy", "gold")]
    runs = {}
    for precision in ("fp32", "onnx"):
        result, data = cli.json(
            "classify",
            *images,
            "--labels",
            "red,blue,yellow,cat",
            "--precision",
            precision,
            *model_args,
        )
        assert result.exit_code == 0, result.stderr
        runs[precision] = data
    for a, b in zip(runs["fp32"], runs["onnx"], strict=True):
        assert [p["label"] for p in a["predictions"]] == [p["label"] for p in b["predictions"]]
        for pa, pb in zip(a["predictions"], b["predictions"], strict=True):
            assert pa["similarity"] == pytest.approx(pb["similarity"], abs=1e-4)
