"""`clipcli serve` at scale: a real uvicorn on a free loopback port, over a catalog of synthetic
photos, asked for a text query it has not seen before each time (bench/run.py turns the
figures into rows).

The vectors are of the bundled shapes model's width (64), recorded as that model's, so that
the server embeds each query with the model itself: the text tower exported to ONNX, opened
once when the server starts. The photos are a Gaussian mixture on the unit sphere, as
bench/dupes.py draws them; their files exist (a byte each), since a search leaves out photos
gone from disk. What is timed is the whole request: HTTP, the query's embedding, the exact
search of 100k vectors and the JSON.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from dupes import near_duplicate_vectors

MODEL = "clipcli-shapes"
# Words for queries no server has embedded yet: "a red star near 17 blue rings", and so on.
_COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "white", "black")
_SHAPES = ("star", "ring", "cross", "square", "circle", "triangle")


@dataclass(frozen=True)
class ServeTiming:
    photos: int
    median_ms: float  # one client, one new query after another, on a warm server
    p99_ms: float
    load_clients: int
    load_seconds: float
    load_requests: int
    load_p50_ms: float  # those clients all at once, each sending its next query on an answer
    load_p99_ms: float
    load_errors: int  # answers other than 200 with a list of hits, and failed connections


def new_queries(first: int = 0) -> Iterator[str]:
    """Text queries, each different from every other (from other `first`s' too, as long as
    those are over a billion apart)."""
    for n in itertools.count(first):
        colour, other = _COLOURS[n % 8], _COLOURS[(n // 8) % 8]
        yield f"a {colour} {_SHAPES[n % 6]} near {n} {other} {_SHAPES[(n // 6) % 6]}s"


def synthetic_index(folder: Path, photos: Path, count: int, seed: int = 0) -> None:
    """A catalog of `count` photos with vectors of the shapes model, recorded as its, and the
    FAISS index an index run would have saved."""
    from clipcli.encoders.choose import requested_spec
    from clipcli.store import vector_index
    from clipcli.store.catalog import Catalog
    from clipcli.store.catalog_records import NewImage

    spec = requested_spec(MODEL, None)
    vectors, _ = near_duplicate_vectors(count, 64, 0, seed)
    photos.mkdir(parents=True)
    paths = [photos / f"{n:06d}.jpg" for n in range(count)]
    for path in paths:
        path.write_bytes(b"\0")
    with Catalog(folder) as catalog:
        catalog.set_model(spec.name, spec.pretrained, spec.weights_id)
        for start in range(0, count, 10_000):
            catalog.add(
                NewImage(str(paths[n]), 1, n, f"{n:064x}", vectors[n])
                for n in range(start, min(start + 10_000, count))
            )
        vector_index.refresh(folder, catalog)


@contextmanager
def running_server(folder: Path) -> Iterator[str]:
    """uvicorn serving `folder` on a free loopback port, as `clipcli serve` runs it; yields
    the base URL."""
    import uvicorn

    from clipcli.web.app import create_app

    app = create_app(folder)
    # IPPROTO_TCP named, as uvicorn's own bind names it: asyncio sets TCP_NODELAY only on
    # sockets that say they are TCP, and without it each answer waited ~40 ms for an ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def percentile(values: list[float], share: float) -> float:
    return float(np.percentile(values, share * 100))


def one_client(base: str, queries: Iterator[str], count: int) -> list[float]:
    """Seconds per request of `count` new queries, one after another."""
    import httpx

    seconds = []
    with httpx.Client(base_url=base) as client:
        for query in itertools.islice(queries, count):
            started = time.perf_counter()
            response = client.get("/api/search", params={"q": query})
            seconds.append(time.perf_counter() - started)
            response.raise_for_status()
    return seconds


def load(base: str, clients: int, seconds: float) -> tuple[list[float], int]:
    """`clients` threads, each asking a new query as soon as its last is answered, for
    `seconds`: the latency of every answer, and how many failed. Run in a process of its own
    (time_serve), so that the clients do not take the server's turns at the interpreter."""
    import httpx

    queries = new_queries(first=10**9)
    lock = threading.Lock()
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    def next_query() -> str:
        with lock:
            return next(queries)

    def client_loop() -> None:
        nonlocal errors
        with httpx.Client(base_url=base, timeout=30) as client:
            while time.perf_counter() < stop:
                started = time.perf_counter()
                try:
                    response = client.get("/api/search", params={"q": next_query()})
                    ok = response.status_code == 200 and isinstance(response.json(), list)
                except httpx.HTTPError:
                    ok = False
                took = time.perf_counter() - started
                with lock:
                    latencies.append(took)
                    errors += not ok

    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors


def time_serve(
    count: int = 100_000, requests: int = 500, clients: int = 50, seconds: float = 20.0
) -> ServeTiming:
    """The figures of ServeTiming, in a scratch index (and a scratch CLIPCLI_HOME and cache,
    so that the query cache and the export are the server's own)."""
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        saved = {name: os.environ.get(name) for name in ("CLIPCLI_HOME", "CLIPCLI_CACHE")}
        os.environ["CLIPCLI_HOME"], os.environ["CLIPCLI_CACHE"] = str(root), str(root / "cache")
        try:
            synthetic_index(root / "index", root / "photos", count)
            queries = new_queries()
            with running_server(root / "index") as base:
                one_client(base, queries, 20)  # the model exported and loaded: warm
                single = one_client(base, queries, requests)
                with multiprocessing.get_context("spawn").Pool(1) as pool:
                    latencies, errors = pool.apply(load, (base, clients, seconds))
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
    return ServeTiming(
        photos=count,
        median_ms=statistics.median(single) * 1000,
        p99_ms=percentile(single, 0.99) * 1000,
        load_clients=clients,
        load_seconds=seconds,
        load_requests=len(latencies),
        load_p50_ms=percentile(latencies, 0.5) * 1000,
        load_p99_ms=percentile(latencies, 0.99) * 1000,
        load_errors=errors,
    )
