"""Getting a model's weights: the hub caches, offline mode, and why loading failed, in one line."""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING
from urllib.error import URLError
from urllib.parse import urlparse

from clipcli.errors import WeightsUnavailableError
from clipcli.models import checkpoints
from clipcli.models.names import (
    HF_HUB_PREFIX,
    HF_PREFIX,
    ModelSpec,
    open_clip_registry,
)
from clipcli.settings import hub_offline

if TYPE_CHECKING:
    pass


def load_failure(spec: ModelSpec, exc: Exception) -> WeightsUnavailableError:
    """One line that says which weights failed and why, whatever library raised."""
    first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if spec.pretrained_is_file:
        return checkpoints.load_failure(spec.pretrained or "", spec.name, exc)
    if _not_cached_nor_reachable(exc):
        return _weights_unavailable(spec)
    return WeightsUnavailableError(f"cannot load {spec.describe()}: {first_line}")


def tokenizer_failure(spec: ModelSpec, exc: Exception) -> WeightsUnavailableError:
    """One line that says the model's tokenizer could not be loaded, and why.

    SigLIP's tokenizer, and those of other models that name one on the hub, are downloaded
    once whatever the weights' source: a local checkpoint file still needs the hub then.
    """
    repo = hub_tokenizer(spec.name)
    source = f" ({repo} on the Hugging Face hub)" if repo else ""
    if _not_cached_nor_reachable(exc):
        why = "HF_HUB_OFFLINE is set" if hub_offline() else "the model hub could not be reached"
        return WeightsUnavailableError(
            f"cannot load the tokenizer of {spec.name}{source}: "
            f"it is not in the local cache and {why}",
            hint="run once with network access to cache it; after that it loads offline",
        )
    first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return WeightsUnavailableError(f"cannot load the tokenizer of {spec.name}: {first_line}")


def hub_tokenizer(name: str) -> str | None:
    """The hub repository that open_clip loads the model's tokenizer from (SigLIP's, for one),
    or None where the tokenizer ships with open_clip or the name is not an open_clip config."""
    open_clip = open_clip_registry()
    if name not in open_clip.list_models():  # get_model_config would download an hf-hub: one
        return None
    config = open_clip.get_model_config(name) or {}
    repo = config.get("text_cfg", {}).get("hf_tokenizer_name")
    return repo if isinstance(repo, str) and repo else None


def _weights_unavailable(spec: ModelSpec) -> WeightsUnavailableError:
    offline = hub_offline()
    why = "HF_HUB_OFFLINE is set" if offline else "the model hub could not be reached"
    caches, local = "Hugging Face hub cache, ~/.cache/clip", "pass --pretrained /path/to/weights.pt"
    if spec.name.startswith(HF_PREFIX):  # a transformers checkpoint is in the hub cache or nowhere
        caches, local = "Hugging Face hub cache", "give a checkpoint folder: --model ./folder"
    elif repo := hub_tokenizer(spec.name):  # SigLIP's: weights on disk still need it once
        local += f" (the tokenizer, {repo}, still comes from the hub once)"
    return WeightsUnavailableError(
        f"cannot load weights for {spec.describe()}: they are not in the local cache "
        f"({caches}) and {why}",
        hint=f"run once with network access to cache them, or {local}",
    )


@contextmanager
def quiet_hub_logging() -> Iterator[None]:
    """open_clip and huggingface_hub log retries and failures; clipcli reports them itself."""
    loggers = [logging.getLogger(), logging.getLogger("huggingface_hub")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


@contextmanager
def offline_unless_reachable(spec: ModelSpec) -> Iterator[None]:
    """Use the hub cache only when the hub cannot be reached.

    Without a network, huggingface_hub retries with back-off for about a minute before failing;
    one quick connection attempt tells us to go straight to the cache instead.
    """
    needs_hub = (
        spec.name.startswith((HF_HUB_PREFIX, HF_PREFIX))
        or (spec.pretrained is not None and not spec.pretrained_is_file)
        or hub_tokenizer(spec.name) is not None
    )
    if not needs_hub:
        yield
        return
    from huggingface_hub import constants

    previous = constants.HF_HUB_OFFLINE
    if not previous and not _reachable(constants.ENDPOINT):
        constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = previous


def _reachable(url: str, timeout: float = 3.0) -> bool:
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def _not_cached_nor_reachable(exc: BaseException) -> bool:
    """Whether `exc`, or any exception it was raised from, says the weights are neither in
    the local cache nor downloadable: the hub client's own errors, or the network's."""
    unreachable: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError, URLError)
    with contextlib.suppress(ImportError):  # open_clip downloads through huggingface_hub
        from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

        unreachable += (LocalEntryNotFoundError, OfflineModeIsEnabled)
    with contextlib.suppress(ImportError):  # the transport under older huggingface_hub
        from requests.exceptions import ConnectionError as RequestsConnectionError

        unreachable += (RequestsConnectionError,)
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, unreachable):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False
