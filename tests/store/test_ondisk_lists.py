"""Merging inverted lists on disk: every list's entries end to end, in bounded memory."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from clipcli.store import ondisk_ivfpq, ondisk_lists

DIM = 32


def shard_files(folder: Path, shards: int, per_shard: int) -> tuple[Path, list[Path]]:
    """A trained index and `shards` filled copies of it on disk, as a build writes them."""
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((shards * per_shard, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    trained = folder / "trained.faiss"
    shape = ondisk_ivfpq.Shape.for_count(len(vectors), DIM, lists=16)
    ondisk_ivfpq._write(ondisk_ivfpq.train(vectors[:4000], shape), trained)
    paths = []
    for number in range(shards):
        rows = slice(number * per_shard, (number + 1) * per_shard)
        ids = np.arange(len(vectors), dtype=np.int64)[rows]
        paths.append(folder / f"shard-{number}.faiss")
        ondisk_ivfpq.add_shard(trained, (ids, vectors[rows]), paths[-1])
    return trained, paths


def resident_kb(path: Path) -> int:
    """How much of this file's mappings in this process is resident (smaps' Rss)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if line[:1] in "0123456789abcdef" and "-" in line.split()[0]:
            inside = line.rstrip().endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")
def test_mapped_shards_hand_their_pages_back_as_their_lists_are_copied(tmp_path):
    import faiss

    _, paths = shard_files(tmp_path, shards=3, per_shard=40_000)  # 1.6 MB of codes each
    mapped = [faiss.read_index(str(path), faiss.IO_FLAG_MMAP) for path in paths]
    sources = [faiss.extract_index_ivf(index).invlists for index in mapped]
    lists = ondisk_lists.merged(sources, str(tmp_path / "merged.ivfdata"), file_mapped=True)

    for path in paths:
        assert resident_kb(path) < path.stat().st_size // 1024 // 10
    merged_ids = np.concatenate(
        [faiss.rev_swig_ptr(lists.get_ids(n), lists.list_size(n)) for n in range(16)]
    )
    assert sorted(merged_ids.tolist()) == list(range(120_000))  # handed back, read whole again
    for number in range(16):  # each list: the shards' entries in turn, codes and all
        expected = b"".join(
            faiss.rev_swig_ptr(source.get_codes(number), source.list_size(number) * DIM).tobytes()
            for source in sources
        )
        got = faiss.rev_swig_ptr(lists.get_codes(number), lists.list_size(number) * DIM)
        assert got.tobytes() == expected
