"""Writing a shard set: rows and their vectors in, a shard every `shard_size` rows out.

Each shard's two files grow under temporary names as rows come (the vectors straight into the
npy, the metadata a row group at a time), so memory stays bounded whatever the shard size; a
finished shard's files are flushed to the disk and renamed, then the manifest lists it. A
writer killed half way thus leaves whole shards that the manifest lists, and temporary files
that the next writer of the set removes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import numpy as np

from clipcli.shards.durable import TEMPORARY_SUFFIX, sync_folder, temporary_name
from clipcli.shards.layout import (
    EMBEDDINGS_FOLDER,
    MANIFEST_FILE,
    METADATA_FOLDER,
    METADATA_NAME,
    SHARD_NAME,
    Manifest,
    ShardEntry,
    ShardRow,
    embeddings_path,
    metadata_path,
    write_manifest,
)
from clipcli.vectors import Embeddings

# Metadata rows held before they go out as one parquet row group: a few MB of paths.
ROW_GROUP = 65_536
VECTOR_DTYPE = "<f2"  # clip-retrieval's float16, little-endian as numpy writes it everywhere


class ShardWriter:
    """Adds rows to the shard set in `folder` whose manifest so far is `manifest` (a new set's,
    with no shards, or an interrupted set's, whose shards it keeps and follows).

    Use as a context manager: leaving it on an error discards the shard being written (its
    temporary files), and `finish` writes the last shard and marks the set complete.
    """

    def __init__(self, folder: Path, manifest: Manifest, shard_size: int) -> None:
        if shard_size < 1:
            raise ValueError(f"shard_size must be at least 1, not {shard_size}")
        self.folder = folder
        self.manifest = manifest
        self.shard_size = shard_size
        self._open: _OpenShard | None = None
        for name in (EMBEDDINGS_FOLDER, METADATA_FOLDER):
            (folder / name).mkdir(exist_ok=True)
        remove_leftovers(folder, manifest)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._open is not None:
            self._open.discard()
            self._open = None

    def add(self, rows: Sequence[ShardRow], vectors: Embeddings) -> None:
        """Append rows and their vectors (float32, one row each; stored as float16)."""
        if len(rows) != len(vectors):
            raise ValueError(f"{len(rows)} rows but {len(vectors)} vectors")
        done = 0
        while done < len(rows):
            shard = self._open or self._start(int(vectors.shape[1]))
            take = min(self.shard_size - shard.rows, len(rows) - done)
            shard.add(rows[done : done + take], vectors[done : done + take])
            done += take
            if shard.rows == self.shard_size:
                self._close_shard()

    def finish(self) -> Manifest:
        """Write the last shard, if it holds any row, and mark the set complete."""
        if self._open is not None and self._open.rows:
            self._close_shard()
        self.manifest = Manifest(
            self.manifest.model,
            self.manifest.dim,
            self.manifest.digits,
            self.manifest.shards,
            complete=True,
        )
        write_manifest(self.folder, self.manifest)
        return self.manifest

    def _start(self, dim: int) -> _OpenShard:
        if self.manifest.dim is not None and dim != self.manifest.dim:
            raise ValueError(f"vectors of {dim} dimensions in a set of {self.manifest.dim}")
        number = max((shard.number for shard in self.manifest.shards), default=-1) + 1
        self._open = _OpenShard(self.folder, number, self.manifest.digits, dim, self.shard_size)
        return self._open

    def _close_shard(self) -> None:
        shard, self._open = self._open, None
        if shard is None:
            return
        entry = shard.close()
        self.manifest = self.manifest.with_shard(entry, shard.dim)
        write_manifest(self.folder, self.manifest)


class _OpenShard:
    """One shard being written: the npy under a temporary name with room for its header, the
    parquet under another, row groups going out as they fill."""

    def __init__(self, folder: Path, number: int, digits: int, dim: int, capacity: int) -> None:
        self.number = number
        self.dim = dim
        self.rows = 0
        self.embeddings = embeddings_path(folder, number, digits)
        self.metadata = metadata_path(folder, number, digits)
        self._embeddings_part = temporary_name(self.embeddings)
        self._metadata_part = temporary_name(self.metadata)
        self._pending: list[ShardRow] = []
        self._parquet: Any = None
        self._vectors: IO[bytes] = open(self._embeddings_part, "xb")  # noqa: SIM115
        # numpy pads a header so that the row count can grow in place to 21 digits: the one
        # written at the end, with the true count, is as long as this one.
        self._header = _npy_header(capacity, dim)
        self._vectors.write(self._header)

    def add(self, rows: Sequence[ShardRow], vectors: Embeddings) -> None:
        self._vectors.write(np.ascontiguousarray(vectors, dtype=VECTOR_DTYPE).tobytes())
        self._pending.extend(rows)
        self.rows += len(rows)
        if len(self._pending) >= ROW_GROUP:
            self._write_row_group()

    def close(self) -> ShardEntry:
        """Finish both files, flush them to the disk, and give them their final names."""
        self._write_row_group()
        if self._parquet is None:  # no row at all: an empty table still has the columns
            self._parquet = _parquet_writer(self._metadata_part)
        self._parquet.close()
        _fsync_file(self._metadata_part)
        header = _npy_header(self.rows, self.dim)
        if len(header) != len(self._header):
            raise RuntimeError("the npy header changed length")  # numpy pads it so it cannot
        self._vectors.seek(0)
        self._vectors.write(header)
        self._vectors.flush()
        os.fsync(self._vectors.fileno())
        self._vectors.close()
        os.replace(self._embeddings_part, self.embeddings)
        os.replace(self._metadata_part, self.metadata)
        sync_folder(self.embeddings.parent)
        sync_folder(self.metadata.parent)
        return ShardEntry(self.number, self.rows)

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            self._vectors.close()
        if self._parquet is not None:
            with contextlib.suppress(Exception):
                self._parquet.close()
        for part in (self._embeddings_part, self._metadata_part):
            with contextlib.suppress(OSError):
                part.unlink()

    def _write_row_group(self) -> None:
        if not self._pending:
            return
        if self._parquet is None:
            self._parquet = _parquet_writer(self._metadata_part)
        self._parquet.write_table(metadata_table(self._pending))
        self._pending = []


def remove_leftovers(folder: Path, manifest: Manifest) -> None:
    """Remove what an interrupted writer left that the manifest does not list: temporary
    files, and a shard renamed into place just before the writer was stopped. Other files are
    not the writer's, and stay."""
    listed = {embeddings_path(folder, s.number, manifest.digits) for s in manifest.shards}
    listed |= {metadata_path(folder, s.number, manifest.digits) for s in manifest.shards}
    for name, pattern in ((EMBEDDINGS_FOLDER, SHARD_NAME), (METADATA_FOLDER, METADATA_NAME)):
        for path in (folder / name).iterdir():
            ours = pattern.fullmatch(path.name) or path.name.endswith(TEMPORARY_SUFFIX)
            if ours and path not in listed and path.is_file():
                path.unlink()
    for path in folder.glob(f".{MANIFEST_FILE}.*{TEMPORARY_SUFFIX}"):  # a manifest half written
        path.unlink()


def _npy_header(rows: int, dim: int) -> bytes:
    """The header np.save writes for a (rows, dim) float16 array."""
    import io

    buffer = io.BytesIO()
    header = {"descr": VECTOR_DTYPE, "fortran_order": False, "shape": (rows, dim)}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue()


def metadata_schema() -> Any:
    """The parquet columns: clip-retrieval's image_path, then what clipcli keeps of the file."""
    import pyarrow as pa

    return pa.schema(
        [
            ("image_path", pa.string()),
            ("sha256", pa.string()),
            ("size", pa.int64()),
            ("mtime_ns", pa.int64()),
            ("taken_at", pa.float64()),
        ]
    )


def metadata_table(rows: Sequence[ShardRow]) -> Any:
    """A pyarrow table of metadata rows, in metadata_schema's columns."""
    import pyarrow as pa

    schema = metadata_schema()
    columns = {name: [getattr(row, name) for row in rows] for name in schema.names}
    return pa.table(columns, schema=schema)


def _parquet_writer(path: Path) -> Any:
    import pyarrow.parquet as pq

    return pq.ParquetWriter(str(path), metadata_schema())


def _fsync_file(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
