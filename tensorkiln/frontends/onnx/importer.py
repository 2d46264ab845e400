"""ONNX ModelProto -> IR Graph.

All unsupported nodes are collected and reported together in one UnsupportedOpError.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import onnx
import onnx.inliner

from ...errors import GraphError, ModelLoadError, UnsupportedOpError
from ...ir import Graph, NameScope, Node, TensorType, Value, verify
from ...ops import get_op, infer_graph_types
from ...ops.infer import infer_node, merge_types
from .convert import attribute_value, sparse_to_dense, tensor_to_array, type_from_proto
from .functions import function_body, function_opsets, instantiate
from .loader import ModelSource, load_model_proto

_MAX_FUNCTION_DEPTH = 8


class _Importer:
    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.opsets = {("" if o.domain == "ai.onnx" else o.domain): o.version for o in model.opset_import}
        self.problems: list[tuple[str, str, str, str]] = []
        self.hints = _shape_hints(model)
        self.names = NameScope()
        self.counter = 0

    # -- graphs ---------------------------------------------------------------------------
    def graph(self, gp: onnx.GraphProto, outer: dict[str, Value], name: str) -> Graph:
        scope = dict(outer)
        g = Graph(name=gp.name or name, doc=gp.doc_string)
        init_names = set()
        for t in gp.initializer:
            v = Value(t.name, const=tensor_to_array(t))
            scope[t.name] = v
            g.initializers.append(v)
            init_names.add(t.name)
        for st in gp.sparse_initializer:
            v = Value(st.values.name, const=sparse_to_dense(st))
            scope[v.name] = v
            g.initializers.append(v)
            init_names.add(v.name)
        for vi in gp.input:
            if vi.name in init_names:
                continue  # an initializer listed as input (IR < 4): a constant, as in TensorRT
            v = Value(vi.name, type_from_proto(vi.type))
            scope[vi.name] = v
            g.inputs.append(v)
        for vi in gp.value_info:
            t = type_from_proto(vi.type)
            if t is not None:
                self.hints.setdefault(vi.name, t)
        for np_ in gp.node:
            self.node(np_, g, scope, self.opsets, depth=0)
        for vi in gp.output:
            v = scope.get(vi.name)
            if v is None:
                raise GraphError(f"graph '{g.name}': output '{vi.name}' is not produced by any node")
            declared = type_from_proto(vi.type)
            if declared is not None:
                # The model's own output type names its dims; inference may have made up names.
                v.type = merge_types(v.type, declared) if v.type is not None else declared
            g.outputs.append(v)
        return g

    # -- nodes ----------------------------------------------------------------------------
    def node(self, np_: onnx.NodeProto, g: Graph, scope: dict[str, Value], opsets: dict[str, int], depth: int) -> None:
        domain = "" if np_.domain == "ai.onnx" else np_.domain
        opset = opsets.get(domain, 0)
        name = self._unique_name(np_.name or f"{np_.op_type}_{self.counter}")
        self.counter += 1
        where = f"{domain or 'ai.onnx'} opset {opset}"

        inputs: list[Optional[Value]] = []
        for x in np_.input:
            if x == "":
                inputs.append(None)
            elif x in scope:
                inputs.append(scope[x])
            else:
                raise GraphError(f"node '{name}' ({np_.op_type}): input '{x}' is not defined before use")

        if np_.op_type == "Constant" and not domain and len(np_.output) == 1:
            # A numeric Constant is a weight: it becomes an initializer right away.
            value = _constant_value({a.name: attribute_value(a, lambda gp: None) for a in np_.attribute})
            if value is not None:
                v = Value(np_.output[0], const=value)
                g.initializers.append(v)
                scope[v.name] = v
                return

        op = get_op(np_.op_type, domain)
        if op is None:
            if depth < _MAX_FUNCTION_DEPTH and self._expand_function(np_, name, g, scope, opset, inputs, depth):
                return
            self.problems.append((name, np_.op_type, where, "no implementation of this op"))
            self._declare_outputs(np_, scope)
            return
        if opset < op.since_opset:
            self.problems.append((name, np_.op_type, where, f"opset {opset} is older than supported ({op.since_opset})"))
            self._declare_outputs(np_, scope)
            return
        try:
            attrs = {a.name: attribute_value(a, lambda gp, a=a: self.graph(gp, scope, f"{name}/{a.name}"))
                     for a in np_.attribute}
            attrs = op.normalize(attrs, opset)
        except (ValueError, TypeError, KeyError) as exc:
            self.problems.append((name, np_.op_type, where, str(exc)))
            self._declare_outputs(np_, scope)
            return


        # Omitted optional outputs ("") still get a distinct name so the graph stays SSA.
        outputs = [Value(o, self.hints.get(o)) if o else Value(self._unique_name(f"{name}:unused{i}"))
                   for i, o in enumerate(np_.output)]
        node = Node(np_.op_type, inputs, outputs, attrs, name=name, domain=domain, opset=opset)
        reason = op.check(node)
        if reason:
            self.problems.append((name, np_.op_type, where, reason))
        g.nodes.append(node)
        # Typed as we go: expanding a later function op may depend on these types.
        infer_node(node)
        for v in outputs:
            if v.name:
                scope[v.name] = v

    def _expand_function(self, np_: onnx.NodeProto, name: str, g: Graph, scope: dict[str, Value], opset: int,
                         inputs: list[Optional[Value]], depth: int) -> bool:
        types = [_type_proto(v.type) if v is not None and isinstance(v.type, TensorType) else None for v in inputs]
        try:
            fn = function_body(np_, opset, [t for t in types])
        except Exception:  # noqa: BLE001 - schema lookups raise assorted errors for odd nodes
            return False
        if fn is None:
            return False
        fn_opsets = dict(self.opsets)
        fn_opsets.update(function_opsets(fn))
        for body_node in instantiate(np_, fn, name):
            self.node(body_node, g, scope, fn_opsets, depth + 1)
        return True

    def _declare_outputs(self, np_: onnx.NodeProto, scope: dict[str, Value]) -> None:
        for o in np_.output:
            if o:
                scope[o] = Value(o, self.hints.get(o))

    def _unique_name(self, base: str) -> str:
        return self.names.unique(base)


def _type_proto(t: TensorType) -> onnx.TypeProto:
    shape = None if t.shape is None else [d if d is not None else None for d in t.shape]
    return onnx.helper.make_tensor_type_proto(t.dtype.value, shape)


def _constant_value(attrs: dict) -> Optional[np.ndarray]:
    if attrs.get("value") is not None:
        v = attrs["value"]
    elif attrs.get("sparse_value") is not None:
        v = attrs["sparse_value"]
    elif attrs.get("value_float") is not None:
        v = np.array(attrs["value_float"], dtype=np.float32)
    elif attrs.get("value_floats") is not None:
        v = np.array(attrs["value_floats"], dtype=np.float32)
    elif attrs.get("value_int") is not None:
        v = np.array(attrs["value_int"], dtype=np.int64)
    elif attrs.get("value_ints") is not None:
        v = np.array(attrs["value_ints"], dtype=np.int64)
    else:
        return None
    if v.dtype == object:
        return None
    return v


def _shape_hints(model: onnx.ModelProto) -> dict[str, TensorType]:
    """Types onnx's own shape inference finds; used where ours cannot tell."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # noqa: BLE001 - hints only; the model may still be importable
        return {}
    hints = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        t = type_from_proto(vi.type)
        if t is not None:
            hints[vi.name] = t
    return hints


def import_model(model: onnx.ModelProto) -> Graph:
    """Convert a loaded ModelProto to an IR Graph with inferred types."""
    if model.functions:
        try:
            model = onnx.inliner.inline_local_functions(model)
        except Exception as exc:  # noqa: BLE001
            raise ModelLoadError(f"model-local functions could not be inlined: {exc}") from exc
    imp = _Importer(model)
    graph = imp.graph(model.graph, {}, model.graph.name or "main")
    if imp.problems:
        raise UnsupportedOpError(imp.problems)
    graph.opsets = imp.opsets
    infer_graph_types(graph)
    verify(graph)
    return graph


def parse_onnx(source: ModelSource) -> Graph:
    """Load an ONNX model (path, bytes or ModelProto) and convert it to an IR Graph."""
    return import_model(load_model_proto(source))
