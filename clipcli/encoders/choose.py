"""Which image backend runs a job: agreement gates, then speed and start-up decide.

A backend is a candidate for `auto` only if its embeddings keep the gate against torch fp32 on
this CPU: every figure of agreement.py at its floor (tower_checks.py measures them). Among
candidates the one that finishes the job first wins: start-up plus images over rate.
Importing torch and loading a model costs seconds, so a few photos go through an exported tower
even where torch would be a little faster per image; a library of thousands goes through
whichever is fastest per image.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clipcli.encoders import torch_clip
from clipcli.encoders.agreement import passes
from clipcli.encoders.protocols import ImageEncoder
from clipcli.encoders.torch_clip import Encoder
from clipcli.encoders.tower_checks import AUTO_FLOORS, MIN_COSINE
from clipcli.errors import UsageError
from clipcli.models import transformers_folders
from clipcli.models.catalogue import resolve_tier
from clipcli.models.device import accelerator_possible, cpu_has_bf16, pick_device
from clipcli.models.names import (
    ModelSpec,
    recorded_spec,
    resolve_model_spec,
    spec_without_open_clip,
)
from clipcli.progress import NoProgress, ProgressReporter
from clipcli.settings import PRECISIONS, model_choice, model_from_environment

if TYPE_CHECKING:
    from clipcli.encoders.onnx_image import ExportedImageEncoder

# The job size assumed when the caller cannot tell: large enough that speed per image decides.
UNKNOWN_JOB_IMAGES = 10_000
# A small job leaves the backend that is fastest per image only to save at least this much: a
# few photos then skip torch's import (seconds), but runs of different sizes do not switch
# between backends for milliseconds, and a library is embedded by one backend, not several.
MATERIAL_SAVING_S = 0.5


def job_seconds(figures: dict[str, Any], images: int) -> float:
    """Seconds a backend with these figures needs for `images` images, start-up included."""
    rate = float(figures.get("rate", 0.0))
    if rate <= 0:
        return float("inf")
    return float(figures.get("start_s", 0.0)) + images / rate


def faithful(record: dict[str, Any], kind: str) -> bool:
    """Whether `kind` ran on this CPU and kept the gate against torch fp32 there."""
    return passes(record.get(kind, {}), AUTO_FLOORS)


def acceptable(record: dict[str, Any], kind: str) -> bool:
    """Whether `kind`, asked for by name, agrees with torch fp32 closely enough to be used."""
    return float(record.get(kind, {}).get("cosine", 0.0)) >= MIN_COSINE[kind]


def fastest(record: dict[str, Any] | None, images: int | None = None) -> str:
    """'torch', 'fp32' or 'int8': the backend that finishes a job of `images` first on this CPU.

    torch fp32 is the reference, so it needs no agreement; it wins ties, and it is all there is
    without a record (nothing exported, or exported for another CPU and not checked here).
    torch's start-up counts even where the model is loaded anyway for its text side: the same
    job then runs on the same backend, and gives the same numbers, whatever else a run did.
    """
    if not record:
        return "torch"
    count = UNKNOWN_JOB_IMAGES if images is None else max(images, 1)
    steady = _quickest(record, UNKNOWN_JOB_IMAGES)
    quick = _quickest(record, count)
    saving = job_seconds(record[steady], count) - job_seconds(record[quick], count)
    return quick if saving >= MATERIAL_SAVING_S else steady


def _quickest(record: dict[str, Any], images: int) -> str:
    best, best_seconds = "torch", job_seconds(record["torch"], images)
    for kind in ("fp32", "int8"):
        if faithful(record, kind):
            seconds = job_seconds(record[kind], images)
            if seconds < best_seconds:
                best, best_seconds = kind, seconds
    return best


def load_encoder(
    spec: ModelSpec,
    device: str = "auto",
    precision: str = "auto",
    progress: ProgressReporter | None = None,
    images: int | None = None,
    photos: Sequence[Path] = (),
) -> Encoder:
    """The open_clip model, its image tower on the backend `precision` asks for.

    `images` is how many images the job will embed, if known: with `auto`, it weighs each
    backend's start-up against its speed. `progress` hears of the one long step a first run
    may take: exporting the image tower, calibrated on the first of `photos` (the job's own).
    """
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision '{precision}'", hint=f"use {', '.join(PRECISIONS)}")
    encoder = torch_clip.load(spec, pick_device(device))
    _select_backend(encoder, precision, progress or NoProgress(), images, photos)
    return encoder


def load_image_encoder(
    spec: ModelSpec,
    device: str = "auto",
    precision: str = "auto",
    progress: ProgressReporter | None = None,
    images: int | None = None,
    photos: Sequence[Path] = (),
) -> ImageEncoder:
    """The image side of `load_encoder(spec, device, precision)`, without torch when it can be.

    When `auto` would run an exported image tower on the CPU for a job of `images` images,
    that tower and a pixel transform checked against open_clip's are all that embedding images
    needs, and importing torch and loading the weights (seconds) is skipped: a re-index of a
    few new photos then takes about a second.
    """
    on_cpu = device == "cpu" or (device == "auto" and not accelerator_possible())
    if precision == "auto" and on_cpu:
        exported = exported_image_encoder(spec, images, progress)
        if exported is not None:
            return exported
    return load_encoder(spec, device, precision, progress, images, photos)


def exported_image_encoder(
    spec: ModelSpec, images: int | None = None, progress: ProgressReporter | None = None
) -> ExportedImageEncoder | None:
    """What `auto` would run on the CPU for `images` images of this model, when that is an
    exported tower that needs no torch; None otherwise, and the caller loads the model."""
    from clipcli.encoders import onnx_image

    export = onnx_image.ready_export(spec, progress)
    if export is None:
        return None
    kind = fastest(export.record, images)
    return None if kind == "torch" else onnx_image.image_encoder(spec, export, kind, images)


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


def _select_backend(
    encoder: Encoder,
    precision: str,
    progress: ProgressReporter,
    images: int | None,
    photos: Sequence[Path],
) -> None:
    """Switch the image tower to the backend asked for, or to the one that finishes first."""
    from clipcli.encoders import onnx_export
    from clipcli.encoders.onnx_sessions import onnxruntime_available
    from clipcli.encoders.tower_checks import cpu_record

    if precision == "fp32":
        return
    if precision == "bf16":
        if encoder.device == "cpu" and not cpu_has_bf16():
            raise UsageError("--precision bf16 needs a CPU with AVX-512 BF16 or AMX")
        encoder.backend = "torch-bf16"
        return
    on_cpu = encoder.device == "cpu" and onnxruntime_available()
    if precision in ("onnx", "int8"):
        if not on_cpu:
            raise UsageError(
                f"--precision {precision} needs ONNX Runtime on the CPU",
                hint="use --device cpu, and pip install onnxruntime if it is missing",
            )
        kind = "fp32" if precision == "onnx" else "int8"
        _use_onnx(encoder, _checked_record(encoder, kind, progress, photos), kind, images)
    elif on_cpu:
        record = cpu_record(onnx_export.prepare_image_towers(encoder, progress, photos))
        kind = fastest(record, images)
        if record is not None and kind != "torch":
            _use_onnx(encoder, record, kind, images)


def _checked_record(
    encoder: Encoder, kind: str, progress: ProgressReporter, photos: Sequence[Path]
) -> dict[str, Any]:
    """This CPU's record of the export, if `kind` agrees with torch well enough to be asked for."""
    from clipcli.encoders import onnx_export
    from clipcli.encoders.tower_checks import cpu_record

    meta = onnx_export.prepare_image_towers(encoder, progress, photos)
    if "image_export_error" in meta:
        raise UsageError(
            f"{encoder.spec.describe()} cannot be exported to ONNX ({meta['image_export_error']})",
            hint="use --precision fp32",
        )
    record = cpu_record(meta) or {}
    if not acceptable(record, kind):
        cosine = float(record.get(kind, {}).get("cosine", 0.0))
        raise UsageError(
            f"the ONNX export of {encoder.spec.describe()} does not agree with torch "
            f"(lowest cosine {cosine:.4f})",
            hint="use --precision fp32",
        )
    return record


def _use_onnx(encoder: Encoder, record: dict[str, Any], kind: str, images: int | None) -> None:
    from clipcli.encoders.export_cache import ExportFolder
    from clipcli.encoders.tower_checks import image_runner

    encoder.image_runner = image_runner(ExportFolder.for_spec(encoder.spec), record, kind, images)
    encoder.backend = f"onnx-{kind}"
    # The exported tower answers for images now; torch's copy of the same weights (350 MB for
    # ViT-B-32) would only double the memory an index run holds.
    encoder.model.visual = None


def resolve_exported_spec(
    model: str, pretrained: str | None, *, default_model: bool = False
) -> ModelSpec:
    """resolve_model_spec, without importing open_clip (and torch) for a model exported here.

    Its name and weights were checked when it was exported; anything else goes through
    resolve_model_spec, which checks them and explains what is wrong.
    """
    from clipcli.encoders.export_cache import ExportFolder

    if transformers_folders.names_checkpoint(model):  # a folder or hf:ORG/NAME: no open_clip
        return transformers_folders.resolve(model, pretrained)
    guess = spec_without_open_clip(model, pretrained)
    if guess is not None and ExportFolder.for_spec(guess).read_meta().get("image_exported"):
        return guess
    return resolve_model_spec(model, pretrained, default_model=default_model)


def recorded_model(
    name: str, pretrained: str | None, weights: str | None, moved_to: str | None = None
) -> ModelSpec:
    """The model an index recorded, found where it is now (names.recorded_spec); a
    transformers checkpoint by its content (transformers_folders.recorded_spec)."""
    if ModelSpec(name, pretrained).from_transformers:
        return transformers_folders.recorded_spec(name, pretrained, weights, moved_to)
    return recorded_spec(name, pretrained, weights, moved_to)


def requested_spec(model: str | None, pretrained: str | None) -> ModelSpec:
    """The model and weights --model and --pretrained ask for (None: not given), checked, with
    the environment and the defaults filling in what they leave out."""
    name, weights = resolve_tier(*model_choice(model, pretrained))  # `--model fast` and so on
    defaulted = model is None and not model_from_environment()
    return resolve_exported_spec(name, weights, default_model=defaulted)
