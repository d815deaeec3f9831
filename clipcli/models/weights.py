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
    ModelSpec,
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


def _weights_unavailable(spec: ModelSpec) -> WeightsUnavailableError:
    offline = hub_offline()
    why = "HF_HUB_OFFLINE is set" if offline else "the model hub could not be reached"
    return WeightsUnavailableError(
        f"cannot load weights for {spec.describe()}: they are not in the local cache "
        f"(Hugging Face hub cache, ~/.cache/clip) and {why}",
        hint="run once with network access to cache them, or pass --pretrained /path/to/weights.pt",
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
    needs_hub = spec.name.startswith(HF_HUB_PREFIX) or (
        spec.pretrained is not None and not spec.pretrained_is_file
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
