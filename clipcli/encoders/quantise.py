"""int8 variants of an exported tower, made from its saved fp32 graph (no torch needed).

ONNX Runtime's dynamic quantisation turns each MatMul into uint8 activations times 8-bit
weights, the activations scaled per run. Two things decide whether that is faithful:
- The CPU's kernels: on AVX2 without VNNI, uint8 x int8 products are summed in pairs into 16
  bits, which saturate; uint8 x uint8 is widened first and does not.
- The weights: trained transformers have activation channels hundreds of times larger than
  the rest, which leave the others a few levels of a per-tensor scale. Plain dynamic int8 then
  agrees with fp32 to a centred cosine of only 0.86 on a trained 6-layer transformer
  (all-MiniLM-L6-v2), against 0.998 on random weights of the same shape. The `smooth` recipe
  moves those outliers into the weights first (smoothing.py), quantises weights per channel,
  and leaves in fp32 the MatMuls the calibration finds most sensitive (mixed_precision.py).

Everything here is a function of an ONNX graph and calibration inputs, so the same code runs
on a CLIP tower and on any other transformer. tower_checks.py judges each variant on the CPU
it runs on before anything uses it.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipcli.encoders.onnx_sessions import optimised_path, save_optimised
from clipcli.encoders.quiet import stderr_silenced


@dataclass(frozen=True)
class Int8Variant:
    """One way of quantising a graph's matrix products."""

    name: str
    unsigned: bool  # uint8 weights (else int8)
    per_channel: bool  # a scale per output column (else one per matrix)
    reduce_range: bool = False  # 7-bit weights
    smoothed: bool = False  # outliers moved into the weights first (smoothing.py)


# Plain dynamic int8 (s8) is tried first: the fastest, exact wherever int32 dot products exist
# (VNNI, AMX, ARM's sdot), and faithful on some weights. Trained transformers need a smoothed
# variant: outliers moved, weights per channel, the most sensitive products left fp32. Its
# weights are int8 where the CPU sums int8 products exactly, and uint8 elsewhere: on AVX2 the
# rows smoothing enlarges make int8 pair sums saturate (tower_checks picks by CPU).
VARIANTS = (
    Int8Variant("s8", unsigned=False, per_channel=False),
    Int8Variant("smooth-s8", unsigned=False, per_channel=True, smoothed=True),
    Int8Variant("smooth-u8", unsigned=True, per_channel=True, smoothed=True),
)
BY_NAME = {variant.name: variant for variant in VARIANTS}


def load_graph(tower: Path) -> object:
    """The saved optimised graph of `tower` with its weights, as an onnx.ModelProto."""
    import onnx

    return onnx.load(str(optimised_path(tower)))


def calibration_ranges(
    fp32: Path, variant: Int8Variant, batches: Iterable[dict[str, np.ndarray]]
) -> dict[str, np.ndarray] | None:
    """What `variant` needs to know of the calibration inputs: None for plain dynamic int8."""
    if not variant.smoothed:
        return None
    from clipcli.encoders.smoothing import input_ranges

    return input_ranges(load_graph(fp32), batches)


def prepared_graph(
    fp32: Path, variant: Int8Variant, ranges: dict[str, np.ndarray] | None
) -> object:
    """The fp32 graph as `variant` quantises it: smoothed where the variant says so."""
    graph = load_graph(fp32)
    if variant.smoothed:
        from clipcli.encoders.smoothing import smooth

        graph = smooth(graph, ranges or {})
    return graph


def quantise(
    graph: object, variant: Int8Variant, int8: Path, keep_fp32: Collection[str] = ()
) -> None:
    """Quantise `graph` (prepared_graph) into the saved optimised graph of `int8`, leaving the
    MatMuls named in `keep_fp32` in fp32.

    Only matrix products are quantised: ONNX Runtime's integer convolution is slower than its
    float one, and a ViT's patch embedding is exported as a MatMul anyway (onnx_export.py).
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    products = [n.name for n in graph.graph.node if n.op_type in ("MatMul", "Gemm")]  # type: ignore[attr-defined]
    chosen = [name for name in products if name not in set(keep_fp32)]
    plain = int8.with_suffix(".tmp.onnx")
    try:
        if not chosen:  # quantize_dynamic reads an empty list as "all of them"
            onnx.save(graph, str(plain))
        else:
            with stderr_silenced():
                quantize_dynamic(
                    graph,
                    str(plain),
                    weight_type=QuantType.QUInt8 if variant.unsigned else QuantType.QInt8,
                    per_channel=variant.per_channel,
                    reduce_range=variant.reduce_range,
                    op_types_to_quantize=["MatMul", "Gemm"],
                    nodes_to_quantize=None if not keep_fp32 else chosen,
                    # The optimised graph holds ONNX Runtime's own fused operators, whose
                    # output types shape inference cannot tell: they are all float here.
                    extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
                )
        os.replace(plain, int8)
        save_optimised(int8)
    finally:
        for leftover in (plain, int8):
            leftover.unlink(missing_ok=True)
