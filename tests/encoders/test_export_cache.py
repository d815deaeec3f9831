"""Export folders: what export.json says they are for, when they were last used, their lock."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from clipcli import locks
from clipcli.encoders.export_cache import LAYOUT, USED_STAMP, ExportFolder
from clipcli.models.names import ModelSpec

HOUR_S = 3600


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch) -> Path:
    """Exports of this file's own, so that removing and ageing them concerns no other test."""
    monkeypatch.setenv("CLIPCLI_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def age(path: Path, seconds: float) -> None:
    moment = time.time() - seconds
    os.utime(path, (moment, moment))


def test_a_new_export_folder_records_the_model_weights_and_fingerprint(tmp_path: Path) -> None:
    spec = ModelSpec("some-model", str(tmp_path / "w.pt"))
    folder = ExportFolder.for_spec(spec)
    with folder.writing():
        pass
    meta = json.loads((folder.path / "export.json").read_text())
    assert meta["model"] == "some-model"
    assert meta["pretrained"] == str(tmp_path / "w.pt")
    assert meta["fingerprint"] == spec.fingerprint
    assert ExportFolder(folder.path).recorded_identity() == {
        "model": "some-model",
        "pretrained": str(tmp_path / "w.pt"),
        "fingerprint": spec.fingerprint,
    }


def test_a_folder_made_before_the_record_gets_it_and_keeps_its_export() -> None:
    spec = ModelSpec("some-model", "a-tag")
    folder = ExportFolder.for_spec(spec)
    folder.path.mkdir(parents=True)
    (folder.path / "export.json").write_text(json.dumps({"layout": LAYOUT, "text_ok": False}))
    assert ExportFolder(folder.path).recorded_identity() == dict.fromkeys(
        ("model", "pretrained", "fingerprint")
    )
    with folder.writing() as meta:
        assert meta["text_ok"] is False  # what was exported is still there
    assert folder.read_meta()["model"] == "some-model"
    assert folder.read_meta()["fingerprint"] == spec.fingerprint


def test_asking_for_a_tower_marks_the_export_used_at_most_once_an_hour() -> None:
    folder = ExportFolder.for_spec(ModelSpec("some-model", "a-tag"))
    with folder.writing():
        pass
    stamp = folder.path / USED_STAMP
    folder.tower("image-fp32")
    assert time.time() - stamp.stat().st_mtime < 60
    age(stamp, HOUR_S / 2)
    half_an_hour_ago = stamp.stat().st_mtime
    folder.tower("image-fp32")
    assert stamp.stat().st_mtime == half_an_hour_ago  # recent enough: not written again
    age(stamp, 2 * HOUR_S)
    folder.tower("text-fp32")
    assert time.time() - stamp.stat().st_mtime < 60
    assert folder.last_used() == stamp.stat().st_mtime


def test_marking_a_folder_that_does_not_exist_creates_nothing(own_cache: Path) -> None:
    folder = ExportFolder.for_spec(ModelSpec("never-exported", "a-tag"))
    folder.mark_used()
    folder.tower("image-fp32")
    assert not own_cache.exists()


def test_last_used_is_the_newest_file_and_size_the_sum_of_them() -> None:
    folder = ExportFolder.for_spec(ModelSpec("some-model", "a-tag"))
    with folder.writing():
        (folder.path / "image-fp32.opt.weights").write_bytes(b"x" * 1000)
    for path in folder.path.iterdir():
        age(path, 5 * 24 * HOUR_S)
    age(folder.path / "export.json", 2 * 24 * HOUR_S)
    assert abs(folder.last_used() - (time.time() - 2 * 24 * HOUR_S)) < 60
    expected = sum(path.stat().st_size for path in folder.path.iterdir())
    assert folder.size() == expected > 1000
    gone = ExportFolder(folder.path.parent / "gone")
    assert (gone.size(), gone.last_used()) == (0, 0.0)


def test_a_folder_being_written_is_busy_and_not_removed() -> None:
    folder = ExportFolder.for_spec(ModelSpec("some-model", "a-tag"))
    with folder.writing():
        assert folder.busy()
        assert folder.remove_unless_busy() is False
        assert folder.path.is_dir()
    assert not folder.busy()
    assert folder.remove_unless_busy() is True
    assert not folder.path.exists()
    assert folder.lock_file.exists()  # another process may be waiting on it


def test_an_exporter_waiting_while_its_folder_is_removed_makes_it_again() -> None:
    folder = ExportFolder.for_spec(ModelSpec("some-model", "a-tag"))
    outcome: list[object] = []

    def export() -> None:
        try:
            with folder.writing():
                folder.update_meta(image_exported=True)
            outcome.append("exported")
        except Exception as exc:
            outcome.append(exc)

    with locks.exclusive(folder.lock_file, wait=True):  # a clean-up holds the folder
        exporter = threading.Thread(target=export)
        exporter.start()
        time.sleep(0.5)  # the exporter is waiting for the lock by now
        shutil.rmtree(folder.path, ignore_errors=True)
    exporter.join(timeout=30)
    assert outcome == ["exported"]
    assert folder.read_meta()["image_exported"] is True
