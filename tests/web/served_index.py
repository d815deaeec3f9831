"""What the server's tests share: an index of drawn shapes made with the bundled shapes model
(on which "a red star" finds the red stars first), and a client that asks as a browser on
this machine does."""

from __future__ import annotations

import asyncio
import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import numpy as np
from conftest import TEST_MODEL
from PIL import Image
from starlette.applications import Starlette
from starlette.testclient import TestClient
from typer.testing import CliRunner

from clipcli.cli.app import app as cli_app
from clipcli.shapes import draw_shape, write_sample_folder

LOCAL_URL = "http://127.0.0.1:8765"


def index_photos(photos: Path, index: Path) -> None:
    """`clipcli index PHOTOS --index INDEX --model clipcli-shapes`, expected to succeed."""
    result = CliRunner().invoke(
        cli_app, ["index", str(photos), "--index", str(index), "--model", TEST_MODEL]
    )
    assert result.exit_code == 0, result.output


def shapes_index(root: Path, count: int, seed: int = 7) -> Path:
    """`count` drawn shapes (every colour and shape in turn) in root/photos, indexed into
    root/index, which is returned."""
    write_sample_folder(root / "photos", count, seed=seed)
    index_photos(root / "photos", root / "index")
    return root / "index"


def local_client(app: Starlette) -> TestClient:
    """A client whose requests carry the Host a browser sends to `clipcli serve`'s address."""
    return TestClient(app, base_url=LOCAL_URL)


def names(hits: list[dict]) -> list[str]:
    return [Path(hit["path"]).name for hit in hits]


def is_red_star(name: str) -> bool:
    return Path(name).stem.endswith("-red-star")


def drawn_png(shape: str, colour: str, seed: int = 99) -> bytes:
    """A new drawing of the shape in the colour, as PNG bytes."""
    image, _ = draw_shape(np.random.default_rng(seed), shape, colour)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG a few dozen bytes long whose header claims `width` x `height` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


def decoded(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes


def get_raw_path(app: Starlette, raw_path: str) -> RawResponse:
    """GET `raw_path` as it is sent, dot segments and escapes included, handed to the app as
    uvicorn hands it a request: `path` unescaped, never normalised. (An HTTP client, Starlette's
    TestClient too, would resolve "/a/../b" to "/b" before sending it.)"""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": unquote(raw_path),
        "raw_path": raw_path.encode("ascii"),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", LOCAL_URL.removeprefix("http://").encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8765),
    }
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    headers = {name.decode().lower(): value.decode() for name, value in start["headers"]}
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return RawResponse(start["status"], headers, body)
