"""Specification of the picture hashes (pHash and colour grid) `clipcli index` records for
`clipcli dupes`: computed from the pixels the model is given when a photo is embedded (one
decode), kept while its content stays, reused by a copy, and computed for a catalog made before
hashes without embedding again."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from conftest import TEST_MODEL, as_of_the_previous_schema
from PIL import Image

from clipcli import index as index_module
from clipcli.index import update_index
from clipcli.media.decode import load_image
from clipcli.media.perceptual_hash import PictureHash, file_picture_hash, picture_hash
from clipcli.shapes import draw_shape
from clipcli.store.catalog import CATALOG_FILE, SCHEMA_VERSION

MODEL_SIZE = 64  # the input size of the bundled architecture: indexing decodes for it


def stored(index: Path) -> dict[str, tuple[PictureHash | None, bytes]]:
    """path -> (picture hash, embedding blob), as on disk: None where both of its columns are."""
    db = sqlite3.connect(index / CATALOG_FILE)
    try:
        rows = db.execute("SELECT path, phash, colours, embedding FROM images")
        return {
            path: (None if (phash, colours) == (None, None) else PictureHash(phash, colours), blob)
            for path, phash, colours, blob in rows
        }
    finally:
        db.close()


def hashes(index: Path) -> dict[str, PictureHash | None]:
    return {path: picture for path, (picture, _) in stored(index).items()}


def as_indexing_hashes(path: Path) -> PictureHash:
    return picture_hash(load_image(path, min_size=MODEL_SIZE))


@pytest.fixture
def drawings(tmp_path: Path) -> Path:
    """Three drawings of the shapes world, a JPEG among them (decoded at a reduced scale)."""
    folder = tmp_path / "photos"
    (folder / "trip").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, size in [("star.png", (300, 200)), ("trip/ring.jpg", (640, 480)), ("sq.webp", None)]:
        draw_shape(rng, size=size)[0].save(folder / name)
    return folder


class Phases:
    def __init__(self) -> None:
        self.seen: dict[str, list[int]] = {}

    def phase(self, description: str, total: int) -> None:
        self.seen[description] = [total, 0]

    def advance(self, count: int) -> None:
        self.seen[list(self.seen)[-1]][1] += count


def test_a_new_photo_is_hashed_from_the_pixels_it_is_embedded_from_decoding_it_once(
    cli, model_args, run_index, drawings: Path, index: Path, decoded: list[str], tmp_path: Path
) -> None:
    # A model's first run exports it, calibrated on the run's photos: not this run's.
    (tmp_path / "first").mkdir()
    draw_shape(np.random.default_rng(5), size=(80, 80))[0].save(tmp_path / "first" / "a.png")
    assert (
        cli("index", tmp_path / "first", "--index", tmp_path / "other", *model_args).exit_code == 0
    )
    decoded.clear()

    run_index(drawings)

    photos = sorted(str(path) for path in drawings.rglob("*.*"))
    assert sorted(decoded) == photos
    assert hashes(index) == {path: as_indexing_hashes(Path(path)) for path in photos}


def test_moved_touched_and_copied_photos_keep_their_hash_and_new_content_gets_one(
    run_index, drawings: Path, index: Path, decoded: list[str]
) -> None:
    run_index(drawings)
    before = hashes(index)
    moved = drawings / "archive" / "star.png"
    moved.parent.mkdir()
    (drawings / "star.png").rename(moved)
    os.utime(moved, ns=(0, moved.stat().st_mtime_ns + 86_400 * 10**9))  # and touched
    copy = shutil.copy(drawings / "trip" / "ring.jpg", drawings / "ring copy.jpg")
    changed = drawings / "sq.webp"
    draw_shape(np.random.default_rng(9), size=(120, 120))[0].save(changed)
    decoded.clear()

    report = run_index(drawings)

    assert (report["moved"], report["added"], report["updated"]) == (1, 1, 1)
    assert decoded == [str(changed)]  # the move, the touch and the copy decode nothing
    after = hashes(index)
    assert after[str(moved)] == before[str(drawings / "star.png")]
    assert after[str(copy)] == after[str(drawings / "trip" / "ring.jpg")]
    assert after[str(changed)] == as_indexing_hashes(changed) != before[str(changed)]


def test_a_catalog_made_before_hashes_is_hashed_on_the_next_run_without_embedding_again(
    run_index, random_checkpoint: Path, drawings: Path, index: Path, decoded: list[str]
) -> None:
    run_index(drawings)
    vectors = {path: blob for path, (_, blob) in stored(index).items()}
    as_of_the_previous_schema(index)
    decoded.clear()
    progress = Phases()
    model = {"model": TEST_MODEL, "pretrained": str(random_checkpoint)}

    report = update_index([drawings], index, **model, progress=progress)

    assert (report.added, report.updated, report.moved, report.removed) == (0, 0, 0, 0)
    assert (report.unchanged, report.total) == (3, 3)
    assert "Embedding" not in progress.seen and "Loading model" not in progress.seen
    assert progress.seen["Hashing pictures"] == [3, 3]
    assert sorted(decoded) == sorted(vectors)  # once each, for its hash alone
    assert {path: blob for path, (_, blob) in stored(index).items()} == vectors
    assert hashes(index) == {path: file_picture_hash(Path(path)) for path in vectors}
    db = sqlite3.connect(index / CATALOG_FILE)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()
    again = Phases()
    update_index([drawings], index, **model, progress=again)
    assert "Hashing pictures" not in again.seen  # nothing left to hash


def test_hashes_are_committed_a_batch_at_a_time_so_a_killed_run_keeps_them(
    run_index, drawings: Path, index: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_index(drawings)
    as_of_the_previous_schema(index)
    monkeypatch.setattr(index_module, "HASH_BATCH", 2)
    from clipcli.media import perceptual_hash as hashing

    real = hashing.file_picture_hashes
    batches: list[int] = []

    def killed_on_the_second_batch(paths: list[Path]) -> list[PictureHash | None]:
        batches.append(len(paths))
        if len(batches) == 2:
            raise KeyboardInterrupt
        return real(paths)

    monkeypatch.setattr(hashing, "file_picture_hashes", killed_on_the_second_batch)

    with pytest.raises(KeyboardInterrupt):
        update_index([drawings], index, model=None)

    assert batches == [2, 1]
    assert sorted(h is None for h in hashes(index).values()) == [False, False, True]


def test_a_photo_that_no_longer_decodes_keeps_no_hash_and_the_run_goes_on(
    run_index, drawings: Path, index: Path, random_checkpoint: Path
) -> None:
    run_index(drawings)
    as_of_the_previous_schema(index)
    star = drawings / "star.png"
    stat = star.stat()
    star.write_bytes(star.read_bytes()[:100])  # damaged, its size and mtime put back
    os.truncate(star, stat.st_size)
    os.utime(star, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    update_index([drawings], index, model=TEST_MODEL, pretrained=str(random_checkpoint))

    found = hashes(index)
    assert found[str(star)] is None
    assert all(picture is not None for path, picture in found.items() if path != str(star))


def test_an_image_saved_again_smaller_hashes_within_the_limits_of_the_original(
    run_index, drawings: Path, index: Path
) -> None:
    from clipcli.dupes import COLOUR_LIMIT, HASH_LIMIT
    from clipcli.media.perceptual_hash import colour_difference, hash_distance

    star = Image.open(drawings / "star.png")
    star.resize((150, 100), Image.LANCZOS).save(drawings / "star-small.jpg", quality=80)
    run_index(drawings)

    found = hashes(index)
    original, copy = found[str(drawings / "star.png")], found[str(drawings / "star-small.jpg")]
    assert original is not None and copy is not None
    assert hash_distance(original.phash, copy.phash) <= HASH_LIMIT
    assert colour_difference(original.colours, copy.colours) < 1 < COLOUR_LIMIT
