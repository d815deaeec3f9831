"""From image files to embedded batches.

Decoding runs ahead of the encoder in threads, bounded in memory, and a file that cannot be
decoded is reported with its reason instead of stopping the run. The picture hash of each
(pHash and colour grid), when asked for, comes from the same decoded pixels: a file is
decoded once.
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
    from clipcli.media.perceptual_hash import PictureHash


# Decoded, preprocessed pixels waiting for the model, at most (one batch always may).
AHEAD_BYTES = 256 * 2**20


@dataclass
class EmbeddedBatch:
    """One batch: embeddings of the files that decoded, reasons for those that did not, and,
    when asked for, the picture hash of each file that decoded (clipcli.media.perceptual_hash;
    else None)."""

    paths: list[Path]
    embeddings: Embeddings
    failures: list[ImageDecodeError]
    pictures: list[PictureHash] | None = None


def embed_files(
    encoder: ImageEncoder,
    paths: Sequence[Path],
    batch_size: int,
    workers: int | None = None,
    *,
    picture_hashes: bool = False,
) -> Iterator[EmbeddedBatch]:
    """Decode and preprocess in threads while the model encodes the previous batch; with
    `picture_hashes`, hash each decoded picture there too."""
    # Pillow, imported here: not for text searches
    from clipcli.media.decode import ImageDecodeError, load_image
    from clipcli.media.perceptual_hash import picture_hash

    workers = workers or min(4, os.cpu_count() or 1)

    def prepare(path: Path) -> tuple[Any, PictureHash | None] | ImageDecodeError:
        try:
            image = load_image(path, min_size=encoder.input_size)
        except ImageDecodeError as exc:
            return exc
        # A hash costs 1 ms for a photo decoded at a reduced scale, 60 ms for an 8-MP PNG:
        # only for those who keep it.
        return encoder.preprocess(image), picture_hash(image) if picture_hashes else None

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
                embeddings = encoder.encode_images(_stack([pixels for _, (pixels, _) in good]))
                width = embeddings.shape[1]
            else:
                embeddings = no_rows()
            hashes = [h for _, (_, h) in good if h is not None] if picture_hashes else None
            yield EmbeddedBatch([p for p, _ in good], embeddings, failures, hashes)


def _stack(items: list[Any]) -> Any:
    """One batch from preprocessed images: numpy arrays (torch-free path) or torch tensors."""
    if isinstance(items[0], np.ndarray):
        return np.stack(items)
    import torch

    return torch.stack(items)
