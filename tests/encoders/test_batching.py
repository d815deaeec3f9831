"""From files to embedded batches: failures keep their place, and decoding runs ahead of the
model within its byte budget."""

from __future__ import annotations

import time

import pytest
from conftest import make_image

from clipcli.encoders import batching
from clipcli.encoders.choose import load_encoder
from clipcli.models.names import ModelSpec, resolve_model_spec


def test_an_all_failed_batch_has_no_rows_but_the_model_width(random_checkpoint, tmp_path):
    from clipcli.encoders.batching import embed_files

    spec = resolve_model_spec("clipcli-shapes", str(random_checkpoint))
    encoder = load_encoder(spec, "cpu", "fp32")
    width = encoder.model.visual.output_dim
    good = make_image(tmp_path / "good.png")
    missing = tmp_path / "missing.png"
    alone = list(embed_files(encoder, [missing], batch_size=1))
    after_a_good_one = list(embed_files(encoder, [good, missing], batch_size=1))
    assert [b.embeddings.shape for b in alone] == [(0, width)]
    assert [b.embeddings.shape for b in after_a_good_one] == [(1, width), (0, width)]
    assert alone[0].paths == [] and [f.path for f in alone[0].failures] == [missing]


class CountingEncoder:
    """An image encoder that counts the images prepared for it and embeds them as ones."""

    spec = ModelSpec("counting", None)
    device, backend, logit_scale, input_size = "cpu", "test", 100.0, 32

    def __init__(self) -> None:
        self.prepared = 0

    def preprocess(self, image):
        import numpy as np

        self.prepared += 1
        return np.zeros((3, self.input_size, self.input_size), dtype=np.float32)

    def encode_images(self, batch):
        import numpy as np

        return np.ones((len(batch), 4), dtype=np.float32)


@pytest.mark.parametrize("budget_batches, lookahead", [(100, 2), (1.5, 1), (0.1, 1)])
def test_decoding_runs_ahead_of_the_model_by_at_most_the_byte_budget(
    tmp_path, monkeypatch, budget_batches, lookahead
):
    batch_size = 4
    paths = [make_image(tmp_path / f"{i}.png", "red") for i in range(6 * batch_size)]
    encoder = CountingEncoder()
    pixels_per_batch = batch_size * 3 * encoder.input_size**2 * 4
    monkeypatch.setattr(batching, "AHEAD_BYTES", int(budget_batches * pixels_per_batch))
    batches = batching.embed_files(encoder, paths, batch_size)
    for i, batch in enumerate(batches):
        assert len(batch.paths) == batch_size
        time.sleep(0.05)  # the decoding threads do all they were given
        # the batch just embedded and `lookahead` more were prepared, never further
        assert encoder.prepared == min(len(paths), (i + 1 + lookahead) * batch_size)
