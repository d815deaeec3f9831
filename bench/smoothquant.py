"""SmoothQuant on an ONNX graph, measured by bench/trained.py against what clipcli ships.

Dividing channel j of a MatMul's input by s_j and multiplying row j of its weight by s_j leaves
the product unchanged, and with s_j = max|x_j|^a / max|W_j|^(1 - a) both sides quantise better
(Xiao et al., "SmoothQuant", ICML 2023). On all-MiniLM-L6-v2 it lifts every-product int8 from a
centred cosine of 0.98 to 0.992-0.994; splitting the outlier channels out (clipcli's
encoders/outliers.py) reaches 0.998, so this stays a bench method.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx

from clipcli.encoders.graph_products import weight_matmuls

ALPHA = 0.75  # 0.5 repairs too little of the activations, 0.85 costs the weights too much
SCALE_LIMITS = (1e-4, 1e4)


def smooth(
    model: onnx.ModelProto, ranges: dict[str, np.ndarray], alpha: float = ALPHA
) -> onnx.ModelProto:
    """A copy of `model` with each weight MatMul's input scaled down per channel and its weight
    rows scaled up to match; MatMuls reading one input share one scaling."""
    import onnx
    from onnx import numpy_helper

    smoothed = onnx.ModelProto()
    smoothed.CopyFrom(model)
    graph = smoothed.graph
    weights = {init.name: init for init in graph.initializer}
    by_input: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in weight_matmuls(smoothed):
        if node.input[0] in ranges:
            by_input[node.input[0]].append(node)
    for name, nodes in by_input.items():
        arrays = [numpy_helper.to_array(weights[node.input[1]]) for node in nodes]
        if any(array.shape[0] != ranges[name].shape[0] for array in arrays):
            continue
        weight_max = np.max([np.abs(array).max(axis=1) for array in arrays], axis=0)
        scale = np.power(np.maximum(ranges[name], 1e-8), alpha) / np.power(
            np.maximum(weight_max, 1e-8), 1 - alpha
        )
        scale = np.clip(scale, *SCALE_LIMITS).astype(np.float32)
        for node, array in zip(nodes, arrays, strict=True):
            _replace(weights[node.input[1]], array * scale[:, None])
        if not _fold_into_layernorm(graph, name, nodes, scale, weights):
            _divide_before(graph, name, nodes, scale)
    return smoothed


def _replace(init: onnx.TensorProto, array: np.ndarray) -> None:
    from onnx import numpy_helper

    init.CopyFrom(numpy_helper.from_array(array.astype(np.float32), init.name))


def _fold_into_layernorm(
    graph: onnx.GraphProto,
    name: str,
    nodes: list[onnx.NodeProto],
    scale: np.ndarray,
    weights: dict[str, onnx.TensorProto],
) -> bool:
    """Divide the LayerNorm producing `name` by `scale`, when only `nodes` read it, directly or
    through transposes that keep channels last (CLIP's towers transpose to sequence-first
    between the LayerNorm and the attention's input projection)."""
    from onnx import numpy_helper

    producers = {output: node for node in graph.node for output in node.output}
    readers: dict[str, int] = defaultdict(int)
    for node in graph.node:
        for tensor in set(node.input):
            readers[tensor] += 1
    outputs = {output.name for output in graph.output}
    if readers[name] != len(nodes) or name in outputs:
        return False
    producer = producers.get(name)
    while producer is not None and _keeps_channels_last(producer):
        source = producer.input[0]
        if readers[source] != 1 or source in outputs:
            return False
        producer = producers.get(source)
    if producer is None or producer.op_type != "LayerNormalization" or len(producer.input) < 3:
        return False
    parts = [weights.get(part) for part in producer.input[1:3]]
    if any(part is None or tuple(part.dims) != scale.shape for part in parts):
        return False
    for index, part in zip((1, 2), parts, strict=True):
        # A copy of its own: exporters share identical initialisers between LayerNorms.
        divided = numpy_helper.from_array(
            (numpy_helper.to_array(part) / scale).astype(np.float32), f"{name}/smoothed_ln{index}"
        )
        graph.initializer.append(divided)
        producer.input[index] = divided.name
    return True


def _keeps_channels_last(node: onnx.NodeProto) -> bool:
    """A Transpose that leaves the last axis last: channel j stays channel j."""
    if node.op_type != "Transpose":
        return False
    perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
    return bool(perm) and perm[-1] == len(perm) - 1


def _divide_before(
    graph: onnx.GraphProto, name: str, nodes: list[onnx.NodeProto], scale: np.ndarray
) -> None:
    """Put Mul(input, 1/scale) before `nodes`, in the graph's order (just before the first)."""
    import onnx
    from onnx import numpy_helper

    divided = f"{name}/smoothed"
    inverse = numpy_helper.from_array((1.0 / scale).astype(np.float32), f"{name}/smooth_scale")
    graph.initializer.append(inverse)
    mul = onnx.helper.make_node("Mul", [name, inverse.name], [divided], name=f"{name}/Smooth")
    for node in nodes:
        node.input[0] = divided
    first = min(list(graph.node).index(node) for node in nodes)
    graph.node.insert(first, mul)
