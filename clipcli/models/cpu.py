"""What this CPU offers the integer and float kernels that ONNX Runtime and torch choose from.

ONNX Runtime picks its int8 matrix kernels by instruction set: AVX2 multiplies uint8 by int8
with 16-bit intermediate sums that can saturate, AVX-512 VNNI and AVX-VNNI do not, ARM uses dot
product instructions. The same export can therefore agree with torch on one machine and not
on another, so what clipcli measures about a backend is recorded per CPU signature.

The flags come from CPUID as numpy reads it at import (so an emulated CPU, under qemu-user,
reports what it emulates), with /proc/cpuinfo consulted only for the flags numpy does not
name, and only when it tells the same story about AVX-512.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

# numpy's name -> the name used here, for the features the backends' kernels depend on.
_NUMPY_FLAGS = {
    "AVX2": "avx2",
    "FMA3": "fma",
    "AVX512F": "avx512f",
    "AVX512BW": "avx512bw",
    "AVX512VNNI": "avx512_vnni",
    "AVX512BF16": "avx512_bf16",
    "AVX512FP16": "avx512_fp16",
    "ASIMD": "asimd",
    "ASIMDDP": "asimddp",
    "ASIMDHP": "asimdhp",
    "SVE": "sve",
}
# Flags numpy does not report: AVX-VNNI (the 256-bit form of VNNI), AMX, ARM's int8 matmul.
_CPUINFO_FLAGS = ("avx_vnni", "amx_tile", "amx_int8", "amx_bf16", "i8mm")
CPUINFO = Path("/proc/cpuinfo")


@functools.cache
def flags() -> tuple[str, ...]:
    """The backend-relevant features of this CPU, sorted (empty when nothing can be read)."""
    found = set(_numpy_flags())
    extra = _cpuinfo_flags()
    # Under an emulator /proc/cpuinfo describes the host: trust it only where it agrees with
    # CPUID on AVX-512, the line between the kernel families that matter most.
    if ("avx512f" in extra) == ("avx512f" in found):
        found |= {flag for flag in _CPUINFO_FLAGS if flag in extra}
    return tuple(sorted(found))


def signature() -> str:
    """The key measurements are recorded under: machine type and flags, e.g. 'x86_64 avx2 fma'."""
    return " ".join([platform.machine().lower() or "unknown", *flags()])


# Instructions that sum int8 products into 32 bits: with them int8 x int8 cannot saturate.
INT8_DOT_PRODUCTS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")


def int8_dot_products() -> bool:
    """Whether this CPU sums int8 products exactly (VNNI, AMX, ARM's dot products): there
    signed int8 weights are both exact and the fastest; elsewhere they can saturate."""
    return any(flag in INT8_DOT_PRODUCTS for flag in flags())


def _numpy_flags() -> list[str]:
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:  # numpy 1.x
        try:
            from numpy.core._multiarray_umath import __cpu_features__ as features
        except ImportError:
            return []
    return [ours for theirs, ours in _NUMPY_FLAGS.items() if features.get(theirs)]


def _cpuinfo_flags() -> set[str]:
    try:
        text = CPUINFO.read_text(errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def main() -> None:
    """`python -m clipcli.models.cpu`: the signature, for CI logs and bug reports."""
    print(signature())


if __name__ == "__main__":
    main()
