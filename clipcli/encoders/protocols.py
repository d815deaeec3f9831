"""What the commands need of an encoder, whichever backend runs it."""

from __future__ import annotations

from typing import Any, Protocol

from clipcli.models.names import (
    ModelSpec,
)
from clipcli.vectors import Embeddings


class ImageEncoder(Protocol):
    """What embedding image files needs: open_clip's model, or an exported image tower."""

    spec: ModelSpec
    device: str
    backend: str
    logit_scale: float
    logit_bias: float | None  # sigmoid-trained models only

    @property
    def input_size(self) -> int: ...

    def preprocess(self, image: Any) -> Any: ...

    def encode_images(self, batch: Any) -> Embeddings: ...
