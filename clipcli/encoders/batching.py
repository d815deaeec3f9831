"""From image files to embedded batches.

Decoding runs ahead of the encoder in threads, bounded in memory, and a file that cannot be
decoded is reported with its reason instead of stopping the run.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from clipcli.encoders.protocols import ImageEncoder
from clipcli.vectors import Embeddings

if TYPE_CHECKING:
    from clipcli.media.decode import ImageDecodeError


# Decoded, preprocessed pixels waiting for the model, at most (one batch always may).
AHEAD_BYTES = 256 * 2**20


@dataclass
class EmbeddedBatch:
    """One batch: embeddings of the files that decoded, reasons for those that did not."""

    paths: list[Path]
    embeddings: Embeddings
    failures: list[ImageDecodeError]


def embed_files(
    encoder: ImageEncoder, paths: Sequence[Path], batch_size: int, workers: int | None = None
) -> Iterator[EmbeddedBatch]:
    """Decode and preprocess in threads while the model encodes the previous batch."""
    from clipcli.media.decode import ImageDecodeError, load_image  # Pillow: not for text searches

    workers = workers or min(4, os.cpu_count() or 1)

    def prepare(path: Path) -> Any:
        try:
            return encoder.preprocess(load_image(path, min_size=encoder.input_size))
        except ImageDecodeError as exc:
            return exc

    batches = [list(paths[i : i + batch_size]) for i in range(0, len(paths), batch_size)]
    width = 0  # the embedding size, once a batch has shown it

    def no_rows() -> Embeddings:
        # A batch of files that all failed still has the model's width, so that callers can
        # multiply or stack it like any other; with no batch encoded yet, a blank image shows it.
        nonlocal width
        if not width:
            from PIL import Image

            blank = encoder.preprocess(Image.new("RGB", (encoder.input_size,) * 2))
            width = encoder.encode_images(_stack([blank])).shape[1]
        return np.zeros((0, width), dtype=np.float32)

    # Up to two batches decode ahead of the model, keeping every core busy, as long as their
    # pixels fit in AHEAD_BYTES: --batch-size 512 of a 336-px model would otherwise hold 2 GB.
    pixels_per_batch = batch_size * 3 * encoder.input_size**2 * 4
    lookahead = max(1, min(2, AHEAD_BYTES // pixels_per_batch))
    with ThreadPoolExecutor(max_workers=workers) as pool:

        def submit(batch: list[Path]) -> list[Future[Any]]:
            return [pool.submit(prepare, path) for path in batch]

        ahead = deque(submit(batch) for batch in batches[:lookahead])
        for i, batch in enumerate(batches):
            futures = ahead.popleft()
            if i + lookahead < len(batches):
                ahead.append(submit(batches[i + lookahead]))
            prepared = [future.result() for future in futures]
            good = [
                (p, t) for p, t in zip(batch, prepared, strict=True) if not isinstance(t, Exception)
            ]
            failures = [t for t in prepared if isinstance(t, ImageDecodeError)]
            if good:
                embeddings = encoder.encode_images(_stack([t for _, t in good]))
                width = embeddings.shape[1]
            else:
                embeddings = no_rows()
            yield EmbeddedBatch([p for p, _ in good], embeddings, failures)


def _stack(items: list[Any]) -> Any:
    """One batch from preprocessed images: numpy arrays (torch-free path) or torch tensors."""
    if isinstance(items[0], np.ndarray):
        return np.stack(items)
    import torch

    return torch.stack(items)
