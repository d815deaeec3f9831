"""Outlier channels split out of a product before int8, and kept in fp32 (as LLM.int8() does).

Trained transformers carry a few activation channels hundreds of times larger than the rest
(all-MiniLM-L6-v2: max/median 216 at its feed-forward inputs; random weights: about 16).
Dynamic int8 gives a whole activation tensor one scale, so those channels leave every other a
few levels. Splitting x @ W into x[:, rest] @ W[rest] in int8 plus x[:, outliers] @ W[outliers]
in fp32 leaves the int8 product a range set by ordinary channels, for a fp32 product over at
most OUTLIERS_CAP channels. On all-MiniLM-L6-v2 it lifts every-product int8 from a centred
cosine of 0.979 to 0.998, where SmoothQuant (moving outliers into the weights) reached 0.992.

Everything here works on the graph and calibration inputs alone: no torch, no open_clip.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from clipcli.encoders.graph_products import weight_matmuls

if TYPE_CHECKING:
    import onnx

# A channel is an outlier above this many times the median channel's largest |x|: lower split
# more and run slower (ratio 2: centred 0.9987 at 2.2x fp32), higher leave outliers in (ratio 8:
# 0.992).
OUTLIER_RATIO = 3.0
OUTLIERS_CAP = 128  # per product: the fp32 part stays a small fraction of it


def split_outliers(
    graph: onnx.ModelProto, ranges: dict[str, np.ndarray]
) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of `graph` where each weight MatMul with outlier input channels (by `ranges`, the
    calibration's largest |x| per channel) is split in two; returns it with the names of the
    outlier products, which must stay fp32."""
    import onnx as onnx_module
    from onnx import helper, numpy_helper

    split = onnx_module.ModelProto()
    split.CopyFrom(graph)
    weights = {init.name: init for init in split.graph.initializer}
    products = {node.name for node in weight_matmuls(split)}
    nodes, fp32 = [], []
    for node in split.graph.node:
        channels = ranges.get(node.input[0]) if node.name in products else None
        outliers = _outliers(channels) if channels is not None else np.zeros(0, dtype=np.int64)
        if len(outliers) == 0:
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(weights[node.input[1]])
        tag = f"{node.name}/outliers"
        keep = np.ones(weight.shape[0], dtype=np.float32)
        keep[outliers] = 0.0
        split.graph.initializer.extend(
            [
                numpy_helper.from_array(keep, f"{tag}/keep"),
                numpy_helper.from_array(outliers, f"{tag}/channels"),
                numpy_helper.from_array(weight[outliers], f"{tag}/weight"),
            ]
        )
        x, w = node.input[0], node.input[1]
        nodes += [
            helper.make_node("Mul", [x, f"{tag}/keep"], [f"{tag}/x_rest"], name=f"{tag}/Mul"),
            # Keeps the product's name: that is how quantisation and the sweep know it.
            helper.make_node("MatMul", [f"{tag}/x_rest", w], [f"{tag}/rest"], name=node.name),
            helper.make_node(
                "Gather", [x, f"{tag}/channels"], [f"{tag}/x"], axis=-1, name=f"{tag}/Gather"
            ),
            helper.make_node(
                "MatMul", [f"{tag}/x", f"{tag}/weight"], [f"{tag}/out"], name=f"{tag}/MatMul"
            ),
            helper.make_node(
                "Add", [f"{tag}/rest", f"{tag}/out"], list(node.output), name=f"{tag}/Add"
            ),
        ]
        fp32.append(f"{tag}/MatMul")
    split.graph.ClearField("node")
    split.graph.node.extend(nodes)
    return split, fp32


def _outliers(channels: np.ndarray) -> np.ndarray:
    """The channels above OUTLIER_RATIO times the median, the largest OUTLIERS_CAP of them."""
    largest = np.argsort(-channels, kind="stable")[:OUTLIERS_CAP]
    chosen = largest[channels[largest] > OUTLIER_RATIO * float(np.median(channels))]
    return np.sort(chosen).astype(np.int64)
