"""Specification of what discovery lists from real photo libraries: phone and camera formats, a
RAW file beside its JPEG, the junk of operating systems and NAS boxes, and the patterns that
leave files out (given, or in .clipcliignore files). Discovery looks only at names, so the
files here are empty."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from clipcli.errors import UsageError
from clipcli.media import discover as discover_module
from clipcli.media.discover import discover_images, expand_paths, is_junk_name
from clipcli.media.excludes import InvalidExcludePatternError
from clipcli.media.formats import AVIF_EXTENSIONS, IMAGE_EXTENSIONS, is_image_name, is_raw_name


def touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()


def listed(root: Path, **options: object) -> list[str]:
    """What discovery lists under root, as paths relative to it with "/" between folders."""
    return [path.relative_to(root).as_posix() for path in discover_images(root, **options)]


def ignore_file(folder: Path, *lines: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".clipcliignore").write_text("\n".join(lines) + "\n")


# --- formats --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "IMG_0001.HEIC",
        "IMG_0002.heic",
        "scan.HeIf",
        "DSCF0003.HIF",
        *[f"raw{suffix}" for suffix in [".cr2", ".CR3", ".nef", ".ARW", ".dng", ".orf", ".RW2"]],
        "DSCF0004.RAF",
    ],
)
def test_phone_and_camera_formats_are_images_in_any_case(tmp_path: Path, name: str) -> None:
    touch(tmp_path, name)
    assert is_image_name(name)
    assert listed(tmp_path) == [name]


def test_avif_is_an_image_where_pillow_reads_it() -> None:
    assert is_image_name("photo.AVIF") == (".avif" in AVIF_EXTENSIONS)
    assert AVIF_EXTENSIONS <= IMAGE_EXTENSIONS


def test_raw_names_are_told_apart_from_the_developed_ones() -> None:
    assert [is_raw_name(n) for n in ["a.CR2", "a.nef", "a.jpg", "a.heic", "a.tif"]] == [
        True,
        True,
        False,
        False,
        False,
    ]


# --- a RAW file beside its JPEG -------------------------------------------------------------


def test_a_raw_file_beside_a_jpeg_of_the_same_name_is_left_out(tmp_path: Path) -> None:
    touch(tmp_path, "IMG_0001.CR2", "IMG_0001.JPG", "IMG_0002.CR2")
    assert listed(tmp_path) == ["IMG_0001.JPG", "IMG_0002.CR2"]


@pytest.mark.parametrize(
    "developed", ["DSC_7.jpg", "DSC_7.JPEG", "DSC_7.jpe", "DSC_7.HEIC", "DSC_7.heif", "dsc_7.Jpg"]
)
def test_any_jpeg_or_heif_name_of_the_same_stem_stands_for_the_raw_file(
    tmp_path: Path, developed: str
) -> None:
    touch(tmp_path, "DSC_7.NEF", developed)
    assert listed(tmp_path) == [developed]


def test_a_raw_file_is_listed_beside_other_kinds_of_image_or_in_another_folder(
    tmp_path: Path,
) -> None:
    touch(tmp_path, "raw/IMG_1.ARW", "jpeg/IMG_1.jpg", "IMG_2.dng", "IMG_2.png", "IMG_3.cr3")
    assert listed(tmp_path) == [
        "IMG_2.dng",
        "IMG_2.png",
        "IMG_3.cr3",
        "jpeg/IMG_1.jpg",
        "raw/IMG_1.ARW",
    ]


def test_a_raw_file_whose_jpeg_is_excluded_is_listed_itself(tmp_path: Path) -> None:
    touch(tmp_path, "IMG_1.CR2", "IMG_1.JPG", "._IMG_2.JPG", "IMG_2.CR2")
    assert listed(tmp_path, excludes=["*.JPG"]) == ["IMG_1.CR2", "IMG_2.CR2"]


# --- junk -----------------------------------------------------------------------------------

JUNK = [
    "._IMG_0001.JPG",  # AppleDouble: macOS's metadata beside a photo on a FAT or exFAT drive
    ".DS_Store",
    "Thumbs.db",
    "album/thumbs.db",
    "@eaDir/IMG_0001.JPG/SYNOPHOTO_THUMB_XL.jpg",  # a Synology NAS's thumbnails
    "album/@eaDir/IMG_0002.JPG/SYNOPHOTO_THUMB_M.jpg",
    ".thumbnails/normal/0a1b2c.png",
    "System Volume Information/restore.jpg",
    "$RECYCLE.BIN/S-1-5-21/$RABC123.jpg",
    ".Trashes/501/deleted.jpg",
]


@pytest.mark.parametrize("include_hidden", [False, True])
def test_junk_is_left_out_whether_or_not_hidden_files_are_asked_for(
    tmp_path: Path, include_hidden: bool
) -> None:
    touch(tmp_path, "IMG_0001.JPG", "album/IMG_0002.JPG", *JUNK)
    assert listed(tmp_path, include_hidden=include_hidden) == [
        "IMG_0001.JPG",
        "album/IMG_0002.JPG",
    ]


def test_hidden_photos_that_are_not_junk_come_with_include_hidden(tmp_path: Path) -> None:
    touch(tmp_path, ".private/a.jpg", ".b.png", "c.jpg", "._c.jpg")
    assert listed(tmp_path) == ["c.jpg"]
    assert listed(tmp_path, include_hidden=True) == [".b.png", ".private/a.jpg", "c.jpg"]


def test_junk_names_are_known_in_any_case() -> None:
    assert all(is_junk_name(n) for n in ["@EADIR", "THUMBS.DB", ".ds_store", "._x", "._"])
    assert not any(is_junk_name(n) for n in ["eaDir", "Thumbs", "_x.jpg", ".x", "thumbnails"])


def test_expand_leaves_out_junk_named_on_the_command_line(tmp_path: Path) -> None:
    # A shell glob (photos/* or **/*.jpg) names junk as readily as photos.
    touch(tmp_path, "IMG_1.JPG", "._IMG_1.JPG", "Thumbs.db", "@eaDir/IMG_1.JPG/THUMB.jpg")
    given = [tmp_path / name for name in ["IMG_1.JPG", "._IMG_1.JPG", "Thumbs.db", "@eaDir"]]
    given.append(tmp_path / "@eaDir" / "IMG_1.JPG" / "THUMB.jpg")
    assert expand_paths(given) == [tmp_path / "IMG_1.JPG"]
    assert expand_paths([tmp_path]) == [tmp_path / "IMG_1.JPG"]


# --- exclude patterns -----------------------------------------------------------------------

LIBRARY = [
    "top-only.jpg",
    "logo.png",
    "keep.png",
    "trip/top-only.jpg",
    "trip/day1.jpg",
    "trip/map.png",
    "trip/drafts/crop.jpg",
    "drafts/first.jpg",
    "cache/tmp/a.jpg",
    "tmp/b.jpg",
    "tmp-not/c.jpg",
]


@pytest.mark.parametrize(
    ("patterns", "left_out"),
    [
        (["*.png"], ["logo.png", "keep.png", "trip/map.png"]),
        (["drafts/"], ["trip/drafts/crop.jpg", "drafts/first.jpg"]),  # at any depth
        (["/top-only.jpg"], ["top-only.jpg"]),  # anchored to the root
        (["trip/top-only.jpg"], ["trip/top-only.jpg"]),  # a slash inside anchors it too
        (["**/tmp/**"], ["cache/tmp/a.jpg", "tmp/b.jpg"]),
        (["*.png", "!keep.png"], ["logo.png", "trip/map.png"]),  # the last match decides
        (["!keep.png", "*.png"], ["logo.png", "keep.png", "trip/map.png"]),
        (["trip/*", "!trip/drafts/"], ["trip/top-only.jpg", "trip/day1.jpg", "trip/map.png"]),
        (["# a comment", "", "tmp"], ["cache/tmp/a.jpg", "tmp/b.jpg"]),
        (["*.[pP][nN][gG]"], ["logo.png", "keep.png", "trip/map.png"]),
    ],
)
def test_exclude_patterns_are_read_as_in_gitignore(
    tmp_path: Path, patterns: list[str], left_out: list[str]
) -> None:
    touch(tmp_path, *LIBRARY)
    assert listed(tmp_path, excludes=patterns) == sorted(set(LIBRARY) - set(left_out))


def test_what_is_inside_a_folder_excluded_with_stars_can_be_brought_back(tmp_path: Path) -> None:
    touch(tmp_path, "drafts/a.jpg", "drafts/keep.jpg", "drafts/old/b.jpg", "c.jpg")
    assert listed(tmp_path, excludes=["drafts/**", "!drafts/keep.jpg"]) == [
        "c.jpg",
        "drafts/keep.jpg",
    ]


def test_nothing_can_be_brought_back_from_a_folder_left_out(tmp_path: Path) -> None:
    touch(tmp_path, "drafts/keep.jpg", "c.jpg")
    assert listed(tmp_path, excludes=["drafts/", "!drafts/keep.jpg"]) == ["c.jpg"]


def test_only_the_jpegs_everywhere(tmp_path: Path) -> None:
    touch(tmp_path, "a.jpg", "b.png", "x/c.jpg", "x/d.webp", "x/y/e.jpg")
    assert listed(tmp_path, excludes=["*", "!*/", "!*.jpg"]) == ["a.jpg", "x/c.jpg", "x/y/e.jpg"]


def test_patterns_are_relative_to_the_root_walked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    touch(tmp_path, "photos/top.jpg", "photos/sub/top.jpg")
    monkeypatch.chdir(tmp_path)
    assert discover_images(Path("photos"), excludes=["/top.jpg"]) == [
        tmp_path / "photos" / "sub" / "top.jpg"
    ]
    assert listed(tmp_path, excludes=["/top.jpg"]) == ["photos/sub/top.jpg", "photos/top.jpg"]


def test_patterns_see_a_symlinked_folder_by_its_name(tmp_path: Path) -> None:
    touch(tmp_path, "elsewhere/a.jpg")
    root = tmp_path / "library"
    root.mkdir()
    (root / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    assert listed(root) == ["linked/a.jpg"]
    assert listed(root, excludes=["linked/"]) == []


def test_a_folder_left_out_is_not_looked_into(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    touch(tmp_path, "a.jpg", "huge/1/2/3.jpg", "nested/skip/4.jpg", "nested/5.jpg")
    ignore_file(tmp_path / "nested", "skip/")
    scanned: list[str] = []
    scandir = os.scandir

    def recording_scandir(path: str) -> object:
        scanned.append(Path(path).relative_to(tmp_path).as_posix())
        return scandir(path)

    monkeypatch.setattr(discover_module.os, "scandir", recording_scandir)

    assert listed(tmp_path, excludes=["huge/"]) == ["a.jpg", "nested/5.jpg"]
    assert sorted(scanned) == [".", "nested"]


def test_a_string_given_as_excludes_is_one_pattern(tmp_path: Path) -> None:
    touch(tmp_path, "a.png", "b.jpg")
    assert listed(tmp_path, excludes="*.png") == ["b.jpg"]  # type: ignore[arg-type]


@pytest.mark.parametrize("pattern", ["!", "photos\\"])
def test_a_pattern_git_would_refuse_is_a_usage_error_naming_it(
    tmp_path: Path, pattern: str
) -> None:
    with pytest.raises(InvalidExcludePatternError) as caught:
        discover_images(tmp_path, excludes=["*.png", pattern])
    assert isinstance(caught.value, UsageError)
    assert str(caught.value) == f"invalid exclude pattern {pattern!r}"


# --- .clipcliignore files -------------------------------------------------------------------


def test_an_ignore_file_applies_to_its_folder_and_below_only(tmp_path: Path) -> None:
    touch(tmp_path, "a.png", "trip/b.png", "trip/day/c.png", "other/d.png")
    ignore_file(tmp_path / "trip", "*.png")
    assert listed(tmp_path) == ["a.png", "other/d.png"]


def test_an_ignore_files_patterns_are_relative_to_its_folder(tmp_path: Path) -> None:
    touch(tmp_path, "cover.jpg", "trip/cover.jpg", "trip/day/cover.jpg", "trip/day/x.jpg")
    ignore_file(tmp_path / "trip", "/cover.jpg", "day/x.jpg")
    assert listed(tmp_path) == ["cover.jpg", "trip/day/cover.jpg"]


def test_a_deeper_ignore_file_overrides_the_ones_above_and_the_patterns_given(
    tmp_path: Path,
) -> None:
    touch(tmp_path, "a.png", "b.gif", "keep/c.png", "keep/d.gif", "keep/deeper/e.png")
    ignore_file(tmp_path, "*.png")
    ignore_file(tmp_path / "keep", "!*.png", "!*.gif")
    ignore_file(tmp_path / "keep" / "deeper", "*.png")
    assert listed(tmp_path, excludes=["*.gif"]) == ["keep/c.png", "keep/d.gif"]


def test_an_ignore_file_in_the_root_counts_after_the_patterns_given(tmp_path: Path) -> None:
    touch(tmp_path, "a.png", "b.png")
    ignore_file(tmp_path, "!a.png")
    assert listed(tmp_path, excludes=["*.png"]) == ["a.png"]


def test_an_ignore_file_in_a_folder_whose_name_looks_like_a_pattern(tmp_path: Path) -> None:
    folder = tmp_path / "2024 [best] *"
    touch(folder, "a.jpg", "b.jpg")
    touch(tmp_path, "2024 b/a.jpg")
    ignore_file(folder, "/a.jpg")
    assert listed(tmp_path) == ["2024 [best] */b.jpg", "2024 b/a.jpg"]


def test_an_ignore_file_that_leaves_a_folder_out_leaves_its_ignore_file_unread(
    tmp_path: Path,
) -> None:
    touch(tmp_path, "drafts/a.jpg", "b.jpg")
    ignore_file(tmp_path, "drafts/")
    ignore_file(tmp_path / "drafts", "!*.jpg", "broken\\")  # never read: no error
    assert listed(tmp_path) == ["b.jpg"]


def test_a_bad_line_in_an_ignore_file_is_named_with_its_file_and_line(tmp_path: Path) -> None:
    touch(tmp_path, "trip/a.jpg")
    ignore_file(tmp_path / "trip", "# mine", "*.png", "!")
    with pytest.raises(InvalidExcludePatternError) as caught:
        discover_images(tmp_path)
    assert str(caught.value) == (
        f"invalid exclude pattern '!' (line 3 of {tmp_path / 'trip' / '.clipcliignore'})"
    )


def test_an_ignore_file_written_on_windows_is_read_as_any_other(tmp_path: Path) -> None:
    touch(tmp_path, "a.png", "b.gif", "c.jpg")
    (tmp_path / ".clipcliignore").write_bytes("\ufeff*.png\r\n*.gif\r\n".encode())
    assert listed(tmp_path) == ["c.jpg"]


def test_an_ignore_file_that_is_not_a_readable_file_adds_nothing(tmp_path: Path) -> None:
    touch(tmp_path, "a.jpg", "sub/b.jpg")
    (tmp_path / ".clipcliignore").mkdir()
    (tmp_path / "sub" / ".clipcliignore").symlink_to(tmp_path / "nowhere")
    assert listed(tmp_path) == ["a.jpg", "sub/b.jpg"]


# --- as git reads the same patterns ---------------------------------------------------------

GIT_CASES = [
    (["*.png", "!keep.png", "drafts/"], {}),
    (["/*", "!/trip", "/trip/*", "!/trip/day1.jpg"], {}),
    (["**/tmp/**", "!**/tmp/b.jpg"], {"trip": ["*.jpg", "!day1.jpg"]}),
    ([], {"": ["trip/*", "!trip/drafts/"], "trip/drafts": ["crop.jpg"]}),
    (["*.jpg"], {"trip": ["!drafts/"], "cache": ["!*.jpg", "tmp/"]}),
    (["tmp*/", "**/drafts/**"], {"": ["!drafts/first.jpg", "logo.png"], "trip": ["/*.png"]}),
]


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git to compare with")
@pytest.mark.parametrize(("given", "ignore_files"), GIT_CASES)
def test_discovery_leaves_out_what_git_would_ignore(
    tmp_path: Path, given: list[str], ignore_files: dict[str, list[str]]
) -> None:
    # The same patterns as the repository's own exclude file and as .gitignore files.
    touch(tmp_path, *LIBRARY)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".git" / "info" / "exclude").write_text("\n".join(given) + "\n")
    for folder, lines in ignore_files.items():
        ignore_file(tmp_path / folder, *lines)
        (tmp_path / folder / ".gitignore").write_text("\n".join(lines) + "\n")
    untracked = subprocess.run(
        ["git", "-C", str(tmp_path), "ls-files", "-z", "--others", "--exclude-standard"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")

    assert listed(tmp_path, excludes=given) == sorted(p for p in untracked if is_image_name(p))
