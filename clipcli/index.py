"""Incremental indexing: bring an index folder's catalog up to date with folders of photos.

A file is unchanged when its (size, mtime) match the catalog; otherwise its content hash decides:
same hash → unchanged, new hash at a known path → re-encoded, a hash that vanished elsewhere → a
move (the vector is kept), a hash already indexed → a copy (the vector is reused). A photo's
picture hash (clipcli.media.perceptual_hash: its pHash and colour grid) goes with its vector:
computed from the pixels the model is given, kept by a move, reused by a copy.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from clipcli.cluster import ray_embed, ray_session, ray_shards
from clipcli.encoders import text_tower
from clipcli.encoders.batching import embed_files
from clipcli.encoders.calibration import USER_PHOTOS
from clipcli.encoders.choose import load_image_encoder, recorded_model, requested_spec
from clipcli.encoders.protocols import ImageEncoder
from clipcli.errors import IndexMissingError, ModelMismatchError, UsageError
from clipcli.media.discover import discover_images
from clipcli.media.hashing import file_sha256
from clipcli.media.taken import taken_at
from clipcli.models.names import ModelSpec
from clipcli.preload import import_ahead
from clipcli.progress import NoProgress, ProgressReporter
from clipcli.settings import model_from_environment, precision_choice
from clipcli.store import catalog_repair, index_folder, index_registry, root_upkeep, vector_index
from clipcli.store.catalog import CATALOG_FILE, Catalog
from clipcli.store.catalog_records import (
    CatalogEntry,
    Dated,
    Hashed,
    Move,
    NewImage,
    RecordedModel,
    Touch,
    UnreadableFile,
)
from clipcli.store.catalog_repair import RepairReport


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


@dataclass
class IndexReport:
    """What one `clipcli index` run did; its fields are the --json contract."""

    index: str
    model: str
    added: int = 0
    updated: int = 0
    moved: int = 0
    removed: int = 0
    unchanged: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    total: int = 0
    seconds: float = 0.0
    repaired: RepairReport | None = None  # left out of --json when there was no repair
    # Roots whose photos were kept as they are, their folder not there (not mounted): for a
    # warning on stderr, left out of --json.
    unreachable: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _FileStat:
    path: str
    size: int
    mtime_ns: int


@dataclass
class _Plan:
    unchanged: int = 0
    touched: list[Touch] = field(default_factory=list)
    moves: list[Move] = field(default_factory=list)
    removals: list[int] = field(default_factory=list)
    copies: list[NewImage] = field(default_factory=list)
    to_encode: list[tuple[_FileStat, str]] = field(default_factory=list)  # (file, sha256)
    replaced: set[str] = field(default_factory=set)  # paths whose content changed
    skipped: list[Skipped] = field(default_factory=list)
    known_bad: set[str] = field(default_factory=set)  # unchanged files that failed before


def update_index(
    roots: Sequence[Path],
    folder: Path,
    *,
    model: str | None = None,
    pretrained: str | None = None,
    device: str = "auto",
    precision: str | None = None,
    batch_size: int = 32,
    include_hidden: bool = False,
    reset: bool = False,
    repair: bool = False,
    progress: ProgressReporter | None = None,
    on_repair: Callable[[RepairReport], None] | None = None,
    embeddings_only: bool = False,
    excludes: Sequence[str] | None = None,
    forget: Sequence[Path] = (),
    prune: bool = False,
    engine: str = "local",
    address: str | None = None,
    layout: str | None = None,
) -> IndexReport:
    """Index every image under `roots` into `folder`, doing only the work that changed.

    A run that fails before it stores a photo (weights that cannot load, an unknown model)
    leaves the index folder as it found it: nothing is written before the model has loaded,
    and index_folder.writing removes what the run made for nothing.

    With `repair`, a damaged catalog is first replaced by what can still be read of it (see
    catalog_repair); the run then embeds the photos it lost again. The repair stays done
    whatever happens to the rest of the run, so `on_repair` hears of it at once.

    `embeddings_only` makes the folder a cache of embeddings (eval's), not an index to search:
    it gets no FAISS index, and it is not a known index whose export the cache cleaner keeps.

    Each folder of `roots` is recorded as a root of the index with `excludes` (gitignore-style
    patterns), which are remembered for it: None keeps those it was given before. The photos of
    a root that cannot be reached now (a drive not mounted) are kept, unless their content
    turns up under a root of this run, where they are re-pointed. `forget` drops folders and
    their photos without reading them; `prune` drops photos whose files are gone (those of
    unreachable roots excepted) without scanning for new ones.

    `engine` "ray" embeds on the Ray cluster at `address` (clipcli.cluster.ray_embed; None
    starts one here for the run) while this process plans and writes the catalog as it does
    with "local"; a cluster that cannot be reached changes nothing either.

    `layout` (one of vector_index.LAYOUTS) is how the FAISS index is to be laid out from now
    on, remembered in the catalog; None keeps what it was asked before (auto at first).
    """
    started = time.perf_counter()
    _check_engine(engine, address)
    vector_index.check_layout(layout)
    for root in roots:
        if not root.is_dir():
            raise UsageError(f"{root}: not a folder")
    if not roots and not (folder / CATALOG_FILE).is_file():
        raise IndexMissingError(f"{folder}: no index here", hint="give --index the index folder")
    job = _Job(
        roots,
        model,
        pretrained,
        device,
        precision_choice(precision),
        batch_size,
        include_hidden,
        reset,
        progress or NoProgress(),
        embeddings_only,
        None if excludes is None else tuple(excludes),
        tuple(os.path.abspath(path) for path in forget),
        prune,
        engine,
        address,
        layout,
    )
    with index_folder.writing(folder):
        repair_report = catalog_repair.repair_if_damaged(folder, job.progress) if repair else None
        if repair_report is not None and on_repair is not None:
            on_repair(repair_report)
        with Catalog(folder) as catalog, ExitStack() as cluster:
            report = _bring_up_to_date(catalog, folder, job, cluster)
    report.repaired = repair_report
    if not embeddings_only:  # so that cleaning the caches keeps its model's export
        index_registry.register(folder)
    report.seconds = round(time.perf_counter() - started, 3)
    return report


@dataclass(frozen=True)
class _Job:
    """What one `clipcli index` run was asked to do."""

    roots: Sequence[Path]
    model: str | None
    pretrained: str | None
    device: str
    precision: str
    batch_size: int
    include_hidden: bool
    reset: bool
    progress: ProgressReporter
    embeddings_only: bool = False
    excludes: tuple[str, ...] | None = None  # None: each root's own, as recorded
    forget: tuple[str, ...] = ()
    prune: bool = False
    engine: str = "local"  # or "ray"
    address: str | None = None  # the Ray cluster's; None: one started for the run
    layout: str | None = None  # the FAISS index's, from now on; None: as recorded

    @property
    def root_paths(self) -> list[str]:
        return [os.path.abspath(root) for root in self.roots]


def _check_engine(engine: str, address: str | None) -> None:
    """Before anything loads or is written: an engine that cannot run stops the run here."""
    if engine not in ("local", "ray"):
        raise UsageError(f"unknown engine '{engine}'", hint="use local or ray")
    if address is not None and engine != "ray":
        raise UsageError(
            "--address needs --engine ray", hint="add --engine ray, or leave out --address"
        )
    if engine == "ray":
        ray_session.require_ray()


def _bring_up_to_date(catalog: Catalog, folder: Path, job: _Job, cluster: ExitStack) -> IndexReport:
    """One run on the open catalog: plan, load the model if anything needs it, then write.
    With the Ray engine, `cluster` holds the connection to it until the run ends."""
    spec = _choose_model(catalog, job.model, job.pretrained, reset=job.reset)
    encoder = _OnDemand(spec, job.device, job.precision, job.progress)
    forgotten: set[str] = set()
    if job.reset:
        encoder.load()  # a model that cannot load must not cost the user their index
        forgotten = set(catalog.entries())
        catalog.clear()
    excludes = _excludes(catalog, job)
    files = _scan(job.roots, job.include_hidden, excludes)
    kept_away = root_upkeep.unreachable_roots(catalog, job.root_paths)
    plan = _plan(files, catalog.entries(), job.roots, catalog, job.progress, kept_away)
    if plan.to_encode:  # before the first write: a model that cannot load changes nothing
        encoder.photos = [Path(file.path) for file, _ in plan.to_encode[:USER_PHOTOS]]
        _load_for(encoder, len(plan.to_encode), job.progress)
        if job.engine == "ray":  # nor may a cluster that cannot be reached
            cluster.enter_context(ray_session.connected(job.address))
    recorded = (RecordedModel(spec.name, spec.pretrained), spec.weights_id)
    if job.roots and (catalog.model(), catalog.weights()) != recorded:
        catalog.set_model(spec.name, spec.pretrained, spec.weights_id)
    report = IndexReport(index=str(folder), model=spec.name)
    forgotten_now = root_upkeep.forget(catalog, job.forget)
    for root in job.root_paths:
        catalog.set_root(root, job.excludes)
    _apply(plan, catalog, encoder, job, report)
    report.removed += forgotten_now
    if job.prune:
        pruned, report.unreachable = root_upkeep.prune(catalog)
        report.removed += pruned
    else:
        report.unreachable = [root for root in kept_away if _holds_photos(catalog, root)]
    root_upkeep.drop_emptied(catalog, job.root_paths)
    report.total = catalog.count()
    _date_undated(catalog, job.progress)
    _hash_unhashed(catalog, job.progress)
    if job.reset:  # photos of other folders are gone too: the report counts every one
        report.removed = len(forgotten - set(catalog.entries()))
    if not job.embeddings_only:
        on_ray = ray_shards.shard_filler(job.address) if job.engine == "ray" else None
        vector_index.refresh(folder, catalog, add_shards=on_ray, layout=job.layout)
    # Only once the index is laid out so: a run that fails leaves the layout it had.
    if job.layout is not None and job.layout != catalog.layout():
        catalog.set_layout(job.layout)
    if encoder.loaded is not None:  # the model is loaded anyway: prepare fast search
        text_tower.prepare_fast_search(encoder.loaded)
    return report


@dataclass
class _OnDemand:
    """The image encoder, loaded once and only when some file must be embedded."""

    spec: ModelSpec
    device: str
    precision: str
    progress: ProgressReporter
    loaded: ImageEncoder | None = None
    photos: Sequence[Path] = ()  # the job's own: a model exported now is calibrated on them

    def load(self, images: int | None = None) -> ImageEncoder:
        """The encoder for a job of `images` images (auto weighs start-up against speed)."""
        if self.loaded is None:
            self.loaded = load_image_encoder(
                self.spec, self.device, self.precision, self.progress, images, self.photos
            )
        return self.loaded


def _apply(
    plan: _Plan, catalog: Catalog, encoder: _OnDemand, job: _Job, report: IndexReport
) -> None:
    """Carry out a plan, cheapest steps first, and count what happened in `report`."""
    catalog.touch(plan.touched)
    catalog.move(plan.moves)
    catalog.remove(plan.removals)
    catalog.add(plan.copies)
    encoded, failed = _encode(
        plan.to_encode, catalog, encoder, job.batch_size, job.progress, job.engine, job.address
    )
    catalog.forget_unreadable(plan.known_bad | {s.path for s in failed})
    # A file that changed into something unreadable must not keep its old vector.
    stale = {s.path for s in failed} & plan.replaced
    catalog.remove([e.id for p, e in catalog.entries().items() if p in stale])
    report.added = len(plan.copies) + sum(1 for p in encoded if p not in plan.replaced)
    report.updated = sum(1 for p in encoded if p in plan.replaced)
    report.moved = len(plan.moves)
    report.removed = len(plan.removals) + len(stale)
    report.unchanged = plan.unchanged
    report.skipped = sorted(plan.skipped + failed, key=lambda s: s.path)
    report.total = catalog.count()


def _choose_model(
    catalog: Catalog, model: str | None, pretrained: str | None, *, reset: bool = False
) -> ModelSpec:
    """The model asked for; with none asked for, the one the index already uses.

    The same weights at a new place (a moved checkpoint, the bundled model of another
    installation) are the same model: the index carries on with them.
    """
    existing = catalog.model()
    explicit = model is not None or pretrained is not None or model_from_environment()
    if existing and not explicit:
        return recorded_model(*existing, catalog.weights())
    spec = requested_spec(model, pretrained)
    if existing and not reset and catalog.count() and not _same_weights(spec, catalog):
        have, wanted = ModelSpec(*existing).describe(), spec.describe()
        if have == wanted:  # the same file or folder, holding other weights now
            have = f"{have} as it was then"
        raise ModelMismatchError(
            f"{catalog.path.parent}: index was built with {have}, not {wanted}",
            hint="use another --index, or `clipcli index --reset` to re-embed everything",
        )
    return spec


def _same_weights(spec: ModelSpec, catalog: Catalog) -> bool:
    """Whether `spec` is the model the catalog's vectors were made with, wherever its file is."""
    name, pretrained = catalog.model() or RecordedModel("", None)
    recorded = catalog.weights()
    if spec.from_transformers or ModelSpec(name, pretrained).from_transformers:
        # a transformers checkpoint is its content, wherever its folder is
        return spec.from_transformers and recorded is not None and spec.weights_id == recorded
    if spec.name != name:
        return False
    if spec.pretrained_is_file and recorded is not None:
        return spec.weights_id == recorded
    return spec.pretrained == pretrained


def _excludes(catalog: Catalog, job: _Job) -> dict[str, tuple[str, ...]]:
    """Each root's exclude patterns: those given now, else those recorded for it."""
    if job.excludes is not None:
        return {root: job.excludes for root in job.root_paths}
    recorded = {root.path: root.excludes for root in catalog.roots()}
    return {root: recorded.get(root, ()) for root in job.root_paths}


def _holds_photos(catalog: Catalog, root: str) -> bool:
    return catalog.photos_under([root])[0] > 0


def _scan(
    roots: Sequence[Path], include_hidden: bool, excludes: dict[str, tuple[str, ...]]
) -> list[_FileStat]:
    files: dict[str, _FileStat] = {}
    for root in roots:
        patterns = excludes.get(os.path.abspath(root), ())
        for path in discover_images(root, include_hidden=include_hidden, excludes=patterns):
            try:
                stat = path.stat()
            except OSError:
                continue  # vanished since it was listed
            files[str(path)] = _FileStat(str(path), stat.st_size, stat.st_mtime_ns)
    return list(files.values())


def _plan(
    files: list[_FileStat],
    entries: dict[str, CatalogEntry],
    roots: Sequence[Path],
    catalog: Catalog,
    progress: ProgressReporter,
    kept_away: Sequence[str] = (),
) -> _Plan:
    """What to do with each file. A photo gone from a root in `kept_away` (unreachable roots)
    may be found moved under this run's roots, by content; otherwise it stays as it is."""
    plan = _Plan()
    changed = []
    unreadable = catalog.unreadable()
    for file in files:
        entry = entries.get(file.path)
        bad = unreadable.get(file.path)
        if entry and (entry.size, entry.mtime_ns) == (file.size, file.mtime_ns):
            plan.unchanged += 1
        elif bad and bad[:2] == (file.size, file.mtime_ns):
            plan.known_bad.add(file.path)
            plan.skipped.append(Skipped(file.path, bad[2]))
        else:
            changed.append(file)
    hashes = _hash_all(changed, plan, progress)
    present = {f.path for f in files}
    run_roots = [os.path.abspath(root) for root in roots]
    gone = [
        e
        for p, e in entries.items()
        if p not in present and (root_upkeep.is_under(p, run_roots) or not os.path.exists(p))
    ]
    gone_by_hash: dict[str, list[CatalogEntry]] = defaultdict(list)
    for entry in gone:
        gone_by_hash[entry.sha256].append(entry)
    for file in changed:
        sha = hashes.get(file.path)
        if sha is None:
            continue
        entry = entries.get(file.path)
        if entry and entry.sha256 == sha:
            plan.unchanged += 1
            plan.touched.append(Touch(entry.id, file.size, file.mtime_ns))
        elif entry:
            plan.replaced.add(file.path)
            plan.to_encode.append((file, sha))
        elif gone_by_hash.get(sha):
            moved = gone_by_hash[sha].pop()
            plan.moves.append(Move(moved.id, file.path, file.size, file.mtime_ns))
        elif (vector := catalog.embedding_for_hash(sha)) is not None:
            dated = taken_at(file.path, file.mtime_ns)
            picture = catalog.picture_hash_for(sha)
            copy = NewImage(file.path, file.size, file.mtime_ns, sha, vector, dated, picture)
            plan.copies.append(copy)
        else:
            plan.to_encode.append((file, sha))
    plan.removals = [
        e.id
        for entries_ in gone_by_hash.values()
        for e in entries_
        if not root_upkeep.is_under(e.path, kept_away)
    ]
    return plan


def _hash_all(files: list[_FileStat], plan: _Plan, progress: ProgressReporter) -> dict[str, str]:
    progress.phase("Checking", len(files))
    hashes = {}
    for file in files:
        try:
            hashes[file.path] = file_sha256(file.path)
        except OSError as exc:
            plan.skipped.append(Skipped(file.path, f"cannot read file ({exc.strerror or exc})"))
        progress.advance(1)
    return hashes


def _load_for(encoder: _OnDemand, images: int, progress: ProgressReporter) -> ImageEncoder:
    """The encoder for `images` images, loaded before the bar starts: its rate and ETA are the
    encoding's."""
    if encoder.loaded is None:
        import_ahead("faiss")  # for the vector index at the end, while the images are embedded
        progress.phase("Loading model", 1)  # a model's first run also prepares its fast path
        encoder.load(images)
        progress.advance(1)
    return encoder.load(images)


def _encode(
    work: list[tuple[_FileStat, str]],
    catalog: Catalog,
    encoder: _OnDemand,
    batch_size: int,
    progress: ProgressReporter,
    engine: str = "local",
    address: str | None = None,
) -> tuple[list[str], list[Skipped]]:
    """Embed the files in batches, committing each batch: a kill loses at most the one in flight
    (with the Ray engine, those in flight on the cluster, which arrive in any order)."""
    if not work:
        return [], []
    by_path = {file.path: (file, sha) for file, sha in work}
    encoded: list[str] = []
    failed: list[Skipped] = []
    model = _load_for(encoder, len(work), progress)
    progress.phase("Embedding", len(work))
    paths = [Path(file.path) for file, _ in work]
    if engine == "ray":
        batches = ray_embed.embed_files_on_ray(
            model, paths, batch_size, address=address, picture_hashes=True
        )
    else:
        batches = embed_files(model, paths, batch_size, picture_hashes=True)
    for batch in batches:
        new = []
        pictures = batch.pictures or []
        for path, vector, picture in zip(batch.paths, batch.embeddings, pictures, strict=True):
            file, sha = by_path[str(path)]
            dated = taken_at(file.path, file.mtime_ns)
            new.append(NewImage(file.path, file.size, file.mtime_ns, sha, vector, dated, picture))
        catalog.add(new)
        bad = [(by_path[str(f.path)][0], f.reason) for f in batch.failures]
        catalog.set_unreadable(
            [UnreadableFile(f.path, f.size, f.mtime_ns, reason) for f, reason in bad]
        )
        encoded += [image.path for image in new]
        failed += [Skipped(f.path, reason) for f, reason in bad]
        progress.advance(len(batch.paths) + len(batch.failures))
    return encoded, failed


# Dates written per transaction: a run killed while dating keeps all but the batch in flight.
DATE_BATCH = 1024


def _date_undated(catalog: Catalog, progress: ProgressReporter) -> None:
    """Read when each photo the catalog has no date for was taken (a catalog made before
    dates were recorded), from its file's EXIF, else its recorded mtime, embedding nothing
    again. The plan has removed the photos whose files are gone.

    Moves and touches keep a date, as the content is the same; a file whose content changed
    is embedded again, and dated then.
    """
    undated = catalog.undated()
    if not undated:
        return
    progress.phase("Reading dates", len(undated))
    for start in range(0, len(undated), DATE_BATCH):
        batch = undated[start : start + DATE_BATCH]
        catalog.date([Dated(entry.id, taken_at(entry.path, entry.mtime_ns)) for entry in batch])
        progress.advance(len(batch))


# Hashes written per transaction: a run killed while hashing keeps all but the batch in flight.
HASH_BATCH = 256


def _hash_unhashed(catalog: Catalog, progress: ProgressReporter) -> None:
    """Compute the picture hash of each photo the catalog has none for (a catalog made
    before hashes were recorded, or repaired), decoding its file again, embedding nothing
    again. A file that no longer decodes (gone, damaged) keeps no hash: the next run tries it
    again.

    Moves and touches keep a hash, as the content is the same; a file whose content changed
    is embedded again, and hashed then.
    """
    from clipcli.media.perceptual_hash import file_picture_hashes  # Pillow: decodes pictures

    unhashed = catalog.unhashed()
    if not unhashed:
        return
    progress.phase("Hashing pictures", len(unhashed))
    for start in range(0, len(unhashed), HASH_BATCH):
        batch = unhashed[start : start + HASH_BATCH]
        hashes = file_picture_hashes([Path(entry.path) for entry in batch])
        found = [Hashed(e.id, h) for e, h in zip(batch, hashes, strict=True) if h is not None]
        catalog.set_picture_hashes(found)
        progress.advance(len(batch))
