"""A transformers CLIP checkpoint as an open_clip model, converted in memory.

transformers' CLIPModel and open_clip's CLIP are the same network, OpenAI's: a ViT that pools
its class token after a final layer norm (HF's `post_layernorm` on the pooled token is
open_clip's `ln_post` on every token, then the class token), with a layer norm before the
transformer (`pre_layrnorm`, open_clip's `ln_pre`); and a causal text transformer pooled at the
end-of-text token. Only the layout differs: HF keeps q, k and v as three projections where
open_clip's attention takes one, and stores projections as Linear weights, the transpose of
open_clip's matrices. Renamed and reshaped, the weights load into open_clip's CLIP, and every
path clipcli has (ONNX export, int8, the fast text tower) runs as for open_clip's own models.
transformers itself is not needed: safetensors (or torch, for pytorch_model.bin) reads them.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clipcli.errors import UsageError, WeightsUnavailableError
from clipcli.models.checkpoints import load_failure
from clipcli.models.names import ModelSpec
from clipcli.models.transformers_config import Geometry, Preprocessing, Tower
from clipcli.models.transformers_folders import TransformersFolder, checked_folder

if TYPE_CHECKING:
    import torch

Tensors = dict[str, "torch.Tensor"]
# Buffers of HF's embeddings (arange of the positions), not weights.
_IGNORED_SUFFIX = ".position_ids"
# transformers names open_clip's special tokens so; every other token is spelled the same.
_SPECIAL = {"<|startoftext|>": "<start_of_text>", "<|endoftext|>": "<end_of_text>"}


def load_parts(spec: ModelSpec, device: str) -> tuple[Any, Callable[[Any], Any], Any, int]:
    """(model, preprocess, tokenizer, resize side) for a transformers checkpoint: open_clip's
    CLIP with the checkpoint's weights, in eval mode on `device`, its preprocessing and CLIP's
    BPE tokenizer (refused where the checkpoint's own vocabulary is another)."""
    from open_clip import set_model_preprocess_cfg

    folder = checked_folder(spec)
    tokenizer = clip_tokenizer(folder)
    model = _empty_model(folder.geometry)
    state = open_clip_state_dict(_read_tensors(folder), folder.geometry, folder.weights[0])
    _check_shapes(state, model.state_dict(), folder.weights[0])
    model.load_state_dict(state, assign=True)
    _rebuild_causal_mask(model, folder.geometry.context_length)
    preprocess, config = image_preprocess(folder.preprocessing)
    set_model_preprocess_cfg(model, config)
    return model.to(device).eval(), preprocess, tokenizer, folder.preprocessing.resize


def open_clip_state_dict(hf: Tensors, geometry: Geometry, where: Path) -> Tensors:
    """HF CLIPModel's tensors renamed and reshaped into open_clip CLIP's, as float32 copies
    (each taken out of `hf`, so that a large model is not held twice).

    A tensor the network needs and the checkpoint lacks, or one the config does not account
    for, is a WeightsUnavailableError naming `where`.
    """
    import torch

    def take(key: str) -> torch.Tensor:
        if key not in hf:
            raise WeightsUnavailableError(
                f"{where}: not a checkpoint for its config ({key} missing)"
            )
        return hf.pop(key).to(torch.float32, copy=True).contiguous()

    state = {
        "visual.conv1.weight": take("vision_model.embeddings.patch_embedding.weight"),
        "visual.class_embedding": take("vision_model.embeddings.class_embedding"),
        "visual.positional_embedding": take("vision_model.embeddings.position_embedding.weight"),
        "visual.proj": take("visual_projection.weight").T.contiguous(),
        "token_embedding.weight": take("text_model.embeddings.token_embedding.weight"),
        "positional_embedding": take("text_model.embeddings.position_embedding.weight"),
        "text_projection": take("text_projection.weight").T.contiguous(),
        "logit_scale": take("logit_scale").reshape(()),
    }
    for theirs, ours in (
        ("vision_model.pre_layrnorm", "visual.ln_pre"),
        ("vision_model.post_layernorm", "visual.ln_post"),
        ("text_model.final_layer_norm", "ln_final"),
    ):
        for kind in ("weight", "bias"):
            state[f"{ours}.{kind}"] = take(f"{theirs}.{kind}")
    towers = (
        ("vision_model.encoder.layers", "visual.transformer.resblocks", geometry.vision),
        ("text_model.encoder.layers", "transformer.resblocks", geometry.text),
    )
    for theirs, ours, tower in towers:
        for layer in range(tower.layers):
            state.update(_block(take, f"{theirs}.{layer}", f"{ours}.{layer}"))
    unknown = sorted(k for k in hf if not k.endswith(_IGNORED_SUFFIX))
    if unknown:
        raise WeightsUnavailableError(
            f"{where}: not a checkpoint for its config ({len(unknown)} tensors it does not "
            f"account for, such as {unknown[0]})"
        )
    return state


def _block(take: Callable[[str], Any], theirs: str, ours: str) -> Tensors:
    """One residual attention block: q, k and v stacked into MultiheadAttention's in_proj."""
    import torch

    attention = f"{theirs}.self_attn"
    block = {
        f"{ours}.attn.in_proj_weight": torch.cat(
            [take(f"{attention}.{p}_proj.weight") for p in "qkv"]
        ),
        f"{ours}.attn.in_proj_bias": torch.cat([take(f"{attention}.{p}_proj.bias") for p in "qkv"]),
    }
    for hf_name, name in (
        ("self_attn.out_proj", "attn.out_proj"),
        ("layer_norm1", "ln_1"),
        ("layer_norm2", "ln_2"),
        ("mlp.fc1", "mlp.c_fc"),
        ("mlp.fc2", "mlp.c_proj"),
    ):
        for kind in ("weight", "bias"):
            block[f"{ours}.{name}.{kind}"] = take(f"{theirs}.{hf_name}.{kind}")
    return block


def image_preprocess(pixels: Preprocessing) -> tuple[Callable[[Any], Any], dict[str, Any]]:
    """The eval transform, and the open_clip preprocess config that describes it.

    Where open_clip's own transform is the folder's (a resize to the crop size, or a squash,
    bicubic or bilinear), it is that transform, which the torch-free pixel path reproduces;
    otherwise the same steps through torchvision, and images go through torch.
    """
    from open_clip.transform import PreprocessCfg, image_transform_v2

    size = pixels.crop or pixels.resize
    config = {
        "size": size,
        "mode": "RGB",
        "mean": pixels.mean,
        "std": pixels.std,
        "interpolation": pixels.interpolation,
        "resize_mode": "squash" if pixels.squash and pixels.crop is None else "shortest",
        "fill_color": 0,
    }
    own = pixels.interpolation in ("bicubic", "bilinear") and (
        pixels.crop is None if pixels.squash else pixels.crop == pixels.resize
    )
    if own:
        return image_transform_v2(PreprocessCfg(**config), is_train=False), config
    return _torchvision_transform(pixels), config


def _torchvision_transform(pixels: Preprocessing) -> Callable[[Any], Any]:
    from torchvision import transforms

    mode = transforms.InterpolationMode[pixels.interpolation.upper()]
    side = (pixels.resize, pixels.resize) if pixels.squash else pixels.resize
    steps: list[Any] = [transforms.Resize(side, interpolation=mode)]
    if pixels.crop is not None:
        steps.append(transforms.CenterCrop(pixels.crop))
    steps += [
        transforms.Lambda(_rgb),
        transforms.ToTensor(),
        transforms.Normalize(pixels.mean, pixels.std),
    ]
    return transforms.Compose(steps)


def _rgb(image: Any) -> Any:
    return image.convert("RGB")


def clip_tokenizer(folder: TransformersFolder) -> Any:
    """open_clip's CLIP BPE tokenizer at the checkpoint's context length, once the folder's own
    tokenizer files are known to hold the same vocabulary and merges."""
    from open_clip.tokenizer import SimpleTokenizer

    tokenizer = SimpleTokenizer(context_length=folder.geometry.context_length)
    vocab = dict(tokenizer.encoder)
    merges = [pair for pair, _ in sorted(tokenizer.bpe_ranks.items(), key=lambda item: item[1])]
    for path in folder.tokenizer_files:
        theirs_vocab, theirs_merges = _tokenizer_file(path)
        if theirs_vocab is not None:
            renamed = {_SPECIAL.get(token, token): index for token, index in theirs_vocab.items()}
            if renamed != vocab:
                differ = sorted(set(renamed.items()) ^ set(vocab.items()), key=str)
                raise UsageError(
                    f"{path}: not CLIP's vocabulary ({len(differ)} entries differ, such as "
                    f"{differ[0][0]!r}); clipcli tokenizes with open_clip's CLIP BPE"
                )
        if theirs_merges is not None and theirs_merges != merges:
            raise UsageError(
                f"{path}: not CLIP's BPE merges; clipcli tokenizes with open_clip's CLIP BPE"
            )
    return tokenizer


def _tokenizer_file(path: Path) -> tuple[dict[str, int] | None, list[tuple[str, ...]] | None]:
    """(vocabulary, merges) in a vocab.json, merges.txt or tokenizer.json; None where absent."""
    try:
        text = path.read_text(encoding="utf-8")
        if path.name == "merges.txt":
            lines = [line for line in text.split("\n") if line and not line.startswith("#version")]
            return None, [tuple(line.split()) for line in lines]
        data = json.loads(text)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"{path}: not readable ({type(exc).__name__})") from exc
    if path.name == "vocab.json":
        return _checked_vocab(data, path), None
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict) or model.get("type") != "BPE":
        raise UsageError(f"{path}: not a BPE tokenizer; clipcli tokenizes with CLIP's BPE")
    merges = [tuple(m.split()) if isinstance(m, str) else tuple(m) for m in model.get("merges", [])]
    return _checked_vocab(model.get("vocab"), path), merges


def _checked_vocab(vocab: Any, path: Path) -> dict[str, int]:
    if not isinstance(vocab, dict):
        raise UsageError(f"{path}: no vocabulary")
    return vocab


def _read_tensors(folder: TransformersFolder) -> Tensors:
    """Every tensor of the checkpoint's weights files; pickles only as tensors alone."""
    import torch

    tensors: Tensors = {}
    for path in folder.weights:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            try:
                tensors.update(load_file(path))
            except Exception as exc:  # safetensors raises its own error, or the OS's
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise WeightsUnavailableError(f"{path}: not a safetensors file ({first})") from exc
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                loaded = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch and pickle each raise their own types
            raise load_failure(str(path), "CLIPModel", exc) from exc
        if not isinstance(loaded, dict) or not all(
            isinstance(value, torch.Tensor) for value in loaded.values()
        ):
            raise WeightsUnavailableError(f"{path}: not a checkpoint of tensors by name")
        tensors.update(loaded)
    return tensors


def _check_shapes(state: Tensors, expected: Tensors, where: Path) -> None:
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise WeightsUnavailableError(
                f"{where}: not a checkpoint for its config ({key} is "
                f"{list(tensor.shape)}, config.json makes it {list(expected[key].shape)})"
            )


def _empty_model(geometry: Geometry) -> Any:
    """open_clip's CLIP of this geometry, with no memory for weights (the checkpoint's are
    assigned to it): random initialisation would cost a second for ViT-B/32."""
    import torch
    from open_clip.model import CLIP

    vision = {
        "layers": geometry.vision.layers,
        "width": geometry.vision.width,
        "head_width": geometry.vision.width // geometry.vision.heads,
        "mlp_ratio": geometry.vision.mlp_width / geometry.vision.width,
        "patch_size": geometry.patch_size,
        "image_size": geometry.image_size,
        **_layer_kwargs(geometry.vision),
    }
    text = {
        "context_length": geometry.context_length,
        "vocab_size": geometry.vocab_size,
        "width": geometry.text.width,
        "heads": geometry.text.heads,
        "layers": geometry.text.layers,
        "mlp_ratio": geometry.text.mlp_width / geometry.text.width,
        "pool_type": geometry.text_pool,
        "eos_id": geometry.eos_id,
        **_layer_kwargs(geometry.text),
    }
    quick_gelu = geometry.vision.activation == "quick_gelu"
    with torch.device("meta"):
        return CLIP(geometry.embed_dim, vision, text, quick_gelu=quick_gelu)


def _layer_kwargs(tower: Tower) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if tower.activation == "gelu_tanh":
        kwargs["act_kwargs"] = {"approximate": "tanh"}
    if tower.eps != 1e-5:  # open_clip's LayerNorm default
        kwargs["norm_kwargs"] = {"eps": tower.eps}
    return kwargs


def _rebuild_causal_mask(model: Any, context_length: int) -> None:
    """The text tower's causal mask, a buffer no checkpoint holds, made for real: built on the
    meta device with the rest, it has no values. Any other such tensor would be a bug here."""
    import torch

    model.attn_mask = torch.full((context_length, context_length), float("-inf")).triu_(1)
    empty = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if empty:
        raise RuntimeError(f"tensors left without values: {', '.join(empty)}")
