"""Shared fixtures: an isolated clipcli home per test, a random-init checkpoint, image makers."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from clipcli.cli import app

TEST_MODEL = "clipcli-shapes"


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

    from clipcli.models import BUNDLED_CONFIG_DIR

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


@pytest.fixture
def photo_folder(tmp_path: Path) -> Path:
    """Five small images in two folders, one of them nested."""
    folder = tmp_path / "photos"
    for name, colour in [("red.png", "red"), ("green.jpg", "green"), ("blue.png", "blue")]:
        make_image(folder / name, colour)
    make_image(folder / "nested" / "white.webp", "white")
    make_image(folder / "nested" / "black.bmp", "black")
    return folder


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


ImageMaker = Callable[..., Path]
