"""Folder names made from labels: one safe path component each, never two labels in one folder,
on any common filesystem."""

from __future__ import annotations

import pytest

from clipcli.filing.folder_names import MAX_NAME_BYTES, folder_names, name_key, safe_name


@pytest.mark.parametrize(
    ("label", "folder"),
    [
        ("cat", "cat"),
        ("red star", "red star"),
        ("a/b", "a_b"),
        ("a\\b", "a_b"),
        ('what? "this": <that>|*', "what_ _this__ _that___"),
        ("..", "_label"),
        (".", "_label"),
        ("", "_label"),
        ("   ", "_label"),
        ("../etc/passwd", "_etc_passwd"),
        (".hidden", "hidden"),
        ("  padded. ", "padded"),
        ("tab\there", "tab here"),
        ("line\nbreak\r\n", "line break"),
        ("bell\x07 and escape\x1b[31m", "bell and escape [31m"),
        ("nul\x00byte", "nul byte"),
        ("CON", "CON_"),
        ("nul", "nul_"),
        ("com1.txt", "com1.txt_"),
        ("LPT9", "LPT9_"),
        ("console", "console"),
        ("e\u0301te\u0301", "\u00e9t\u00e9"),  # decomposed accents, composed as NFC
        ("lone \udce9 byte", "lone \ufffd byte"),
    ],
)
def test_a_label_becomes_one_safe_folder_name(label, folder):
    assert safe_name(label) == folder


def test_a_long_label_is_cut_to_the_byte_cap_between_characters():
    name = safe_name("é" * 80)  # 160 bytes of UTF-8

    assert len(name.encode("utf-8")) <= MAX_NAME_BYTES
    assert name == "é" * (MAX_NAME_BYTES // 2)


def test_a_cut_that_ends_in_a_space_or_dot_drops_it():
    name = safe_name("x" * (MAX_NAME_BYTES - 1) + ". tail")

    assert name == "x" * (MAX_NAME_BYTES - 1)


def test_labels_that_would_share_a_folder_get_numbered_in_their_order():
    names = folder_names(["Cat", "cat", "a/b", "a_b", "CAT"])

    assert names == {
        "Cat": "Cat",
        "cat": "cat (2)",
        "a/b": "a_b",
        "a_b": "a_b (2)",
        "CAT": "CAT (3)",
    }
    assert len({name_key(name) for name in names.values()}) == len(names)


def test_a_label_that_would_take_a_reserved_name_is_renamed():
    names = folder_names(["_unsorted", "_UNSORTED", "dog"], reserved=["_unsorted"])

    assert names == {"_unsorted": "_unsorted (2)", "_UNSORTED": "_UNSORTED (3)", "dog": "dog"}


def test_a_numbered_long_name_stays_within_the_cap():
    long = "y" * 300
    names = folder_names([long, long + "!"])

    first, second = names.values()
    assert first == "y" * MAX_NAME_BYTES
    assert second == "y" * (MAX_NAME_BYTES - 4) + " (2)"
    assert len(second.encode("utf-8")) == MAX_NAME_BYTES


def test_names_composed_differently_are_one_name_where_filesystems_normalise():
    assert name_key("Caf\u00e9") == name_key("cafe\u0301")
