"""The bundled clipcli-shapes model answers correctly on freshly drawn images of its world.

These are the quality targets of the model (top-1 >= 0.95 for colour+shape, shape-only and
colour-only labels; mean precision@5 >= 0.95 for search), measured through the real commands.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clipcli.encoders.choose import load_encoder
from clipcli.media.decode import load_image
from clipcli.models.names import BUNDLED_WEIGHTS, ModelSpec
from clipcli.shapes import COLOURS, SHAPES, ShapeSpec, draw_shape, write_sample_folder

SEED = 20261122  # fixed, and different from any seed the training script uses
MODEL = ["--model", "clipcli-shapes"]


@pytest.fixture(scope="module")
def drawn(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ShapeSpec]:
    """288 images: six of each of the 48 colour-shape pairs, at random sizes and formats."""
    folder = tmp_path_factory.mktemp("world")
    return {str(path): spec for path, spec in write_sample_folder(folder, 288, seed=SEED)}


def top1(cli, drawn: dict[str, ShapeSpec], labels: list[str], truth) -> float:
    folder = Path(next(iter(drawn))).parent
    result, data = cli.json(
        "classify", folder, "--labels", ",".join(labels), "--top-k", "1", *MODEL
    )
    assert result.exit_code == 0, result.stderr
    assert len(data) == len(drawn)
    hits = [entry["predictions"][0]["label"] == truth(drawn[entry["path"]]) for entry in data]
    return float(np.mean(hits))


def test_bundled_weights_ship_inside_the_package():
    weights = BUNDLED_WEIGHTS["clipcli-shapes"]
    assert weights.is_file()
    assert weights.stat().st_size < 16 * 1024 * 1024


def test_colour_and_shape_labels(cli, drawn):
    labels = [f"{c} {s}" for c in COLOURS for s in SHAPES]
    assert top1(cli, drawn, labels, lambda spec: spec.label) >= 0.95


def test_shape_only_labels(cli, drawn):
    assert top1(cli, drawn, list(SHAPES), lambda spec: spec.shape) >= 0.95


def test_colour_only_labels(cli, drawn):
    assert top1(cli, drawn, list(COLOURS), lambda spec: spec.colour) >= 0.95


def test_search_finds_each_colour_shape_pair(cli, drawn, tmp_path):
    folder = Path(next(iter(drawn))).parent
    index = tmp_path / "index"
    result, report = cli.json("index", folder, "--index", index, *MODEL)
    assert result.exit_code == 0, result.stderr
    assert report["total"] == len(drawn)
    precisions = []
    for colour in COLOURS:
        for shape in SHAPES:
            result, hits = cli.json(
                "search", f"a {colour} {shape}", "--index", index, "--top-k", "5"
            )
            assert result.exit_code == 0, result.stderr
            wanted = ShapeSpec(shape, colour)
            precisions.append(np.mean([drawn[h["path"]] == wanted for h in hits]))
    assert float(np.mean(precisions)) >= 0.95


def test_reduced_jpeg_decoding_keeps_every_label(tmp_path):
    """Large JPEGs decoded at 1/2-1/8 scale get the same label as fully decoded ones."""
    encoder = load_encoder(
        ModelSpec("clipcli-shapes", str(BUNDLED_WEIGHTS["clipcli-shapes"])), "cpu", "fp32"
    )
    rng = np.random.default_rng(SEED + 1)
    labels = [f"{c} {s}" for c in COLOURS for s in SHAPES]
    from clipcli.zeroshot.labels import label_embeddings
    from clipcli.zeroshot.templates import load_templates

    text = label_embeddings(encoder, labels, load_templates("default"))
    paths = []
    for i, (colour, shape) in enumerate((c, s) for c in COLOURS for s in SHAPES):
        size = (int(rng.integers(600, 1201)), int(rng.integers(600, 1201)))
        image, _ = draw_shape(rng, shape, colour, size)
        paths.append(tmp_path / f"{i}.jpg")
        image.save(paths[-1], quality=85)

    def predictions(min_size: int | None) -> list[int]:
        import torch

        batch = torch.stack([encoder.preprocess(load_image(p, min_size)) for p in paths])
        return list(np.argmax(encoder.encode_images(batch) @ text.T, axis=1))

    assert predictions(encoder.input_size) == predictions(None)
