"""Specification of `clipcli index`: incremental updates, bad files, crashes, locks and models.

Everything runs through the command line in-process (the `cli` fixture) with a random-init
checkpoint, except the kill -9 test, which needs a real second process to kill.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    TEST_MODEL,
    as_of_the_previous_schema,
    make_non_utf8_image,
    save_random_checkpoint,
    snapshot,
)
from PIL import Image

from clipcli.store.catalog import CATALOG_FILE, SCHEMA_VERSION
from clipcli.store.vector_index import INDEX_FILE, STAMP_FILE

REPORT_KEYS = {
    "index",
    "model",
    "added",
    "updated",
    "moved",
    "removed",
    "unchanged",
    "skipped",
    "total",
    "seconds",
}
QUERY = "a red square"


@dataclass(frozen=True)
class Row:
    id: int
    size: int
    mtime_ns: int
    sha256: str
    embedding: bytes
    indexed_at: float


@contextmanager
def catalog_db(index: Path, *, read_only: bool = False) -> Iterator[sqlite3.Connection]:
    """A plain connection to the catalog file, to check what is on disk; closed on exit."""
    if read_only:
        db = sqlite3.connect(f"file:{index / CATALOG_FILE}?mode=ro", uri=True, timeout=1)
    else:
        db = sqlite3.connect(index / CATALOG_FILE)
    try:
        yield db
    finally:
        db.close()


def rows(index: Path) -> dict[str, Row]:
    """The images table as stored on disk, by path."""
    with catalog_db(index) as db:
        found = db.execute(
            "SELECT path, id, size, mtime_ns, sha256, embedding, indexed_at FROM images"
        )
        return {path: Row(*rest) for path, *rest in found}


def meta(index: Path) -> dict[str, str]:
    with catalog_db(index) as db:
        return dict(db.execute("SELECT key, value FROM meta").fetchall())


def later(path: Path, seconds: int = 5) -> None:
    """Move a file's mtime forward, so a change is seen even on filesystems with coarse clocks."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + seconds * 1_000_000_000))


def noise_image(path: Path, seed: int, size: int = 32) -> Path:
    """An image unlike any other, so no two files share a content hash by accident."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def png_claiming_size(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header announces a huge picture: Pillow's decompression-bomb case."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )
    return path


def embed_directly(checkpoint: Path, path: Path) -> np.ndarray:
    """The vector the encoder gives one file on its own, to compare with what was stored."""
    from clipcli.encoders.batching import embed_files
    from clipcli.encoders.choose import load_encoder
    from clipcli.models.names import resolve_model_spec

    encoder = load_encoder(resolve_model_spec(TEST_MODEL, str(checkpoint)), "cpu")
    return next(embed_files(encoder, [path], batch_size=1)).embeddings[0]


@pytest.fixture
def search_paths(cli, index: Path):
    """Paths `clipcli search` returns for a fixed query, best first."""

    def run(top_k: int = 50) -> list[str]:
        result, hits = cli.json("search", QUERY, "--index", index, "--top-k", str(top_k))
        assert result.exit_code == 0, result.stderr
        return [hit["path"] for hit in hits]

    return run


@pytest.fixture(scope="module")
def other_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same architecture as `random_checkpoint`, other weights: counts as another model."""
    return save_random_checkpoint(tmp_path_factory.mktemp("other-weights") / "other-shapes.pt", 1)


def under(folder: Path, *names: str) -> list[str]:
    return sorted(str(folder / name) for name in names)


PHOTOS = ["blue.png", "green.jpg", "nested/black.bmp", "nested/white.webp", "red.png"]


# --- first run and the report ---------------------------------------------------------------------


def test_first_run_adds_every_image(run_index, photo_folder: Path, index: Path) -> None:
    report = run_index(photo_folder)

    assert (report["added"], report["total"]) == (5, 5)
    assert report["updated"] == report["moved"] == report["removed"] == report["unchanged"] == 0
    assert report["skipped"] == []
    assert sorted(rows(index)) == under(photo_folder, *PHOTOS)


def test_json_report_has_exactly_the_documented_keys(
    run_index, photo_folder: Path, index: Path
) -> None:
    (photo_folder / "broken.png").write_bytes(b"")

    report = run_index(photo_folder)

    assert set(report) == REPORT_KEYS
    assert report["index"] == str(index)
    assert report["model"] == TEST_MODEL
    assert isinstance(report["seconds"], float) and report["seconds"] >= 0
    for key in REPORT_KEYS - {"index", "model", "skipped", "seconds"}:
        assert type(report[key]) is int, key
    assert [set(item) for item in report["skipped"]] == [{"path", "reason"}]


def test_text_output_summarises_on_stdout_and_warns_about_skipped_files_on_stderr(
    cli, model_args: list[str], photo_folder: Path, index: Path
) -> None:
    (photo_folder / "empty.png").write_bytes(b"")

    result = cli("index", photo_folder, "--index", index, *model_args)

    assert result.exit_code == 0
    assert "5 images" in result.stdout
    assert "5 added" in result.stdout
    assert f"warning: skipped {photo_folder / 'empty.png'}: empty file" in result.stderr


def test_embeddings_are_little_endian_float32_of_the_model_dimension(
    run_index, photo_folder: Path, index: Path, random_checkpoint: Path
) -> None:
    run_index(photo_folder)

    expected = embed_directly(random_checkpoint, photo_folder / "red.png")
    blob = rows(index)[str(photo_folder / "red.png")].embedding

    assert len(blob) == expected.shape[0] * 4
    stored = np.frombuffer(blob, dtype="<f4")
    np.testing.assert_allclose(stored, expected, atol=1e-4)
    assert np.linalg.norm(stored) == pytest.approx(1.0, abs=1e-4)
    assert meta(index)["model"] == TEST_MODEL
    assert meta(index)["pretrained"] == str(random_checkpoint)


# --- incremental re-runs --------------------------------------------------------------------------


def test_rerun_with_nothing_changed_encodes_nothing(
    run_index, photo_folder: Path, index: Path, decoded: list[str]
) -> None:
    run_index(photo_folder)
    before = rows(index)
    decoded.clear()

    report = run_index(photo_folder)

    assert report["unchanged"] == report["total"] == 5
    assert report["added"] == report["updated"] == report["moved"] == report["removed"] == 0
    assert decoded == []
    assert rows(index) == before


def test_new_file_is_the_only_one_encoded(
    run_index, photo_folder: Path, index: Path, decoded: list[str]
) -> None:
    run_index(photo_folder)
    decoded.clear()
    new = noise_image(photo_folder / "nested" / "new.png", seed=1)

    report = run_index(photo_folder)

    assert (report["added"], report["unchanged"], report["total"]) == (1, 5, 6)
    assert decoded == [str(new)]
    assert str(new) in rows(index)


def test_changed_content_is_re_encoded_as_updated(
    run_index, photo_folder: Path, index: Path, decoded: list[str]
) -> None:
    run_index(photo_folder)
    path = photo_folder / "red.png"
    before = rows(index)[str(path)]
    decoded.clear()
    noise_image(path, seed=2)
    later(path)

    report = run_index(photo_folder)

    assert (report["updated"], report["added"], report["unchanged"]) == (1, 0, 4)
    assert report["total"] == 5
    assert decoded == [str(path)]
    after = rows(index)[str(path)]
    assert after.sha256 != before.sha256
    assert after.embedding != before.embedding


def test_touched_file_with_same_content_is_unchanged_and_not_re_encoded(
    run_index, photo_folder: Path, index: Path, decoded: list[str]
) -> None:
    run_index(photo_folder)
    path = photo_folder / "green.jpg"
    before = rows(index)[str(path)]
    decoded.clear()
    later(path)

    report = run_index(photo_folder)

    assert (report["unchanged"], report["updated"], report["added"]) == (5, 0, 0)
    assert decoded == []
    after = rows(index)[str(path)]
    # The new mtime is recorded, so the next run need not even hash the file.
    assert after.mtime_ns == path.stat().st_mtime_ns != before.mtime_ns
    assert (after.id, after.embedding) == (before.id, before.embedding)


def test_deleted_file_is_removed_from_catalog_and_search(
    run_index, search_paths, photo_folder: Path, index: Path
) -> None:
    run_index(photo_folder)
    gone = photo_folder / "nested" / "white.webp"
    gone.unlink()

    report = run_index(photo_folder)

    assert (report["removed"], report["unchanged"], report["total"]) == (1, 4, 4)
    assert str(gone) not in rows(index)
    assert sorted(search_paths()) == under(photo_folder, *(set(PHOTOS) - {"nested/white.webp"}))


def test_file_moved_into_a_subfolder_keeps_its_row_and_vector(
    run_index, search_paths, photo_folder: Path, index: Path, decoded: list[str]
) -> None:
    run_index(photo_folder)
    old = photo_folder / "red.png"
    before = rows(index)[str(old)]
    decoded.clear()
    new = photo_folder / "archive" / "2020" / "renamed-red.png"
    new.parent.mkdir(parents=True)
    old.rename(new)

    report = run_index(photo_folder)

    assert (report["moved"], report["added"], report["removed"]) == (1, 0, 0)
    assert (report["unchanged"], report["total"]) == (4, 5)
    assert decoded == []
    stored = rows(index)
    assert str(old) not in stored
    after = stored[str(new)]
    assert (after.id, after.sha256, after.indexed_at) == (
        before.id,
        before.sha256,
        before.indexed_at,
    )
    assert after.embedding == before.embedding
    assert str(new) in search_paths()


def test_copy_reuses_the_original_vector(
    run_index, photo_folder: Path, index: Path, decoded: list[str]
) -> None:
    run_index(photo_folder)
    original = photo_folder / "blue.png"
    copy = photo_folder / "nested" / "blue copy.png"
    shutil.copy(original, copy)
    decoded.clear()

    report = run_index(photo_folder)

    assert (report["added"], report["moved"], report["unchanged"], report["total"]) == (1, 0, 5, 6)
    assert decoded == []
    stored = rows(index)
    assert stored[str(copy)].embedding == stored[str(original)].embedding
    assert stored[str(copy)].id != stored[str(original)].id


def test_every_image_extension_is_found_in_any_case_and_other_files_are_ignored(
    run_index, tmp_path: Path, index: Path
) -> None:
    folder = tmp_path / "mixed"
    names = ["a.jpg", "b.JPEG", "c.Png", "d.WEBP", "e.gif", "f.BMP", "g.tif", "h.TIFF", "IMG.JPG"]
    names += ["i.jfif", "j.JPE"] + (["k.avif"] if ".avif" in Image.registered_extensions() else [])
    for seed, name in enumerate(names):
        noise_image(folder / name, seed)
    (folder / "notes.txt").write_text("not a photo")
    noise_image(folder / "raw.xyz.png", seed=99).rename(folder / "raw.xyz")

    report = run_index(folder)

    assert (report["added"], report["total"], report["skipped"]) == (len(names),) * 2 + ([],)
    assert sorted(rows(index)) == under(folder, *names)


def searched(index: Path) -> list[str]:
    """Every path search returns, as the logic hands them to the output layer."""
    from clipcli.search import search_index

    return [hit.path for hit in search_index(index, QUERY, top_k=50).hits]


def test_a_file_whose_name_is_not_utf8_is_indexed_moved_copied_and_removed_like_any_other(
    run_index, photo_folder: Path, index: Path
) -> None:
    odd = make_non_utf8_image(photo_folder)

    report = run_index(photo_folder)

    assert (report["added"], report["total"], report["skipped"]) == (6, 6, [])
    found = searched(index)
    assert sorted(found) == sorted([*under(photo_folder, *PHOTOS), str(odd)])
    assert all(os.path.exists(path) for path in found)

    moved = odd.parent / "nested" / odd.name
    os.rename(odd, moved)
    copy = photo_folder / "copy-\udce8.jpg"
    shutil.copy(moved, copy)
    report = run_index(photo_folder)

    assert (report["moved"], report["added"], report["removed"], report["total"]) == (1, 1, 0, 7)
    assert {str(moved), str(copy)} <= set(searched(index))

    moved.unlink()
    copy.unlink()
    report = run_index(photo_folder)

    assert (report["removed"], report["total"]) == (2, 5)
    assert sorted(searched(index)) == under(photo_folder, *PHOTOS)


# --- roots ----------------------------------------------------------------------------------------


def test_root_given_twice_or_overlapping_is_indexed_once(
    run_index, photo_folder: Path, index: Path
) -> None:
    spelled_again = photo_folder / "nested" / ".." / "nested"

    report = run_index(photo_folder, photo_folder, spelled_again)

    assert (report["added"], report["total"]) == (5, 5)
    with catalog_db(index) as db:
        assert db.execute("SELECT COUNT(DISTINCT path) FROM images").fetchone()[0] == 5


def test_indexing_a_second_root_keeps_the_first_roots_images(
    run_index, search_paths, photo_folder: Path, tmp_path: Path, index: Path
) -> None:
    run_index(photo_folder)
    other = tmp_path / "other"
    noise_image(other / "one.png", seed=1)
    noise_image(other / "two.png", seed=2)

    report = run_index(other)

    assert (report["added"], report["removed"], report["total"]) == (2, 0, 7)
    expected = under(photo_folder, *PHOTOS) + under(other, "one.png", "two.png")
    assert sorted(rows(index)) == sorted(expected)
    assert sorted(search_paths()) == sorted(expected)


def test_hidden_folders_and_files_are_skipped_unless_asked_for(
    run_index, photo_folder: Path, index: Path
) -> None:
    secret = noise_image(photo_folder / ".private" / "secret.png", seed=1)
    dotfile = noise_image(photo_folder / ".dotfile.png", seed=2)

    assert run_index(photo_folder)["total"] == 5
    assert str(secret) not in rows(index)

    report = run_index(photo_folder, "--hidden")

    assert (report["added"], report["total"]) == (2, 7)
    assert {str(secret), str(dotfile)} <= set(rows(index))


def test_a_hidden_folder_named_as_the_root_is_indexed(run_index, tmp_path: Path) -> None:
    noise_image(tmp_path / ".photos" / "a.png", seed=1)

    assert run_index(tmp_path / ".photos")["total"] == 1


def test_symlink_loop_is_walked_once(run_index, photo_folder: Path, index: Path) -> None:
    (photo_folder / "nested" / "loop").symlink_to(photo_folder, target_is_directory=True)

    report = run_index(photo_folder)

    assert report["total"] == 5
    assert sorted(rows(index)) == under(photo_folder, *PHOTOS)


def test_root_that_is_not_a_folder_is_a_usage_error(
    cli, model_args: list[str], photo_folder: Path, tmp_path: Path, index: Path
) -> None:
    for root in (photo_folder / "red.png", tmp_path / "does-not-exist"):
        result = cli("index", root, "--index", index, *model_args)

        assert result.exit_code == 2
        assert f"{root}: not a folder" in result.stderr
    assert not (index / CATALOG_FILE).exists()


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    ("index_path", "reason"),
    [
        pytest.param("notes.txt", "is a file, not an index folder", id="a-file"),
        pytest.param("notes.txt/index", "a parent of it is a file", id="under-a-file"),
    ],
)
def test_an_index_path_that_cannot_be_a_folder_is_a_usage_error_that_creates_nothing(
    cli, model_args: list[str], photo_folder: Path, tmp_path: Path, index_path: str, reason: str
) -> None:
    (tmp_path / "notes.txt").write_text("not an index\n")
    before = files_under(tmp_path)

    result = cli("index", photo_folder, "--index", tmp_path / index_path, *model_args)

    assert result.exit_code == 2
    assert result.stderr.strip().startswith(f"error: {tmp_path / index_path}: {reason}")
    assert files_under(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "photos"]


# --- files that do not decode ---------------------------------------------------------------------


@pytest.fixture
def bad_files(tmp_path: Path) -> dict[str, Path]:
    """A folder of two good photos and one file for each way an image can be unreadable."""
    folder = tmp_path / "camera"
    noise_image(folder / "good-1.png", seed=1)
    noise_image(folder / "good-2.jpg", seed=2)
    empty = folder / "empty.png"
    empty.write_bytes(b"")
    truncated = folder / "truncated.png"
    data = noise_image(folder / "whole.png", seed=3).read_bytes()
    (folder / "whole.png").unlink()
    truncated.write_bytes(data[: len(data) // 2])
    text = folder / "notes.jpg"
    text.write_text("shopping list: milk, eggs\n" * 20)
    bomb = png_claiming_size(folder / "bomb.png", 30_000, 30_000)
    return {"empty": empty, "truncated": truncated, "text": text, "bomb": bomb}


EXPECTED_REASONS = {
    "empty": "empty file (0 bytes)",
    "truncated": "truncated or corrupt image data",
    "text": "not an image (unrecognised format)",
    "bomb": "decompression bomb",
}


def reasons(report: dict) -> dict[str, str]:
    return {item["path"]: item["reason"] for item in report["skipped"]}


def assert_reasons(report: dict, bad: dict[str, Path]) -> None:
    got = reasons(report)
    assert set(got) == {str(path) for path in bad.values()}
    for kind, path in bad.items():
        assert got[str(path)].startswith(EXPECTED_REASONS[kind]), (kind, got[str(path)])


def test_bad_files_are_skipped_with_reasons_and_the_run_succeeds(
    run_index, bad_files: dict[str, Path], index: Path
) -> None:
    folder = bad_files["empty"].parent

    report = run_index(folder)

    assert (report["added"], report["total"]) == (2, 2)
    assert_reasons(report, bad_files)
    assert [item["path"] for item in report["skipped"]] == sorted(reasons(report))
    assert sorted(rows(index)) == under(folder, "good-1.png", "good-2.jpg")


def test_bad_files_are_reported_again_without_being_decoded_again(
    run_index, bad_files: dict[str, Path], decoded: list[str]
) -> None:
    folder = bad_files["empty"].parent
    first = run_index(folder)
    decoded.clear()
    new = noise_image(folder / "new.png", seed=4)

    report = run_index(folder)

    assert report["skipped"] == first["skipped"]
    assert (report["added"], report["unchanged"], report["total"]) == (1, 2, 3)
    assert decoded == [str(new)]


def test_bad_files_are_indexed_once_fixed(
    run_index, bad_files: dict[str, Path], index: Path
) -> None:
    folder = bad_files["empty"].parent
    run_index(folder)
    fixed = [bad_files[kind] for kind in ("empty", "truncated", "text")]
    for seed, path in enumerate(fixed, start=10):
        noise_image(path, seed=seed, size=24)
        later(path)

    report = run_index(folder)

    assert (report["added"], report["total"]) == (3, 5)
    assert list(reasons(report)) == [str(bad_files["bomb"])]
    assert {str(path) for path in fixed} <= set(rows(index))
    assert run_index(folder)["skipped"] == report["skipped"]


def test_indexed_photo_that_becomes_corrupt_loses_its_old_vector(
    run_index, search_paths, photo_folder: Path, index: Path
) -> None:
    run_index(photo_folder)
    path = photo_folder / "red.png"
    path.write_bytes(path.read_bytes()[:20])
    later(path)

    report = run_index(photo_folder)

    assert [item["path"] for item in report["skipped"]] == [str(path)]
    assert (report["removed"], report["total"]) == (1, 4)
    assert str(path) not in rows(index)
    assert str(path) not in search_paths()


# --- the FAISS file is a cache of the catalog -----------------------------------------------------


def spoil_index_file(index: Path) -> None:
    (index / INDEX_FILE).write_bytes(b"\x00garbage\xff" * 64)


def truncate_index_file(index: Path) -> None:
    data = (index / INDEX_FILE).read_bytes()
    (index / INDEX_FILE).write_bytes(data[: len(data) // 2])


def spoil_stamp(index: Path) -> None:
    (index / STAMP_FILE).write_text("{not json")


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda index: (index / INDEX_FILE).unlink(), id="index-deleted"),
        pytest.param(spoil_index_file, id="index-garbage"),
        pytest.param(truncate_index_file, id="index-truncated"),
        pytest.param(lambda index: (index / STAMP_FILE).unlink(), id="stamp-deleted"),
        pytest.param(spoil_stamp, id="stamp-garbage"),
    ],
)
def test_search_rebuilds_a_missing_or_damaged_vector_file_from_the_catalog(
    cli, run_index, photo_folder: Path, index: Path, damage
) -> None:
    import faiss

    run_index(photo_folder)
    _, expected = cli.json("search", QUERY, "--index", index)
    damage(index)

    result, hits = cli.json("search", QUERY, "--index", index)

    assert result.exit_code == 0, result.stderr
    assert [h["path"] for h in hits] == [h["path"] for h in expected]
    assert [h["score"] for h in hits] == pytest.approx([h["score"] for h in expected], abs=1e-6)
    assert len(hits) == 5
    assert faiss.read_index(str(index / INDEX_FILE)).ntotal == 5  # and saved again


def damage_catalog(index: Path, offset: int = 8192) -> None:
    """Noise over the 4 KiB page at `offset` of the catalog file, as a failing disk leaves."""
    assert (index / CATALOG_FILE).stat().st_size > offset + 4096
    noise = np.random.default_rng(offset).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    with open(index / CATALOG_FILE, "r+b") as handle:
        handle.seek(offset)
        handle.write(noise)


@pytest.mark.parametrize("offset", [8192, 12288], ids=["at-8k", "at-12k"])
@pytest.mark.parametrize("command", ["search", "index"])
def test_a_damaged_catalog_is_named_with_a_way_out_and_nothing_on_disk_changes(
    cli, run_index, model_args, photo_folder: Path, index: Path, command: str, offset: int
) -> None:
    run_index(photo_folder)
    noise_image(photo_folder / "new.png", seed=9)  # work for the index run, were it to go on
    damage_catalog(index, offset)
    before = files_under(index)
    if command == "search":
        result = cli("search", QUERY, "--index", index)
    else:
        result = cli("index", photo_folder, "--index", index, *model_args)

    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"error: {index / CATALOG_FILE}: not a readable clipcli catalog")
    assert "damaged" in lines[0] and "run `clipcli index FOLDER --repair`" in lines[0]
    assert files_under(index) == before


def test_stale_vector_file_is_rebuilt(
    run_index, search_paths, photo_folder: Path, index: Path, tmp_path: Path
) -> None:
    run_index(photo_folder)
    saved = tmp_path / "saved"
    saved.mkdir()
    for name in (INDEX_FILE, STAMP_FILE):
        shutil.copy(index / name, saved / name)
    new = noise_image(photo_folder / "new.png", seed=5)
    run_index(photo_folder)
    for name in (INDEX_FILE, STAMP_FILE):
        shutil.copy(saved / name, index / name)

    assert str(new) in search_paths()


def test_vector_file_left_from_a_deleted_catalog_is_not_reused(
    cli, run_index, tmp_path: Path, index: Path
) -> None:
    first = tmp_path / "first"
    second = tmp_path / "second"
    for seed in range(3):
        noise_image(first / f"{seed}.png", seed=seed)
        noise_image(second / f"{seed}.png", seed=100 + seed)
    run_index(first)
    (index / CATALOG_FILE).unlink()  # starting over, leaving the derived files behind
    run_index(second)
    _, with_leftover = cli.json("search", QUERY, "--index", index)
    (index / INDEX_FILE).unlink()

    _, rebuilt = cli.json("search", QUERY, "--index", index)

    assert [(h["path"], round(h["score"], 5)) for h in with_leftover] == [
        (h["path"], round(h["score"], 5)) for h in rebuilt
    ]


# --- search before there is anything to search ----------------------------------------------------


def test_search_without_an_index_asks_for_clipcli_index(cli, tmp_path: Path) -> None:
    result = cli("search", QUERY, "--index", tmp_path / "nowhere")

    assert result.exit_code == 1
    assert "no index" in result.stderr
    assert "clipcli index" in result.stderr
    assert not (tmp_path / "nowhere").exists()


def test_search_on_an_empty_index_asks_for_clipcli_index(
    cli, run_index, tmp_path: Path, index: Path
) -> None:
    (tmp_path / "empty").mkdir()
    assert run_index(tmp_path / "empty")["total"] == 0

    result = cli("search", QUERY, "--index", index)

    assert result.exit_code == 1
    assert "empty" in result.stderr
    assert "clipcli index" in result.stderr


# --- where the index lives ------------------------------------------------------------------------


def test_default_index_is_in_the_clipcli_home_data_folder(
    cli, model_args: list[str], photo_folder: Path, isolated_home: Path
) -> None:
    result, report = cli.json("index", photo_folder, *model_args)

    default = isolated_home / "data" / "index"
    assert result.exit_code == 0, result.stderr
    assert report["index"] == str(default)
    assert (default / CATALOG_FILE).is_file()
    search, hits = cli.json("search", QUERY)
    assert search.exit_code == 0, search.stderr
    assert len(hits) == 5


def test_clipcli_index_environment_variable_chooses_the_index_and_the_option_wins(
    cli,
    model_args: list[str],
    photo_folder: Path,
    tmp_path: Path,
    isolated_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from_env = tmp_path / "from-env"
    monkeypatch.setenv("CLIPCLI_INDEX", str(from_env))

    _, report = cli.json("index", photo_folder, *model_args)
    assert report["index"] == str(from_env)
    assert len(rows(from_env)) == 5
    _, hits = cli.json("search", QUERY)
    assert len(hits) == 5

    explicit = tmp_path / "explicit"
    _, report = cli.json("index", photo_folder, "--index", explicit, *model_args)
    assert report["index"] == str(explicit)
    assert (explicit / CATALOG_FILE).is_file()
    assert not (isolated_home / "data" / "index").exists()


# --- models ---------------------------------------------------------------------------------------


@pytest.fixture
def no_default_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """A default model that cannot load: a run that falls back to it fails fast, offline or not."""
    from clipcli import settings

    monkeypatch.setattr(settings, "DEFAULT_MODEL", "no-such-default-model")


def test_rerun_without_model_options_uses_the_index_model(
    cli, run_index, photo_folder: Path, index: Path, random_checkpoint: Path, no_default_model
) -> None:
    run_index(photo_folder)
    new = noise_image(photo_folder / "new.png", seed=6)

    result, report = cli.json("index", photo_folder, "--index", index)

    assert result.exit_code == 0, result.stderr
    assert (report["model"], report["added"], report["total"]) == (TEST_MODEL, 1, 6)
    assert meta(index)["pretrained"] == str(random_checkpoint)
    stored = np.frombuffer(rows(index)[str(new)].embedding, dtype="<f4")
    np.testing.assert_allclose(stored, embed_directly(random_checkpoint, new), atol=1e-4)


def test_rerun_without_model_options_uses_the_model_recorded_by_a_run_that_found_no_images(
    cli, run_index, tmp_path: Path, index: Path, random_checkpoint: Path, no_default_model
) -> None:
    folder = tmp_path / "new-camera"
    folder.mkdir()
    assert run_index(folder)["total"] == 0
    noise_image(folder / "first.png", seed=1)

    result, report = cli.json("index", folder, "--index", index)

    assert result.exit_code == 0, result.stderr
    assert (report["model"], report["added"]) == (TEST_MODEL, 1)
    assert meta(index)["pretrained"] == str(random_checkpoint)


def test_other_model_is_refused_with_a_hint_and_reset_re_embeds_everything(
    cli, run_index, photo_folder: Path, index: Path, other_checkpoint: Path
) -> None:
    run_index(photo_folder)
    before = rows(index)
    other = ["--model", TEST_MODEL, "--pretrained", str(other_checkpoint)]

    refused = cli("index", photo_folder, "--index", index, *other)

    assert refused.exit_code == 2
    assert "--reset" in refused.stderr
    assert rows(index) == before

    result, report = cli.json("index", photo_folder, "--index", index, *other, "--reset")

    assert result.exit_code == 0, result.stderr
    assert (report["added"], report["unchanged"], report["total"]) == (5, 0, 5)
    assert meta(index)["pretrained"] == str(other_checkpoint)
    after = rows(index)
    assert set(after) == set(before)
    assert all(after[path].embedding != before[path].embedding for path in before)
    np.testing.assert_allclose(
        np.frombuffer(after[str(photo_folder / "red.png")].embedding, dtype="<f4"),
        embed_directly(other_checkpoint, photo_folder / "red.png"),
        atol=1e-4,
    )


def test_reset_re_embeds_the_folders_given_and_counts_the_other_folders_photos_as_removed(
    cli, run_index, photo_folder: Path, tmp_path: Path, index: Path, other_checkpoint: Path
) -> None:
    other = tmp_path / "other"
    for seed in range(3):
        noise_image(other / f"{seed}.png", seed=seed)
    run_index(photo_folder)
    run_index(other)
    new_model = ["--model", TEST_MODEL, "--pretrained", str(other_checkpoint)]

    result, report = cli.json("index", photo_folder, "--index", index, *new_model, "--reset")

    assert result.exit_code == 0, result.stderr
    assert (report["added"], report["removed"], report["total"]) == (5, 3, 5)
    assert sorted(rows(index)) == under(photo_folder, *PHOTOS)


def test_reset_counts_an_indexed_photo_that_no_longer_decodes_as_removed(
    run_index, photo_folder: Path, index: Path
) -> None:
    run_index(photo_folder)
    (photo_folder / "red.png").write_bytes(b"")

    report = run_index(photo_folder, "--reset")

    assert (report["added"], report["removed"], report["total"]) == (4, 1, 4)
    assert [item["path"] for item in report["skipped"]] == [str(photo_folder / "red.png")]


def unusable_checkpoint(tmp_path: Path) -> list[str]:
    path = tmp_path / "broken.pt"
    path.write_text("not a checkpoint")
    return ["--model", TEST_MODEL, "--pretrained", str(path)]


@pytest.mark.parametrize(
    ("model_options", "exit_code"),
    [
        pytest.param(lambda tmp: ["--model", "clipcli-shape"], 2, id="unknown-model"),
        pytest.param(unusable_checkpoint, 1, id="unusable-checkpoint"),
    ],
)
def test_reset_with_a_model_that_cannot_be_used_keeps_the_index(
    cli, run_index, photo_folder: Path, index: Path, tmp_path: Path, model_options, exit_code
) -> None:
    run_index(photo_folder)
    before = rows(index)

    result = cli("index", photo_folder, "--index", index, *model_options(tmp_path), "--reset")

    assert result.exit_code == exit_code
    assert rows(index) == before
    assert meta(index)["model"] == TEST_MODEL


def test_unknown_model_is_a_usage_error_suggesting_close_names(
    cli, photo_folder: Path, index: Path
) -> None:
    result = cli("index", photo_folder, "--index", index, "--model", "clipcli-shape")

    assert result.exit_code == 2
    assert "unknown model 'clipcli-shape'" in result.stderr
    assert TEST_MODEL in result.stderr
    assert "Traceback" not in result.stderr


# --- a run that fails leaves the index folder as it found it -------------------------------------


def offline_default_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """No model options, so the default model, whose weights are not cached and cannot be got."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    return []


@pytest.mark.parametrize(
    ("model_options", "exit_code", "says"),
    [
        pytest.param(lambda tmp, mp: ["--model", "nonsense"], 2, "unknown model", id="unknown"),
        pytest.param(lambda tmp, mp: unusable_checkpoint(tmp), 1, "broken.pt", id="unusable"),
        pytest.param(offline_default_weights, 1, "not in the local cache", id="offline"),
    ],
)
def test_a_run_whose_model_cannot_load_leaves_no_index_behind(
    cli,
    photo_folder: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    model_options,
    exit_code: int,
    says: str,
) -> None:
    index = tmp_path / "new" / "index"
    options = model_options(tmp_path, monkeypatch)

    result = cli("index", photo_folder, "--index", index, *options)

    assert result.exit_code == exit_code
    assert says in result.stderr
    assert not (tmp_path / "new").exists()


def test_a_run_whose_model_cannot_load_leaves_an_empty_index_in_a_folder_that_existed(
    cli, photo_folder: Path, tmp_path: Path
) -> None:
    index = tmp_path / "index"
    index.mkdir()

    result = cli("index", photo_folder, "--index", index, *unusable_checkpoint(tmp_path))

    assert result.exit_code == 1
    assert snapshot(index) == {}


def test_a_run_whose_weights_are_gone_changes_nothing_in_an_existing_index(
    cli, photo_folder: Path, tmp_path: Path, index: Path, random_checkpoint: Path, monkeypatch
) -> None:
    weights = tmp_path / "weights.pt"
    shutil.copy(random_checkpoint, weights)
    cli("index", photo_folder, "--index", index, "--model", TEST_MODEL, "--pretrained", weights)
    (photo_folder / "red.png").unlink()  # work for the cheap steps: a removal, a move, a copy
    (photo_folder / "blue.png").rename(photo_folder / "nested" / "blue.png")
    shutil.copy(photo_folder / "green.jpg", photo_folder / "green copy.jpg")
    noise_image(photo_folder / "new.png", seed=3)  # and one to embed
    weights.write_bytes(b"not the weights any more")
    monkeypatch.setenv("CLIPCLI_CACHE", str(tmp_path / "no-exports"))  # nor exported towers
    before = snapshot(index)

    result = cli("index", photo_folder, "--index", index)

    assert result.exit_code == 1
    assert "weights.pt" in result.stderr
    assert snapshot(index) == before


def test_a_run_whose_model_cannot_load_does_not_stamp_an_empty_index_with_it(
    cli, run_index, photo_folder: Path, tmp_path: Path, index: Path
) -> None:
    (tmp_path / "nothing").mkdir()
    run_index(tmp_path / "nothing")
    before = snapshot(index)

    result = cli("index", photo_folder, "--index", index, *unusable_checkpoint(tmp_path))

    assert result.exit_code == 1
    assert snapshot(index) == before
    assert meta(index)["model"] == TEST_MODEL


# --- one writer at a time -------------------------------------------------------------------------


def test_second_writer_exits_with_a_clear_message_and_changes_nothing(
    cli, run_index, model_args: list[str], photo_folder: Path, index: Path
) -> None:
    run_index(photo_folder)
    before = rows(index)
    noise_image(photo_folder / "new.png", seed=7)

    with open(index / "index.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = cli("index", photo_folder, "--index", index, *model_args)
        fcntl.flock(lock, fcntl.LOCK_UN)

    assert result.exit_code == 1
    assert "another `clipcli index`" in result.stderr
    assert rows(index) == before
    assert run_index(photo_folder)["added"] == 1


# --- crash safety ---------------------------------------------------------------------------------

KILL_WAIT_S = 120  # generous: a loaded machine may need a while just to import torch


def committed(index: Path) -> int | None:
    """Rows the index run has committed so far, read without taking any write lock."""
    try:
        with catalog_db(index, read_only=True) as db:
            return int(db.execute("SELECT COUNT(*) FROM images").fetchone()[0])
    except sqlite3.Error:
        return None  # not created yet, or the table is not there yet


def kill_mid_run(folder: Path, index: Path, checkpoint: Path, log: Path) -> int | None:
    """Start `clipcli index` and SIGKILL it between its first and last batch commits.

    Returns the rows committed at the kill, or None when the run finished first.
    """
    total = sum(1 for _ in folder.iterdir())
    env = {**os.environ, "CLIPCLI_HOME": str(index.parent / "home")}
    command = [sys.executable, "-m", "clipcli", "index", str(folder), "--index", str(index)]
    command += ["--model", TEST_MODEL, "--pretrained", str(checkpoint), "--batch-size", "2"]
    deadline = time.monotonic() + KILL_WAIT_S
    with open(log, "wb") as stderr:
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            while process.poll() is None and time.monotonic() < deadline:
                if 0 < (committed(index) or 0) < total:
                    break
                time.sleep(0.01)
        finally:
            # Killed whether caught mid-run, past the deadline, or on a failure in this loop.
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
    if process.returncode != -signal.SIGKILL:
        assert process.returncode == 0, log.read_text()
        return None
    with catalog_db(index) as db:
        return int(db.execute("SELECT COUNT(*) FROM images").fetchone()[0])


@pytest.mark.slow
def test_kill_9_mid_run_loses_at_most_a_batch_and_the_next_run_completes(
    cli, model_args: list[str], random_checkpoint: Path, tmp_path: Path
) -> None:
    # If the run outpaces the polling, try again with more and bigger photos: never skip.
    for attempt, (count, size) in enumerate([(40, 128), (120, 256), (240, 384)]):
        folder = tmp_path / f"photos-{attempt}"
        index = tmp_path / f"index-{attempt}"
        for seed in range(count):
            noise_image(folder / f"{seed:03d}.png", seed=seed, size=size)
        kept = kill_mid_run(folder, index, random_checkpoint, tmp_path / f"run-{attempt}.log")
        if kept is not None and 0 < kept < count:
            break
    else:
        pytest.fail("clipcli index finished every time before it could be killed")

    result, report = cli.json("index", folder, "--index", index, *model_args, "--batch-size", "2")

    assert result.exit_code == 0, result.stderr
    assert (report["added"], report["unchanged"]) == (count - kept, kept)
    assert (report["total"], report["skipped"]) == (count, [])
    with catalog_db(index) as db:
        paths = [row[0] for row in db.execute("SELECT path FROM images")]
    assert sorted(paths) == sorted(str(path) for path in folder.iterdir())
    search, hits = cli.json("search", QUERY, "--index", index, "--top-k", str(count))
    assert search.exit_code == 0, search.stderr
    assert sorted(hit["path"] for hit in hits) == sorted(paths)


def test_an_index_folder_whose_name_is_not_utf8_is_written_and_searched(
    cli, model_args, photo_folder: Path, tmp_path: Path
) -> None:
    index = Path(os.fsdecode(os.fsencode(tmp_path) + b"/index-\xe9"))

    result, report = cli.json("index", photo_folder, "--index", index, *model_args)

    assert result.exit_code == 0, result.stderr
    assert report["added"] == 5
    assert report["index"] == str(tmp_path) + "/index-\\xe9"  # shown escaped, as valid JSON
    result, hits = cli.json("search", "a red square", "--index", index)
    assert (result.exit_code, len(hits)) == (0, 5)
    assert (index / "vectors.faiss").is_file()  # saved, not rebuilt on every search


def test_a_failing_run_leaves_a_catalog_of_an_older_schema_as_it_was_and_a_writing_run_upgrades_it(
    cli, run_index, photo_folder: Path, index: Path
) -> None:
    run_index(photo_folder)
    as_of_the_previous_schema(index)
    before = snapshot(index)

    result = cli("index", photo_folder, "--index", index, "--model", "clipcli-shapes")

    assert result.exit_code == 2  # built with another model
    assert snapshot(index) == before  # still readable by the clipcli that wrote it

    (photo_folder / "red.png").unlink()
    report = run_index(photo_folder)

    assert report["removed"] == 1
    db = sqlite3.connect(index / CATALOG_FILE)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()
