"""Where the files of a shard set lie, and the manifest clipcli writes beside them.

The layout is clip-retrieval's (clip_inference/writer.py), which embedding-reader's
numpy_parquet reader and autofaiss read: shard N is `img_emb/img_emb_N.npy` (float16, one unit
vector a row) and `metadata/metadata_N.parquet` (one row per vector, in the same order, with
`image_path`), N zero-padded to the digits of the shard count, so that the names sort in shard
order. embedding-reader pairs the two folders' files by sorting each: the same number padded the
same way keeps each npy with its parquet.

The manifest, `clipcli-shards.json`, is clipcli's own: the model the vectors were made with,
their dimension, the shards and their rows, and whether the set is complete. Shards that
clip-retrieval wrote have none.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from clipcli.errors import ClipcliError
from clipcli.models.names import ModelSpec
from clipcli.shards.durable import write_durably

EMBEDDINGS_FOLDER = "img_emb"
METADATA_FOLDER = "metadata"
MANIFEST_FILE = "clipcli-shards.json"
# Held by the one `clipcli embed` writing a set; hidden, and no reader of the layout lists it.
LOCK_FILE = ".clipcli-shards.lock"
MANIFEST_KIND = "clipcli-shards"
MANIFEST_VERSION = 1
# clip-retrieval's columns start with image_path; the others are clipcli's, null where unknown.
COLUMNS = ("image_path", "sha256", "size", "mtime_ns", "taken_at")
# clip-retrieval's write_batch_size: a million rows a shard.
DEFAULT_SHARD_SIZE = 1_000_000
SHARD_NAME = re.compile(r"img_emb_(\d+)\.npy")
METADATA_NAME = re.compile(r"metadata_(\d+)\.parquet")


@dataclass(frozen=True)
class ShardRow:
    """One metadata row: the image's path and, where known, what clipcli's catalog keeps of
    its file (None: not known, as in clip-retrieval's shards)."""

    image_path: str
    sha256: str | None = None
    size: int | None = None
    mtime_ns: int | None = None
    taken_at: float | None = None  # clipcli.media.taken's wall-clock seconds


@dataclass(frozen=True)
class ShardModel:
    """The model as clipcli's catalog records it: name, weights' tag or path, content id."""

    name: str
    pretrained: str | None
    weights: str | None = None


@dataclass(frozen=True)
class ShardEntry:
    """One finished shard: its number and how many rows it holds."""

    number: int
    rows: int


@dataclass(frozen=True)
class Manifest:
    """What clipcli knows of a shard set it wrote. `complete` is false while a set is being
    written, and stays so when the writing was interrupted: the shards listed are whole, and
    a file of the layout not listed is a leftover."""

    model: ShardModel
    dim: int | None  # None until the first shard is written
    digits: int  # how many digits the shard numbers are padded to
    shards: tuple[ShardEntry, ...] = ()
    complete: bool = False
    version: int = MANIFEST_VERSION
    columns: tuple[str, ...] = field(default=COLUMNS)

    @property
    def rows(self) -> int:
        return sum(shard.rows for shard in self.shards)

    def with_shard(self, shard: ShardEntry, dim: int) -> Manifest:
        return replace(self, shards=(*self.shards, shard), dim=dim)


def model_spec(model: ShardModel) -> ModelSpec:
    """The model a set records, as clipcli's other records of a model name it."""
    return ModelSpec(model.name, model.pretrained, model.weights)


def same_model(asked: ModelSpec, recorded: ModelSpec) -> bool:
    """Whether `asked` is the model `recorded` names, wherever its weights are now: a
    checkpoint file or a transformers folder by its content, a tag by its name (as `clipcli
    index` tells whether an index's vectors came from a model)."""
    if asked.from_transformers or recorded.from_transformers:
        return (
            asked.from_transformers
            and recorded.weights is not None
            and asked.weights_id == recorded.weights
        )
    if asked.name != recorded.name:
        return False
    if asked.pretrained_is_file and recorded.weights is not None:
        return asked.weights_id == recorded.weights
    return asked.pretrained == recorded.pretrained


def digits_for(shards: int) -> int:
    """clip-retrieval's padding: the digits of the shard count (`int(log10(count)) + 1`)."""
    return int(math.log10(max(shards, 1))) + 1


def shard_count(rows: int, shard_size: int) -> int:
    return max(1, math.ceil(rows / shard_size))


def embeddings_path(folder: Path, number: int, digits: int) -> Path:
    return folder / EMBEDDINGS_FOLDER / f"img_emb_{str(number).zfill(digits)}.npy"


def metadata_path(folder: Path, number: int, digits: int) -> Path:
    return folder / METADATA_FOLDER / f"metadata_{str(number).zfill(digits)}.parquet"


def read_manifest(folder: Path) -> Manifest | None:
    """The manifest of a shard set, None where there is none (clip-retrieval's own output)."""
    path = folder / MANIFEST_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ClipcliError(f"{path}: not a readable shard manifest ({exc})") from None
    return _manifest_from(data, path)


def _manifest_from(data: Any, path: Path) -> Manifest:
    if not isinstance(data, dict) or data.get("format") != MANIFEST_KIND:
        raise ClipcliError(f"{path}: not a clipcli shard manifest")
    if data.get("version") != MANIFEST_VERSION:
        raise ClipcliError(
            f"{path}: shard manifest version {data.get('version')} is not one this clipcli reads",
            hint="upgrade clipcli",
        )
    try:
        model = ShardModel(**data["model"])
        shards = tuple(ShardEntry(int(s["number"]), int(s["rows"])) for s in data["shards"])
        dim = None if data["dim"] is None else int(data["dim"])
        return Manifest(
            model, dim, int(data["digits"]), shards, bool(data["complete"]), data["version"]
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ClipcliError(f"{path}: damaged shard manifest ({exc!r})") from None


def manifest_json(manifest: Manifest) -> dict[str, Any]:
    """The manifest as written: counts spelled out for readers that do not add them up."""
    return {
        "format": MANIFEST_KIND,
        "version": manifest.version,
        "model": asdict(manifest.model),
        "dim": manifest.dim,
        "dtype": "float16",
        "columns": list(manifest.columns),
        "digits": manifest.digits,
        "shard_count": len(manifest.shards),
        "rows": manifest.rows,
        "shards": [asdict(shard) for shard in manifest.shards],
        "complete": manifest.complete,
    }


def write_manifest(folder: Path, manifest: Manifest) -> None:
    """Replace the manifest at once: a reader sees the old one or the new one, never half."""
    data = (json.dumps(manifest_json(manifest), indent=2) + "\n").encode("utf-8")
    write_durably(folder / MANIFEST_FILE, data)
