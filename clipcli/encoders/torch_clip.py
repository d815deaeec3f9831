"""The torch backend: an open_clip model loaded in fp32, encoding images and text.

torch and open_clip are imported inside the functions that need them: importing them costs
seconds, and `--help` or a bad argument should answer at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from clipcli.encoders import text_trim
from clipcli.models.names import (
    ModelSpec,
    checked_weights_file,
    open_clip_registry,
    torch_import_seconds,
)
from clipcli.models.weights import (
    load_failure,
    offline_unless_reachable,
    quiet_hub_logging,
    tokenizer_failure,
)
from clipcli.vectors import Embeddings

if TYPE_CHECKING:
    import torch


@dataclass
class Encoder:
    """A loaded model with its own eval preprocessing and tokenizer."""

    spec: ModelSpec
    model: Any
    preprocess: Callable[[Any], torch.Tensor]
    tokenizer: Callable[[Sequence[str]], torch.Tensor]
    device: str
    logit_scale: float = field(default=100.0)
    # Sigmoid-trained models (SigLIP and kin) learn a bias beside the scale; None for the others.
    logit_bias: float | None = None
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

    # The trimmed text tower (text_trim.py) once it is known to agree with the full context;
    # False where it does not or cannot, and the full 77 positions run.
    _trimmed_text: Any = field(default=None, repr=False)

    def encode_texts(self, texts: Sequence[str], *, full_context: bool = False) -> Embeddings:
        """L2-normalised text embeddings, each prompt run over only the tokens that can change
        it where the tower allows (text_trim.py); `full_context` runs all of them."""
        import torch

        tokens = self.tokenizer(list(texts))
        tower = None if full_context else self._trimmed_tower()
        if tower is None:
            return self._full_context(tokens.numpy())
        positions = text_trim.pooled_positions(tokens.numpy(), tower.eos_id, tower.pool)
        with torch.inference_mode():
            return text_trim.run_bucketed(self._runner(tower), tokens.numpy(), positions)

    def _full_context(self, tokens: np.ndarray) -> Embeddings:
        import torch

        with torch.inference_mode():
            batch = torch.from_numpy(tokens).to(self.device)
            features = self.model.encode_text(batch, normalize=True)
        return features.float().cpu().numpy()

    def _runner(self, tower: Any) -> Callable[[np.ndarray], np.ndarray]:
        import torch

        def run(tokens: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                features = tower(torch.from_numpy(tokens).to(self.device))
            return features.float().cpu().numpy()

        return run

    def _trimmed_tower(self) -> Any | None:
        """The trimmed text tower, checked once against the full context on probe prompts."""
        if self._trimmed_text is None:
            self._trimmed_text = False
            tower = text_trim.trimmed_text_tower(self.model)
            if tower is not None:
                probes = self.tokenizer(list(text_trim.PROBE_TEXTS)).numpy()
                positions = text_trim.pooled_positions(probes, tower.eos_id, tower.pool)
                if text_trim.agrees_with_full_context(
                    self._runner(tower), self._full_context, probes, positions
                ):
                    self._trimmed_text = tower
        return self._trimmed_text or None


def load(spec: ModelSpec, device: str) -> Encoder:
    """Load a model through open_clip's own loaders (hub cache, local files, hf-hub: names), or
    a transformers checkpoint converted into open_clip's CLIP, in fp32 on `device`."""
    open_clip = open_clip_registry()  # first: it times torch's import, part of the cold start
    started = time.perf_counter()
    if spec.from_transformers:
        from clipcli.encoders import transformers_clip

        model, preprocess, tokenizer, input_size = transformers_clip.load_parts(spec, device)
    else:
        model, preprocess, tokenizer, input_size = _open_clip_parts(open_clip, spec, device)
    scale = float(model.logit_scale.exp().item()) if hasattr(model, "logit_scale") else 100.0
    encoder = Encoder(spec, model, preprocess, tokenizer, device, scale)
    if getattr(model, "logit_bias", None) is not None:
        encoder.logit_bias = float(model.logit_bias.item())
    encoder.input_size = input_size
    imported = torch_import_seconds()
    if imported is not None:  # this process started without torch: the whole start-up is known
        encoder.cold_start_s = imported + time.perf_counter() - started
    return encoder


def _open_clip_parts(open_clip: Any, spec: ModelSpec, device: str) -> tuple[Any, Any, Any, int]:
    """(model, preprocess, tokenizer, the shorter side its preprocessing resizes to)."""
    if spec.pretrained_is_file:
        checked_weights_file(spec)
    with quiet_hub_logging(), offline_unless_reachable(spec):
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                spec.name, pretrained=spec.pretrained, device=device
            )
        except Exception as exc:  # torch, pickle and the hub client each raise their own types
            raise load_failure(spec, exc) from exc
        try:  # SigLIP's and some others' come from the hub, whatever the weights' source
            tokenizer = open_clip.get_tokenizer(spec.name)
        except Exception as exc:  # transformers and the hub client raise their own types
            raise tokenizer_failure(spec, exc) from exc
    model = reparameterised(model.eval())
    size = getattr(model.visual, "image_size", 224)
    return model, preprocess, tokenizer, int(min(size) if isinstance(size, (tuple, list)) else size)


def reparameterised(model: Any) -> Any:
    """`model` with the training-time branches of its layers folded into the single layers
    they equal at inference, as MobileCLIP's authors run and export it; other models as they
    are. Folding needs eval mode (batch norms fold with their running statistics).

    MobileCLIP's image towers (MobileOne and RepMixer blocks) train with parallel convolutions
    and batch norms per layer; folded, the same function (to float rounding) runs with fewer
    of them in torch and in the ONNX export made from this model: MobileCLIP2-S0 keeps 95 of
    its 119 convolutions and 22 of its 114 batch norms.
    """
    if not any(hasattr(module, "reparameterize") for module in model.modules()):
        return model
    from timm.utils.model import reparameterize_model  # only timm's towers fold

    return reparameterize_model(model, inplace=True)
