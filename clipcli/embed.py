"""`clipcli embed`: shards straight from folders of images, for collections too large for one
SQLite catalog: no catalog, only clip-retrieval's layout and clipcli's manifest.

The set is written in place, a shard at a time, the manifest listing each finished shard, so
that an interrupted run leaves whole shards and an incomplete manifest. A run on the same OUT
with the same model resumes: a file listed in a finished shard with the same size and mtime is
not embedded again; one that changed since is embedded again into a later shard (a reader keeps
the last row of a path, as `clipcli import` does); the rest are embedded. Unreadable files are
skipped and reported, and tried again by the next run.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from clipcli import locks
from clipcli.encoders.batching import EmbeddedBatch, embed_files
from clipcli.encoders.calibration import USER_PHOTOS
from clipcli.encoders.choose import load_image_encoder, recorded_model, requested_spec
from clipcli.encoders.protocols import ImageEncoder
from clipcli.errors import ClipcliError, ModelMismatchError, UsageError
from clipcli.media.discover import discover_images
from clipcli.media.hashing import file_sha256
from clipcli.media.taken import taken_at
from clipcli.models.names import ModelSpec
from clipcli.progress import NoProgress, ProgressReporter
from clipcli.settings import model_from_environment, precision_choice
from clipcli.shards.arrow import require_pyarrow
from clipcli.shards.layout import (
    DEFAULT_SHARD_SIZE,
    LOCK_FILE,
    MANIFEST_FILE,
    Manifest,
    ShardModel,
    ShardRow,
    digits_for,
    model_spec,
    read_manifest,
    same_model,
    shard_count,
    write_manifest,
)
from clipcli.shards.reader import metadata_columns, open_shards
from clipcli.shards.skipped import NOT_UTF8, Skipped, storable_path
from clipcli.shards.writer import ShardWriter

ENGINES = ("local", "ray")


@dataclass
class EmbedReport:
    """What one embed run did; its fields are the --json contract."""

    out: str
    model: str
    engine: str
    embedded: int = 0
    kept: int = 0  # files already in the set's finished shards, not embedded again
    skipped: list[Skipped] = field(default_factory=list)
    shards: int = 0
    rows: int = 0
    dim: int | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class EmbedJob:
    """What one `clipcli embed` run was asked to do, beside its folders and OUT."""

    engine: str = "local"
    address: str | None = None
    shard_size: int = DEFAULT_SHARD_SIZE
    batch_size: int = 32
    model: str | None = None
    pretrained: str | None = None
    device: str = "auto"
    precision: str | None = None


@dataclass(frozen=True)
class _File:
    path: str
    size: int
    mtime_ns: int


def embed_folders(
    folders: Sequence[Path],
    out: Path,
    job: EmbedJob,
    progress: ProgressReporter | None = None,
) -> EmbedReport:
    """Embed every image under `folders` into the shard set `out` (new, or one this model
    began: resumed), without a catalog.

    Nothing is written before the model has loaded (and, with the Ray engine, the cluster
    answered): a run that fails before leaves no OUT behind.
    """
    started = time.perf_counter()
    progress = progress or NoProgress()
    require_pyarrow()
    _check_job(folders, job)
    existing = _existing_set(out)
    spec = _set_model(out, existing, job)
    files, skipped = _scan(folders)
    finished = _finished_files(out) if existing is not None and existing.shards else {}
    todo = [f for f in files if finished.get(f.path) != (f.size, f.mtime_ns)]
    if existing is None and not todo:
        raise ClipcliError(f"no images to embed under {', '.join(map(str, folders))}")
    report = EmbedReport(str(out), spec.name, job.engine, kept=len(files) - len(todo))
    report.skipped = skipped
    with _engine(job) if todo else contextlib.nullcontext():
        encoder = _load(spec, job, progress, todo) if todo else None
        model = ShardModel(spec.name, spec.pretrained, spec.weights_id)
        manifest = _write_set(out, existing, model, encoder, todo, job, progress, report)
    report.shards, report.rows, report.dim = len(manifest.shards), manifest.rows, manifest.dim
    report.skipped.sort(key=lambda s: s.path)
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _write_set(
    out: Path,
    existing: Manifest | None,
    model: ShardModel,
    encoder: ImageEncoder | None,
    todo: Sequence[_File],
    job: EmbedJob,
    progress: ProgressReporter,
    report: EmbedReport,
) -> Manifest:
    """Begin the set (or reopen it), embed `todo` into it, and mark it complete."""
    out.mkdir(exist_ok=True)
    with _only_writer(out):
        if read_manifest(out) != existing:
            raise ClipcliError(f"{out}: another run changed it meanwhile", hint="run again")
        planned = digits_for(shard_count(len(todo), job.shard_size))
        manifest = _reopened(existing or Manifest(model, None, planned))
        write_manifest(out, manifest)  # incomplete until every file is in
        with ShardWriter(out, manifest, job.shard_size) as writer:
            if encoder is not None:
                _embed(encoder, todo, job, writer, progress, report)
            return writer.finish()


@contextlib.contextmanager
def _engine(job: EmbedJob) -> Iterator[None]:
    """Connected to the Ray cluster for the run, with --engine ray: one that cannot be
    reached stops the run before the model loads or anything is written."""
    if job.engine != "ray":
        yield
        return
    from clipcli.cluster.ray_session import connected

    with connected(job.address):
        yield


def _check_job(folders: Sequence[Path], job: EmbedJob) -> None:
    """Usage errors, found before anything is loaded."""
    if job.engine not in ENGINES:
        raise UsageError(f"unknown engine '{job.engine}'", hint=f"use {' or '.join(ENGINES)}")
    if job.address is not None and job.engine != "ray":
        raise UsageError("--address is the Ray cluster's", hint="add --engine ray")
    if job.shard_size < 1:
        raise UsageError(f"--shard-size must be at least 1, not {job.shard_size}")
    precision_choice(job.precision)
    for folder in folders:
        if not folder.is_dir():
            raise UsageError(f"{folder}: not a folder")
    if job.engine == "ray":  # before the model loads: its absence is a usage error, at once
        from clipcli.cluster.ray_session import require_ray

        require_ray()


def _existing_set(out: Path) -> Manifest | None:
    """The manifest of the set `out` already is; None where `out` is to be a new set (absent,
    or an empty folder). Anything else there is not this run's to touch."""
    hint = "give a new folder, an empty one, or a set to carry on"
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: exists and is not a folder", hint=hint)
    if not out.exists():
        if not out.parent.is_dir():
            raise UsageError(f"{out}: no folder {out.parent} to write it in")
        return None
    manifest = read_manifest(out) if (out / MANIFEST_FILE).is_file() else None
    if manifest is None:
        if {path.name for path in out.iterdir()} <= {LOCK_FILE}:
            return None  # empty, or a run stopped before it wrote anything
        raise UsageError(f"{out}: exists and is not a clipcli shard set", hint=hint)
    return manifest


def _set_model(out: Path, existing: Manifest | None, job: EmbedJob) -> ModelSpec:
    """The model asked for; with none asked for, the one the set was begun with (as `clipcli
    index` carries on with an index's). A set begun with another is refused."""
    explicit = job.model is not None or job.pretrained is not None or model_from_environment()
    if existing is None:
        return requested_spec(job.model, job.pretrained)
    recorded = model_spec(existing.model)
    if not explicit:
        return recorded_model(recorded.name, recorded.pretrained, recorded.weights)
    spec = requested_spec(job.model, job.pretrained)
    if not same_model(spec, recorded):
        raise ModelMismatchError(
            f"{out}: the shards here were made with {recorded.describe()}, not {spec.describe()}",
            hint="leave out --model to carry on with theirs, or give a new OUT for this one",
        )
    return spec


def _reopened(manifest: Manifest) -> Manifest:
    return Manifest(manifest.model, manifest.dim, manifest.digits, manifest.shards, False)


@contextlib.contextmanager
def _only_writer(out: Path) -> Iterator[None]:
    """One `clipcli embed` per set: a second one exits at once instead of interleaving."""
    try:
        with locks.exclusive(out / LOCK_FILE, wait=False):
            yield
    except locks.Busy:
        raise ClipcliError(
            f"{out}: another `clipcli embed` is writing this set",
            hint="wait for it to finish, then run again",
        ) from None


def _scan(folders: Sequence[Path]) -> tuple[list[_File], list[Skipped]]:
    """Every image under the folders, once each, sorted, with its size and mtime."""
    paths = sorted({str(path) for folder in folders for path in discover_images(folder)})
    files, skipped = [], []
    for path in paths:
        if not storable_path(path):
            skipped.append(Skipped(path, NOT_UTF8))
            continue
        try:
            stat = os.stat(path)
        except OSError:
            continue  # vanished since it was listed
        files.append(_File(path, stat.st_size, stat.st_mtime_ns))
    return files, skipped


def _finished_files(out: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime_ns) of each file the set's finished shards hold, by path: the last row of
    a path, where a resumed run wrote it again."""
    shards = open_shards(out)
    return {
        path: (size, mtime)
        for path, size, mtime in metadata_columns(shards, ["image_path", "size", "mtime_ns"])
    }


def _load(
    spec: ModelSpec, job: EmbedJob, progress: ProgressReporter, todo: Sequence[_File]
) -> ImageEncoder:
    progress.phase("Loading model", 1)
    photos = [Path(file.path) for file in todo[:USER_PHOTOS]]
    precision = precision_choice(job.precision)
    encoder = load_image_encoder(spec, job.device, precision, progress, len(todo), photos)
    progress.advance(1)
    return encoder


def _embed(
    encoder: ImageEncoder,
    todo: Sequence[_File],
    job: EmbedJob,
    writer: ShardWriter,
    progress: ProgressReporter,
    report: EmbedReport,
) -> None:
    """Embed the files, a batch at a time, into the writer, with what the catalog would keep
    of each: content hash, size, mtime, date."""
    by_path = {file.path: file for file in todo}
    progress.phase("Embedding", len(todo))
    for batch in _batches(encoder, [Path(file.path) for file in todo], job):
        rows, kept = [], []
        for position, path in enumerate(batch.paths):
            file = by_path[str(path)]
            try:
                sha256 = file_sha256(file.path)
            except OSError as exc:
                report.skipped.append(Skipped(file.path, f"cannot read file ({exc.strerror})"))
                continue
            dated = taken_at(file.path, file.mtime_ns)
            rows.append(ShardRow(file.path, sha256, file.size, file.mtime_ns, dated))
            kept.append(position)
        writer.add(rows, batch.embeddings[kept])
        report.embedded += len(rows)
        report.skipped += [Skipped(str(f.path), f.reason) for f in batch.failures]
        progress.advance(len(batch.paths) + len(batch.failures))


def _batches(encoder: ImageEncoder, paths: list[Path], job: EmbedJob) -> Iterator[EmbeddedBatch]:
    """The embedded batches, in order on this machine, in any order from a Ray cluster."""
    if job.engine == "ray":
        from clipcli.cluster.ray_embed import embed_files_on_ray

        return embed_files_on_ray(
            encoder, paths, job.batch_size, address=job.address, picture_hashes=False
        )
    return embed_files(encoder, paths, job.batch_size, picture_hashes=False)
