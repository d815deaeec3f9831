"""Embedding image files on a Ray cluster, batch for batch as embed_files embeds them here.

The batches are cut on the driver as embed_files cuts them (consecutive chunks of
`batch_size` paths, in order), and an actor embeds each whole chunk with embed_files, so a
batch gets the vectors a local run gives it: bit for bit in fp32. `auto` is resolved once, by
the driver's encoder, and every worker is asked for that backend by name: one run, one backend,
whichever machine embedded a photo.

Ray Data runs the actors (map_batches over an actor pool that grows from one as the work
waits: one model per actor, an actor per GPU of the cluster, or per as many CPUs as torch uses
threads on the driver) and streams their results back as they finish. An actor pool restarts
an actor whose process or node died and runs its batches again (Ray Data's defaults for actor
pools: max_restarts=-1, max_task_retries=-1), so the run still ends complete.

Workers read the photos at the driver's paths, and import clipcli: every node needs the
photos' folders mounted at the same place, and the same clipcli installed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from clipcli.cluster import ray_session
from clipcli.encoders.batching import EmbeddedBatch, embed_files
from clipcli.encoders.protocols import ImageEncoder
from clipcli.errors import ClipcliError, UsageError
from clipcli.models.names import ModelSpec

if TYPE_CHECKING:
    from ray.data import Dataset

# How a worker asks for the backend the driver's encoder runs (choose._select_backend).
PRECISION_OF_BACKEND = {
    "torch-fp32": "fp32",
    "torch-bf16": "bf16",
    "onnx-fp32": "onnx",
    "onnx-int8": "int8",
}
# The settings workers take from the driver (CLIPCLI_HOME, CLIPCLI_CACHE...): where the user's
# exported towers are, above all. Workers were started with their own environment.
_SETTINGS_PREFIX = "CLIPCLI_"


@dataclass
class RayBatch(EmbeddedBatch):
    """An EmbeddedBatch as a Ray actor made it: with the backend it ran and the node it ran on."""

    backend: str = ""
    node: str = ""


def embed_files_on_ray(
    encoder: ImageEncoder,
    paths: Sequence[Path],
    batch_size: int,
    *,
    address: str | None = None,
    picture_hashes: bool = False,
) -> Iterator[EmbeddedBatch]:
    """The batches embed_files(encoder, paths, batch_size, picture_hashes=...) gives, each
    embedded by an actor on the Ray cluster at `address` (None: one started here for the run;
    "auto" or HOST:PORT: one running), in the order they finish.

    `encoder` is the driver's, loaded: the actors load its model on its device with its
    backend. A batch comes as soon as its actor is done, so a caller that stores each one loses
    at most those in flight if it is stopped.
    """
    if not paths:
        return
    precision = _precision(encoder)
    chunks = [[str(p) for p in paths[i : i + batch_size]] for i in range(0, len(paths), batch_size)]
    with ray_session.connected(address):
        dataset = _embedding(encoder, precision, chunks, picture_hashes)
        with ray_session.cluster_failures():
            for row in dataset.iter_rows():
                if row["error"]:
                    failure = UsageError if row["usage"] else ClipcliError
                    raise failure(f"on a Ray worker: {row['error']}", hint=row["hint"] or None)
                batch = _batch(row, picture_hashes)
                if batch.backend != encoder.backend:
                    raise ClipcliError(
                        f"a Ray worker (node {batch.node[:12]}) embedded with {batch.backend}, "
                        f"not {encoder.backend} as this machine does",
                        hint="give every node the same clipcli and ONNX Runtime, or use "
                        "--precision fp32",
                    )
                yield batch


def _precision(encoder: ImageEncoder) -> str:
    precision = PRECISION_OF_BACKEND.get(encoder.backend)
    if precision is None:
        raise ClipcliError(f"the {encoder.backend} backend cannot run on a Ray cluster")
    return precision


@dataclass(frozen=True)
class _Workers:
    """Where the actors run, what each holds of the cluster, and how many there may be."""

    device: str  # "cuda" or "cpu"
    threads: int | None  # torch's on the CPU, the driver's count; None: the backend's own
    resources: dict[str, int]  # {"num_gpus": 1} or {"num_cpus": n}
    most: int


def _workers(encoder: ImageEncoder) -> _Workers:
    """One GPU per actor where the driver's model runs on CUDA and the cluster has GPUs; else
    CPUs, as many per actor as torch's threads on the driver (where torch embeds), so that an
    actor sums as the driver does (the count of threads changes the last bits of fp32) and a
    node holds no more threads than cores. A node smaller than that lends all it has."""
    import ray

    total = ray.cluster_resources()
    if encoder.device == "cuda" and total.get("GPU", 0) >= 1:
        return _Workers("cuda", None, {"num_gpus": 1}, int(total["GPU"]))
    threads = None
    if encoder.backend.startswith("torch-"):
        import torch

        threads = torch.get_num_threads()
    alive = [node["Resources"].get("CPU", 0) for node in ray.nodes() if node["Alive"]]
    smallest = int(min((cpus for cpus in alive if cpus >= 1), default=1))
    cpus = max(1, min(threads or 1, smallest))
    return _Workers("cpu", threads, {"num_cpus": cpus}, int(total.get("CPU", 1) // cpus))


def _embedding(
    encoder: ImageEncoder, precision: str, chunks: list[list[str]], hashes: bool
) -> Dataset:
    """The (lazy) dataset of embedded chunks: one row, and one block, per chunk, so that each
    is one actor task, retried alone."""
    import ray

    workers = _workers(encoder)
    rows = [{"paths": chunk} for chunk in chunks]
    pool = ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, min(workers.most, len(rows))))
    return ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
        _ChunkEmbedder,
        fn_constructor_kwargs={
            "spec": encoder.spec,
            "device": workers.device,
            "precision": precision,
            "threads": workers.threads,
            "images": sum(len(chunk) for chunk in chunks),
            "picture_hashes": hashes,
        },
        batch_size=1,
        batch_format="numpy",
        compute=pool,
        runtime_env={"env_vars": _settings()},
        **workers.resources,
    )


def _settings() -> dict[str, str]:
    """The driver's clipcli settings, those it has set."""
    return {name: value for name, value in os.environ.items() if name.startswith(_SETTINGS_PREFIX)}


class _ChunkEmbedder:
    """A Ray actor: the model loaded once, then one chunk of paths embedded per call."""

    def __init__(
        self,
        spec: ModelSpec,
        device: str,
        precision: str,
        threads: int | None,
        images: int,
        picture_hashes: bool,
    ) -> None:
        import ray

        from clipcli.encoders.choose import load_image_encoder

        if threads is not None:  # Ray set OMP_NUM_THREADS to the CPUs the actor holds
            import torch

            torch.set_num_threads(threads)
        self.picture_hashes = picture_hashes
        self.node = ray.get_runtime_context().get_node_id()
        # Ray keeps only the text of what an actor raises (its traceback, for Ray's log), so
        # a model that cannot load here is told to the driver as data, which says it as it
        # would have said it itself.
        self.unusable: ClipcliError | None = None
        try:
            # The job's size too: it decides how an exported tower is laid out, as on the driver.
            self.encoder = load_image_encoder(spec, device, precision, images=images)
        except ClipcliError as exc:
            self.unusable = exc

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        if self.unusable is not None:
            return _failed_row(self.unusable, self.node)
        paths = [Path(path) for path in rows["paths"][0]]
        # One batch of all of them: the batch embed_files would have made of them on the driver.
        (batch,) = embed_files(self.encoder, paths, len(paths), picture_hashes=self.picture_hashes)
        pictures = batch.pictures or []
        return {
            "paths": [[str(path) for path in batch.paths]],
            "embeddings": [np.ascontiguousarray(batch.embeddings, dtype=np.float32)],
            "failed": [[str(failure.path) for failure in batch.failures]],
            "reasons": [[failure.reason for failure in batch.failures]],
            "phashes": [[picture.phash for picture in pictures]],
            "colours": [[picture.colours for picture in pictures]],
            "backend": [self.encoder.backend],
            "node": [self.node],
            **_ERROR_FREE,
        }


# The columns that say why an actor could not embed anything, empty where it could.
_ERROR_FREE: dict[str, list[Any]] = {"error": [""], "hint": [""], "usage": [False]}


def _failed_row(error: ClipcliError, node: str) -> dict[str, list[Any]]:
    empty: list[list[Any]] = [[]]
    return {
        "paths": empty,
        "embeddings": [np.zeros((0, 0), dtype=np.float32)],
        "failed": empty,
        "reasons": empty,
        "phashes": empty,
        "colours": empty,
        "backend": [""],
        "node": [node],
        "error": [error.message],
        "hint": [error.hint or ""],
        "usage": [isinstance(error, UsageError)],
    }


def _batch(row: dict[str, Any], picture_hashes: bool) -> RayBatch:
    """An actor's plain result made into the batch embed_files would have given."""
    from clipcli.media.decode import ImageDecodeError
    from clipcli.media.perceptual_hash import PictureHash

    pictures = None
    if picture_hashes:
        pictures = [
            PictureHash(int(phash), bytes(colours))
            for phash, colours in zip(row["phashes"], row["colours"], strict=True)
        ]
    failures = [
        ImageDecodeError(Path(path), str(reason))
        for path, reason in zip(row["failed"], row["reasons"], strict=True)
    ]
    return RayBatch(
        [Path(path) for path in row["paths"]],
        np.ascontiguousarray(row["embeddings"], dtype=np.float32),
        failures,
        pictures,
        backend=str(row["backend"]),
        node=str(row["node"]),
    )
