"""What a transformers CLIP checkpoint's JSON files say: the network's geometry (config.json) and
its image preprocessing (preprocessor_config.json), checked to be what open_clip's CLIP builds.

`save_pretrained` leaves out every value equal to transformers' own default, so those defaults
are written down here (CLIPTextConfig, CLIPVisionConfig, CLIPImageProcessor). Nothing here
reads weights or imports torch: a folder that cannot work is refused before seconds of loading.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipcli.errors import UsageError

# CLIP's BPE vocabulary: open_clip's bundled one, which a folder without tokenizer files gets.
CLIP_VOCAB_SIZE = 49408
# Before transformers 4.31 every CLIP config said eos_token_id 2 and pooled at the highest token
# id, which is CLIP's end of text (49407): with CLIP's BPE both pick the same position.
ARGMAX_EOS_IDS = (2, CLIP_VOCAB_SIZE - 1)
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
# PIL's resampling codes, as preprocessor_config.json's `resample` gives them.
RESAMPLING = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
ACTIVATIONS = {"quick_gelu": "quick_gelu", "gelu": "gelu"}
ACTIVATIONS.update(dict.fromkeys(("gelu_new", "gelu_pytorch_tanh", "gelu_fast"), "gelu_tanh"))

_TEXT_DEFAULTS: dict[str, Any] = {
    "vocab_size": CLIP_VOCAB_SIZE,
    "hidden_size": 512,
    "intermediate_size": 2048,
    "num_hidden_layers": 12,
    "num_attention_heads": 8,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "eos_token_id": CLIP_VOCAB_SIZE - 1,
}
_VISION_DEFAULTS: dict[str, Any] = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "num_channels": 3,
    "image_size": 224,
    "patch_size": 32,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
}


@dataclass(frozen=True)
class Tower:
    """One transformer: open_clip's width, layers, heads and MLP width, activation, eps."""

    width: int
    layers: int
    heads: int
    mlp_width: int
    activation: str  # "quick_gelu", "gelu" or "gelu_tanh"
    eps: float


@dataclass(frozen=True)
class Geometry:
    """The CLIP network config.json describes, in open_clip's terms."""

    embed_dim: int
    vision: Tower
    patch_size: int
    image_size: int
    text: Tower
    context_length: int
    vocab_size: int
    eos_id: int

    @property
    def text_pool(self) -> str:
        return "argmax" if self.eos_id in ARGMAX_EOS_IDS else "eos"


@dataclass(frozen=True)
class Preprocessing:
    """Resize (the shortest side to `resize`, or every side: `squash`), centre crop, normalise."""

    resize: int
    squash: bool
    crop: int | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str  # a RESAMPLING value


def geometry(config: dict[str, Any], path: Path) -> Geometry:
    """The network of a CLIPModel config.json; a UsageError naming `path` if open_clip's CLIP
    cannot be that network."""
    if config.get("model_type") != "clip":
        raise UsageError(
            f"{path}: model_type is {config.get('model_type')!r}, not 'clip'",
            hint="clipcli reads transformers CLIPModel checkpoints; name open_clip models as such",
        )
    text = {**_TEXT_DEFAULTS, **_section(config, "text_config", path)}
    vision = {**_VISION_DEFAULTS, **_section(config, "vision_config", path)}
    if vision["num_channels"] != 3:
        raise UsageError(f"{path}: the vision tower takes {vision['num_channels']} channels, not 3")
    text_tower, vision_tower = _tower(text, "text", path), _tower(vision, "vision", path)
    if (text_tower.activation == "quick_gelu") != (vision_tower.activation == "quick_gelu"):
        raise UsageError(
            f"{path}: one tower uses quick_gelu and the other not, which open_clip cannot build"
        )
    eos = text["eos_token_id"]
    if not isinstance(eos, int):
        raise UsageError(f"{path}: text_config.eos_token_id must be one token id, not {eos!r}")
    return Geometry(
        embed_dim=_positive(config.get("projection_dim", 512), "projection_dim", path),
        vision=vision_tower,
        patch_size=_square(vision["patch_size"], "patch_size", path),
        image_size=_square(vision["image_size"], "image_size", path),
        text=text_tower,
        context_length=_positive(text["max_position_embeddings"], "max_position_embeddings", path),
        vocab_size=_positive(text["vocab_size"], "vocab_size", path),
        eos_id=eos,
    )


def preprocessing(settings: dict[str, Any] | None, image_size: int, path: Path) -> Preprocessing:
    """The eval transform preprocessor_config.json describes (None: no such file, and CLIP's
    defaults at the model's own input size); a UsageError naming `path` for settings that do not
    make `image_size` square inputs scaled to [0, 1]."""
    if settings is None:
        return Preprocessing(image_size, False, image_size, OPENAI_MEAN, OPENAI_STD, "bicubic")
    if not settings.get("do_resize", True):
        raise UsageError(f"{path}: do_resize is off; clipcli needs images resized to one size")
    if settings.get("do_rescale", True) is False or not _close(
        settings.get("rescale_factor", 1 / 255), 1 / 255
    ):
        raise UsageError(f"{path}: pixels must be rescaled by 1/255")
    resize, squash = _resize(settings.get("size", {"shortest_edge": 224}), path)
    crop = None
    if settings.get("do_center_crop", True):
        crop, _ = _resize(settings.get("crop_size", {"height": 224, "width": 224}), path)
    if (crop or resize) != image_size or (crop is None and not squash):
        raise UsageError(
            f"{path}: makes inputs of another size than config.json's image_size ({image_size})"
        )
    resample = settings.get("resample", 3)
    if resample not in RESAMPLING:
        raise UsageError(f"{path}: unknown resample {resample!r} (PIL's codes are 0 to 5)")
    if settings.get("do_normalize", True):
        mean = _channels(settings.get("image_mean", OPENAI_MEAN), "image_mean", path)
        std = _channels(settings.get("image_std", OPENAI_STD), "image_std", path)
    else:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    return Preprocessing(resize, squash, crop, mean, std, RESAMPLING[resample])


def _section(config: dict[str, Any], key: str, path: Path) -> dict[str, Any]:
    # Configs written before transformers 4.20 may hold the towers under `*_config_dict`.
    section = config.get(key) or config.get(f"{key}_dict") or {}
    if not isinstance(section, dict):
        raise UsageError(f"{path}: {key} is not an object")
    return section


def _tower(section: dict[str, Any], name: str, path: Path) -> Tower:
    width = _positive(section["hidden_size"], f"{name}_config.hidden_size", path)
    heads = _positive(section["num_attention_heads"], f"{name}_config.num_attention_heads", path)
    mlp = _positive(section["intermediate_size"], f"{name}_config.intermediate_size", path)
    if width % heads:
        raise UsageError(f"{path}: {name} hidden_size {width} is not a multiple of {heads} heads")
    if int(width * (mlp / width)) != mlp:  # open_clip sizes the MLP as width * mlp_ratio
        raise UsageError(f"{path}: {name} intermediate_size {mlp} cannot be built by open_clip")
    activation = ACTIVATIONS.get(section["hidden_act"])
    if activation is None:
        raise UsageError(
            f"{path}: {name} hidden_act {section['hidden_act']!r} is not one open_clip builds",
            hint=f"known: {', '.join(ACTIVATIONS)}",
        )
    layers = _positive(section["num_hidden_layers"], f"{name}_config.num_hidden_layers", path)
    return Tower(width, layers, heads, mlp, activation, float(section["layer_norm_eps"]))


def _resize(size: Any, path: Path) -> tuple[int, bool]:
    """(side, squash) of a `size` or `crop_size`: shortest_edge, or a square height x width."""
    if isinstance(size, int):
        return size, False
    if isinstance(size, dict) and isinstance(size.get("shortest_edge"), int):
        return size["shortest_edge"], False
    square = isinstance(size, dict) and size.get("height") == size.get("width")
    if square and isinstance(size.get("height"), int):
        return size["height"], True
    raise UsageError(f"{path}: size {size!r} is not a shortest edge or a square")


def _square(value: Any, key: str, path: Path) -> int:
    if isinstance(value, (list, tuple)) and len(value) == 2 and value[0] == value[1]:
        value = value[0]
    return _positive(value, f"vision_config.{key}", path)


def _positive(value: Any, key: str, path: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{path}: {key} must be a positive whole number, not {value!r}")
    return value


def _channels(value: Any, key: str, path: Path) -> tuple[float, float, float]:
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 3
        or not all(isinstance(v, (int, float)) for v in value)
    ):
        raise UsageError(f"{path}: {key} must be three numbers, not {value!r}")
    return (float(value[0]), float(value[1]), float(value[2]))


def _close(value: Any, expected: float) -> bool:
    return isinstance(value, (int, float)) and abs(value - expected) <= 1e-9
