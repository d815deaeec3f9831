"""How each exported image backend does on this CPU: agreement with torch fp32, speed, start-up.

Agreement and speed depend on the CPU's kernels (see quantise.py), so export.json keeps one
record per CPU signature (cpu.py). The checks run on calibration photos saved at export beside
torch fp32's embeddings of them and of captions (calibration.py): a cache copied to another
machine, or a home folder moved to one, is checked again there, without torch, before `auto`
trusts it. Agreement is agreement.py's: plain and centred cosine, top-5 and label agreement.

A record, as export.json stores it under "cpus" -> signature:

    {"torch": {"rate": 10.2, "start_s": 4.8, "estimated": false},
     "fp32": {"cosine": 1.0, "centred": 1.0, "top5": 1.0, "labels": 1.0, "rate": 12.7,
              "start_s": 0.31},
     "int8": {"variant": "split-s8", "graph": "image-int8-split-s8-3f2a9c1e", "fp32_kept": 2,
              "products": 48, "cosine": 0.9996, "centred": 0.9993, ..., "rate": 19.0,
              "start_s": 0.2,
              "tried": {"s8": {"centred": 0.943, ...}, "split-s8": {"fp32_kept": 2, ...,
                        "counts": {"0": false, "1": false, ...}}},
              "refused": null}}

rates are images per second, start_s the seconds before the first image can run (for torch:
importing it and loading the weights). "refused" says, where no int8 graph kept the gate,
which figures fell short, and `auto` then keeps fp32 or torch.
"""

from __future__ import annotations

import hashlib
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clipcli.encoders import agreement
from clipcli.encoders.export_cache import ExportFolder
from clipcli.encoders.onnx_sessions import Runner, batch_runner, optimised_path, per_image_runner
from clipcli.encoders.quantise import (
    BY_NAME,
    Int8Variant,
    prepare,
    quantise,
)
from clipcli.models import cpu
from clipcli.progress import NoProgress, ProgressReporter

# Agreement `auto` needs on every figure to choose a backend over torch fp32 (agreement.FLOORS).
AUTO_FLOORS = agreement.FLOORS
AUTO_MIN_COSINE = AUTO_FLOORS["cosine"]
# Below these an explicitly requested backend is refused: its answers would not be the model's.
MIN_COSINE = {"fp32": AUTO_MIN_COSINE, "int8": 0.99}

# Images timed per backend: enough to rank them; agreement uses every calibration image.
TIMED_IMAGES = 8
PREPACK_FROM_IMAGES = 16
# Importing torch and open_clip and loading a model, when it could not be timed from a cold
# start (the process had torch already): a low estimate, as on a fast laptop.
DEFAULT_TORCH_START_S = 3.0
INT8_PREFIX = "image-int8-"


@dataclass(frozen=True)
class TorchTiming:
    """torch fp32 on this CPU, measured by a process that has the model loaded."""

    rate: float
    start_s: float | None  # None: not timed from a cold start


@dataclass(frozen=True)
class Calibration:
    """What every backend is judged on: pixels, and torch fp32's embeddings of them and of
    the calibration captions."""

    pixels: np.ndarray
    reference: np.ndarray
    queries: np.ndarray

    def judge(self, run: Runner) -> agreement.Agreement:
        return agreement.measure(self.reference, run(self.pixels), self.queries)


def images_per_second(run: Callable[[], object], images: int) -> float:
    run()  # the first run allocates buffers and reads the weights in
    times = []
    for _ in range(2):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return images / statistics.median(times)


def image_runner(
    folder: ExportFolder, record: dict[str, Any], kind: str, images: int | None = None
) -> Runner:
    """The exported image tower that `record` names for `kind` ('fp32' or 'int8'), for a job of
    `images` images (None: many)."""
    # Laying the weights out for ONNX Runtime's kernels took 0.2 s for ViT-B-32's int8 tower
    # and made each image 20% faster: worth it from about a dozen images on. The embeddings
    # are the same either way (int8 bit for bit, fp32 to 3e-6).
    prepack = images is None or images >= PREPACK_FROM_IMAGES
    if kind == "int8":
        return per_image_runner(folder.tower(record["int8"]["graph"]), prepack=prepack)
    return batch_runner(folder.tower("image-fp32"), prepack=prepack)


def check_this_cpu(
    folder: ExportFolder,
    meta: dict[str, Any],
    torch: TorchTiming | None = None,
    progress: ProgressReporter | None = None,
) -> dict[str, Any]:
    """Measure every exported image backend on this CPU and record it in export.json.

    Call with the export folder held (ExportFolder.writing). Without `torch`, torch's figures
    are estimated from another CPU's record, scaled by how fast ONNX fp32 runs here against
    there. int8 graphs are made from the fp32 graph as needed; graphs no record names any
    more are deleted (each is tens to hundreds of MB).
    """
    (progress or NoProgress()).phase("Checking the fast CPU path on this CPU (once per model)", 1)
    calibration = Calibration(*folder.calibration())
    timed = calibration.pixels[:TIMED_IMAGES]
    record: dict[str, Any] = {}
    started = time.perf_counter()
    fp32 = batch_runner(folder.tower("image-fp32"))
    record["fp32"] = _measure(fp32, calibration, timed, time.perf_counter() - started)
    del fp32  # one session at a time: each holds its own copy of the weights
    record["int8"] = _best_int8(folder, calibration, timed)
    record["torch"] = _torch_figures(torch, record, meta)
    cpus = {**meta.get("cpus", {}), cpu.signature(): record}
    folder.update_meta(cpus=cpus)
    _remove_unused_int8(folder, cpus)
    (progress or NoProgress()).advance(1)
    return record


def variants_for_this_cpu() -> list[Int8Variant]:
    """Plain dynamic int8 first (the fastest, and faithful on some weights), then the split
    mixed-precision graph with the weight type this CPU sums exactly and fastest."""
    split = "split-s8" if cpu.int8_dot_products() else "split-u8"
    return [BY_NAME["s8"], BY_NAME[split]]


def _measure(
    run: Runner, calibration: Calibration, timed: np.ndarray, start_s: float
) -> dict[str, Any]:
    return {
        **calibration.judge(run).to_dict(),
        "rate": images_per_second(lambda: run(timed), len(timed)),
        "start_s": start_s,
    }


def _best_int8(folder: ExportFolder, calibration: Calibration, timed: np.ndarray) -> dict[str, Any]:
    """The first variant, in variants_for_this_cpu order, whose graph keeps the gate on this
    CPU; else the one that agrees best (an explicit --precision int8 may still accept it;
    auto never will), with what fell short under "refused"."""
    tried: dict[str, dict[str, Any]] = {}
    for variant in variants_for_this_cpu():
        try:
            found = _int8_graph(folder, variant, calibration)
            started = time.perf_counter()
            run = per_image_runner(folder.tower(found["graph"]))
            tried[variant.name] = {
                **found,
                **_measure(run, calibration, timed, time.perf_counter() - started),
            }
            del run
        except Exception as exc:  # a graph ONNX Runtime cannot quantise or run: try the next
            tried[variant.name] = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
            continue
        if agreement.passes(tried[variant.name], AUTO_FLOORS):
            break
    usable = {name: found for name, found in tried.items() if "graph" in found}
    if not usable:
        return {"tried": tried, "refused": "no int8 graph could be made"}
    faithful = [name for name in usable if agreement.passes(usable[name], AUTO_FLOORS)]
    chosen = faithful[0] if faithful else max(usable, key=lambda n: usable[n]["centred"])
    refused = (
        None
        if faithful
        else "; ".join(
            f"{name}: {', '.join(agreement.shortfalls(found, AUTO_FLOORS))}"
            for name, found in usable.items()
        )
    )
    return {"variant": chosen, **usable[chosen], "tried": tried, "refused": refused}


def _int8_graph(
    folder: ExportFolder, variant: Int8Variant, calibration: Calibration
) -> dict[str, Any]:
    """Make `variant`'s graph from the fp32 one (kept if already made); returns its name, and
    for a split variant which products stay fp32 and what the counts tried gave."""
    fp32 = folder.tower("image-fp32")
    if not variant.split:
        name = f"{INT8_PREFIX}{variant.name}"
        if not folder.graph_saved(folder.tower(name)):
            quantise(prepare(fp32, variant), variant, folder.tower(name))
        return {"graph": name}
    from clipcli.encoders.mixed_precision import find_mix

    feeds = _one_at_a_time(fp32, calibration.pixels)

    def named(keep: list[str]) -> str:
        # Per CPU too: a graph another CPU's record names is never rewritten or removed here.
        key = "|".join([cpu.signature(), *keep]).encode()
        return f"{INT8_PREFIX}{variant.name}-{hashlib.sha256(key).hexdigest()[:8]}"

    found = find_mix(
        fp32,
        variant,
        feeds,
        lambda graph: calibration.judge(per_image_runner(graph)),  # as judged after
        lambda keep: folder.tower(named(keep)),
    )
    name = named(found.keep_fp32)
    if found.saved is None:  # no count kept the gate: the closest, for explicit use only
        quantise(found.prepared, variant, folder.tower(name), [])
    counts = {str(count): kept for count, kept in sorted(found.mix.tried.items())}
    return {
        "graph": name,
        "fp32_kept": len(found.keep_fp32),
        "products": found.products,
        "counts": counts,
    }


def _one_at_a_time(fp32: Path, pixels: np.ndarray) -> list[dict[str, np.ndarray]]:
    """Calibration feeds one image each, as the int8 runner runs them (dynamic ranges are per
    run, so a batch would calibrate for ranges int8 never sees)."""
    import onnx

    graph = onnx.load(str(optimised_path(fp32)), load_external_data=False)
    name = graph.graph.input[0].name
    return [{name: pixels[i : i + 1]} for i in range(len(pixels))]


def _torch_figures(
    torch: TorchTiming | None, record: dict[str, Any], meta: dict[str, Any]
) -> dict[str, Any]:
    """torch's rate and start-up here: as timed, or scaled from a CPU where torch was timed."""
    records = meta.get("cpus", {})
    timed = [r for r in records.values() if not r["torch"]["estimated"]]
    known = records.get(cpu.signature()) or (timed[0] if timed else None)
    known_start = known["torch"]["start_s"] if known else DEFAULT_TORCH_START_S
    if torch is not None:
        start = torch.start_s if torch.start_s is not None else known_start
        return {"rate": torch.rate, "start_s": start, "estimated": False}
    if not timed:  # nothing to scale from: torch is taken only where nothing else agrees
        return {"rate": 0.0, "start_s": known_start, "estimated": True}
    other = timed[0]
    speed = record["fp32"]["rate"] / other["fp32"]["rate"]
    return {"rate": other["torch"]["rate"] * speed, "start_s": known_start, "estimated": True}


def _remove_unused_int8(folder: ExportFolder, cpus: dict[str, Any]) -> None:
    kept = {r["int8"]["graph"] for r in cpus.values() if "graph" in r.get("int8", {})}
    for graph in folder.path.glob(f"{INT8_PREFIX}*.opt.onnx"):
        name = graph.name.removesuffix(".opt.onnx")
        if name not in kept:
            folder.remove_graph(folder.tower(name))


def cpu_record(meta: dict[str, Any]) -> dict[str, Any] | None:
    """What was measured of this model's exported backends on this CPU, if anything."""
    record = meta.get("cpus", {}).get(cpu.signature())
    return record if isinstance(record, dict) else None
