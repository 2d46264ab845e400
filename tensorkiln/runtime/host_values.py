"""Which layers of a GPU engine compute shape values, to be run on the host (TensorRT's shape tensors).

An engine built for a range of shapes keeps the exporter's shape arithmetic: Shape, then
Gather, Unsqueeze, Concat (and Add, Mul, Where...) into the target of each Reshape. BERT-base
exported with dynamic batch and sequence has 184 such layers. On the device each is a kernel
launch of a few int64s, every Reshape reading its target back to the host is a device sync, and
Shape writing its host-known dims to the device is a host-to-device copy that CUDA-graph capture
refuses: the whole engine ran eagerly, waiting on the device two dozen times per call.

A value is a host value when the layer giving it reads only the shapes of device tensors
(Shape, Size), or only host values and small constants, and every output has a static shape of
at most MAX_HOST_ELEMENTS elements. Such a value is a function of the input shapes alone, so a
CUDA graph captured for one input-shape signature stays right for every call with it. Those
layers run the op's reference on the CPU: no launch, no sync, nothing in the graph.

A layer that reads a host value where its op expects a host value (`Op.host_inputs`: Reshape's
shape, Slice's starts) takes the CPU tensor as is; any other reader gets a device copy, made once
per distinct content (see GraphExecutor).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..ir import Graph, Node, TensorType
from ..ir.shape import is_static, numel
from ..ops import get_op

# Shape values are a handful of dims; a bound keeps bigger shape-derived data on the device.
MAX_HOST_ELEMENTS = 1024
# Layers reading only the shapes of their inputs, never their data.
_SHAPE_READERS = frozenset({"Shape", "Size"})


@dataclass(frozen=True)
class HostValues:
    """Indices of the layers run on the host, and the names of the values they give."""

    layers: frozenset[int]
    values: frozenset[str]

    def __bool__(self) -> bool:
        return bool(self.layers)


def _small_static_tensors(values: list) -> bool:
    return all(isinstance(v.type, TensorType) and v.shape is not None and is_static(v.shape)
               and numel(v.shape) <= MAX_HOST_ELEMENTS for v in values)


def _is_onnx(node: Node) -> bool:
    return node.domain in ("", "ai.onnx")


def _runs_on_host(node: Node, host: set[str]) -> bool:
    if any(True for _ in node.subgraphs()) or not node.outputs or not _small_static_tensors(node.outputs):
        return False
    op = get_op(node.op_type, node.domain)
    if op is None or not op.deterministic:
        return False
    if _is_onnx(node) and node.op_type in _SHAPE_READERS:
        return True
    inputs = [v for v in node.inputs if v is not None]
    if not inputs or not any(v.name in host for v in inputs):
        return False
    return all(v.name in host or (v.const is not None and v.const.dtype != object and v.const.size <= MAX_HOST_ELEMENTS)
               for v in inputs)


def find_host_values(graph: Graph) -> HostValues:
    """The layers of `graph` (in order) that compute shape values, and those values."""
    layers: set[int] = set()
    values: set[str] = set()
    for i, node in enumerate(graph.nodes):
        if _runs_on_host(node, values):
            layers.add(i)
            values.update(v.name for v in node.outputs)
    return HostValues(frozenset(layers), frozenset(values))


__all__ = ["HostValues", "MAX_HOST_ELEMENTS", "find_host_values"]
