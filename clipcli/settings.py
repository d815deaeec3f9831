"""Where clipcli keeps its data, and which model it uses when the user does not say.

Precedence everywhere: command-line flag, then environment variable, then a default.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from clipcli.errors import UsageError

DEFAULT_MODEL = "ViT-B-32-256"
DEFAULT_PRETRAINED = "datacomp_s34b_b86k"

ENV_HOME = "CLIPCLI_HOME"
ENV_INDEX = "CLIPCLI_INDEX"
ENV_MODEL = "CLIPCLI_MODEL"
ENV_PRETRAINED = "CLIPCLI_PRETRAINED"
ENV_PRECISION = "CLIPCLI_PRECISION"
ENV_CACHE = "CLIPCLI_CACHE"
ENV_CACHE_LIMIT = "CLIPCLI_CACHE_LIMIT"

# Room for about fifteen exports of ViT-B-32-sized models (660 MB each, int8 graphs included).
DEFAULT_CACHE_LIMIT = 10 * 10**9
NO_LIMIT = ("none", "off", "unlimited")
# A number and a unit: B, or k/M/G/T (powers of 1000) with an optional B, or KiB/MiB/GiB/TiB.
_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(?:([kmgt])(i?)b?|b)", re.IGNORECASE)

# fp32: open_clip's torch reference. bf16: torch autocast (CPUs with AVX-512 BF16/AMX, GPUs).
# onnx / int8: ONNX Runtime on the CPU. auto: on the CPU, the fastest of torch fp32, ONNX fp32
# and ONNX int8 whose embeddings agree with torch fp32 to cosine >= 0.999 (checked and timed
# once per model at export).
PRECISIONS = ("auto", "fp32", "bf16", "onnx", "int8")


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


def known_indexes_file() -> Path:
    """The list of index folders `clipcli index` has written, beside the default index."""
    return _home("data") / "indexes.json"


def cache_limit() -> int | None:
    """CLIPCLI_CACHE_LIMIT in bytes ("5GB", "500MB", "2GiB"; "none": no limit), else the default.

    A bare number is refused rather than read as bytes: "10" meaning 10 GB would empty the cache.
    """
    raw = os.environ.get(ENV_CACHE_LIMIT, "").strip()
    if not raw:
        return DEFAULT_CACHE_LIMIT
    if raw.lower() in NO_LIMIT:
        return None
    match = _SIZE.fullmatch(raw)
    if match is None:
        raise UsageError(
            f"{ENV_CACHE_LIMIT}={raw}: not a size", hint='use e.g. 5GB, 500MB, or "none"'
        )
    number, prefix, binary = match.groups()
    power = "kmgt".index(prefix.lower()) + 1 if prefix else 0
    return int(float(number) * (1024 if binary else 1000) ** power)


def precision_choice(precision: str | None) -> str:
    """--precision, else CLIPCLI_PRECISION, else auto; a value that is none of PRECISIONS is a
    usage error that names where it came from."""
    known = f"use {', '.join(PRECISIONS)}"
    if precision:
        if precision not in PRECISIONS:
            raise UsageError(f"unknown precision '{precision}' (--precision)", hint=known)
        return precision
    from_env = os.environ.get(ENV_PRECISION)
    if from_env and from_env not in PRECISIONS:
        raise UsageError(
            f"{ENV_PRECISION}={from_env}: unknown precision", hint=f"{known}, or unset it"
        )
    return from_env or "auto"


def model_from_environment() -> bool:
    """Whether CLIPCLI_MODEL names a model: a choice as explicit as --model."""
    return bool(os.environ.get(ENV_MODEL))


def hub_offline() -> bool:
    """Whether the user told the Hugging Face hub client to stay offline (HF_HUB_OFFLINE)."""
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}


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
