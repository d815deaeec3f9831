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

from clipcli.models.names import (
    ModelSpec,
    checked_weights_file,
    open_clip_registry,
    torch_import_seconds,
)
from clipcli.models.weights import load_failure, offline_unless_reachable, quiet_hub_logging
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


def load(spec: ModelSpec, device: str) -> Encoder:
    """Load a model through open_clip's own loaders (hub cache, local files, hf-hub: names),
    in fp32 on `device`."""
    open_clip = open_clip_registry()
    started = time.perf_counter()
    if spec.pretrained_is_file:
        checked_weights_file(spec)
    with quiet_hub_logging(), offline_unless_reachable(spec):
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                spec.name, pretrained=spec.pretrained, device=device
            )
            tokenizer = open_clip.get_tokenizer(spec.name)
        except Exception as exc:  # torch, pickle and the hub client each raise their own types
            raise load_failure(spec, exc) from exc
    model.eval()
    scale = float(model.logit_scale.exp().item()) if hasattr(model, "logit_scale") else 100.0
    encoder = Encoder(spec, model, preprocess, tokenizer, device, scale)
    size = getattr(model.visual, "image_size", 224)
    encoder.input_size = int(min(size) if isinstance(size, (tuple, list)) else size)
    imported = torch_import_seconds()
    if imported is not None:  # this process started without torch: the whole start-up is known
        encoder.cold_start_s = imported + time.perf_counter() - started
    return encoder
