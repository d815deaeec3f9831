"""`clipcli serve`: the search page over an index, served on this machine until Ctrl-C.

Loopback by default: any other address lets every machine that can reach it search and see
the photos, so it takes --allow-remote as well, and is warned about.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from clipcli.cli.options import IndexOption, print_warning, reports_errors
from clipcli.errors import ClipcliError, UsageError
from clipcli.literal import shown

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


@reports_errors
def serve(
    index_dir: IndexOption = None,
    host: Annotated[
        str,
        typer.Option(
            "--host",
            help="The address to listen on. Any but a loopback one (127.0.0.1, ::1, localhost) "
            "needs --allow-remote.",
        ),
    ] = DEFAULT_HOST,
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="The port.")] = DEFAULT_PORT,
    open_browser: Annotated[
        bool, typer.Option("--open", help="Open the page in the web browser.")
    ] = False,
    allow_remote: Annotated[
        bool,
        typer.Option(
            "--allow-remote",
            help="Let --host be an address other machines can reach: anyone who can reach it "
            "can search and see every indexed photo.",
        ),
    ] = False,
    access_log: Annotated[
        bool, typer.Option("--access-log", help="Log every request on stderr.")
    ] = False,
) -> None:
    """Serve a search page over the index, for a web browser on this machine."""
    from clipcli.settings import index_dir as resolve_index
    from clipcli.web.security import is_loopback, loopback_host_names

    loopback = is_loopback(host)
    if not loopback and not allow_remote:
        raise UsageError(
            f"--host {host} would let other machines search and see your photos",
            hint="add --allow-remote if that is what you want, or leave --host out",
        )
    folder = resolve_index(index_dir)
    from clipcli.web.app import create_app

    app = create_app(folder, allowed_hosts=loopback_host_names(host) if loopback else None)
    _check_free(host, port)
    if not loopback:
        print_warning(f"serving on {host}: anyone who can reach it can see every indexed photo")
    url = f"http://{_in_url(host)}:{port}/"
    sys.stdout.write(f"serving {shown(str(folder))} at {url} (Ctrl-C stops)\n")
    sys.stdout.flush()
    if open_browser:
        import webbrowser

        webbrowser.open(url)
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=access_log)


def _check_free(host: str, port: int) -> None:
    """Say in one line when the address is taken (another `clipcli serve`, most likely), rather
    than leave it to uvicorn's log."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.create_server((host.strip("[]"), port), family=family):
            pass
    except OSError as exc:
        raise ClipcliError(
            f"cannot listen on {_in_url(host)}:{port} ({exc.strerror or exc})",
            hint="give another --port, or stop what listens there",
        ) from None


def _in_url(host: str) -> str:
    """`host` as a URL names it: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
