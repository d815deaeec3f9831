"""`--model` with a transformers CLIP checkpoint: a folder `save_pretrained` wrote, or
hf:ORG/NAME from the hub cache. Known by content, refused with a reason when it cannot work."""

from __future__ import annotations

import json
import shutil
import sqlite3
import sys
from pathlib import Path

import pytest
from clip_folders import pil_image_processor, save_photos
from conftest import make_image, without_torch

from clipcli.encoders.choose import requested_spec
from clipcli.errors import UsageError, WeightsUnavailableError
from clipcli.models.names import ModelSpec
from clipcli.models.transformers_config import preprocessing
from clipcli.store.catalog import CATALOG_FILE

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def saved(clip_folder: Path) -> Path:
    return clip_folder


@pytest.fixture
def folder(saved: Path, tmp_path: Path) -> Path:
    """A copy of the saved checkpoint that the test may change."""
    return Path(shutil.copytree(saved, tmp_path / "my-finetune"))


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    save_photos(folder)
    return folder


@pytest.fixture
def hub_cache(saved: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An offline hub cache that holds the saved checkpoint as org/clip-small, laid out as
    huggingface_hub lays it out: blobs, a snapshot of links to them, refs/main."""
    cache = tmp_path / "hub"
    repo = cache / "models--org--clip-small"
    snapshot = repo / "snapshots" / COMMIT
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for file in saved.iterdir():
        blob = repo / "blobs" / f"blob-{file.name}"
        shutil.copy(file, blob)
        (snapshot / file.name).symlink_to(Path("..", "..", "blobs", blob.name))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def rewrite_weights(folder: Path, change) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(folder / "model.safetensors")
    change(tensors)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def classified(image: Path, model: str | Path, *extra: str) -> list[str | Path]:
    return ["classify", image, "--labels", "cat,dog", "--model", model, *extra]


def classify(cli, image: Path, model: str | Path, *extra: str):
    return cli(*classified(image, model, *extra))


def test_a_relative_folder_is_named_by_its_absolute_path_and_known_by_its_content(
    folder, monkeypatch
):
    monkeypatch.chdir(folder.parent)
    spec = requested_spec("./my-finetune", None)
    assert spec.name == str(folder)
    assert spec.pretrained is None
    assert spec.describe() == str(folder)
    assert spec.weights_id is not None and spec.weights_id.startswith("sha256:")
    assert spec.fingerprint == f"transformers|{spec.weights_id}"


def test_the_same_checkpoint_copied_elsewhere_keeps_its_fingerprint(saved, folder):
    here, there = requested_spec(str(saved), None), requested_spec(str(folder), None)
    assert here.name != there.name
    assert here.fingerprint == there.fingerprint


@pytest.mark.parametrize("changed", ["weights", "config", "preprocessing"])
def test_a_checkpoint_that_changes_gets_a_new_fingerprint(saved, folder, changed):
    if changed == "weights":
        rewrite_weights(folder, lambda t: t["logit_scale"].add_(0.5))
    elif changed == "config":
        edit_json(folder / "config.json", lambda c: c["text_config"].update(layer_norm_eps=1e-6))
    else:
        edit_json(folder / "preprocessor_config.json", lambda p: p.update(resample=2))
    assert requested_spec(str(folder), None).fingerprint != (
        requested_spec(str(saved), None).fingerprint
    )


def test_a_folder_resolves_without_importing_torch(folder):
    fingerprint = without_torch(
        "from clipcli.encoders.choose import requested_spec\n"
        f"result = requested_spec({str(folder)!r}, None).fingerprint"
    )
    assert fingerprint == requested_spec(str(folder), None).fingerprint


def test_open_clips_own_hf_hub_names_still_go_to_open_clip():
    assert requested_spec("hf-hub:org/repo", None) == ModelSpec("hf-hub:org/repo", None)
    assert not ModelSpec("hf-hub:org/repo", None).from_transformers


def test_pretrained_does_not_apply_to_a_checkpoint_folder(cli, folder, tmp_path):
    result = classify(cli, make_image(tmp_path / "a.png"), folder, "--pretrained", "openai")
    assert result.exit_code == 2
    assert "--pretrained does not apply to" in result.stderr


def test_an_index_built_with_a_folder_searches_and_reopens_with_it(cli, folder, photos, tmp_path):
    index = tmp_path / "index"
    result, report = cli.json("index", photos, "--index", index, "--model", folder)
    assert result.exit_code == 0, result.stderr
    assert report["added"] == 3
    with sqlite3.connect(index / CATALOG_FILE) as db:
        meta = dict(db.execute("SELECT key, value FROM meta"))
    assert meta["model"] == str(folder)
    assert meta["weights"] == requested_spec(str(folder), None).weights_id

    new = make_image(photos.parent / f"{photos.name}-later" / "red.png", "red", (90, 60))
    result, report = cli.json("index", photos, new.parent, "--index", index)  # no --model
    assert result.exit_code == 0, result.stderr
    assert (report["added"], report["unchanged"]) == (1, 3)

    result, hits = cli.json("search", "a photo of a cat", "--index", index, "--top-k", "4")
    assert result.exit_code == 0, result.stderr
    assert sorted(hit["path"] for hit in hits) == sorted(
        [str(p) for p in photos.iterdir()] + [str(new)]
    )
    result, hits = cli.json("search", "--image", new, "--index", index, "--top-k", "1")
    assert hits[0]["path"] == str(new)


def test_an_index_carries_on_with_a_copy_and_refuses_other_weights(cli, folder, photos, tmp_path):
    index = tmp_path / "index"
    assert cli("index", photos, "--index", index, "--model", folder).exit_code == 0
    copy = Path(shutil.copytree(folder, tmp_path / "elsewhere" / "copy"))
    result = cli("index", photos, "--index", index, "--model", copy)
    assert result.exit_code == 0, result.stderr
    with sqlite3.connect(index / CATALOG_FILE) as db:
        assert dict(db.execute("SELECT key, value FROM meta"))["model"] == str(copy)

    rewrite_weights(copy, lambda t: t["logit_scale"].add_(0.5))
    result = cli("index", photos, "--index", index, "--model", copy)
    assert result.exit_code == 2
    assert f"index was built with {copy} as it was then, not {copy}" in result.stderr


def test_a_search_finds_a_moved_folder_given_with_pretrained(cli, folder, photos, tmp_path):
    index = tmp_path / "index"
    assert cli("index", photos, "--index", index, "--model", folder).exit_code == 0
    moved = Path(shutil.move(folder, tmp_path / "moved"))
    result, hits = cli.json("search", "a cat", "--index", index, "--pretrained", moved)
    assert result.exit_code == 0, result.stderr
    assert len(hits) == 3
    result = cli("search", "a cat", "--index", index, "--pretrained", tmp_path / "nowhere")
    assert result.exit_code == 2
    assert "checkpoint folder not found (--pretrained)" in result.stderr


def test_hf_names_resolve_from_the_hub_cache_offline(cli, hub_cache, saved, tmp_path):
    spec = requested_spec("hf:org/clip-small", None)
    assert (spec.name, spec.pretrained) == ("hf:org/clip-small", COMMIT)
    assert spec.describe() == "hf:org/clip-small"
    assert spec.fingerprint == requested_spec(str(saved), None).fingerprint  # same content

    image = make_image(tmp_path / "a.png", "red")
    result = classify(cli, image, "hf:org/clip-small", "--precision", "fp32", "--json")
    assert result.exit_code == 0, result.stderr
    assert len(json.loads(result.stdout)[0]["predictions"]) == 2


def test_an_index_built_with_an_hf_name_reopens_with_its_snapshot(cli, hub_cache, photos, tmp_path):
    index = tmp_path / "index"
    assert cli("index", photos, "--index", index, "--model", "hf:org/clip-small").exit_code == 0
    with sqlite3.connect(index / CATALOG_FILE) as db:
        meta = dict(db.execute("SELECT key, value FROM meta"))
    assert (meta["model"], meta["pretrained"]) == ("hf:org/clip-small", COMMIT)
    result, hits = cli.json("search", "a cat", "--index", index)
    assert result.exit_code == 0, result.stderr
    assert len(hits) == 3


def test_an_hf_name_not_in_the_cache_offline_is_one_line_and_exit_1(cli, hub_cache, tmp_path):
    result = classify(cli, make_image(tmp_path / "a.png"), "hf:missing/repo")
    assert result.exit_code == 1
    assert result.stderr == (
        "error: cannot load weights for hf:missing/repo: they are not in the local cache "
        "(Hugging Face hub cache) and HF_HUB_OFFLINE is set; run once with network access to "
        "cache them, or give a checkpoint folder: --model ./folder\n"
    )


def test_an_hf_name_must_be_org_and_name(cli, tmp_path):
    result = classify(cli, make_image(tmp_path / "a.png"), "hf:just-a-name")
    assert result.exit_code == 2
    assert "name a hub repository as hf:ORG/NAME" in result.stderr


def test_pytorch_model_bin_of_tensors_gives_the_same_answers(cli, saved, folder, tmp_path):
    import torch
    from safetensors.torch import load_file

    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    image = make_image(tmp_path / "a.png", "red")
    _, from_bin = cli.json(*classified(image, folder, "--precision", "fp32"))
    _, from_safetensors = cli.json(*classified(image, saved, "--precision", "fp32"))
    scores = [
        {p["label"]: p["score"] for p in got[0]["predictions"]}
        for got in (from_bin, from_safetensors)
    ]
    assert scores[0] == pytest.approx(scores[1], abs=1e-6)


class Pickled:
    """Something other than a tensor, which a pickle would run code to rebuild."""


def break_folder(folder: Path, how: str) -> tuple[Path, str]:
    """Damage the checkpoint in one way; returns the file the error must name and its reason."""
    weights = folder / "model.safetensors"
    if how == "no config.json":
        (folder / "config.json").unlink()
        return folder, "not a transformers checkpoint (no config.json)"
    if how == "another model type":
        edit_json(folder / "config.json", lambda c: c.update(model_type="siglip"))
        return folder / "config.json", "model_type is 'siglip', not 'clip'"
    if how == "no weights":
        weights.unlink()
        return folder, "no weights (model.safetensors or pytorch_model.bin)"
    if how == "weights not a checkpoint":
        weights.write_bytes(b"these are not tensors")
        return weights, "not a safetensors file"
    if how == "a tensor missing":
        rewrite_weights(folder, lambda t: t.pop("vision_model.pre_layrnorm.weight"))
        return weights, "not a checkpoint for its config (vision_model.pre_layrnorm.weight missing)"
    if how == "a tensor of the wrong shape":
        edit_json(folder / "config.json", lambda c: c["text_config"].update(intermediate_size=256))
        return weights, "not a checkpoint for its config (transformer.resblocks.0.mlp.c_fc.weight"
    if how == "a foreign vocabulary":
        vocab = json.loads((folder / "vocab.json").read_text())
        vocab["cat</w>"], vocab["dog</w>"] = vocab["dog</w>"], vocab["cat</w>"]
        (folder / "vocab.json").write_text(json.dumps(vocab))
        return folder / "vocab.json", "not CLIP's vocabulary (4 entries differ"
    if how == "a pickled object":
        import torch

        weights.unlink()
        torch.save({"weights": Pickled()}, folder / "pytorch_model.bin")
        return folder / "pytorch_model.bin", "not a checkpoint of weights alone (it pickles Python"
    raise AssertionError(how)


@pytest.mark.parametrize(
    "how, code",
    [
        ("no config.json", 2),
        ("another model type", 2),
        ("no weights", 1),
        ("weights not a checkpoint", 1),
        ("a tensor missing", 1),
        ("a tensor of the wrong shape", 1),
        ("a foreign vocabulary", 2),
        ("a pickled object", 1),
    ],
)
def test_a_checkpoint_that_cannot_work_is_refused_in_one_line_naming_the_file(
    cli, folder, tmp_path, how, code
):
    named, reason = break_folder(folder, how)
    result = classify(cli, make_image(tmp_path / "a.png"), folder, "--precision", "fp32")
    assert result.exit_code == code
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"error: {named}: {reason}")


def test_a_folder_without_tokenizer_files_takes_clips_bpe(cli, folder, tmp_path):
    for name in ("vocab.json", "merges.txt", "tokenizer.json"):
        (folder / name).unlink()
    result = classify(cli, make_image(tmp_path / "a.png"), folder, "--precision", "fp32")
    assert result.exit_code == 0, result.stderr

    edit_json(folder / "config.json", lambda c: c["text_config"].update(vocab_size=1000))
    with pytest.raises(UsageError, match="vocab_size 1000 is not that of CLIP's BPE"):
        requested_spec(str(folder), None)


def test_a_moved_folder_is_reported_when_the_model_must_load(folder):
    from clipcli.models.transformers_folders import checked_folder

    spec = requested_spec(str(folder), None)
    shutil.rmtree(folder)
    with pytest.raises(WeightsUnavailableError, match="checkpoint folder not found"):
        checked_folder(spec)


def test_without_a_preprocessor_config_images_get_clips_defaults_at_the_models_size():
    pixels = preprocessing(None, 336, Path("preprocessor_config.json"))
    assert (pixels.resize, pixels.crop, pixels.interpolation) == (336, 336, "bicubic")
    assert pixels.mean == (0.48145466, 0.4578275, 0.40821073)


def test_a_resize_larger_than_the_crop_preprocesses_as_transformers_does(saved, tmp_path):
    """Shortest side to 80 then a 64 crop: not open_clip's transform, so torchvision's."""
    import numpy as np
    from PIL import Image

    from clipcli.encoders.transformers_clip import image_preprocess

    settings = {"size": {"shortest_edge": 80}, "crop_size": {"height": 64, "width": 64}}
    transform, _ = image_preprocess(preprocessing(settings, 64, Path("p.json")))
    reference = pil_image_processor(**settings)
    photo = Image.open(save_photos(tmp_path, ("chelsea",))[0])
    expected = reference(images=photo, return_tensors="np")["pixel_values"][0]
    assert np.abs(transform(photo).numpy() - expected).max() < 1e-5


def test_loading_a_checkpoint_needs_no_transformers(saved, monkeypatch):
    from clipcli.encoders.choose import load_encoder

    monkeypatch.setitem(sys.modules, "transformers", None)  # as if it were not installed
    encoder = load_encoder(requested_spec(str(saved), None), "cpu", "fp32")
    assert encoder.encode_texts(["a cat"]).shape == (1, 32)
