"""Newer open_clip families on every path, against open_clip's own embeddings of the same input.

MobileCLIP2 (its smallest, S0), PE-Core (its smallest, T-16-384) and the QuickGELU ViTs (a
ViT-B-32-quickgelu shrunk to two layers: the real one takes two minutes to export and check on
two cores) go through torch, the ONNX export, int8, classify, index and search. Weights are
random, with batch-norm statistics and layer scales drawn too: a fresh init has nothing for
MobileCLIP's reparameterisation to fold, and its 1e-5 layer scales give every image one
embedding.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from clipcli.encoders import agreement, text_tower
from clipcli.encoders.choose import fastest, load_encoder
from clipcli.encoders.export_cache import ExportFolder
from clipcli.encoders.onnx_sessions import optimised_path
from clipcli.encoders.tower_checks import cpu_record, image_runner
from clipcli.models.names import ModelSpec

pytestmark = pytest.mark.slow

MOBILECLIP = "MobileCLIP2-S0"
PE_CORE = "PE-Core-T-16-384"
QUICKGELU = "clipcli-test-vit-quickgelu"
# ViT-B-32-quickgelu's recipe (QuickGELU in every block of both towers) at the tiny ViT's size.
QUICKGELU_CONFIG = {
    "embed_dim": 64,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
PHOTOS = ("chelsea", "astronaut", "coffee")
LABELS = ["cat", "astronaut", "cup of coffee"]
QUERY = "a cat on a sofa"
# torch and ONNX fp32 compute open_clip's function, to float rounding.
EXACT = 0.9999


@dataclass(frozen=True)
class Family:
    spec: ModelSpec
    model: Any  # open_clip's own, loaded from the checkpoint as its README shows
    tokenizer: Any
    photos: list[Path]
    pixels: torch.Tensor  # the photos, through the model's own eval preprocessing
    images: np.ndarray  # open_clip's unit embeddings of them

    def texts(self, texts: list[str]) -> np.ndarray:
        with torch.no_grad():
            return self.model.encode_text(self.tokenizer(texts), normalize=True).numpy()


def with_drawn_statistics(model: Any, seed: int) -> Any:
    """Batch norms with running statistics and affine terms, and layer scales, drawn from a
    fixed seed, as training leaves them."""
    draw = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=draw) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=draw) + 0.5)
                module.weight.copy_(torch.rand(n, generator=draw) + 0.5)
                module.bias.copy_(torch.randn(n, generator=draw) * 0.1)
        for name, parameter in model.named_parameters():
            if name.endswith("gamma"):
                parameter.copy_(torch.rand(parameter.shape, generator=draw) * 0.5)
    return model


@pytest.fixture(scope="module", params=[MOBILECLIP, PE_CORE, QUICKGELU])
def family(request, tmp_path_factory) -> Family:
    import open_clip
    from skimage import data

    folder = tmp_path_factory.mktemp(request.param)
    if request.param == QUICKGELU:
        (folder / f"{QUICKGELU}.json").write_text(json.dumps(QUICKGELU_CONFIG))
        open_clip.add_model_config(folder)
    torch.manual_seed(0)
    checkpoint = folder / "random.pt"
    torch.save(
        with_drawn_statistics(open_clip.create_model(request.param), 0).state_dict(), checkpoint
    )
    model, _, preprocess = open_clip.create_model_and_transforms(
        request.param, pretrained=str(checkpoint)
    )
    photos = []
    for name in PHOTOS:
        photos.append(folder / "photos" / f"{name}.png")
        photos[-1].parent.mkdir(exist_ok=True)
        Image.fromarray(getattr(data, name)()).save(photos[-1])
    pixels = torch.stack([preprocess(Image.open(path).convert("RGB")) for path in photos])
    with torch.no_grad():
        images = model.eval().encode_image(pixels, normalize=True).numpy()
    spec = ModelSpec(request.param, str(checkpoint))
    return Family(spec, model, open_clip.get_tokenizer(spec.name), photos, pixels, images)


def agrees(found: np.ndarray, expected: np.ndarray, queries: np.ndarray) -> agreement.Agreement:
    return agreement.measure(expected, found, queries)


def test_torch_gives_open_clips_embeddings(family):
    encoder = load_encoder(family.spec, "cpu", "fp32")
    prompts = [f"a photo of a {label}." for label in LABELS]
    texts = family.texts(prompts)

    images = agrees(encoder.encode_images(family.pixels), family.images, texts)
    assert min(images.cosine, images.centred) >= EXACT
    found = agrees(encoder.encode_texts(prompts), texts, family.images)
    assert min(found.cosine, found.centred) >= EXACT


@pytest.mark.parametrize("family", [MOBILECLIP], indirect=True)
def test_mobileclip_runs_folded_as_its_authors_deploy_it(family):
    def layers(model: Any, kind: type) -> int:
        return sum(isinstance(module, kind) for module in model.visual.modules())

    folded = load_encoder(family.spec, "cpu", "fp32").model
    norms = torch.nn.modules.batchnorm._BatchNorm
    assert layers(folded, norms) < layers(family.model, norms) / 4
    assert layers(folded, torch.nn.Conv2d) < layers(family.model, torch.nn.Conv2d)

    load_encoder(family.spec, "cpu", "onnx")  # the export is made from the loaded model
    graph = exported_graph(family.spec, "image-fp32")
    convolutions = sum(node.op_type in ("Conv", "FusedConv") for node in graph.graph.node)
    assert convolutions == layers(folded, torch.nn.Conv2d)


def exported_graph(spec: ModelSpec, tower: str) -> Any:
    import onnx

    path = optimised_path(ExportFolder.for_spec(spec).tower(tower))
    return onnx.load(str(path), load_external_data=False)


def test_the_onnx_export_gives_open_clips_embeddings(family):
    encoder = load_encoder(family.spec, "cpu", "onnx")
    assert encoder.backend == "onnx-fp32"
    texts = family.texts([QUERY])
    found = agrees(encoder.encode_images(family.pixels), family.images, texts)
    assert min(found.cosine, found.centred) >= EXACT


def test_int8_keeps_the_gate_or_auto_refuses_it_saying_why(family):
    auto = load_encoder(family.spec, "cpu", "auto")
    record = cpu_record(ExportFolder.for_spec(family.spec).read_meta())
    assert record is not None
    int8 = record["int8"]
    texts = family.texts([f"a photo of a {label}." for label in LABELS])
    if agreement.passes(int8, agreement.FLOORS):
        assert int8["refused"] is None
        run = image_runner(ExportFolder.for_spec(family.spec), record, "int8")
        found = agrees(run(family.pixels.numpy()), family.images, texts)
        assert found.cosine >= agreement.FLOORS["cosine"]
    else:
        assert "<" in int8["refused"]  # which figure fell short of which floor
        assert fastest(record, 1) != "int8" and fastest(record) != "int8"
        assert auto.backend != "onnx-int8"
    found = agrees(auto.encode_images(family.pixels), family.images, texts)
    assert found.cosine >= agreement.FLOORS["cosine"]


@pytest.mark.parametrize("family", [QUICKGELU], indirect=True)
def test_quick_gelu_survives_the_export_and_int8(family):
    load_encoder(family.spec, "cpu", "auto")
    text_tower.prepare_fast_search(load_encoder(family.spec, "cpu", "fp32"))
    record = cpu_record(ExportFolder.for_spec(family.spec).read_meta())
    assert record is not None and "graph" in record["int8"]
    for tower in ("image-fp32", record["int8"]["graph"], "text-fp32"):
        activations = [
            node for node in exported_graph(family.spec, tower).graph.node if "Gelu" in node.op_type
        ]
        assert [node.op_type for node in activations] == ["QuickGelu"] * 2, tower  # per layer
        for node in activations:
            (alpha,) = [a.f for a in node.attribute if a.name == "alpha"]
            assert alpha == pytest.approx(1.702)


def test_classify_index_and_search_answer_with_open_clips_cosines(family, cli, tmp_path):
    import open_clip

    from clipcli.zeroshot.templates import load_templates

    args = ["--model", family.spec.name, "--pretrained", family.spec.pretrained]
    templates = list(load_templates("default").templates)
    with torch.no_grad():
        classifier = open_clip.build_zero_shot_classifier(
            family.model, family.tokenizer, LABELS, templates
        ).numpy()
    expected = family.images @ classifier
    for precision in ("fp32", "onnx"):
        result, entries = cli.json(
            "classify",
            *family.photos,
            "--labels",
            ",".join(LABELS),
            "--precision",
            precision,
            *args,
        )
        assert result.exit_code == 0, result.stderr
        for row, entry in zip(expected, entries, strict=True):
            found = {p["label"]: p["similarity"] for p in entry["predictions"]}
            assert [found[label] for label in LABELS] == pytest.approx(row, abs=1e-4), precision

    index = tmp_path / "index"
    indexed = cli("index", family.photos[0].parent, "--index", index, "--precision", "onnx", *args)
    assert indexed.exit_code == 0, indexed.stderr
    result, hits = cli.json("search", QUERY, "--index", index)
    assert result.exit_code == 0, result.stderr
    expected = family.images @ family.texts([QUERY])[0]
    scores = dict(zip(map(str, family.photos), expected.tolist(), strict=True))
    assert {hit["path"]: hit["score"] for hit in hits} == pytest.approx(scores, abs=1e-4)

    fast = text_tower.fast_text_encoder(family.spec)  # what searched, without torch
    assert fast is not None
    assert agreement.lowest_cosine(fast([QUERY, "x"]), family.texts([QUERY, "x"])) >= EXACT
