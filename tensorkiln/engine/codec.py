"""Graph <-> JSON-able data plus a dict of named arrays (the weights).

Attributes are tagged where JSON alone is ambiguous: {"$tensor": key}, {"$graph": ...},
{"$bytes": base64}, {"$type": ...}, {"$strings": [...], "shape": [...]}.
"""

from __future__ import annotations

import base64
from typing import Any, Optional

import numpy as np

from ..errors import EngineFormatError
from ..ir import DType, Graph, Node, OptionalType, SequenceType, TensorType, Value, ValueType


def type_to_json(t: Optional[ValueType]) -> Optional[dict]:
    if t is None:
        return None
    if isinstance(t, SequenceType):
        return {"sequence": type_to_json(t.elem)}
    if isinstance(t, OptionalType):
        return {"optional": type_to_json(t.elem)}
    return {"dtype": t.dtype.short, "shape": None if t.shape is None else list(t.shape)}


def type_from_json(d: Optional[dict]) -> Optional[ValueType]:
    if d is None:
        return None
    if "sequence" in d:
        return SequenceType(type_from_json(d["sequence"]))
    if "optional" in d:
        return OptionalType(type_from_json(d["optional"]))
    shape = None if d["shape"] is None else tuple(d["shape"])
    return TensorType(DType.parse(d["dtype"]), shape)


class GraphEncoder:
    def __init__(self) -> None:
        self.weights: dict[str, np.ndarray] = {}

    def _array(self, a: np.ndarray) -> dict:
        if a.dtype == object:
            return {"$strings": [str(x) for x in a.reshape(-1)], "shape": list(a.shape)}
        key = f"t{len(self.weights)}"
        self.weights[key] = a
        return {"$tensor": key}

    def _attr(self, v: Any) -> Any:
        if isinstance(v, np.ndarray):
            return self._array(v)
        if isinstance(v, Graph):
            return {"$graph": self.graph(v)}
        if isinstance(v, bytes):
            return {"$bytes": base64.b64encode(v).decode()}
        if isinstance(v, (TensorType, SequenceType, OptionalType)):
            return {"$type": type_to_json(v)}
        if isinstance(v, DType):
            return {"$dtype": v.short}
        if isinstance(v, (list, tuple)):
            return [self._attr(x) for x in v]
        if isinstance(v, (np.integer,)):
            return int(v)
        if isinstance(v, (np.floating,)):
            return float(v)
        return v

    def graph(self, g: Graph) -> dict:
        return {
            "name": g.name,
            "inputs": [{"name": v.name, "type": type_to_json(v.type)} for v in g.inputs],
            "outputs": [v.name for v in g.outputs],
            "output_types": [type_to_json(v.type) for v in g.outputs],
            "constants": [{"name": v.name, **self._array(v.const)} for v in g.initializers],
            "nodes": [self.node(n) for n in g.nodes],
            "opsets": g.opsets,
        }

    def node(self, n: Node) -> dict:
        return {
            "name": n.name, "op": n.op_type, "domain": n.domain, "opset": n.opset,
            "inputs": [None if v is None else v.name for v in n.inputs],
            "outputs": [{"name": v.name, "type": type_to_json(v.type)} for v in n.outputs],
            "attrs": {k: self._attr(v) for k, v in n.attrs.items()},
            "meta": n.meta,
        }


class GraphDecoder:
    def __init__(self, weights: dict[str, np.ndarray]):
        self.weights = weights

    def _array(self, d: dict) -> np.ndarray:
        if "$strings" in d:
            return np.array(d["$strings"], dtype=object).reshape(d["shape"])
        try:
            return self.weights[d["$tensor"]]
        except KeyError:
            raise EngineFormatError(f"engine plan refers to weight '{d['$tensor']}' that it does not contain") from None

    def _attr(self, v: Any, scope: dict[str, Value]) -> Any:
        if isinstance(v, dict):
            if "$tensor" in v or "$strings" in v:
                return self._array(v)
            if "$graph" in v:
                return self.graph(v["$graph"], scope)
            if "$bytes" in v:
                return base64.b64decode(v["$bytes"])
            if "$type" in v:
                return type_from_json(v["$type"])
            if "$dtype" in v:
                return DType.parse(v["$dtype"])
        if isinstance(v, list):
            return [self._attr(x, scope) for x in v]
        return v

    def graph(self, d: dict, outer: Optional[dict[str, Value]] = None) -> Graph:
        scope = dict(outer or {})
        g = Graph(name=d["name"], opsets=dict(d.get("opsets", {})))
        for c in d["constants"]:
            v = Value(c["name"], const=self._array(c))
            g.initializers.append(v)
            scope[v.name] = v
        for i in d["inputs"]:
            v = Value(i["name"], type_from_json(i["type"]))
            g.inputs.append(v)
            scope[v.name] = v
        for nd in d["nodes"]:
            inputs = []
            for name in nd["inputs"]:
                if name is None:
                    inputs.append(None)
                elif name in scope:
                    inputs.append(scope[name])
                else:
                    raise EngineFormatError(f"engine plan layer '{nd['name']}' reads undefined value '{name}'")
            attrs = {k: self._attr(v, scope) for k, v in nd["attrs"].items()}
            outputs = [Value(o["name"], type_from_json(o["type"])) for o in nd["outputs"]]
            g.nodes.append(Node(nd["op"], inputs, outputs, attrs, name=nd["name"], domain=nd["domain"],
                                opset=nd["opset"], meta=dict(nd.get("meta", {}))))
            for v in outputs:
                scope[v.name] = v
        for name in d["outputs"]:
            if name not in scope:
                raise EngineFormatError(f"engine plan output '{name}' is not produced by any layer")
            g.outputs.append(scope[name])
        return g
