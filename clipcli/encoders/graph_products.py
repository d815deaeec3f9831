"""The matrix products of an ONNX graph that int8 can take, and what flows into them.

A product is a MatMul (or a Gemm) whose weight is a 2-D float initialiser: the Linear layers of
a transformer. Everything here works on the graph and calibration inputs alone: no torch, no
open_clip.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnx


def weight_matmuls(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The MatMuls of `model` whose second input is a 2-D float weight, in graph order."""
    return _products(model, gemms=False)


def weight_products(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """weight_matmuls, and the Gemms with a 2-D float weight (exporters write some Linear
    layers so: nn.MultiheadAttention's output projection): every product int8 can take."""
    return _products(model, gemms=True)


def _products(model: onnx.ModelProto, gemms: bool) -> list[onnx.NodeProto]:
    weights = {init.name: init for init in model.graph.initializer}
    uses: dict[str, int] = defaultdict(int)
    for node in model.graph.node:
        for name in node.input:
            uses[name] += 1

    def has_weight(node: onnx.NodeProto) -> bool:
        weight = weights.get(node.input[1]) if len(node.input) > 1 else None
        return (
            weight is not None
            and len(weight.dims) == 2
            and weight.data_type == 1  # FLOAT
            # A weight two products share is left alone: rewriting it for one (splitting out
            # its rows, scaling them) would change the other.
            and uses[node.input[1]] == 1
        )

    return [
        node
        for node in model.graph.node
        if has_weight(node)
        and (
            node.op_type == "MatMul"
            or (gemms and node.op_type == "Gemm" and not _attribute(node, "transA"))
        )
    ]


def output_axis(node: onnx.NodeProto) -> int:
    """The axis of a product's weight that indexes its outputs."""
    return 0 if node.op_type == "Gemm" and _attribute(node, "transB") else 1


def _attribute(node: onnx.NodeProto, name: str) -> int:
    return next((int(a.i) for a in node.attribute if a.name == name), 0)


def input_ranges(
    model: onnx.ModelProto, batches: Iterable[dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """Per input channel, the largest |x| at each weight MatMul's input over the calibration
    batches, keyed by the input tensor's name."""
    import onnx

    from clipcli.encoders.onnx_sessions import graph_session

    watched = sorted({node.input[0] for node in weight_matmuls(model)})
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {output.name for output in probe.graph.output}
    for name in watched:
        if name not in known:
            probe.graph.output.append(onnx.helper.make_tensor_value_info(name, 1, None))
    session = graph_session(probe, optimise=False)  # the watched tensors keep their names
    ranges: dict[str, np.ndarray] = {}
    for feeds in batches:
        outputs = session.run(watched, feeds)
        for name, value in zip(watched, outputs, strict=True):
            channel_max = np.abs(value.reshape(-1, value.shape[-1])).max(axis=0)
            ranges[name] = np.maximum(ranges.get(name, channel_max), channel_max)
    return ranges
