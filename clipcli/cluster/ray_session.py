"""A Ray session for `--engine ray`: whether Ray is there, joining or starting a cluster, and
keeping Ray's own reporting off the user's terminal.

Ray is imported inside these functions only: `--help`, argument errors and local runs never
pay for it (a second or two), and clipcli works without the `ray` extra installed.

clipcli draws the one progress bar and reports errors in its own words, so Ray's log lines,
its workers' output and Ray Data's progress bars are kept off the terminal; they all stay in
the session's log folder (/tmp/ray/session_latest/logs on the head node).
"""

from __future__ import annotations

import logging
import os
import socket
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from clipcli.encoders.quiet import stderr_silenced
from clipcli.errors import ClipcliError, UsageError

RAY_HINT = "pip install 'clipcli[ray]'"
# How long a HOST:PORT may take to accept a connection. Ray itself retries an address that
# does not answer for over a minute, printing warnings, before it gives up.
CONNECT_TIMEOUT_S = 5.0
# Where Ray's C++ core reads its log level from as it starts.
_CORE_LOG_LEVEL = "RAY_BACKEND_LOG_LEVEL"
# Ray Data's progress bars, and its note of each run's plan, off.
_DATA_CONTEXT_QUIET = {
    "enable_progress_bars": False,
    "enable_operator_progress_bars": False,
    "print_on_execution_start": False,
}


def require_ray() -> None:
    """Raise a UsageError with the install hint where Ray (with Ray Data) cannot be imported,
    so that a run asking for it fails before it loads a model or writes anything."""
    try:
        import ray.data  # noqa: F401  (Ray itself, and Ray Data's own needs: pyarrow)
    except ImportError:
        raise UsageError("--engine ray needs Ray", hint=RAY_HINT) from None


@contextmanager
def connected(address: str | None) -> Iterator[None]:
    """Ray connected for the length of the block: to the cluster at `address` ("auto": the one
    started on this machine with `ray start`; HOST:PORT: its head node), or to one started here
    for the block and stopped at its end (None).

    Inside a block that is connected already (a caller that connected early, so that a cluster
    that cannot be reached stops the run before it writes), the same connection is used.
    """
    require_ray()
    import ray

    with quiet():
        if ray.is_initialized():
            yield
            return
        _start_or_join(_checked_address(address))
        try:
            yield
        finally:
            ray.shutdown()


def _checked_address(address: str | None) -> str:
    """The address as ray.init takes it, after checking that it can be reached at all."""
    if address is None:
        return "local"  # a new cluster on this machine, even if one runs here already
    if address == "auto":
        return address  # ray.init finds it, or says at once that there is none
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(
            f"--address {address}: not a Ray address",
            hint="give auto, or the head node's HOST:PORT (e.g. 10.0.0.5:6379)",
        )
    try:
        with socket.create_connection((host.strip("[]"), int(port)), CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        raise ClipcliError(
            f"cannot reach a Ray cluster at {address} ({exc.strerror or exc})",
            hint="check the address, or start the head node there with `ray start --head`",
        ) from None
    return address


def _start_or_join(address: str) -> None:
    import ray

    options: dict[str, Any] = {
        "log_to_driver": False,  # workers' output stays in their log files
        "logging_level": logging.ERROR,
    }
    if address == "local":
        options["include_dashboard"] = False  # nobody watches a cluster that lives for one run
    try:
        with _core_quiet():
            ray.init(address=address, **options)
    except ConnectionError as exc:
        found = "no Ray cluster runs on this machine" if address == "auto" else None
        raise ClipcliError(
            found or f"cannot connect to a Ray cluster at {address} ({str(exc).split('. ')[0]})",
            hint="start one with `ray start --head`, or leave out --address to start one here",
        ) from None


@contextmanager
def _core_quiet() -> Iterator[None]:
    """Ray's C++ core started with its notices off: at its default level it prints notices for
    Ray's developers on stderr (one for each actor pool of Ray Data, about
    ray-project/ray#53727), and on the level set here it prints that it was set. The core
    reads its level as it starts (in ray.init, and so do the processes of a cluster started
    there), and the one notice goes to stderr then: stderr is set aside while it starts."""
    if _CORE_LOG_LEVEL in os.environ:  # the user's choice
        yield
        return
    os.environ[_CORE_LOG_LEVEL] = "fatal"
    try:
        with stderr_silenced():
            yield
    finally:
        del os.environ[_CORE_LOG_LEVEL]


@contextmanager
def quiet() -> Iterator[None]:
    """Ray's own reporting in Python kept off the terminal while the block runs (Ray Data's
    progress bars, its log lines on the console, Ray's warnings), and put back after."""
    with warnings.catch_warnings():
        # Ray warns of its own deprecations as it makes its settings (DataContext's included).
        warnings.filterwarnings("ignore", module=r"ray(\.|$)")
        from ray.data import DataContext

        context = DataContext.get_current()
        before = {name: getattr(context, name) for name in _DATA_CONTEXT_QUIET}
        consoles = _ray_data_consoles()
        levels = [handler.level for handler in consoles]
        try:
            for name, value in _DATA_CONTEXT_QUIET.items():
                setattr(context, name, value)
            for handler in consoles:  # its log files keep everything
                handler.setLevel(logging.CRITICAL + 1)
            with _notices_logged():
                yield
        finally:
            for handler, level in zip(consoles, levels, strict=True):
                handler.setLevel(level)
            for name, value in before.items():
                setattr(context, name, value)


@contextmanager
def _notices_logged() -> Iterator[None]:
    """The notices Ray's driver thread prints as the cluster sends them ("Task ... failed.
    There are infinite retries remaining", as a node dies) logged instead, to the "ray" logger
    below the level ray.init was given. Ray prints them on stdout, where they would break
    --json, and has no setting for them; the thread looks the printer up by its name in
    ray._private.worker each time (a Ray without it keeps printing them)."""
    from ray._private import worker

    printer = getattr(worker, "print_to_stdstream", None)
    if printer is None:
        yield
        return
    log = logging.getLogger("ray")

    def logged(data: dict[str, Any], ignore_prefix: bool) -> None:
        for line in data.get("lines", []):
            log.info("(%s) %s", data.get("pid", "ray"), line)

    worker.print_to_stdstream = logged
    try:
        yield
    finally:
        worker.print_to_stdstream = printer


def _ray_data_consoles() -> list[logging.Handler]:
    """The handlers through which Ray Data logs each run's start and end on the console."""
    handlers = logging.getLogger("ray.data").handlers
    return [
        handler
        for handler in handlers
        if isinstance(handler, logging.StreamHandler)
        and not isinstance(handler, logging.FileHandler)
    ]


@contextmanager
def cluster_failures() -> Iterator[None]:
    """The cluster failing past what Ray retries (every node gone, say) as a one-line error;
    a bug in the code the workers run keeps its traceback."""
    import ray.exceptions

    try:
        yield
    except ray.exceptions.RayTaskError:
        raise
    except ray.exceptions.RayError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ClipcliError(
            f"the Ray cluster failed: {first}",
            hint="Ray's logs are in /tmp/ray/session_latest/logs on the head node",
        ) from None
