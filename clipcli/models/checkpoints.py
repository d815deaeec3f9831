"""Checkpoint files given as --pretrained: whether they fit an architecture, and why not, in words.

torch's own errors for a file that is not a checkpoint speak of `torch.load(weights_only=...)`,
an argument the user cannot pass; those for one of another architecture list every tensor. The
messages here name the file and say which of the two it is.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import warnings
import zipfile
from typing import Any

from clipcli.errors import UsageError, WeightsUnavailableError

Shapes = dict[str, tuple[int, ...]]


def load_failure(path: str, model: str, exc: BaseException) -> WeightsUnavailableError:
    """The error for a checkpoint file that open_clip (or torch) could not load into `model`."""
    text = str(exc)
    if isinstance(exc, (pickle.UnpicklingError, EOFError)) or "PytorchStreamReader" in text:
        if "Unsupported global" in text:  # a pickle of Python objects, not of tensors alone
            return WeightsUnavailableError(
                f"{path}: not a checkpoint of weights alone (it pickles Python objects, "
                "which clipcli does not load)"
            )
        return WeightsUnavailableError(f"{path}: not a PyTorch checkpoint")
    if "TorchScript" in text:
        return WeightsUnavailableError(f"{path}: a TorchScript archive, not a checkpoint")
    return WeightsUnavailableError(f"{path}: not a checkpoint for {model} ({_first_cause(text)})")


def check_fits_default(open_clip: Any, model: str, path: str) -> None:
    """Raise a UsageError unless the checkpoint's tensors have exactly the names and shapes of
    `model`, the default model, which a checkpoint given without --model is meant for.

    Unchecked, open_clip would put weights of ViT-B-32 into the
    default ViT-B-32-256, quietly resizing their position embeddings, or fail with a list of
    tensors. Reading the shapes needs no data: the file is memory-mapped where it can be.
    """
    tensors = _checkpoint_tensors(path, model)
    architecture = _meta_model(open_clip, model)
    with contextlib.suppress(Exception):  # third-party layouts, renamed as open_clip would
        tensors = open_clip.factory.convert_state_dict(architecture, tensors)
    found, expected = _shapes(tensors), _shapes(architecture.state_dict())
    names = found.keys() | expected.keys()
    differ = sorted(name for name in names if not _same(found, expected, name))
    if differ:
        raise UsageError(
            f"{path}: not a checkpoint for {model}, the default model "
            f"({len(differ)} of its tensors differ, such as {differ[0]})",
            hint="name the checkpoint's architecture with --model, e.g. --model ViT-B-32",
        )


def _checkpoint_tensors(path: str, model: str) -> dict[str, Any]:
    """The checkpoint's tensors by name, as open_clip's loader unwraps them."""
    import torch

    try:
        with warnings.catch_warnings():  # torch warns of a TorchScript archive, then refuses it
            warnings.simplefilter("ignore")
            checkpoint = torch.load(
                path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path)
            )
    except Exception as exc:  # torch and pickle each raise their own types
        raise load_failure(path, model, exc) from exc
    if isinstance(checkpoint, dict) and "state_dict" in checkpoint:  # a training checkpoint
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, dict) or not checkpoint:
        raise WeightsUnavailableError(f"{path}: not a PyTorch checkpoint")
    # Saved from DistributedDataParallel, every name starts with "module.", as open_clip strips.
    prefix = "module." if all(str(key).startswith("module.") for key in checkpoint) else ""
    return {str(key)[len(prefix) :]: value for key, value in checkpoint.items()}


def _meta_model(open_clip: Any, model: str) -> Any:
    """The architecture without memory for its weights (tensors on torch's meta device)."""
    import torch

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # open_clip warns that no weights were loaded: none were asked
    try:
        with torch.device("meta"):
            return open_clip.create_model(model, device="meta", load_weights=False)
    finally:
        root.setLevel(level)


def _shapes(tensors: dict[str, Any]) -> Shapes:
    return {key: tuple(value.shape) for key, value in tensors.items() if hasattr(value, "shape")}


def _same(found: Shapes, expected: Shapes, key: str) -> bool:
    if key not in found or key not in expected:
        return False
    # A scalar saved as shape () or (1,) (logit_scale) is reshaped by open_clip.
    return found[key] == expected[key] or _size(found[key]) == _size(expected[key]) == 1


def _size(shape: tuple[int, ...]) -> int:
    size = 1
    for side in shape:
        size *= side
    return size


def _first_cause(text: str) -> str:
    """The line of torch's message that says what differs, without its list of tensors."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()] or ["unknown"]
    if lines[0].startswith("Error(s) in loading state_dict") and len(lines) > 1:
        cause = lines[1].split(":")[0]  # "Missing key(s) in state_dict", "size mismatch for x"
    else:
        cause = lines[0]
    cause = cause[:1].lower() + cause[1:]
    return cause if len(cause) <= 100 else cause[:99] + "…"
