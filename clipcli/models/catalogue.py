"""The models clipcli knows by name: how accurate, how heavy and how licensed each one is, and
the tiers (`--model fast`, `default`, `best`) that name a permissively licensed one.

ImageNet-1k zero-shot top-1 and image GFLOPs come from open_clip's published tables
(docs/openclip_results.csv, docs/model_profile.csv) where they list the model, else from the
model's card on the Hugging Face hub; `source` says which. Nothing here imports open_clip or
torch: `clipcli models` answers at once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

OPEN_CLIP_RESULTS = "open_clip docs/openclip_results.csv, docs/model_profile.csv"
WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


@dataclass(frozen=True)
class Known:
    """One model and weights tag that clipcli lists."""

    name: str
    pretrained: str
    hub_repo: str  # where open_clip fetches the weights from
    imagenet_top1: float | None  # zero-shot, percent
    image_gflops: float | None
    params_m: float | None  # image + text tower, millions
    licence: str
    research_only: bool = False
    tokenizer: str = "CLIP BPE (bundled)"
    source: str = OPEN_CLIP_RESULTS


CATALOGUE: tuple[Known, ...] = (
    Known("ViT-B-32", "openai", "timm/vit_base_patch32_clip_224.openai", 63.3, 8.82, 151.3,
          "MIT"),
    Known("ViT-B-32", "laion2b_s34b_b79k", "laion/CLIP-ViT-B-32-laion2B-s34B-b79K", 66.6, 8.82,
          151.3, "MIT"),
    Known("ViT-B-32", "datacomp_xl_s13b_b90k", "laion/CLIP-ViT-B-32-DataComp.XL-s13B-b90K",
          69.2, 8.82, 151.3, "MIT"),
    Known("ViT-B-32-256", "datacomp_s34b_b86k",
          "laion/CLIP-ViT-B-32-256x256-DataComp-s34B-b86K", 72.8, 11.5, 151.3, "MIT"),
    Known("ViT-B-16", "datacomp_xl_s13b_b90k", "laion/CLIP-ViT-B-16-DataComp.XL-s13B-b90K",
          73.5, 35.1, 149.6, "MIT"),
    Known("ViT-L-14", "datacomp_xl_s13b_b90k", "laion/CLIP-ViT-L-14-DataComp.XL-s13B-b90K",
          79.2, 162.0, 427.6, "MIT"),
    Known("PE-Core-B-16", "meta", "timm/PE-Core-B-16", 78.4, 34.0, None, "Apache-2.0",
          source="model card, facebook/PE-Core-B16-224"),
    Known("MobileCLIP2-S0", "dfndr2b", "timm/MobileCLIP2-S0-OpenCLIP", 71.5, None, 74.8,
          "apple-amlr", research_only=True, source="model card, apple/MobileCLIP2-S0"),
    Known("MobileCLIP2-S2", "dfndr2b", "timm/MobileCLIP2-S2-OpenCLIP", 77.2, None, 99.1,
          "apple-amlr", research_only=True, source="model card, apple/MobileCLIP2-S2"),
    Known("clipcli-shapes", "bundled", "", None, None, None, "MIT",
          source="bundled with clipcli: six shapes in eight colours, for trying it offline"),
    Known("ViT-B-16-SigLIP2", "webli", "timm/ViT-B-16-SigLIP2", None, None, None, "Apache-2.0",
          tokenizer="Gemma (from the hub)", source="model card, google/siglip2-base-patch16-224"),
)  # fmt: skip

# Each a permissively licensed model: `fast` the cheapest of the good ones, `default` the
# photo model clipcli uses when none is named, `best` the most accurate.
TIERS: dict[str, tuple[str, str]] = {
    "fast": ("ViT-B-32", "datacomp_xl_s13b_b90k"),
    "default": ("ViT-B-32-256", "datacomp_s34b_b86k"),
    "best": ("ViT-L-14", "datacomp_xl_s13b_b90k"),
}
RESEARCH_ONLY_FAMILIES = ("MobileCLIP2-",)


def resolve_tier(model: str, pretrained: str | None) -> tuple[str, str | None]:
    """A tier name as the model and weights it stands for; any other model as it is."""
    if model in TIERS and pretrained is None:
        return TIERS[model]
    if model in TIERS:
        return TIERS[model][0], pretrained
    return model, pretrained


def licence_notice(model: str | None) -> str | None:
    """One line for weights licensed for research only (MobileCLIP2's), else None."""
    if model is None:
        return None
    name, _ = resolve_tier(model, None)
    if not name.startswith(RESEARCH_ONLY_FAMILIES):
        return None
    return f"{name}'s weights are licensed for research use only (apple-amlr), not for products"


def tiers_of(entry: Known) -> list[str]:
    return [tier for tier, named in TIERS.items() if named == (entry.name, entry.pretrained)]


def is_cached(entry: Known) -> bool:
    """Whether the weights are here (in the local Hugging Face hub cache, or bundled), so
    they load offline."""
    if not entry.hub_repo:
        return True
    folder = _hub_cache() / f"models--{entry.hub_repo.replace('/', '--')}" / "snapshots"
    try:
        snapshots = list(folder.iterdir())
    except OSError:
        return False
    return any((snapshot / name).is_file() for snapshot in snapshots for name in WEIGHT_FILES)


def _hub_cache() -> Path:
    """The hub cache huggingface_hub reads, by its own environment variables."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit)
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface"
    )
    return Path(home) / "hub"
