"""Inverted lists merged into one file on disk, list by list, in bounded memory.

The file is laid out as faiss's OnDiskInvertedLists::merge_from_multiple (what
faiss.contrib.ondisk.merge_ondisk calls) lays it out: every list's codes then ids, the lists end
to end, each exactly as long as its entries. That call merges every list in one go, though, and
the pages it writes and reads stay mapped into the process until it ends: they are page cache,
but they count in its RSS, which would grow with the index (5.2 GB at 10M vectors of 520 bytes).
Here the pages are given back every RELEASE_BYTES, so the merge holds a few hundred MB whatever
the number of vectors.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import mmap
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

Ids = npt.NDArray[np.int64]

RELEASE_BYTES = 256 * 2**20  # written between two hand-backs of the mapped pages
ID_BYTES = 8


def merged(
    sources: Sequence[Any], name: str, *, stale: Ids | None = None, file_mapped: bool = False
) -> Any:
    """New OnDiskInvertedLists at `name` (a path faiss can open) whose list j holds list j of
    each source in turn; the first source's entries with an id in `stale` are left out.

    The sources may be any inverted lists of the same shape: shards' lists memory-mapped
    (faiss.read_index with IO_FLAG_MMAP), an index's on-disk lists, or lists in memory.
    `file_mapped` says that every source is a read-only mapping of a file (the shards): their
    pages are then handed back as the merge's own are, which faiss's own lists of that kind
    cannot do (at 10M vectors the shards' 5.2 GB of pages would otherwise all count in RSS).
    Lists in memory must never be handed back: their pages would read back as zeros.
    """
    import faiss

    first = sources[0]
    nlist, code_size = first.nlist, first.code_size
    kept = _kept_entries(first, np.sort(stale)) if stale is not None and len(stale) else {}
    sizes = np.zeros(nlist, dtype=np.uint64)
    for number in range(nlist):
        sizes[number] = sum(source.list_size(number) for source in sources)
        if number in kept:
            sizes[number] -= first.list_size(number) - int(np.count_nonzero(kept[number]))
    lists = faiss.OnDiskInvertedLists(nlist, code_size, name)
    with c_output_dropped():  # it prints as it sizes the file
        lists.set_all_lists_sizes(faiss.swig_ptr(sizes))
        lists.update_totsize(max(1, int(sizes.sum()) * (ID_BYTES + code_size)))
    spans = [_Span() for _ in sources] if file_mapped else []
    written = 0
    for number in range(nlist):
        at = 0
        for place, source in enumerate(sources):
            count = source.list_size(number)
            if not count:
                continue
            if place == 0 and number in kept:
                at += _copy_kept(source, number, kept[number], lists, at)
            else:
                ids, codes = source.get_ids(number), source.get_codes(number)
                lists.update_entries(number, at, count, ids, codes)
                at += count
                if spans:
                    spans[place].cover(ids, count * ID_BYTES)
                    spans[place].cover(codes, count * code_size)
        written += at * (ID_BYTES + code_size)
        if written >= RELEASE_BYTES or number == nlist - 1:
            for mapped in (lists, *sources):
                release(mapped)
            for span in spans:
                span.hand_back()
            written = 0
    return lists


class _Span:
    """The addresses a read-only file mapping was read at, to hand its pages back in one
    call: the kernel maps the pages around each one read too (fault-around, 64 KB), so lists
    smaller than that, handed back one by one, would stay mapped all the same."""

    def __init__(self) -> None:
        self.start: int | None = None
        self.end = 0

    def cover(self, pointer: Any, size: int) -> None:
        if not size:
            return
        address = _address(pointer)
        self.start = address if self.start is None else min(self.start, address)
        self.end = max(self.end, address + size)

    def hand_back(self) -> None:
        """MADV_DONTNEED over the pages read so far: a later read maps them again from the
        file (never do this to memory that is not a file's: it would read back as zeros)."""
        if self.start is not None:
            first = self.start - self.start % mmap.PAGESIZE
            _dont_need(first, self.end - first)


def _kept_entries(lists: Any, stale: Ids) -> dict[int, npt.NDArray[np.bool_]]:
    """For each list holding a stale id, which of its entries stay."""
    kept = {}
    for number in range(lists.nlist):
        count = lists.list_size(number)
        if count:
            keep = ~_members(_ids(lists, number, count), stale)
            if not keep.all():
                kept[number] = keep
    return kept


def _copy_kept(source: Any, number: int, keep: npt.NDArray[np.bool_], lists: Any, at: int) -> int:
    import faiss

    count, code_size = source.list_size(number), source.code_size
    ids = np.ascontiguousarray(_ids(source, number, count)[keep])
    codes = faiss.rev_swig_ptr(source.get_codes(number), count * code_size)
    codes = np.ascontiguousarray(codes.reshape(count, code_size)[keep])
    if len(ids):
        lists.update_entries(number, at, len(ids), faiss.swig_ptr(ids), faiss.swig_ptr(codes))
    return len(ids)


def _ids(lists: Any, number: int, count: int) -> Ids:
    import faiss

    return faiss.rev_swig_ptr(lists.get_ids(number), count)


def _members(values: Ids, sorted_ids: Ids) -> npt.NDArray[np.bool_]:
    at = np.minimum(np.searchsorted(sorted_ids, values), len(sorted_ids) - 1)
    return sorted_ids[at] == values


def release(lists: Any) -> None:
    """Give back the pages of on-disk lists mapped into this process (MADV_DONTNEED): their
    mapping is shared with the file, so nothing is lost, and a later read maps them again from
    the page cache. Lists of other kinds are left alone."""
    import faiss

    if not isinstance(lists, faiss.OnDiskInvertedLists):
        return
    if lists.ptr is None or not lists.totsize:
        return
    _dont_need(_address(lists.ptr), lists.totsize)


def _address(pointer: Any) -> int:
    """Where a pointer faiss handed out points, as a number."""
    import faiss

    return int(faiss.rev_swig_ptr(pointer, 1).ctypes.data)


def _dont_need(start: int, size: int) -> None:
    """MADV_DONTNEED over `size` bytes of file mapping from the page-aligned `start` (where the
    system has it)."""
    advice = getattr(mmap, "MADV_DONTNEED", None)
    if advice is not None:
        _libc().madvise(ctypes.c_void_p(start), ctypes.c_size_t(size), advice)


@contextlib.contextmanager
def c_output_dropped() -> Iterator[None]:
    """Drop what C code prints on stdout while inside: OnDiskInvertedLists prints a line
    ("resizing PATH to N bytes") as it sizes its file, which must land neither among the
    results on stdout (`--json`) nor beside the progress bar on stderr."""
    sys.stdout.flush()
    saved = os.dup(1)
    sink = os.open(os.devnull, os.O_WRONLY)
    os.dup2(sink, 1)
    os.close(sink)
    try:
        yield
    finally:
        _libc().fflush(None)  # printf's buffer, while fd 1 is still the sink
        os.dup2(saved, 1)
        os.close(saved)


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None)
