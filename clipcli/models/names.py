"""Which model and weights: open_clip names, the bundled model, default weights, and the
identity that caches and exports are keyed on.

open_clip is imported only where a name must be checked against its registry: a model that
was exported here resolves without it (and without torch).
"""

from __future__ import annotations

import difflib
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipcli.errors import UnknownModelError, UsageError, WeightsUnavailableError
from clipcli.settings import DEFAULT_MODEL, DEFAULT_PRETRAINED

PACKAGE_DIR = Path(__file__).parent
# The bundled model ships its open_clip config and its weights side by side.
BUNDLED_CONFIG_DIR = PACKAGE_DIR / "bundled"
# Models whose weights ship inside the package, so they need neither --pretrained nor a network.
BUNDLED_WEIGHTS = {"clipcli-shapes": BUNDLED_CONFIG_DIR / "clipcli-shapes.pt"}
HF_HUB_PREFIX = "hf-hub:"
# A transformers CLIPModel checkpoint in the Hugging Face hub cache (hf-hub: is open_clip's own).
HF_PREFIX = "hf:"


@dataclass(frozen=True)
class ModelSpec:
    """A model architecture and the weights to put in it."""

    # An open_clip name; for a transformers checkpoint, its folder's absolute path or hf:ORG/NAME.
    name: str
    # An open_clip tag, an absolute checkpoint path, or None (hf-hub:, a transformers folder);
    # for hf:ORG/NAME, the commit of its snapshot.
    pretrained: str | None
    # The checkpoint file's content id (weight_files.py), when it is known without reading the
    # file; where it is not, it is looked up (or hashed once) when needed. A transformers
    # checkpoint's spec is made with its content id (transformers_folders.py).
    weights: str | None = field(default=None, compare=False)

    @property
    def from_transformers(self) -> bool:
        """Whether this is a transformers CLIPModel checkpoint (transformers_folders.py)."""
        return self.name.startswith(HF_PREFIX) or os.path.isabs(self.name)

    @property
    def pretrained_is_file(self) -> bool:
        return self.pretrained is not None and os.path.isabs(self.pretrained)

    @property
    def weights_id(self) -> str | None:
        """The content id of checkpoint-file weights, or of a transformers checkpoint's files
        ('sha256:...'); None for tags and hf-hub."""
        if self.from_transformers:  # made with it by transformers_folders.py
            return self.weights
        if not self.pretrained_is_file:
            return None
        if self.weights is None and os.path.isfile(self.pretrained or ""):
            from clipcli.models.weight_files import content_id

            return content_id(self.pretrained or "")
        return self.weights

    @property
    def fingerprint(self) -> str:
        """Identity for caches: the same weights have one fingerprint wherever the file lies,
        and a checkpoint that changes on disk gets a new one."""
        if self.from_transformers:
            return f"transformers|{self.weights_id or self.name}"
        if self.pretrained_is_file:
            return f"{self.name}|{self.weights_id or self.pretrained}"
        return f"{self.name}|{self.pretrained or ''}"

    def describe(self) -> str:
        """The model as the user would name it: its weights too, unless they are the bundled
        model's own (a path inside the installation says nothing to the user)."""
        if self.from_transformers:  # its folder, or hf:ORG/NAME
            return self.name
        bundled = BUNDLED_WEIGHTS.get(self.name)
        if not self.pretrained or (bundled is not None and self.pretrained == str(bundled)):
            return self.name
        return f"{self.name} ({self.pretrained})"


_torch_import_s: list[float] = []  # how long this process took to import open_clip and torch


def open_clip_registry() -> Any:
    """open_clip with clipcli's own model configs registered."""
    if "open_clip" not in sys.modules and "torch" not in sys.modules:
        started = time.perf_counter()
        import open_clip

        _torch_import_s.append(time.perf_counter() - started)
    import open_clip

    if "clipcli-shapes" not in open_clip.list_models():
        open_clip.add_model_config(BUNDLED_CONFIG_DIR)
    return open_clip


def torch_import_seconds() -> float | None:
    """Seconds this process spent importing torch and open_clip, if it started without them."""
    return _torch_import_s[0] if _torch_import_s else None


def recorded_spec(
    name: str, pretrained: str | None, weights: str | None, moved_to: str | None = None
) -> ModelSpec:
    """The model an index recorded, with its weights file found where it is now.

    The file is looked for at `moved_to` (--pretrained naming where it went), where it was,
    and, for the bundled model, in this installation's package; it must hold the weights the
    index recorded (their content id), and indexes made before content ids were recorded trust
    the path. Found nowhere, the spec keeps the recorded place: the exported towers, keyed on
    the content id, still serve it, and loading the model says what is missing.
    """
    if not (pretrained and os.path.isabs(pretrained)):  # a tag or an hf-hub: name
        return ModelSpec(name, pretrained)
    from clipcli.models.weight_files import content_id

    places = [os.path.abspath(moved_to)] if moved_to else []
    places.append(pretrained)
    if name in BUNDLED_WEIGHTS:
        places.append(str(BUNDLED_WEIGHTS[name]))
    for place in places:
        if os.path.isfile(place) and (weights is None or content_id(place) == weights):
            return ModelSpec(name, place, weights)
    if moved_to:
        if not os.path.isfile(moved_to):
            raise UsageError(f"{moved_to}: checkpoint file not found (--pretrained)")
        raise UsageError(
            f"{moved_to}: holds other weights than this index was built with "
            f"({ModelSpec(name, pretrained).describe()})",
            hint="give the checkpoint the index was built with, or use another --index",
        )
    return ModelSpec(name, pretrained, weights)


def checked_weights_file(spec: ModelSpec) -> None:
    """Raise unless `spec`'s checkpoint file is there and holds the weights it names."""
    path = spec.pretrained or ""
    if not os.path.isfile(path):
        raise WeightsUnavailableError(
            f"{path}: weights file not found", hint="if it moved, pass --pretrained NEWPATH"
        )
    if spec.weights is not None:
        from clipcli.models.weight_files import content_id

        if content_id(path) != spec.weights:
            raise WeightsUnavailableError(
                f"{path}: the file changed since this index was built with it",
                hint="put those weights back, or re-embed with these: `clipcli index --reset`",
            )


def resolve_model_spec(
    model: str, pretrained: str | None, *, default_model: bool = False
) -> ModelSpec:
    """Check the model name and choose weights: the given tag or file, else a sensible default.

    With `default_model` (the user named no model), a checkpoint file must fit the default
    architecture: weights of another are refused with a hint to name theirs with --model.
    """
    open_clip = open_clip_registry()
    if model.startswith(HF_HUB_PREFIX):
        return ModelSpec(model, None)
    known = open_clip.list_models()
    if model not in known:
        close = difflib.get_close_matches(model, known, n=5, cutoff=0.6)
        hint = f"did you mean: {', '.join(close)}?" if close else "see open_clip.list_models()"
        raise UnknownModelError(f"unknown model '{model}'", hint=hint)
    if pretrained is None:
        return ModelSpec(model, _default_weights(open_clip, model))
    if os.path.exists(pretrained) or os.sep in pretrained or pretrained.endswith((".pt", ".bin")):
        if not os.path.isfile(pretrained):
            raise UsageError(f"{pretrained}: checkpoint file not found (--pretrained)")
        if default_model:
            from clipcli.models.checkpoints import check_fits_default

            check_fits_default(open_clip, model, os.path.abspath(pretrained))
        return ModelSpec(model, os.path.abspath(pretrained))
    tags = open_clip.list_pretrained_tags_by_model(model)
    if pretrained not in tags:
        known_tags = ", ".join(tags) if tags else "none; pass a checkpoint file"
        raise UsageError(
            f"unknown weights '{pretrained}' for model '{model}'",
            hint=f"known tags: {known_tags}",
        )
    return ModelSpec(model, pretrained)


def spec_without_open_clip(model: str, pretrained: str | None) -> ModelSpec | None:
    """What resolve_model_spec returns for these arguments, where that needs no open_clip."""
    if model.startswith(HF_HUB_PREFIX):
        return ModelSpec(model, None)
    if pretrained is None:
        if model in BUNDLED_WEIGHTS:
            return ModelSpec(model, str(BUNDLED_WEIGHTS[model]))
        return ModelSpec(model, DEFAULT_PRETRAINED) if model == DEFAULT_MODEL else None
    if os.path.isfile(pretrained):
        return ModelSpec(model, os.path.abspath(pretrained))
    if os.path.exists(pretrained) or os.sep in pretrained or pretrained.endswith((".pt", ".bin")):
        return None  # resolve_model_spec explains what is wrong with it
    return ModelSpec(model, pretrained)


def _default_weights(open_clip: Any, model: str) -> str:
    if model in BUNDLED_WEIGHTS:
        return str(BUNDLED_WEIGHTS[model])
    if model == DEFAULT_MODEL:
        return DEFAULT_PRETRAINED
    tags = open_clip.list_pretrained_tags_by_model(model)
    if not tags:
        raise UsageError(
            f"model '{model}' has no published weights",
            hint="pass --pretrained /path/to/checkpoint.pt",
        )
    return tags[0]
