"""A transformers CLIP checkpoint gives what transformers itself gives: `clipcli classify`'s
probabilities, and clipcli's image and text embeddings, against the tutorial recipe
(CLIPProcessor's inputs into CLIPModel, logits_per_image through a softmax), on real photos,
through torch fp32 and through whichever backend `auto` takes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from clip_folders import VIT_B_32, save_clip_folder, save_photos, transformers_reference

from clipcli.encoders.batching import embed_files
from clipcli.encoders.choose import full_model, load_image_encoder, requested_spec
from clipcli.encoders.tower_checks import AUTO_MIN_COSINE
from clipcli.zeroshot.labels import LabelText

LABELS = ["cat", "astronaut", "coffee cup", "rocket", "horse"]
# The default template set is one template, so these are the prompts classify embeds.
PROMPTS = [f"a photo of a {label}." for label in LABELS]
# Where auto runs the image tower in int8 (it keeps the agreement gate on this CPU: cosine 0.999
# to torch fp32), a trained CLIP's temperature moves probabilities by as much as this (2e-3 on
# the small model here); torch and the fp32 export agree with transformers to 1e-4.
INT8_PROBABILITY = 1e-2


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return save_photos(tmp_path_factory.mktemp("photos"))


@pytest.fixture
def small(clip_folder: Path) -> Path:
    return clip_folder


@pytest.fixture(scope="module")
def vit_b_32(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_clip_folder(tmp_path_factory.mktemp("vit-b-32") / "clip-vit-base-patch32", VIT_B_32)


def classified(cli, folder: Path, photos: list[Path], *precision: str) -> np.ndarray:
    """`clipcli classify`'s probabilities, [photo, label] in the order given."""
    result, data = cli.json(
        "classify",
        *photos,
        *("--labels", ",".join(LABELS), "--templates", "default", "--top-k", str(len(LABELS))),
        *("--model", folder, *precision),
    )
    assert result.exit_code == 0, result.stderr
    assert [entry["path"] for entry in data] == [str(photo) for photo in photos]
    scores = [{p["label"]: p["score"] for p in entry["predictions"]} for entry in data]
    return np.array([[row[label] for label in LABELS] for row in scores])


def embedded(folder: Path, photos: list[Path], precision: str) -> tuple[str, Any, Any]:
    """(backend, image embeddings, text embeddings): what classify embeds the photos and the
    prompts with, for a job of these photos."""
    spec = requested_spec(str(folder), None)
    images = load_image_encoder(spec, "cpu", precision, images=len(photos))
    pictures = next(embed_files(images, photos, batch_size=len(photos))).embeddings
    labels = LabelText(spec, "cpu", precision, full_model(images, spec, "cpu", precision))
    return images.backend, pictures, labels.encode_texts(PROMPTS)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def assert_like_transformers(cli, folder: Path, photos: list[Path], precision: str) -> None:
    expected, images, texts = transformers_reference(folder, photos, PROMPTS)
    flag = () if precision == "auto" else ("--precision", precision)
    probabilities = classified(cli, folder, photos, *flag)
    backend, got_images, got_texts = embedded(folder, photos, precision)
    tolerance, cosine = (INT8_PROBABILITY, AUTO_MIN_COSINE) if "int8" in backend else (1e-4, 0.9999)
    np.testing.assert_allclose(probabilities, expected, atol=tolerance)
    assert cosines(got_images, images).min() >= cosine
    assert cosines(got_texts, texts).min() >= 0.9999


@pytest.mark.parametrize("precision", ["fp32", "auto"])
def test_a_small_checkpoint_classifies_photos_as_transformers_does(cli, small, photos, precision):
    assert_like_transformers(cli, small, photos, precision)


@pytest.mark.slow
def test_the_vit_b_32_geometry_matches_transformers_on_torch(cli, vit_b_32, photos):
    assert_like_transformers(cli, vit_b_32, photos, "fp32")


@pytest.mark.slow  # its first auto run exports the tower and checks int8 graphs: about 90 s
def test_the_vit_b_32_geometry_matches_transformers_on_auto(cli, vit_b_32, photos):
    assert_like_transformers(cli, vit_b_32, photos, "auto")


def test_the_reference_is_not_uniform(small, photos):
    """Random weights at a trained CLIP's temperature: probabilities a wrong model would miss."""
    probabilities, _, _ = transformers_reference(small, photos, PROMPTS)
    assert probabilities.max() - probabilities.min() > 0.05
