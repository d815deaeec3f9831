"""Running exported towers with ONNX Runtime.

Each tower is optimised once and saved as a graph file plus a separate weights file. ONNX
Runtime memory-maps weights kept outside the graph, so a session over the 254 MB ViT-B-32 text
tower opens in tens of milliseconds instead of the 0.4 s it takes to parse them out of one
protobuf; that difference is most of a cold `clipcli search`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from clipcli.vectors import Embeddings, normalise

Runner = Callable[[np.ndarray], Embeddings]


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def optimised_path(path: Path) -> Path:
    return path.with_suffix(".opt.onnx")


def weights_path(path: Path) -> Path:
    """Where the weights of the optimised graph of `path` live (see save_optimised)."""
    return optimised_path(path).with_suffix(".weights")


def save_optimised(path: Path) -> Path:
    """Optimise `path` once and save the graph with its weights in a file of their own.

    Called with the export folder locked, so the weights file has one writer; the graph file
    appears last, under its final name, so a reader never sees a graph without its weights.
    """
    import onnxruntime as ort

    final = optimised_path(path)
    partial = final.with_name(f".{final.name}.partial")
    options = _options()
    # EXTENDED, not ALL: the saved graph must not depend on this CPU's memory layouts.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(partial)
    options.add_session_config_entry(
        "session.optimized_model_external_initializers_file_name",
        weights_path(path).name,
    )
    options.add_session_config_entry(
        "session.optimized_model_external_initializers_min_size_in_bytes", "1024"
    )
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    os.replace(partial, final)
    return final


def session(path: Path, *, prepack: bool = True, threads: int = 0, spin: bool = True) -> Any:
    """A session over the saved optimised graph of `path` (see save_optimised).

    `prepack=False` skips re-laying out the weights for ONNX Runtime's matrix kernels: for a
    single search query that work costs more than it saves, and it would read every weight page.
    `spin=False` has ONNX Runtime's threads sleep between runs instead of spinning, waiting for
    the next one: spinning suits runs back to back, but in a server answering one query at a
    time it took the cores from the other requests (a warm search cost 1.7x the CPU time).
    """
    import onnxruntime as ort

    options = _options()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = threads
    if not prepack:
        options.add_session_config_entry("session.disable_prepacking", "1")
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(
        str(optimised_path(path)), options, providers=["CPUExecutionProvider"]
    )


def graph_session(graph: Any, *, optimise: bool = True) -> Any:
    """A session over an in-memory onnx.ModelProto. `optimise=False` keeps every tensor of the
    graph as it is named there, for reading intermediate values out of it."""
    import onnxruntime as ort

    options = _options()
    if not optimise:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(
        graph.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def _options() -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # warnings about unused initialisers are not the user's concern
    return options


def batch_runner(path: Path, *, prepack: bool = True, spin: bool = True) -> Runner:
    """Unit-length embeddings for a whole input batch in one run."""
    sess = session(path, prepack=prepack, spin=spin)
    name = sess.get_inputs()[0].name
    return lambda batch: normalise(sess.run(None, {name: batch})[0])


def per_image_runner(path: Path, workers: int | None = None, *, prepack: bool = True) -> Runner:
    """Unit-length embeddings, one image per run, runs spread over the cores.

    Dynamically quantised graphs scale activations per run: batched, an image's embedding would
    depend on the images beside it. One image per run keeps each embedding a function of its own
    pixels, and single-threaded runs in parallel keep the cores as busy as one batched run does.
    """
    sess = session(path, threads=1, prepack=prepack)
    name = sess.get_inputs()[0].name
    pool = ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1)

    def run(batch: np.ndarray) -> Embeddings:
        rows = pool.map(lambda i: sess.run(None, {name: batch[i : i + 1]})[0], range(len(batch)))
        return normalise(np.concatenate(list(rows)))

    return run


def started(make: Callable[[], Runner]) -> Runner:
    """The runner `make` returns, made on a thread of its own from now on.

    Opening a session takes 0.1-0.5 s, in ONNX Runtime's own code; meanwhile the caller decodes
    the first images. The runner waits for the session on its first call, and raises what
    opening it raised.
    """
    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(make)
    pool.shutdown(wait=False)
    return lambda batch: future.result()(batch)
