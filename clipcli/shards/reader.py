"""Reading a shard set, clipcli's or clip-retrieval's: the shards in order, each a block of
rows at a time, the npy memory-mapped so that only the block read is in memory.

A set with a manifest is read as the manifest lists it (its complete shards only); one without
(clip-retrieval's) is every `img_emb/img_emb_N.npy` with its `metadata/metadata_N.parquet`, by
N, as embedding-reader pairs them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clipcli.errors import ClipcliError, UsageError
from clipcli.shards.layout import (
    COLUMNS,
    EMBEDDINGS_FOLDER,
    METADATA_FOLDER,
    SHARD_NAME,
    Manifest,
    ShardRow,
    embeddings_path,
    metadata_path,
    read_manifest,
)
from clipcli.vectors import Embeddings

# Rows read at a time: 4096 vectors of 1024 dimensions are 16 MB as float32.
BLOCK_ROWS = 4096


@dataclass(frozen=True)
class ShardFiles:
    number: int
    embeddings: Path
    metadata: Path
    rows: int


@dataclass(frozen=True)
class ShardSet:
    """The shards of a folder, checked: every npy a 2-d float array of one width, with a
    parquet of as many rows that has image_path."""

    folder: Path
    manifest: Manifest | None  # None: clip-retrieval's, or someone else's
    shards: tuple[ShardFiles, ...]
    dim: int

    @property
    def rows(self) -> int:
        return sum(shard.rows for shard in self.shards)


@dataclass(frozen=True)
class ShardBlock:
    """Consecutive rows of one shard and their vectors, as float32."""

    number: int
    rows: list[ShardRow | None]  # None: a row without an image_path
    vectors: Embeddings


def open_shards(folder: Path) -> ShardSet:
    """The shard set in `folder`; a UsageError where it holds none."""
    if not folder.is_dir():
        raise UsageError(f"{folder}: not a folder of shards")
    manifest = read_manifest(folder)
    if manifest is not None:
        numbered = [
            (s.number, embeddings_path(folder, s.number, manifest.digits)) for s in manifest.shards
        ]
    else:
        numbered = _found_shards(folder)
    shards = [_checked(folder, number, path) for number, path in numbered]
    dims = {dim for _, dim in shards}
    if len(dims) > 1:
        raise ClipcliError(f"{folder}: shards of different widths ({sorted(dims)} dimensions)")
    if manifest is not None and manifest.dim is not None and dims and dims != {manifest.dim}:
        raise ClipcliError(f"{folder}: the shards are not {manifest.dim}-d as the manifest says")
    dim = dims.pop() if dims else (manifest.dim if manifest and manifest.dim else 0)
    return ShardSet(folder, manifest, tuple(files for files, _ in shards), dim)


def _found_shards(folder: Path) -> list[tuple[int, Path]]:
    """Every img_emb_N.npy of a set without a manifest, by N."""
    found = []
    embeddings = folder / EMBEDDINGS_FOLDER
    for path in embeddings.iterdir() if embeddings.is_dir() else ():
        match = SHARD_NAME.fullmatch(path.name)
        if match is not None:
            found.append((int(match.group(1)), path))
    if not found:
        raise UsageError(
            f"{folder}: no shards here (no {EMBEDDINGS_FOLDER}/img_emb_N.npy)",
            hint="give the folder that holds img_emb/ and metadata/",
        )
    return sorted(found)


def _checked(folder: Path, number: int, embeddings: Path) -> tuple[ShardFiles, int]:
    """A shard's files, and its width, once both are there and agree on their rows."""
    import pyarrow.parquet as pq

    padded = SHARD_NAME.fullmatch(embeddings.name)
    digits = len(padded.group(1)) if padded else 1
    metadata = metadata_path(folder, number, digits)
    try:
        vectors = np.load(embeddings, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise ClipcliError(f"{embeddings}: not a readable npy file ({exc})") from None
    if vectors.ndim != 2 or vectors.dtype.kind != "f":
        raise ClipcliError(
            f"{embeddings}: holds a {vectors.dtype} array of shape {vectors.shape}, "
            "not one float vector a row"
        )
    if not metadata.is_file():
        raise ClipcliError(f"{embeddings}: no {METADATA_FOLDER}/{metadata.name} beside it")
    try:
        parquet = pq.ParquetFile(metadata)
    except Exception as exc:  # pyarrow's own errors: a damaged or foreign file
        raise ClipcliError(f"{metadata}: not a readable parquet file ({exc})") from None
    if "image_path" not in parquet.schema_arrow.names:
        raise ClipcliError(f"{metadata}: has no image_path column")
    rows = parquet.metadata.num_rows
    if rows != len(vectors):
        raise ClipcliError(f"{metadata}: {rows} rows for the {len(vectors)} vectors of its npy")
    return ShardFiles(number, embeddings, metadata, rows), int(vectors.shape[1])


def read_blocks(shards: ShardSet, block_rows: int = BLOCK_ROWS) -> Iterator[ShardBlock]:
    """Every row of the set, shard by shard in order, `block_rows` at a time at most."""
    import pyarrow.parquet as pq

    for shard in shards.shards:
        vectors = np.load(shard.embeddings, mmap_mode="r")
        parquet = pq.ParquetFile(shard.metadata)
        columns = [name for name in COLUMNS if name in parquet.schema_arrow.names]
        start = 0
        for batch in parquet.iter_batches(batch_size=block_rows, columns=columns):
            count = batch.num_rows
            block = np.asarray(vectors[start : start + count], dtype=np.float32)
            yield ShardBlock(shard.number, _rows(batch.to_pydict(), count), block)
            start += count


def metadata_columns(shards: ShardSet, names: Sequence[str]) -> Iterator[tuple[Any, ...]]:
    """The values of some metadata columns, a tuple a row, in order, without the vectors; None
    for a column a shard does not have."""
    import pyarrow.parquet as pq

    for shard in shards.shards:
        parquet = pq.ParquetFile(shard.metadata)
        present = [name for name in names if name in parquet.schema_arrow.names]
        for batch in parquet.iter_batches(batch_size=BLOCK_ROWS * 16, columns=present):
            found = batch.to_pydict()
            missing = [None] * batch.num_rows
            yield from zip(*(found.get(name, missing) for name in names), strict=True)


def _rows(columns: dict[str, list[Any]], count: int) -> list[ShardRow | None]:
    paths = columns["image_path"]
    missing = [None] * count
    sha = columns.get("sha256", missing)
    size = columns.get("size", missing)
    mtime = columns.get("mtime_ns", missing)
    taken = columns.get("taken_at", missing)
    return [
        ShardRow(
            paths[i],
            _text(sha[i]),
            _integer(size[i]),
            _integer(mtime[i]),
            None if taken[i] is None else float(taken[i]),
        )
        if isinstance(paths[i], str) and paths[i]
        else None
        for i in range(count)
    ]


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _integer(value: Any) -> int | None:
    return None if value is None else int(value)
