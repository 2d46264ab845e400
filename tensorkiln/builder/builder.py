"""The Builder: network in, engine plan out.

Steps: copy the network, apply optimization profiles, infer types, run the pass
pipeline, choose each layer's precision (Casts at the boundaries), choose a tactic per
layer, plan memory, package the plan.
"""

from __future__ import annotations

import copy
import time
from typing import Optional, Union

from ..engine import DeviceInfo, EnginePlan, ProfileRange
from ..errors import BuildError, ConfigError, GraphError
from ..ir import Graph, OptionalType, SequenceType, TensorType, verify
from ..ops import infer_graph_types
from ..passes import default_pipeline, run_pipeline
from ..planner import compute_liveness
from ..planner.memory import peak_activation_bytes
from ..precision import assign_precisions, precision_name
from ..tactics import select_tactic
from ..tactics.device import describe_device, parse_device
from .config import BuilderConfig


class Builder:
    def __init__(self, config: Optional[BuilderConfig] = None):
        self.config = config or BuilderConfig()

    def build(self, network: Union[Graph, "NetworkDefinition"], config: Optional[BuilderConfig] = None) -> EnginePlan:  # noqa: F821
        config = config or self.config
        graph = network.graph if hasattr(network, "graph") and not isinstance(network, Graph) else network
        if not isinstance(graph, Graph):
            raise BuildError(f"Builder.build takes a Graph or NetworkDefinition, not {type(network).__name__}")
        device = parse_device(config.device)
        started = time.perf_counter()
        graph = copy.deepcopy(graph)
        for p in config.profiles:
            p.validate(graph)
        _check_inputs_typed(graph)
        infer_graph_types(graph)
        declared_inputs = [v.name for v in graph.inputs]
        graph, reports = run_pipeline(graph, default_pipeline(config.optimization_level), debug=config.debug)
        precision = assign_precisions(graph, fp16=config.fp16, bf16=config.bf16,
                                      layer_precisions=config.layer_precisions,
                                      constraints=config.precision_constraints)
        if config.debug:
            try:
                verify(graph)
            except GraphError as exc:
                raise GraphError(f"after precision assignment: {exc}") from exc
        _choose_tactics(graph, device.type)
        profiles = tuple({name: ProfileRange(*r) for name, r in p.shapes.items()} for p in config.profiles)
        opt_dims = _opt_dims(graph, profiles)
        memory = {"strategy": "release-after-last-use",
                  "peak_activation_bytes_at_opt": peak_activation_bytes(graph, compute_liveness(graph), opt_dims),
                  "weights_bytes": int(sum(v.const.nbytes for v in graph.initializers if v.const.dtype != object))}
        build_info = {
            "build_seconds": round(time.perf_counter() - started, 4),
            "passes": [r.to_json() for r in reports],
            "precision": precision.to_json(),
        }
        kept = {v.name for v in graph.inputs}
        return EnginePlan(graph=graph, device=DeviceInfo(*describe_device(device)), build_config=config.to_json(),
                          profiles=profiles, memory=memory, build_info=build_info,
                          ignored_inputs=tuple(n for n in declared_inputs if n not in kept))


def _check_inputs_typed(graph: Graph) -> None:
    for v in graph.inputs:
        if v.type is None or (isinstance(v.type, (SequenceType, OptionalType)) and v.type.elem is None):
            raise ConfigError(f"network input '{v.name}' has no type: declare its dtype")


def _choose_tactics(graph: Graph, backend: str) -> None:
    missing = []
    for node in graph.walk():
        choice = select_tactic(node, backend)
        if choice is None:
            missing.append(f"'{node.name}' ({node.op_type})")
            continue
        node.meta["tactic"] = choice.tactic
        if "precision" not in node.meta:  # set by assign_precisions for top-level layers
            out = node.outputs[0].type if node.outputs else None
            node.meta["precision"] = precision_name(out.dtype) if isinstance(out, TensorType) else "?"
    if missing:
        raise BuildError(f"no {backend} tactic for layer(s): {', '.join(missing)}")


def _opt_dims(graph: Graph, profiles: tuple[dict[str, ProfileRange], ...]) -> dict[str, int]:
    """Symbolic dimension name -> its size at the first profile's opt shape."""
    dims: dict[str, int] = {}
    if not profiles:
        return dims
    for v in graph.inputs:
        r = profiles[0].get(v.name)
        if r is None or v.shape is None:
            continue
        for d, size in zip(v.shape, r.opt):
            if isinstance(d, str):
                dims.setdefault(d, size)
    return dims


