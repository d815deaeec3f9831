"""Which image backend runs a job: agreement gates, then speed and start-up decide.

A backend is a candidate for `auto` only if its embeddings agree with torch fp32 to
AUTO_MIN_COSINE on this CPU (tower_checks.py measures that). Among candidates the one that
finishes the job first wins: start-up plus images over rate. Importing torch and loading a
model costs seconds, so a few photos go through an exported tower even where torch would be a
little faster per image; a library of thousands goes through whichever is fastest per image.
"""

from __future__ import annotations

from typing import Any

# Agreement needed for `auto` to choose a backend over torch fp32 (as --precision documents).
AUTO_MIN_COSINE = 0.999
# Below these an explicitly requested backend is refused: its answers would not be the model's.
MIN_COSINE = {"fp32": AUTO_MIN_COSINE, "int8": 0.99}
# The job size assumed when the caller cannot tell: large enough that speed per image decides.
UNKNOWN_JOB_IMAGES = 10_000
# A small job leaves the backend that is fastest per image only to save at least this much: a
# few photos then skip torch's import (seconds), but runs of different sizes do not switch
# between backends for milliseconds, and a library is embedded by one backend, not several.
MATERIAL_SAVING_S = 0.5


def job_seconds(figures: dict[str, Any], images: int) -> float:
    """Seconds a backend with these figures needs for `images` images, start-up included."""
    rate = float(figures.get("rate", 0.0))
    if rate <= 0:
        return float("inf")
    return float(figures.get("start_s", 0.0)) + images / rate


def faithful(record: dict[str, Any], kind: str, floor: float = AUTO_MIN_COSINE) -> bool:
    """Whether `kind` ran on this CPU and agreed with torch fp32 to `floor`."""
    return float(record.get(kind, {}).get("cosine", 0.0)) >= floor


def fastest(record: dict[str, Any] | None, images: int | None = None) -> str:
    """'torch', 'fp32' or 'int8': the backend that finishes a job of `images` first on this CPU.

    torch fp32 is the reference, so it needs no agreement; it wins ties, and it is all there is
    without a record (nothing exported, or exported for another CPU and not checked here).
    torch's start-up counts even where the model is loaded anyway for its text side: the same
    job then runs on the same backend, and gives the same numbers, whatever else a run did.
    """
    if not record:
        return "torch"
    count = UNKNOWN_JOB_IMAGES if images is None else max(images, 1)
    steady = _quickest(record, UNKNOWN_JOB_IMAGES)
    quick = _quickest(record, count)
    saving = job_seconds(record[steady], count) - job_seconds(record[quick], count)
    return quick if saving >= MATERIAL_SAVING_S else steady


def _quickest(record: dict[str, Any], images: int) -> str:
    best, best_seconds = "torch", job_seconds(record["torch"], images)
    for kind in ("fp32", "int8"):
        if faithful(record, kind):
            seconds = job_seconds(record[kind], images)
            if seconds < best_seconds:
                best, best_seconds = kind, seconds
    return best
