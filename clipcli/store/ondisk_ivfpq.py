"""An index that outgrows memory: inverted lists of quantised codes kept on disk.

Built the way clip-retrieval and autofaiss build theirs: `IVF{lists},{codes}` trained on a
sample, filled chunk by chunk into shard indexes, whose lists are merged into one `.ivfdata`
file as faiss.contrib.ondisk.merge_ondisk merges them (ondisk_lists, in bounded memory); a
search maps that file and reads only the lists it probes, so memory holds the coarse centroids
and the quantizer whatever the number of vectors. The codes are 8-bit scalar (CODES, a byte
per dimension) rather than product-quantised: the measurements are by CODES.

Three files sit beside each other: the index file (`vectors.faiss`: centroids, quantizer and
where each list lies), the lists (`vectors.<token>.ivfdata`, a new name for every build, so
that the index file, renamed into place last, always names lists that match it) and the
trained, empty index (`vectors.trained.faiss`) that rebuilds reuse instead of training again.
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from clipcli.store import ondisk_lists

Ids = npt.NDArray[np.int64]
Scores = npt.NDArray[np.float32]
# Vectors of a chunk: float32, or float16 as clip-retrieval's shards hold them (memory-mapped
# .npy files are fine: a shard is converted a block at a time).
Rows = npt.NDArray[np.floating[Any]]
Chunk = tuple[Ids, Rows]
ShardJob = tuple[Path, Chunk, Path]  # (trained index, chunk, shard file to write)
ExactVectors = Callable[[Ids], npt.NDArray[np.float32]]

TRAINED_SUFFIX = ".trained.faiss"
LISTS_SUFFIX = ".ivfdata"
# faiss's k-means warns below 39 training points per centroid; a list gets at least that many.
MIN_PER_LIST = 39
# Coarse k-means on 64 points per list and 10 rounds, as the in-memory IVF layout trains:
# 4,096 lists (10M vectors) train in about 2.5 min on two cores.
TRAIN_PER_LIST = 64
# The codes every vector is stored as: a byte per dimension (faiss's 8-bit scalar quantizer,
# 520 bytes a 512-d vector with its id), not product quantisation's byte per 2 dimensions.
# Measured on 1M clustered 512-d vectors as dense as the bench's 10M (bench/scale.py),
# recall@10 against exact search at 8 probes of 1,024 lists: SQ8 0.966 (0.7 ms a query, 13 s
# to build), PQ256 (264 bytes) 0.771 (1.6 ms, 48 s), SQ4 0.64, PQ512x4fs 0.45. Only SQ8 finds
# 90% of the true top 10 without re-ranking; its twice as many bytes are on disk, not in RAM.
CODES = "SQ8"
# Product quantizers (codes "PQ..."), which tests use for coarse codes: each sub-quantizer's
# k-means on 64 points per centroid and 10 rounds, not faiss's 256 and 25.
PQ_TRAIN_PER_CODE = 64
PQ_TRAIN_POINTS = 256 * PQ_TRAIN_PER_CODE
ADD_BLOCK = 65_536  # rows converted to float32 and added at once: 128 MB at 512-d


@dataclass(frozen=True)
class Shape:
    """How an index is laid out: its vectors' size, lists, codes (a faiss factory's suffix:
    SQ8, or PQ{m}x{bits}) and the lists a search probes."""

    dim: int
    lists: int
    codes: str
    probes: int

    @property
    def factory(self) -> str:
        return f"IVF{self.lists},{self.codes}"

    @classmethod
    def for_count(
        cls, count: int, dim: int, *, lists: int | None = None, codes: str = CODES
    ) -> Shape:
        """The shape for `count` vectors of `dim` (see lists_for and probes_for)."""
        lists = lists or lists_for(count)
        return cls(dim, lists, codes, probes_for(lists))


def lists_for(count: int) -> int:
    """About sqrt(N) lists as a power of two, and never under MIN_PER_LIST vectors a list.

    faiss's guideline is 4-16 sqrt(N), but assigning each vector costs a scan of the
    centroids, 4x more of them at 4 sqrt(N), in training as in filling, and the lists are not
    where recall is lost here: at 1M clustered vectors recall@10 was the same from 8 to 64
    probes of 1,024 lists (bench/scale.py); the codes are what lose it.
    """
    target = 2 ** round(math.log2(max(count, 1) ** 0.5))
    return max(1, min(target, count // MIN_PER_LIST))


def probes_for(lists: int) -> int:
    """Lists scanned per query: 1/256 of them, at least 8 (all of them when fewer).

    At 1M vectors (1,024 lists) recall@10 was the same at 8, 16 and 32 probes, each doubling
    the time; at 10M (4,096 lists) 16 probes scan about 39k codes.
    """
    return min(lists, max(8, lists // 256))


def sample_size(count: int, lists: int) -> int:
    """Training vectors worth drawing: what the coarse k-means uses (and, for product
    quantizers, their codebooks)."""
    return min(count, max(lists * TRAIN_PER_LIST, PQ_TRAIN_POINTS))


def trained_file(index_file: Path) -> Path:
    return index_file.with_name(index_file.stem + TRAINED_SUFFIX)


# -- building -------------------------------------------------------------------------------------


def train(sample: Rows, shape: Shape) -> Any:
    """An empty index of `shape`, its coarse centroids and codes trained on `sample`."""
    import faiss

    index = faiss.index_factory(shape.dim, shape.factory, faiss.METRIC_INNER_PRODUCT)
    index.cp.max_points_per_centroid = TRAIN_PER_LIST
    index.cp.niter = 10
    # The sizes are chosen to be trainable: faiss's warnings about them would only be noise.
    index.cp.min_points_per_centroid = 1
    if isinstance(index, faiss.IndexIVFPQ):
        # Polysemous training (on by default) only serves Hamming-filtered search, which inner
        # products do not use, and it tripled the training time.
        index.do_polysemous_training = False
        index.pq.cp.min_points_per_centroid = 1
        index.pq.cp.max_points_per_centroid = PQ_TRAIN_PER_CODE
        index.pq.cp.niter = 10
    index.train(np.ascontiguousarray(sample, dtype=np.float32))
    index.nprobe = shape.probes
    return index


def trained_shape(index_file: Path) -> Shape | None:
    """The shape of the trained index saved beside `index_file`, if one reads back."""
    try:
        index = _read(trained_file(index_file))
    except (OSError, RuntimeError):
        return None
    return Shape(index.d, index.nlist, _codes(index), index.nprobe)


def _codes(index: Any) -> str:
    import faiss

    if isinstance(index, faiss.IndexIVFPQ):
        return f"PQ{index.pq.M}x{index.pq.nbits}"
    if isinstance(index, faiss.IndexIVFScalarQuantizer) and (
        index.sq.qtype == faiss.ScalarQuantizer.QT_8bit
    ):
        return "SQ8"
    return type(index).__name__  # of no build here: never the same codes as one


def add_shard(trained: Path, chunk: Chunk, out: Path) -> int:
    """Fill a copy of the trained index with one chunk and write it to `out`; its count.

    A plain function of paths and arrays, so that a pool of threads can run one per shard:
    only one chunk, and one block of it in float32, is in memory at a time.
    """
    index = _read(trained)
    fill(index, chunk)
    _write(index, out)
    return int(index.ntotal)


def fill(index: Any, chunk: Chunk) -> None:
    """Add one chunk's vectors to a trained index, a block at a time in float32 (a chunk of
    float16 rows, memory-mapped, is never converted whole)."""
    ids, rows = chunk
    for start in range(0, len(ids), ADD_BLOCK):
        block = np.ascontiguousarray(rows[start : start + ADD_BLOCK], dtype=np.float32)
        index.add_with_ids(block, np.ascontiguousarray(ids[start : start + ADD_BLOCK], np.int64))


def filled_copy(trained: npt.NDArray[np.uint8], chunk: Chunk) -> npt.NDArray[np.uint8]:
    """add_shard for a worker that shares no disk with the build: the trained index's bytes
    (its file's, as faiss.serialize_index writes them) in, the filled shard's bytes out, its
    additions on one thread (the worker is given one core)."""
    import faiss

    index = faiss.deserialize_index(trained)
    faiss.omp_set_num_threads(1)
    fill(index, chunk)
    return faiss.serialize_index(index)


# Fills every job's shard file (trained index, chunk, shard file to write) before it returns:
# another engine's way of running add_shard, such as Ray tasks (clipcli.cluster.ray_shards).
AddShards = Callable[[Iterable[ShardJob]], None]


def build(
    index_file: Path,
    chunks: Iterable[Chunk],
    sample: Rows | None,
    *,
    dim: int,
    count: int,
    lists: int | None = None,
    codes: str = CODES,
    workers: int = 1,
    add_in_parallel: AddShards | None = None,
) -> Any:
    """Build the index of `chunks` (about `count` vectors of `dim`) at `index_file` and return
    it memory-mapped.

    The coarse quantizer and the codes are trained on `sample`, or, with no sample, taken from
    the trained index an earlier build saved (a rebuild that needs no training). Each chunk
    fills a shard (`workers` at a time; `add_in_parallel(jobs)` may fill them elsewhere
    instead, returning once every shard is written), the shards' lists are merged
    into one file on disk, and the files are renamed into place only at the end: a build that
    fails leaves the previous index as it was.
    """
    folder = index_file.parent
    scratch = Path(tempfile.mkdtemp(prefix=f".{index_file.stem}-build-", dir=folder))
    try:
        trained = scratch / "trained.faiss"
        if sample is None:
            shutil.copyfile(trained_file(index_file), trained)
        else:
            shape = Shape.for_count(count, dim, lists=lists, codes=codes)
            _write(train(sample, shape), trained)
        shards = _fill_shards(trained, chunks, scratch, workers, add_in_parallel)
        lists_name = _new_lists_name(index_file)
        _merge(trained, shards, scratch, lists_name)
        _install(index_file, scratch, lists_name, trained=None if sample is None else trained)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return open_mapped(index_file)


def catch_up(index_file: Path, index: Any, changed: Chunk, stale: Ids) -> Any:
    """The mapped `index` at `index_file` brought up to date, returned memory-mapped: a new
    lists file holding each list's entries less the `stale` ids, then the `changed` vectors.

    Only the changed vectors are encoded (in memory), nothing is trained, and the rest is
    copied list by list: as long as the lists (5.2 GB at 10M vectors), where a rebuild encodes
    every vector. The old files are never written (a search may have them mapped), and the new
    ones are switched to as a build's are. Not faiss's own remove_ids and add on on-disk lists:
    a list that shrinks or grows in place can keep its offset with a new capacity, and its
    ids are then read from where they are not (faiss 1.15, OnDiskInvertedLists::resize_locked).
    """
    import faiss

    folder = index_file.parent
    scratch = Path(tempfile.mkdtemp(prefix=f".{index_file.stem}-update-", dir=folder))
    try:
        fresh = _read(trained_file(index_file))
        fill(fresh, changed)
        added = faiss.extract_index_ivf(fresh).invlists
        lists_name = _new_lists_name(index_file)
        with _faiss_folder(scratch) as where:
            lists = ondisk_lists.merged(
                [on_disk_lists(index), added], f"{where}/{lists_name}", stale=stale
            )
        _switch_lists(fresh, lists, lists_name)
        _write(fresh, scratch / "index.faiss")
        del fresh  # unmaps the new lists before they move
        _install(index_file, scratch, lists_name, trained=None)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return open_mapped(index_file)


def _fill_shards(
    trained: Path,
    chunks: Iterable[Chunk],
    scratch: Path,
    workers: int,
    add_in_parallel: AddShards | None,
) -> list[Path]:
    shards: list[Path] = []

    def jobs() -> Iterator[ShardJob]:
        for number, chunk in enumerate(chunks):
            if len(chunk[0]):
                shards.append(scratch / f"shard-{number:06d}.faiss")
                yield trained, chunk, shards[-1]

    if add_in_parallel is None:
        _bounded_map(add_shard, jobs(), workers)
    else:
        add_in_parallel(jobs())
    missing = [shard.name for shard in shards if not shard.is_file()]
    if missing:
        raise RuntimeError(f"shards not written: {', '.join(missing[:3])}")
    if not shards:
        raise ValueError("no vectors to index")
    return shards


def _bounded_map(
    fn: Callable[[Path, Chunk, Path], int], jobs: Iterable[ShardJob], workers: int
) -> None:
    """fn(*job) for every job, `workers` at a time, drawing the next job (its chunk) only when
    a worker is free: ThreadPoolExecutor.map would draw every chunk at once."""
    import faiss

    workers = max(1, workers)
    # Each worker gets its share of faiss's threads, so that shards side by side do not
    # oversubscribe the cores.
    threads = max(1, faiss.omp_get_max_threads() // workers)
    with ThreadPoolExecutor(
        workers, initializer=faiss.omp_set_num_threads, initargs=(threads,)
    ) as pool:
        pending: set[Future[int]] = set()
        for job in jobs:
            if len(pending) >= workers:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    future.result()  # a failed shard stops the build now
            pending.add(pool.submit(fn, *job))
        for future in pending:
            future.result()


def _merge(trained: Path, shards: list[Path], scratch: Path, lists_name: str) -> None:
    """The shards' lists merged into `scratch/lists_name` (ondisk_lists); the index naming
    them (by file name alone: they are looked for beside it) written to `scratch/index.faiss`."""
    import faiss

    index = _read(trained)
    with _faiss_folder(scratch) as where:
        # Mapped as merge_ondisk maps them, so that the shards need not fit in memory either.
        mapped = [faiss.read_index(f"{where}/{shard.name}", faiss.IO_FLAG_MMAP) for shard in shards]
        lists = ondisk_lists.merged(
            [faiss.extract_index_ivf(shard).invlists for shard in mapped],
            f"{where}/{lists_name}",
            file_mapped=True,
        )
    _switch_lists(index, lists, lists_name)
    _write(index, scratch / "index.faiss")


def _switch_lists(index: Any, lists: Any, lists_name: str) -> None:
    """Give `index` the merged on-disk `lists`, named by file name alone (they are looked for
    beside the index file)."""
    import faiss

    lists.filename = lists_name
    ivf = faiss.extract_index_ivf(index)
    ivf.replace_invlists(lists, True)
    lists.this.disown()  # the index owns them now
    index.ntotal = ivf.ntotal = lists.compute_ntotal()


def _new_lists_name(index_file: Path) -> str:
    return f"{index_file.stem}.{secrets.token_hex(4)}{LISTS_SUFFIX}"


def _install(index_file: Path, scratch: Path, lists_name: str, trained: Path | None) -> None:
    """Move the new files from `scratch` into place, the index file last: until it is
    renamed, the old index and its lists are whole and in use."""
    folder = index_file.parent
    os.replace(scratch / lists_name, folder / lists_name)
    if trained is not None:
        os.replace(trained, trained_file(index_file))
    os.replace(scratch / "index.faiss", index_file)  # the switch to the new lists
    _remove_unused_lists(index_file)


def _remove_unused_lists(index_file: Path) -> None:
    """Delete the lists files of earlier builds, those the index file does not name now (a
    search that mapped one keeps reading it: the file goes when its last mapping does)."""
    try:
        keep = _lists_name(index_file)
    except (OSError, RuntimeError, ValueError):
        return
    for path in index_file.parent.glob(f"{index_file.stem}.*{LISTS_SUFFIX}"):
        if path.name != keep:
            with contextlib.suppress(OSError):
                path.unlink()


def files_beside(index_file: Path) -> list[Path]:
    """The trained index and the lists files beside `index_file` (none for other layouts)."""
    return [
        trained_file(index_file),
        *index_file.parent.glob(f"{index_file.stem}.*{LISTS_SUFFIX}"),
    ]


def remove(index_file: Path) -> None:
    """Delete the lists and the trained index beside `index_file` (another layout replaced it)."""
    for path in files_beside(index_file):
        with contextlib.suppress(OSError):
            path.unlink()


# -- reading --------------------------------------------------------------------------------------


def open_mapped(index_file: Path) -> Any:
    """The index at `index_file`, its lists memory-mapped read-only.

    Not faiss.read_index(path, IO_FLAG_MMAP): that flag includes IO_FLAG_SKIP_IVF_DATA, so
    on-disk lists come back unmapped; nor IO_FLAG_ONDISK_SAME_DIR, which needs faiss's own file
    reader (a path of valid UTF-8) and prints to stdout. The header is read through Python,
    the lists file mapped from beside it. A build may replace the files meanwhile: the index
    file is then read again, once.
    """
    try:
        return _mapped(index_file)
    except (OSError, RuntimeError, ValueError):
        return _mapped(index_file)


def _mapped(index_file: Path) -> Any:
    import faiss

    index = _read(index_file, faiss.IO_FLAG_SKIP_IVF_DATA | faiss.IO_FLAG_READ_ONLY)
    lists = on_disk_lists(index)
    if lists is None:
        raise ValueError(f"{index_file}: not an index with on-disk lists")
    name = os.path.basename(lists.filename)
    data = index_file.parent / name
    if data.stat().st_size < lists.totsize:  # mapped beyond its end, a read would crash
        raise ValueError(f"{data}: shorter than its index says")
    with _faiss_folder(index_file.parent) as where:
        lists.filename = f"{where}/{name}"
        lists.do_mmap()
    lists.filename = name
    return index


def on_disk_lists(index: Any) -> Any | None:
    """The index's OnDiskInvertedLists, or None for lists of another kind (or no lists)."""
    import faiss

    try:
        lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(index).invlists)
    except (RuntimeError, AttributeError):
        return None
    return lists if isinstance(lists, faiss.OnDiskInvertedLists) else None


def list_ids(index: Any) -> Ids:
    """The ids an inverted-lists index holds (any order), read list by list."""
    import faiss

    lists = faiss.extract_index_ivf(index).invlists
    parts = [
        faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
        for i in range(lists.nlist)
        if lists.list_size(i)
    ]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)


def _lists_name(index_file: Path) -> str:
    import faiss

    index = _read(index_file, faiss.IO_FLAG_SKIP_IVF_DATA | faiss.IO_FLAG_READ_ONLY)
    lists = on_disk_lists(index)  # owned by the index, which must outlive it
    if lists is None:
        raise ValueError(f"{index_file}: not an index with on-disk lists")
    return os.path.basename(lists.filename)


def search(
    index: Any,
    query: npt.NDArray[np.float32],
    k: int,
    *,
    nprobe: int | None = None,
    rerank: int | None = None,
    exact_vectors: ExactVectors | None = None,
    selector: Any | None = None,
) -> tuple[Scores, Ids]:
    """The k best (scores, ids) for one query, best first, equal scores by id.

    The scores are the codes' (approximate inner products). With `rerank` N, the N best
    candidates by code (k if N is smaller, and any tied with the last of them) are scored
    again exactly, on the vectors `exact_vectors(ids)` gives, and the k best of them returned
    with those scores; a candidate it gives NaN for (a vector it no longer has) is left out.
    `selector` (a faiss IDSelector) keeps only the ids it holds; `nprobe` overrides the index's.
    """
    import faiss

    row = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
    k = min(k, int(index.ntotal))
    if k < 1:
        return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
    settings: dict[str, Any] = {"nprobe": nprobe or faiss.extract_index_ivf(index).nprobe}
    if selector is not None:
        settings["sel"] = selector
    params = faiss.SearchParametersIVF(**settings)
    wanted = max(k, rerank or 0)
    scores, ids = _candidates(index, row, wanted, params)
    if rerank:
        if exact_vectors is None:
            raise ValueError("rerank needs exact_vectors")
        scores = np.asarray(exact_vectors(ids), dtype=np.float32) @ row[0]
        known = ~np.isnan(scores)
        scores, ids = scores[known], ids[known]
    best = np.lexsort((ids, -scores))[:k]
    return scores[best], ids[best]


def _candidates(
    index: Any, row: npt.NDArray[np.float32], wanted: int, params: Any
) -> tuple[Scores, Ids]:
    """The `wanted` best by code and every other tied with the last of them: copies of a photo
    share a code, and which of them faiss keeps at the edge depends on how many were asked."""
    total = int(index.ntotal)
    asked = min(wanted + 1, total)
    while True:
        scores, ids = index.search(row, asked, params=params)
        found = ids[0] != -1
        scores, ids = scores[0][found], ids[0][found]
        if len(ids) < asked or asked == total or scores[-1] < scores[wanted - 1]:
            break
        asked = min(2 * asked, total)
    if len(ids) > wanted:
        kept = scores >= scores[wanted - 1]
        scores, ids = scores[kept], ids[kept]
    return scores, ids.astype(np.int64)


# -- files ----------------------------------------------------------------------------------------


def _read(path: Path, flags: int = 0) -> Any:
    """Through a Python file, whose name need not be valid UTF-8 as faiss's own paths must."""
    import faiss

    with open(path, "rb") as handle:
        return faiss.read_index(faiss.PyCallbackIOReader(handle.read), flags)


def _write(index: Any, path: Path) -> None:
    import faiss

    with open(path, "wb") as handle:
        faiss.write_index(index, faiss.PyCallbackIOWriter(handle.write))


@contextlib.contextmanager
def _faiss_folder(folder: Path) -> Iterator[str]:
    """A name for `folder` that faiss's C file calls can open (they take UTF-8 text): its own
    path where that is valid UTF-8, else its descriptor's under /proc/self/fd (Linux, where
    file names are bytes; macOS's are always UTF-8)."""
    name = os.fsdecode(folder)
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        descriptor = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            yield f"/proc/self/fd/{descriptor}"
        finally:
            os.close(descriptor)
        return
    yield name
