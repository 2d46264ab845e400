"""The auto-tuner: time every applicable tactic of every layer on the device, keep the fastest.

Tactics are tuned at each optimization profile's opt shape (or at the network's fixed
shapes). The graph runs layer by layer on seeded random inputs at those shapes
(floats ~ N(0, 1), integers in [0, 8) or below the size of the axis a Gather indexes
with them, booleans 0/1); every later value is real, computed by the chosen tactics. At
each layer with more than one applicable candidate, each candidate runs on the layer's
actual inputs: one call whose output is kept (and whose shape and dtype must match the
reference's), one warm-up call, then `measurements` (max(min_timing, 3)) measurements of
`avg_timing` back-to-back calls each (trtexec's --avgTiming, default 8, and --minTiming,
default 1); a candidate's time is the median of the per-call means. CUDA is timed with
CUDA events on the current stream, the CPU with time.perf_counter.

On CUDA, when the network's weights together exceed the L2 cache, a layer with large
constant inputs is timed on copies of them taken in turn (cold_constant_copies): each call
reads its weights from memory, as in the engine, where the other layers' weights evict them.

The fastest candidate wins and its output feeds the layers after it, so a tactic that
leaves a different memory layout (channels_last from an NHWC convolution, say) is what
the next layer's candidates are timed on: converting back is the next layer's cost.
The choice is greedy, layer by layer, not a search over whole layout chains as TensorRT
does. With several profiles every profile's graph runs in lock step and the candidate
with the lowest mean time over the profiles wins (a layer has one tactic per engine).

A layer with a single applicable candidate is never timed. Layers inside subgraphs
(If/Loop/Scan bodies) keep their default tactic. A candidate that raises is left out,
with the reason; if the reference tactic itself fails on the random inputs (an index
input the random values do not suit, a shape tensor fed as input), tuning stops there
and that layer and the ones after it keep their default tactic; the build summary says
so. The timing cache (timing_cache.py) answers for layers it knows: their candidates are
not timed again, only the winner runs to feed the layers after it.
"""

from __future__ import annotations

import math
import platform
import statistics
import sys
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from ..errors import BuildError, ConfigError
from ..ir import DType, Graph, Node, TensorType, free_names_of_subgraphs, numpy_to_torch
from ..ops import RunContext, get_op
from .device import describe_device
from .graph_capture import capture
from . import registry as _registry
from .registry import REFERENCE, Tactic, find_tactic
from .select import TacticChoice
from .timing_cache import CacheEntry, TimingCache, layer_key

DEFAULT_AVG_TIMING = 8  # trtexec --avgTiming
DEFAULT_MIN_TIMING = 1  # trtexec --minTiming
MIN_MEASUREMENTS = 3    # a median of fewer says little
# Most copies of a layer's weights timed in turn to read them cold (cold_constant_copies).
MAX_CONSTANT_COPIES = 128
INDEX_HIGH = 8          # random integer inputs lie in [0, INDEX_HIGH) unless a Gather needs fewer

# Tactic sources --tacticSources knows besides those registered tactics declare. TensorRT's
# EDGE_MASK_CONVOLUTIONS and JIT_CONVOLUTIONS are accepted (no tensorkiln tactic comes from
# them) so trtexec command lines keep working.
BUILTIN_SOURCES = ("torch", "cublas", "cublaslt", "cudnn", "triton", "edgemaskconvolutions", "jitconvolutions")


def _source_key(name: str) -> str:
    return name.strip().lower().replace("_", "")


def known_tactic_sources() -> tuple[str, ...]:
    found = set(BUILTIN_SOURCES)
    for tactics in _registry._EXTRA.values():
        found.update(_source_key(t.source) for t in tactics)
    return tuple(sorted(found))


def parse_tactic_sources(spec: str) -> tuple[str, ...]:
    """trtexec's --tacticSources ('-CUDNN,+CUBLAS,-TRITON'): entries apply in order to the default
    (every source enabled); returns the sources left disabled. Names are case-insensitive and
    underscores are ignored (CUBLAS_LT = cublaslt)."""
    disabled: set[str] = set()
    known = known_tactic_sources()
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        sign, name = item[0], _source_key(item[1:])
        if sign not in "+-" or not name:
            raise ConfigError(f"--tacticSources entry '{item}' must be +NAME or -NAME (e.g. -CUDNN,+CUBLAS)")
        if name not in known:
            raise ConfigError(f"unknown tactic source '{item[1:]}' in --tacticSources (known: "
                              f"{', '.join(s.upper() for s in known)})")
        if sign == "-":
            disabled.add(name)
        else:
            disabled.discard(name)
    return tuple(sorted(disabled))


def workspace_need(tactic: Tactic, node: Node, inputs: Sequence[Any]) -> Optional[int]:
    """Scratch memory a tactic declares for these inputs, in bytes (None: it declares none).

    A tactic declares it with a `workspace_bytes` attribute: an int, or a function
    (node, inputs) -> int."""
    declared = getattr(tactic, "workspace_bytes", None)
    if declared is None:
        return None
    return int(declared(node, inputs) if callable(declared) else declared)


def timing_environment(device: torch.device, library_version: str, **settings: Any) -> dict[str, Any]:
    """What timings depend on besides the layer: the device, the library versions, math settings."""
    _, name, capability = describe_device(device)
    env: dict[str, Any] = {"device": name, "tensorkiln": library_version, "torch": torch.__version__}
    if capability is not None:
        env["compute_capability"] = f"{capability[0]}.{capability[1]}"
        # Times taken in CUDA graphs are not comparable with eager ones (measure()).
        env["timing"] = "cuda_graph"
    else:
        env["cpu"] = f"{platform.machine()} {platform.processor()}".strip()
        env["threads"] = torch.get_num_threads()
    env.update(settings)
    return env


@dataclass(frozen=True)
class TuningOptions:
    avg_timing: int = DEFAULT_AVG_TIMING
    min_timing: int = DEFAULT_MIN_TIMING
    # Tactic sources to leave out (normalized names, see parse_tactic_sources).
    disabled_sources: tuple[str, ...] = ()
    # Candidates declaring more workspace than this are left out (None: no limit).
    workspace_limit_bytes: Optional[int] = None
    # Progress bar on stderr: None = only when stderr is a terminal.
    progress: Optional[bool] = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.avg_timing < 1:
            raise ConfigError(f"avg_timing (--avgTiming) must be >= 1, got {self.avg_timing}")
        if self.min_timing < 1:
            raise ConfigError(f"min_timing (--minTiming) must be >= 1, got {self.min_timing}")
        if self.workspace_limit_bytes is not None and self.workspace_limit_bytes < 0:
            raise ConfigError(f"workspace limit must be >= 0 bytes, got {self.workspace_limit_bytes}")

    @property
    def measurements(self) -> int:
        return max(self.min_timing, MIN_MEASUREMENTS)


@dataclass
class TuningSummary:
    """What tuning did, for build_info."""

    shapes: list[dict[str, list[int]]] = field(default_factory=list)
    layers: int = 0
    layers_with_choice: int = 0
    timed_layers: int = 0
    cached_layers: int = 0
    candidates_timed: int = 0
    seconds: float = 0.0
    # Why nothing was tuned, or where tuning stopped (None when it ran through).
    skipped: Optional[str] = None
    stopped: Optional[str] = None
    chosen: Counter = field(default_factory=Counter)
    # CUDA: candidates are timed inside CUDA graphs until one cannot be captured (then why).
    graph_timing: bool = False
    graph_timing_off: Optional[str] = None
    # CUDA: the network's weights exceed L2, so layers were timed on cold weights (cold_constant_copies).
    cold_weights: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"tuned_at": self.shapes, "layers": self.layers, "layers_with_choice": self.layers_with_choice,
                "timed_layers": self.timed_layers, "cached_layers": self.cached_layers,
                "candidates_timed": self.candidates_timed, "seconds": round(self.seconds, 4),
                "skipped": self.skipped, "stopped": self.stopped,
                "timing": "cuda_graph" if self.graph_timing else ("eager" + (
                    f" ({self.graph_timing_off})" if self.graph_timing_off else "")),
                "cold_weights": self.cold_weights,
                "tactics": dict(sorted(self.chosen.items()))}


# The timing-cache mode of the layer whose candidate could not be captured: timed eagerly from it on.
CAPTURE_FAILED = "eager (a candidate could not be captured)"


class _CannotTune(Exception):
    """The network's inputs cannot be made up (no shapes, a dtype without torch support...)."""


class _LayerFailed(Exception):
    """A layer's reference tactic (or every candidate) failed on the tuning inputs."""


Shapes = Mapping[str, Sequence[int]]


def tune_graph(graph: Graph, device: torch.device, choices: Mapping[Node, TacticChoice],
               shapes: Union[Sequence[Shapes], str], options: TuningOptions, cache: Optional[TimingCache],
               environment: Mapping[str, Any]) -> TuningSummary:
    """Set node.meta["tactic"] on every layer (subgraphs included) and, on tuned layers,
    "tactic_time_ms", "tactic_times_ms" (every timed candidate) and "tactic_rejected", at the
    first profile's shapes. Where another profile's fastest candidate differs, the layer also
    gets "profile_tactics" (the tactic per profile) and "profile_tactic_times_ms".

    `choices` holds each layer's default choice and the candidates considered (select_tactic);
    `shapes` is one {input: shape} per profile to tune at, or the reason no shapes are known.
    """
    started = time.perf_counter()
    backend = device.type
    summary = TuningSummary(layers=len(graph.nodes))
    # Control flow runs on the host, so such an engine never replays a graph: time it eagerly.
    summary.graph_timing = backend == "cuda" and not any(True for n in graph.nodes for _ in n.subgraphs())
    pools: dict[Node, tuple[list[Tactic], dict[str, str]]] = {}
    for node in graph.walk():
        pool, rejected = _candidate_pool(node, backend, choices[node], options)
        node.meta["tactic"] = choices[node].tactic if choices[node].tactic in [t.name for t in pool] else pool[0].name
        pools[node] = (pool, rejected)
    tunable = [n for n in graph.nodes if len(pools[n][0]) > 1]
    summary.layers_with_choice = len(tunable)
    try:
        if not tunable:
            return summary
        if isinstance(shapes, str):
            summary.skipped = shapes
            return summary
        summary.shapes = [{k: list(v) for k, v in s.items()} for s in shapes]
        try:
            feeds = [random_feeds(graph, s, device, options.seed) for s in shapes]
        except _CannotTune as exc:
            summary.skipped = str(exc)
            return summary
        _Tuner(graph, device, pools, options, cache, environment, summary).run(feeds)
        return summary
    finally:
        for node in graph.nodes:
            for tactic in dict.fromkeys(node.meta.get("profile_tactics", [node.meta["tactic"]])):
                if tactic != REFERENCE:
                    summary.chosen[tactic] += 1
        summary.seconds = time.perf_counter() - started


def _candidate_pool(node: Node, backend: str, choice: TacticChoice,
                    options: TuningOptions) -> tuple[list[Tactic], dict[str, str]]:
    """The applicable candidates left after the tactic-source filter, and why others are out."""
    pool: list[Tactic] = []
    rejected: dict[str, str] = {}
    for name, reason in choice.considered:
        if reason is not None:
            continue
        tactic = find_tactic(backend, node.op_type, node.domain, name)
        if tactic is None:
            raise BuildError(f"layer '{node.name}' ({node.op_type}): tactic '{name}' is not registered for {backend}")
        if tactic.name != REFERENCE and _source_key(tactic.source) in options.disabled_sources:
            rejected[name] = f"tactic source {tactic.source.upper()} is disabled (--tacticSources)"
            continue
        pool.append(tactic)
    if not pool:
        raise BuildError(f"layer '{node.name}' ({node.op_type}): every applicable tactic is disabled: "
                         + "; ".join(f"{k}: {v}" for k, v in rejected.items()))
    return pool, rejected


# ---- inputs -------------------------------------------------------------------------------------------

def random_feeds(graph: Graph, shapes: Shapes, device: torch.device, seed: int) -> list[Any]:
    """Seeded random values for the graph inputs at `shapes` (static dimensions fill the rest)."""
    generator = torch.Generator().manual_seed(seed)
    symbols: dict[str, int] = {}
    for v in graph.inputs:
        given = shapes.get(v.name)
        if given is not None and v.shape is not None:
            for dim, size in zip(v.shape, given):
                if isinstance(dim, str):
                    symbols.setdefault(dim, int(size))
    feeds = []
    for v in graph.inputs:
        if not isinstance(v.type, TensorType):
            raise _CannotTune(f"input '{v.name}' is {v.type or 'untyped'}: the tuner makes up tensor inputs only")
        shape = shapes.get(v.name)
        if shape is None:
            if v.shape is None:
                raise _CannotTune(f"input '{v.name}' has an unknown rank and no optimization profile")
            dims = []
            for dim in v.shape:
                if isinstance(dim, int):
                    dims.append(dim)
                elif isinstance(dim, str) and dim in symbols:
                    dims.append(symbols[dim])
                else:
                    raise _CannotTune(f"input '{v.name}' has a dynamic dimension ('{dim}') that no optimization "
                                      f"profile sizes: give one (--shapes/--optShapes) to tune tactics")
            shape = dims
        feeds.append(_random_tensor(v.name, v.type.dtype, tuple(int(d) for d in shape), generator,
                                    _integer_high(graph, v.name)).to(device))
    return feeds


def _random_tensor(name: str, dtype: DType, shape: tuple[int, ...], generator: torch.Generator,
                   high: int) -> torch.Tensor:
    if not dtype.has_torch:
        raise _CannotTune(f"input '{name}' is {dtype.short}, which the tuner cannot make up on a torch device")
    if dtype == DType.BOOL:
        return torch.randint(0, 2, shape, generator=generator).bool()
    if dtype.is_integer:
        return torch.randint(0, high, shape, generator=generator).to(dtype.torch)
    if dtype in (DType.COMPLEX64, DType.COMPLEX128):
        return torch.randn(shape, generator=generator, dtype=dtype.torch)
    return torch.randn(shape, generator=generator).to(dtype.torch)


def _integer_high(graph: Graph, name: str) -> int:
    """Exclusive upper bound for a random integer input: below the axis size of any lookup it indexes."""
    high = INDEX_HIGH
    for node in graph.nodes:
        op = get_op(node.op_type, node.domain)
        for indices, size in op.index_inputs(node) if op is not None else ():
            if indices.name == name and isinstance(size, int) and size > 0:
                high = min(high, size)
    return high


# ---- running and timing -------------------------------------------------------------------------------

class CaptureFailed(Exception):
    """A candidate's calls could not be captured into a CUDA graph."""


# On the CPU a measurement averages avg_timing calls, or fewer where they would take longer than this.
CPU_MEASUREMENT_MS = 50.0


def measure(call: Union[Callable[[], Any], Sequence[Callable[[], Any]]], device: torch.device, avg_timing: int,
            measurements: int, graphs: bool = False) -> float:
    """Milliseconds per call: one warm-up call, then the median over `measurements` of the mean
    of `avg_timing` back-to-back calls (CUDA events on CUDA, perf_counter on the CPU; there a
    measurement holds fewer calls where avg_timing of them would take over CPU_MEASUREMENT_MS).

    `call` may be several calls (the same layer on copies of its weights, cold_constant_copies):
    they are warmed up once each and then taken in turn, max(avg_timing, len(calls)) per
    measurement.

    With `graphs` (CUDA), the calls of one measurement are captured into one CUDA graph and each
    measurement replays it: the GPU time of the kernels as an engine replaying its CUDA graph
    runs them, without the host's launch cost. Eager timing charges a tactic with a slow
    launch path (a Triton kernel's Python launcher: ~20 us) with that cost even though the
    engine's graph never pays it. Raises CaptureFailed when the calls cannot be captured."""
    calls = [call] if callable(call) else list(call)
    warm_started = time.perf_counter()
    for c in calls:
        c()
    count = max(avg_timing, len(calls))
    if device.type != "cuda":
        # A call that takes long on the CPU is timed well by itself: a measurement of about
        # CPU_MEASUREMENT_MS, not avg_timing calls (a 0.5 s fp16 product on two cores would
        # otherwise cost 12 s of build per layer shape).
        warm_ms = (time.perf_counter() - warm_started) * 1e3 / len(calls)
        count = max(len(calls), min(count, math.ceil(CPU_MEASUREMENT_MS / max(warm_ms, 1e-3))))
    sequence = [calls[i % len(calls)] for i in range(count)]
    samples = []
    if device.type == "cuda":
        with torch.cuda.device(device):
            stream = torch.cuda.current_stream(device)
            stream.synchronize()
            replay = _captured(sequence, device) if graphs else None
            for _ in range(measurements):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record(stream)
                if replay is not None:
                    replay()
                else:
                    for c in sequence:
                        c()
                end.record(stream)
                end.synchronize()
                samples.append(start.elapsed_time(end) / count)
    else:
        for _ in range(measurements):
            t0 = time.perf_counter()
            for c in sequence:
                c()
            samples.append((time.perf_counter() - t0) * 1e3 / count)
    return float(statistics.median(samples))


def _captured(sequence: Sequence[Callable[[], Any]], device: torch.device) -> Callable[[], None]:
    """The calls captured, in order, into a CUDA graph; returns its replay."""
    graph = torch.cuda.CUDAGraph()
    caller = torch.cuda.current_stream(device)
    side = torch.cuda.Stream(device)
    side.wait_stream(caller)
    try:
        with torch.cuda.stream(side):
            for c in dict.fromkeys(sequence):
                c()  # warm-up off the default stream, as capture wants (lazy handles, workspaces)
        caller.wait_stream(side)
        # A candidate that launches no kernel (a view) captures an empty graph: it costs the
        # engine's graph nothing, which is what replaying the empty graph measures.
        with capture(graph, side):
            for c in sequence:
                c()
    except Exception as exc:  # noqa: BLE001 - any capture failure means: time this build eagerly
        torch.cuda.synchronize(device)
        raise CaptureFailed(f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
                            ) from exc
    return graph.replay


def l2_cache_bytes(device: torch.device) -> int:
    """The device's L2 cache size (0 where torch does not say, and on the CPU)."""
    if device.type != "cuda":
        return 0
    return int(getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0) or 0)


def cold_constant_copies(node: Node, args: Sequence[Any], l2_bytes: int) -> list[list[Any]]:
    """The layer's arguments with its constant inputs (weights) replaced by copies, as many sets as
    it takes for their bytes to reach twice the L2 cache; [] when the layer's constants are too
    small for MAX_CONSTANT_COPIES copies to do that.

    Timed in turn, each call reads weights the calls before it evicted from L2, as an engine
    whose weights exceed L2 reads every layer's weights from memory; activations stay the same
    tensors, as warm as the previous layer left them. Back-to-back calls on one weight time it
    L2-resident instead, which favours tiles that read it slowly: at BERT-base batch 1 (fp16,
    H200) the GEMM algorithms picked that way took 295 us over 48 layers against 283 us for the
    ones picked on cold weights."""
    constant = [i for i, v in enumerate(node.inputs)
                if v is not None and v.const is not None and isinstance(args[i], torch.Tensor)]
    size = sum(args[i].numel() * args[i].element_size() for i in constant)
    if not constant or l2_bytes <= 0 or size * MAX_CONSTANT_COPIES < 2 * l2_bytes:
        return []
    sets = []
    for _ in range(-(-2 * l2_bytes // size)):
        copy = list(args)
        for i in constant:
            copy[i] = args[i].clone()
        sets.append(copy)
    return sets


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def constant_on_device(array: np.ndarray, device: torch.device) -> Any:
    if array.dtype == object or not DType.from_numpy(array.dtype).has_torch:
        return array  # strings and dtypes torch lacks stay numpy, as in the runtime
    return numpy_to_torch(array).to(device)


def store_outputs(env: dict[str, Any], node: Node, out: Any) -> None:
    if isinstance(out, (torch.Tensor, np.ndarray)):
        env[node.outputs[0].name] = out
    else:
        for v, o in zip(node.outputs, out):
            env[v.name] = o


def _signature(out: Any) -> list[Any]:
    """Shapes and dtypes of a layer's tensor outputs (what every candidate must agree on)."""
    items = [out] if isinstance(out, (torch.Tensor, np.ndarray)) else list(out)
    return [(tuple(o.shape), str(o.dtype)) if isinstance(o, (torch.Tensor, np.ndarray)) else type(o).__name__
            for o in items]


def _describe_failure(node: Node, exc: BaseException) -> str:
    return f"layer '{node.name}' ({node.op_type}) failed on the tuning inputs: {type(exc).__name__}: {exc}"


class _Tuner:
    def __init__(self, graph: Graph, device: torch.device, pools: Mapping[Node, tuple[list[Tactic], dict[str, str]]],
                 options: TuningOptions, cache: Optional[TimingCache], environment: Mapping[str, Any],
                 summary: TuningSummary):
        self.graph, self.device, self.pools, self.options = graph, device, pools, options
        self.cache, self.environment, self.summary = cache, environment, summary
        self._constants: dict[int, dict[str, Any]] = {}
        self._release = release_after(graph)
        # Weights are read cold when all of them together do not fit in L2 (cold_constant_copies).
        self._cold_l2_bytes = 0

    def run(self, feeds: list[list[Any]]) -> None:
        constants = self._graph_constants(self.graph)
        l2 = l2_cache_bytes(self.device)
        weights = sum(t.numel() * t.element_size() for t in constants.values() if isinstance(t, torch.Tensor))
        if weights > l2 > 0:
            self._cold_l2_bytes = l2
            self.summary.cold_weights = True
            # Cold and warm times of one layer differ: the timing cache keeps them apart.
            self.environment = {**self.environment, "weights": "cold"}
        envs = [{**constants, **{v.name: x for v, x in zip(self.graph.inputs, f)}} for f in feeds]
        with torch.no_grad(), _progress(self.options, len(self.graph.nodes)) as advance:
            for i, node in enumerate(self.graph.nodes):
                try:
                    self._layer(node, envs)
                except _LayerFailed as exc:
                    self.summary.stopped = (f"{exc}; it and the layers after it keep their default tactic (the "
                                            f"random inputs at the tuning shapes may not suit this network)")
                    return
                for env in envs:
                    for name in self._release[i]:
                        env.pop(name, None)
                advance(node.name)

    def _context(self, env: dict[str, Any]) -> RunContext:
        return RunContext(self.device, lambda g, xs: self._run_subgraph(g, xs, env.__getitem__))

    def _layer(self, node: Node, envs: list[dict[str, Any]]) -> None:
        pool, rejected = self.pools[node]
        if len(pool) == 1:
            for env in envs:
                args = [None if v is None else env[v.name] for v in node.inputs]
                try:
                    store_outputs(env, node, pool[0].run(self._context(env), args, node.attrs))
                except Exception as exc:  # noqa: BLE001 - any kernel failure stops tuning, with its reason
                    raise _LayerFailed(_describe_failure(node, exc)) from exc
            return
        rejected = dict(rejected)
        per_profile: list[tuple[dict[str, float], dict[str, Any], list[Any], RunContext]] = []
        measured = False
        for env in envs:
            args = [None if v is None else env[v.name] for v in node.inputs]
            ctx = self._context(env)
            fit = []
            for t in pool:
                need = workspace_need(t, node, args)
                limit = self.options.workspace_limit_bytes
                if limit is not None and need is not None and need > limit:
                    rejected[t.name] = f"needs {need} bytes of workspace; the limit is {limit} (--memPoolSize)"
                else:
                    fit.append(t)
            entry = self._cached(node, args, fit) if self.cache is not None else None
            if entry is not None and set(entry.times_ms) <= {t.name for t in fit}:
                times, outputs = dict(entry.times_ms), {}
                rejected.update(entry.rejected)
            else:
                graph_timed = self.summary.graph_timing
                times, outputs, failures = self._time_candidates(node, fit, ctx, args)
                measured = True
                rejected.update(failures)
                if self.cache is not None:  # keyed by how they were timed, which this layer may have changed
                    timing = CAPTURE_FAILED if graph_timed and not self.summary.graph_timing else None
                    self.cache.store(self._key(node, args, fit, timing),
                                     CacheEntry(min(times, key=times.__getitem__), times, failures))
            per_profile.append((times, outputs, args, ctx))
        # Each profile keeps its own fastest candidate (TensorRT tunes each profile): a batch-1
        # profile and a batch-64 one often want different kernels. Ties keep the registry order
        # (the reference first).
        winners = [min((t for t in pool if t.name in times), key=lambda t: times[t.name])
                   for times, _, _, _ in per_profile]
        for env, winner, (_, outputs, args, ctx) in zip(envs, winners, per_profile):
            if winner.name in outputs:
                out = outputs[winner.name]
            else:
                try:
                    out = winner.run(ctx, args, node.attrs)
                except Exception as exc:  # noqa: BLE001
                    raise _LayerFailed(_describe_failure(node, exc)) from exc
            store_outputs(env, node, out)
        first = per_profile[0][0]
        node.meta["tactic"] = winners[0].name
        node.meta["tactic_time_ms"] = round(first[winners[0].name], 6)
        node.meta["tactic_times_ms"] = {name: round(ms, 6) for name, ms in first.items()}
        if any(w is not winners[0] for w in winners):
            node.meta["profile_tactics"] = [w.name for w in winners]
            node.meta["profile_tactic_times_ms"] = [{name: round(ms, 6) for name, ms in times.items()}
                                                    for times, _, _, _ in per_profile]
        if rejected:
            node.meta["tactic_rejected"] = rejected
        if measured:
            self.summary.timed_layers += 1
        else:
            self.summary.cached_layers += 1

    def _key(self, node: Node, args: Sequence[Any], candidates: Sequence[Tactic],
             timing: Optional[str] = None) -> dict[str, Any]:
        """The layer's timing-cache key. Times taken eagerly (after a capture failed, or in a
        network with control flow) are kept apart from the graph-replay times the environment
        names; `timing` overrides the mode."""
        environment = self.environment
        if "timing" in environment and (timing or not self.summary.graph_timing):
            environment = {**environment, "timing": timing or "eager"}
        return layer_key(node, args, [t.name for t in candidates], environment)

    def _cached(self, node: Node, args: Sequence[Any], candidates: Sequence[Tactic]) -> Optional[CacheEntry]:
        """The layer's cache entry. Under graph timing, an entry of the layer where a candidate
        could not be captured says so again: graph timing ends here, as it did then, without
        timing anything."""
        entry = self.cache.lookup(self._key(node, args, candidates))
        if entry is None and self.summary.graph_timing and "timing" in self.environment:
            entry = self.cache.lookup(self._key(node, args, candidates, CAPTURE_FAILED), retry=True)
            if entry is not None:
                self.summary.graph_timing = False
                self.summary.graph_timing_off = (f"layer '{node.name}' ({node.op_type}) cannot be captured "
                                                 f"(found in the timing cache)")
        return entry

    def _measure(self, node: Node, call: Union[Callable[[], Any], list[Callable[[], Any]]]) -> float:
        """A candidate's time, in CUDA graphs while every candidate so far could be captured (the
        engine replays one graph then), eagerly after the first that could not (the engine
        then runs eagerly too: capture is all or nothing)."""
        options = self.options
        if self.summary.graph_timing:
            try:
                return measure(call, self.device, options.avg_timing, options.measurements, graphs=True)
            except CaptureFailed as exc:
                self.summary.graph_timing = False
                self.summary.graph_timing_off = f"layer '{node.name}' ({node.op_type}) cannot be captured: {exc}"
        return measure(call, self.device, options.avg_timing, options.measurements)

    def _time_candidates(self, node: Node, tactics: list[Tactic], ctx: RunContext,
                         args: list[Any]) -> tuple[dict[str, float], dict[str, Any], dict[str, str]]:
        times: dict[str, float] = {}
        outputs: dict[str, Any] = {}
        failures: dict[str, str] = {}
        expected = None
        copies: Optional[list[list[Any]]] = None  # made once per layer, for the first candidate timed
        graph_timed = self.summary.graph_timing
        timed_calls: dict[str, list[Callable[[], Any]]] = {}
        for t in tactics:
            try:
                out = t.run(ctx, args, node.attrs)
                _synchronize(self.device)
            except Exception as exc:  # noqa: BLE001 - a failing candidate is left out, with the reason
                if t.name == REFERENCE:
                    raise _LayerFailed(_describe_failure(node, exc)) from exc
                failures[t.name] = f"failed: {type(exc).__name__}: {exc}"
                continue
            # Outputs beyond the layer's own (a reference giving an optional output it was not
            # asked for) are never read: they do not count against a candidate.
            signature = _signature(out)[:len(node.outputs)]
            if expected is None:
                expected = signature
            elif signature != expected:
                failures[t.name] = f"its outputs {signature} differ from the reference's {expected}"
                continue
            if copies is None:
                copies = cold_constant_copies(node, args, self._cold_l2_bytes) if self._cold_l2_bytes else []
            calls = [lambda t=t, a=a: t.run(ctx, a, node.attrs) for a in copies or [args]]
            times[t.name] = self._measure(node, calls)
            timed_calls[t.name] = calls
            outputs[t.name] = out
            self.summary.candidates_timed += 1
        if graph_timed and not self.summary.graph_timing:
            # A candidate could not be captured, so the engine will run eagerly: the candidates
            # timed in graphs before it are timed again eagerly, to compare like with like.
            for name, calls in timed_calls.items():
                times[name] = measure(calls, self.device, self.options.avg_timing, self.options.measurements)
        if not times:
            raise _LayerFailed(f"layer '{node.name}' ({node.op_type}): every candidate failed on the tuning "
                               f"inputs ({'; '.join(f'{k}: {v}' for k, v in failures.items())})")
        return times, outputs, failures

    def _graph_constants(self, graph: Graph) -> dict[str, Any]:
        found = self._constants.get(id(graph))
        if found is None:
            found = self._constants[id(graph)] = {v.name: constant_on_device(v.const, self.device)
                                                  for v in graph.initializers}
        return found

    def _run_subgraph(self, graph: Graph, feeds: Sequence[Any], outer: Callable[[str], Any]) -> list[Any]:
        """A subgraph (If/Loop/Scan body) run with its layers' default tactics."""
        env: dict[str, Any] = {**self._graph_constants(graph), **{v.name: x for v, x in zip(graph.inputs, feeds)}}

        def lookup(name: str) -> Any:
            return env[name] if name in env else outer(name)

        ctx = RunContext(self.device, lambda g, xs: self._run_subgraph(g, xs, lookup))
        for node in graph.nodes:
            tactic = next(t for t in self.pools[node][0] if t.name == node.meta["tactic"])
            args = [None if v is None else lookup(v.name) for v in node.inputs]
            store_outputs(env, node, tactic.run(ctx, args, node.attrs))
        return [lookup(v.name) for v in graph.outputs]


def release_after(graph: Graph) -> list[list[str]]:
    """Names no layer reads after layer i (graph outputs excepted): dropped to bound memory."""
    last: dict[str, int] = {}
    for i, node in enumerate(graph.nodes):
        for v in node.inputs:
            if v is not None:
                last[v.name] = i
        for name in free_names_of_subgraphs(node):
            last[name] = i
    keep = {v.name for v in graph.outputs}
    release: list[list[str]] = [[] for _ in graph.nodes]
    for name, i in last.items():
        if name not in keep:
            release[i].append(name)
    return release


@contextmanager
def _progress(options: TuningOptions, total: int) -> Iterator[Callable[[str], None]]:
    """A rich progress bar on stderr (when asked for, or by default when stderr is a terminal)."""
    show = options.progress
    if show is None:
        show = bool(getattr(sys.stderr, "isatty", lambda: False)())
    if not show:
        yield lambda name: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn("Tuning tactics"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TextColumn("{task.fields[layer]}"), console=Console(file=sys.stderr), transient=True)
    with progress:
        task = progress.add_task("tuning", total=total, layer="")
        yield lambda name: progress.update(task, advance=1, layer=name)
