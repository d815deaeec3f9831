"""On trained weights the gate refuses plain dynamic int8, and the split mixed-precision graph
keeps it. The model is all-MiniLM-L6-v2 (trained_proxy.py), run through the same
quantiser and gate as a CLIP tower: they take an ONNX graph and calibration inputs, nothing
model-specific."""

from __future__ import annotations

from pathlib import Path

import pytest
from trained_proxy import ExportedProxy

from clipcli.encoders import agreement
from clipcli.encoders.mixed_precision import find_mix
from clipcli.encoders.quantise import BY_NAME, prepare, quantise
from clipcli.encoders.tower_checks import variants_for_this_cpu

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> ExportedProxy:
    return ExportedProxy(tmp_path_factory.mktemp("minilm"))


def test_the_fp32_export_agrees_with_torch(proxy):
    assert proxy.judge(proxy.fp32).shortfalls() == []


def test_the_gate_refuses_plain_dynamic_int8_on_trained_weights(proxy, tmp_path):
    variant = BY_NAME["s8"]
    quantise(prepare(proxy.fp32, variant), variant, tmp_path / "s8.onnx")
    figures = proxy.judge(tmp_path / "s8.onnx")
    assert figures.centred < 0.99  # 0.86-0.90 measured, on AVX2 and on AVX-512 VNNI
    assert not agreement.passes(figures.to_dict())


def test_the_split_mix_keeps_the_gate_with_most_products_in_int8(proxy, tmp_path):
    variant = variants_for_this_cpu()[-1]  # the split variant for this CPU's kernels
    tried: list[Path] = []

    def path_for(keep: list[str]) -> Path:
        tried.append(tmp_path / f"fp32-{len(keep)}.onnx")
        return tried[-1]

    found = find_mix(proxy.fp32, variant, proxy.calibration, proxy.judge, path_for)
    assert found.products == 36  # q, k, v, output, feed-forward up and down, in 6 layers
    assert found.mix.keep_fp32 is not None
    assert len(found.prepared.fixed_fp32) >= 6  # outlier channels split out of most products
    assert len(found.keep_fp32) <= found.products // 4  # 1-2 measured
    assert found.saved == tmp_path / f"fp32-{len(found.keep_fp32)}.onnx"
    assert agreement.passes(proxy.judge(found.saved).to_dict())
    left = sorted(path.name for path in tmp_path.glob("fp32-*"))
    assert left == [f"{found.saved.stem}.opt.onnx", f"{found.saved.stem}.opt.weights"]
    # Which count passes depends on this CPU's int8 kernels; that it is the fewest does not.
    kept = len(found.keep_fp32)
    assert [int(path.stem.split("-")[1]) for path in tried] == list(found.mix.tried)
    assert tried[0] == tmp_path / "fp32-0.onnx"  # int8 throughout is tried first
    assert found.mix.tried[kept] is True
    assert all(passed is False for count, passed in found.mix.tried.items() if count < kept)
    assert kept == 0 or found.mix.tried[kept - 1] is False  # one fewer does not keep the gate
