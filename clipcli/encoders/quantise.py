"""int8 variants of an exported image tower, made from its saved fp32 graph (no torch needed).

ONNX Runtime's dynamic quantisation turns each MatMul into uint8 activations times 8-bit
weights. Which weights are faithful depends on the CPU's kernels: on AVX2 without VNNI, uint8 x
int8 products are summed in pairs into 16 bits, which saturate and cost agreement (cosine 0.94
on ViT-B-32 here, 0.9998 on an AVX-512 VNNI machine); uint8 x uint8 is widened before it is
multiplied, and 7-bit weights leave the pair sums room. ONNX Runtime documents reduce_range and
per-channel weights for CPUs without VNNI. Each variant is checked against torch on the CPU it
runs on (tower_checks.py) before anything uses it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from clipcli.encoders.onnx_sessions import optimised_path, save_optimised
from clipcli.encoders.quiet import stderr_silenced


@dataclass(frozen=True)
class Int8Variant:
    """One way of quantising the weights of every MatMul and Gemm."""

    name: str
    unsigned: bool  # uint8 weights (else int8)
    per_channel: bool  # a scale per output column (else one per matrix)
    reduce_range: bool  # 7-bit weights


# Tried in this order on a CPU, fastest first where they are faithful; the first that agrees
# with torch is kept. s8 is exact wherever int32 dot products exist (VNNI, AMX, ARM's sdot);
# u8 avoids AVX2's 16-bit saturation at about 10% of the speed; s7c is the documented fallback.
VARIANTS = (
    Int8Variant("s8", unsigned=False, per_channel=False, reduce_range=False),
    Int8Variant("u8", unsigned=True, per_channel=False, reduce_range=False),
    Int8Variant("s7c", unsigned=False, per_channel=True, reduce_range=True),
)
BY_NAME = {variant.name: variant for variant in VARIANTS}


def quantise(fp32: Path, variant: Int8Variant, int8: Path) -> None:
    """Quantise the saved optimised graph of `fp32` into the saved optimised graph of `int8`.

    Only matrix products are quantised: ONNX Runtime's integer convolution is slower than its
    float one, and a ViT's patch embedding is exported as a MatMul anyway (onnx_export.py).
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    plain = int8.with_suffix(".tmp.onnx")
    try:
        with stderr_silenced():
            quantize_dynamic(
                str(optimised_path(fp32)),
                str(plain),
                weight_type=QuantType.QUInt8 if variant.unsigned else QuantType.QInt8,
                per_channel=variant.per_channel,
                reduce_range=variant.reduce_range,
                op_types_to_quantize=["MatMul", "Gemm"],
                # The optimised graph holds ONNX Runtime's own fused operators, whose output
                # types shape inference cannot tell: they are all float here.
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
        os.replace(plain, int8)
        save_optimised(int8)
    finally:
        for leftover in (plain, int8):
            leftover.unlink(missing_ok=True)
