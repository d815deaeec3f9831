"""The model's image tower exported once to ONNX, and the helpers every tower export uses.

Exports are cached per model fingerprint (export_cache.py). The image tower is exported in fp32,
with calibration pixels (calibration.py) and torch fp32's embeddings of them and of captions
saved beside it; tower_checks.py measures, per CPU, how well and how fast fp32 and int8 run
there; choose.py picks one for each job, and onnx_image.py runs it without torch. The text
tower is text_tower.py's; the export helpers here serve both.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from clipcli.encoders.calibration import CAPTIONS, calibration_images
from clipcli.encoders.export_cache import ExportFolder
from clipcli.encoders.onnx_sessions import (
    save_optimised,
)
from clipcli.encoders.quiet import stderr_silenced
from clipcli.encoders.tower_checks import (
    TIMED_IMAGES,
    TorchTiming,
    check_this_cpu,
    images_per_second,
)
from clipcli.models import cpu
from clipcli.progress import NoProgress, ProgressReporter

if TYPE_CHECKING:
    from PIL import Image

    from clipcli.encoders.torch_clip import Encoder

OPSET = 17


def export_tower(
    module: Any, example: Any, path: Path, input_name: str, *, lengths: bool = False
) -> None:
    """torch.onnx.export with a dynamic batch axis, and a dynamic sequence axis if `lengths`."""
    import warnings

    import torch

    tmp = path.with_suffix(".tmp")
    axes = {0: "batch", 1: "length"} if lengths else {0: "batch"}
    # Not under no_grad: there nn.MultiheadAttention takes its fused inference kernel, which the
    # exporter cannot translate; with gradients enabled it traces the plain, exportable ops.
    with warnings.catch_warnings(), torch.enable_grad(), stderr_silenced():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            str(tmp),
            input_names=[input_name],
            output_names=["embedding"],
            dynamic_axes={input_name: axes, "embedding": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    os.replace(tmp, path)


def finish(plain: Path) -> None:
    """Save the optimised graph that sessions load; the plain export is then not needed."""
    save_optimised(plain)
    plain.unlink()


def prepare_image_towers(
    encoder: Encoder, progress: ProgressReporter | None = None, photos: Sequence[Path] = ()
) -> dict[str, Any]:
    """Export the image tower once per model, and check its backends once per CPU; returns what
    export.json records. The first of `photos` that decode (the job's own) calibrate it.

    A model the exporter cannot handle is recorded as such (`image_export_error`), so the
    export is not tried again on every run.
    """
    folder = ExportFolder.for_spec(encoder.spec)
    progress = progress or NoProgress()
    with folder.writing() as meta:
        if "image_export_error" in meta:
            return meta
        if "pixels" in meta and "logit_bias" not in meta:  # exported before it was recorded
            folder.update_meta(logit_bias=encoder.logit_bias)
            meta = folder.read_meta()
        if meta.get("image_exported") and cpu.signature() in meta.get("cpus", {}):
            return meta
        first = not meta.get("image_exported")
        if first:
            progress.phase("Preparing the fast CPU path (once per model)", 1)
            try:
                _export_image_tower(encoder, folder, photos)
            except Exception as exc:  # an architecture the exporter cannot handle keeps torch
                record_failure(folder, exc, "image_export_error")
                progress.advance(1)
                return folder.read_meta()
        check_this_cpu(
            folder, folder.read_meta(), _torch_timing(encoder, folder), None if first else progress
        )
        if first:
            progress.advance(1)
        return folder.read_meta()


def _export_image_tower(encoder: Encoder, folder: ExportFolder, photos: Sequence[Path]) -> None:
    import torch

    images = calibration_images(encoder.input_size, photos)
    pixels = torch.stack([encoder.preprocess(image) for image in images])
    with _patches_as_matmul(encoder.model):
        tower = tower_module(encoder.model, "encode_image")
        export_tower(tower, pixels[:2], folder.tower("image-fp32"), "pixels")
    finish(folder.tower("image-fp32"))
    captions = encoder.encode_texts(list(CAPTIONS))
    folder.save_calibration(pixels.numpy(), encoder.encode_images_torch(pixels), captions)
    folder.update_meta(image_exported=True, **_torch_free_inputs(encoder, images))


def _torch_timing(encoder: Encoder, folder: ExportFolder) -> TorchTiming:
    import torch

    timed = torch.from_numpy(folder.calibration()[0][:TIMED_IMAGES])
    rate = images_per_second(lambda: encoder.encode_images_torch(timed), len(timed))
    return TorchTiming(rate, encoder.cold_start_s)


def _torch_free_inputs(encoder: Encoder, images: list[Image.Image]) -> dict[str, Any]:
    """What indexing without torch needs: the pixel transform, if it matches open_clip's on
    the calibration images and on awkward sizes, and the model's logit scale and bias (None
    for a model without one), which classify's scores need."""
    from open_clip import get_model_preprocess_cfg
    from PIL import Image

    from clipcli.encoders.pixels import PixelTransform

    transform = PixelTransform.from_open_clip(get_model_preprocess_cfg(encoder.model))
    if transform is None:
        return {}
    rng = np.random.default_rng(1)
    awkward = [(301, 173), (97, 640), (40, 30), (encoder.input_size + 1, encoder.input_size)]
    noise = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for w, h in awkward]
    probes = images + [Image.fromarray(pixels) for pixels in noise]
    worst = max(
        float(np.abs(transform(image) - encoder.preprocess(image).numpy()).max())
        for image in probes
    )
    if worst > 1e-5:
        return {}
    return {
        "pixels": transform.to_dict(),
        "logit_scale": encoder.logit_scale,
        "logit_bias": encoder.logit_bias,
    }


def record_failure(folder: ExportFolder, exc: Exception, key: str, **also: Any) -> None:
    folder.update_meta(**also, **{key: f"{type(exc).__name__}: {str(exc)[:200]}"})


@contextlib.contextmanager
def _patches_as_matmul(model: Any) -> Iterator[None]:
    """While exporting, a ViT's patch embedding runs as the matrix product it is.

    A convolution whose stride equals its kernel is a reshape and one MatMul; as a MatMul it is
    quantised with the rest (ONNX Runtime's integer convolution is slow), which saves about
    5% of a ViT-B-32 image on the int8 path. Other towers are exported unchanged.
    """
    import torch

    visual = getattr(model, "visual", None)
    conv = getattr(visual, "conv1", None)
    if not _is_patch_embedding(conv):
        yield
        return

    class PatchMatMul(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            # [out, in, p, p] -> [in*p*p, out], rows in the order the patches are unfolded below
            self.weight = torch.nn.Parameter(conv.weight.detach().flatten(1).t().contiguous())

        def forward(self, x: Any) -> Any:
            b, c, h, w = x.shape
            p = conv.kernel_size[0]
            patches = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
            out = patches.reshape(b, (h // p) * (w // p), c * p * p) @ self.weight
            return out.transpose(1, 2).reshape(b, -1, h // p, w // p)

    visual.conv1 = PatchMatMul()
    try:
        yield
    finally:
        visual.conv1 = conv


def _is_patch_embedding(conv: Any) -> bool:
    import torch

    return (
        isinstance(conv, torch.nn.Conv2d)
        and conv.bias is None
        and conv.groups == 1
        and conv.kernel_size == conv.stride
        and conv.kernel_size[0] == conv.kernel_size[1]
        and conv.padding == (0, 0)
        and conv.dilation == (1, 1)
    )


def tower_module(model: Any, method: str) -> Any:
    """A torch module whose forward is one of the model's encode methods, for the exporter."""
    import torch

    class Tower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: Any) -> Any:
            return getattr(self.model, method)(x)

    # eval() on the wrapper: the exporter restores the wrapper's mode afterwards, and a wrapper
    # left in training mode would put the model's BatchNorm layers back into training too.
    return Tower().eval()
