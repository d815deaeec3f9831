"""The model's image and text towers exported once to ONNX and run with ONNX Runtime.

ONNX Runtime runs the same graph as eager torch at least as fast on CPUs (1.04x for ViT-B-32 on
the benchmark machine, more on others), and the text tower plus the torch-free tokenizer let
`clipcli search` answer without importing torch at all. Exports are
cached per model fingerprint and checked against torch before use: `export.json` records the
lowest cosine between torch and ONNX embeddings on a calibration batch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from clipcli.settings import cache_dir

if TYPE_CHECKING:
    from clipcli.encoder import Embeddings, Encoder, ModelSpec

OPSET = 17
# Agreement needed for `auto` to choose a backend over torch fp32 (the contract).
AUTO_MIN_COSINE = 0.999
# Below these an explicitly requested backend is refused: its answers would not be the model's.
MIN_COSINE = {"fp32": AUTO_MIN_COSINE, "int8": 0.99}


@dataclass(frozen=True)
class ExportFolder:
    """Where one model's exported towers live."""

    path: Path

    @classmethod
    def for_spec(cls, spec: ModelSpec) -> ExportFolder:
        digest = hashlib.sha256(spec.fingerprint.encode()).hexdigest()[:20]
        return cls(cache_dir() / "onnx" / digest)

    def tower(self, name: str) -> Path:
        return self.path / f"{name}.onnx"

    @property
    def tokenizer(self) -> Path:
        return self.path / "tokenizer.json"

    def read_meta(self) -> dict[str, Any]:
        try:
            return json.loads((self.path / "export.json").read_text())
        except (OSError, ValueError):
            return {}

    def update_meta(self, **values: Any) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        meta = {**self.read_meta(), **values}
        tmp = self.path / ".export.json.tmp"
        tmp.write_text(json.dumps(meta, indent=2))
        os.replace(tmp, self.path / "export.json")


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def normalise(features: np.ndarray) -> Embeddings:
    features = features.astype(np.float32)
    return features / np.linalg.norm(features, axis=1, keepdims=True)


def session(path: Path) -> Any:
    """An ONNX Runtime session; the graph optimisation is done once and saved beside the model.

    Optimising a ViT-B text tower takes a good part of a cold search; loading the saved,
    already-optimised graph with optimisation off skips that work on every later start.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # warnings about unused initialisers are not the user's concern
    optimised = path.with_suffix(".opt.onnx")
    if optimised.exists():
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        source = optimised
    else:
        # EXTENDED, not ALL: the saved graph must not depend on this CPU's memory layouts.
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(optimised)
        source = path
    return ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])


def runner(path: Path) -> Callable[[np.ndarray], Embeddings]:
    """A function from a float32 or int64 input batch to unit-length embeddings."""
    sess = session(path)
    name = sess.get_inputs()[0].name
    return lambda batch: normalise(sess.run(None, {name: batch})[0])


def _export(module: Any, example: Any, path: Path, input_name: str) -> None:
    """torch.onnx.export with a dynamic batch axis, written atomically."""
    import warnings

    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    # Not under no_grad: there nn.MultiheadAttention takes its fused inference kernel, which the
    # exporter cannot translate; with gradients enabled it traces the plain, exportable ops.
    with warnings.catch_warnings(), torch.enable_grad(), _stderr_silenced():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            str(tmp),
            input_names=[input_name],
            output_names=["embedding"],
            dynamic_axes={input_name: {0: "batch"}, "embedding": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    os.replace(tmp, path)


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    """The exporter's C++ side prints whole graphs to stderr when it gives up; the user gets the
    torch path instead, and no wall of text."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _lowest_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.min(np.sum(normalise(a) * normalise(b), axis=1)))


def _calibration_batch(size: int, count: int = 8) -> Any:
    """Photo-like inputs (smooth colour fields with fine grain), normalised like CLIP's inputs.

    Pure noise flatters quantised models; smooth structure with edges is closer to photos.
    """
    import torch

    generator = torch.Generator().manual_seed(0)
    coarse = torch.rand(count, 3, 6, 6, generator=generator)
    smooth = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic")
    grain = 0.05 * torch.randn(count, 3, size, size, generator=generator)
    return ((smooth + grain).clamp(0, 1) - 0.45) / 0.27


def ensure_image_tower(encoder: Encoder, precision: str) -> Path:
    """The image tower as ONNX ('fp32' or 'int8'), exported and checked once per model."""
    folder = ExportFolder.for_spec(encoder.spec)
    fp32 = folder.tower("image-fp32")
    size = encoder.input_size
    calibration = _calibration_batch(size)
    if not fp32.exists():
        _export(_tower(encoder.model, "encode_image"), calibration[:2], fp32, "pixels")
    target = fp32 if precision == "fp32" else folder.tower("image-int8")
    key = f"image_{precision}_cosine"
    if precision == "int8" and not target.exists():
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(fp32), str(target), weight_type=QuantType.QInt8)
    if key not in folder.read_meta():
        reference = encoder.encode_images_torch(calibration)
        got = runner(target)(calibration.numpy())
        folder.update_meta(**{key: _lowest_cosine(reference, got)})
    return target


def image_agreement(spec: ModelSpec, precision: str) -> float:
    """The lowest cosine to torch fp32 recorded when the tower was checked (0 if never)."""
    return float(ExportFolder.for_spec(spec).read_meta().get(f"image_{precision}_cosine", 0.0))


def faithful_image_tower(encoder: Encoder) -> Path | None:
    """The fp32 image tower if it exports and agrees with torch to AUTO_MIN_COSINE, else None.

    A model the exporter cannot handle is recorded, so the export is not tried on every run.
    """
    folder = ExportFolder.for_spec(encoder.spec)
    if "image_export_error" in folder.read_meta():
        return None
    try:
        path = ensure_image_tower(encoder, "fp32")
    except Exception as exc:  # an architecture the exporter cannot handle keeps torch
        _record_failure(folder, exc, "image_export_error")
        return None
    return path if image_agreement(encoder.spec, "fp32") >= AUTO_MIN_COSINE else None


def _record_failure(folder: ExportFolder, exc: Exception, key: str, **also: Any) -> None:
    folder.update_meta(**also, **{key: f"{type(exc).__name__}: {str(exc)[:200]}"})


def ensure_text_tower(encoder: Encoder) -> bool:
    """Export the text tower and a torch-free tokenizer; True when both agree with open_clip."""
    from clipcli.tokenizer import FastTokenizer, build_from_open_clip, matches_open_clip

    folder = ExportFolder.for_spec(encoder.spec)
    meta = folder.read_meta()
    if "text_ok" in meta:
        return bool(meta["text_ok"])
    tokenizer = encoder.tokenizer
    if not hasattr(tokenizer, "bpe_ranks") or getattr(tokenizer, "reduction_fn", None):
        folder.update_meta(text_ok=False)  # not CLIP's BPE tokenizer: keep the torch path
        return False
    folder.path.mkdir(parents=True, exist_ok=True)
    build_from_open_clip(tokenizer).save(str(folder.tokenizer))
    ids = (tokenizer.sot_token_id, tokenizer.eot_token_id, tokenizer.context_length)
    fast = FastTokenizer.load(folder.tokenizer, *ids)
    tokens = tokenizer(["a photo of a horse.", "a diagram"])
    _export(_tower(encoder.model, "encode_text"), tokens, folder.tower("text-fp32"), "tokens")
    reference = encoder.encode_texts(["a photo of a horse.", "a diagram", "x"])
    got = runner(folder.tower("text-fp32"))(fast(["a photo of a horse.", "a diagram", "x"]))
    cosine = _lowest_cosine(reference, got)
    ok = matches_open_clip(fast, tokenizer) and cosine >= AUTO_MIN_COSINE
    folder.update_meta(text_ok=ok, text_fp32_cosine=cosine, tokenizer_ids=list(ids))
    return ok


def prepare_fast_search(encoder: Encoder) -> None:
    """Export the text tower and tokenizer once, so later searches can skip torch entirely."""
    if encoder.device != "cpu" or not onnxruntime_available():
        return
    # An optimisation only: a model the exporter cannot handle keeps the torch search path.
    try:
        ensure_text_tower(encoder)
    except Exception as exc:
        _record_failure(
            ExportFolder.for_spec(encoder.spec), exc, "text_export_error", text_ok=False
        )


def fast_text_encoder(spec: ModelSpec) -> Callable[[list[str]], Embeddings] | None:
    """A torch-free text encoder for an exported, verified model; None when there is none."""
    folder = ExportFolder.for_spec(spec)
    meta = folder.read_meta()
    if not meta.get("text_ok") or not onnxruntime_available():
        return None
    from clipcli.tokenizer import FastTokenizer

    tokenize = FastTokenizer.load(folder.tokenizer, *meta["tokenizer_ids"])
    run = runner(folder.tower("text-fp32"))
    return lambda texts: run(tokenize(texts))


def _tower(model: Any, method: str) -> Any:
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
