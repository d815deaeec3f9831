"""`clipcli index --layout ivfpq`: an index on disk, remembered for the index folder, searched
memory-mapped with `clipcli search` (filters and --rerank included)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clipcli.shapes import write_sample_folder


@pytest.fixture
def photos(tmp_path) -> Path:
    root = tmp_path / "photos"
    write_sample_folder(root / "first", 24, seed=3)
    write_sample_folder(root / "second", 24, seed=4)
    return root


@pytest.fixture
def on_disk(cli, model_args, photos, index) -> Path:
    result = cli("index", photos, "--index", index, *model_args, "--layout", "ivfpq")
    assert result.exit_code == 0, result.stderr
    return index


def layout_of(index: Path) -> str:
    return json.loads((index / "vectors.json").read_text()).get("layout", "in memory")


def found(cli, index: Path, *args: str | Path) -> list[dict]:
    result, hits = cli.json("search", "--index", index, *args)
    assert result.exit_code == 0, result.stderr
    return hits


def test_an_on_disk_index_answers_searches(cli, on_disk, photos):
    assert layout_of(on_disk) == "ivfpq" and len(list(on_disk.glob("*.ivfdata"))) == 1
    target = next((photos / "second").iterdir())
    hits = found(cli, on_disk, "--image", target, "--top-k", "5")
    assert hits[0]["path"] == str(target)
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-4)  # re-ranked on the exact vector
    assert len(found(cli, on_disk, "a red star", "--top-k", "100")) == 48


def test_info_names_the_on_disk_layout_and_counts_its_lists(cli, on_disk):
    result, info = cli.json("info", "--index", on_disk)
    assert result.exit_code == 0, result.stderr
    (lists,) = on_disk.glob("*.ivfdata")
    assert info["layout"] == "IVF on disk"
    assert info["faiss_bytes"] > lists.stat().st_size + (on_disk / "vectors.faiss").stat().st_size


def test_the_layout_is_remembered_by_a_later_index_run(cli, model_args, on_disk, photos):
    write_sample_folder(photos / "third", 6, seed=5)
    result, report = cli.json("index", photos, "--index", on_disk, *model_args)
    assert result.exit_code == 0, result.stderr
    assert report["added"] == 6 and layout_of(on_disk) == "ivfpq"
    new = next((photos / "third").iterdir())
    assert found(cli, on_disk, "--image", new, "--top-k", "1")[0]["path"] == str(new)


def test_filters_still_keep_only_the_photos_they_name(cli, on_disk, photos):
    first = photos / "first"
    hits = found(cli, on_disk, "a blue circle", "--under", first, "--top-k", "30")
    assert len(hits) == 24 and all(Path(hit["path"]).parent == first for hit in hits)


def test_rerank_zero_ranks_by_the_codes_alone(cli, on_disk, photos):
    target = next((photos / "first").iterdir())
    coded = found(cli, on_disk, "--image", target, "--top-k", "3", "--rerank", "0")
    assert len(coded) == 3 and coded[0]["score"] != pytest.approx(1.0, abs=1e-6)
    result = cli("search", "--image", target, "--index", on_disk, "--rerank", "-1")
    assert result.exit_code == 2


def test_an_index_can_go_back_to_the_memory_layouts(cli, model_args, on_disk, photos):
    result = cli("index", photos, "--index", on_disk, *model_args, "--layout", "auto")
    assert result.exit_code == 0, result.stderr
    assert layout_of(on_disk) == "in memory" and not list(on_disk.glob("*.ivfdata"))
    assert len(found(cli, on_disk, "a green ring", "--top-k", "3")) == 3


def test_an_index_changes_layout_without_its_folders_named_and_embeds_nothing(
    cli, model_args, photos, index
):
    result = cli("index", photos, "--index", index, *model_args)
    assert result.exit_code == 0, result.stderr
    assert layout_of(index) == "in memory"
    result, report = cli.json("index", "--index", index, "--layout", "ivfpq")
    assert result.exit_code == 0, result.stderr
    assert (report["added"], report["total"]) == (0, 48) and layout_of(index) == "ivfpq"
    target = next((photos / "first").iterdir())
    assert found(cli, index, "--image", target, "--top-k", "1")[0]["path"] == str(target)


def test_a_layout_change_that_fails_leaves_the_index_as_it_was(
    cli, model_args, photos, index, monkeypatch
):
    from conftest import snapshot

    from clipcli.store import ondisk_ivfpq

    result = cli("index", photos, "--index", index, *model_args)
    assert result.exit_code == 0, result.stderr
    before = snapshot(index)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device", str(index / "vectors.faiss"))

    monkeypatch.setattr(ondisk_ivfpq, "build", full_disk)
    result = cli("index", "--index", index, "--layout", "ivfpq")
    assert result.exit_code == 1
    assert "vectors.faiss: no space left on device" in result.stderr
    assert "Traceback" not in result.stderr
    assert snapshot(index) == before  # the layout it had recorded too: the next run is as before


def test_a_layout_for_an_index_that_is_not_there_is_refused(cli, tmp_path):
    result = cli("index", "--index", tmp_path / "nowhere", "--layout", "ivfpq")
    assert result.exit_code == 1 and "no index here" in result.stderr
    assert not (tmp_path / "nowhere").exists()


def test_auto_goes_on_disk_when_the_vectors_would_not_fit(
    cli, model_args, photos, index, monkeypatch
):
    monkeypatch.setenv("CLIPCLI_RAM_BYTES", str(100 * 64 * 4))  # a quarter holds 25 vectors
    result = cli("index", photos, "--index", index, *model_args)
    assert result.exit_code == 0, result.stderr
    assert layout_of(index) == "ivfpq"


def test_an_unknown_layout_is_a_usage_error(cli, model_args, photos, index):
    result = cli("index", photos, "--index", index, *model_args, "--layout", "hnsw")
    assert result.exit_code == 2 and "unknown layout 'hnsw'" in result.stderr
    assert not index.exists()
