"""What every response of the server carries, and which requests it answers at all.

The page is one origin's own: its script, styles and pictures come from the server itself, so
the Content-Security-Policy allows nothing else (no inline script, no other site), and no
other site may frame the page or embed its photos. A server bound to a loopback address also
checks the Host header: a page elsewhere that gets its name to resolve to 127.0.0.1 (DNS
rebinding) would otherwise be that page's own origin, free to read every answer.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection
from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clipcli.web.responses import error_response

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; script-src 'self'; style-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # Another site's <img src="http://127.0.0.1:8765/image/1"> must not show the user's photos.
    "Cross-Origin-Resource-Policy": "same-origin",
}
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
# Methods a cross-site form or script may send without asking first: only reads are safe.
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def is_loopback(host: str) -> bool:
    """Whether binding to `host` keeps the server to this machine."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def loopback_host_names(bound: str) -> frozenset[str]:
    """The Host names a browser on this machine sends to a server bound to `bound`."""
    return LOOPBACK_NAMES | {bound.strip("[]").lower()}


def host_name(header: str) -> str:
    """The name of a Host header, its port left off: `[::1]:8765` is `::1`."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class SecurityHeaders:
    """ASGI middleware: the headers of HEADERS on every response, errors and files included;
    requests for a Host not in `allowed_hosts` (None: any) refused; writes from a page of
    another origin refused."""

    def __init__(self, app: ASGIApp, allowed_hosts: Collection[str] | None = None) -> None:
        self.app = app
        self.allowed_hosts = None if allowed_hosts is None else frozenset(allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers[name] = value
            await send(message)

        refusal = self._refusal(scope)
        if refusal is not None:
            await error_response(*refusal)(scope, receive, send_with_headers)
            return
        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            # A bug: answered here, so that even this response has the headers, and raised
            # again, so that its traceback is logged (and fails the tests).
            if not started:
                await error_response(500, "internal error")(scope, receive, send_with_headers)
            raise

    def _refusal(self, scope: Scope) -> tuple[int, str] | None:
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        if self.allowed_hosts is not None and host_name(host) not in self.allowed_hosts:
            return 400, f"unexpected Host '{host}': open the address `clipcli serve` printed"
        origin = headers.get("origin")
        from_elsewhere = origin is not None and urlsplit(origin).netloc.lower() != host.lower()
        if scope["method"] not in _SAFE_METHODS and from_elsewhere:
            return 403, "a page of another origin may not send this request"
        return None
