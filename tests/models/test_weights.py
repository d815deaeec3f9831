"""Model and weight resolution, and the messages a user sees when weights cannot be had."""

from __future__ import annotations

import pytest
from conftest import make_image

from clipcli.encoders.choose import load_encoder
from clipcli.errors import UnknownModelError, UsageError, WeightsUnavailableError
from clipcli.models import weights
from clipcli.models.names import BUNDLED_WEIGHTS, ModelSpec, resolve_model_spec
from clipcli.settings import DEFAULT_MODEL, DEFAULT_PRETRAINED, model_choice


def test_default_model_is_the_strong_photo_model():
    assert model_choice(None, None) == (DEFAULT_MODEL, None)
    spec = resolve_model_spec(DEFAULT_MODEL, None)
    assert (spec.name, spec.pretrained) == ("ViT-B-32-256", "datacomp_s34b_b86k")


def test_environment_pretrained_only_pairs_with_environment_model(monkeypatch):
    monkeypatch.setenv("CLIPCLI_MODEL", "ViT-B-32")
    monkeypatch.setenv("CLIPCLI_PRETRAINED", "laion2b_s34b_b79k")
    assert model_choice(None, None) == ("ViT-B-32", "laion2b_s34b_b79k")
    assert model_choice("RN50", None) == ("RN50", None)


def test_a_model_without_pretrained_gets_its_first_published_weights():
    assert resolve_model_spec("RN50", None).pretrained == "openai"


def test_bundled_model_needs_no_pretrained():
    spec = resolve_model_spec("clipcli-shapes", None)
    assert spec.pretrained == str(BUNDLED_WEIGHTS["clipcli-shapes"])


def test_hf_hub_names_pass_through_to_open_clip():
    assert resolve_model_spec("hf-hub:org/repo", None) == ModelSpec("hf-hub:org/repo", None)


def test_unknown_model_suggests_close_names():
    with pytest.raises(UnknownModelError) as caught:
        resolve_model_spec("ViT-B-32-265", None)
    assert "ViT-B-32-256" in (caught.value.hint or "")


def test_checkpoint_paths_become_absolute(random_checkpoint, monkeypatch):
    monkeypatch.chdir(random_checkpoint.parent)
    spec = resolve_model_spec("clipcli-shapes", random_checkpoint.name)
    assert spec.pretrained == str(random_checkpoint)


def test_unavailable_weights_fail_fast_with_a_fix(monkeypatch, tmp_path):
    """No network and an empty cache: one message saying what was tried and how to fix it."""
    monkeypatch.setattr(weights, "_reachable", lambda *a, **k: False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(WeightsUnavailableError) as caught:
        load_encoder(ModelSpec(DEFAULT_MODEL, DEFAULT_PRETRAINED), "cpu")
    message = f"{caught.value.message}; {caught.value.hint}"
    assert "ViT-B-32-256 (datacomp_s34b_b86k)" in message
    assert "not in the local cache" in message
    assert "--pretrained /path/to/weights.pt" in message
    assert caught.value.exit_code == 1


def test_cli_reports_unavailable_weights_as_one_line_exit_1(cli, monkeypatch, tmp_path):
    monkeypatch.setattr(weights, "_reachable", lambda *a, **k: False)
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    image = make_image(tmp_path / "a.png")
    result = cli("classify", image, "--labels", "cat,dog")
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1
    assert "run once with network access" in result.stderr


def test_a_file_that_is_not_a_checkpoint_is_named(tmp_path):
    bogus = tmp_path / "bogus.pt"
    bogus.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsUnavailableError) as caught:
        load_encoder(ModelSpec("clipcli-shapes", str(bogus)), "cpu")
    assert caught.value.message == f"{bogus}: not a PyTorch checkpoint"


def test_a_checkpoint_of_another_architecture_says_so_in_one_short_line(
    random_checkpoint, vit_spec
):
    with pytest.raises(WeightsUnavailableError) as caught:
        load_encoder(ModelSpec(vit_spec.name, str(random_checkpoint)), "cpu")
    message = caught.value.message
    assert message.startswith(f"{random_checkpoint}: not a checkpoint for clipcli-test-vit (")
    assert len(message) < len(str(random_checkpoint)) + 150


def test_unavailable_device_is_a_usage_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(UsageError, match="not available"):
        load_encoder(ModelSpec("clipcli-shapes", None), "cuda")


def test_hf_hub_model_offline_names_the_setting(cli, monkeypatch, tmp_path):
    import huggingface_hub.constants as hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    image = make_image(tmp_path / "a.png")
    result = cli("classify", image, "--labels", "cat", "--model", "hf-hub:org/clip-model")
    assert result.exit_code == 1
    assert "hf-hub:org/clip-model" in result.stderr
    assert "HF_HUB_OFFLINE is set" in result.stderr


def test_weights_that_are_not_cached_nor_reachable_are_told_by_the_exception_type():
    from huggingface_hub.errors import LocalEntryNotFoundError

    spec = ModelSpec("ViT-B-32", "laion2b_s34b_b79k")
    try:
        try:
            raise LocalEntryNotFoundError("entry not found")
        except LocalEntryNotFoundError as hub_error:
            raise RuntimeError("weights for tag 'laion2b_s34b_b79k' failed") from hub_error
    except RuntimeError as wrapped:
        message = weights.load_failure(spec, wrapped).message

    assert "they are not in the local cache" in message


def test_a_load_failure_whose_message_only_mentions_a_cache_is_reported_as_it_is():
    spec = ModelSpec("ViT-B-32", "laion2b_s34b_b79k")
    failure = RuntimeError("size mismatch for the attention cache of layer 3")

    message = weights.load_failure(spec, failure).message

    assert (
        message
        == f"cannot load {spec.describe()}: size mismatch for the attention cache of layer 3"
    )


# SigLIP's recipe (its text tower, its hub tokenizer, a logit bias) around the tiny ViT: the
# weights load from a local file in a second, and the tokenizer still needs the hub.
HUB_TOKENIZER_MODEL = "clipcli-test-siglip"
HUB_TOKENIZER_CONFIG = {
    "embed_dim": 64,
    "init_logit_bias": -10,
    "custom_text": True,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {
        "context_length": 64,
        "vocab_size": 32000,
        "hf_tokenizer_name": "timm/ViT-B-16-SigLIP",
        "tokenizer_kwargs": {"clean": "canonicalize"},
        "width": 64,
        "heads": 2,
        "layers": 2,
        "no_causal_mask": True,
        "proj_bias": True,
        "pool_type": "last",
    },
}


@pytest.fixture
def hub_offline(monkeypatch, tmp_path):
    """HF_HUB_OFFLINE=1 and an empty hub cache (HF_HOME, HF_HUB_CACHE), also where the hub
    client read them when it was imported."""
    import huggingface_hub.constants as hub

    cache = tmp_path / "hf"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache / "hub"))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HOME", str(cache))
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(cache / "hub"))


def test_a_local_checkpoint_whose_tokenizer_is_on_the_hub_says_so_offline(
    cli, hub_offline, tmp_path
):
    import json

    import open_clip
    import torch

    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / f"{HUB_TOKENIZER_MODEL}.json").write_text(json.dumps(HUB_TOKENIZER_CONFIG))
    open_clip.add_model_config(configs)
    torch.manual_seed(0)
    checkpoint = tmp_path / "siglip.pt"
    torch.save(open_clip.create_model(HUB_TOKENIZER_MODEL).state_dict(), checkpoint)
    image = make_image(tmp_path / "a.png")
    model = ["--model", HUB_TOKENIZER_MODEL, "--pretrained", checkpoint]

    result = cli("classify", image, "--labels", "cat,dog", *model)

    assert result.exit_code == 1
    assert result.stderr == (
        f"error: cannot load the tokenizer of {HUB_TOKENIZER_MODEL} (timm/ViT-B-16-SigLIP on"
        " the Hugging Face hub): it is not in the local cache and HF_HUB_OFFLINE is set; run"
        " once with network access to cache it; after that it loads offline\n"
    )


def test_siglip_weights_by_tag_offline_say_the_tokenizer_needs_the_hub_too(
    cli, hub_offline, tmp_path
):
    image = make_image(tmp_path / "a.png")
    model = ["--model", "ViT-B-16-SigLIP", "--pretrained", "webli"]

    result = cli("classify", image, "--labels", "cat,dog", *model)

    assert result.exit_code == 1
    assert result.stderr == (
        "error: cannot load weights for ViT-B-16-SigLIP (webli): they are not in the local"
        " cache (Hugging Face hub cache, ~/.cache/clip) and HF_HUB_OFFLINE is set; run once"
        " with network access to cache them, or pass --pretrained /path/to/weights.pt (the"
        " tokenizer, timm/ViT-B-16-SigLIP, still comes from the hub once)\n"
    )
