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

An engine input can be a host value too (TensorRT's shape-tensor inputs): a small static tensor
(TopK's k, ReduceSum's axes, Reshape's shape given by the caller) that every layer reads only where
its op expects a host value, or through layers run on the host. It stays a CPU tensor from the call
to the layer, so reading it costs no device sync; since its value then shapes the work, it is part
of a CUDA graph's signature (runtime.py), as an input's shape is.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..ir import Graph, Node, TensorType, free_names_of_subgraphs
from ..ir.shape import is_static, numel
from ..ops import get_op

# Shape values are a handful of dims; a bound keeps bigger shape-derived data on the device.
MAX_HOST_ELEMENTS = 1024
# Layers reading only the shapes of their inputs, never their data.
_SHAPE_READERS = frozenset({"Shape", "Size"})


@dataclass(frozen=True)
class HostValues:
    """Indices of the layers run on the host, the names of the values they give, and the
    indices of the graph inputs read on the host (their names are in `values` too)."""

    layers: frozenset[int]
    values: frozenset[str]
    inputs: frozenset[int] = frozenset()

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


def _host_layers(graph: Graph, seed: set[str]) -> tuple[set[int], set[str]]:
    layers: set[int] = set()
    values = set(seed)
    for i, node in enumerate(graph.nodes):
        if _runs_on_host(node, values):
            layers.add(i)
            values.update(v.name for v in node.outputs)
    return layers, values


def _host_read_slots(node: Node) -> tuple[int, ...]:
    op = get_op(node.op_type, node.domain)
    return op.host_inputs if op is not None else ()


def find_host_values(graph: Graph) -> HostValues:
    """The layers of `graph` (in order) that compute shape values, those values, and the graph
    inputs read only as host values: by ops that read them on the host, directly or through
    layers run on the host. An input whose value reaches device data stays a device input (as
    a host value it would make a CUDA graph per value it takes)."""
    outputs = {v.name for v in graph.outputs}
    readers: dict[str, list[tuple[int, int]]] = {}
    in_subgraphs: set[str] = set()
    for i, node in enumerate(graph.nodes):
        for slot, v in enumerate(node.inputs):
            if v is not None:
                readers.setdefault(v.name, []).append((i, slot))
        in_subgraphs |= free_names_of_subgraphs(node)
    candidates = {v.name: k for k, v in enumerate(graph.inputs)
                  if v.name in readers and v.name not in outputs and v.name not in in_subgraphs
                  and _small_static_tensors([v])}
    while True:
        layers, values = _host_layers(graph, set(candidates))
        stray = [name for name in candidates if _reaches_device_data(graph, name, layers, readers, outputs)]
        if not stray:
            return HostValues(frozenset(layers), frozenset(values), frozenset(candidates.values()))
        # Small inputs read as data (a toy model's whole input) can make a layer "host" that is
        # not shape arithmetic and so make its host-read inputs stray too: drop the ones read as
        # data first and look again (the layers they fed on the host are recomputed without them).
        as_data = [name for name in stray
                   if any(slot not in _host_read_slots(graph.nodes[i]) for i, slot in readers[name])]
        for name in as_data or stray:
            del candidates[name]


def _reaches_device_data(graph: Graph, name: str, layers: set[int], readers: dict[str, list[tuple[int, int]]],
                         outputs: set[str]) -> bool:
    """Whether `name`, or a value host layers compute from it as data (Cast, Add: not a shape
    they read), is read as device data or is a graph output. Read as a shape (a host slot), the
    value ends there: what the layer gives is its own."""
    pending, seen = [name], {name}
    while pending:
        value = pending.pop()
        if value in outputs:
            return True
        for i, slot in readers.get(value, ()):
            if slot in _host_read_slots(graph.nodes[i]):
                continue
            if i not in layers:
                return True
            for out in graph.nodes[i].outputs:
                if out.name not in seen:
                    seen.add(out.name)
                    pending.append(out.name)
    return False


__all__ = ["HostValues", "MAX_HOST_ELEMENTS", "find_host_values"]
