"""open_clip model loading and batched encoding of images and text.

torch and open_clip are imported inside the functions that need them: importing them costs
seconds, and `--help` or a bad argument should answer at once.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlparse

import numpy as np
import numpy.typing as npt

from clipcli import checkpoints
from clipcli.errors import UsageError, WeightsUnavailableError
from clipcli.models import (
    HF_HUB_PREFIX,
    ModelSpec,
    checked_weights_file,
    open_clip_registry,
    torch_import_seconds,
)
from clipcli.progress import NoProgress, ProgressReporter
from clipcli.settings import PRECISIONS

if TYPE_CHECKING:
    import torch

    from clipcli.images import ImageDecodeError

Embeddings = npt.NDArray[np.float32]

# Decoded, preprocessed pixels waiting for the model, at most (one batch always may).
AHEAD_BYTES = 256 * 2**20


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


class ImageEncoder(Protocol):
    """What embedding image files needs: open_clip's model, or an exported image tower."""

    spec: ModelSpec
    device: str
    backend: str
    logit_scale: float

    @property
    def input_size(self) -> int: ...

    def preprocess(self, image: Any) -> Any: ...

    def encode_images(self, batch: Any) -> Embeddings: ...


@dataclass
class Encoder:
    """A loaded model with its own eval preprocessing and tokenizer."""

    spec: ModelSpec
    model: Any
    preprocess: Callable[[Any], torch.Tensor]
    tokenizer: Callable[[Sequence[str]], torch.Tensor]
    device: str
    logit_scale: float = field(default=100.0)
    backend: str = "torch-fp32"
    image_runner: Callable[[np.ndarray], Embeddings] | None = None
    # Seconds to import torch and load the model, when this process started without torch (None
    # when something had imported it already): what an everyday run saves by not loading it.
    cold_start_s: float | None = None
    # The shorter side the model's preprocessing resizes to (decoders may stop there).
    input_size: int = 224

    def encode_images(self, batch: torch.Tensor) -> Embeddings:
        """L2-normalised image embeddings for a preprocessed batch, on the chosen backend."""
        if self.image_runner is not None:
            return self.image_runner(batch.numpy())
        return self.encode_images_torch(batch)

    def encode_images_torch(self, batch: torch.Tensor) -> Embeddings:
        """The open_clip reference path (fp32, or bf16 under autocast)."""
        import torch

        if self.model.visual is None:
            raise RuntimeError("the torch image tower was released for an exported one")
        autocast = torch.autocast(
            "cuda" if self.device == "cuda" else "cpu",
            dtype=torch.bfloat16,
            enabled=self.backend == "torch-bf16",
        )
        with torch.inference_mode(), autocast:
            features = self.model.encode_image(batch.to(self.device), normalize=True)
        return features.float().cpu().numpy()

    def encode_texts(self, texts: Sequence[str]) -> Embeddings:
        """L2-normalised text embeddings."""
        import torch

        with torch.inference_mode():
            tokens = self.tokenizer(list(texts)).to(self.device)
            features = self.model.encode_text(tokens, normalize=True)
        return features.float().cpu().numpy()


def load_encoder(
    spec: ModelSpec,
    device: str = "auto",
    precision: str = "auto",
    progress: ProgressReporter | None = None,
    images: int | None = None,
) -> Encoder:
    """Load a model through open_clip's own loaders (hub cache, local files, hf-hub: names).

    `images` is how many images the job will embed, if known: with `auto`, it weighs each
    backend's start-up against its speed. `progress` hears of the one long step a first run
    may take: exporting the image tower.
    """
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision '{precision}'", hint=f"use {', '.join(PRECISIONS)}")
    open_clip = open_clip_registry()
    started = time.perf_counter()
    chosen = pick_device(device)
    if spec.pretrained_is_file:
        checked_weights_file(spec)
    with _quiet_hub_logging(), _offline_unless_reachable(spec):
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                spec.name, pretrained=spec.pretrained, device=chosen
            )
            tokenizer = open_clip.get_tokenizer(spec.name)
        except Exception as exc:  # torch, pickle and the hub client each raise their own types
            raise _load_failure(spec, exc) from exc
    model.eval()
    scale = float(model.logit_scale.exp().item()) if hasattr(model, "logit_scale") else 100.0
    encoder = Encoder(spec, model, preprocess, tokenizer, chosen, scale)
    size = getattr(model.visual, "image_size", 224)
    encoder.input_size = int(min(size) if isinstance(size, (tuple, list)) else size)
    imported = torch_import_seconds()
    if imported is not None:  # this process started without torch: the whole start-up is known
        encoder.cold_start_s = imported + time.perf_counter() - started
    _select_backend(encoder, precision, progress or NoProgress(), images)
    return encoder


def load_image_encoder(
    spec: ModelSpec,
    device: str = "auto",
    precision: str = "auto",
    progress: ProgressReporter | None = None,
    images: int | None = None,
) -> ImageEncoder:
    """The image side of `load_encoder(spec, device, precision)`, without torch when it can be.

    When `auto` would run an exported image tower on the CPU for a job of `images` images,
    that tower and a pixel transform checked against open_clip's are all that embedding images
    needs, and importing torch and loading the weights (seconds) is skipped: a re-index of a
    few new photos then takes about a second.
    """
    from clipcli import onnx_towers

    on_cpu = device == "cpu" or (device == "auto" and not _accelerator_possible())
    if precision == "auto" and on_cpu:
        exported = onnx_towers.exported_image_encoder(spec, images, progress)
        if exported is not None:
            return exported
    return load_encoder(spec, device, precision, progress, images)


def full_model(
    loaded: ImageEncoder | None, spec: ModelSpec, device: str = "auto", precision: str = "auto"
) -> Callable[[], Encoder]:
    """The whole open_clip model, loaded on the first call and only then, unless `loaded`
    (what load_image_encoder gave) already is it: text needs the model, images may not."""

    @functools.cache
    def load() -> Encoder:
        if isinstance(loaded, Encoder):
            return loaded
        return load_encoder(spec, device, precision)

    return load


def _accelerator_possible() -> bool:
    """Whether torch might find a GPU, judged from the system alone (importing torch is slow)."""
    if sys.platform == "darwin":
        return platform.machine() == "arm64"  # Apple silicon: MPS
    if sys.platform == "win32":
        system = os.environ.get("SYSTEMROOT", r"C:\Windows")
        return os.path.exists(os.path.join(system, "System32", "nvcuda.dll"))
    devices = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg")  # NVIDIA, ROCm, WSL
    return any(os.path.exists(device) for device in devices)


def _select_backend(
    encoder: Encoder, precision: str, progress: ProgressReporter, images: int | None
) -> None:
    """Switch the image tower to the backend asked for, or to the one that finishes first."""
    from clipcli import backend_choice, onnx_towers

    if precision == "fp32":
        return
    if precision == "bf16":
        if encoder.device == "cpu" and not _cpu_has_bf16():
            raise UsageError("--precision bf16 needs a CPU with AVX-512 BF16 or AMX")
        encoder.backend = "torch-bf16"
        return
    on_cpu = encoder.device == "cpu" and onnx_towers.onnxruntime_available()
    if precision in ("onnx", "int8"):
        if not on_cpu:
            raise UsageError(
                f"--precision {precision} needs ONNX Runtime on the CPU",
                hint="use --device cpu, and pip install onnxruntime if it is missing",
            )
        kind = "fp32" if precision == "onnx" else "int8"
        _use_onnx(encoder, _checked_record(encoder, kind, progress), kind, images)
    elif on_cpu:
        record = onnx_towers.cpu_record(onnx_towers.prepare_image_towers(encoder, progress))
        kind = backend_choice.fastest(record, images)
        if record is not None and kind != "torch":
            _use_onnx(encoder, record, kind, images)


def _checked_record(encoder: Encoder, kind: str, progress: ProgressReporter) -> dict[str, Any]:
    """This CPU's record of the export, if `kind` agrees with torch well enough to be asked for."""
    from clipcli import backend_choice, onnx_towers

    meta = onnx_towers.prepare_image_towers(encoder, progress)
    if "image_export_error" in meta:
        raise UsageError(
            f"{encoder.spec.describe()} cannot be exported to ONNX ({meta['image_export_error']})",
            hint="use --precision fp32",
        )
    record = onnx_towers.cpu_record(meta) or {}
    if not backend_choice.faithful(record, kind, backend_choice.MIN_COSINE[kind]):
        cosine = float(record.get(kind, {}).get("cosine", 0.0))
        raise UsageError(
            f"the ONNX export of {encoder.spec.describe()} does not agree with torch "
            f"(lowest cosine {cosine:.4f})",
            hint="use --precision fp32",
        )
    return record


def _use_onnx(encoder: Encoder, record: dict[str, Any], kind: str, images: int | None) -> None:
    from clipcli.export_cache import ExportFolder
    from clipcli.tower_checks import image_runner

    encoder.image_runner = image_runner(ExportFolder.for_spec(encoder.spec), record, kind, images)
    encoder.backend = f"onnx-{kind}"
    # The exported tower answers for images now; torch's copy of the same weights (350 MB for
    # ViT-B-32) would only double the memory an index run holds.
    encoder.model.visual = None


def _cpu_has_bf16() -> bool:
    import torch

    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(check and check())


def _load_failure(spec: ModelSpec, exc: Exception) -> WeightsUnavailableError:
    """One line that says which weights failed and why, whatever library raised."""
    first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if spec.pretrained_is_file:
        return checkpoints.load_failure(spec.pretrained or "", spec.name, exc)
    text = str(exc).lower()
    if "download" in text or "offline" in text or "connection" in text or "cache" in text:
        return _weights_unavailable(spec)
    return WeightsUnavailableError(f"cannot load {spec.describe()}: {first_line}")


def _weights_unavailable(spec: ModelSpec) -> WeightsUnavailableError:
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}
    why = "HF_HUB_OFFLINE is set" if offline else "the model hub could not be reached"
    return WeightsUnavailableError(
        f"cannot load weights for {spec.describe()}: they are not in the local cache "
        f"(Hugging Face hub cache, ~/.cache/clip) and {why}",
        hint="run once with network access to cache them, or pass --pretrained /path/to/weights.pt",
    )


@contextmanager
def _quiet_hub_logging() -> Iterator[None]:
    """open_clip and huggingface_hub log retries and failures; clipcli reports them itself."""
    loggers = [logging.getLogger(), logging.getLogger("huggingface_hub")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


@contextmanager
def _offline_unless_reachable(spec: ModelSpec) -> Iterator[None]:
    """Use the hub cache only when the hub cannot be reached.

    Without a network, huggingface_hub retries with back-off for about a minute before failing;
    one quick connection attempt tells us to go straight to the cache instead.
    """
    needs_hub = spec.name.startswith(HF_HUB_PREFIX) or (
        spec.pretrained is not None and not spec.pretrained_is_file
    )
    if not needs_hub:
        yield
        return
    from huggingface_hub import constants

    previous = constants.HF_HUB_OFFLINE
    if not previous and not _reachable(constants.ENDPOINT):
        constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = previous


def _reachable(url: str, timeout: float = 3.0) -> bool:
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass
class EmbeddedBatch:
    """One batch: embeddings of the files that decoded, reasons for those that did not."""

    paths: list[Path]
    embeddings: Embeddings
    failures: list[ImageDecodeError]


def embed_files(
    encoder: ImageEncoder, paths: Sequence[Path], batch_size: int, workers: int | None = None
) -> Iterator[EmbeddedBatch]:
    """Decode and preprocess in threads while the model encodes the previous batch."""
    from clipcli.images import ImageDecodeError, load_image  # Pillow: not for text searches

    workers = workers or min(4, os.cpu_count() or 1)

    def prepare(path: Path) -> Any:
        try:
            return encoder.preprocess(load_image(path, min_size=encoder.input_size))
        except ImageDecodeError as exc:
            return exc

    batches = [list(paths[i : i + batch_size]) for i in range(0, len(paths), batch_size)]
    width = 0  # the embedding size, once a batch has shown it

    def no_rows() -> Embeddings:
        # A batch of files that all failed still has the model's width, so that callers can
        # multiply or stack it like any other; with no batch encoded yet, a blank image shows it.
        nonlocal width
        if not width:
            from PIL import Image

            blank = encoder.preprocess(Image.new("RGB", (encoder.input_size,) * 2))
            width = encoder.encode_images(_stack([blank])).shape[1]
        return np.zeros((0, width), dtype=np.float32)

    # Up to two batches decode ahead of the model, keeping every core busy, as long as their
    # pixels fit in AHEAD_BYTES: --batch-size 512 of a 336-px model would otherwise hold 2 GB.
    pixels_per_batch = batch_size * 3 * encoder.input_size**2 * 4
    lookahead = max(1, min(2, AHEAD_BYTES // pixels_per_batch))
    with ThreadPoolExecutor(max_workers=workers) as pool:

        def submit(batch: list[Path]) -> list[Future[Any]]:
            return [pool.submit(prepare, path) for path in batch]

        ahead = deque(submit(batch) for batch in batches[:lookahead])
        for i, batch in enumerate(batches):
            futures = ahead.popleft()
            if i + lookahead < len(batches):
                ahead.append(submit(batches[i + lookahead]))
            prepared = [future.result() for future in futures]
            good = [
                (p, t) for p, t in zip(batch, prepared, strict=True) if not isinstance(t, Exception)
            ]
            failures = [t for t in prepared if isinstance(t, ImageDecodeError)]
            if good:
                embeddings = encoder.encode_images(_stack([t for _, t in good]))
                width = embeddings.shape[1]
            else:
                embeddings = no_rows()
            yield EmbeddedBatch([p for p, _ in good], embeddings, failures)


def _stack(items: list[Any]) -> Any:
    """One batch from preprocessed images: numpy arrays (torch-free path) or torch tensors."""
    if isinstance(items[0], np.ndarray):
        return np.stack(items)
    import torch

    return torch.stack(items)
