"""Embedding vectors as every layer passes them: the Embeddings type, unit-length
normalisation, and the little-endian float32 BLOB that SQLite stores them as."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def to_blob(vector: Embeddings) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def from_blob(blob: bytes) -> Embeddings:
    return np.frombuffer(blob, dtype="<f4").astype(np.float32)


Embeddings = npt.NDArray[np.float32]


def normalise(features: np.ndarray) -> Embeddings:
    features = features.astype(np.float32)
    return features / np.linalg.norm(features, axis=1, keepdims=True)
