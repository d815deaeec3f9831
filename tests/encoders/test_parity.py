"""clipcli's numbers equal a reference computed directly with open_clip."""

from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch
from conftest import TEST_MODEL, make_image
from PIL import Image

from clipcli.models.names import BUNDLED_CONFIG_DIR

LABELS = ["red circle", "blue square", "a cat", "a dog", "a horse"]


def open_clip_model(checkpoint):
    """(model, preprocess, tokenizer) loaded by open_clip alone, as its README shows."""
    open_clip.add_model_config(BUNDLED_CONFIG_DIR)
    model, _, preprocess = open_clip.create_model_and_transforms(
        TEST_MODEL, pretrained=str(checkpoint)
    )
    return model.eval(), preprocess, open_clip.get_tokenizer(TEST_MODEL)


def reference(checkpoint, images, labels, templates):
    """The open_clip README recipe: eval preprocessing, build_zero_shot_classifier, softmax."""
    model, preprocess, tokenizer = open_clip_model(checkpoint)
    with torch.no_grad():
        classifier = open_clip.build_zero_shot_classifier(
            model, tokenizer, labels, templates, num_classes_per_batch=2
        )
        batch = torch.stack([preprocess(Image.open(p).convert("RGB")) for p in images])
        features = model.encode_image(batch, normalize=True)
        similarities = features @ classifier
        probabilities = (model.logit_scale.exp() * similarities).softmax(dim=-1)
    return similarities.numpy(), probabilities.numpy()


@pytest.mark.parametrize(
    "template_set, precision",
    [
        ("default", "fp32"),
        ("imagenet", "fp32"),
        pytest.param("default", "onnx", marks=pytest.mark.backends),
        ("imagenet", "onnx"),
    ],
)
def test_similarities_and_scores_match_open_clip(
    cli, model_args, random_checkpoint, tmp_path, template_set, precision
):
    images = [
        make_image(tmp_path / "red.png", "red", (80, 60)),
        make_image(tmp_path / "blue.jpg", "blue", (50, 90)),
        make_image(tmp_path / "grey.png", (128, 128, 128), (64, 64)),
    ]
    from clipcli.zeroshot.templates import load_templates

    templates = list(load_templates(template_set).templates)
    ref_sims, ref_probs = reference(random_checkpoint, images, LABELS, templates)

    result, data = cli.json(
        *["classify", *images, "--labels", ",".join(LABELS)],
        "--templates",
        template_set,
        "--precision",
        precision,
        "--top-k",
        str(len(LABELS)),
        *model_args,
    )
    assert result.exit_code == 0, result.stderr
    for row, entry in enumerate(data):
        by_label = {p["label"]: p for p in entry["predictions"]}
        for column, label in enumerate(LABELS):
            assert by_label[label]["similarity"] == pytest.approx(ref_sims[row, column], abs=1e-4)
            assert by_label[label]["score"] == pytest.approx(ref_probs[row, column], abs=1e-4)


def test_imagenet_template_file_is_open_clips_list():
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    from clipcli.zeroshot.templates import load_templates

    expected = [template("{}") for template in OPENAI_IMAGENET_TEMPLATES]
    assert list(load_templates("imagenet").templates) == expected
    assert len(expected) == 80


def test_search_scores_are_cosines_from_open_clip(
    cli, model_args, random_checkpoint, photo_folder, tmp_path
):
    index = tmp_path / "index"
    indexed = cli("index", photo_folder, "--index", index, "--precision", "fp32", *model_args)
    assert indexed.exit_code == 0
    result, hits = cli.json("search", "a red square", "--index", index, "--top-k", "5")
    assert result.exit_code == 0, result.stderr

    model, preprocess, tokenizer = open_clip_model(random_checkpoint)
    with torch.no_grad():
        text = model.encode_text(tokenizer(["a red square"]), normalize=True)[0].numpy()
        for hit in hits:
            image = preprocess(Image.open(hit["path"]).convert("RGB")).unsqueeze(0)
            vector = model.encode_image(image, normalize=True)[0].numpy()
            assert hit["score"] == pytest.approx(float(np.dot(text, vector)), abs=1e-4)
    assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
