"""What the shard tests share: a library of drawn shapes indexed with the bundled shapes model,
the catalog read back as plain rows, shards written as clip-retrieval writes them, and shards
read as embedding-reader reads them."""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import TEST_MODEL, exif_photo
from typer.testing import CliRunner

from clipcli.cli.app import app
from clipcli.shapes import write_sample_folder
from clipcli.store.catalog import CATALOG_FILE

# The bundled model, its fp32 torch tower: the same vectors for every run that embeds a file.
SHAPES_FP32 = ["--model", TEST_MODEL, "--precision", "fp32"]


def shapes_library(folder: Path, count: int, *, dated: bool = True) -> list[Path]:
    """`count` images in `folder`, sorted: drawn shapes, the last one a JPEG whose camera
    recorded a date (when `dated`), so that EXIF dates are among those carried."""
    drawn = count - 1 if dated else count
    paths = [path for path, _ in write_sample_folder(folder, drawn, seed=3)]
    if dated:
        paths.append(exif_photo(folder / "zz-dated.jpg", "2021:07:04 12:30:00"))
    return sorted(paths)


@dataclass(frozen=True)
class Library:
    """Photos and the index made of them, shared by a module's tests, which only read them."""

    photos: Path
    paths: list[Path]
    index: Path


def indexed_library(root: Path, cache: Path, count: int = 25) -> Library:
    """`count` photos in root/photos (shapes_library), indexed with the shapes model (fp32)
    into root/index, with a clipcli home of their own: made once for a module's tests, outside
    any test's isolated home."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CLIPCLI_HOME", str(root / "home"))
        patch.setenv("CLIPCLI_CACHE", str(cache))
        for name in ("CLIPCLI_INDEX", "CLIPCLI_MODEL", "CLIPCLI_PRETRAINED", "CLIPCLI_PRECISION"):
            patch.delenv(name, raising=False)
        paths = shapes_library(root / "photos", count)
        arguments = ["index", str(root / "photos"), "--index", str(root / "index"), *SHAPES_FP32]
        result = CliRunner().invoke(app, arguments, catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return Library(root / "photos", paths, root / "index")


@dataclass(frozen=True)
class CatalogRow:
    path: str
    sha256: str
    size: int
    mtime_ns: int
    taken_at: float | None
    vector: np.ndarray


def catalog_rows(index: Path) -> list[CatalogRow]:
    """The catalog's photos in id order, as stored."""
    db = sqlite3.connect(index / CATALOG_FILE)
    try:
        found = db.execute(
            "SELECT path, sha256, size, mtime_ns, taken_at, embedding FROM images ORDER BY id"
        ).fetchall()
    finally:
        db.close()
    return [CatalogRow(*rest, np.frombuffer(blob, dtype="<f4")) for *rest, blob in found]


def write_clip_retrieval_shards(
    out: Path, paths: list[str], vectors: np.ndarray, shard_size: int
) -> None:
    """Shards as clip-retrieval's NumpyWriter writes them: float16 npy, a parquet of
    image_path only, N padded to the digits of the partition count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    count = -(-len(paths) // shard_size)
    digits = int(np.log10(count)) + 1
    (out / "img_emb").mkdir(parents=True)
    (out / "metadata").mkdir()
    for number in range(count):
        rows = slice(number * shard_size, (number + 1) * shard_size)
        name = str(number).zfill(digits)
        np.save(out / "img_emb" / f"img_emb_{name}.npy", vectors[rows].astype(np.float16))
        table = pa.table({"image_path": paths[rows]})
        pq.write_table(table, out / "metadata" / f"metadata_{name}.parquet")


def read_like_embedding_reader(folder: Path) -> tuple[np.ndarray, list[str]]:
    """The vectors and image paths as embedding-reader's numpy_parquet reader finds them:
    each folder's files sorted by name and zipped, the npy header parsed with its regexes, the
    rows read from the header's end with frombuffer."""
    import pyarrow.parquet as pq

    npys = sorted((folder / "img_emb").glob("**/*.npy"))
    parquets = sorted((folder / "metadata").glob("**/*.parquet"))
    vectors, paths = [], []
    for npy, parquet in zip(npys, parquets, strict=True):
        data = npy.read_bytes()
        first_line = data[:300].split(b"\n")[0]
        shape = re.search(r"'shape': \(([0-9]+), ([0-9]+)\)", str(first_line))
        dtype = re.search(r"'descr': '([<f0-9]+)'", str(first_line)).group(1)
        rows, dim = int(shape.group(1)), int(shape.group(2))
        start = len(first_line) + 1
        item = np.dtype(dtype).itemsize * dim
        block = np.frombuffer(data[start : start + rows * item], dtype=dtype).reshape(rows, dim)
        vectors.append(block.astype(np.float32))
        paths += pq.read_table(parquet).column("image_path").to_pylist()
    return np.concatenate(vectors), paths
