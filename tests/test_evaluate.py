"""`clipcli eval`: zero-shot scores on a labelled folder, equal to CLIP_benchmark's on the same
embeddings, with template sets compared, label texts mapped, and images embedded once."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import TEST_MODEL, make_image

from clipcli.evaluate import evaluate_dataset
from clipcli.shapes import SHAPES, write_labelled_folder
from clipcli.zeroshot.templates import load_templates

JSON_KEYS = {
    "dataset",
    "model",
    "templates",
    "classes",
    "images",
    "skipped",
    "acc1",
    "acc5",
    "mean_per_class_recall",
    "per_class",
    "confusion",
    "seconds",
}
SHAPES_MODEL = ["--model", TEST_MODEL]


@pytest.fixture(scope="module")
def shapes_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six shape classes (any colour), eight drawn images each, in PNG, JPEG and WEBP."""
    root = tmp_path_factory.mktemp("dataset") / "shapes"
    write_labelled_folder(root, 8, seed=11)
    return root


@pytest.fixture
def dataset(shapes_dataset: Path, tmp_path: Path) -> Path:
    """A copy of the shapes dataset that a test may change."""
    return Path(shutil.copytree(shapes_dataset, tmp_path / "shapes"))


def reference_scores(root: Path, templates: list[str], labels: list[str], k: int) -> dict:
    """The scores as CLIP_benchmark computes them, from open_clip's own embeddings: its
    zero-shot classifier, torch's top-k, and balanced accuracy for mean per-class recall."""
    import open_clip
    import torch
    from open_clip.zero_shot_classifier import build_zero_shot_classifier

    from clipcli.media.decode import load_image
    from clipcli.models.names import BUNDLED_CONFIG_DIR, BUNDLED_WEIGHTS

    open_clip.add_model_config(BUNDLED_CONFIG_DIR)
    model, _, preprocess = open_clip.create_model_and_transforms(
        TEST_MODEL, pretrained=str(BUNDLED_WEIGHTS[TEST_MODEL])
    )
    model.eval()
    tokenizer = open_clip.get_tokenizer(TEST_MODEL)
    folders = sorted(p.name for p in root.iterdir() if p.is_dir())
    files = [(path, label) for label, f in enumerate(folders) for path in (root / f).iterdir()]
    files.sort(key=lambda item: str(item[0]))
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    with torch.no_grad():
        pixels = torch.stack([preprocess(load_image(path, min_size=size)) for path, _ in files])
        images = torch.nn.functional.normalize(model.encode_image(pixels), dim=-1)
        classifier = build_zero_shot_classifier(model, tokenizer, labels, templates)
        logits = 100.0 * images @ classifier
    target = torch.tensor([label for _, label in files])
    top = logits.topk(min(k, len(labels)), 1, True, True)[1].t()
    correct = top.eq(target.view(1, -1).expand_as(top))
    predicted = logits.argmax(dim=1)
    recalls = [
        float((predicted[target == c] == c).float().mean())
        for c in range(len(labels))
        if (target == c).any()
    ]
    confusion = np.zeros((len(labels), len(labels)), dtype=int)
    for truth, guess in zip(target.tolist(), predicted.tolist(), strict=True):
        confusion[truth, guess] += 1
    return {
        "acc1": float(correct[:1].reshape(-1).float().sum()) / len(files),
        "acc5": float(correct[:k].reshape(-1).float().sum()) / len(files),
        "mean_per_class_recall": float(np.mean(recalls)),
        "confusion": confusion.tolist(),
        "images": len(files),
    }


def test_the_bundled_model_scores_as_clip_benchmark_does_on_the_same_embeddings(
    cli, shapes_dataset
):
    result, data = cli.json("eval", shapes_dataset, *SHAPES_MODEL, "--precision", "fp32")
    assert result.exit_code == 0, result.stderr
    [scores] = data
    labels = [entry["label"] for entry in scores["per_class"]]
    assert labels == sorted(SHAPES)
    expected = reference_scores(shapes_dataset, ["a photo of a {}."], labels, 5)
    assert scores["acc1"] >= 0.95
    for key in ("acc1", "acc5", "mean_per_class_recall"):
        assert scores[key] == pytest.approx(expected[key], abs=1e-9), key
    assert scores["confusion"] == expected["confusion"]
    assert scores["images"] == expected["images"] == 48


def test_json_has_one_object_per_template_set_in_the_order_asked(cli, shapes_dataset, tmp_path):
    vague = tmp_path / "vague.txt"
    vague.write_text("something like {}, maybe.\n")
    result, data = cli.json(
        "eval", shapes_dataset, *SHAPES_MODEL, "--templates", "imagenet", "--templates", vague
    )
    assert result.exit_code == 0, result.stderr
    assert [entry["templates"] for entry in data] == ["imagenet", str(vague)]
    for entry in data:
        assert set(entry) == JSON_KEYS
        assert entry["dataset"] == str(shapes_dataset)
        assert entry["model"] == TEST_MODEL
        assert entry["classes"] == 6 and entry["images"] == 48 and entry["skipped"] == []
        assert [set(c) for c in entry["per_class"]] == [
            {"label", "support", "recall", "precision", "confused_with"}
        ] * 6
        matrix = np.array(entry["confusion"])
        assert matrix.shape == (6, 6) and matrix.sum() == 48
        assert list(matrix.sum(axis=1)) == [c["support"] for c in entry["per_class"]] == [8] * 6
        assert [c["recall"] for c in entry["per_class"]] == pytest.approx(list(np.diag(matrix) / 8))
        assert 0 <= entry["acc1"] <= entry["acc5"] <= 1
        assert isinstance(entry["seconds"], float)


def test_each_template_set_scores_the_labels_it_makes(cli, shapes_dataset):
    """The same images, other prompts: each set's scores are CLIP_benchmark's for that set."""
    result, data = cli.json(
        "eval", shapes_dataset, *SHAPES_MODEL, "--precision", "fp32", "--templates", "imagenet"
    )
    assert result.exit_code == 0, result.stderr
    labels = sorted(SHAPES)
    expected = reference_scores(
        shapes_dataset, list(load_templates("imagenet").templates), labels, 5
    )
    for key in ("acc1", "acc5", "mean_per_class_recall"):
        assert data[0][key] == pytest.approx(expected[key], abs=1e-9), key


def test_the_table_compares_template_sets_best_first(cli, shapes_dataset, tmp_path):
    vague = tmp_path / "vague.txt"
    vague.write_text("a {} or a circle, a square, a star, a ring, a cross, a triangle.\n")
    result, data = cli.json(
        "eval", shapes_dataset, *SHAPES_MODEL, "--templates", vague, "--templates", "default"
    )
    by_name = {entry["templates"]: entry["acc1"] for entry in data}
    result = cli(
        "eval", shapes_dataset, *SHAPES_MODEL, "--templates", vague, "--templates", "default"
    )
    assert result.exit_code == 0, result.stderr
    rows = [line.split("│") for line in result.stdout.splitlines() if "│" in line][:2]
    names = [row[0].strip() for row in rows]
    assert sorted(names, key=lambda name: -by_name[name]) == names
    assert [float(row[1].strip(" %")) for row in rows] == [
        pytest.approx(100 * by_name[name], abs=0.05) for name in names
    ]
    assert by_name["default"] > by_name[str(vague)]  # so the order says something
    assert "48 images in 6 classes" in result.stdout


def test_images_are_embedded_once_and_a_second_run_reuses_them(dataset):
    templates = [("default", load_templates("default"))]
    first = evaluate_dataset(dataset, templates, model=TEST_MODEL)
    other = [("imagenet", load_templates("imagenet"))]
    second = evaluate_dataset(dataset, other + templates, model=TEST_MODEL)
    assert (first.embedded, second.embedded) == (48, 0)
    assert second.scores[1].acc1 == first.scores[0].acc1
    changed = next((dataset / "star").iterdir())
    make_image(changed, "red", size=(80, 80))  # new content at the same path
    third = evaluate_dataset(dataset, templates, model=TEST_MODEL)
    assert third.embedded == 1 and third.images == 48


def test_classnames_map_folders_to_label_texts(cli, dataset, tmp_path):
    mapping = tmp_path / "classnames.tsv"
    mapping.write_text("circle\ta round shape\nring\ta doughnut\n")
    result, data = cli.json("eval", dataset, *SHAPES_MODEL, "--classnames", mapping)
    assert result.exit_code == 0, result.stderr
    labels = [entry["label"] for entry in data[0]["per_class"]]
    assert labels == ["a round shape", "cross", "a doughnut", "square", "star", "triangle"]


def test_a_classnames_list_names_the_classes_in_sorted_folder_order(cli, dataset, tmp_path):
    listed = tmp_path / "classnames.txt"
    listed.write_text("# one per class folder\n" + "\n".join(f"{s} shape" for s in sorted(SHAPES)))
    result, data = cli.json("eval", dataset, *SHAPES_MODEL, "--classnames", listed)
    assert result.exit_code == 0, result.stderr
    assert [c["label"] for c in data[0]["per_class"]] == [f"{s} shape" for s in sorted(SHAPES)]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("circle\tround\nsquircle\tboxy\n", "no class folder named 'squircle'"),
        ("one\ntwo\n", "2 labels for 6 class folders"),
        ("circle\tring\n", "both read as the label 'ring'"),
    ],
)
def test_a_classnames_file_that_does_not_fit_is_a_usage_error(
    cli, dataset, tmp_path, content, message
):
    names = tmp_path / "names.txt"
    names.write_text(content)
    result = cli("eval", dataset, *SHAPES_MODEL, "--classnames", names)
    assert result.exit_code == 2
    assert message in result.stderr and result.stderr.count("\n") == 1


def test_folder_names_read_as_labels_with_underscores_and_dashes_as_spaces(cli, tmp_path):
    root = tmp_path / "pets"
    make_image(root / "golden_retriever" / "a.png", "yellow")
    make_image(root / "tabby-cat" / "b.png", "orange")
    result, data = cli.json("eval", root, *SHAPES_MODEL)
    assert result.exit_code == 0, result.stderr
    assert [c["label"] for c in data[0]["per_class"]] == ["golden retriever", "tabby cat"]


def test_unreadable_files_are_skipped_with_reasons_and_left_out_of_the_scores(cli, dataset):
    broken = dataset / "circle" / "broken.jpg"
    broken.write_bytes(b"not a jpeg at all")
    loose = make_image(dataset / "loose.png", "blue")
    result, data = cli.json("eval", dataset, *SHAPES_MODEL)
    assert result.exit_code == 0, result.stderr
    skipped = {item["path"]: item["reason"] for item in data[0]["skipped"]}
    assert set(skipped) == {str(broken), str(loose)}
    assert skipped[str(loose)] == "not in a class folder"
    assert data[0]["images"] == 48
    assert f"skipped {broken}" in result.stderr


def test_an_empty_class_folder_is_warned_about_and_is_not_a_class(cli, dataset):
    (dataset / "hexagon").mkdir()
    result, data = cli.json("eval", dataset, *SHAPES_MODEL)
    assert result.exit_code == 0, result.stderr
    assert data[0]["classes"] == 6
    assert "hexagon: no images; not a class" in result.stderr


@pytest.mark.parametrize("layout", ["one class", "no images", "flat", "missing"])
def test_a_folder_that_is_not_a_dataset_is_a_usage_error_naming_it(cli, tmp_path, layout):
    root = tmp_path / "photos"
    if layout == "one class":
        make_image(root / "cats" / "a.png")
    elif layout == "no images":
        (root / "cats").mkdir(parents=True)
        (root / "dogs").mkdir()
        (root / "dogs" / "notes.txt").write_text("no pictures here")
    elif layout == "flat":
        make_image(root / "a.png")
        make_image(root / "b.png")
    result = cli("eval", root, *SHAPES_MODEL)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {root}")
    assert result.stderr.count("\n") == 1


def test_output_files_are_checked_before_any_work(cli, dataset, tmp_path):
    result = cli("eval", dataset, *SHAPES_MODEL, "--confusion", tmp_path / "matrix.jpg")
    assert result.exit_code == 2 and "must end in .png" in result.stderr
    result = cli("eval", dataset, *SHAPES_MODEL, "--html", tmp_path / "no" / "such" / "r.html")
    assert result.exit_code == 2 and "no folder" in result.stderr
    assert not os.path.exists(tmp_path / "no")


def test_a_second_eval_of_a_folder_being_embedded_says_so_and_waits_for_nothing(cli, dataset):
    from clipcli import locks
    from clipcli.encoders.choose import requested_spec
    from clipcli.store import eval_cache

    spec = requested_spec(TEST_MODEL, None)
    folder = eval_cache.folder_for(dataset, spec.fingerprint, "auto", "auto")
    with locks.exclusive(folder / "index.lock", wait=False):
        result = cli("eval", dataset, *SHAPES_MODEL)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {dataset}: another `clipcli eval` is embedding")
