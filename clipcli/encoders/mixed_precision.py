"""Which matrix products to leave in fp32 so that an int8 graph keeps the gate.

A few products carry most of int8's error, and quantising all but those keeps most of int8's
speed: on all-MiniLM-L6-v2, with its outlier channels split out, all but 2 of 36. Products
are ranked by how far rounding each one alone moves the tower's output (ranking them by the
error each makes on its own output did badly: with SmoothQuant it needed 27 fp32 products
where this needed 8-10); then the fewest of the top-ranked that must stay fp32 are found by
trying doubling counts and bisecting, each try a real quantised graph judged end to end on
this CPU's kernels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from clipcli.encoders.agreement import FLOORS, Agreement, passes
from clipcli.encoders.quantise import (
    Int8Variant,
    Prepared,
    prepare,
    quantise,
)
from clipcli.vectors import normalise

if TYPE_CHECKING:
    import onnx

# Inputs each product's sensitivity is measured on (each is run once per product).
SENSITIVITY_SAMPLES = 8


@dataclass(frozen=True)
class Mix:
    """The outcome of a sweep: the products left fp32 (None: no count kept the gate) and what
    each count tried gave, for export.json."""

    keep_fp32: list[str] | None
    tried: dict[int, bool]


@dataclass(frozen=True)
class MixedGraph:
    """A prepared graph, the products to leave fp32 when it is quantised, and where that
    quantised graph was saved (None where no count kept the gate)."""

    prepared: Prepared
    mix: Mix
    products: int
    saved: Path | None

    @property
    def keep_fp32(self) -> list[str]:
        """The products to leave fp32: none where no count kept the gate (the graph then fails
        it quantised in full, and the caller records why)."""
        return self.mix.keep_fp32 if self.mix.keep_fp32 is not None else []


def find_mix(
    fp32: Path,
    variant: Int8Variant,
    feeds: Sequence[dict[str, np.ndarray]],
    judge: Callable[[Path], Agreement],
    path_for: Callable[[list[str]], Path],
    floors: dict[str, float] = FLOORS,
) -> MixedGraph:
    """Prepare the saved fp32 graph of `fp32` for `variant` on the calibration `feeds` (one
    input each, as int8 runs them), rank its products, and find the fewest to leave fp32 for
    which `judge`, given a quantised graph saved at path_for(products left fp32), keeps every
    floor.

    Only the graph found is left on disk; every other one tried is removed.
    """
    prepared = prepare(fp32, variant, feeds)
    order = sensitivity_order(prepared, feeds[:SENSITIVITY_SAMPLES], variant.per_channel)
    best: list[Path] = []

    def keeps_gate(keep: list[str]) -> bool:
        path = path_for(keep)
        quantise(prepared, variant, path, keep)
        if not passes(judge(path).to_dict(), floors):
            _remove(path)
            return False
        for earlier in best:  # a pass with more products fp32: no longer needed
            if earlier != path:
                _remove(earlier)
        best[:] = [path]
        return True

    try:
        mix = fewest_fp32(order, keeps_gate)
    except BaseException:
        for path in best:
            _remove(path)
        raise
    return MixedGraph(prepared, mix, len(order), best[0] if best else None)


def _remove(tower: Path) -> None:
    from clipcli.encoders.onnx_sessions import optimised_path, weights_path

    for path in (optimised_path(tower), weights_path(tower)):
        path.unlink(missing_ok=True)


def sensitivity_order(
    prepared: Prepared, samples: Sequence[dict[str, np.ndarray]], per_channel: bool = True
) -> list[str]:
    """The weight products of a prepared graph (graph_products.weight_products) that int8 may
    take, the one it hurts most first.

    Each product is quantised alone, in fp32 arithmetic (DynamicQuantizeLinear and
    DequantizeLinear before it, its weight rounded to 8 bits), and scored by how far the
    outputs then move from fp32's, centred, over `samples` run one at a time as int8 runs
    them. One session serves every product: a flag per product, fed at each run, switches its
    rounding on.
    """
    from clipcli.encoders.graph_products import weight_products
    from clipcli.encoders.onnx_sessions import graph_session

    graph = prepared.graph
    names = [n.name for n in weight_products(graph) if n.name not in prepared.fixed_fp32]
    session = graph_session(_with_switchable_rounding(graph, names, per_channel))
    output = session.get_outputs()[0].name

    def outputs(flags: np.ndarray) -> np.ndarray:
        rows = [session.run([output], {**feeds, FLAGS: flags})[0] for feeds in samples]
        return normalise(np.concatenate(rows).reshape(len(samples), -1))

    exact = outputs(np.zeros(len(names), dtype=bool))
    centre = exact.mean(axis=0)
    damage = {}
    for index, name in enumerate(names):
        flags = np.zeros(len(names), dtype=bool)
        flags[index] = True
        moved = normalise(outputs(flags) - centre) - normalise(exact - centre)
        damage[name] = float(np.mean(np.sum(moved * moved, axis=1)))
    return sorted(names, key=lambda name: -damage[name])


FLAGS = "clipcli_rounding_flags"


def _with_switchable_rounding(
    graph: onnx.ModelProto, names: list[str], per_channel: bool
) -> onnx.ModelProto:
    """A copy of `graph` where product names[i]'s input and weight are rounded as dynamic int8
    rounds them when FLAGS[i] is true, and left exact when it is false.

    Each product becomes an If over two branches, so a run pays only for the products switched
    on: mixing rounded and exact weights in the graph would read and write every weight on
    every run (a gigabyte for ViT-B-32).
    """
    import onnx as onnx_module
    from onnx import helper, numpy_helper

    from clipcli.encoders.graph_products import output_axis

    probe = onnx_module.ModelProto()
    probe.CopyFrom(graph)
    switched = {name: index for index, name in enumerate(names)}
    weights = {init.name: init for init in probe.graph.initializer}
    probe.graph.input.append(helper.make_tensor_value_info(FLAGS, 9, [len(switched)]))  # BOOL
    nodes = []
    for node in probe.graph.node:
        index = switched.get(node.name)
        if index is None:
            nodes.append(node)
            continue
        tag = f"clipcli_round_{index}"
        weight = numpy_helper.to_array(weights[node.input[1]])
        rounded = _rounded(weight, per_channel, output_axis(node))
        probe.graph.initializer.extend(
            [
                numpy_helper.from_array(np.array(index, dtype=np.int64), f"{tag}/index"),
                numpy_helper.from_array(rounded, f"{tag}/w"),
            ]
        )
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        rest = list(node.input[2:])
        output = helper.make_tensor_value_info(f"{tag}/out", 1, None)
        exact = helper.make_graph(
            [helper.make_node(node.op_type, list(node.input), [f"{tag}/out"], **attributes)],
            f"{tag}/exact",
            [],
            [output],
        )
        quantised = helper.make_graph(
            [
                helper.make_node(
                    "DynamicQuantizeLinear", [node.input[0]], [f"{tag}/q", f"{tag}/s", f"{tag}/z"]
                ),
                helper.make_node(
                    "DequantizeLinear", [f"{tag}/q", f"{tag}/s", f"{tag}/z"], [f"{tag}/x"]
                ),
                helper.make_node(
                    node.op_type, [f"{tag}/x", f"{tag}/w", *rest], [f"{tag}/out"], **attributes
                ),
            ],
            f"{tag}/rounded",
            [],
            [output],
        )
        nodes += [
            helper.make_node("Gather", [FLAGS, f"{tag}/index"], [f"{tag}/on"]),
            helper.make_node(
                "If", [f"{tag}/on"], list(node.output), then_branch=quantised, else_branch=exact
            ),
        ]
    probe.graph.ClearField("node")
    probe.graph.node.extend(nodes)
    return probe


def _rounded(weight: np.ndarray, per_channel: bool, outputs: int = 1) -> np.ndarray:
    """`weight` rounded to symmetric 8 bits, one scale per output (along axis `outputs`) or
    one in all."""
    along = 1 - outputs  # the axis each output's scale is taken over
    peak = np.abs(weight).max(axis=along, keepdims=True) if per_channel else np.abs(weight).max()
    scale = np.maximum(peak, 1e-12) / 127.0
    return (np.round(weight / scale) * scale).astype(np.float32)


def fewest_fp32(order: Sequence[str], keeps_gate: Callable[[list[str]], bool]) -> Mix:
    """The shortest prefix of `order` that, left fp32, lets the graph keep the gate.

    Counts 0, 1, 2, 4, ... are tried until one passes, then the gap below it is bisected: about
    2 log2(n) graphs for n products. All of them fp32 is not tried: that is the fp32 graph.
    """
    tried: dict[int, bool] = {}

    def attempt(count: int) -> bool:
        if count not in tried:
            tried[count] = keeps_gate(list(order[:count]))
        return tried[count]

    failed, count = -1, 0
    while count < len(order) and not attempt(count):
        failed, count = count, max(1, count * 2)
    if count >= len(order):
        count = len(order) - 1
        if count <= failed or not attempt(count):
            return Mix(None, tried)
    passed = count
    while passed - failed > 1:
        middle = (failed + passed) // 2
        if attempt(middle):
            passed = middle
        else:
            failed = middle
    return Mix(list(order[:passed]), tried)
