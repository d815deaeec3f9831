"""Shared fixtures: an isolated clipcli home per test, a random-init checkpoint, image makers."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from typer.testing import CliRunner

from clipcli.cli.app import app

TEST_MODEL = "clipcli-shapes"


def pytest_report_header() -> str:
    """The CPU the backends were checked on: agreement and speed of ONNX Runtime's kernels
    differ between AVX2, AVX-512 VNNI and ARM, so a failure is easier to place with it."""
    from clipcli.models import cpu

    return f"cpu: {cpu.signature()}"


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Exported models and label embeddings: deterministic, so tests may share them."""
    return tmp_path_factory.mktemp("clipcli-cache")


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, shared_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test reads or writes the user's index, caches or model settings."""
    home = tmp_path / "clipcli-home"
    monkeypatch.setenv("CLIPCLI_HOME", str(home))
    monkeypatch.setenv("CLIPCLI_CACHE", str(shared_cache))
    for name in ("CLIPCLI_INDEX", "CLIPCLI_MODEL", "CLIPCLI_PRETRAINED", "CLIPCLI_PRECISION"):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture(scope="session")
def random_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random-init weights for the small bundled architecture, saved as a checkpoint file.

    open_clip loads it through its real --pretrained path; answers are meaningless but
    deterministic, which is what plumbing and parity tests need.
    """
    return save_random_checkpoint(tmp_path_factory.mktemp("weights") / "random-shapes.pt", 0)


def save_random_checkpoint(path: Path, seed: int) -> Path:
    """Random-init weights of the bundled architecture, from a fixed seed, saved to `path`."""
    import open_clip
    import torch

    from clipcli.models.names import BUNDLED_CONFIG_DIR

    open_clip.add_model_config(BUNDLED_CONFIG_DIR)
    torch.manual_seed(seed)
    torch.save(open_clip.create_model(TEST_MODEL).state_dict(), path)
    return path


@pytest.fixture
def model_args(random_checkpoint: Path) -> list[str]:
    return ["--model", TEST_MODEL, "--pretrained", str(random_checkpoint)]


def make_image(path: Path, colour: str | tuple[int, int, int] = "red", size=(64, 48)) -> Path:
    """A small solid image in whatever format the suffix names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def one_shape_on_backgrounds(
    shape: str,
    fill: tuple[int, int, int],
    backgrounds: list[tuple[int, int, int]],
    size: tuple[int, int] = (400, 300),
    seed: int = 0,
) -> list[Image.Image]:
    """The same shape (one mask: same place, size and outline) filled with one colour, on a
    flat background of each colour: different drawings that grey levels alone hardly tell."""
    import numpy as np

    from clipcli.shapes import shape_mask

    mask = shape_mask(np.random.default_rng(seed), shape, *size)
    shape_layer = Image.new("RGB", size, fill)
    return [Image.composite(shape_layer, Image.new("RGB", size, bg), mask) for bg in backgrounds]


def exif_photo(path: Path, when: str, colour: str = "orange") -> Path:
    """A JPEG whose camera recorded `when` ("YYYY:MM:DD HH:MM:SS") as DateTimeOriginal."""
    exif = Image.Exif()
    exif.get_ifd(0x8769)[36867] = when  # the Exif sub-IFD's DateTimeOriginal
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 48), colour).save(path, exif=exif.tobytes())
    return path


# A file name made on a system with another encoding: Latin-1 for "é". Python names such a file
# with a lone surrogate ("latin1-\udce9.jpg"), which no UTF-8 text can hold.
NON_UTF8_NAME = b"latin1-\xe9.jpg"


def make_non_utf8_image(folder: Path, colour: str = "purple") -> Path:
    """A JPEG whose file name is not valid UTF-8; returns its path as Python spells it."""
    drawn = make_image(folder / "drawn.jpg", colour)
    path = os.fsencode(folder) + b"/" + NON_UTF8_NAME
    os.rename(os.fsencode(drawn), path)
    return Path(os.fsdecode(path))


@pytest.fixture
def photo_folder(tmp_path: Path) -> Path:
    """Five small images in two folders, one of them nested."""
    folder = tmp_path / "photos"
    for name, colour in [("red.png", "red"), ("green.jpg", "green"), ("blue.png", "blue")]:
        make_image(folder / name, colour)
    make_image(folder / "nested" / "white.webp", "white")
    make_image(folder / "nested" / "black.bmp", "black")
    return folder


def clustered_vectors(
    count: int, dim: int, *, clusters: int = 50, seed: int = 0, spread: float = 0.6
) -> Any:
    """Unit vectors of a Gaussian mixture, as bench/scale.py draws them: `clusters` unit
    centres (the same for every seed), each point one of them plus noise of `spread`."""
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).standard_normal((clusters, dim)).astype(np.float32)
    points = centres[rng.integers(0, clusters, count)]
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    points += rng.standard_normal((count, dim)).astype(np.float32) * (spread / np.sqrt(dim))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def snapshot(folder: Path) -> dict[str, tuple[int, str] | str] | None:
    """Every folder and file under `folder` by relative path, files with their size and SHA-256
    (None if `folder` does not exist): equal snapshots before and after a command show that it
    created, changed and removed nothing there."""
    if not os.path.lexists(folder):
        return None
    found: dict[str, tuple[int, str] | str] = {}
    for parent, folders, files in os.walk(folder):  # links are listed, never followed
        for name in folders:
            found[os.path.relpath(os.path.join(parent, name), folder)] = "folder"
        for name in files:
            path = os.path.join(parent, name)
            if os.path.islink(path) or not os.path.isfile(path):
                found[os.path.relpath(path, folder)] = "other"
                continue
            with open(path, "rb") as handle:
                digest = hashlib.sha256(handle.read()).hexdigest()
            found[os.path.relpath(path, folder)] = (os.path.getsize(path), digest)
    return found


class Cli:
    """Runs clipcli in-process and exposes exit code, stdout, stderr and parsed JSON."""

    def __init__(self) -> None:
        self.runner = CliRunner()

    def __call__(self, *args: str | Path):
        return self.runner.invoke(app, [str(a) for a in args], catch_exceptions=False)

    def json(self, *args: str | Path):
        result = self(*args, "--json")
        return result, json.loads(result.stdout) if result.stdout.strip() else None


@pytest.fixture
def cli() -> Cli:
    return Cli()


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every path the encoder decodes from now on: a file not listed here was not re-encoded."""
    from clipcli.media import decode

    seen: list[str] = []
    real = decode.load_image

    def recording(path: Path, *args: Any, **kwargs: Any) -> Image.Image:
        seen.append(str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(decode, "load_image", recording)
    return seen


@pytest.fixture
def index(tmp_path: Path) -> Path:
    """Where a test's index goes."""
    return tmp_path / "index"


@pytest.fixture
def run_index(cli, model_args: list[str], index: Path):
    """`clipcli index ROOTS... --index <index> <model> --json`, expected to succeed."""

    def run(*args: str | Path) -> dict:
        result, report = cli.json("index", *args, "--index", index, *model_args)
        assert result.exit_code == 0, result.stderr
        return report

    return run


ImageMaker = Callable[..., Path]


# A tiny ViT, like the photo models (the bundled shapes model is a ResNet).
VIT_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
VIT_MODEL = "clipcli-test-vit"


@pytest.fixture(scope="session")
def vit_spec(tmp_path_factory: pytest.TempPathFactory):
    """Seed-0 random weights of the tiny ViT, registered with open_clip and saved to a file."""
    import open_clip
    import torch

    from clipcli.models.names import ModelSpec

    folder = tmp_path_factory.mktemp("vit")
    (folder / f"{VIT_MODEL}.json").write_text(json.dumps(VIT_CONFIG))
    open_clip.add_model_config(folder)
    torch.manual_seed(0)
    path = folder / "vit.pt"
    torch.save(open_clip.create_model(VIT_MODEL).state_dict(), path)
    return ModelSpec(VIT_MODEL, str(path))


@pytest.fixture(scope="session")
def clip_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded random-init transformers CLIPModel (clip_folders.SMALL), saved once as
    save_pretrained saves it, with its tokenizer and preprocessor files; tests copy it to
    change it."""
    from clip_folders import SMALL, save_clip_folder

    return save_clip_folder(tmp_path_factory.mktemp("transformers") / "my-finetune", SMALL)


def own_fingerprint(checkpoint: Path, tmp_path: Path, name: str = TEST_MODEL):
    """The weights of `checkpoint` with one of them nudged, by at most 1e-4 and differently for
    each test folder, so that they are weights no other test uses: the model gets an export
    (keyed on the weights' content) of its own."""
    import zlib

    import torch

    from clipcli.models.names import ModelSpec

    state = torch.load(checkpoint, weights_only=True)
    first = next(key for key, value in state.items() if value.is_floating_point())
    nudge = 1e-4 * (zlib.crc32(str(tmp_path).encode()) % 99991 + 1) / 99991
    state[first] = state[first].clone()
    state[first].view(-1)[0] += nudge
    own = tmp_path / f"own-{Path(checkpoint).name}"
    torch.save(state, own)
    return ModelSpec(name, str(own))


def without_torch(code: str, *, signature: str | None = None):
    """Run `code` in a fresh interpreter, assert it never imported torch, return its `result`.

    `code` starts from `from pathlib import Path` and leaves something JSON-able in `result`.
    With `signature`, the child process takes its CPU to be one of that signature.
    """
    import subprocess
    import sys

    prelude = "import json, sys\nfrom pathlib import Path\n"
    if signature is not None:
        prelude += (
            f"import clipcli.models.cpu\nclipcli.models.cpu.signature = lambda: {signature!r}\n"
        )
    script = (
        prelude
        + code
        + "\nprint(json.dumps({'torch': 'torch' in sys.modules, 'result': result}))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout.strip().splitlines()[-1])
    assert answer["torch"] is False
    return answer["result"]


def edit_cpu_record(spec, **figures: dict) -> None:
    """Overwrite some of this CPU's measured figures in the model's export.json, e.g.
    `edit_cpu_record(spec, torch={"rate": 0.0})` makes torch the slowest backend here."""
    from clipcli.encoders.export_cache import ExportFolder
    from clipcli.models import cpu

    folder = ExportFolder.for_spec(spec)
    cpus = folder.read_meta()["cpus"]
    record = cpus[cpu.signature()]
    for kind, values in figures.items():
        record[kind] = {**record.get(kind, {}), **values}
    folder.update_meta(cpus=cpus)


# What each migration added, undone: the last one first.
_UNDONE = (
    # The hash of each photo's pixels: its pHash and colour grid.
    ("ALTER TABLE images DROP COLUMN colours", "ALTER TABLE images DROP COLUMN phash"),
    # When each photo was taken, and its index; the roots.
    (
        "DROP INDEX images_taken_at",
        "ALTER TABLE images DROP COLUMN taken_at",
        "DROP TABLE roots",
    ),
)


def as_of_the_previous_schema(index: Path, migrations: int = 1) -> None:
    """Turn an index's catalog back into what the clipcli before the last `migrations`
    migrations wrote."""
    import sqlite3

    from clipcli.store.catalog import CATALOG_FILE, SCHEMA_VERSION

    db = sqlite3.connect(index / CATALOG_FILE)
    with db:
        for statements in _UNDONE[:migrations]:
            for statement in statements:
                db.execute(statement)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION - migrations}")
    db.close()


def as_of_the_schema_before_dates(index: Path) -> None:
    """Turn an index's catalog back into what the clipcli before dates (and roots) wrote."""
    as_of_the_previous_schema(index, migrations=2)
