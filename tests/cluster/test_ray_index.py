"""Specification of `clipcli index --engine ray`: Ray actors embed, the driver writes, and the
index is the one `--engine local` makes.

The Ray runs go to a real cluster on this machine (the `ray_cluster` fixture: a head node and a
worker node, one CPU each), the local runs to this process; both embed the same shapes photos,
one of them unreadable, in batches of a few, so that every batch may go to either node.
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import TEST_MODEL, edit_cpu_record, own_fingerprint, snapshot

from clipcli.store.catalog import CATALOG_FILE

PHOTOS = 30
BATCH = 4  # eight batches of the 31 files, the last one short


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shapes photos of every format the generator writes, and one file that is no image."""
    from clipcli.shapes import write_sample_folder

    folder = tmp_path_factory.mktemp("shapes")
    write_sample_folder(folder, PHOTOS, seed=7)
    (folder / "0003-scribbled.jpg").write_text("not a picture\n")
    return folder


def catalog(index: Path) -> dict[str, tuple]:
    """Each photo's stored row, by path: everything but when it was written and its row id."""
    db = sqlite3.connect(index / CATALOG_FILE)
    try:
        found = db.execute(
            "SELECT path, size, mtime_ns, sha256, taken_at, phash, colours, embedding FROM images"
        )
        return {path: tuple(rest) for path, *rest in found}
    finally:
        db.close()


def unreadable(index: Path) -> dict[str, tuple]:
    db = sqlite3.connect(index / CATALOG_FILE)
    try:
        found = db.execute("SELECT path, size, mtime_ns, reason FROM unreadable")
        return {path: tuple(rest) for path, *rest in found}
    finally:
        db.close()


def index_with(cli, folder: Path, index: Path, *args: str | Path) -> dict:
    result, report = cli.json("index", folder, "--index", index, "--batch-size", BATCH, *args)
    assert result.exit_code == 0, result.stderr
    return report


def on(address: str) -> list[str]:
    return ["--engine", "ray", "--address", address]


@pytest.mark.ray
def test_fp32_on_ray_gives_the_local_index_bit_for_bit_and_ray_stays_quiet(
    cli, ray_cluster, shapes: Path, tmp_path: Path, model_args: list[str], capfd
) -> None:
    options = [*model_args, "--precision", "fp32"]
    local = index_with(cli, shapes, tmp_path / "local", *options)
    capfd.readouterr()
    on_ray = index_with(cli, shapes, tmp_path / "ray", *options, *on(ray_cluster.address))
    terminal = capfd.readouterr().err  # Ray's C++ core and its processes write to the fd itself
    for noise in ("core_worker", "logging.cc", "Dataset", "Progress bars", "MapWorker", "INFO"):
        assert noise not in terminal
    assert on_ray["added"] == local["added"] == PHOTOS
    assert on_ray["skipped"] == local["skipped"]
    assert [item["path"] for item in on_ray["skipped"]] == [str(shapes / "0003-scribbled.jpg")]
    here, there = catalog(tmp_path / "local"), catalog(tmp_path / "ray")
    assert there == here  # paths, sizes, mtimes, hashes, dates, picture hashes, vectors' bytes
    assert all(row[4] is not None and row[5] is not None for row in there.values())
    assert unreadable(tmp_path / "ray") == unreadable(tmp_path / "local")


@pytest.fixture
def onnx_model(random_checkpoint: Path, tmp_path: Path, cli, shapes: Path) -> list[str]:
    """Weights of the test's own, exported and checked here, with torch made the slowest
    backend on this CPU: `auto` then runs an exported tower, which a worker left to choose
    for itself might not."""
    spec = own_fingerprint(random_checkpoint, tmp_path)
    options = ["--model", TEST_MODEL, "--pretrained", spec.pretrained]
    exported = tmp_path / "exported"
    result = cli("index", shapes, "--index", exported, *options, "--precision", "onnx", "--json")
    assert result.exit_code == 0, result.stderr
    edit_cpu_record(spec, torch={"rate": 0.0})
    return options


@pytest.mark.ray
def test_auto_runs_the_drivers_backend_on_every_worker_and_agrees_with_a_local_run(
    cli, ray_cluster, shapes: Path, tmp_path: Path, onnx_model: list[str]
) -> None:
    from clipcli.cluster.ray_embed import embed_files_on_ray
    from clipcli.encoders.choose import load_image_encoder
    from clipcli.models.names import resolve_model_spec

    local = index_with(cli, shapes, tmp_path / "local", *onnx_model)
    paths = sorted(shapes.iterdir())
    spec = resolve_model_spec(TEST_MODEL, onnx_model[3])
    # as the index run loads it for its job: auto weighs the job's size
    driver = load_image_encoder(spec, "cpu", "auto", images=len(paths))
    assert driver.backend.startswith("onnx-")
    batches = list(
        embed_files_on_ray(driver, paths, BATCH, address=ray_cluster.address, picture_hashes=True)
    )
    assert {batch.backend for batch in batches} == {driver.backend}
    # the batches embed_files makes: consecutive chunks of BATCH paths, whatever their order
    chunks = {tuple(paths[start : start + BATCH]) for start in range(0, len(paths), BATCH)}
    assert {tuple(sorted(b.paths + [f.path for f in b.failures])) for b in batches} == chunks
    failed = [(str(f.path), f.reason) for batch in batches for f in batch.failures]
    assert failed == [(item["path"], item["reason"]) for item in local["skipped"]]
    here = catalog(tmp_path / "local")
    for batch in batches:
        assert batch.pictures is not None
        for path, vector, picture in zip(
            batch.paths, batch.embeddings, batch.pictures, strict=True
        ):
            stored = here[str(path)]
            assert (picture.phash, picture.colours) == stored[4:6]
            assert float(vector @ np.frombuffer(stored[-1], dtype="<f4")) >= 0.9999


@pytest.mark.ray
def test_a_model_the_workers_cannot_load_is_named_in_one_line(
    ray_cluster, shapes: Path, tmp_path: Path, random_checkpoint: Path
) -> None:
    import shutil

    from clipcli.cluster.ray_embed import embed_files_on_ray
    from clipcli.encoders.choose import load_image_encoder
    from clipcli.errors import ClipcliError
    from clipcli.models.names import resolve_model_spec

    weights = Path(shutil.copy(random_checkpoint, tmp_path / "gone.pt"))
    driver = load_image_encoder(resolve_model_spec(TEST_MODEL, str(weights)), "cpu", "fp32")
    weights.unlink()  # here, loaded; on the workers, nowhere to be found
    with pytest.raises(ClipcliError) as raised:
        list(
            embed_files_on_ray(driver, sorted(shapes.iterdir()), BATCH, address=ray_cluster.address)
        )
    assert raised.value.message == f"on a Ray worker: {weights}: weights file not found"
    assert raised.value.hint


class RemovesTheWorkerNode:
    """A progress reporter that takes the worker node away, with its actor and the batches
    queued for it, once the first batch is stored.

    So that the first actor is the worker node's, the head node's CPU is held while the actors
    start, and let go as the worker node goes: the batches left then run on the head node."""

    def __init__(self, cluster) -> None:
        self.cluster = cluster
        self.worker = next(iter(cluster.worker_nodes))
        self.head = cluster.head_node.node_id
        self.nodes: list[str] = []  # the node of each batch, in the order they came
        self.removed_after: int | None = None  # batches stored when the node went
        self.embedding = False
        self.holder = None

    def phase(self, description: str, total: int) -> None:
        self.embedding = description == "Embedding"
        if self.embedding:  # connected by now: the actors start after this
            self.holder = _hold_a_cpu_of(self.head)

    def advance(self, count: int) -> None:
        if self.embedding and self.removed_after is None:
            self.removed_after = len(self.nodes)
            self.cluster.remove_node(self.worker)
            import ray

            ray.kill(self.holder)

    def watching(self, embed):
        def embedded(*args, **kwargs):
            for batch in embed(*args, **kwargs):
                self.nodes.append(batch.node)
                yield batch

        return embedded


def _hold_a_cpu_of(node_id: str):
    """A Ray actor that holds one CPU of the node, once it has started."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=1)
    class Holder:
        def ready(self) -> bool:
            return True

    holder = Holder.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)
    ).remote()
    assert ray.get(holder.ready.remote(), timeout=60)
    return holder


@pytest.mark.ray
def test_a_worker_node_that_dies_mid_run_leaves_a_complete_index(
    cli,
    ray_cluster,
    shapes: Path,
    tmp_path: Path,
    random_checkpoint: Path,
    model_args: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capfd,
) -> None:
    from clipcli.cluster import ray_embed
    from clipcli.index import update_index

    one_by_one = ["--precision", "fp32", "--batch-size", "1"]
    index_with(cli, shapes, tmp_path / "local", *model_args, *one_by_one)
    progress = RemovesTheWorkerNode(ray_cluster.cluster)
    monkeypatch.setattr(
        ray_embed, "embed_files_on_ray", progress.watching(ray_embed.embed_files_on_ray)
    )
    try:
        report = update_index(
            [shapes],
            tmp_path / "ray",
            model=TEST_MODEL,
            pretrained=str(random_checkpoint),
            precision="fp32",
            batch_size=1,  # a batch per photo: the node goes while most are still to embed
            progress=progress,
            engine="ray",
            address=ray_cluster.address,
        )
    finally:  # the next test has its worker node again
        if not ray_cluster.cluster.worker_nodes:
            ray_cluster.cluster.add_node(num_cpus=1)
            ray_cluster.cluster.wait_for_nodes()
    assert progress.nodes[0] == progress.worker.node_id and progress.removed_after == 1
    assert progress.head in progress.nodes  # what the worker node had left, its queue too
    assert len(progress.nodes) == PHOTOS + 1  # each batch once: none lost, none twice
    assert "(raylet)" not in capfd.readouterr().out  # Ray's notices of retries stay off stdout
    assert report.added == PHOTOS and [s.path for s in report.skipped] == [
        str(shapes / "0003-scribbled.jpg")
    ]
    assert catalog(tmp_path / "ray") == catalog(tmp_path / "local")


def test_without_ray_the_ray_engine_is_a_usage_error_that_writes_nothing(
    cli, photo_folder: Path, tmp_path: Path, model_args: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.setitem(sys.modules, "ray.data", None)
    index = tmp_path / "index"
    result = cli("index", photo_folder, "--index", index, *model_args, "--engine", "ray")
    assert result.exit_code == 2
    assert "--engine ray needs Ray" in result.stderr
    assert "pip install 'clipcli[ray]'" in result.stderr
    assert "Traceback" not in result.stderr
    assert snapshot(index) is None


def test_an_address_without_the_ray_engine_is_a_usage_error(
    cli, photo_folder: Path, tmp_path: Path, model_args: list[str]
) -> None:
    index = tmp_path / "index"
    result = cli("index", photo_folder, "--index", index, *model_args, "--address", "auto")
    assert result.exit_code == 2
    assert "--engine ray" in result.stderr
    assert snapshot(index) is None


def test_a_cluster_that_cannot_be_reached_is_named_and_nothing_is_written(
    cli, photo_folder: Path, tmp_path: Path, model_args: list[str]
) -> None:
    pytest.importorskip("ray")
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    index = tmp_path / "index"
    result = cli("index", photo_folder, "--index", index, *model_args, *on(address))
    assert result.exit_code == 1
    assert f"cannot reach a Ray cluster at {address}" in result.stderr
    assert "Traceback" not in result.stderr
    assert snapshot(index) is None
