"""The text tower runs over each bucket's longest prompt only, and gives what 77 tokens give."""

from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch

from clipcli.encoders import text_tower, text_trim
from clipcli.encoders.choose import load_encoder
from clipcli.encoders.export_cache import ExportFolder
from clipcli.encoders.torch_clip import Encoder
from clipcli.models.names import ModelSpec
from clipcli.zeroshot.templates import load_templates

EOT = 49407


def prompts() -> list[str]:
    """Prompts of many lengths: labels through the 80 ImageNet templates, and the extremes."""
    templates = load_templates("imagenet")
    labels = ["cat", "a very small red and white striped lighthouse on a rocky coast"]
    return [*(t for label in labels for t in templates.fill(label)), "x", "", "word " * 100]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1)


@pytest.fixture(scope="module")
def vit_b_32() -> Encoder:
    """ViT-B-32's geometry with seed-0 random weights: the 77-token text tower users run."""
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32").eval()
    return Encoder(
        ModelSpec("ViT-B-32", None), model, None, open_clip.get_tokenizer("ViT-B-32"), "cpu"
    )


def tokens_of(*rows: list[int], width: int = 12) -> np.ndarray:
    tokens = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        tokens[i, : len(row)] = row
    return tokens


def test_a_prompt_matters_up_to_its_end_of_text_token():
    tokens = tokens_of([49406, 320, EOT], [49406, 320, 1929, 530, EOT], [49406, EOT])
    assert text_trim.pooled_positions(tokens, EOT, "argmax").tolist() == [2, 4, 1]
    assert text_trim.pooled_positions(tokens, EOT, "eos").tolist() == [2, 4, 1]
    assert text_trim.pooled_positions(tokens, EOT, "first").tolist() == [0, 0, 0]


def test_a_prompt_cut_before_its_end_needs_the_whole_context():
    cut = np.full((1, 8), 320, dtype=np.int64)
    assert text_trim.pooled_positions(cut, EOT, "eos").tolist() == [7]


def test_prompts_run_in_buckets_of_similar_length_each_cut_after_its_longest():
    positions = np.array([9, 2, 30, 3, 10, 2])
    found = [(rows.tolist(), length) for rows, length in text_trim.buckets(positions, size=2)]
    assert found == [([1, 5], 3), ([3, 0], 10), ([4, 2], 31)]


def test_bucketed_runs_come_back_in_the_prompts_order():
    tokens = tokens_of([49406, 5, 6, 7, EOT], [49406, EOT], [49406, 8, EOT])
    seen: list[tuple[int, int]] = []

    def run(batch: np.ndarray) -> np.ndarray:
        seen.append(batch.shape)
        return batch[:, 1:2].astype(np.float32) + 1  # each row's first word, as a 1-d "feature"

    out = text_trim.run_bucketed(run, tokens, text_trim.pooled_positions(tokens, EOT), size=2)
    assert seen == [(2, 3), (1, 5)]
    assert out.shape == (3, 1) and np.all(out == 1)  # unit length, every row its own


def test_torch_text_embeddings_equal_the_full_context(vit_b_32):
    texts = prompts()
    trimmed = vit_b_32.encode_texts(texts)
    full = vit_b_32.encode_texts(texts, full_context=True)
    assert vit_b_32._trimmed_tower() is not None
    np.testing.assert_allclose(trimmed, full, atol=1e-5)
    assert cosines(trimmed, full).min() >= 0.99999


def test_the_exported_text_tower_in_buckets_equals_the_full_context(vit_spec):
    encoder = load_encoder(vit_spec, "cpu", "fp32")
    text_tower.prepare_fast_search(encoder)
    meta = ExportFolder.for_spec(vit_spec).read_meta()
    assert (meta["text_trimmed"], meta["text_pool"]) == (True, "argmax")
    texts = prompts()
    full = encoder.encode_texts(texts, full_context=True)
    for many in (False, True):
        fast = text_tower.fast_text_encoder(vit_spec, many=many)
        assert fast is not None
        embedded = fast(texts)
        np.testing.assert_allclose(embedded, full, atol=1e-5)
        assert cosines(embedded, full).min() >= 0.99999


def test_a_tower_that_sees_later_tokens_runs_the_full_context(vit_b_32):
    model = open_clip.create_model("ViT-B-32").eval()
    model.attn_mask = torch.zeros_like(model.attn_mask)  # every token sees every other one
    encoder = Encoder(vit_b_32.spec, model, None, vit_b_32.tokenizer, "cpu")
    assert text_trim.trimmed_text_tower(model) is None
    texts = ["a photo of a cat.", "x"]
    np.testing.assert_array_equal(
        encoder.encode_texts(texts), encoder.encode_texts(texts, full_context=True)
    )


def test_a_tower_pooling_at_the_last_position_is_not_trimmed(vit_b_32):
    model = open_clip.create_model("ViT-B-32").eval()
    model.text_pool_type = "last"
    assert text_trim.trimmed_text_tower(model) is None


def test_a_trimmed_tower_that_disagrees_with_the_full_context_is_not_used(vit_b_32, monkeypatch):
    model = vit_b_32.model
    encoder = Encoder(vit_b_32.spec, model, None, vit_b_32.tokenizer, "cpu")
    real = text_trim.trimmed_text_tower

    def off_by_a_little(m):
        tower = real(m)
        forward = tower.forward
        tower.forward = lambda text: forward(text) + 0.05 * text.shape[1]  # depends on length
        return tower

    monkeypatch.setattr(text_trim, "trimmed_text_tower", off_by_a_little)
    assert encoder._trimmed_tower() is None
    texts = ["a photo of a cat.", "x"]
    np.testing.assert_array_equal(
        encoder.encode_texts(texts), encoder.encode_texts(texts, full_context=True)
    )


def test_exports_made_before_the_pooling_was_recorded_cut_after_the_end_of_text():
    assert text_tower._recorded_pool({"text_trimmed": True}) == "eos"
    assert text_tower._recorded_pool({"text_trimmed": True, "text_pool": "argmax"}) == "argmax"
    assert text_tower._recorded_pool({"text_trimmed": False}) is None
