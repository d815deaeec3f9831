"""Template sets, label parsing and the on-disk label embedding cache."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TEST_MODEL

from clipcli.encoders.choose import load_encoder
from clipcli.errors import UsageError
from clipcli.models.names import ModelSpec
from clipcli.store.text_cache import TextEmbeddingCache
from clipcli.zeroshot.labels import label_embeddings, parse_labels
from clipcli.zeroshot.templates import TemplateSet, load_templates, template_names


@pytest.fixture(scope="module")
def encoder(random_checkpoint):
    return load_encoder(ModelSpec(TEST_MODEL, str(random_checkpoint)), "cpu")


def test_default_and_imagenet_sets_ship_with_clipcli():
    assert {"default", "imagenet"} <= set(template_names())
    assert load_templates("default").templates == ("a photo of a {}.",)


def test_template_file_ignores_comments_and_blank_lines(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("# heading\n\n  a {} at night  \n# another\nan origami {}.\n")
    assert load_templates(str(path)).templates == ("a {} at night", "an origami {}.")


def test_empty_template_file_is_refused(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("# nothing here\n")
    with pytest.raises(UsageError, match="no templates"):
        load_templates(str(path))


def test_a_byte_order_mark_in_a_template_file_is_not_part_of_it(tmp_path):
    path = tmp_path / "notepad.txt"
    path.write_text("# saved by an editor that starts files with a BOM\na photo of a {}.\n")
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert load_templates(str(path)).templates == ("a photo of a {}.",)


def test_a_byte_order_mark_in_a_labels_file_is_not_part_of_the_first_label(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_bytes("\ufeffcat\ndog\n".encode())
    assert parse_labels(None, path) == ["cat", "dog"]


def test_labels_are_trimmed_and_deduplicated_in_order():
    assert parse_labels(" cat , dog,cat,,bird ", None) == ["cat", "dog", "bird"]


def test_a_backslash_before_a_comma_keeps_it_in_the_label():
    assert parse_labels(r"a cat\, sleeping,a dog\,,bird", None) == [
        "a cat, sleeping",
        "a dog,",
        "bird",
    ]


def test_label_embedding_is_the_renormalised_mean_over_templates(encoder):
    templates = TemplateSet("two", ("a photo of a {}.", "a drawing of a {}."))
    got = label_embeddings(encoder, ["cat"], templates)[0]
    each = encoder.encode_texts(["a photo of a cat.", "a drawing of a cat."])
    mean = each.mean(axis=0)
    np.testing.assert_allclose(got, mean / np.linalg.norm(mean), atol=1e-6)
    assert np.linalg.norm(got) == pytest.approx(1.0, abs=1e-5)


def test_cached_labels_skip_the_text_encoder(encoder, tmp_path, monkeypatch):
    cache = TextEmbeddingCache(tmp_path / "cache.sqlite3")
    templates = load_templates("imagenet")
    first = label_embeddings(encoder, ["cat", "dog"], templates, cache)

    calls = []
    original = encoder.encode_texts
    monkeypatch.setattr(
        encoder, "encode_texts", lambda texts: calls.append(texts) or original(texts)
    )
    again = label_embeddings(encoder, ["dog", "cat"], templates, cache)
    assert calls == []
    np.testing.assert_array_equal(again, first[::-1])

    label_embeddings(encoder, ["cat", "bird"], templates, cache)
    assert [len(texts) for texts in calls] == [80]  # only "bird" was encoded


def test_cache_is_keyed_by_template_content(encoder, tmp_path):
    cache = TextEmbeddingCache(tmp_path / "cache.sqlite3")
    a = label_embeddings(encoder, ["cat"], TemplateSet("x", ("a photo of a {}.",)), cache)
    b = label_embeddings(encoder, ["cat"], TemplateSet("x", ("a sketch of a {}.",)), cache)
    assert not np.allclose(a, b)


def test_cache_is_keyed_by_the_weights_not_by_where_their_file_lies(tmp_path, random_checkpoint):
    import os
    import shutil

    import open_clip
    import torch

    other = tmp_path / "other.pt"
    shutil.copy(random_checkpoint, other)
    first = ModelSpec(TEST_MODEL, str(random_checkpoint)).fingerprint
    assert ModelSpec(TEST_MODEL, str(other)).fingerprint == first  # the same weights elsewhere
    os.utime(other, ns=(1, 1))  # touched, not changed
    assert ModelSpec(TEST_MODEL, str(other)).fingerprint == first

    torch.manual_seed(1)
    torch.save(open_clip.create_model(TEST_MODEL).state_dict(), other)
    before = ModelSpec(TEST_MODEL, str(other)).fingerprint
    assert before != first
    torch.manual_seed(2)
    torch.save(open_clip.create_model(TEST_MODEL).state_dict(), other)
    assert ModelSpec(TEST_MODEL, str(other)).fingerprint != before


class CountingProgress:
    def __init__(self) -> None:
        self.phases: dict[str, list[int]] = {}

    def phase(self, description: str, total: int) -> None:
        self.phases[description] = [total, 0]
        self._current = description

    def advance(self, count: int) -> None:
        self.phases[self._current][1] += count


def test_an_interrupted_label_run_keeps_the_labels_it_finished(encoder, tmp_path, monkeypatch):
    cache = TextEmbeddingCache(tmp_path / "cache.sqlite3")
    templates = load_templates("imagenet")  # 80 templates: three labels per forward pass
    labels = [f"thing {i}" for i in range(7)]
    original = encoder.encode_texts
    calls = []

    def fails_on_the_third_pass(texts):
        calls.append(texts)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(texts)

    monkeypatch.setattr(encoder, "encode_texts", fails_on_the_third_pass)
    progress = CountingProgress()
    with pytest.raises(KeyboardInterrupt):
        label_embeddings(encoder, labels, templates, cache, progress)
    assert progress.phases["Embedding labels"] == [7, 6]
    assert sorted(cache.get(encoder.spec.fingerprint, templates.digest, labels)) == labels[:6]


def test_a_text_cache_made_before_its_schema_was_numbered_is_adopted_with_its_rows(tmp_path):
    import sqlite3

    from clipcli.store.text_cache import SCHEMA_VERSION, TextEmbeddingCache

    path = tmp_path / "text.sqlite3"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE label_embeddings (model TEXT NOT NULL, templates TEXT NOT NULL, label TEXT"
        " NOT NULL, embedding BLOB NOT NULL, PRIMARY KEY (model, templates, label))"
    )
    db.execute("INSERT INTO label_embeddings VALUES ('m', 't', 'cat', ?)", (b"\0\0\x80?",))
    db.commit()
    db.close()

    with TextEmbeddingCache(path) as cache:
        assert cache.get("m", "t", ["cat"])["cat"].tolist() == [1.0]

    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()


def test_a_text_cache_of_a_newer_schema_is_left_unread_and_unchanged(tmp_path):
    import sqlite3

    import numpy as np

    from clipcli.store.text_cache import SCHEMA_VERSION, TextEmbeddingCache

    path = tmp_path / "text.sqlite3"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE other (x)")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    before = path.read_bytes()

    with TextEmbeddingCache(path) as cache:
        assert cache.missing("m", "t", ["cat"]) == ["cat"]
        cache.put("m", "t", {"cat": np.ones(2, dtype=np.float32)})  # kept for this run only
        assert cache.missing("m", "t", ["cat"]) == []

    assert path.read_bytes() == before
