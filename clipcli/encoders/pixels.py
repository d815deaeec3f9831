"""Model input pixels from a decoded image without torch.

open_clip's evaluation transform for most models is a shortest-side resize, a centre crop,
scaling to [0, 1] and per-channel normalisation. Redone here with Pillow and numpy, an exported
image tower can index photos without importing torch (seconds of start-up). A model's export
checks this transform against open_clip's own on awkward image sizes before anything uses it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

Pixels = npt.NDArray[np.float32]
_RESAMPLING = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


@dataclass(frozen=True)
class PixelTransform:
    """Shortest side to `size`, centre crop to size x size, normalise; [3, size, size] out."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str

    @classmethod
    def from_open_clip(cls, config: dict[str, Any]) -> PixelTransform | None:
        """The transform for open_clip's preprocess config, or None for settings it does not
        reproduce (squash or longest-side resizing, non-square inputs, other resampling)."""
        size = config.get("size")
        side = size if isinstance(size, int) else (size[0] if size and size[0] == size[1] else 0)
        if (
            not side
            or config.get("resize_mode", "shortest") != "shortest"
            or config.get("interpolation") not in _RESAMPLING
            or config.get("mode", "RGB") != "RGB"
        ):
            return None
        mean, std = tuple(config["mean"]), tuple(config["std"])
        if len(mean) != 3 or len(std) != 3:
            return None
        return cls(int(side), mean, std, config["interpolation"])  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PixelTransform:
        return cls(data["size"], tuple(data["mean"]), tuple(data["std"]), data["interpolation"])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __call__(self, image: Image.Image) -> Pixels:
        width, height = image.size
        # torchvision's rule: the short side becomes `size`, the long side is truncated.
        if width <= height:
            new = (self.size, int(self.size * height / width))
        else:
            new = (int(self.size * width / height), self.size)
        resized = image.resize(new, _RESAMPLING[self.interpolation]) if new != image.size else image
        # torchvision's centre crop rounds the offsets with Python's round().
        left = round((new[0] - self.size) / 2.0)
        top = round((new[1] - self.size) / 2.0)
        crop = resized.crop((left, top, left + self.size, top + self.size)).convert("RGB")
        scaled = np.asarray(crop, dtype=np.float32) / np.float32(255.0)
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        return np.ascontiguousarray(((scaled - mean) / std).transpose(2, 0, 1))
