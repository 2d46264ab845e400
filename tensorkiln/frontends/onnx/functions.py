"""Expanding ONNX function ops (ops whose schema defines them as a subgraph of other ops).

Many newer ONNX ops ship a function body in their schema; where tensorkiln has no native
definition, the importer replaces the node with that body, as onnxruntime does.
"""

from __future__ import annotations

from typing import Optional

import onnx
from onnx import defs


def function_body(node: onnx.NodeProto, opset: int, input_types: list[Optional[onnx.TypeProto]]) -> Optional[onnx.FunctionProto]:
    """The schema's function body for this node at this opset, or None if it has none."""
    domain = node.domain or ""
    try:
        schema = defs.get_schema(node.op_type, opset, domain)
    except defs.SchemaError:
        return None
    versions = [v for v in schema.function_opset_versions if v <= opset]
    if versions:
        return onnx.FunctionProto.FromString(schema.get_function_with_opset_version(max(versions)))
    versions = [v for v in schema.context_dependent_function_opset_versions if v <= opset]
    if versions and all(t is not None for t in input_types):
        data = schema.get_context_dependent_function_with_opset_version(
            max(versions), node.SerializeToString(), [t.SerializeToString() for t in input_types])
        if data:
            return onnx.FunctionProto.FromString(data)
    return None


def instantiate(node: onnx.NodeProto, fn: onnx.FunctionProto, prefix: str) -> list[onnx.NodeProto]:
    """The function's nodes with formal names bound to the node's actual inputs, outputs
    and attributes; internal names get a unique prefix."""
    rename: dict[str, str] = {}
    for formal, actual in zip(fn.input, node.input):
        rename[formal] = actual
    for formal in fn.input[len(node.input):]:
        rename[formal] = ""
    for formal, actual in zip(fn.output, node.output):
        rename[formal] = actual
    given = {a.name: a for a in node.attribute}
    defaults = {a.name: a for a in fn.attribute_proto}

    def name_of(n: str) -> str:
        if n == "":
            return ""
        if n not in rename:
            rename[n] = f"{prefix}/{n}"
        return rename[n]

    def bind_attrs(src: onnx.NodeProto, dst: onnx.NodeProto) -> None:
        del dst.attribute[:]
        for a in src.attribute:
            if a.ref_attr_name:
                ref = given.get(a.ref_attr_name) or defaults.get(a.ref_attr_name)
                if ref is None:
                    continue
                b = onnx.AttributeProto()
                b.CopyFrom(ref)
                b.name = a.name
                dst.attribute.append(b)
            else:
                dst.attribute.append(a)

    def rename_captures(graph: onnx.GraphProto) -> None:
        # A subgraph attribute may read values the function defines; they were renamed.
        local = {x.name for x in graph.input} | {t.name for t in graph.initializer}
        local |= {o for n in graph.node for o in n.output}
        for n in graph.node:
            for j, x in enumerate(n.input):
                if x and x not in local and x in rename:
                    n.input[j] = rename[x]
            for a in n.attribute:
                for g in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                    rename_captures(g)
        for o in graph.output:
            if o.name not in local and o.name in rename:
                o.name = rename[o.name]

    out = []
    for i, body_node in enumerate(fn.node):
        n = onnx.NodeProto()
        n.CopyFrom(body_node)
        del n.input[:]
        del n.output[:]
        n.input.extend(name_of(x) for x in body_node.input)
        n.output.extend(name_of(x) for x in body_node.output)
        n.name = f"{prefix}/{body_node.name or body_node.op_type + '_' + str(i)}"
        bind_attrs(body_node, n)
        for a in n.attribute:
            for g in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                rename_captures(g)
        out.append(n)
    return out


def function_opsets(fn: onnx.FunctionProto) -> dict[str, int]:
    return {("" if o.domain == "ai.onnx" else o.domain): o.version for o in fn.opset_import}
