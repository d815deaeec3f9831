"""`clipcli models` and the tiers: the catalogue names what open_clip can load, the tiers name
permissive weights, and research-only weights are said to be so."""

from __future__ import annotations

import pytest

from clipcli.encoders.choose import requested_spec
from clipcli.models.catalogue import CATALOGUE, TIERS
from clipcli.models.names import ModelSpec, open_clip_registry
from clipcli.settings import DEFAULT_MODEL, DEFAULT_PRETRAINED

MODEL_KEYS = {
    "name",
    "pretrained",
    "tiers",
    "imagenet_top1",
    "image_gflops",
    "params_m",
    "licence",
    "research_only",
    "tokenizer",
    "cached",
    "source",
}


@pytest.mark.parametrize("entry", [e for e in CATALOGUE if e.hub_repo], ids=lambda e: e.name)
def test_every_model_listed_is_one_open_clip_loads_from_the_repo_named(entry):
    open_clip = open_clip_registry()
    assert entry.pretrained in open_clip.list_pretrained_tags_by_model(entry.name)
    hub = open_clip.get_pretrained_cfg(entry.name, entry.pretrained)["hf_hub"]
    assert hub.rstrip("/") == entry.hub_repo


def test_each_tier_is_a_listed_model_with_permissive_weights():
    listed = {(entry.name, entry.pretrained): entry for entry in CATALOGUE}
    for tier, named in TIERS.items():
        assert named in listed, tier
        assert not listed[named].research_only
    assert TIERS["default"] == (DEFAULT_MODEL, DEFAULT_PRETRAINED)


@pytest.mark.parametrize("tier", sorted(TIERS))
def test_a_tier_works_as_a_model_name(tier):
    assert requested_spec(tier, None) == ModelSpec(*TIERS[tier])


def test_models_json_lists_each_model_with_its_figures_and_whether_it_is_cached(
    cli, tmp_path, monkeypatch
):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    snapshot = tmp_path / "hub" / "models--laion--CLIP-ViT-L-14-DataComp.XL-s13B-b90K"
    (snapshot / "snapshots" / "abc").mkdir(parents=True)
    (snapshot / "snapshots" / "abc" / "open_clip_model.safetensors").write_bytes(b"weights")
    result, listed = cli.json("models")
    assert result.exit_code == 0, result.stderr
    assert all(set(entry) == MODEL_KEYS for entry in listed)
    cached = {entry["name"]: entry["cached"] for entry in listed if entry["cached"]}
    assert cached == {"ViT-L-14": True, "clipcli-shapes": True}
    best = next(entry for entry in listed if entry["tiers"] == ["best"])
    assert (best["name"], best["imagenet_top1"], best["licence"]) == ("ViT-L-14", 79.2, "MIT")
    text = cli("models").stdout
    assert "research only" in text and "default" in text


def test_research_only_weights_get_one_warning_line_and_the_command_goes_on(cli, tmp_path):
    result = cli("classify", tmp_path / "none.png", "--labels", "a,b", "--model", "MobileCLIP2-S0")
    lines = result.stderr.splitlines()
    assert lines[0] == (
        "warning: MobileCLIP2-S0's weights are licensed for research use only (apple-amlr), "
        "not for products"
    )
    assert sum("research use only" in line for line in lines) == 1
