"""`clipcli search`: by text, by example image, or both, with the index's own model."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from conftest import as_of_the_previous_schema, snapshot

from clipcli.store.catalog import CATALOG_FILE


@pytest.fixture
def indexed(cli, model_args, photo_folder, tmp_path):
    index = tmp_path / "index"
    result = cli("index", photo_folder, "--index", index, *model_args)
    assert result.exit_code == 0, result.stderr
    return index


def test_json_lists_ranked_hits_with_cosine_scores(cli, indexed):
    result, hits = cli.json("search", "a red square", "--index", indexed, "--top-k", "3")
    assert result.exit_code == 0, result.stderr
    assert [set(h) for h in hits] == [{"rank", "path", "score"}] * 3
    assert [h["rank"] for h in hits] == [1, 2, 3]
    assert all(-1.0 <= h["score"] <= 1.0 for h in hits)


def test_top_k_larger_than_the_index_returns_every_photo_once(cli, indexed, photo_folder):
    _, hits = cli.json("search", "anything", "--index", indexed, "--top-k", "50")
    assert sorted(h["path"] for h in hits) == sorted(
        str(p) for p in photo_folder.rglob("*") if p.is_file()
    )


def test_an_indexed_image_finds_itself_first(cli, indexed, photo_folder):
    target = photo_folder / "nested" / "white.webp"
    result, hits = cli.json("search", "--image", target, "--index", indexed)
    assert result.exit_code == 0, result.stderr
    assert hits[0]["path"] == str(target)
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-4)


def test_text_and_image_together_mix_both_queries(cli, indexed, photo_folder):
    target = photo_folder / "blue.png"
    _, by_image = cli.json("search", "--image", target, "--index", indexed, "--top-k", "5")
    _, by_text = cli.json("search", "a kitten", "--index", indexed, "--top-k", "5")
    _, both = cli.json("search", "a kitten", "--image", target, "--index", indexed, "--top-k", "5")
    image_scores = {h["path"]: h["score"] for h in by_image}
    text_scores = {h["path"]: h["score"] for h in by_text}
    # The mixed query is (text + image) / |text + image|: every score is the sum of the two
    # single-query scores divided by one and the same norm.
    norms = [(text_scores[h["path"]] + image_scores[h["path"]]) / h["score"] for h in both]
    assert max(norms) - min(norms) < 1e-3
    assert 0.0 < norms[0] <= 2.0 + 1e-6


def test_search_uses_the_index_model_from_the_environment_index(cli, indexed, monkeypatch):
    monkeypatch.setenv("CLIPCLI_INDEX", str(indexed))
    result, hits = cli.json("search", "a horse", "--top-k", "2")
    assert result.exit_code == 0, result.stderr
    assert len(hits) == 2


def test_a_bad_example_image_is_named(cli, indexed, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"")
    result = cli("search", "--image", bad, "--index", indexed)
    assert result.exit_code == 1
    assert f"{bad}: empty file (0 bytes)" in result.stderr


def test_nothing_to_search_for_is_a_usage_error(cli, indexed):
    result = cli("search", "--index", indexed)
    assert result.exit_code == 2
    assert "nothing to search for" in result.stderr


def test_table_output_shows_paths(cli, indexed, photo_folder):
    result = cli("search", "a green circle", "--index", indexed, "--top-k", "5")
    assert result.exit_code == 0
    assert "red.png" in result.stdout and "green.jpg" in result.stdout


def test_missing_index_points_to_clipcli_index(cli, tmp_path):
    result = cli("search", "a horse", "--index", tmp_path / "nowhere")
    assert result.exit_code == 1
    assert "clipcli index" in result.stderr


def test_a_repeated_query_is_served_from_the_cache(cli, indexed, monkeypatch):
    from clipcli.encoders import choose, text_tower

    _, first = cli.json("search", "a purple kite", "--index", indexed, "--top-k", "3")

    def no_encoder(*args, **kwargs):
        raise AssertionError("the text encoder ran for a cached query")

    monkeypatch.setattr(text_tower, "fast_text_encoder", no_encoder)
    monkeypatch.setattr(choose, "load_encoder", no_encoder)
    result, again = cli.json("search", "a purple kite", "--index", indexed, "--top-k", "3")
    assert result.exit_code == 0, result.stderr
    assert again == first


def test_a_mixed_query_loads_the_model_at_most_once(cli, indexed, photo_folder, monkeypatch):
    from clipcli.encoders import choose, onnx_image, text_tower

    loads = []
    real = choose._select_backend  # every model load ends here, whoever asked for it
    monkeypatch.setattr(text_tower, "fast_text_encoder", lambda spec: None)  # text needs it
    monkeypatch.setattr(onnx_image, "ready_export", lambda *a: None)  # image too
    monkeypatch.setattr(choose, "_select_backend", lambda *a: loads.append(a) or real(*a))
    target = photo_folder / "red.png"
    result = cli("search", "a new kind of query", "--image", target, "--index", indexed)
    assert result.exit_code == 0, result.stderr
    assert len(loads) == 1


def test_photos_deleted_since_indexing_are_left_out_counted_and_replaced_by_the_next(
    cli, indexed, photo_folder
):
    _, every = cli.json("search", "a red square", "--index", indexed, "--top-k", "5")
    gone = [every[0]["path"], every[2]["path"]]
    for path in gone:
        Path(path).unlink()

    result, hits = cli.json("search", "a red square", "--index", indexed, "--top-k", "3")

    assert result.exit_code == 0
    assert [set(h) for h in hits] == [{"rank", "path", "score"}] * 3
    assert [h["rank"] for h in hits] == [1, 2, 3]
    kept = [h for h in every if h["path"] not in gone]
    assert [(h["path"], h["score"]) for h in hits] == [(h["path"], h["score"]) for h in kept]
    assert result.stderr.strip() == (
        "warning: 2 indexed photos no longer exist; run `clipcli index` to drop them"
    )
    table = cli("search", "a red square", "--index", indexed, "--top-k", "1")
    assert table.stderr.strip() == (
        "warning: 1 indexed photo no longer exists; run `clipcli index` to drop it"
    )


def test_the_next_index_run_drops_the_deleted_photos_and_search_stops_warning(
    cli, indexed, photo_folder
):
    (photo_folder / "red.png").unlink()
    assert "no longer exist" in cli("search", "red", "--index", indexed).stderr

    result, report = cli.json("index", photo_folder, "--index", indexed)
    assert (result.exit_code, report["removed"], report["total"]) == (0, 1, 4)

    result, hits = cli.json("search", "red", "--index", indexed)
    assert result.exit_code == 0 and result.stderr == ""
    assert len(hits) == 4 and str(photo_folder / "red.png") not in [h["path"] for h in hits]


def test_a_top_k_far_beyond_the_index_returns_every_photo(cli, indexed):
    result, hits = cli.json("search", "anything", "--index", indexed, "--top-k", str(10**12))
    assert result.exit_code == 0, result.stderr
    assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5]


def test_copies_of_one_photo_rank_in_the_same_order_whatever_the_top_k(
    cli, model_args, photo_folder, tmp_path
):
    original = photo_folder / "green.jpg"
    for name in ("copy-b.jpg", "copy-a.jpg", "nested/copy-c.jpg", "nested/copy-d.jpg"):
        shutil.copy(original, photo_folder / name)
    index = tmp_path / "index"
    assert cli("index", photo_folder, "--index", index, *model_args).exit_code == 0

    found = {}
    for k in range(1, 10):
        result, hits = cli.json("search", "--image", original, "--index", index, "--top-k", k)
        assert result.exit_code == 0, result.stderr
        found[k] = [hit["path"] for hit in hits]

    assert len(found[9]) == 9
    for k in range(1, 9):
        assert found[k] == found[9][:k], k
    assert sorted(found[9][:5]) == sorted(
        str(p) for p in photo_folder.rglob("*.jpg") if p.read_bytes() == original.read_bytes()
    )


def test_a_search_on_an_empty_catalog_file_says_the_index_is_empty_and_leaves_the_file(
    cli, tmp_path
):
    index = tmp_path / "index"
    index.mkdir()
    (index / CATALOG_FILE).write_bytes(b"")

    result = cli("search", "a red square", "--index", index)

    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {index}: the index is empty")
    assert snapshot(index) == {CATALOG_FILE: (0, hashlib.sha256(b"").hexdigest())}


def test_a_search_reads_a_catalog_of_an_older_schema_without_upgrading_it(cli, indexed):
    _, expected = cli.json("search", "a red square", "--index", indexed)
    as_of_the_previous_schema(indexed)
    before = snapshot(indexed)

    result, hits = cli.json("search", "a red square", "--index", indexed)

    assert result.exit_code == 0, result.stderr
    assert hits == expected
    assert snapshot(indexed) == before
