"""Where clipcli keeps its data, and which model it uses when the user does not say.

Precedence everywhere: command-line flag, then environment variable, then a default.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_MODEL = "ViT-B-32-256"
DEFAULT_PRETRAINED = "datacomp_s34b_b86k"

ENV_HOME = "CLIPCLI_HOME"
ENV_INDEX = "CLIPCLI_INDEX"
ENV_MODEL = "CLIPCLI_MODEL"
ENV_PRETRAINED = "CLIPCLI_PRETRAINED"
ENV_PRECISION = "CLIPCLI_PRECISION"
ENV_CACHE = "CLIPCLI_CACHE"


def _home(kind: str) -> Path:
    """A per-user folder; CLIPCLI_HOME moves all of them at once (tests, portable installs)."""
    home = os.environ.get(ENV_HOME)
    if home:
        return Path(home) / kind
    import platformdirs

    if kind == "cache":
        return Path(platformdirs.user_cache_dir("clipcli"))
    return Path(platformdirs.user_data_dir("clipcli"))


def index_dir(explicit: Path | None = None) -> Path:
    """The index folder: --index, else CLIPCLI_INDEX, else the per-user data folder."""
    if explicit is not None:
        return explicit
    env = os.environ.get(ENV_INDEX)
    if env:
        return Path(env)
    return _home("data") / "index"


def cache_dir() -> Path:
    """Caches that can be deleted at any time (label embeddings, exported models)."""
    override = os.environ.get(ENV_CACHE)
    return Path(override) if override else _home("cache")


def precision_choice(precision: str | None) -> str:
    """--precision, else CLIPCLI_PRECISION, else auto."""
    return precision or os.environ.get(ENV_PRECISION) or "auto"


def model_choice(model: str | None, pretrained: str | None) -> tuple[str, str | None]:
    """The (model, pretrained) the user asked for, before any default weights are filled in.

    CLIPCLI_PRETRAINED only applies when the model also comes from the environment or the default:
    weights meant for one architecture must not be silently paired with another given by --model.
    """
    if model is None:
        model = os.environ.get(ENV_MODEL) or DEFAULT_MODEL
        if pretrained is None:
            pretrained = os.environ.get(ENV_PRETRAINED) or None
    return model, pretrained
