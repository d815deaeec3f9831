"""Specification of `clipcli cache` and `clipcli cache clean`, and of the cache's size cap.

Two real exports of the tiny bundled model are made once for the file (one with its own
weights, one with a random checkpoint), each with an index; every test works on its own copy
of that cache, and registers the indexes it wants known.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import TEST_MODEL, Cli, make_image, snapshot

from clipcli import locks
from clipcli.encoders.export_cache import USED_STAMP, ExportFolder
from clipcli.errors import UsageError
from clipcli.models.names import BUNDLED_WEIGHTS, ModelSpec
from clipcli.store import index_registry
from clipcli.store.text_cache import RAW_QUERY, TEXT_CACHE_FILE, TextEmbeddingCache

DAY_S = 86400
EXPORT_KEYS = {
    "path",
    "model",
    "pretrained",
    "fingerprint",
    "bytes",
    "last_used",
    "indexes",
    "busy",
}


@dataclass(frozen=True)
class Made:
    cache: Path
    shapes_index: Path  # indexed with the bundled weights, and searched once
    random_index: Path  # indexed with a random checkpoint, whose labels were classified
    shapes: ModelSpec
    random: ModelSpec


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory, random_checkpoint: Path) -> Made:
    root = tmp_path_factory.mktemp("caches")
    photos = root / "photos"
    make_image(photos / "red.png", "red")
    make_image(photos / "blue.png", "blue")
    shapes = ModelSpec(TEST_MODEL, str(BUNDLED_WEIGHTS[TEST_MODEL]))
    random = ModelSpec(TEST_MODEL, str(random_checkpoint))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CLIPCLI_HOME", str(root / "home"))
        patch.setenv("CLIPCLI_CACHE", str(root / "cache"))
        for name in ("CLIPCLI_INDEX", "CLIPCLI_MODEL", "CLIPCLI_PRETRAINED", "CLIPCLI_PRECISION"):
            patch.delenv(name, raising=False)
        cli = Cli()
        model = ["--model", TEST_MODEL]
        weights = [*model, "--pretrained", random_checkpoint]
        for args in (
            ["index", photos, "--index", root / "shapes-index", *model],
            ["index", photos, "--index", root / "random-index", *weights],
            ["search", "a red square", "--index", root / "shapes-index"],
            ["classify", photos / "red.png", "--labels", "red,blue", *weights],
        ):
            result = cli(*args)
            assert result.exit_code == 0, result.stderr
    return Made(root / "cache", root / "shapes-index", root / "random-index", shapes, random)


@pytest.fixture
def cache(made: Made, tmp_path: Path, monkeypatch) -> Path:
    """This test's own copy of the two exports and the text cache (mtimes kept)."""
    copy = tmp_path / "cache"
    shutil.copytree(made.cache, copy)
    monkeypatch.setenv("CLIPCLI_CACHE", str(copy))
    return copy


def export_of(spec: ModelSpec) -> ExportFolder:
    return ExportFolder.for_spec(spec)


def files_size(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.iterdir())


def age(folder: Path, days: float) -> None:
    """Make an export look last used `days` ago."""
    moment = time.time() - days * DAY_S
    for path in folder.iterdir():
        os.utime(path, (moment, moment))


def fake_export(name: str, size: int, days: float) -> ExportFolder:
    """An export folder of `size` bytes of graph, last used `days` ago, made as exports are."""
    folder = ExportFolder.for_spec(ModelSpec(name, "a-tag"))
    with folder.writing():
        (folder.path / "image-fp32.opt.weights").write_bytes(b"\0" * size)
    age(folder.path, days)
    return folder


def by_path(entries: list[dict]) -> dict[str, dict]:
    return {entry["path"]: entry for entry in entries}


# -- clipcli cache ---------------------------------------------------------------------------


def test_cache_lists_each_export_with_its_model_size_last_use_and_index(
    cli, made: Made, cache: Path
) -> None:
    index_registry.register(made.shapes_index)
    index_registry.register(made.random_index)
    shapes, random = export_of(made.shapes).path, export_of(made.random).path
    age(random, 3)
    result, data = cli.json("cache")
    assert result.exit_code == 0, result.stderr
    assert set(data) == {
        "cache",
        "limit",
        "exports",
        "exports_bytes",
        "text_embeddings",
        "eval_embeddings",
        "thumbnails",
    }
    assert (data["cache"], data["limit"]) == (str(cache), 10 * 10**9)
    exports = by_path(data["exports"])
    assert set(exports) == {str(shapes), str(random)}
    for entry in data["exports"]:
        assert set(entry) == EXPORT_KEYS
        assert entry["bytes"] == files_size(Path(entry["path"]))
        assert entry["busy"] is False
    assert exports[str(shapes)]["model"] == TEST_MODEL
    assert exports[str(shapes)]["pretrained"] == made.shapes.pretrained
    assert exports[str(shapes)]["fingerprint"] == made.shapes.fingerprint
    assert exports[str(shapes)]["indexes"] == [str(made.shapes_index)]
    assert exports[str(random)]["pretrained"] == made.random.pretrained
    assert exports[str(random)]["indexes"] == [str(made.random_index)]
    three_days_ago = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(time.time() - 3 * DAY_S))
    assert exports[str(random)]["last_used"].startswith(three_days_ago)
    assert exports[str(random)]["last_used"].endswith("Z")
    assert data["exports_bytes"] == files_size(shapes) + files_size(random)


def test_cache_counts_the_cached_labels_and_queries_of_each_model(
    cli, made: Made, cache: Path
) -> None:
    index_registry.register(made.shapes_index)
    result, data = cli.json("cache")
    assert result.exit_code == 0, result.stderr
    text = data["text_embeddings"]
    assert text["path"] == str(cache / TEXT_CACHE_FILE)
    assert text["bytes"] == (cache / TEXT_CACHE_FILE).stat().st_size
    models = {model["fingerprint"]: model for model in text["models"]}
    assert set(models) == {made.shapes.fingerprint, made.random.fingerprint}
    assert models[made.shapes.fingerprint] == {
        "fingerprint": made.shapes.fingerprint,
        "model": TEST_MODEL,
        "pretrained": made.shapes.pretrained,
        "rows": 1,  # the search
        "queries": 1,
        "indexes": [str(made.shapes_index)],
    }
    assert models[made.random.fingerprint]["rows"] == 2  # the two labels classified
    assert models[made.random.fingerprint]["queries"] == 0
    assert models[made.random.fingerprint]["indexes"] == []


def test_an_export_that_does_not_record_its_model_shows_as_unknown(
    cli, made: Made, cache: Path
) -> None:
    folder = export_of(made.random).path
    meta = json.loads((folder / "export.json").read_text())
    for key in ("model", "pretrained", "fingerprint"):
        del meta[key]
    (folder / "export.json").write_text(json.dumps(meta))
    result, data = cli.json("cache")
    assert result.exit_code == 0, result.stderr
    entry = by_path(data["exports"])[str(folder)]
    assert (entry["model"], entry["pretrained"], entry["fingerprint"]) == (None, None, None)
    text = cli("cache")
    assert "unknown model" in text.stdout


def test_cache_text_output_has_a_line_per_export_and_per_model(
    cli, made: Made, cache: Path
) -> None:
    index_registry.register(made.shapes_index)
    result = cli("cache")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("exported models: 2, ") and "(limit 10 GB)" in lines[0]
    shapes_line = next(line for line in lines if str(made.shapes_index) in line)
    assert "used just now" in shapes_line or "minute" in shapes_line
    assert f"{TEST_MODEL} ({made.shapes.pretrained})" in shapes_line
    assert any("no known index" in line and made.random.pretrained in line for line in lines)
    assert any("0 labels, 1 query" in line for line in lines)
    assert any("2 labels, 0 queries" in line for line in lines)
    assert result.stderr == ""


def test_cache_of_an_empty_cache_folder_creates_nothing(cli, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CLIPCLI_CACHE", str(tmp_path / "empty"))
    result, data = cli.json("cache")
    assert result.exit_code == 0, result.stderr
    assert (data["exports"], data["exports_bytes"]) == ([], 0)
    assert data["text_embeddings"]["models"] == [] and data["text_embeddings"]["bytes"] == 0
    assert not (tmp_path / "empty").exists()


def test_a_limit_that_is_not_a_size_is_a_usage_error(cli, cache: Path, monkeypatch) -> None:
    monkeypatch.setenv("CLIPCLI_CACHE_LIMIT", "10")
    result = cli("cache")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: CLIPCLI_CACHE_LIMIT=10: not a size; use e.g. 5GB")


@pytest.mark.parametrize(
    ("value", "limit"),
    [("5GB", 5 * 10**9), ("500MB", 500 * 10**6), ("2GiB", 2 * 2**30), ("1.5 g", 15 * 10**8)],
)
def test_the_limit_is_read_in_decimal_or_binary_units(cli, cache, monkeypatch, value, limit):
    monkeypatch.setenv("CLIPCLI_CACHE_LIMIT", value)
    assert cli.json("cache")[1]["limit"] == limit


def test_no_limit_is_shown_as_null(cli, cache, monkeypatch) -> None:
    monkeypatch.setenv("CLIPCLI_CACHE_LIMIT", "none")
    assert cli.json("cache")[1]["limit"] is None
    assert "(no limit)" in cli("cache").stdout


# -- clipcli cache clean -----------------------------------------------------------------------


def test_clean_removes_the_exports_and_labels_no_known_index_uses(
    cli, made: Made, cache: Path
) -> None:
    index_registry.register(made.shapes_index)  # the random model's index is not known
    kept, removed = export_of(made.shapes).path, export_of(made.random).path
    removed_bytes = files_size(removed)
    result, data = cli.json("cache", "clean")
    assert result.exit_code == 0, result.stderr
    assert set(data) == {
        "removed",
        "skipped",
        "text_embeddings",
        "eval_embeddings",
        "thumbnails",
        "freed",
    }
    assert [entry["path"] for entry in data["removed"]] == [str(removed)]
    assert set(data["removed"][0]) == EXPORT_KEYS | {"reason"}
    assert data["removed"][0]["reason"] == "unused"
    assert data["removed"][0]["bytes"] == removed_bytes
    assert data["skipped"] == []
    assert data["text_embeddings"]["rows"] == 2
    assert data["text_embeddings"]["models"] == [made.random.fingerprint]
    assert data["freed"] == removed_bytes + data["text_embeddings"]["bytes"]
    assert kept.is_dir() and not removed.exists()
    cached = TextEmbeddingCache(cache / TEXT_CACHE_FILE)
    assert cached.models() == {made.shapes.fingerprint: (1, 1)}
    assert cached.get(made.shapes.fingerprint, RAW_QUERY, ["a red square"])
    cached.close()


def test_clean_prints_what_it_removed_and_the_bytes_freed(cli, made: Made, cache: Path) -> None:
    index_registry.register(made.shapes_index)
    removed = export_of(made.random).path
    result = cli("cache", "clean")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"removed {removed}  {TEST_MODEL} ({made.random.pretrained}), ")
    assert lines[0].endswith(", no known index uses it")
    assert lines[1] == "removed 2 cached text embeddings of 1 model"
    assert lines[2].startswith("freed ") and lines[2].endswith(" MB")
    again = cli("cache", "clean")
    assert again.stdout == "freed 0 B\n"


def test_clean_keeps_the_export_of_every_known_index(cli, made: Made, cache: Path) -> None:
    index_registry.register(made.shapes_index)
    index_registry.register(made.random_index)
    before = snapshot(cache)
    result, data = cli.json("cache", "clean")
    assert result.exit_code == 0, result.stderr
    assert (data["removed"], data["freed"], data["text_embeddings"]["rows"]) == ([], 0, 0)
    assert snapshot(cache) == before


def test_an_index_that_vanished_no_longer_keeps_its_export(
    cli, made: Made, cache: Path, tmp_path: Path
) -> None:
    index_registry.register(made.shapes_index)
    copy = tmp_path / "random-index-copy"
    shutil.copytree(made.random_index, copy)
    index_registry.register(copy)
    shutil.rmtree(copy)
    result, data = cli.json("cache", "clean")
    assert result.exit_code == 0, result.stderr
    assert [entry["path"] for entry in data["removed"]] == [str(export_of(made.random).path)]
    assert index_registry.known_indexes() == [made.shapes_index]


def test_the_default_index_keeps_its_export_unregistered(
    cli, made: Made, cache: Path, monkeypatch
) -> None:
    monkeypatch.setenv("CLIPCLI_INDEX", str(made.random_index))
    result, data = cli.json("cache", "clean")
    assert result.exit_code == 0, result.stderr
    assert [entry["path"] for entry in data["removed"]] == [str(export_of(made.shapes).path)]


def test_older_than_also_removes_indexed_exports_not_used_for_that_long(
    cli, made: Made, cache: Path
) -> None:
    index_registry.register(made.shapes_index)
    index_registry.register(made.random_index)
    stale, recent = export_of(made.random).path, export_of(made.shapes).path
    age(stale, 10)
    age(recent, 2)
    result, data = cli.json("cache", "clean", "--older-than", "7")
    assert result.exit_code == 0, result.stderr
    assert [(e["path"], e["reason"]) for e in data["removed"]] == [(str(stale), "stale")]
    assert data["text_embeddings"]["models"] == [made.random.fingerprint]  # its labels too
    assert recent.is_dir() and not stale.exists()
    result, data = cli.json("cache", "clean", "--older-than", "1.5")
    assert result.exit_code == 0, result.stderr
    assert [(e["path"], e["reason"]) for e in data["removed"]] == [(str(recent), "stale")]


def test_all_removes_every_export_and_text_embedding(cli, made: Made, cache: Path) -> None:
    index_registry.register(made.shapes_index)
    index_registry.register(made.random_index)
    result, data = cli.json("cache", "clean", "--all")
    assert result.exit_code == 0, result.stderr
    assert {entry["reason"] for entry in data["removed"]} == {"all"}
    assert len(data["removed"]) == 2
    assert data["text_embeddings"]["rows"] == 3
    assert [path for path in (cache / "onnx").iterdir() if path.is_dir()] == []
    assert cli.json("cache")[1]["text_embeddings"]["models"] == []


def test_all_with_older_than_is_a_usage_error(cli, cache: Path) -> None:
    before = snapshot(cache)
    result = cli("cache", "clean", "--all", "--older-than", "3")
    assert result.exit_code == 2
    assert result.stderr == "error: --all removes everything; leave out --older-than\n"
    assert snapshot(cache) == before


def test_an_export_being_written_is_skipped_with_a_warning(cli, made: Made, cache: Path) -> None:
    busy = export_of(made.random)
    with locks.exclusive(busy.lock_file, wait=True):  # as another process exporting holds it
        listed = by_path(cli.json("cache")[1]["exports"])
        assert listed[str(busy.path)]["busy"] is True
        result = cli("cache", "clean", "--all")
        result_json = cli.json("cache", "clean", "--all")[1]
    assert result.exit_code == 0
    assert result.stderr == f"warning: kept {busy.path}: another clipcli is exporting to it\n"
    assert busy.path.is_dir() and files_size(busy.path) > 0
    assert not export_of(made.shapes).path.exists()
    assert result_json["skipped"] == [
        {"path": str(busy.path), "reason": "another clipcli is exporting to it"}
    ]


def test_no_index_file_is_touched(cli, made: Made, cache: Path) -> None:
    index_registry.register(made.shapes_index)
    index_registry.register(made.random_index)
    before = [snapshot(made.shapes_index), snapshot(made.random_index)]
    assert before[0] and before[1]
    for args in (["cache"], ["cache", "clean"], ["cache", "clean", "--older-than", "0"]):
        assert cli(*args).exit_code == 0
    assert cli("cache", "clean", "--all").exit_code == 0
    assert [snapshot(made.shapes_index), snapshot(made.random_index)] == before


def test_an_index_is_still_searched_after_every_export_is_removed(
    cli, made: Made, cache: Path
) -> None:
    assert cli("cache", "clean", "--all").exit_code == 0
    result = cli("search", "a blue circle", "--index", made.shapes_index, "--json")
    assert result.exit_code == 0, result.stderr
    assert len(json.loads(result.stdout)) == 2  # searched through the loaded model instead
    assert export_of(made.shapes).read_meta()["text_ok"] is True  # and exported again


# -- the size cap ------------------------------------------------------------------------------


def test_a_new_export_over_the_cap_evicts_the_least_recently_used(
    own_cache_only, monkeypatch
) -> None:
    oldest = fake_export("oldest", 100_000, days=30)
    older = fake_export("older", 100_000, days=5)
    recent = fake_export("recent", 100_000, days=1)
    monkeypatch.setenv("CLIPCLI_CACHE_LIMIT", "250kB")
    new = fake_export("new", 100_000, days=0)
    assert [f.path.exists() for f in (oldest, older, recent, new)] == [False, False, True, True]


def test_the_cap_spares_indexed_exports_while_others_can_go(
    cli, made: Made, cache: Path, monkeypatch
) -> None:
    index_registry.register(made.shapes_index)
    indexed = export_of(made.shapes).path
    age(indexed, 30)  # the least recently used of all, but an index needs it
    unused = fake_export("unused", 1000, days=1)
    monkeypatch.setenv("CLIPCLI_CACHE_LIMIT", f"{files_size(indexed) + 2000}B")
    new = fake_export("new", 1000, days=0)
    assert indexed.is_dir() and new.path.is_dir()
    assert not unused.path.exists()
    assert not export_of(made.random).path.exists()  # not indexed: went first


def test_the_cap_evicts_an_indexed_export_when_nothing_else_can_meet_it(
    cli, made: Made, cache: Path, monkeypatch
) -> None:
    index_registry.register(made.shapes_index)
    index_registry.register(made.random_index)
    before = snapshot(made.shapes_index)
    age(export_of(made.shapes).path, 2)
    age(export_of(made.random).path, 1)
    room = files_size(export_of(made.random).path) + 5000
    monkeypatch.setenv("CLIPCLI_CACHE_LIMIT", f"{room}B")
    new = fake_export("new", 1000, days=0)
    assert not export_of(made.shapes).path.exists()  # least recently used of the two
    assert export_of(made.random).path.is_dir() and new.path.is_dir()
    assert snapshot(made.shapes_index) == before


def test_the_cap_never_evicts_a_busy_export_nor_the_one_just_written(
    own_cache_only, monkeypatch
) -> None:
    busy = fake_export("busy", 10_000, days=30)
    older = fake_export("older", 10_000, days=20)
    monkeypatch.setenv("CLIPCLI_CACHE_LIMIT", "1B")
    with locks.exclusive(busy.lock_file, wait=True):
        new = fake_export("new", 10_000, days=0)
    assert busy.path.is_dir() and new.path.is_dir()
    assert not older.path.exists()


def test_an_export_that_writes_nothing_new_evicts_nothing(own_cache_only, monkeypatch) -> None:
    other = fake_export("other", 10_000, days=30)
    again = fake_export("again", 10_000, days=0)
    monkeypatch.setenv("CLIPCLI_CACHE_LIMIT", "1B")
    with again.writing():  # a run that finds its export done
        pass
    assert other.path.is_dir()


def test_a_used_stamp_counts_as_use_for_the_cap(own_cache_only, monkeypatch) -> None:
    first = fake_export("first", 10_000, days=10)
    second = fake_export("second", 10_000, days=5)
    first.tower("image-fp32")  # opened by a run today: the stamp is touched
    assert (first.path / USED_STAMP).is_file()
    monkeypatch.setenv("CLIPCLI_CACHE_LIMIT", "25kB")
    fake_export("new", 10_000, days=0)
    assert first.path.is_dir() and not second.path.exists()


def test_a_limit_that_is_not_a_size_stops_an_export_before_it_starts(
    own_cache_only, monkeypatch
) -> None:
    monkeypatch.setenv("CLIPCLI_CACHE_LIMIT", "lots")
    folder = ExportFolder.for_spec(ModelSpec("some-model", "a-tag"))
    with pytest.raises(UsageError, match="CLIPCLI_CACHE_LIMIT=lots: not a size"):
        folder.writing().__enter__()
    assert not folder.path.exists()


@pytest.fixture
def own_cache_only(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("CLIPCLI_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_eval_embeddings_go_with_their_dataset_and_everything_goes_with_all(
    cli, tmp_path, monkeypatch
):
    from clipcli.media.thumbnails import thumbnail_jpeg
    from clipcli.store import eval_cache

    monkeypatch.setenv("CLIPCLI_CACHE", str(tmp_path / "own-cache"))
    kept, gone = tmp_path / "kept", tmp_path / "gone"
    for root in (kept, gone):
        make_image(root / "red" / "a.png", "red")
        make_image(root / "blue" / "b.png", "blue")
        assert cli("eval", root, "--model", "clipcli-shapes", "--json").exit_code == 0
    thumbnail_jpeg(kept / "red" / "a.png")
    _, listed = cli.json("cache")
    assert listed["eval_embeddings"]["datasets"] == sorted([str(kept), str(gone)])
    assert listed["eval_embeddings"]["bytes"] > 0 and listed["thumbnails"]["bytes"] > 0
    shutil.rmtree(gone)

    _, cleaned = cli.json("cache", "clean")
    assert cleaned["eval_embeddings"]["datasets"] == [str(gone)]
    assert [eval_cache.read_state(f)["dataset"] for f in eval_cache.eval_folders()] == [str(kept)]

    note = eval_cache.eval_folders()[0] / eval_cache.STATE_FILE
    _, recent = cli.json("cache", "clean", "--older-than", "2")
    assert recent["eval_embeddings"]["datasets"] == []  # evaluated just now
    os.utime(note, (time.time() - 3 * 86400,) * 2)
    cli("eval", kept, "--model", "clipcli-shapes", "--json")  # used again
    _, used = cli.json("cache", "clean", "--older-than", "2")
    assert used["eval_embeddings"]["datasets"] == []
    os.utime(note, (time.time() - 3 * 86400,) * 2)
    _, stale = cli.json("cache", "clean", "--older-than", "2")
    assert stale["eval_embeddings"]["datasets"] == [str(kept)]
    assert cli("eval", kept, "--model", "clipcli-shapes", "--json").exit_code == 0

    _, everything = cli.json("cache", "clean", "--all")
    assert everything["eval_embeddings"]["datasets"] == [str(kept)]
    assert everything["thumbnails"]["bytes"] > 0
    assert eval_cache.eval_folders() == []
    _, after = cli.json("cache")
    assert after["eval_embeddings"] == {"bytes": 0, "datasets": []}
    assert after["thumbnails"] == {"bytes": 0}
