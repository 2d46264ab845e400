"""The Builder: network in, engine plan out.

Steps: copy the network, apply optimization profiles, infer types, run the pass
pipeline, choose each layer's precision (Casts at the boundaries), choose a tactic per
layer, plan memory, package the plan.
"""

from __future__ import annotations

import contextlib
import copy
import time
from typing import Any, Optional, Union

import torch

from ..engine import DeviceInfo, EnginePlan, ProfileRange
from ..errors import BuildError, ConfigError, GraphError
from ..ir import Graph, Node, OptionalType, SequenceType, TensorType, is_static, verify
from ..ops import infer_graph_types
from ..passes import default_pipeline, run_pipeline
from ..planner import compute_liveness, memory_summary
from ..planner.arena import value_nbytes
from ..planner.memory import peak_activation_bytes
from ..precision import assign_precisions, precision_name
from ..precision.io_formats import boundary_dtypes
from ..tactics import select_tactic
from ..tactics.autotune import TuningOptions, timing_environment, tune_graph
from ..tactics.select import TacticChoice, may_alias_inputs, writes_arena
from ..tactics.tf32 import tf32_scope
from ..tactics.timing_cache import TimingCache
from ..tactics.device import describe_device, parse_device
from .config import BuilderConfig
from .streams import plan_streams


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
        input_dtypes, output_dtypes = boundary_dtypes(graph, config.input_formats, config.output_formats)
        _fix_dims_the_profiles_fix(graph, config.profiles)
        infer_graph_types(graph)
        declared_inputs = [v.name for v in graph.inputs]
        graph, reports = run_pipeline(graph, default_pipeline(config.optimization_level), debug=config.debug,
                                      dim_bounds=_dim_bounds(graph, config.profiles))
        precision = assign_precisions(graph, fp16=config.fp16, bf16=config.bf16,
                                      layer_precisions=config.layer_precisions,
                                      constraints=config.precision_constraints,
                                      input_dtypes=input_dtypes, output_dtypes=output_dtypes)
        if config.debug:
            try:
                verify(graph)
            except GraphError as exc:
                raise GraphError(f"after precision assignment: {exc}") from exc
        profiles = tuple({name: ProfileRange(*r) for name, r in p.shapes.items()} for p in config.profiles)
        graph, device_reports = run_pipeline(graph, _device_passes(device, config, _fewest_at_opt(graph, profiles)),
                                             debug=config.debug, dim_bounds=_dim_bounds(graph, config.profiles))
        reports += device_reports
        tactics, streams = _choose_tactics(graph, device, config)
        opt_dims = _opt_dims(graph, profiles)
        memory = {"strategy": "release-after-last-use",
                  "peak_activation_bytes_at_opt": peak_activation_bytes(graph, compute_liveness(graph), opt_dims),
                  "weights_bytes": int(sum(v.const.nbytes for v in graph.initializers if v.const.dtype != object)),
                  **memory_summary(graph, opt_dims, _max_dims(graph, profiles), lambda dims: _sizes_at(graph, dims),
                                   **_arena_members(graph, device.type))}
        build_info = {
            "build_seconds": round(time.perf_counter() - started, 4),
            "passes": [r.to_json() for r in reports],
            "precision": precision.to_json(),
            "tactics": tactics,
            **({"streams": streams} if streams is not None else {}),
        }
        kept = {v.name for v in graph.inputs}
        return EnginePlan(graph=graph, device=DeviceInfo(*describe_device(device)), build_config=config.to_json(),
                          profiles=profiles, memory=memory, build_info=build_info,
                          ignored_inputs=tuple(n for n in declared_inputs if n not in kept))


def _device_passes(device: torch.device, config: BuilderConfig, opt_dims: dict[str, int]) -> tuple[Any, ...]:
    """Fusions that pay only where a device's kernel computes the fused layer: run after precision
    assignment, when the layers' dtypes are known. A CUDA build fuses each merged Q/K/V projection into
    its attention where the fused Triton kernel takes the layer and its tiles fill the GPU at the opt
    shapes (`opt_dims`), and Triton tactics are allowed."""
    if device.type != "cuda" or config.optimization_level <= 0 or "triton" in config.disabled_tactic_sources:
        return ()
    from ..passes.projected_attention import fuse_projected_attention as fuse
    from ..tactics.cuda.projected_attention import fusion_reason

    def fuse_projected_attention(graph: Graph, ctx: Any) -> Graph:
        return fuse(graph, ctx, lambda node: fusion_reason(node, opt_dims))
    return (fuse_projected_attention,)


def _fewest_at_opt(graph: Graph, profiles: tuple[dict[str, ProfileRange], ...]) -> dict[str, int]:
    """Symbolic dimension name -> its smallest size at any profile's opt shape."""
    dims: dict[str, int] = {}
    for p in profiles:
        for d, size in _opt_dims(graph, (p,)).items():
            dims[d] = min(dims.get(d, size), size)
    return dims


def _arena_members(graph: Graph, backend: str) -> dict[str, Any]:
    """Which activations the arena holds: the outputs of layers whose tactics write into the
    memory the runtime hands them, except values a layer on an auxiliary stream makes or reads
    (the arena's reuse follows the layer order, which only the caller's stream keeps); and which
    layers' outputs may alias their inputs (their inputs then live as long as their outputs)."""
    on_aux = frozenset(v.name for n in graph.nodes if n.meta.get("stream", 0) != 0
                       for v in list(n.inputs) + list(n.outputs) if v is not None)
    return {"include": lambda node: writes_arena(node, backend), "exclude": on_aux,
            "may_alias": lambda node: may_alias_inputs(node, backend)}


def _max_dims(graph: Graph, profiles: tuple[dict[str, ProfileRange], ...]) -> dict[str, int]:
    """Symbolic dimension -> its largest size over every profile's max shape."""
    dims: dict[str, int] = {}
    for p in profiles:
        for v in graph.inputs:
            r = p.get(v.name)
            if r is None or v.shape is None:
                continue
            for d, size in zip(v.shape, r.max):
                if isinstance(d, str):
                    dims[d] = max(dims.get(d, 0), size)
    return dims


def _dim_bounds(graph: Graph, profiles: tuple) -> dict[str, int]:
    """Symbolic input dim -> the largest size any profile lets it take, for the dims every
    profile bounds on every input that has them (an unbounded one is left out)."""
    bounds: dict[str, int] = {}
    unbounded: set[str] = set()
    for v in graph.inputs:
        if not isinstance(v.type, TensorType) or v.type.shape is None:
            continue
        for axis, d in enumerate(v.type.shape):
            if not isinstance(d, str):
                continue
            ranges = [p.shapes.get(v.name) for p in profiles]
            if not ranges or any(r is None for r in ranges):
                unbounded.add(d)
                continue
            bounds[d] = max(bounds.get(d, 0), *(r[2][axis] for r in ranges))
    return {d: b for d, b in bounds.items() if d not in unbounded}


def _sizes_at(graph: Graph, dims: dict[str, int]) -> dict[str, int]:
    """Value sizes with the inputs at these dims: types re-inferred in place, then restored,
    so dims derived inside the graph (exporters' 'unk__N') become numbers."""
    saved = [(v, v.type) for v in graph.inputs] + [(v, v.type) for n in graph.nodes for v in n.outputs]
    try:
        for v in graph.inputs:
            if isinstance(v.type, TensorType) and v.type.shape is not None:
                v.type = TensorType(v.type.dtype, tuple(dims.get(d, d) if isinstance(d, str) else d
                                                        for d in v.type.shape))
        infer_graph_types(graph)
        return {v.name: b for v, _ in saved if (b := value_nbytes(v.type, dims)) is not None}
    finally:
        for v, t in saved:
            v.type = t


def _fix_dims_the_profiles_fix(graph: Graph, profiles: tuple) -> None:
    """A dynamic input dimension that every profile pins to one size (min == max) becomes that
    number, as in a TensorRT engine built for it: Shape arithmetic on it then folds at build
    time instead of running (and syncing with the host) at every inference."""
    if not profiles:
        return
    for v in graph.inputs:
        if not isinstance(v.type, TensorType) or v.type.shape is None:
            continue
        ranges = [p.shapes.get(v.name) for p in profiles]
        if any(r is None for r in ranges):
            continue
        dims = list(v.type.shape)
        for axis, dim in enumerate(dims):
            if isinstance(dim, int):
                continue
            sizes = {r[0][axis] for r in ranges} | {r[2][axis] for r in ranges}
            if len(sizes) == 1:
                dims[axis] = sizes.pop()
        v.type = TensorType(v.type.dtype, tuple(dims))


def _check_inputs_typed(graph: Graph) -> None:
    for v in graph.inputs:
        if v.type is None or (isinstance(v.type, (SequenceType, OptionalType)) and v.type.elem is None):
            raise ConfigError(f"network input '{v.name}' has no type: declare its dtype")


def _choose_tactics(graph: Graph, device: torch.device,
                    config: BuilderConfig) -> tuple[dict[str, Any], Optional[dict[str, Any]]]:
    """Every layer's tactic: the default choice, then the auto-tuner's timing at the profiles'
    opt shapes (or the fixed shapes) where a layer has several candidates; then, on CUDA, the
    branches that run faster on auxiliary streams. Returns the tuning summary and the stream
    report (None on the CPU) for build_info."""
    backend = device.type
    missing = []
    choices: dict[Node, TacticChoice] = {}
    for node in graph.walk():
        choice = select_tactic(node, backend)
        if choice is None:
            missing.append(f"'{node.name}' ({node.op_type})")
            continue
        choices[node] = choice
    if missing:
        raise BuildError(f"no {backend} tactic for layer(s): {', '.join(missing)}")
    cache: Optional[TimingCache] = None
    if config.builder_cache:
        cache = TimingCache.load(config.timing_cache_file) if config.timing_cache_file else TimingCache()
    options = TuningOptions(avg_timing=config.avg_timing, min_timing=config.min_timing,
                            disabled_sources=config.disabled_tactic_sources,
                            workspace_limit_bytes=config.workspace_bytes, progress=config.tuning_progress)
    # EnginePlan.library_version defaults to the running tensorkiln's version (builder/ may not
    # import version.py directly).
    environment = timing_environment(device, EnginePlan.library_version, tf32=config.tf32)
    shapes = _tuning_shapes(graph, config)
    streams = None
    # Candidates are timed in the engine's math: TF32 GEMMs and convolutions are other kernels.
    with tf32_scope(config.tf32) if backend == "cuda" else contextlib.nullcontext():
        summary = tune_graph(graph, device, choices, shapes, options, cache, environment)
        if backend == "cuda":
            streams = plan_streams(graph, device, config, shapes, summary, options, cache, environment)
    for node in graph.walk():
        if "precision" not in node.meta:  # set by assign_precisions for top-level layers
            out = node.outputs[0].type if node.outputs else None
            node.meta["precision"] = precision_name(out.dtype) if isinstance(out, TensorType) else "?"
    result = summary.to_json()
    result.update(avg_timing=config.avg_timing, min_timing=config.min_timing,
                  disabled_sources=list(config.disabled_tactic_sources), workspace_bytes=config.workspace_bytes)
    if cache is not None:
        written = cache.added
        cache.save()
        result["timing_cache"] = {"file": config.timing_cache_file, "hits": cache.hits, "misses": cache.misses,
                                  "entries_added": written}
    return result, streams


def _tuning_shapes(graph: Graph, config: BuilderConfig) -> Union[list[dict[str, tuple[int, ...]]], str]:
    """{input: shape} per profile to tune at (each profile's opt), or why there are none. Inputs
    a profile leaves out take their static shape (or sizes of symbols other inputs fix)."""
    if config.profiles:
        return [{name: tuple(r[1]) for name, r in p.shapes.items()} for p in config.profiles]
    dynamic = [v.name for v in graph.inputs if isinstance(v.type, TensorType) and not is_static(v.shape)]
    if dynamic:
        return (f"input(s) {', '.join(repr(n) for n in dynamic)} are dynamic and no optimization profile gives "
                f"shapes to tune at: layers keep their default tactic")
    return [{}]


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


