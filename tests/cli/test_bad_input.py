"""Every command given wrong, empty, out-of-range or missing arguments, hostile names or
damaged state.

Each case states its exit code (1: a runtime problem, 2: a usage problem, as README.md
documents them) and what its one line on stderr says; none may print a traceback or more
than that one line, nor create, change or remove any file. Most cases run in-process; those
marked `process` run clipcli as a real process, whose stderr is exactly what a user sees.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import TEST_MODEL, make_image, snapshot
from typer.testing import CliRunner

from clipcli.cli.app import app
from clipcli.store.catalog import CATALOG_FILE

REPOSITORY = Path(__file__).resolve().parents[2]
USAGE, RUNTIME = 2, 1
NOT_UTF8 = os.fsdecode(b"latin1-\xe9.jpg")  # a name from a system with another encoding
TOO_LONG = "x" * 300  # longer than any file system lets one name be (255 bytes)


@pytest.fixture(scope="module")
def built_index(
    tmp_path_factory: pytest.TempPathFactory, random_checkpoint: Path, shared_cache: Path
) -> Path:
    """One small index, built once; cases that search get a copy of it."""
    folder = tmp_path_factory.mktemp("bad-input")
    photos = folder / "photos"
    for colour in ("red", "green", "blue"):
        make_image(photos / f"{colour}.png", colour)
    index = folder / "index"
    model = ["--model", TEST_MODEL, "--pretrained", str(random_checkpoint)]
    env = {"CLIPCLI_HOME": str(folder / "home"), "CLIPCLI_CACHE": str(shared_cache)}
    result = CliRunner().invoke(
        app, ["index", str(photos), "--index", str(index), *model], env=env, catch_exceptions=False
    )
    assert result.exit_code == 0, result.stderr
    assert (index / CATALOG_FILE).stat().st_size > 8192 + 4096  # a page to damage at 8 KiB
    return index


class Setup:
    """What a case needs, made in the test's own tmp_path when the case asks for it."""

    def __init__(self, tmp: Path, model: list[str], built: Path) -> None:
        self.tmp = tmp
        self.model = model
        self._built = built

    @property
    def image(self) -> Path:
        return make_image(self.tmp / "photo.png", "red")

    def file(self, name: str, content: bytes = b"") -> Path:
        path = self.tmp / name
        path.write_bytes(content)
        return path

    def folder(self, name: str) -> Path:
        path = self.tmp / name
        path.mkdir(exist_ok=True)
        return path

    def photos(self) -> Path:
        """A folder with a photo in it: work for `clipcli index`, which then loads the model."""
        make_image(self.tmp / "photos" / "red.png", "red")
        return self.tmp / "photos"

    def index(self) -> Path:
        copy = self.tmp / "index"
        if not copy.exists():
            shutil.copytree(self._built, copy)
        return copy

    def empty_catalog(self) -> Path:
        """An index folder whose catalog file is empty, as a full disk or a stray touch leaves."""
        index = self.folder("index")
        (index / CATALOG_FILE).write_bytes(b"")
        return index

    def garbage_catalog(self) -> Path:
        index = self.index()
        (index / CATALOG_FILE).write_bytes(b"this is not a database, just some text" * 100)
        return index

    def damaged_catalog(self) -> Path:
        """Noise over the 4 KiB from offset 8 KiB, as a failing disk might leave."""
        index = self.index()
        noise = np.random.default_rng(8).integers(0, 256, 4096, dtype=np.uint8).tobytes()
        with open(index / CATALOG_FILE, "r+b") as handle:
            handle.seek(8192)
            handle.write(noise)
        return index


@dataclass(frozen=True)
class Case:
    args: Callable[[Setup], list[str | Path]]
    exit_code: int
    says: str  # how the line starts; {tmp} is the test's tmp_path, {checkpoint} model_args'
    process: bool = False  # run as a real process rather than in-process
    env: tuple[tuple[str, str], ...] = ()  # environment variables set for the run


def case(
    args: Callable[[Setup], list[str | Path]],
    exit_code: int,
    says: str,
    *,
    id: str,
    process: bool = False,
    env: dict[str, str] | None = None,
):
    return pytest.param(Case(args, exit_code, says, process, tuple((env or {}).items())), id=id)


HELP_HINT = "; see `clipcli {} --help`"

CASES = [
    # -- classify ---------------------------------------------------------------------------
    case(
        lambda s: ["classify", s.image, "--labels", ",,", *s.model],
        USAGE,
        "error: no labels given",
        id="classify-labels-only-commas",
    ),
    case(
        lambda s: ["classify", s.image, "--labels", "a,b", "--top-k", "0", *s.model],
        USAGE,
        "error: invalid value for '--top-k': 0 is not in the range x>=1"
        + HELP_HINT.format("classify"),
        id="classify-top-k-0",
    ),
    case(
        lambda s: ["classify", s.image, "--labels", "a,b", "--top-k", "-1", *s.model],
        USAGE,
        "error: invalid value for '--top-k': -1 is not in the range x>=1",
        id="classify-top-k-negative",
    ),
    case(
        lambda s: ["classify", s.image, "--labels", "a,b", "--batch-size", "0", *s.model],
        USAGE,
        "error: invalid value for '--batch-size': 0 is not in the range x>=1",
        id="classify-batch-size-0",
    ),
    case(
        lambda s: ["classify", s.image, "--labels", "a", "--top-k", "many", *s.model],
        USAGE,
        "error: invalid value for '--top-k': 'many' is not a valid int",
        id="classify-top-k-not-a-number",
    ),
    case(
        lambda s: ["classify", "--labels", "a,b", *s.model],
        USAGE,
        "error: missing argument 'paths'" + HELP_HINT.format("classify"),
        id="classify-no-paths",
    ),
    case(
        lambda s: ["classify", s.image, "--labels", "a", "--lables", "b"],
        USAGE,
        "error: no such option: --lables",
        id="classify-misspelt-option",
    ),
    case(
        lambda s: [
            "classify",
            s.image,
            "--labels",
            "a",
            "--templates",
            s.file("mine.txt", b"a photo of a thing\n"),
            *s.model,
        ],
        USAGE,
        "error: {tmp}/mine.txt:1: a template needs exactly one '{{}}' placeholder",
        id="classify-template-without-placeholder",
    ),
    case(
        lambda s: ["classify", s.image, "--labels", "a", "--templates", s.tmp / "none.txt"],
        USAGE,
        "error: unknown template set '{tmp}/none.txt'",
        id="classify-templates-file-missing",
    ),
    case(
        lambda s: ["classify", s.image, "--labels", "a", "--model", "no-such-model"],
        USAGE,
        "error: unknown model 'no-such-model'",
        id="classify-unknown-model",
    ),
    case(
        lambda s: (
            ["classify", s.image, "--labels", "a", "--model", TEST_MODEL]
            + ["--pretrained", "/no/such.pt"]
        ),
        USAGE,
        "error: /no/such.pt: checkpoint file not found",
        id="classify-missing-weights",
    ),
    case(
        lambda s: (
            ["classify", s.image, "--labels", "a", "--model", TEST_MODEL]
            + ["--pretrained", s.file("garbage.pt", b"\x00\x01 not a checkpoint" * 64)]
        ),
        RUNTIME,
        "error: {tmp}/garbage.pt: not a PyTorch checkpoint",
        id="classify-garbage-checkpoint",
    ),
    case(
        lambda s: (
            ["classify", s.image, "--labels", "a,b"]
            + ["--pretrained", s.file("garbage.pt", b"\x00\x01 not a checkpoint" * 64)]
        ),
        RUNTIME,
        "error: {tmp}/garbage.pt: not a PyTorch checkpoint",
        id="classify-garbage-checkpoint-without-a-model",
    ),
    case(
        lambda s: (
            ["classify", s.image, "--labels", "a", "--model", "ViT-B-32"]
            + ["--pretrained", s.model[-1]]
        ),
        RUNTIME,
        "error: {checkpoint}: not a checkpoint for ViT-B-32 (",
        id="classify-checkpoint-of-another-architecture",
    ),
    case(
        lambda s: ["classify", s.image, "--labels", "a,b", "--pretrained", s.model[-1]],
        USAGE,
        "error: {checkpoint}: not a checkpoint for ViT-B-32-256, the default model (",
        id="classify-checkpoint-of-another-architecture-without-a-model",
    ),
    case(
        lambda s: ["classify", s.image, "--labels", "a,b", "--precision", "fp64", *s.model],
        USAGE,
        "error: unknown precision 'fp64' (--precision); use auto, fp32, bf16, onnx, int8",
        id="classify-unknown-precision",
    ),
    case(
        lambda s: ["classify", s.image, "--labels", "a,b", *s.model],
        USAGE,
        "error: CLIPCLI_PRECISION=fp64: unknown precision; use auto, fp32",
        id="classify-unknown-precision-from-the-environment",
        env={"CLIPCLI_PRECISION": "fp64"},
    ),
    case(
        lambda s: ["classify", s.tmp / "missing.jpg", "--labels", "a,b", *s.model],
        RUNTIME,
        "error: {tmp}/missing.jpg: no such file",
        id="classify-missing-file",
        process=True,
    ),
    case(
        lambda s: ["classify", s.folder("empty"), "--labels", "a,b"],
        RUNTIME,
        "warning: {tmp}/empty: no images found",
        id="classify-empty-folder",
        process=True,
    ),
    case(
        lambda s: ["classify", s.image, "--labels", "a", "--json", "--format", "csv", *s.model],
        USAGE,
        "error: --json and --format csv ask for two formats; give one of them",
        id="classify-json-and-another-format",
    ),
    case(
        lambda s: ["classify", s.image, "--labels", "a", "--format", "xml", *s.model],
        USAGE,
        "error: invalid value for '--format': 'xml' is not one of 'table', 'plain', 'tsv', "
        "'csv', 'jsonl', 'json'",
        id="classify-unknown-format",
    ),
    # -- index ------------------------------------------------------------------------------
    case(
        lambda s: ["index", s.tmp / "no-such-folder", "--index", s.tmp / "new", *s.model],
        USAGE,
        "error: {tmp}/no-such-folder: not a folder",
        id="index-folder-missing",
    ),
    case(
        lambda s: ["index", "--index", s.tmp / "new", *s.model],
        USAGE,
        "error: no folders to index; give one or more, or --forget DIR, --prune or --layout",
        id="index-no-folders",
    ),
    case(
        lambda s: ["index", s.folder("photos"), "--index", s.file("notes.txt"), *s.model],
        USAGE,
        "error: {tmp}/notes.txt: is a file, not an index folder",
        id="index-index-is-a-file",
        process=True,
    ),
    case(
        lambda s: ["index", s.photos(), "--index", s.tmp / "new", *s.model],
        USAGE,
        "error: CLIPCLI_PRECISION=int4: unknown precision",
        id="index-unknown-precision-from-the-environment",
        env={"CLIPCLI_PRECISION": "int4"},
        process=True,
    ),
    case(
        lambda s: ["index", s.folder("photos"), "--batch-size", "0", *s.model],
        USAGE,
        "error: invalid value for '--batch-size': 0 is not in the range x>=1",
        id="index-batch-size-0",
    ),
    case(
        lambda s: ["index", s.photos(), "--index", s.tmp / "new", "--model", "nonsense"],
        USAGE,
        "error: unknown model 'nonsense'",
        id="index-unknown-model-into-a-new-index",
    ),
    case(
        lambda s: (
            ["index", s.photos(), "--index", s.tmp / "new", "--model", TEST_MODEL]
            + ["--pretrained", s.file("garbage.pt", b"\x00\x01 not a checkpoint" * 64)]
        ),
        RUNTIME,
        "error: {tmp}/garbage.pt: not a",
        id="index-unusable-checkpoint-into-a-new-index",
    ),
    case(
        lambda s: ["index", s.folder("photos"), "--index", s.garbage_catalog(), *s.model],
        RUNTIME,
        "error: {tmp}/index/catalog.sqlite3: not a readable clipcli catalog (damaged:",
        id="index-garbage-catalog",
    ),
    case(
        lambda s: ["index", s.folder("photos"), "--index", s.damaged_catalog(), *s.model],
        RUNTIME,
        "error: {tmp}/index/catalog.sqlite3: not a readable clipcli catalog (damaged:",
        id="index-catalog-damaged-at-8k",
    ),
    case(
        lambda s: ["index", s.photos(), "--index", s.damaged_catalog(), "--repair", "--reset"],
        USAGE,
        "error: --reset forgets the whole index, --repair keeps it; give one of them",
        id="index-repair-and-reset",
    ),
    # -- search -----------------------------------------------------------------------------
    case(
        lambda s: ["search", "", "--index", s.index()],
        USAGE,
        "error: nothing to search for",
        id="search-empty-query",
    ),
    case(
        lambda s: ["search", "  \t ", "--index", s.index()],
        USAGE,
        "error: nothing to search for",
        id="search-query-of-spaces",
    ),
    case(
        lambda s: ["search", "a red square", "--index", s.index(), "--top-k", "0"],
        USAGE,
        "error: invalid value for '--top-k': 0 is not in the range x>=1"
        + HELP_HINT.format("search"),
        id="search-top-k-0",
        process=True,
    ),
    case(
        lambda s: ["search", "a red square", "--index", s.index(), "--top-k", "-1"],
        USAGE,
        "error: invalid value for '--top-k': -1 is not in the range x>=1",
        id="search-top-k-negative",
    ),
    case(
        lambda s: ["search", "--image", s.tmp / "missing.jpg", "--index", s.index()],
        RUNTIME,
        "error: {tmp}/missing.jpg: no such file",
        id="search-image-missing",
    ),
    case(
        lambda s: ["search", "--image", s.file("notes.jpg", b"milk, eggs\n"), "--index", s.index()],
        RUNTIME,
        "error: {tmp}/notes.jpg: not an image (unrecognised format)",
        id="search-image-not-an-image",
    ),
    case(
        lambda s: ["search", "a red square", "--index", s.index(), "--paths-only", "--json"],
        USAGE,
        "error: --paths-only prints the paths alone; leave out --format and --json",
        id="search-paths-only-and-json",
    ),
    case(
        lambda s: ["search", "a red square", "--index", s.index(), "-0", "--format", "plain"],
        USAGE,
        "error: -0 prints the paths alone; leave out --format and --json",
        id="search-null-and-a-format",
    ),
    case(
        lambda s: ["search", "a red square", "--index", s.empty_catalog()],
        RUNTIME,
        "error: {tmp}/index: the index is empty",
        id="search-empty-catalog-file",
    ),
    case(
        lambda s: ["search", "a red square", "--index", s.garbage_catalog()],
        RUNTIME,
        "error: {tmp}/index/catalog.sqlite3: not a readable clipcli catalog (damaged:",
        id="search-garbage-catalog",
    ),
    case(
        lambda s: ["search", "a red square", "--index", s.damaged_catalog()],
        RUNTIME,
        "error: {tmp}/index/catalog.sqlite3: not a readable clipcli catalog (damaged:",
        id="search-catalog-damaged-at-8k",
        process=True,
    ),
    case(
        lambda s: ["search", "a red square", "--index", s.file("notes.txt")],
        RUNTIME,
        "error: {tmp}/notes.txt: no index here",
        id="search-index-is-a-file",
    ),
    case(
        lambda s: ["search", "a red square", "--index", s.tmp / "nowhere"],
        RUNTIME,
        "error: {tmp}/nowhere: no index here",
        id="search-no-index",
    ),
    # -- hostile names: markup, newlines, bytes that are not UTF-8, names too long -----------
    case(
        lambda s: ["classify", s.tmp / "new\nline [red]x[/red].jpg", "--labels", "a,b", *s.model],
        RUNTIME,
        "error: {tmp}/new\\nline [red]x[/red].jpg: no such file",
        id="classify-missing-file-with-markup-and-a-newline",
    ),
    case(
        lambda s: ["classify", s.tmp / NOT_UTF8, "--labels", "a,b", *s.model],
        RUNTIME,
        "error: {tmp}/latin1-\\xe9.jpg: no such file",
        id="classify-missing-file-not-utf8",
        process=True,
    ),
    case(
        lambda s: ["classify", s.tmp / TOO_LONG, "--labels", "a,b", *s.model],
        RUNTIME,
        "error: {tmp}/" + TOO_LONG + ": cannot read file (File name too long)",
        id="classify-name-too-long",
    ),
    case(
        lambda s: ["index", s.tmp / "[bold]gone\tdir", "--index", s.tmp / "index", *s.model],
        USAGE,
        "error: {tmp}/[bold]gone\\tdir: not a folder",
        id="index-missing-folder-with-markup-and-a-tab",
    ),
    case(
        lambda s: ["index", s.tmp / TOO_LONG, "--index", s.tmp / "index", *s.model],
        RUNTIME,
        "error: {tmp}/" + TOO_LONG + ": file name too long",
        id="index-folder-name-too-long",
    ),
    case(
        lambda s: ["index", s.photos(), "--index", s.tmp / TOO_LONG / "index", *s.model],
        RUNTIME,
        "error: {tmp}/" + TOO_LONG + "/index: file name too long",
        id="index-index-name-too-long",
    ),
    case(
        lambda s: ["search", "a red square", "--index", s.tmp / TOO_LONG],
        RUNTIME,
        "error: {tmp}/" + TOO_LONG + "/catalog.sqlite3: file name too long",
        id="search-index-name-too-long",
    ),
    case(
        lambda s: ["search", "--image", s.tmp / "[red]\x1b[31m.png", "--index", s.index()],
        RUNTIME,
        "error: {tmp}/[red]\\x1b[31m.png: no such file",
        id="search-image-with-markup-and-an-escape",
    ),
    # -- cache ------------------------------------------------------------------------------
    case(
        lambda s: ["cache", "clean", "--older-than", "-3"],
        USAGE,
        "error: invalid value for '--older-than': -3.0 is not in the range x>=0",
        id="cache-clean-older-than-negative",
    ),
    case(
        lambda s: ["cache", "clean", "--older-than", "soon"],
        USAGE,
        "error: invalid value for '--older-than': 'soon' is not a valid float range",
        id="cache-clean-older-than-not-a-number",
    ),
    case(
        lambda s: ["cache", "clean", "--all", "--older-than", "3"],
        USAGE,
        "error: --all removes everything; leave out --older-than",
        id="cache-clean-all-and-older-than",
    ),
    case(
        lambda s: ["cache"],
        USAGE,
        "error: CLIPCLI_CACHE_LIMIT=lots: not a size",
        id="cache-limit-not-a-size",
        env={"CLIPCLI_CACHE_LIMIT": "lots"},
    ),
    case(lambda s: ["cache", "purge"], USAGE, "error: no such command 'purge'", id="cache-typo"),
    # -- no command -------------------------------------------------------------------------
    case(lambda s: ["serach", "a cat"], USAGE, "error: no such command 'serach'", id="typo"),
]


def run_process(args: list[str]) -> tuple[int, str]:
    """clipcli as a user runs it, with this test's CLIPCLI_HOME and CLIPCLI_CACHE."""
    path = os.pathsep.join(filter(None, [str(REPOSITORY), os.environ.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-m", "clipcli", *args],
        env={**os.environ, "PYTHONPATH": path},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return done.returncode, done.stderr


@pytest.mark.parametrize("bad", CASES)
def test_bad_input_exits_with_its_code_and_one_line_on_stderr(
    bad: Case,
    cli,
    model_args: list[str],
    built_index: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in bad.env:
        monkeypatch.setenv(name, value)
    args = [str(arg) for arg in bad.args(Setup(tmp_path, model_args, built_index))]
    before = snapshot(tmp_path)
    if bad.process:
        exit_code, stderr = run_process(args)
    else:
        result = cli(*args)
        exit_code, stderr = result.exit_code, result.stderr

    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(bad.says.format(tmp=tmp_path, checkpoint=model_args[-1]))
    assert exit_code == bad.exit_code
    assert snapshot(tmp_path) == before
