"""Transformers CLIP checkpoints made in the test: random-init CLIPModels saved with
save_pretrained, beside the tokenizer and image processor files transformers writes, and the
transformers recipe that is the reference for them (CLIPProcessor, then CLIPModel)."""

from __future__ import annotations

import gzip
import json
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

# A tiny CLIP: two layers a tower, 64 wide, 64-pixel inputs in 16-pixel patches.
SMALL = {
    "text_config": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
    },
    "vision_config": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "patch_size": 16,
        "image_size": 64,
    },
    "projection_dim": 32,
}
# openai/clip-vit-base-patch32's geometry.
VIT_B_32 = {
    "text_config": {
        "hidden_size": 512,
        "intermediate_size": 2048,
        "num_hidden_layers": 12,
        "num_attention_heads": 8,
    },
    "vision_config": {
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "patch_size": 32,
        "image_size": 224,
    },
    "projection_dim": 512,
}
# CLIPImageProcessor through Pillow, as OpenAI's CLIP and transformers 4 preprocess: the
# torchvision one transformers 5 defaults to rounds its bicubic resize otherwise (pixels up to
# 0.015 apart), which a trained CLIP's temperature turns into probabilities 0.03 apart.
PIL_IMAGE_PROCESSOR = (
    {"backend": "pil"} if int(version("transformers").split(".")[0]) >= 5 else {"use_fast": False}
)
# A trained CLIP's temperature (100): random weights then give probabilities far from uniform.
TRAINED_LOGIT_SCALE = float(np.log(100.0))


def clip_vocab_files(folder: Path) -> None:
    """vocab.json and merges.txt as OpenAI's CLIP repositories on the hub hold them, made from
    open_clip's bundled BPE (whose special tokens transformers spells <|...|>)."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    with gzip.open(default_bpe()) as bundled:
        merges = bundled.read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    vocab = list(bytes_to_unicode().values())
    vocab += [token + "</w>" for token in vocab]
    vocab += ["".join(merge.split()) for merge in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")


def save_clip_folder(
    folder: Path,
    geometry: dict[str, Any],
    seed: int = 0,
    *,
    tokenizer: bool = True,
    processor: bool = True,
    **config: Any,
) -> Path:
    """A seeded random CLIPModel of `geometry`, saved as `save_pretrained` saves it, with
    vocab.json, merges.txt and tokenizer.json, and preprocessor_config.json at its input size."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    torch.manual_seed(seed)
    settings = {"logit_scale_init_value": TRAINED_LOGIT_SCALE, **geometry, **config}
    CLIPModel(CLIPConfig(**settings)).save_pretrained(folder)
    if tokenizer:
        clip_vocab_files(folder)
        CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt")).save_pretrained(
            folder
        )
    if processor:
        side = geometry["vision_config"]["image_size"]
        CLIPImageProcessor(
            size={"shortest_edge": side}, crop_size={"height": side, "width": side}
        ).save_pretrained(folder)
    return folder


def pil_image_processor(**settings: Any) -> Any:
    """transformers' CLIPImageProcessor that resizes through Pillow."""
    try:
        from transformers.models.clip.image_processing_pil_clip import (
            CLIPImageProcessorPil as Processor,
        )
    except ImportError:  # transformers 4, whose CLIPImageProcessor is Pillow's
        from transformers import CLIPImageProcessor as Processor
    return Processor(**settings)


def transformers_reference(
    folder: Path, photos: list[Path], prompts: list[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(probabilities [photos, prompts], unit image embeddings, unit text embeddings) by the
    tutorial recipe: CLIPProcessor's inputs, CLIPModel's logits_per_image, a softmax."""
    import torch
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(folder).eval()
    processor = CLIPProcessor.from_pretrained(folder, **PIL_IMAGE_PROCESSOR)
    images = [Image.open(path).convert("RGB") for path in photos]
    inputs = processor(text=prompts, images=images, return_tensors="pt", padding=True)
    with torch.no_grad():
        outputs = model(**inputs)
    probabilities = outputs.logits_per_image.softmax(dim=1).numpy()
    return probabilities, _unit(outputs.image_embeds.numpy()), _unit(outputs.text_embeds.numpy())


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def save_photos(folder: Path, names: tuple[str, ...] = ("chelsea", "astronaut", "coffee")):
    """scikit-image's sample photos (inside its wheel) as PNGs in `folder`."""
    import skimage.data

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        paths.append(folder / f"{name}.png")
        Image.fromarray(getattr(skimage.data, name)()).convert("RGB").save(paths[-1])
    return paths
