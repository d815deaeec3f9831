"""Properties of how labels, templates and queries are read, checked on generated input.

Each test states a rule that must hold for every input of a kind (any label text, any file
layout, any query), and Hypothesis looks for one that breaks it. The runs are derandomized, so
`make test` checks the same examples on every machine, and small enough to take a few seconds.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from conftest import Cli
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from clipcli.encoders.tokenizer import FastTokenizer
from clipcli.errors import IndexMissingError, UsageError
from clipcli.search import search_index
from clipcli.store.text_cache import TextEmbeddingCache
from clipcli.zeroshot.labels import label_embeddings, parse_labels
from clipcli.zeroshot.templates import TemplateSet, load_templates, template_names

# Reproducible: the same examples on every run and machine, and no example database written
# into the checkout. The autouse home fixture is shared by a test's examples, which is fine:
# nothing here writes to it.
PROPERTY = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
# Fewer examples where each one writes files: a few milliseconds each on a slow disk.
ON_DISK = settings(PROPERTY, max_examples=30)

# Characters that make label parsing interesting: the separator, the escape, the spaces that
# are trimmed, the comment mark of label files, and Rich markup that must stay literal.
TRICKY = ",\\ \t#[]/{}"
# Bytes that were not UTF-8, as Python hands them over from the command line (a Latin-1 "é").
UNDECODABLE = [chr(0xDC00 + byte) for byte in range(0x80, 0x100)]
# What str.splitlines() ends a line at: a label or template file cannot hold these in a line.
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
# Every character Python's str.strip() and str.isspace() take for white space.
WHITESPACE = "".join(chr(c) for c in range(0x110000) if chr(c).isspace())


def argument_text(min_size: int = 0, max_size: int = 20) -> st.SearchStrategy[str]:
    """Text as a shell can pass it in one argument: any character, often one of TRICKY, and
    now and then a byte that is not UTF-8."""
    return characters_of(
        st.one_of(st.sampled_from(TRICKY), st.characters(), st.sampled_from(UNDECODABLE)),
        min_size,
        max_size,
    )


def characters_of(
    alphabet: st.SearchStrategy[str], min_size: int = 0, max_size: int = 20
) -> st.SearchStrategy[str]:
    """Strings of characters drawn from `alphabet`. Unlike st.text(), which merges the
    characters of an alphabet into one set, this keeps the weights of a one_of() and the lone
    surrogates that stand for undecodable bytes."""
    return st.lists(alphabet, min_size=min_size, max_size=max_size).map("".join)


def file_text(max_size: int = 20) -> st.SearchStrategy[str]:
    """Text that a UTF-8 file can hold within one line."""
    return characters_of(
        st.one_of(
            st.sampled_from(TRICKY),
            # A leading U+FEFF is the byte-order mark, which is not part of the file's text.
            st.characters(codec="utf-8", exclude_characters=LINE_BREAKS + "\ufeff"),
        ),
        max_size=max_size,
    )


def escape(label: str) -> str:
    """A label as the README says to write it in --labels: each comma as `\\,`."""
    return label.replace(",", "\\,")


def in_order_once(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def labels_as_parsed(text: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Labels that parsing keeps as they are: trimmed and not empty."""
    return text.map(str.strip).filter(bool)


@contextmanager
def written(data: bytes, name: str = "file.txt") -> Iterator[Path]:
    """`data` in a file of its own, removed afterwards (each example gets a fresh one)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        yield path


def file_bytes(lines: list[str], *, bom: bool, crlf: bool, final_newline: bool) -> bytes:
    """Lines as an editor may save them: with or without a byte-order mark, with Windows or
    Unix line ends, with or without a line end after the last line."""
    end = "\r\n" if crlf else "\n"
    text = end.join(lines) + (end if final_newline and lines else "")
    return (b"\xef\xbb\xbf" if bom else b"") + text.encode()


# -- labels ----------------------------------------------------------------------------------


@PROPERTY
@given(
    st.lists(
        labels_as_parsed(argument_text()).filter(lambda label: not label.endswith("\\")),
        min_size=1,
        max_size=5,
    )
)
def test_escaped_labels_joined_by_commas_parse_back_to_themselves(labels: list[str]) -> None:
    """Whatever a label holds (commas, backslashes, markup, any script, bytes that are not
    UTF-8), escaping its commas and joining the labels with commas gives them back, in order
    and each once. This is the promise of `\\,` in the README."""
    assert parse_labels(",".join(escape(label) for label in labels), None) == in_order_once(labels)


@PROPERTY
@given(st.lists(labels_as_parsed(argument_text()), min_size=1, max_size=5))
def test_a_label_ending_in_a_backslash_needs_a_space_before_the_next_comma(
    labels: list[str],
) -> None:
    """`\\,` always means a comma inside a label, so a label that ends in a backslash cannot
    be followed straight by the separating comma; a space between them is trimmed away. With
    that space any list of labels can be written."""
    assert parse_labels(" ,".join(escape(label) for label in labels), None) == in_order_once(labels)


@PROPERTY
@given(argument_text(max_size=40))
def test_any_labels_argument_gives_trimmed_distinct_labels_or_a_usage_error(text: str) -> None:
    """Any --labels value is refused as giving no labels (a usage error, exit 2) exactly when
    it holds nothing but commas and white space; any other gives labels that are trimmed, not
    empty and distinct, and that read back the same when written out again (nothing is merged
    or split on the way)."""
    only_separators = set(text) <= set(WHITESPACE + ",")
    try:
        labels = parse_labels(text, None)
    except UsageError as refused:
        assert refused.message == "no labels given"
        assert only_separators
        return
    assert not only_separators
    assert all(label and label == label.strip() for label in labels)
    assert len(set(labels)) == len(labels)
    assert parse_labels(" ,".join(escape(label) for label in labels), None) == labels


@ON_DISK
@given(
    labels=st.lists(
        labels_as_parsed(file_text()).filter(lambda label: not label.startswith("#")),
        min_size=1,
        max_size=5,
    ),
    bom=st.booleans(),
    crlf=st.booleans(),
    final_newline=st.booleans(),
)
def test_a_labels_file_gives_the_same_labels_however_an_editor_saved_it(
    labels: list[str], bom: bool, crlf: bool, final_newline: bool
) -> None:
    """One label per line, commas and backslashes included literally; the byte-order mark of
    Windows editors, CRLF line ends, blank lines, `#` comments and a missing last line end
    change nothing."""
    lines = ["# my labels", *labels[:1], "", "   ", "  # an indented comment", *labels[1:]]
    with written(file_bytes(lines, bom=bom, crlf=crlf, final_newline=final_newline)) as path:
        assert parse_labels(None, path) == in_order_once(labels)


@ON_DISK
@given(
    given_labels=st.lists(
        labels_as_parsed(file_text()).filter(lambda label: not label.endswith("\\")),
        max_size=4,
    ),
    file_labels=st.lists(
        labels_as_parsed(file_text()).filter(lambda label: not label.startswith("#")),
        max_size=4,
    ),
)
def test_labels_and_a_labels_file_together_give_both_in_order_each_once(
    given_labels: list[str], file_labels: list[str]
) -> None:
    """--labels and --labels-file may be given together: the labels of the argument come
    first, then those of the file, and a label in both counts once."""
    argument = ",".join(escape(label) for label in given_labels)
    with written("\n".join(file_labels).encode()) as path:
        expected = in_order_once(given_labels + file_labels)
        if not expected:
            with pytest.raises(UsageError, match="no labels given"):
                parse_labels(argument, path)
        else:
            assert parse_labels(argument, path) == expected


# -- the embedding cache ---------------------------------------------------------------------


class HashingEncoder:
    """A text side that gives each text a unit vector of its own, without a model, and counts
    the texts it was asked for."""

    spec = SimpleNamespace(fingerprint="hashing")

    def __init__(self) -> None:
        self.encoded = 0

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        self.encoded += len(texts)
        vectors = [
            np.random.default_rng(list(text.encode("utf-8", "surrogatepass"))).normal(size=8)
            for text in texts
        ]
        return np.stack([v / np.linalg.norm(v) for v in vectors]).astype(np.float32)


@ON_DISK
@given(st.lists(argument_text(), min_size=1, max_size=5, unique=True))
@example([os.fsdecode(b"caf\xe9"), "café"])  # --labels typed in a Latin-1 terminal
def test_any_label_or_query_text_is_kept_by_the_embedding_cache(texts: list[str]) -> None:
    """Labels and queries come from the command line as typed, bytes that are not UTF-8
    included (a terminal in Latin-1); the cache keeps each one's embedding under that exact
    text, so a second run embeds nothing and no two texts share an embedding."""
    encoder = HashingEncoder()
    templates = TemplateSet("t", ("a photo of a {}.",))
    with tempfile.TemporaryDirectory() as folder:
        cache = TextEmbeddingCache(Path(folder) / "cache.sqlite3")
        try:
            first = label_embeddings(encoder, texts, templates, cache)
            assert encoder.encoded == len(texts)
            assert cache.missing(encoder.spec.fingerprint, templates.digest, texts) == []
            again = label_embeddings(encoder, texts[::-1], templates, cache)
            assert encoder.encoded == len(texts)
        finally:
            cache.close()
    np.testing.assert_array_equal(again, first[::-1])
    expected = np.stack([encoder.encode_texts([f"a photo of a {t}."])[0] for t in texts])
    np.testing.assert_allclose(first, expected, atol=1e-6)


# -- templates -------------------------------------------------------------------------------


def templates_as_parsed() -> st.SearchStrategy[str]:
    """Template lines that a file keeps as they are: one `{}`, trimmed, not a comment."""
    side = file_text(max_size=20).filter(lambda text: "{" not in text and "}" not in text)
    return (
        st.tuples(side, side)
        .map(lambda parts: f"{parts[0]}{{}}{parts[1]}".strip())
        .filter(lambda template: not template.startswith("#"))
    )


@ON_DISK
@given(
    templates=st.lists(templates_as_parsed(), min_size=1, max_size=5),
    bom=st.booleans(),
    crlf=st.booleans(),
    final_newline=st.booleans(),
)
def test_a_template_file_gives_the_same_templates_however_an_editor_saved_it(
    templates: list[str], bom: bool, crlf: bool, final_newline: bool
) -> None:
    """One template per line, in file order; a byte-order mark, CRLF line ends, blank lines,
    `#` comments and a missing last line end change nothing."""
    lines = ["# mine", "", *templates, "  ", "#  {} in a comment is not a template"]
    with written(file_bytes(lines, bom=bom, crlf=crlf, final_newline=final_newline)) as path:
        assert load_templates(str(path)).templates == tuple(templates)


@PROPERTY
@given(
    before=characters_of(st.one_of(st.sampled_from("{}"), st.characters()), max_size=15).filter(
        lambda text: "{}" not in text
    ),
    after=characters_of(st.one_of(st.sampled_from("{}"), st.characters()), max_size=15).filter(
        lambda text: "{}" not in text
    ),
    label=argument_text(),
)
def test_a_filled_template_holds_the_label_once_exactly_where_its_placeholder_was(
    before: str, after: str, label: str
) -> None:
    """Filling puts the label, as it is, in place of the one `{}` and changes nothing else,
    even when the label itself holds braces or `{}`, and whatever braces surround the
    placeholder ("{{}}")."""
    (filled,) = TemplateSet("t", (before + "{}" + after,)).fill(label)
    assert filled == before + label + after


@ON_DISK
@given(
    line=characters_of(
        st.one_of(st.sampled_from("{} "), st.characters(exclude_characters=LINE_BREAKS + "\ufeff"))
    )
    .map(str.strip)
    .filter(lambda line: line and not line.startswith("#") and line.count("{}") != 1),
    number=st.integers(min_value=0, max_value=3),
)
def test_a_template_line_without_exactly_one_placeholder_is_refused_naming_its_line(
    line: str, number: int
) -> None:
    """A template with no `{}` would give every label the same text, and one with two would
    repeat the label: either is a usage error that names the file and line."""
    lines = ["a photo of a {}."] * number + [line]
    with written("\n".join(lines).encode()) as path, pytest.raises(UsageError) as refused:
        load_templates(str(path))
    assert refused.value.message.startswith(f"{path}:{number + 1}: a template needs exactly one")


@ON_DISK
@given(
    st.one_of(
        st.sampled_from(template_names()),
        argument_text(),
        # Longer than a file system lets one name be (255 bytes), as a mistyped argument can be.
        st.text(min_size=256, max_size=300),
        st.lists(argument_text(max_size=8), min_size=2, max_size=4).map("/".join),
    )
)
def test_any_templates_argument_gives_a_template_set_or_a_usage_error(name: str) -> None:
    """Whatever --templates is given, it names a template set or file, or it is a usage error
    that says which argument is wrong; nothing the system says about the name (too long, not a
    folder) escapes as an exception of its own."""
    try:
        found = load_templates(name)
    except UsageError as refused:
        assert name in refused.message
        return
    assert found.templates
    assert all(template.count("{}") == 1 for template in found.templates)


# -- search queries --------------------------------------------------------------------------


@settings(PROPERTY, max_examples=25)  # each example runs the command as well
@given(query=st.text(st.sampled_from(WHITESPACE), max_size=10))
def test_a_query_of_only_white_space_is_nothing_to_search_for(query: str, tmp_path: Path) -> None:
    """Spaces, tabs, newlines and the other Unicode spaces say nothing: a usage error, found
    before anything is read from disk (the index need not exist), which the user sees as one
    line and exit code 2."""
    with pytest.raises(UsageError, match="nothing to search for"):
        search_index(tmp_path / "no-index", query)
    result = Cli()("search", "--index", tmp_path / "no-index", "--", query)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "error: nothing to search for; give a text query or --image PATH"
    ]


@PROPERTY
@given(
    query=st.tuples(
        st.text(st.sampled_from(WHITESPACE), max_size=3),
        argument_text(min_size=1).filter(lambda text: not text.isspace()),
        st.text(st.sampled_from(WHITESPACE), max_size=3),
    ).map("".join)
)
def test_a_query_with_anything_but_white_space_is_searched_for(query: str, tmp_path: Path) -> None:
    """Any query with one character that is not white space (punctuation, markup, a lone
    undecodable byte) is taken as a phrase with --literal: the search goes on to open the
    index, which here is missing. Read as terms, it is that too, or a usage error that quotes
    the query (an operator with no term after it)."""
    with pytest.raises(IndexMissingError):
        search_index(tmp_path / "no-index", query, literal=True)
    try:
        search_index(tmp_path / "no-index", query)
    except UsageError as refused:
        assert query.strip() in refused.message and "with no term after it" in refused.message
    except IndexMissingError:
        pass
    else:
        raise AssertionError("a search of a missing index must fail")


@PROPERTY
@given(
    terms=st.lists(
        st.tuples(
            st.sampled_from(["+", "-"]),
            st.sampled_from(["", "2*", "0.5 * "]),
            argument_text(min_size=1).filter(lambda text: text.strip() and not text[0].isspace()),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_terms_joined_by_spaced_operators_read_back_as_given(terms) -> None:
    """Phrases without a spaced operator inside, joined by ` + ` and ` - ` with optional
    weights, read back as those phrases, signs and weights."""
    from clipcli.query import parse_terms

    assume(all(not OPERATOR_INSIDE.search(f" {text} ") for _, _, text in terms))
    assume(all(not WEIGHT_LIKE.match(text) for _, _, text in terms))
    query = " ".join(f"{sign} {weight}{text}" for sign, weight, text in terms)
    parsed = parse_terms(query)
    assert [term.text for term in parsed] == [text.strip() for _, _, text in terms]
    weights = [{"": 1.0, "2*": 2.0, "0.5 * ": 0.5}[weight] for _, weight, _ in terms]
    signs = [1.0 if sign == "+" else -1.0 for sign, _, _ in terms]
    assert [term.weight for term in parsed] == [s * w for s, w in zip(signs, weights, strict=True)]


OPERATOR_INSIDE = re.compile(r"\s[+-]\s")
WEIGHT_LIKE = re.compile(r"(\d+(\.\d*)?|\.\d+)\s*\*")

# Pieces of HTML character references: open_clip unescapes a query's HTML, more than once.
HTML_PIECES = ["&", "amp;", "amp", "lt;", "#38;", "<", " ", "a"]


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, FastTokenizer]:
    """open_clip's tokenizer, and the torch-free one saved from it as an export saves it."""
    import open_clip

    reference = open_clip.get_tokenizer("ViT-B-32")
    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
    FastTokenizer.save_open_clip(reference, path)
    return reference, FastTokenizer.load(path)


@settings(PROPERTY, max_examples=200)
@given(
    query=st.one_of(
        argument_text(max_size=30),
        st.lists(st.sampled_from(HTML_PIECES), max_size=8).map("".join),
        st.text(st.sampled_from(WHITESPACE + "aZ.!'"), max_size=20),
    )
)
def test_the_torch_free_tokenizer_gives_open_clips_tokens_for_any_query(
    query: str, tokenizers: tuple[Any, FastTokenizer]
) -> None:
    """A search query is tokenized without torch; the tokens must be exactly open_clip's, or
    the query means something else to the model. Plain ASCII takes a shortcut past ftfy, so
    ASCII with HTML references and odd spacing is generated as often as any text."""
    reference, fast = tokenizers
    assert fast([query]).tolist() == reference([query]).tolist()
