"""The text tower exported once to ONNX, and the torch-free text encoder over it.

With the text tower and the torch-free tokenizer (tokenizer.py) `clipcli search` answers a new
query without importing torch at all. CLIP's text tower is causal and pools at the
end-of-text token, so where the model allows, it is exported for any sequence length and run
on the query's own tokens: a query of 6 tokens need not pay for 77.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from clipcli.encoders.agreement import lowest_cosine
from clipcli.encoders.export_cache import ExportFolder
from clipcli.encoders.onnx_export import export_tower, finish, record_failure, tower_module
from clipcli.encoders.onnx_sessions import batch_runner, onnxruntime_available
from clipcli.encoders.quiet import stderr_silenced
from clipcli.encoders.text_trim import (
    agrees_with_full_context,
    pooled_positions,
    run_bucketed,
    trimmed_text_tower,
)
from clipcli.encoders.torch_clip import Encoder
from clipcli.encoders.tower_checks import AUTO_MIN_COSINE

if TYPE_CHECKING:
    from clipcli.encoders.protocols import ImageEncoder
    from clipcli.models.names import ModelSpec
    from clipcli.vectors import Embeddings


def ensure_text_tower(encoder: Encoder) -> bool:
    """Export the text tower and a torch-free tokenizer; True when both agree with open_clip."""
    from clipcli.encoders.tokenizer import FastTokenizer, matches_open_clip

    folder = ExportFolder.for_spec(encoder.spec)
    with folder.writing() as meta:
        if "text_ok" in meta:
            return bool(meta["text_ok"])
        tokenizer = encoder.tokenizer
        if not hasattr(tokenizer, "bpe_ranks") or getattr(tokenizer, "reduction_fn", None):
            folder.update_meta(text_ok=False)  # not CLIP's BPE tokenizer: keep the torch path
            return False
        FastTokenizer.save_open_clip(tokenizer, folder.tokenizer)
        fast = FastTokenizer.load(folder.tokenizer)  # what searches will use, as saved
        texts = ["a photo of a horse.", "a diagram", "x", "word " * 100]
        expected = encoder.encode_texts(texts, full_context=True)
        pool = _export_trimmed_text_tower(encoder, folder, fast, texts, expected)
        if pool is None:
            tokens = tokenizer(["a photo of a horse.", "a diagram"])
            tower = tower_module(encoder.model, "encode_text")
            export_tower(tower, tokens, folder.tower("text-fp32"), "tokens")
            finish(folder.tower("text-fp32"))
        run = _text_runner(folder, fast.eot, pool, prepack=False)
        cosine = lowest_cosine(expected, run(fast(texts)))
        ok = matches_open_clip(fast, tokenizer) and cosine >= AUTO_MIN_COSINE
        folder.update_meta(
            text_ok=ok, text_fp32_cosine=cosine, text_trimmed=pool is not None, text_pool=pool
        )
        return ok


def _export_trimmed_text_tower(
    encoder: Encoder,
    folder: ExportFolder,
    fast: Any,
    texts: list[str],
    expected: Embeddings,
) -> str | None:
    """Export the text tower for any sequence length, if the model's tower allows it and the
    export, run on each text's own tokens and in buckets, agrees with open_clip on the full
    context; the tower's pooling rule when it does, else None."""
    tower = trimmed_text_tower(encoder.model)
    if tower is None:
        return None
    path = folder.tower("text-fp32")
    try:
        with _attention_traceable(encoder.model):
            export_tower(
                tower,
                encoder.tokenizer(["a photo of a horse."])[:, :9],
                path,
                "tokens",
                lengths=True,
            )
        finish(path)
        run = batch_runner(path, prepack=False)
        tokens = fast(texts)
        positions = pooled_positions(tokens, fast.eot, tower.pool)
        # A tower whose attention the exporter froze at the example's length (PE-Core's) fails
        # at other lengths, and ONNX Runtime prints why on stderr before raising.
        with stderr_silenced():
            agrees = agrees_with_full_context(run, lambda _: expected, tokens, positions)
    except Exception:  # the exporter or ONNX Runtime cannot: the full-length export is made
        agrees = False
    if not agrees:
        folder.remove_graph(path)
        path.unlink(missing_ok=True)
    return str(tower.pool) if agrees else None


def _text_runner(
    folder: ExportFolder, eot: int, pool: str | None, *, prepack: bool, spin: bool = True
) -> Callable[[np.ndarray], Embeddings]:
    """The exported text tower over tokenized prompts: in buckets of similar length, each cut
    after its longest prompt's pooled token, where the tower was exported for any length."""
    run = batch_runner(folder.tower("text-fp32"), prepack=prepack, spin=spin)
    if pool is None:
        return run
    return lambda tokens: run_bucketed(run, tokens, pooled_positions(tokens, eot, pool))


def prepare_fast_search(encoder: ImageEncoder) -> None:
    """Export the text tower and tokenizer once, so later searches can skip torch entirely."""
    if not isinstance(encoder, Encoder):
        return  # no model loaded to export from; the first search that loads one does it
    if encoder.device != "cpu" or not onnxruntime_available():
        return
    # An optimisation only: a model the exporter cannot handle keeps the torch search path.
    try:
        ensure_text_tower(encoder)
    except Exception as exc:
        record_failure(ExportFolder.for_spec(encoder.spec), exc, "text_export_error", text_ok=False)


def fast_text_encoder(
    spec: ModelSpec, *, many: bool = False, spin: bool = True
) -> Callable[[list[str]], Embeddings] | None:
    """A torch-free text encoder for an exported, verified model; None when there is none.

    `many` is for many prompts at once (labels through templates): the tower's weights are then
    laid out for ONNX Runtime's batched kernels, which one search query would not repay.
    `spin=False` is for a server's queries, one at a time among other work (see
    onnx_sessions.session).
    """
    folder = ExportFolder.for_spec(spec)
    meta = folder.read_meta()
    if not meta.get("text_ok") or not onnxruntime_available() or not folder.graphs_present(meta):
        return None
    from clipcli.encoders.tokenizer import FastTokenizer

    try:
        tokenize = FastTokenizer.load(folder.tokenizer)
    except (OSError, ValueError, KeyError, TypeError):  # damaged cache: the torch path still works
        return None
    run = _text_runner(folder, tokenize.eot, _recorded_pool(meta), prepack=many, spin=spin)
    return lambda texts: run(tokenize(texts))


def _recorded_pool(meta: dict[str, Any]) -> str | None:
    """The pooling rule of a trimmed export; exports that predate its record cut after the
    first end-of-text token, which is where CLIP's argmax pooling lands too."""
    if not meta.get("text_trimmed"):
        return None
    return str(meta.get("text_pool") or "eos")


@contextlib.contextmanager
def _attention_traceable(model: Any) -> Iterator[None]:
    """While exporting, each self-attention runs as plain matrix products shaped by its input.

    nn.MultiheadAttention's own code reshapes by the sequence length as a number, which the
    exporter freezes at the example's length; these products follow whatever length comes.
    """
    swapped = []
    for block in getattr(getattr(model, "transformer", None), "resblocks", []):
        attention = getattr(block, "attn", None)
        if _plain_self_attention(attention):
            swapped.append((block, attention))
            block.attn = _plain_attention(attention)
    try:
        yield
    finally:
        for block, attention in swapped:
            block.attn = attention


def _plain_self_attention(module: Any) -> bool:
    import torch

    return (
        isinstance(module, torch.nn.MultiheadAttention)
        and module._qkv_same_embed_dim
        and module.in_proj_weight is not None
        and module.bias_k is None
        and not module.add_zero_attn
    )


def _plain_attention(attention: Any) -> Any:
    """nn.MultiheadAttention's self-attention, with reshapes the exporter keeps dynamic."""
    import torch

    linear = torch.nn.functional.linear

    class PlainAttention(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = attention

        def forward(self, query: Any, key: Any, value: Any, **kwargs: Any) -> Any:
            mha, mask = self.inner, kwargs.get("attn_mask")
            x = query if mha.batch_first else query.transpose(0, 1)  # [batch, length, width]
            qkv = linear(x, mha.in_proj_weight, mha.in_proj_bias).chunk(3, -1)
            q, k, v = (t.unflatten(-1, (mha.num_heads, mha.head_dim)).transpose(1, 2) for t in qkv)
            scores = (q * mha.head_dim**-0.5) @ k.transpose(-2, -1)
            if mask is not None:
                scores = scores + mask
            out = mha.out_proj((scores.softmax(dim=-1) @ v).transpose(1, 2).flatten(2))
            return (out if mha.batch_first else out.transpose(0, 1)), None

    return PlainAttention()
