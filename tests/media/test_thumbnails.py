"""Thumbnails: at most 256 px, cached per file content, and refused with decode's reasons."""

from __future__ import annotations

import io
import os
import shutil

from conftest import make_image
from PIL import Image

from clipcli.media import thumbnails
from clipcli.media.decode import ImageDecodeError


def test_a_thumbnail_keeps_the_aspect_within_256_px(tmp_path):
    photo = make_image(tmp_path / "wide.jpg", "red", size=(1200, 600))
    with Image.open(io.BytesIO(thumbnails.thumbnail_jpeg(photo))) as image:
        assert image.format == "JPEG" and image.size == (256, 128)


def test_a_copy_or_a_renamed_photo_reuses_the_thumbnail_and_an_edited_one_does_not(
    tmp_path, monkeypatch
):
    drawn = []
    draw = thumbnails.draw_thumbnail
    monkeypatch.setattr(thumbnails, "draw_thumbnail", lambda *a: drawn.append(a) or draw(*a))
    photo = make_image(tmp_path / "a.png", "blue", size=(300, 300))
    first = thumbnails.thumbnail_jpeg(photo)
    copy = shutil.copy(photo, tmp_path / "b.png")
    assert thumbnails.thumbnail_jpeg(copy) == first and len(drawn) == 1
    make_image(photo, "green", size=(300, 300))
    assert thumbnails.thumbnail_jpeg(photo) != first and len(drawn) == 2


def test_a_fifo_a_folder_and_a_missing_file_are_refused_as_decoding_refuses_them(tmp_path):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)  # reading it would block for ever
    (tmp_path / "folder.jpg").mkdir()
    reasons = {}
    for name in ("pipe.jpg", "folder.jpg", "missing.jpg"):
        try:
            thumbnails.thumbnail_jpeg(tmp_path / name)
        except ImageDecodeError as exc:
            reasons[name] = exc.reason
    assert reasons == {
        "pipe.jpg": "not a regular file",
        "folder.jpg": "is a directory",
        "missing.jpg": "no such file",
    }
