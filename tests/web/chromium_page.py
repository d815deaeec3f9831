"""A page in headless Chromium, driven through the Chrome DevTools Protocol (CDP).

Chromium is started with --remote-debugging-port=0: it picks a free port and writes it to
DevToolsActivePort in its profile folder; the page's target is then found through /json/list
and spoken to over a WebSocket. The WebSocket client is the stdlib's socket, with the few parts
of RFC 6455 that a local DevTools server needs (masked text frames out; text, continuation,
ping and close frames in), so the browser tests need nothing but a Chromium.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import struct
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

STARTUP_TIMEOUT_S = 20
CALL_TIMEOUT_S = 20
POLL_INTERVAL_S = 0.05
# RFC 6455: the server proves it read the handshake by hashing the key with this GUID.
WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class DevToolsError(RuntimeError):
    """Chromium did not start, or answered a command with an error."""


class WebSocket:
    """A blocking WebSocket client for one local connection."""

    def __init__(self, url: str, timeout_s: float = CALL_TIMEOUT_S) -> None:
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout_s)
        key = base64.b64encode(os.urandom(16)).decode()
        # No Origin header: Chromium accepts DevTools connections without one from any client,
        # and refuses those whose Origin is not in --remote-allow-origins.
        handshake = (
            f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.sock.sendall(handshake.encode())
        self.stream = self.sock.makefile("rb")
        status = self.stream.readline().decode("latin-1")
        headers = {}
        while (line := self.stream.readline().decode("latin-1").strip()) != "":
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        expected = base64.b64encode(hashlib.sha1((key + WEBSOCKET_GUID).encode()).digest())
        if " 101 " not in status or headers.get("sec-websocket-accept") != expected.decode():
            self.close()
            raise DevToolsError(f"no WebSocket at {url}: {status.strip()}")

    def send(self, text: str) -> None:
        self._send_frame(0x1, text.encode())

    def receive(self) -> str:
        """The next text message, its fragments joined; answers pings on the way."""
        fragments: list[bytes] = []
        while True:
            first, second = self._read(2)
            opcode, length = first & 0x0F, second & 0x7F
            if length == 126:
                (length,) = struct.unpack(">H", self._read(2))
            elif length == 127:
                (length,) = struct.unpack(">Q", self._read(8))
            mask = self._read(4) if second & 0x80 else b""
            payload = _masked(self._read(length), mask) if mask else self._read(length)
            if opcode == 0x8:
                raise DevToolsError("Chromium closed the DevTools connection")
            if opcode == 0x9:
                self._send_frame(0xA, payload)
            elif opcode in (0x0, 0x1, 0x2):
                fragments.append(payload)
                if first & 0x80:
                    return b"".join(fragments).decode()

    def close(self) -> None:
        self.sock.close()

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        # A client masks every frame it sends (RFC 6455 section 5.3).
        header = bytes([0x80 | opcode])
        if len(payload) < 126:
            header += bytes([0x80 | len(payload)])
        elif len(payload) < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack(">H", len(payload))
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", len(payload))
        mask = os.urandom(4)
        self.sock.sendall(header + mask + _masked(payload, mask))

    def _read(self, count: int) -> bytes:
        data = self.stream.read(count)
        if len(data) < count:
            raise DevToolsError("the DevTools connection ended mid-frame")
        return data


def _masked(payload: bytes, mask: bytes) -> bytes:
    if not payload:
        return payload
    repeated = (mask * (len(payload) // 4 + 1))[: len(payload)]
    masked = int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")
    return masked.to_bytes(len(payload), "big")


class Page:
    """One browser tab: commands in, answers and events out.

    Events that arrive while waiting for an answer are kept in `events`, in order, for
    `wait_for_event` and for the test's own checks (console errors, exceptions).
    """

    def __init__(self, socket_: WebSocket) -> None:
        self.socket = socket_
        self.events: list[dict[str, Any]] = []
        self._next_id = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        number = self._next_id
        self.socket.send(json.dumps({"id": number, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.receive())
            if message.get("id") == number:
                if "error" in message:
                    raise DevToolsError(f"{method}: {message['error'].get('message')}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        answer = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in answer:
            details = answer["exceptionDetails"]
            thrown = details.get("exception", {}).get("description") or details.get("text")
            raise DevToolsError(f"{expression!r} threw {thrown}")
        return answer["result"].get("value")

    def wait_for(self, expression: str, timeout_s: float = 10, what: str = "") -> Any:
        """The expression's first truthy value, polled until `timeout_s` have passed."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"waited {timeout_s:g} s for {what or expression}")
            time.sleep(POLL_INTERVAL_S)

    def wait_for_event(self, method: str, timeout_s: float = 10) -> dict[str, Any]:
        """The first kept event named `method`, receiving more until one comes."""
        deadline = time.monotonic() + timeout_s
        while True:
            for event in self.events:
                if event["method"] == method:
                    return event
            if time.monotonic() > deadline:
                raise AssertionError(f"waited {timeout_s:g} s for the event {method}")
            message = json.loads(self.socket.receive())
            if "method" in message:
                self.events.append(message)

    def navigate(self, url: str) -> None:
        """Load `url` and wait for its load event (scripts run, `defer` ones included)."""
        self.events = [event for event in self.events if event["method"] != "Page.loadEventFired"]
        answer = self.call("Page.navigate", url=url)
        if answer.get("errorText"):
            raise DevToolsError(f"could not load {url}: {answer['errorText']}")
        self.wait_for_event("Page.loadEventFired")

    def centre_of(self, selector: str) -> tuple[float, float]:
        """Where the first element matching `selector` is, scrolled into view."""
        box = self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " if (!e) return null; e.scrollIntoView({block: 'nearest'});"
            " const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2];"
            " })()"
        )
        if box is None:
            raise AssertionError(f"nothing on the page matches {selector}")
        return box[0], box[1]

    def hover(self, selector: str) -> None:
        x, y = self.centre_of(selector)
        self.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)

    def click(self, selector: str) -> None:
        """A real mouse click where the element is: whatever lies on top there gets it."""
        x, y = self.centre_of(selector)
        self.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def type_text(self, text: str) -> None:
        """Type into the focused element, one character at a time as a person would."""
        for character in text:
            self.call("Input.insertText", text=character)

    def press(self, key: str, code: int) -> None:
        """Press and release a key, e.g. press("Escape", 27)."""
        for kind in ("keyDown", "keyUp"):
            self.call(
                "Input.dispatchKeyEvent",
                type=kind,
                key=key,
                code=key,
                windowsVirtualKeyCode=code,
            )

    def set_files(self, selector: str, *paths: Path) -> None:
        """Choose files in a file input, as its dialog would (a `change` event follows)."""
        found = self.call(
            "Runtime.evaluate", expression=f"document.querySelector({json.dumps(selector)})"
        )
        self.call(
            "DOM.setFileInputFiles",
            files=[str(path) for path in paths],
            objectId=found["result"]["objectId"],
        )

    def screenshot(self, *pngs: Path) -> None:
        """Save what the window shows as PNG, to each of `pngs`."""
        data = base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        for png in pngs:
            png.parent.mkdir(parents=True, exist_ok=True)
            png.write_bytes(data)

    def errors(self) -> list[str]:
        """What the page reported as going wrong so far: uncaught exceptions, console
        errors, and Chromium's own error log (refused by the Content-Security-Policy, say)."""
        found = []
        for event in self.events:
            params = event.get("params", {})
            if event["method"] == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                found.append(details.get("exception", {}).get("description") or details["text"])
            elif event["method"] == "Runtime.consoleAPICalled" and params["type"] == "error":
                found.append(" ".join(str(arg.get("value", arg)) for arg in params["args"]))
            elif event["method"] == "Log.entryAdded" and params["entry"]["level"] == "error":
                found.append(f"{params['entry']['text']} ({params['entry'].get('url', '')})")
        return found


@contextmanager
def chromium_page(
    chromium: str, profile: Path, *, width: int = 1280, height: int = 900
) -> Iterator[Page]:
    """A blank tab of a fresh headless Chromium with its own profile folder, `width` x
    `height` CSS pixels; Chromium is ended when the block ends."""
    profile.mkdir(parents=True, exist_ok=True)
    # An earlier Chromium's file would name a port no one listens on any more.
    (profile / "DevToolsActivePort").unlink(missing_ok=True)
    command = [
        chromium,
        "--headless",
        "--no-sandbox",  # lets it run as root in containers
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        "--remote-debugging-port=0",
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
        "about:blank",
    ]
    with open(profile / "chromium.log", "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        port = _devtools_port(process, profile)
        page = Page(WebSocket(_page_target(port)))
        try:
            for domain in ("Page", "Runtime", "Log", "DOM"):
                page.call(f"{domain}.enable")
            page.call(
                "Emulation.setDeviceMetricsOverride",
                width=width,
                height=height,
                deviceScaleFactor=1,
                mobile=False,
            )
            yield page
        finally:
            page.socket.close()
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _devtools_port(process: subprocess.Popen, profile: Path) -> int:
    """The port Chromium chose, from the DevToolsActivePort file it writes once listening
    (its first line; the second is the browser target's path)."""
    active = profile / "DevToolsActivePort"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            said = (profile / "chromium.log").read_text(errors="replace")[-2000:]
            raise DevToolsError(f"Chromium exited with {process.returncode}: {said}")
        lines = active.read_text().split() if active.is_file() else []
        if lines and lines[0].isdigit():
            return int(lines[0])
        time.sleep(POLL_INTERVAL_S)
    raise DevToolsError(f"Chromium wrote no DevToolsActivePort in {STARTUP_TIMEOUT_S} s")


def _page_target(port: int) -> str:
    """The WebSocket address of the tab Chromium opened (listed soon after it listens)."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as answer:
            targets = json.load(answer)
        for target in targets:
            if target.get("type") == "page":
                return target["webSocketDebuggerUrl"]
        if time.monotonic() > deadline:
            raise DevToolsError(f"Chromium opened no tab: {targets}")
        time.sleep(POLL_INTERVAL_S)
