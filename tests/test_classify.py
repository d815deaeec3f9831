"""`clipcli classify`: JSON contract, input order, error entries and exit codes."""

from __future__ import annotations

import json
import math
import os

import pytest
from conftest import make_image, make_non_utf8_image


def test_json_has_one_entry_per_image_in_input_order(cli, model_args, photo_folder, tmp_path):
    single = make_image(tmp_path / "first.png", "yellow")
    result, data = cli.json("classify", single, photo_folder, "--labels", "red,green", *model_args)
    assert result.exit_code == 0, result.stderr
    expected = [single] + sorted(
        [
            photo_folder / "blue.png",
            photo_folder / "green.jpg",
            photo_folder / "nested" / "black.bmp",
            photo_folder / "nested" / "white.webp",
            photo_folder / "red.png",
        ],
        key=str,
    )
    assert [entry["path"] for entry in data] == [str(p) for p in expected]


def test_predictions_are_best_first_with_probabilities_over_all_labels(cli, model_args, tmp_path):
    image = make_image(tmp_path / "a.png", "red")
    labels = "red,green,blue,a cat,a dog"
    result, data = cli.json("classify", image, "--labels", labels, "--top-k", "5", *model_args)
    assert result.exit_code == 0
    predictions = data[0]["predictions"]
    assert set(predictions[0]) == {"label", "score", "similarity"}
    assert sorted(p["label"] for p in predictions) == sorted(labels.split(","))
    scores = [p["score"] for p in predictions]
    assert scores == sorted(scores, reverse=True)
    assert math.isclose(sum(scores), 1.0, abs_tol=1e-6)
    assert all(-1.0 <= p["similarity"] <= 1.0 for p in predictions)


def test_top_k_cuts_the_list_but_not_the_softmax(cli, model_args, tmp_path):
    image = make_image(tmp_path / "a.png", "red")
    _, full = cli.json("classify", image, "--labels", "red,green,blue,black", *model_args)
    _, top2 = cli.json(
        "classify", image, "--labels", "red,green,blue,black", "--top-k", "2", *model_args
    )
    assert len(top2[0]["predictions"]) == 2
    assert top2[0]["predictions"] == full[0]["predictions"][:2]


def test_a_single_label_is_warned_about_since_every_image_scores_100_percent(
    cli, model_args, tmp_path
):
    image = make_image(tmp_path / "a.png", "red")

    result, data = cli.json("classify", image, "--labels", "a red thing", *model_args)

    assert result.exit_code == 0
    assert data[0]["predictions"][0]["score"] == 1.0
    assert result.stderr == ("warning: only one label: every image scores 100%; give two or more\n")
    assert cli("classify", image, "--labels", "red,blue", *model_args).stderr == ""


def test_unreadable_and_missing_paths_become_error_entries_and_exit_1(cli, model_args, tmp_path):
    good = make_image(tmp_path / "good.png", "red")
    bad = tmp_path / "bad.jpg"
    bad.write_text("not a picture")
    missing = tmp_path / "missing.png"
    result, data = cli.json("classify", bad, good, missing, "--labels", "red,blue", *model_args)
    assert result.exit_code == 1
    assert data[0] == {"path": str(bad), "error": "not an image (unrecognised format)"}
    assert data[1]["path"] == str(good) and len(data[1]["predictions"]) == 2
    assert data[2] == {"path": str(missing), "error": "no such file"}
    assert f"{bad}: not an image" in result.stderr
    assert f"{missing}: no such file" in result.stderr


def test_table_output_names_each_image_and_label(cli, model_args, tmp_path):
    image = make_image(tmp_path / "pic.png", "red")
    result = cli("classify", image, "--labels", "sunset,kitten", "--format", "table", *model_args)
    assert result.exit_code == 0
    path, header, _, *rows, blank = result.stdout.splitlines()
    assert (path, blank) == (str(image), "")
    assert header.split() == ["label", "┃", "probability", "┃", "┃", "cosine"]
    assert sorted(row.split()[0] for row in rows) == ["kitten", "sunset"]
    assert all(row.split()[2].endswith("%") for row in rows)


def test_labels_file_adds_to_labels_ignoring_blanks_comments_and_repeats(cli, model_args, tmp_path):
    image = make_image(tmp_path / "a.png")
    labels_file = tmp_path / "labels.txt"
    labels_file.write_text("# animals\ncat\n\ndog\ncat\n")
    result, data = cli.json(
        "classify", image, "--labels", "bird", "--labels-file", labels_file, *model_args
    )
    assert result.exit_code == 0
    assert sorted(p["label"] for p in data[0]["predictions"]) == ["bird", "cat", "dog"]


def test_no_labels_is_a_usage_error(cli, model_args, tmp_path):
    image = make_image(tmp_path / "a.png")
    result = cli("classify", image, "--labels", " , ", *model_args)
    assert result.exit_code == 2
    assert "no labels given" in result.stderr


def test_template_file_and_unknown_template_name(cli, model_args, tmp_path):
    image = make_image(tmp_path / "a.png")
    templates = tmp_path / "mine.txt"
    templates.write_text("# my prompts\n\na sketch of a {}.\na {} in the wild\n")
    ok = cli("classify", image, "--labels", "cat,dog", "--templates", templates, *model_args)
    assert ok.exit_code == 0, ok.stderr
    unknown = cli("classify", image, "--labels", "cat", "--templates", "nope", *model_args)
    assert unknown.exit_code == 2
    assert "unknown template set 'nope'" in unknown.stderr
    assert "imagenet" in unknown.stderr


def test_template_without_placeholder_names_the_file_and_line(cli, model_args, tmp_path):
    image = make_image(tmp_path / "a.png")
    templates = tmp_path / "broken.txt"
    templates.write_text("a photo of a {}.\na photo of nothing\n")
    result = cli("classify", image, "--labels", "cat", "--templates", templates, *model_args)
    assert result.exit_code == 2
    assert f"{templates}:2:" in result.stderr


def test_unknown_model_exits_2_with_close_matches(cli, tmp_path):
    image = make_image(tmp_path / "a.png")
    result = cli("classify", image, "--labels", "cat", "--model", "ViT-B-23")
    assert result.exit_code == 2
    assert "unknown model 'ViT-B-23'" in result.stderr
    assert "ViT-B-32" in result.stderr


def test_unknown_pretrained_tag_exits_2_with_known_tags(cli, tmp_path):
    image = make_image(tmp_path / "a.png")
    result = cli(
        "classify",
        image,
        "--labels",
        "cat",
        "--model",
        "ViT-B-32-256",
        "--pretrained",
        "no-such-tag",
    )
    assert result.exit_code == 2
    assert "datacomp_s34b_b86k" in result.stderr


def test_missing_checkpoint_file_is_named(cli, tmp_path):
    image = make_image(tmp_path / "a.png")
    missing = tmp_path / "weights" / "missing.pt"
    result = cli(
        "classify", image, "--labels", "cat", "--model", "clipcli-shapes", "--pretrained", missing
    )
    assert result.exit_code == 2
    assert str(missing) in result.stderr


def test_model_comes_from_the_environment(cli, random_checkpoint, tmp_path, monkeypatch):
    image = make_image(tmp_path / "a.png")
    monkeypatch.setenv("CLIPCLI_MODEL", "clipcli-shapes")
    monkeypatch.setenv("CLIPCLI_PRETRAINED", str(random_checkpoint))
    result, data = cli.json("classify", image, "--labels", "cat,dog")
    assert result.exit_code == 0, result.stderr
    assert len(data[0]["predictions"]) == 2


def test_errors_are_one_line_without_traceback(cli, tmp_path):
    image = make_image(tmp_path / "a.png")
    result = cli("classify", image, "--labels", "cat", "--model", "nonsense-model")
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr


def test_help_lists_the_documented_flags(cli):
    result = cli("classify", "--help")
    for flag in [
        "--labels",
        "--labels-file",
        "--templates",
        "--top-k",
        "--json",
        "--format",
        "--model",
        "--pretrained",
        "--device",
        "--batch-size",
    ]:
        assert flag in result.stdout


def test_batch_size_does_not_change_results(cli, model_args, photo_folder):
    _, one = cli.json(
        "classify", photo_folder, "--labels", "red,blue", "--batch-size", "1", *model_args
    )
    _, many = cli.json(
        "classify", photo_folder, "--labels", "red,blue", "--batch-size", "64", *model_args
    )
    for a, b in zip(one, many, strict=True):
        assert a["path"] == b["path"]
        for pa, pb in zip(a["predictions"], b["predictions"], strict=True):
            assert pa["label"] == pb["label"]
            assert abs(pa["similarity"] - pb["similarity"]) < 1e-5


def test_a_missing_file_alone_gets_its_error_entry_and_exit_1(cli, model_args, tmp_path):
    missing = tmp_path / "no-such-file.jpg"
    result, data = cli.json("classify", missing, "--labels", "red,blue", *model_args)
    assert result.exit_code == 1
    assert data == [{"path": str(missing), "error": "no such file"}]
    assert result.stderr.strip() == f"error: {missing}: no such file"


def test_a_batch_of_only_bad_files_keeps_the_answers_of_the_other_batches(
    cli, model_args, tmp_path
):
    album = tmp_path / "album"
    good = [make_image(album / f"{i:02d}.png", (8 * i, 0, 255 - 8 * i)) for i in range(32)]
    empty = album / "zzz.jpg"  # sorted last: alone in the second batch of the default 32
    empty.write_bytes(b"")
    result, data = cli.json("classify", album, "--labels", "red,blue", *model_args)
    assert result.exit_code == 1
    assert [entry["path"] for entry in data] == [str(p) for p in [*good, empty]]
    assert all(len(entry["predictions"]) == 2 for entry in data[:32])
    assert data[32] == {"path": str(empty), "error": "empty file (0 bytes)"}


def test_batch_size_1_keeps_every_good_answer_around_a_bad_file(cli, model_args, tmp_path):
    first = make_image(tmp_path / "a.png", "red")
    bad = tmp_path / "b.jpg"
    bad.write_text("not a picture")
    last = make_image(tmp_path / "c.png", "blue")
    result, data = cli.json(
        "classify", first, bad, last, "--labels", "red,blue", "--batch-size", "1", *model_args
    )
    assert result.exit_code == 1
    assert [entry["path"] for entry in data] == [str(first), str(bad), str(last)]
    assert len(data[0]["predictions"]) == 2 and len(data[2]["predictions"]) == 2
    assert data[1] == {"path": str(bad), "error": "not an image (unrecognised format)"}


@pytest.mark.parametrize("contents", [[], ["notes.txt", "archive.zip"]], ids=["empty", "no-images"])
def test_a_folder_without_images_is_warned_about_and_exits_1_without_loading_a_model(
    cli, tmp_path, monkeypatch, contents
):
    from clipcli import classify as classifier

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded with nothing to classify")

    monkeypatch.setattr(classifier, "load_image_encoder", no_model)
    folder = tmp_path / "album"
    folder.mkdir()
    for name in contents:
        (folder / name).write_text("not a picture")
    result, data = cli.json("classify", folder, "--labels", "a,b")
    assert result.exit_code == 1
    assert data == []
    assert result.stderr.strip() == f"warning: {folder}: no images found"


def test_a_folder_without_images_beside_real_ones_still_exits_1(cli, model_args, tmp_path):
    image = make_image(tmp_path / "a.png", "red")
    empty = tmp_path / "empty"
    empty.mkdir()
    result, data = cli.json("classify", empty, image, "--labels", "red,blue", *model_args)
    assert result.exit_code == 1
    assert [entry["path"] for entry in data] == [str(image)]
    assert len(data[0]["predictions"]) == 2
    assert result.stderr.strip() == f"warning: {empty}: no images found"
    table = cli("classify", empty, image, "--labels", "red,blue", *model_args)
    assert table.exit_code == 1 and "a.png" in table.stdout and str(empty) not in table.stdout


def test_a_file_whose_name_is_not_utf8_is_classified_under_a_path_that_opens_it(
    random_checkpoint, photo_folder
):
    from clipcli.classify import classify_paths
    from clipcli.zeroshot.templates import load_templates

    odd = make_non_utf8_image(photo_folder)

    results = classify_paths(
        [photo_folder],
        ["red", "purple"],
        load_templates("default"),
        model="clipcli-shapes",
        pretrained=str(random_checkpoint),
    )

    assert str(odd) in [result.path for result in results]
    assert all(os.path.exists(result.path) and result.predictions for result in results)


def test_a_checkpoint_given_without_a_model_must_fit_the_default_one(
    cli, vit_spec, tmp_path, monkeypatch
):
    import open_clip
    from conftest import VIT_CONFIG, VIT_MODEL

    from clipcli import settings

    # The tiny ViT at another input size, as ViT-B-32-256 is to ViT-B-32: open_clip would
    # quietly resize the position embeddings of the tiny ViT's weights to fit it.
    wider = {**VIT_CONFIG, "vision_cfg": {**VIT_CONFIG["vision_cfg"], "image_size": 96}}
    (tmp_path / "clipcli-test-vit-96.json").write_text(json.dumps(wider))
    open_clip.add_model_config(tmp_path / "clipcli-test-vit-96.json")
    monkeypatch.setattr(settings, "DEFAULT_MODEL", "clipcli-test-vit-96")
    image = make_image(tmp_path / "a.png")

    result = cli("classify", image, "--labels", "a,b", "--pretrained", vit_spec.pretrained)

    assert result.exit_code == 2
    assert result.stderr == (
        f"error: {vit_spec.pretrained}: not a checkpoint for clipcli-test-vit-96, the default"
        " model (1 of its tensors differ, such as visual.positional_embedding); name the"
        " checkpoint's architecture with --model, e.g. --model ViT-B-32\n"
    )
    named = cli(
        "classify",
        image,
        "--labels",
        "a,b",
        "--pretrained",
        vit_spec.pretrained,
        "--model",
        VIT_MODEL,
    )
    assert named.exit_code == 0, named.stderr


# The tiny ViT trained as SigLIP is: a learnt logit bias beside the scale (open_clip's
# init_logit_bias, -10 in SigLIP's configs), with CLIP's tokenizer, which needs no hub.
SIGMOID_MODEL = "clipcli-test-vit-sigmoid"


@pytest.fixture(scope="module")
def sigmoid_spec(tmp_path_factory):
    import open_clip
    import torch
    from conftest import VIT_CONFIG

    from clipcli.models.names import ModelSpec

    folder = tmp_path_factory.mktemp("sigmoid")
    (folder / f"{SIGMOID_MODEL}.json").write_text(
        json.dumps({**VIT_CONFIG, "init_logit_bias": -10})
    )
    open_clip.add_model_config(folder)
    torch.manual_seed(0)
    torch.save(open_clip.create_model(SIGMOID_MODEL).state_dict(), folder / "sigmoid.pt")
    return ModelSpec(SIGMOID_MODEL, str(folder / "sigmoid.pt"))


def sigmoid_reference(spec, images, labels):
    """open_clip's README recipe for SigLIP: sigmoid(scale * cosine + bias), label by label."""
    import open_clip
    import torch
    from PIL import Image

    model, _, preprocess = open_clip.create_model_and_transforms(spec.name, spec.pretrained)
    tokenizer = open_clip.get_tokenizer(spec.name)
    with torch.no_grad():
        classifier = open_clip.build_zero_shot_classifier(
            model.eval(), tokenizer, labels, ["a photo of a {}."]
        )
        pixels = torch.stack([preprocess(Image.open(path)) for path in images])
        cosines = model.encode_image(pixels, normalize=True) @ classifier
        return torch.sigmoid(model.logit_scale.exp() * cosines + model.logit_bias).numpy()


def test_a_sigmoid_trained_model_gives_each_label_its_own_probability(cli, sigmoid_spec, tmp_path):
    images = [make_image(tmp_path / f"{c}.png", c, (90, 70)) for c in ("red", "navy")]
    labels = ["red", "blue", "a cat"]
    expected = sigmoid_reference(sigmoid_spec, images, labels)

    result, data = cli.json(
        *["classify", *images, "--labels", ",".join(labels), "--precision", "fp32"],
        *["--model", sigmoid_spec.name, "--pretrained", sigmoid_spec.pretrained],
    )

    assert result.exit_code == 0, result.stderr
    for entry, row in zip(data, expected, strict=True):
        by_label = {p["label"]: p for p in entry["predictions"]}
        assert set(by_label["red"]) == {"label", "score", "similarity", "sigmoid"}
        found = [by_label[label]["sigmoid"] for label in labels]
        assert found == pytest.approx(row.tolist(), rel=1e-4)
        # score stays the softmax over the labels given
        assert math.isclose(sum(p["score"] for p in entry["predictions"]), 1.0, abs_tol=1e-6)


@pytest.mark.parametrize("kind", ["sigmoid-trained", "softmax-trained"])
def test_classify_without_torch_reports_what_classify_with_torch_reports(
    cli, sigmoid_spec, vit_spec, tmp_path, kind
):
    from conftest import edit_cpu_record, without_torch

    from clipcli.encoders.choose import load_encoder

    spec = sigmoid_spec if kind == "sigmoid-trained" else vit_spec
    images = [make_image(tmp_path / f"{c}.png", c, (90, 70)) for c in ("red", "navy")]
    load_encoder(spec, "cpu", "auto")  # exported
    edit_cpu_record(spec, torch={"rate": 0.0})  # an ONNX tower, whatever this CPU timed
    result, expected = cli.json(
        *["classify", *images, "--labels", "red,blue,a cat"],
        *["--model", spec.name, "--pretrained", spec.pretrained],
    )
    assert result.exit_code == 0, result.stderr  # the labels are cached now

    found = without_torch(
        "from clipcli.classify import classify_paths\n"
        "from clipcli.cli.render import classifications_json\n"
        "from clipcli.zeroshot.templates import load_templates\n"
        f"paths = [Path(p) for p in {[str(p) for p in images]!r}]\n"
        "found = classify_paths(paths, ['red', 'blue', 'a cat'], load_templates('default'),"
        f" model={spec.name!r}, pretrained={spec.pretrained!r})\n"
        "result = classifications_json(found)"
    )

    for torch_free, loaded in zip(found, expected, strict=True):
        for ours, theirs in zip(torch_free["predictions"], loaded["predictions"], strict=True):
            assert ours.keys() == theirs.keys()
            assert ("sigmoid" in ours) == (kind == "sigmoid-trained")
            assert ours.pop("label") == theirs.pop("label")
            assert ours == pytest.approx(theirs, rel=1e-4, abs=1e-6)


def test_an_export_made_before_the_bias_was_recorded_gets_it_from_the_next_load(
    sigmoid_spec, tmp_path
):
    from conftest import own_fingerprint

    from clipcli.encoders import choose
    from clipcli.encoders.export_cache import ExportFolder

    spec = own_fingerprint(sigmoid_spec.pretrained, tmp_path, SIGMOID_MODEL)
    bias = choose.load_encoder(spec, "cpu", "auto").logit_bias
    folder = ExportFolder.for_spec(spec)
    meta = json.loads((folder.path / "export.json").read_text())
    del meta["logit_bias"]
    (folder.path / "export.json").write_text(json.dumps(meta))
    assert choose.exported_image_encoder(spec) is None  # it would classify without the bias

    choose.load_encoder(spec, "cpu", "auto")

    assert folder.read_meta()["logit_bias"] == bias == pytest.approx(-10.0)
