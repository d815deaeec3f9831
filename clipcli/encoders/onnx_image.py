"""The image side of a model from its exported tower alone: no torch, no open_clip.

What an export offers on this CPU is read here (choose.py decides whether to use it); an
export made on another CPU is checked here first, against the torch reference saved with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from clipcli.encoders.export_cache import ExportFolder
from clipcli.encoders.onnx_sessions import Runner, onnxruntime_available, started
from clipcli.encoders.tower_checks import check_this_cpu, cpu_record, image_runner
from clipcli.progress import ProgressReporter

if TYPE_CHECKING:
    from clipcli.encoders.pixels import PixelTransform
    from clipcli.models.names import ModelSpec


@dataclass
class ExportedImageEncoder:
    """The image side of a model from its exported tower alone: no torch, no open_clip."""

    spec: ModelSpec
    preprocess: PixelTransform
    encode_images: Runner
    backend: str
    logit_scale: float
    logit_bias: float | None = None
    device: str = "cpu"

    @property
    def input_size(self) -> int:
        return self.preprocess.size


@dataclass(frozen=True)
class ReadyExport:
    """An export that can embed images without torch, and this CPU's record of its backends."""

    folder: ExportFolder
    meta: dict[str, Any]
    record: dict[str, Any]


def ready_export(spec: ModelSpec, progress: ProgressReporter | None = None) -> ReadyExport | None:
    """This model's export, when it has everything embedding images needs without torch (the
    pixel transform checked, the backends checked on this CPU, or checkable without torch);
    None otherwise, and the model must be loaded."""
    folder = ExportFolder.for_spec(spec)
    meta = folder.read_meta()
    if not meta.get("image_exported") or "pixels" not in meta:
        return None
    if "logit_bias" not in meta:  # exported before it was recorded: loading the model adds it
        return None
    if not folder.graphs_present(meta):  # the model is loaded, and the export made again
        return None
    if not onnxruntime_available():
        return None
    record = cpu_record(meta) or _check_without_torch(folder, progress)
    return ReadyExport(folder, meta, record) if record is not None else None


def image_encoder(
    spec: ModelSpec, export: ReadyExport, kind: str, images: int | None
) -> ExportedImageEncoder:
    """The `kind` ("fp32", or an int8 variant's kind) tower of `export`, for a job of `images`."""
    from clipcli.encoders.pixels import PixelTransform  # Pillow: only when images are embedded

    transform = PixelTransform.from_dict(export.meta["pixels"])
    # The session opens while the first images decode (see onnx_sessions.started).
    runner = started(lambda: image_runner(export.folder, export.record, kind, images))
    scale = float(export.meta["logit_scale"])
    bias = export.meta["logit_bias"]
    return ExportedImageEncoder(
        spec, transform, runner, f"onnx-{kind}", scale, None if bias is None else float(bias)
    )


def _check_without_torch(
    folder: ExportFolder, progress: ProgressReporter | None
) -> dict[str, Any] | None:
    """An export made on another CPU, checked here against its saved torch reference."""
    with folder.writing() as meta:
        if not meta.get("image_exported"):
            return None  # pruned meanwhile: writing() emptied it, and torch must export again
        return cpu_record(meta) or check_this_cpu(folder, meta, None, progress)
