"""Which device runs the model (cpu, cuda or mps), and what the CPU can do.

torch is imported only where a question needs it; whether a GPU might be there at all is
judged from the system alone, so that a CPU-only run need not import torch to find out.
"""

from __future__ import annotations

import os
import platform
import sys

from clipcli.errors import UsageError


def pick_device(device: str) -> str:
    """'auto' is the fastest device present; an explicit one must exist."""
    import torch

    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps and mps.is_available())
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu"
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": has_mps}
    if device not in available:
        raise UsageError(f"unknown device '{device}'", hint="use auto, cpu, cuda or mps")
    if not available[device]:
        raise UsageError(
            f"device '{device}' is not available on this machine", hint="use --device auto"
        )
    return device


def accelerator_possible() -> bool:
    """Whether torch might find a GPU, judged from the system alone (importing torch is slow)."""
    if sys.platform == "darwin":
        return platform.machine() == "arm64"  # Apple silicon: MPS
    if sys.platform == "win32":
        system = os.environ.get("SYSTEMROOT", r"C:\Windows")
        return os.path.exists(os.path.join(system, "System32", "nvcuda.dll"))
    devices = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg")  # NVIDIA, ROCm, WSL
    return any(os.path.exists(device) for device in devices)


def cpu_has_bf16() -> bool:
    import torch

    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(check and check())
