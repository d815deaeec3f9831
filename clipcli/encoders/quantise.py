"""int8 variants of an exported tower, made from its saved fp32 graph (no torch needed).

ONNX Runtime's dynamic quantisation turns each MatMul into uint8 activations times 8-bit
weights, the activations scaled per run. Two things decide whether that is faithful:
- The CPU's kernels: on AVX2 without VNNI, uint8 x int8 products are summed in pairs into 16
  bits, which saturate; uint8 x uint8 is widened first and does not.
- The weights: trained transformers have activation channels hundreds of times larger than
  the rest, which leave the others a few levels of a per-tensor scale. Plain dynamic int8 then
  agrees with fp32 to a centred cosine of only 0.90 on a trained 6-layer transformer
  (all-MiniLM-L6-v2), against 0.999 on random weights of the same shape. The `split` variants
  take those outlier channels out into small fp32 products first (outliers.py), quantise
  weights per channel, and leave in fp32 the few products the calibration finds most
  sensitive (mixed_precision.py).

Everything here is a function of an ONNX graph and calibration inputs, so the same code runs
on a CLIP tower and on any other transformer. tower_checks.py judges each variant on the CPU
it runs on before anything uses it.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    split: bool = False  # outlier channels split out into fp32 products first (outliers.py)


# Plain dynamic int8 (s8) is tried first: the fastest, exact wherever int32 dot products exist
# (VNNI, AMX, ARM's sdot), and faithful on some weights. Trained transformers need a split
# variant: outlier channels in fp32, weights per channel, the most sensitive products left fp32.
# Its weights are int8 where the CPU sums int8 products exactly and uint8 elsewhere, as on AVX2
# int8 pair sums can saturate (tower_checks picks by CPU).
VARIANTS = (
    Int8Variant("s8", unsigned=False, per_channel=False),
    Int8Variant("split-s8", unsigned=False, per_channel=True, split=True),
    Int8Variant("split-u8", unsigned=True, per_channel=True, split=True),
)
BY_NAME = {variant.name: variant for variant in VARIANTS}


@dataclass(frozen=True)
class Prepared:
    """A graph as a variant quantises it, and the products it must leave fp32 whatever else."""

    graph: Any  # onnx.ModelProto
    fixed_fp32: tuple[str, ...] = ()


def load_graph(tower: Path) -> Any:
    """The saved optimised graph of `tower` with its weights, as an onnx.ModelProto."""
    import onnx

    return onnx.load(str(optimised_path(tower)))


def prepare(
    fp32: Path, variant: Int8Variant, feeds: Iterable[dict[str, np.ndarray]] = ()
) -> Prepared:
    """The saved fp32 graph of `fp32` as `variant` quantises it: for a split variant, outlier
    channels split out by their ranges over the calibration `feeds` (one input each, as int8
    runs them). The graph is read once: for ViT-B-32 it is 350 MB."""
    graph = load_graph(fp32)
    if not variant.split:
        return Prepared(graph)
    from clipcli.encoders.graph_products import input_ranges
    from clipcli.encoders.outliers import split_outliers

    split, fp32_products = split_outliers(graph, input_ranges(graph, feeds))
    return Prepared(split, tuple(fp32_products))


def quantise(
    prepared: Prepared, variant: Int8Variant, int8: Path, keep_fp32: Collection[str] = ()
) -> None:
    """Quantise a prepared graph into the saved optimised graph of `int8`, leaving in fp32 the
    products named in `keep_fp32` and those the preparation fixed.

    Only matrix products are quantised: ONNX Runtime's integer convolution is slower than its
    float one, and a ViT's patch embedding is exported as a MatMul anyway (onnx_export.py).
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = prepared.graph
    kept = {*keep_fp32, *prepared.fixed_fp32}
    products = [n.name for n in graph.graph.node if n.op_type in ("MatMul", "Gemm")]
    chosen = [name for name in products if name not in kept]
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
                    nodes_to_quantize=chosen if kept else None,
                    # The optimised graph holds ONNX Runtime's own fused operators, whose
                    # output types shape inference cannot tell: they are all float here.
                    extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
                )
        os.replace(plain, int8)
        save_optimised(int8)
    finally:
        for leftover in (plain, int8):
            leftover.unlink(missing_ok=True)
