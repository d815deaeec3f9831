"""The ONNX Runtime fast path: same answers as open_clip's torch reference, chosen only when so."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TEST_MODEL, edit_cpu_record, make_image, own_fingerprint, without_torch

from clipcli.encoders import choose, text_tower
from clipcli.encoders import onnx_export as onnx_towers
from clipcli.encoders.choose import load_encoder
from clipcli.encoders.export_cache import ExportFolder
from clipcli.encoders.onnx_sessions import optimised_path
from clipcli.encoders.tokenizer import PROBES, FastTokenizer
from clipcli.errors import UsageError
from clipcli.models.names import ModelSpec


@pytest.fixture
def spec(vit_spec):
    return vit_spec


@pytest.fixture
def vit_args(spec):
    return ["--model", spec.name, "--pretrained", spec.pretrained]


@pytest.fixture(scope="module")
def batch():
    torch.manual_seed(3)
    return torch.rand(6, 3, 64, 64) * 2 - 1


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1)


def test_fp32_is_the_open_clip_reference(spec, batch):
    encoder = load_encoder(spec, "cpu", "fp32")
    assert (encoder.backend, encoder.image_runner) == ("torch-fp32", None)
    with torch.no_grad():
        expected = encoder.model.encode_image(batch, normalize=True).numpy()
    np.testing.assert_array_equal(encoder.encode_images(batch), expected)


def test_exports_are_made_once_per_model(spec):
    load_encoder(spec, "cpu", "onnx")
    tower = optimised_path(ExportFolder.for_spec(spec).tower("image-fp32"))
    before = tower.stat().st_mtime_ns
    load_encoder(spec, "cpu", "onnx")
    assert tower.stat().st_mtime_ns == before


def test_unknown_precision_is_a_usage_error(spec):
    with pytest.raises(UsageError, match="unknown precision"):
        load_encoder(spec, "cpu", "fp8")


def test_bf16_on_a_cpu_without_bf16_is_refused(spec):
    from clipcli.models.device import cpu_has_bf16

    if cpu_has_bf16():
        encoder = load_encoder(spec, "cpu", "bf16")
        assert encoder.backend == "torch-bf16"
    else:
        with pytest.raises(UsageError, match="bf16"):
            load_encoder(spec, "cpu", "bf16")


TOKENIZER_TEXTS = [
    *PROBES,
    "a photo of a red star.",
    "Zürich at NIGHT",
    "don't stop",
    "x" * 500,
    "naïve résumé ½ \u216b \uff12\uff10\uff12\uff16 東京の夜 Ελληνικά",  # Ⅻ, full-width 2026
    "tabs\tand \u00a0non-breaking spaces, underscores_in_words, CamelCase99",
    "it's 3:45pm -- the 2nd of May, #42 @home (ok?) [yes] {no} ~50% +/- 1.5e3",
]


@pytest.fixture(scope="module")
def saved_tokenizer(tmp_path_factory):
    import open_clip

    reference = open_clip.get_tokenizer("ViT-B-32")
    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
    FastTokenizer.save_open_clip(reference, path)
    return reference, FastTokenizer.load(path)


def test_fast_tokenizer_gives_open_clips_tokens(saved_tokenizer):
    reference, fast = saved_tokenizer
    np.testing.assert_array_equal(fast(TOKENIZER_TEXTS), reference(TOKENIZER_TEXTS).numpy())


def test_ascii_text_is_split_by_re_exactly_as_by_regex(saved_tokenizer):
    _, fast = saved_tokenizer
    assert fast._ascii_pattern is not None
    for text in TOKENIZER_TEXTS:
        if text.isascii():
            cleaned = " ".join(text.split()).lower()
            assert fast._ascii_pattern.findall(cleaned) == fast._pattern.findall(cleaned)


def test_the_torch_free_text_encoder_agrees_with_open_clip(spec):
    encoder = load_encoder(spec, "cpu", "fp32")
    text_tower.prepare_fast_search(encoder)
    fast = text_tower.fast_text_encoder(spec)
    assert fast is not None
    queries = ["a horse", "A photo of a RED square!", "l'été à Paris", "x" * 300]
    assert cosines(fast(queries), encoder.encode_texts(queries)).min() >= 0.999
    for query in queries:  # each alone: run on its own tokens only, not the whole context
        single = fast([query])[0]
        assert float(single @ encoder.encode_texts([query])[0]) >= 0.99999


def test_search_answers_without_importing_torch_and_like_torch(
    cli, vit_args, spec, photo_folder, tmp_path
):
    index = tmp_path / "index"
    assert cli("index", photo_folder, "--index", index, *vit_args).exit_code == 0
    fast = without_torch(
        "from clipcli.search import search_index\n"
        f"hits = search_index(Path({str(index)!r}), 'a red square', top_k=5).hits\n"
        "result = {'paths': [h.path for h in hits], 'scores': [h.score for h in hits]}"
    )

    # The torch reference: open_clip's text tower, then the same vector index.
    from clipcli.store import vector_index
    from clipcli.store.catalog import Catalog

    torch_query = load_encoder(spec, "cpu", "fp32").encode_texts(["a red square"])[0]
    with Catalog(index) as catalog:
        hits = vector_index.search(vector_index.refresh(index, catalog), torch_query, 5)
        paths = catalog.paths_for([h.id for h in hits])
    assert fast["paths"] == [paths[h.id] for h in hits]
    np.testing.assert_allclose(fast["scores"], [h.score for h in hits], atol=1e-3)


@pytest.mark.backends
def test_classify_results_agree_across_backends(cli, vit_args, tmp_path):
    images = [make_image(tmp_path / f"{c}.png", c, (90, 70)) for c in ("red", "navy", "gold")]
    runs = {}
    for precision in ("fp32", "onnx"):
        result, data = cli.json(
            "classify",
            *images,
            "--labels",
            "red,blue,yellow,cat",
            "--precision",
            precision,
            *vit_args,
        )
        assert result.exit_code == 0, result.stderr
        runs[precision] = data
    for a, b in zip(runs["fp32"], runs["onnx"], strict=True):
        assert [p["label"] for p in a["predictions"]] == [p["label"] for p in b["predictions"]]
        for pa, pb in zip(a["predictions"], b["predictions"], strict=True):
            assert pa["similarity"] == pytest.approx(pb["similarity"], abs=1e-4)


def test_a_model_the_exporter_cannot_handle_keeps_torch_and_is_not_retried(
    random_checkpoint, tmp_path, monkeypatch, capfd
):
    spec = own_fingerprint(random_checkpoint, tmp_path)
    attempts = []

    def failing_export(*args, **kwargs):
        attempts.append(args)
        raise RuntimeError("operator not supported")

    monkeypatch.setattr(onnx_towers, "export_tower", failing_export)
    assert load_encoder(spec, "cpu", "auto").backend == "torch-fp32"
    assert load_encoder(spec, "cpu", "auto").backend == "torch-fp32"
    assert len(attempts) == 1
    meta = ExportFolder.for_spec(spec).read_meta()
    assert "operator not supported" in meta["image_export_error"]
    assert capfd.readouterr().err == ""


def test_the_bundled_resnet_exports_exactly_too(batch):
    from clipcli.models.names import BUNDLED_WEIGHTS

    spec = ModelSpec(TEST_MODEL, str(BUNDLED_WEIGHTS[TEST_MODEL]))
    reference = load_encoder(spec, "cpu", "fp32").encode_images(batch)
    assert load_encoder(spec, "cpu", "onnx").backend == "onnx-fp32"
    for precision in ("onnx", "auto"):  # auto: whichever backend is fastest here, faithfully
        got = load_encoder(spec, "cpu", precision).encode_images(batch)
        assert cosines(got, reference).min() > 0.999


def test_an_exported_image_tower_replaces_the_torch_copy_of_its_weights(spec):
    encoder = load_encoder(spec, "cpu", "onnx")
    assert encoder.backend == "onnx-fp32"
    assert encoder.model.visual is None  # one copy of the image tower in memory, not two
    assert encoder.input_size == 64
    assert encoder.encode_texts(["a horse"]).shape == (1, 64)  # the text side is all there


def test_reindexing_an_exported_model_needs_no_torch_and_gives_the_same_vectors(
    cli, vit_args, spec, photo_folder, tmp_path
):
    index = tmp_path / "index"
    assert cli("index", photo_folder, "--index", index, *vit_args).exit_code == 0
    # Whichever backend auto takes, as long as it is an exported one: say torch timed slowest.
    edit_cpu_record(spec, torch={"rate": 0.0})
    new = make_image(photo_folder / "later" / "orange.png", "orange", (120, 90))
    added = without_torch(
        "from clipcli.index import update_index\n"
        f"result = update_index([Path({str(photo_folder)!r})], Path({str(index)!r})).added"
    )
    assert added == 1

    from clipcli.encoders.batching import embed_files
    from clipcli.store.catalog import Catalog

    with Catalog(index) as catalog:
        ids = {path: entry.id for path, entry in catalog.entries().items()}
        stored = dict(zip(*catalog.vectors(), strict=True))[ids[str(new)]]
    loaded = load_encoder(spec, "cpu", "auto")  # the same backend, through open_clip
    expected = next(embed_files(loaded, [new], batch_size=1)).embeddings[0]
    np.testing.assert_allclose(stored, expected, atol=1e-6)


@pytest.mark.parametrize("into", ["a new index", "the existing index"])
def test_indexing_a_few_photos_with_the_model_named_needs_no_torch(
    cli, vit_args, spec, photo_folder, tmp_path, into
):
    index = tmp_path / "index"
    assert cli("index", photo_folder, "--index", index, *vit_args).exit_code == 0  # exported
    edit_cpu_record(spec, torch={"rate": 0.0})  # an exported tower, whatever this CPU timed
    new = tmp_path / "new"
    for colour in ("orange", "purple", "teal", "olive"):
        make_image(new / f"{colour}.png", colour, (120, 90))
    target = tmp_path / "fresh" if into == "a new index" else index
    added = without_torch(
        "from clipcli.index import update_index\n"
        f"report = update_index([Path({str(new)!r})], Path({str(target)!r}),"
        f" model={spec.name!r}, pretrained={spec.pretrained!r})\n"
        "result = report.added"
    )
    assert added == 4


def test_with_a_gpu_possibly_present_the_model_is_loaded_to_let_torch_choose(spec, monkeypatch):
    from clipcli.encoders import choose
    from clipcli.encoders.onnx_image import ExportedImageEncoder
    from clipcli.encoders.torch_clip import Encoder

    text_tower.prepare_fast_search(load_encoder(spec, "cpu", "auto"))  # both towers exported
    edit_cpu_record(spec, torch={"rate": 0.0})
    assert isinstance(choose.load_image_encoder(spec, "cpu"), ExportedImageEncoder)
    monkeypatch.setattr(choose, "accelerator_possible", lambda: True)
    assert isinstance(choose.load_image_encoder(spec, "auto"), Encoder)
    assert isinstance(choose.load_image_encoder(spec, "cpu", "fp32"), Encoder)


def test_a_pruned_export_is_made_again_instead_of_failing(
    random_checkpoint, tmp_path, cli, photo_folder
):
    spec = own_fingerprint(random_checkpoint, tmp_path)
    args = ["--model", spec.name, "--pretrained", spec.pretrained]
    index = tmp_path / "index"
    assert cli("index", photo_folder, "--index", index, *args).exit_code == 0
    folder = ExportFolder.for_spec(spec)
    for weights in folder.path.glob("*.weights"):
        weights.unlink()  # e.g. a cache cleaner that removes large files
    assert choose.exported_image_encoder(spec) is None
    assert text_tower.fast_text_encoder(spec) is None

    result, hits = cli.json("search", "a red square", "--index", index)
    assert result.exit_code == 0, result.stderr
    assert len(hits) == 5
    make_image(photo_folder / "new.png", "purple")
    assert cli("index", photo_folder, "--index", index, *args).exit_code == 0
    assert folder.read_meta()["image_exported"]
    assert folder.graphs_present(folder.read_meta())


def test_classify_with_cached_labels_needs_no_torch_and_answers_alike(
    cli, vit_args, spec, tmp_path
):
    images = [make_image(tmp_path / f"{c}.png", c, (90, 70)) for c in ("red", "navy")]
    labels = "red,blue,yellow"
    load_encoder(spec, "cpu", "auto")  # exported
    edit_cpu_record(spec, torch={"rate": 0.0})  # an ONNX tower
    result, expected = cli.json("classify", *images, "--labels", labels, *vit_args)
    assert result.exit_code == 0, result.stderr  # the labels are cached now
    predictions_by_image = without_torch(
        "from clipcli.classify import classify_paths\n"
        "from clipcli.zeroshot.templates import load_templates\n"
        f"paths = [Path(p) for p in {[str(p) for p in images]!r}]\n"
        f"found = classify_paths(paths, {labels.split(',')!r}, load_templates('default'),"
        f" model={spec.name!r}, pretrained={spec.pretrained!r})\n"
        "result = [[(p.label, p.similarity, p.score) for p in c.predictions] for c in found]"
    )
    for entry, predictions in zip(expected, predictions_by_image, strict=True):
        assert [label for label, *_ in predictions] == [p["label"] for p in entry["predictions"]]
        for (_, similarity, score), p in zip(predictions, entry["predictions"], strict=True):
            assert similarity == pytest.approx(p["similarity"], abs=1e-6)
            assert score == pytest.approx(p["score"], abs=1e-5)  # the same logit scale


@pytest.mark.parametrize(
    "model, pretrained",
    [
        ("ViT-B-32-256", None),  # the default model: its default weights
        ("clipcli-shapes", None),  # bundled weights
        ("ViT-B-32", "openai"),  # a published tag
        ("hf-hub:org/repo", None),
    ],
)
def test_model_names_resolve_alike_without_open_clip(model, pretrained):
    from clipcli.models.names import resolve_model_spec, spec_without_open_clip

    assert spec_without_open_clip(model, pretrained) == resolve_model_spec(model, pretrained)


def test_a_checkpoint_file_resolves_alike_without_open_clip(random_checkpoint):
    from clipcli.models.names import resolve_model_spec, spec_without_open_clip

    assert spec_without_open_clip(TEST_MODEL, str(random_checkpoint)) == resolve_model_spec(
        TEST_MODEL, str(random_checkpoint)
    )
    assert spec_without_open_clip("ViT-B-32", "/no/such/file.pt") is None  # left to open_clip
    assert spec_without_open_clip("ViT-B-32", None) is None  # its default tag needs open_clip


class PhaseNames:
    def __init__(self) -> None:
        self.names: list[str] = []

    def phase(self, description: str, total: int) -> None:
        self.names.append(description)

    def advance(self, count: int) -> None:
        pass


def test_the_one_time_export_is_shown_as_its_own_step(random_checkpoint, tmp_path, photo_folder):
    from clipcli.index import update_index

    spec = own_fingerprint(random_checkpoint, tmp_path)
    runs = []
    for index in ("first", "second"):
        progress = PhaseNames()
        update_index(
            [photo_folder],
            tmp_path / index,
            model=spec.name,
            pretrained=spec.pretrained,
            device="cpu",
            progress=progress,
        )
        runs.append(progress.names)
    assert "Preparing the fast CPU path (once per model)" in runs[0]
    assert "Preparing the fast CPU path (once per model)" not in runs[1]
    assert "Embedding" in runs[1]
