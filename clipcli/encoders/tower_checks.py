"""How each exported image backend does on this CPU: agreement with torch fp32, speed, start-up.

Agreement and speed depend on the CPU's kernels (see quantise.py), so export.json keeps one
record per CPU signature (cpu.py). The checks run on calibration pixels saved at export beside
torch fp32's embeddings of them: a cache copied to another machine, or a home folder moved to
one, is checked again there, without torch, before `auto` trusts it.

A record, as export.json stores it under "cpus" -> signature:

    {"torch": {"rate": 10.2, "start_s": 4.8, "estimated": false},
     "fp32": {"cosine": 1.0, "rate": 12.7, "start_s": 0.31},
     "int8": {"variant": "u8", "cosine": 0.9998, "rate": 19.0, "start_s": 0.2,
              "tried": {"s8": {"cosine": 0.943, "rate": 21.6}, "u8": {...}}}}

rates are images per second, start_s the seconds before the first image can run (for torch:
importing it and loading the weights).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from clipcli.encoders.export_cache import ExportFolder
from clipcli.encoders.onnx_sessions import Runner, batch_runner, per_image_runner
from clipcli.encoders.quantise import BY_NAME, VARIANTS, quantise
from clipcli.models import cpu
from clipcli.progress import NoProgress, ProgressReporter
from clipcli.vectors import normalise

# Images timed per backend: enough to rank them; the cosines use every calibration image.
# Agreement needed for `auto` to choose a backend over torch fp32 (as --precision documents).
AUTO_MIN_COSINE = 0.999
# Below these an explicitly requested backend is refused: its answers would not be the model's.
MIN_COSINE = {"fp32": AUTO_MIN_COSINE, "int8": 0.99}

TIMED_IMAGES = 8
PREPACK_FROM_IMAGES = 16
# Importing torch and open_clip and loading a model, when it could not be timed from a cold
# start (the process had torch already): a low estimate, as on a fast laptop.
DEFAULT_TORCH_START_S = 3.0


@dataclass(frozen=True)
class TorchTiming:
    """torch fp32 on this CPU, measured by a process that has the model loaded."""

    rate: float
    start_s: float | None  # None: not timed from a cold start


def lowest_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.min(np.sum(normalise(a) * normalise(b), axis=1)))


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
        graph = folder.tower(int8_graph(record["int8"]["variant"]))
        return per_image_runner(graph, prepack=prepack)
    return batch_runner(folder.tower("image-fp32"), prepack=prepack)


def int8_graph(variant: str) -> str:
    return f"image-int8-{variant}"


def check_this_cpu(
    folder: ExportFolder,
    meta: dict[str, Any],
    torch: TorchTiming | None = None,
    progress: ProgressReporter | None = None,
) -> dict[str, Any]:
    """Measure every exported image backend on this CPU and record it in export.json.

    Call with the export folder held (ExportFolder.writing). Without `torch`, torch's figures
    are estimated from another CPU's record, scaled by how fast ONNX fp32 runs here against
    there. int8 variants are made from the fp32 graph as needed; graphs no record names any
    more are deleted (each is tens to hundreds of MB).
    """
    (progress or NoProgress()).phase("Checking the fast CPU path on this CPU (once per model)", 1)
    pixels, reference = folder.calibration()
    timed = pixels[:TIMED_IMAGES]
    record: dict[str, Any] = {}
    started = time.perf_counter()
    fp32 = batch_runner(folder.tower("image-fp32"))
    record["fp32"] = _measure(fp32, pixels, reference, timed, time.perf_counter() - started)
    del fp32  # one session at a time: each holds its own copy of the weights
    record["int8"] = _best_int8(folder, pixels, reference, timed)
    record["torch"] = _torch_figures(torch, record, meta)
    cpus = {**meta.get("cpus", {}), cpu.signature(): record}
    folder.update_meta(cpus=cpus)
    _remove_unused_int8(folder, cpus)
    (progress or NoProgress()).advance(1)
    return record


def _measure(
    run: Runner, pixels: np.ndarray, reference: np.ndarray, timed: np.ndarray, start_s: float
) -> dict[str, float]:
    return {
        "cosine": lowest_cosine(reference, run(pixels)),
        "rate": images_per_second(lambda: run(timed), len(timed)),
        "start_s": start_s,
    }


def _best_int8(
    folder: ExportFolder, pixels: np.ndarray, reference: np.ndarray, timed: np.ndarray
) -> dict[str, Any]:
    """The first variant, in VARIANTS order, that agrees with torch on this CPU; else the one
    that agrees best (an explicit --precision int8 may still accept it; auto never will)."""
    tried: dict[str, dict[str, Any]] = {}
    for variant in VARIANTS:
        graph = folder.tower(int8_graph(variant.name))
        try:
            if not folder.graph_saved(graph):
                quantise(folder.tower("image-fp32"), variant, graph)
            started = time.perf_counter()
            run = per_image_runner(graph)
            tried[variant.name] = _measure(
                run, pixels, reference, timed, time.perf_counter() - started
            )
        except Exception as exc:  # a graph ONNX Runtime cannot quantise or run: try the next
            tried[variant.name] = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
            continue
        if tried[variant.name]["cosine"] >= AUTO_MIN_COSINE:
            break
    usable = {name: found for name, found in tried.items() if "cosine" in found}
    if not usable:
        return {"tried": tried}
    best = max(usable, key=lambda name: usable[name]["cosine"])
    first_faithful = next((n for n in usable if usable[n]["cosine"] >= AUTO_MIN_COSINE), best)
    return {"variant": first_faithful, **usable[first_faithful], "tried": tried}


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
    kept = {int8_graph(r["int8"]["variant"]) for r in cpus.values() if "variant" in r["int8"]}
    for variant in BY_NAME:
        if int8_graph(variant) not in kept:
            folder.remove_graph(folder.tower(int8_graph(variant)))


def cpu_record(meta: dict[str, Any]) -> dict[str, Any] | None:
    """What was measured of this model's exported backends on this CPU, if anything."""
    record = meta.get("cpus", {}).get(cpu.signature())
    return record if isinstance(record, dict) else None
