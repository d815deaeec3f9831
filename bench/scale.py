"""The on-disk index at scale (clipcli/store/ondisk_ivfpq.py): built from embeddings laid out as
clip-retrieval writes them, searched memory-mapped (bench/run.py turns the figures into rows;
`python bench/scale.py --vectors 1000000` runs it alone and prints them).

The vectors are a Gaussian mixture on the unit sphere, as bench/run.py's search benchmarks draw
them (2,000 components, within-component spread 0.6), written as float16 unit vectors to
`img_emb/img_emb_N.npy`, a million to a file. A process of its own builds the index from those
files with the store module's own functions (its time and peak RSS are the build's), and the
queries are 100 more draws of the same mixture. Exact search is brute force over the files in
float32; re-ranking reads the candidates' float16 vectors from the files, memory-mapped. A cold
search is a fresh Python process that opens the index and answers one query, after the index's
and the embeddings' files were dropped from the page cache (posix_fadvise), so that it reads
from the disk.

With a fixed number of components a larger collection is a denser one: its true neighbours are
closer together and harder to tell apart by their codes. `--clusters` keeps the density of
another size: 1M vectors of 200 components are as dense as 10M of 2,000.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
DIM = 512
PER_FILE = 1_000_000  # vectors per img_emb_N.npy
CHUNK = 250_000  # vectors per shard of the build: 256 MB of float16 read at a time
QUERIES = 100
K = 10
RERANK = 100
PROBES = (4, 8, 16, 32)


@dataclass
class ScaleTiming:
    vectors: int
    clusters: int
    lists: int
    codes: str
    probes: int  # the index's own
    build_s: float
    train_s: float
    build_peak_mb: float
    index_bytes: int
    recall: float  # recall@10 against exact search, the index's probes
    recall_rerank: float  # the same, the RERANK best re-ranked on the float16 vectors
    warm_ms: float  # median of one query after another, lists in the page cache
    warm_rerank_ms: float
    cold_s: list[float]  # fresh processes, files dropped from the page cache
    sweep: dict[int, tuple[float, float, float]] = field(default_factory=dict)
    # probes -> (recall, recall re-ranked, warm ms re-ranked)

    @property
    def bytes_per_vector(self) -> float:
        return self.index_bytes / self.vectors


# -- the embeddings -------------------------------------------------------------------------------


def mixture(count: int, clusters: int, seed: int) -> Iterator[np.ndarray]:
    """`count` unit vectors of the mixture, 100k at a time (float32)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, DIM), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    for start in range(0, count, 100_000):
        n = min(100_000, count - start)
        block = centres[rng.integers(0, clusters, n)]
        block += rng.standard_normal((n, DIM), dtype=np.float32) * (0.6 / np.sqrt(DIM))
        yield block / np.linalg.norm(block, axis=1, keepdims=True)


def write_embeddings(folder: Path, count: int, clusters: int) -> np.ndarray:
    """The vectors as clip-retrieval's img_emb files, and the held-out queries (float32); kept
    for the next run with the same size and mixture."""
    marker = folder / "made.json"
    made = {"vectors": count, "clusters": clusters, "dim": DIM, "per_file": PER_FILE}
    queries = folder / "queries.npy"
    if marker.is_file() and json.loads(marker.read_text()) == made and queries.is_file():
        return np.load(queries)
    marker.unlink(missing_ok=True)
    emb = folder / "img_emb"
    emb.mkdir(parents=True, exist_ok=True)
    for old in emb.glob("img_emb_*.npy"):
        old.unlink()
    # One draw, split: the queries come from the same mixture but are not among the vectors.
    blocks = mixture(count + QUERIES, clusters, seed=0)
    pending = np.zeros((0, DIM), dtype=np.float32)
    for number in range((count + PER_FILE - 1) // PER_FILE):
        size = min(PER_FILE, count - number * PER_FILE)
        out = np.lib.format.open_memmap(
            emb / f"img_emb_{number}.npy", mode="w+", dtype=np.float16, shape=(size, DIM)
        )
        filled = 0
        while filled < size:
            if not len(pending):
                pending = next(blocks)
            take = min(size - filled, len(pending))
            out[filled : filled + take] = pending[:take]
            pending, filled = pending[take:], filled + take
        out.flush()
        del out
    rest = [pending, *blocks]
    held_out = np.concatenate(rest)[:QUERIES].astype(np.float16).astype(np.float32)
    held_out /= np.linalg.norm(held_out, axis=1, keepdims=True)
    np.save(queries, held_out)
    marker.write_text(json.dumps(made))
    return held_out


def embedding_files(folder: Path) -> list[Path]:
    files = (folder / "img_emb").glob("img_emb_*.npy")
    return sorted(files, key=lambda path: int(path.stem.rsplit("_", 1)[1]))


class Shards:
    """The img_emb files, memory-mapped: vector n is row n of them all end to end."""

    def __init__(self, folder: Path) -> None:
        self.files = embedding_files(folder)
        self.arrays = [np.load(path, mmap_mode="r") for path in self.files]
        self.starts = np.cumsum([0] + [len(array) for array in self.arrays])

    @property
    def count(self) -> int:
        return int(self.starts[-1])

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """The vectors of these ids, float32, in their order."""
        out = np.empty((len(ids), DIM), dtype=np.float32)
        which = np.searchsorted(self.starts, ids, side="right") - 1
        for number in np.unique(which):
            picked = which == number
            out[picked] = self.arrays[number][ids[picked] - self.starts[number]]
        return out


def read_rows(folder: Path, rows: np.ndarray) -> np.ndarray:
    """The vectors at these (sorted) rows, float32, read one by one: gathered through a
    memory map instead, the pages around each row would be mapped too (the kernel's
    fault-around), and a 1% sample of 10M vectors would map most of their 10 GB."""
    out = np.empty((len(rows), DIM), dtype=np.float32)
    start, filled = 0, 0
    for path in embedding_files(folder):
        with open(path, "rb") as handle:
            major, minor = np.lib.format.read_magic(handle)
            header = getattr(np.lib.format, f"read_array_header_{major}_{minor}")
            shape, _, _ = header(handle)
            data = handle.tell()
            mine = rows[(rows >= start) & (rows < start + shape[0])] - start
            width = DIM * 2
            for row in mine:
                raw = os.pread(handle.fileno(), width, data + int(row) * width)
                out[filled] = np.frombuffer(raw, dtype=np.float16)
                filled += 1
        start += shape[0]
    return out


def exact_top(folder: Path, queries: np.ndarray) -> np.ndarray:
    """The true top-10 ids of each query, by brute force in float32 over the files."""
    best_scores = np.full((len(queries), K), -np.inf, dtype=np.float32)
    best_ids = np.zeros((len(queries), K), dtype=np.int64)
    start = 0
    for path in embedding_files(folder):
        array = np.load(path, mmap_mode="r")
        for at in range(0, len(array), 100_000):
            block = np.asarray(array[at : at + 100_000], dtype=np.float32)
            scores = queries @ block.T
            top = np.argpartition(-scores, K, axis=1)[:, :K]
            merged_scores = np.concatenate([best_scores, np.take_along_axis(scores, top, 1)], 1)
            merged_ids = np.concatenate([best_ids, top + start + at], 1)
            keep = np.argsort(-merged_scores, axis=1, kind="stable")[:, :K]
            best_scores = np.take_along_axis(merged_scores, keep, 1)
            best_ids = np.take_along_axis(merged_ids, keep, 1)
        start += len(array)
    return best_ids


# -- the build, in a process of its own -----------------------------------------------------------


def build_here(folder: Path, index_file: Path, workers: int) -> dict[str, float]:
    """Build the index from the files (what the child process runs); its figures."""
    from clipcli.store import ondisk_ivfpq

    started = time.perf_counter()
    count = Shards(folder).count
    shape = ondisk_ivfpq.Shape.for_count(count, DIM)
    size = ondisk_ivfpq.sample_size(count, shape.lists)
    sample = read_rows(folder, np.sort(np.random.default_rng(1).choice(count, size, replace=False)))
    marks: dict[str, float] = {}

    def chunks() -> Iterator[ondisk_ivfpq.Chunk]:
        marks["trained"] = time.perf_counter()
        first = 0
        for path in embedding_files(folder):
            length = len(np.load(path, mmap_mode="r"))
            for at in range(0, length, CHUNK):
                rows = np.load(path, mmap_mode="r")[at : at + CHUNK]
                yield np.arange(first + at, first + at + len(rows), dtype=np.int64), rows
            first += length

    ondisk_ivfpq.build(index_file, chunks(), sample, dim=DIM, count=count, workers=workers)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "train_s": marks["trained"] - started, "peak_mb": _peak_mb()}


def _peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):  # mapped file pages count too, as they do in RSS
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_in_child(folder: Path, index_file: Path, workers: int) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, __file__, "--build-child", str(folder), str(index_file), str(workers)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- searching ------------------------------------------------------------------------------------


def warm_figures(
    index: object, shards: Shards, queries: np.ndarray, truth: np.ndarray, probes: int
) -> tuple[float, float, float, float]:
    """(recall, recall re-ranked, median ms, median ms re-ranked) at `probes`."""
    from clipcli.store import ondisk_ivfpq

    def run(rerank: int | None) -> tuple[float, float]:
        exact = shards.rows if rerank else None
        for query in queries[:10]:  # the lists into the page cache
            ondisk_ivfpq.search(index, query, K, nprobe=probes, rerank=rerank, exact_vectors=exact)
        times, found = [], []
        for query in queries:
            start = time.perf_counter()
            _, ids = ondisk_ivfpq.search(
                index, query, K, nprobe=probes, rerank=rerank, exact_vectors=exact
            )
            times.append(time.perf_counter() - start)
            found.append(ids)
        recall = np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth, strict=True)])
        return float(recall), statistics.median(times) * 1000

    recall, ms = run(None)
    recall_rerank, ms_rerank = run(RERANK)
    return recall, recall_rerank, ms, ms_rerank


def cold_here(index_file: Path, folder: Path, query_file: Path) -> list[int]:
    """Open the index and answer one query, re-ranked (what a cold child runs)."""
    from clipcli.store import ondisk_ivfpq

    index = ondisk_ivfpq.open_mapped(index_file)
    shards = Shards(folder)
    query = np.load(query_file)
    _, ids = ondisk_ivfpq.search(index, query, K, rerank=RERANK, exact_vectors=shards.rows)
    return ids.tolist()


def cold_seconds(index_file: Path, folder: Path, query: np.ndarray, runs: int = 3) -> list[float]:
    query_file = folder / "cold-query.npy"
    np.save(query_file, query)
    seconds = []
    for _ in range(runs):
        _drop_from_page_cache([*index_file.parent.iterdir(), *embedding_files(folder)])
        start = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                __file__,
                "--cold-child",
                str(index_file),
                str(folder),
                str(query_file),
            ],
            check=True,
            capture_output=True,
        )
        seconds.append(time.perf_counter() - start)
    return seconds


def _drop_from_page_cache(paths: list[Path]) -> None:
    """Evict these files' pages (only theirs: posix_fadvise, nothing machine-wide)."""
    for path in paths:
        if not path.is_file():
            continue
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(descriptor)


# -- the whole run --------------------------------------------------------------------------------


def time_scale(count: int, clusters: int = 2000, scratch: Path | None = None) -> ScaleTiming:
    """Write (or reuse) the embeddings, build the index in a child, measure its searches."""
    from clipcli.store import ondisk_ivfpq

    folder = scratch or HERE / "data" / "scale" / f"{count}-{clusters}"
    folder.mkdir(parents=True, exist_ok=True)
    queries = write_embeddings(folder, count, clusters)
    truth = exact_top(folder, queries)
    index_folder = folder / "index"
    index_folder.mkdir(exist_ok=True)
    index_file = index_folder / "vectors.faiss"
    built = build_in_child(folder, index_file, workers=1)
    index = ondisk_ivfpq.open_mapped(index_file)
    shards = Shards(folder)
    shape = ondisk_ivfpq.trained_shape(index_file)
    assert shape is not None, "a build writes its trained index beside it"
    own = shape.probes
    sweep = {}
    for probes in PROBES:
        recall, recall_rerank, _, ms_rerank = warm_figures(index, shards, queries, truth, probes)
        sweep[probes] = (recall, recall_rerank, ms_rerank)
    recall, recall_rerank, warm_ms, warm_rerank_ms = warm_figures(
        index, shards, queries, truth, own
    )
    size = sum(path.stat().st_size for path in index_folder.iterdir() if path.is_file())
    del index
    cold = cold_seconds(index_file, folder, queries[0])
    return ScaleTiming(
        count,
        clusters,
        shape.lists,
        shape.codes,
        own,
        built["seconds"],
        built["train_s"],
        built["peak_mb"],
        size,
        recall,
        recall_rerank,
        warm_ms,
        warm_rerank_ms,
        cold,
        sweep,
    )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--build-child":
        figures = build_here(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))
        print(json.dumps(figures))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--cold-child":
        print(json.dumps(cold_here(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))))
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--clusters", type=int, default=2000)
    parser.add_argument("--scratch", type=Path, default=None, help="where the files go")
    args = parser.parse_args()
    timing = time_scale(args.vectors, args.clusters, args.scratch)
    print(json.dumps({**asdict(timing), "bytes_per_vector": timing.bytes_per_vector}, indent=1))


if __name__ == "__main__":
    main()
