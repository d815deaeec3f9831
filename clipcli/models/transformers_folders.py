"""Transformers CLIP checkpoints as clipcli models: a folder `CLIPModel.save_pretrained` wrote,
or `hf:ORG/NAME` from the Hugging Face hub cache, and the identity caches are keyed on.

A checkpoint is known by its content: the content ids (weight_files.py) of its weights, config,
preprocessing and tokenizer files, hashed together. The same checkpoint copied elsewhere keeps
its export and its cached label embeddings, and weights that change get a new identity. Its
ModelSpec is named for the folder's absolute path, or for `hf:ORG/NAME` with the snapshot's
commit as `pretrained` (an index then reopens with the revision it was built with), and carries
that content id. Nothing here imports torch or transformers.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipcli.errors import ClipcliError, UsageError, WeightsUnavailableError
from clipcli.models.names import HF_HUB_PREFIX, HF_PREFIX, ModelSpec
from clipcli.models.transformers_config import (
    CLIP_VOCAB_SIZE,
    Geometry,
    Preprocessing,
    geometry,
    preprocessing,
)
from clipcli.models.weight_files import PREFIX, content_id

CONFIG_FILE = "config.json"
PREPROCESSOR_FILE = "preprocessor_config.json"
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer.json")
# One-file checkpoints, safetensors first; a sharded one lists its files in an index.
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
SHARD_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_SMALL_FILES = [CONFIG_FILE, PREPROCESSOR_FILE, *TOKENIZER_FILES]
# What a hub snapshot needs: the pickled layout only where a repository has no safetensors.
_HUB_PATTERNS = (
    [*_SMALL_FILES, "model.safetensors", "model.safetensors.index.json", "model-*.safetensors"],
    [*_SMALL_FILES, "pytorch_model.bin", "pytorch_model.bin.index.json", "pytorch_model-*.bin"],
)
_REPO = re.compile(r"[\w.-]+/[\w.-]+")
_COMMIT = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class TransformersFolder:
    """A checked checkpoint folder: what it builds and the files that hold it."""

    path: Path
    geometry: Geometry
    preprocessing: Preprocessing
    weights: tuple[Path, ...]  # one file, or a sharded checkpoint's shards
    tokenizer_files: tuple[Path, ...]
    described_by: tuple[Path, ...]  # config, preprocessor config, shard index: whichever exist

    @property
    def content_id(self) -> str:
        """'sha256:...' over every file that makes the model what it is."""
        digest = hashlib.sha256()
        for path in (*self.described_by, *self.tokenizer_files, *self.weights):
            digest.update(f"{path.relative_to(self.path)}\0{content_id(str(path))}\n".encode())
        return PREFIX + digest.hexdigest()


def names_checkpoint(model: str) -> bool:
    """Whether a --model value names a transformers checkpoint rather than an open_clip model:
    hf:ORG/NAME, a path, or a folder here that holds a config.json."""
    if model.startswith(HF_PREFIX):
        return True
    if model.startswith(HF_HUB_PREFIX):
        return False
    return (
        os.sep in model
        or "/" in model
        or model.startswith((".", "~"))
        or os.path.isfile(os.path.join(model, CONFIG_FILE))
    )


def resolve(model: str, pretrained: str | None) -> ModelSpec:
    """The spec of a --model folder or hf:ORG/NAME, checked and known by its content; an hf:
    repository is downloaded (or found in the hub cache offline)."""
    if pretrained is not None:
        raise UsageError(
            f"--pretrained does not apply to {model}: a transformers checkpoint holds its weights",
            hint="leave out --pretrained (and CLIPCLI_PRETRAINED)",
        )
    if model.startswith(HF_PREFIX):
        repo = _repo(model)
        snapshot = hub_snapshot(repo)
        return ModelSpec(model, snapshot.name, read_folder(snapshot).content_id)
    path = Path(os.path.abspath(os.path.expanduser(model)))
    if path.exists() and not path.is_dir():
        raise UsageError(
            f"{model}: not a folder (--model takes a transformers checkpoint's folder)",
            hint="a checkpoint file of an open_clip model goes with --pretrained",
        )
    if not path.is_dir():
        raise UsageError(f"{model}: no such folder (--model)")
    return ModelSpec(str(path), None, read_folder(path).content_id)


def read_folder(path: Path) -> TransformersFolder:
    """The checkpoint in `path`, checked as far as its JSON files and its files' presence go."""
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        raise UsageError(f"{path}: not a transformers checkpoint (no {CONFIG_FILE})")
    network = geometry(_json(config_path), config_path)
    preprocessor = path / PREPROCESSOR_FILE
    settings = _json(preprocessor) if preprocessor.is_file() else None
    pixels = preprocessing(settings, network.image_size, preprocessor)
    tokenizer = tuple(path / name for name in TOKENIZER_FILES if (path / name).is_file())
    if not tokenizer and network.vocab_size != CLIP_VOCAB_SIZE:
        raise UsageError(
            f"{path}: no tokenizer files, and vocab_size {network.vocab_size} is not that of "
            f"CLIP's BPE ({CLIP_VOCAB_SIZE})"
        )
    weights, shard_index = _weight_files(path)
    described = [config_path] + [p for p in (preprocessor, shard_index) if p and p.is_file()]
    return TransformersFolder(path, network, pixels, weights, tokenizer, tuple(described))


def checked_folder(spec: ModelSpec) -> TransformersFolder:
    """The folder that holds `spec`'s checkpoint, with the content it names; an hf: revision
    missing from the cache is downloaded again, where the hub can be reached."""
    path = local_place(spec)
    if spec.name.startswith(HF_PREFIX) and (path is None or not path.is_dir()):
        path = hub_snapshot(_repo(spec.name), spec.pretrained)
    if path is None or not path.is_dir():
        raise WeightsUnavailableError(
            f"{spec.name}: checkpoint folder not found",
            hint="if it moved, pass --model NEWFOLDER (index) or --pretrained NEWFOLDER (search)",
        )
    folder = read_folder(path)
    if spec.weights is not None and folder.content_id != spec.weights:
        raise WeightsUnavailableError(
            f"{path}: the checkpoint changed since this index was built with it",
            hint="put those weights back, or re-embed with these: `clipcli index --reset`",
        )
    return folder


def content_id_of(spec: ModelSpec) -> str | None:
    """The content id of `spec`'s checkpoint where it is now; None if it is not there."""
    path = local_place(spec)
    if path is None or not path.is_dir():
        return None
    try:
        return read_folder(path).content_id
    except ClipcliError:
        return None


def recorded_spec(
    name: str, pretrained: str | None, weights: str | None, moved_to: str | None = None
) -> ModelSpec:
    """The transformers checkpoint an index recorded, found where it is now: at `moved_to`
    (--pretrained naming where it went) or where it was, holding the content recorded. Found
    nowhere, the spec keeps the recorded place: the exported towers still serve it."""
    recorded = local_place(ModelSpec(name, pretrained))
    places = [Path(os.path.abspath(moved_to))] if moved_to else []
    places += [recorded] if recorded is not None else []
    for place in places:
        found = content_id_of(ModelSpec(str(place), None))
        if found is not None and weights in (None, found):
            if place == recorded:
                return ModelSpec(name, pretrained, found)
            return ModelSpec(str(place), None, found)
    if moved_to:
        if not os.path.isdir(moved_to):
            raise UsageError(f"{moved_to}: checkpoint folder not found (--pretrained)")
        raise UsageError(
            f"{moved_to}: holds another checkpoint than this index was built with ({name})",
            hint="give the checkpoint the index was built with, or use another --index",
        )
    return ModelSpec(name, pretrained, weights)


def local_place(spec: ModelSpec) -> Path | None:
    """Where `spec`'s files are on this machine without asking the hub: its folder, or its
    snapshot in the hub cache (None for an hf: name whose revision is not known)."""
    if not spec.name.startswith(HF_PREFIX):
        return Path(spec.name)
    if spec.pretrained is None or not _COMMIT.fullmatch(spec.pretrained):
        return None
    storage = "models--" + _repo(spec.name).replace("/", "--")
    return _hub_cache() / storage / "snapshots" / spec.pretrained


def hub_snapshot(repo: str, revision: str | None = None) -> Path:
    """The snapshot folder of an hf: repository, downloaded through huggingface_hub where the
    hub can be reached and looked up in its cache where not (or with HF_HUB_OFFLINE)."""
    from huggingface_hub import snapshot_download

    from clipcli.models.weights import offline_unless_reachable, quiet_hub_logging
    from clipcli.settings import hub_offline

    spec = ModelSpec(HF_PREFIX + repo, None)
    offline = hub_offline()  # read now: huggingface_hub read its own when it was imported
    hub = contextlib.nullcontext() if offline else offline_unless_reachable(spec)
    with quiet_hub_logging(), hub:
        try:
            for patterns in _HUB_PATTERNS:
                folder = Path(
                    snapshot_download(
                        repo,
                        revision=revision,
                        cache_dir=_hub_cache(),
                        allow_patterns=patterns,
                        local_files_only=offline,
                    )
                )
                if _has_weights(folder):
                    break
        except Exception as exc:  # the hub client raises its own types, and the network's
            raise _hub_failure(spec, revision, exc) from exc
    return folder


def _hub_failure(spec: ModelSpec, revision: str | None, exc: Exception) -> ClipcliError:
    from huggingface_hub.utils import (
        GatedRepoError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    from clipcli.models.weights import load_failure

    if isinstance(exc, GatedRepoError):
        return WeightsUnavailableError(
            f"{spec.name}: a gated repository on the Hugging Face hub",
            hint="accept its terms on huggingface.co, then log in: `hf auth login`",
        )
    if isinstance(exc, RepositoryNotFoundError):
        return UsageError(
            f"{spec.name}: no such repository on the Hugging Face hub",
            hint="check the name (a private repository needs `hf auth login`)",
        )
    if isinstance(exc, RevisionNotFoundError):
        return WeightsUnavailableError(f"{spec.name}: revision {revision} is not on the hub")
    return load_failure(spec, exc)


def _hub_cache() -> Path:
    cache = os.environ.get("HF_HUB_CACHE")
    if cache:
        return Path(cache)
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _repo(model: str) -> str:
    repo = model[len(HF_PREFIX) :]
    if not _REPO.fullmatch(repo):
        raise UsageError(f"'{model}': name a hub repository as hf:ORG/NAME")
    return repo


def _has_weights(path: Path) -> bool:
    return any((path / name).is_file() for name in (*WEIGHT_FILES, *SHARD_INDEXES))


def _weight_files(path: Path) -> tuple[tuple[Path, ...], Path | None]:
    """The checkpoint's weights files, and the index that lists them if it is sharded."""
    for name in WEIGHT_FILES:
        if (path / name).is_file():
            return (path / name,), None
    for name in SHARD_INDEXES:
        index = path / name
        if index.is_file():
            weight_map = _json(index).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise WeightsUnavailableError(f"{index}: no weight_map")
            shards = tuple(path / str(shard) for shard in sorted(set(weight_map.values())))
            for shard in shards:
                if not shard.is_file():
                    raise WeightsUnavailableError(f"{shard}: missing (listed in {name})")
            return shards, index
    raise WeightsUnavailableError(
        f"{path}: no weights ({' or '.join(WEIGHT_FILES)})",
        hint="save the model with transformers' save_pretrained",
    )


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"{path}: not readable JSON ({type(exc).__name__})") from exc
    if not isinstance(data, dict):
        raise UsageError(f"{path}: not a JSON object")
    return data
