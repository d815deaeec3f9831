"""Every CPU method tried for a faithful fast path, on a trained transformer and on random weights.

`python bench/trained.py` measures each method's agreement with torch fp32 (the gate's figures:
lowest cosine, lowest centred cosine, top-5 and label agreement, over 64 sentences) on
all-MiniLM-L6-v2, the trained model the tests use (tests/encoders/trained_proxy.py), and on
random weights of the same architecture; and its speed against ONNX Runtime fp32 and torch
fp32, one sentence per run on one thread (as clipcli's int8 runner runs images), in pairs
A B A B with the median ratio. `--agreement-only` skips the timing: that is what runs under an
emulated CPU (`make bench` does, under qemu's Haswell, where qemu is installed), where speed
means nothing but the kernels, so agreement, are the emulated CPU's. There `--exported` reuses
the native run's exports (bench/data/trained), as torch's exporter crawls under emulation, and
`--only` and `--trained-only` keep to the methods an AVX2 CPU would run.

The figures go to bench/trained.json, and bench/run.py writes them into RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "tests" / "encoders"))
sys.path.insert(0, str(HERE))

import trained_proxy as proxy  # noqa: E402
from trained_proxy import ExportedProxy as Model  # noqa: E402

from clipcli.encoders import agreement  # noqa: E402
from clipcli.encoders.mixed_precision import find_mix  # noqa: E402
from clipcli.encoders.onnx_sessions import save_optimised  # noqa: E402
from clipcli.encoders.quantise import BY_NAME, Int8Variant, prepare, quantise  # noqa: E402
from clipcli.models import cpu  # noqa: E402

OUT = HERE / "trained.json"
MODELS = HERE / "data" / "trained"
RANDOM_SEED = 0
PAIRS = 7  # timed pairs per method: each is one pass over 32 sentences


# -- the methods: each makes a graph from the fp32 one, or returns None where it cannot ------------


def dynamic(variant: Int8Variant) -> Callable[[Model, Path], dict]:
    def make(model: Model, out: Path) -> dict:
        quantise(prepare(model.fp32, variant), variant, out)
        return {}

    return make


S8C = Int8Variant("s8c", unsigned=False, per_channel=True)
U8C = Int8Variant("u8c", unsigned=True, per_channel=True)


def smoothed(variant: Int8Variant, mixed: bool) -> Callable[[Model, Path], dict]:
    """SmoothQuant (bench/smoothquant.py), then every product int8, or with `mixed` the fewest
    fp32 products that keep the gate, found as clipcli finds them."""

    def make(model: Model, out: Path) -> dict:
        from smoothquant import smooth

        from clipcli.encoders.graph_products import input_ranges
        from clipcli.encoders.mixed_precision import fewest_fp32, sensitivity_order
        from clipcli.encoders.quantise import Prepared, load_graph

        graph = load_graph(model.fp32)
        prepared = Prepared(smooth(graph, input_ranges(graph, model.calibration)))
        if not mixed:
            quantise(prepared, variant, out)
            return {}
        order = sensitivity_order(prepared, model.calibration[:8], variant.per_channel)

        def keeps_gate(keep: list[str]) -> bool:
            quantise(prepared, variant, out, keep)
            return agreement.passes(model.judge(out).to_dict())

        mix = fewest_fp32(order, keeps_gate)
        quantise(prepared, variant, out, mix.keep_fp32 or [])
        kept = len(mix.keep_fp32) if mix.keep_fp32 is not None else None
        return {"fp32_kept": kept, "products": len(order)}

    return make


def split_in_full(variant: Int8Variant) -> Callable[[Model, Path], dict]:
    """Outlier channels split out into fp32 (clipcli's outliers.py), every other product int8."""

    def make(model: Model, out: Path) -> dict:
        quantise(prepare(model.fp32, variant, model.calibration), variant, out)
        return {}

    return make


def clipcli_mix(variant: Int8Variant) -> Callable[[Model, Path], dict]:
    def make(model: Model, out: Path) -> dict:
        started = time.perf_counter()
        found = find_mix(
            model.fp32,
            variant,
            model.calibration,
            model.judge,
            lambda keep: out.with_name(f"{out.stem}-{len(keep)}.onnx"),
        )
        quantise(found.prepared, variant, out, found.keep_fp32)
        kept = len(found.keep_fp32) if found.mix.keep_fp32 is not None else None
        seconds = time.perf_counter() - started
        return {"fp32_kept": kept, "products": found.products, "make_s": round(seconds, 1)}

    return make


def static_qdq(model: Model, out: Path) -> dict:
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter(model.calibration)

        def get_next(self) -> dict | None:
            return next(self.feeds, None)

    plain = out.with_suffix(".tmp.onnx")
    quantize_static(
        str(model.fp32),
        str(plain),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul"],
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    plain.rename(out)
    save_optimised(out)
    return {}


def transformer_optimiser(model: Model, out: Path) -> dict:
    from onnxruntime.transformers.optimizer import optimize_model

    optimised = optimize_model(str(model.fp32), model_type="bert", num_heads=12, hidden_size=384)
    optimised.save_model_to_file(str(out))
    save_optimised(out)
    return {}


def fp32(model: Model, out: Path) -> dict:
    return {"same_graph": True}


METHODS: list[tuple[str, Callable[[Model, Path], dict]]] = [
    ("ONNX Runtime fp32", fp32),
    (
        "ONNX Runtime transformer optimiser (fused attention, LayerNorm, GELU), fp32",
        transformer_optimiser,
    ),
    ("dynamic int8, s8 weights per tensor (ONNX Runtime's default)", dynamic(BY_NAME["s8"])),
    ("dynamic int8, s8 weights per channel", dynamic(Int8Variant("s8c", False, True))),
    ("dynamic int8, u8 weights per tensor", dynamic(Int8Variant("u8", True, False))),
    ("dynamic int8, u8 weights per channel", dynamic(Int8Variant("u8c", True, True))),
    (
        "dynamic int8, 7-bit weights (reduce_range) per channel",
        dynamic(Int8Variant("s7c", False, True, True)),
    ),
    ("static int8 (QDQ), per channel, 32 calibration sentences", static_qdq),
    ("SmoothQuant 0.75, s8 per channel, every product int8", smoothed(S8C, mixed=False)),
    ("SmoothQuant 0.75, u8 per channel, every product int8", smoothed(U8C, mixed=False)),
    (
        "SmoothQuant 0.75, s8 per channel, fewest fp32 products that keep the gate",
        smoothed(S8C, mixed=True),
    ),
    (
        "SmoothQuant 0.75, u8 per channel, fewest fp32 products that keep the gate",
        smoothed(U8C, mixed=True),
    ),
    (
        "outlier channels split out in fp32, s8 per channel, every other product int8",
        split_in_full(BY_NAME["split-s8"]),
    ),
    (
        "outlier channels split out in fp32, u8 per channel, every other product int8",
        split_in_full(BY_NAME["split-u8"]),
    ),
    (
        "clipcli split-s8: outliers split out, s8 per channel, fewest fp32 products that keep "
        "the gate",
        clipcli_mix(BY_NAME["split-s8"]),
    ),
    (
        "clipcli split-u8: outliers split out, u8 per channel, fewest fp32 products that keep "
        "the gate",
        clipcli_mix(BY_NAME["split-u8"]),
    ),
]


def seconds_per_pass(run: Callable[[], object]) -> Callable[[], float]:
    def timed() -> float:
        started = time.perf_counter()
        run()
        return time.perf_counter() - started

    return timed


def paired_ratio(baseline: Callable[[], float], other: Callable[[], float]) -> float:
    """Median over PAIRS of baseline time / other time, timed in turn: > 1 means faster."""
    baseline(), other()  # warm both
    return statistics.median(baseline() / other() for _ in range(PAIRS))


def torch_rows(model: Model, timed_fp32: Callable[[], float]) -> dict[str, dict]:
    """torch fp32 (the reference) and, where the CPU has bf16 instructions, torch bf16."""
    import torch

    torch.set_num_threads(1)
    tower = proxy.pooled(model.seed)
    items = [{k: torch.from_numpy(v) for k, v in feeds.items()} for feeds in model.held_out]
    kinds: dict[str, object | None] = {"torch fp32": None}
    if {"avx512_bf16", "amx_bf16"} & set(cpu.flags()):
        kinds["torch bf16 (autocast, AVX-512 BF16 instructions)"] = torch.bfloat16
    rows = {}
    for name, dtype in kinds.items():

        def embed(subset: list[dict], d: object | None = dtype) -> np.ndarray:
            with (
                torch.inference_mode(),
                torch.autocast("cpu", torch.bfloat16, enabled=d is not None),
            ):
                return np.concatenate([tower(**feeds).float().numpy() for feeds in subset])

        speed = paired_ratio(timed_fp32, seconds_per_pass(lambda e=embed: e(items[:32])))
        rows[name] = {**model.agreement(embed(items)).to_dict(), "vs_onnx_fp32": speed}
    return rows


def measure(
    folder: Path, timing: bool, exported: bool, only: list[str] | None, with_random: bool
) -> dict:
    trained = Model(folder / "trained", None, exported=exported)
    models = [("trained", trained)]
    if with_random:
        models.append(("random", Model(folder / "random", RANDOM_SEED, exported=exported)))
    results: dict[str, dict] = {}
    timed_fp32 = None
    if timing:
        baseline = trained.session(trained.fp32, threads=1)
        timed_fp32 = seconds_per_pass(
            lambda: [baseline.run(None, feeds) for feeds in trained.held_out[:32]]
        )
    for name, make in METHODS:
        if only is not None and not any(word in name for word in only):
            continue
        print(f"  {name}", file=sys.stderr, flush=True)
        entry: dict = {}
        for label, model in models:
            graph = model.fp32.with_name(f"method-{METHODS.index((name, make))}.onnx")
            try:
                details = make(model, graph)
                if details.pop("same_graph", False):
                    graph = model.fp32
            except Exception as exc:  # a method ONNX Runtime cannot build is recorded as such
                entry[label] = {"error": f"{type(exc).__name__}: {str(exc)[:160]}"}
                continue
            entry[label] = {**model.judge(graph).to_dict(), **details}
            if timing and label == "trained":
                session = model.session(graph, threads=1)
                other = seconds_per_pass(
                    lambda s=session, m=model: [s.run(None, f) for f in m.held_out[:32]]
                )
                entry["vs_onnx_fp32"] = paired_ratio(timed_fp32, other)
        results[name] = entry
    if timing:
        for name, figures in torch_rows(trained, timed_fp32).items():
            results[name] = {"trained": figures, "vs_onnx_fp32": figures.pop("vs_onnx_fp32")}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--agreement-only", action="store_true", help="no timing (emulated CPUs)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--models", type=Path, default=MODELS, help="where the exports are kept")
    parser.add_argument("--exported", action="store_true", help="use the exports already there")
    parser.add_argument("--only", nargs="*", help="methods whose names contain one of these")
    parser.add_argument("--trained-only", action="store_true", help="not the random weights")
    args = parser.parse_args()
    timing = not args.agreement_only
    results = measure(args.models, timing, args.exported, args.only, not args.trained_only)
    payload = {"cpu": cpu.signature(), "timed": not args.agreement_only, "methods": results}
    args.out.write_text(json.dumps(payload, indent=1) + "\n")


if __name__ == "__main__":
    main()
