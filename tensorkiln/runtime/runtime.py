"""Runtime, Engine and ExecutionContext: load a plan and run it."""

from __future__ import annotations

import os
from contextlib import nullcontext
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from ..engine import DeviceInfo, EnginePlan, IOTensor, deserialize_plan, load_plan
from ..errors import ConfigError, EngineFormatError, ExecutionError, ShapeError
from ..ir import Node, OptionalType
from ..tactics import find_tactic
from ..tactics.device import describe_device, parse_device
from ..tactics.select import may_alias_inputs, profile_tactic
from ..tactics.streams import AuxStreams
from ..tactics.tf32 import tf32_scope
from .arena import ArenaLayout, ArenaMemory, BoundArena, CallOrder
from .cuda_graph import MAX_SIGNATURES, CudaGraphs, capture_blocker, copy_out, signature
from .executor import GraphExecutor, TacticFn
from .profiler import LayerProfile, StepTimer, layer_profile
from .io import (check_inputs, copy_into_user_buffers, dense, device_to_host, in_range, missing_or_extra,
                 to_runtime_value, to_user_value)

PlanSource = Union[str, os.PathLike, bytes, bytearray, EnginePlan]


def _cast(value: Any, dtype: Optional[torch.dtype]) -> Any:
    return value if dtype is None else value.to(dtype)


class Runtime:
    """Loads engine plans for one device ("cpu", "cuda", "cuda:N")."""

    def __init__(self, device: Union[str, torch.device, None] = "cpu"):
        self.device = parse_device(device)
        self.device_info = DeviceInfo(*describe_device(self.device))

    def load(self, source: PlanSource, *, source_name: str = "") -> "Engine":
        """Load a plan (path, bytes or EnginePlan); `source_name` names it in errors when it is not a path."""
        if isinstance(source, EnginePlan):
            plan = source
        elif isinstance(source, (bytes, bytearray, memoryview)):
            plan = deserialize_plan(source)
        elif isinstance(source, (str, os.PathLike)):
            plan = load_plan(source)
        else:
            raise TypeError(f"cannot load an engine from {type(source).__name__}")
        self._check_device(plan.device, str(source) if isinstance(source, (str, os.PathLike)) else source_name)
        return Engine(plan, self.device)

    def _check_device(self, built_for: DeviceInfo, source: str) -> None:
        here = self.device_info
        where = f"engine file '{source}'" if source else "engine plan"
        if built_for.backend != here.backend:
            raise EngineFormatError(f"{where} was built for {built_for.describe()}; this runtime is "
                                    f"{here.describe()}: rebuild it for this device")
        if built_for.backend == "cuda" and (built_for.name, built_for.compute_capability) != (
                here.name, here.compute_capability):
            raise EngineFormatError(f"{where} was built for {built_for.describe()}; this GPU is "
                                    f"{here.describe()}: rebuild it on this GPU")


class Engine:
    """A loaded plan, ready to make execution contexts."""

    def __init__(self, plan: EnginePlan, device: torch.device):
        self.plan = plan
        self.device = device
        # Set once a capture fails (or the graph is found uncapturable): every context of
        # this engine then runs eagerly.
        self._cuda_graph_failure: Optional[str] = None
        self._resolved: dict[int, TacticFn] = {}
        for node in plan.graph.walk():
            self._resolved[id(node)] = self._bind(node, node.meta.get("tactic"))
        # The first profile's tactics (and every profile's, unless tuning gave them others).
        self.executor = GraphExecutor(plan.graph, device, lambda n: self._resolved[id(n)])
        # What CUDA graphs capture: the same layers less the output casts their copy-out performs.
        self._graph_executor, self._output_casts = self.executor.deferring_output_casts()
        # Per profile (eager executor, graph executor), where profiles were tuned to different tactics.
        self._profile_executors = self._bind_profiles()
        # Where activations go in an execution context's arena, per executor (by id).
        self.arena_layout = ArenaLayout.from_plan(plan.memory)
        self._arena_places: dict[int, tuple[list, list]] = {}
        if self.arena_layout is not None:
            executors = [self.executor, self._graph_executor, *(e for pair in self._profile_executors for e in pair)]
            for executor in executors:
                self._arena_places[id(executor)] = executor.arena_places(
                    self.arena_layout, lambda node: may_alias_inputs(node, device.type))
        # The I/O signature is read on every execute: derived from the plan once.
        self._inputs = plan.inputs
        self._outputs = plan.outputs
        self._input_names = [t.name for t in self._inputs]
        self._output_names = [t.name for t in self._outputs]

    def _bind(self, node: Node, name: Any) -> TacticFn:
        if not isinstance(name, str):
            raise EngineFormatError(f"engine layer '{node.name}' ({node.op_type}) has no tactic recorded")
        tactic = find_tactic(self.device.type, node.op_type, node.domain, name)
        if tactic is None:
            raise EngineFormatError(f"engine layer '{node.name}' uses tactic '{name}' for {node.op_type}, "
                                    f"which this tensorkiln does not have: rebuild the engine")
        return tactic.run

    def _bind_profiles(self) -> list[tuple[GraphExecutor, GraphExecutor]]:
        """An executor pair per optimization profile when layers were tuned to a tactic per
        profile ("profile_tactics"); none when every profile runs the same tactics."""
        graph, profiles = self.plan.graph, self.plan.profiles
        tuned = [n for n in graph.nodes if "profile_tactics" in n.meta]
        if not tuned:
            return []
        for node in tuned:
            names = node.meta["profile_tactics"]
            if not (isinstance(names, list) and len(names) == len(profiles) > 1 and names[0] == node.meta["tactic"]):
                raise EngineFormatError(f"engine layer '{node.name}' has profile tactics {names!r} for tactic "
                                        f"{node.meta.get('tactic')!r}, but the engine has {len(profiles)} "
                                        f"optimization profile(s): rebuild the engine")
        # Profile 0's tactics are the layers' own ("tactic"): the engine's executor runs them.
        pairs = [(self.executor, self._graph_executor)]
        for index in range(1, len(profiles)):
            bound = dict(self._resolved)
            for node in tuned:
                bound[id(node)] = self._bind(node, profile_tactic(node, index))
            executor = GraphExecutor(graph, self.device, lambda n, bound=bound: bound[id(n)])
            pairs.append((executor, executor.deferring_output_casts()[0]))
        return pairs

    def profile_of(self, feeds: Sequence[Any]) -> Optional[int]:
        """The first optimization profile whose ranges hold every input's shape (inputs by
        position, as the engine lists them), or None; 0 for an engine without profiles."""
        if not self.plan.profiles:
            return 0
        shapes = {name: tuple(x.shape) for name, x in zip(self._input_names, feeds)
                  if isinstance(x, (torch.Tensor, np.ndarray))}
        for index, ranges in enumerate(self.plan.profiles):
            if all(name not in shapes or in_range(shapes[name], r) for name, r in ranges.items()):
                return index
        return None

    def executor_for(self, feeds: Sequence[Any], graph: bool = False) -> GraphExecutor:
        """The executor running these inputs: their profile's tactics. `graph`: the one CUDA
        graphs capture (without the output casts the copy-out performs)."""
        if self._profile_executors:
            index = self.profile_of(feeds)
            if index is None:
                raise ShapeError(self.profile_mismatch(feeds))
            executor, graph_executor = self._profile_executors[index]
            return graph_executor if graph else executor
        return self._graph_executor if graph else self.executor

    def profile_mismatch(self, feeds: Sequence[Any]) -> str:
        """Why no one profile takes these inputs (each may fit some profile on its own)."""
        shapes = {name: list(x.shape) for name, x in zip(self._input_names, feeds)
                  if isinstance(x, (torch.Tensor, np.ndarray))}
        ranges = " | ".join("; ".join(f"{name} {list(r.min)}..{list(r.max)}" for name, r in p.items())
                            for p in self.plan.profiles)
        return (f"input shapes {shapes} are not all inside one optimization profile (an engine runs each call "
                f"with one profile's tactics): profiles {ranges}")

    @property
    def inputs(self) -> list[IOTensor]:
        return list(self._inputs)

    @property
    def outputs(self) -> list[IOTensor]:
        return list(self._outputs)

    @property
    def input_names(self) -> list[str]:
        return list(self._input_names)

    @property
    def output_names(self) -> list[str]:
        return list(self._output_names)

    @property
    def num_layers(self) -> int:
        return len(self.plan.graph.nodes)

    @property
    def layers(self) -> list[dict[str, Any]]:
        return self.plan.layers

    @property
    def device_memory_size(self) -> Optional[int]:
        """Bytes of activation memory an execution context preallocates (TensorRT's device memory):
        the arena the builder planned at the profiles' max shapes, holding the outputs of the
        layers whose tactics write where the runtime says (planner/arena.py). Other layers'
        outputs come from torch's caching allocator. None for a plan without an arena."""
        if self.arena_layout is not None:
            return self.arena_layout.size
        size = self.plan.memory.get("device_memory_size")
        return int(size) if isinstance(size, int) else None

    def arena_places(self, executor: GraphExecutor) -> Optional[tuple[list, list]]:
        """The executor's layers' places in the arena and the places their outputs may point into
        (GraphExecutor.arena_places); None: no arena."""
        return self._arena_places.get(id(executor))

    @property
    def tf32(self) -> bool:
        """Whether FP32 matmuls and convolutions may use TF32 (the build setting; CUDA only)."""
        return bool(self.plan.build_config.get("tf32", True))

    @property
    def cuda_graph_failure(self) -> Optional[str]:
        """Why this engine cannot be captured into a CUDA graph (None while nothing says so)."""
        return self._cuda_graph_failure

    def create_execution_context(self, cuda_graph: bool = True,
                                 device_memory: Optional[torch.Tensor] = None) -> "ExecutionContext":
        """`cuda_graph`: capture the engine into a CUDA graph per input shape and replay it
        (CUDA only; the CPU backend ignores it). `device_memory`: a contiguous tensor on the
        engine's device of at least `device_memory_size` bytes for the context's activations
        (contexts run one after another may share one); by default the context allocates its own."""
        return ExecutionContext(self, cuda_graph=cuda_graph, device_memory=device_memory)


Outputs = Mapping[str, Any]


class ExecutionContext:
    """Runs an engine. Numpy inputs give numpy outputs; torch tensors (any of them) give torch tensors.

    On CUDA, `execute` enqueues its work on a stream (the current one, or `stream=`) and
    returns without waiting for it when the inputs are torch tensors, as torch ops do;
    numpy outputs are copied to the host and so wait for that stream (only that stream).
    Torch tensors already on the engine's device are read in place; other inputs are copied
    to the device. A context runs one inference at a time: use one context per concurrent stream.
    """

    def __init__(self, engine: Engine, cuda_graph: bool = True, device_memory: Optional[torch.Tensor] = None):
        self.engine = engine
        self._specs = engine.inputs
        self._names = engine.input_names
        # Inputs the engine reads on the host (host_values.py: TensorRT's shape tensors): kept
        # as CPU tensors, and their values are part of the CUDA-graph signature.
        graph_inputs = engine.plan.graph.inputs
        self._host_names = frozenset(graph_inputs[k].name for k in engine.executor.host.inputs)
        tensor_specs = [s for s in self._specs if s.is_tensor]
        self._host_positions = frozenset(i for i, s in enumerate(tensor_specs) if s.name in self._host_names)
        # The fast replay path reads no input values: engines with host inputs take the general one.
        self._plain_inputs = all(s.is_tensor for s in self._specs) and not self._host_names
        self._ignored = frozenset(engine.plan.ignored_inputs)
        self._checked: set[tuple] = set()
        self._on_cuda = engine.device.type == "cuda"
        # One line per problem met (e.g. why CUDA graphs are off), for the caller to show.
        self.warnings: list[str] = []
        self._graphs: Optional[CudaGraphs] = None
        # The context's own auxiliary streams, where the engine has layers on them.
        schedule = engine.executor.schedule
        self._streams = AuxStreams(engine.device, schedule) if self._on_cuda and schedule is not None else None
        # The activation arena (allocated now, as TensorRT's context allocates its device memory,
        # so a shortage shows here rather than mid-inference) and its places per executor.
        layout = engine.arena_layout
        if device_memory is not None and layout is None:
            raise ConfigError("device_memory was given, but this engine has no activation arena "
                              "(rebuild it with this version)")
        self._arena = (ArenaMemory(layout.size, engine.device, device_memory)
                       if layout is not None and (layout.size or device_memory is not None) else None)
        self._bound: dict[int, BoundArena] = {}
        self._order = CallOrder(engine.device) if self._on_cuda else None
        if cuda_graph and self._on_cuda:
            if engine._cuda_graph_failure is None:
                engine._cuda_graph_failure = capture_blocker(engine.plan.graph)
            if engine._cuda_graph_failure is not None:
                self.warnings.append(f"CUDA graphs are off for this engine: {engine._cuda_graph_failure}")
            else:
                self._graphs = CudaGraphs(engine.device, self._host_positions)

    @property
    def device_memory(self) -> Optional[torch.Tensor]:
        """The context's activation arena (uint8, engine.device_memory_size bytes), or None."""
        return None if self._arena is None else self._arena.memory[:self._arena.size]

    def _arena_for(self, executor: GraphExecutor) -> Optional[BoundArena]:
        if self._arena is None:
            return None
        bound = self._bound.get(id(executor))
        if bound is None:
            places = self.engine.arena_places(executor)
            if places is None:
                return None
            bound = self._bound[id(executor)] = self._arena.bind(*places)
        return bound

    @property
    def cuda_graph(self) -> bool:
        """Whether calls are (or will be, after the warm-up call of a shape) replayed from CUDA graphs."""
        return self._graphs is not None

    def execute(self, inputs: Mapping[str, Any], stream: Optional["torch.cuda.Stream"] = None,
                outputs: Optional[Outputs] = None) -> dict[str, Any]:
        """Run the engine. `stream`: the CUDA stream to enqueue on (default: the current one).
        `outputs`: preallocated tensors (torch, or numpy arrays) by output name to copy the
        results into; those entries of the result are the given objects."""
        return self._execute(inputs, None, stream, outputs)

    def execute_debug(self, inputs: Mapping[str, Any], stream: Optional["torch.cuda.Stream"] = None
                      ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Outputs, and every layer's output tensors by name in layer order (TensorRT's debug
        tensors). A fused layer's output keeps the name of the last tensor it replaced.
        Always runs eagerly (no CUDA graph)."""
        record: dict[str, Any] = {}
        outputs = self._execute(inputs, record, stream, None)
        return outputs, record

    def profile_layers(self, inputs: Mapping[str, Any], runs: int = 10, warmup: int = 1,
                       stream: Optional["torch.cuda.Stream"] = None) -> LayerProfile:
        """Each layer's time over `runs` eager runs after `warmup` untimed ones (TensorRT's
        IProfiler; `kiln exec --dumpProfile`). Runs without the CUDA graph."""
        if runs < 1 or warmup < 0:
            raise ConfigError(f"profile_layers needs runs >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
        nodes = self.engine.plan.graph.nodes
        timer = StepTimer(len(nodes), self.engine.device)
        for _ in range(warmup + runs):
            self._execute(inputs, None, stream, None, timer=timer)
        return layer_profile(nodes, timer.milliseconds(), runs, skip=warmup)

    def input_buffers(self, shapes: Mapping[str, Sequence[int]]) -> dict[str, torch.Tensor]:
        """The CUDA graph's own input tensors for these input shapes (allocated on first ask).
        Writing the inputs into them and passing them to `execute` skips the input copies."""
        if self._graphs is None:
            raise ConfigError("input_buffers needs an execution context with CUDA graphs on (a CUDA engine)")
        if self._host_names:
            raise ConfigError(f"input_buffers: the engine reads input(s) {sorted(self._host_names)} on the host, "
                              "and their values choose the CUDA graph: pass every input to execute")
        problem = missing_or_extra(self._specs, shapes)
        if problem:
            raise ShapeError(problem)
        like = [torch.empty(tuple(shapes[s.name]), dtype=s.dtype.torch, device="meta") for s in self._specs]
        key = signature(like)
        if key not in self._checked:
            check_inputs(self._specs, dict(zip([s.name for s in self._specs], like)))
            self._remember_checked(key)
        statics = self._graphs.static_inputs(key, like)
        return {s.name: t for s, t in zip(self._specs, statics)}

    def _remember_checked(self, key: tuple) -> None:
        # Bounded like the graphs (cuda_graph.MAX_SIGNATURES): a server sees many shapes.
        if len(self._checked) >= MAX_SIGNATURES:
            self._checked.clear()
        self._checked.add(key)

    def _stream_scope(self, stream: Optional["torch.cuda.Stream"]) -> Any:
        if stream is None:
            return nullcontext()
        if not self._on_cuda:
            raise ConfigError("a CUDA stream was given to an engine that runs on the CPU")
        if stream.device != self.engine.device:
            raise ConfigError(f"the stream is on {stream.device}, the engine on {self.engine.device}")
        return torch.cuda.stream(stream)

    def _tf32(self) -> Any:
        return tf32_scope(self.engine.tf32) if self._on_cuda else nullcontext()

    def _execute(self, inputs: Mapping[str, Any], record: Optional[dict[str, Any]],
                 stream: Optional["torch.cuda.Stream"], outputs: Optional[Outputs],
                 timer: Optional[StepTimer] = None) -> dict[str, Any]:
        if self._graphs is not None and record is None and timer is None and not outputs:
            with self._stream_scope(stream):
                replayed = self._replay_checked(inputs)
            if replayed is not None:
                return replayed
        problem = missing_or_extra(self._specs, inputs, self._ignored)
        if problem:
            raise ShapeError(problem)
        if outputs:
            unknown = [n for n in outputs if n not in self.engine.output_names]
            if unknown:
                raise ShapeError(f"preallocated output(s) {unknown} are not outputs of the engine; "
                                 f"its outputs are {self.engine.output_names}")
        with self._stream_scope(stream):
            return self._run(inputs, record, outputs, timer)

    def _run(self, inputs: Mapping[str, Any], record: Optional[dict[str, Any]],
             outputs: Optional[Outputs], timer: Optional[StepTimer] = None) -> dict[str, Any]:
        device = self.engine.device
        graphs = self._graphs if record is None and timer is None else None
        values: dict[str, Any] = {}
        any_torch = False
        cpu = torch.device("cpu")
        for spec in self._specs:
            # With CUDA graphs, inputs on the host stay there (pinned when large) and are copied
            # straight into the graph's static buffers. Inputs the engine reads on the host go
            # there whatever their device.
            if spec.name in self._host_names:
                values[spec.name], was_numpy = to_runtime_value(spec, inputs[spec.name], cpu)
            else:
                values[spec.name], was_numpy = to_runtime_value(spec, inputs[spec.name], device,
                                                                keep_on_host=graphs is not None)
            any_torch |= not was_numpy
        feeds = [values[s.name] for s in self._specs]
        key = signature([x for s, x in zip(self._specs, feeds) if s.is_tensor], self._host_positions)
        if key not in self._checked:
            check_inputs(self._specs, values)
            if len(self.engine.plan.profiles) > 1 and self.engine.profile_of(feeds) is None:
                raise ShapeError(self.engine.profile_mismatch(feeds))
            self._remember_checked(key)
        as_numpy = not any_torch
        if graphs is not None and self.engine._cuda_graph_failure is None and not graphs.wants_eager(key):
            replayed = self._replay_and_deliver(graphs, key, feeds, as_numpy, outputs)
            if replayed is not None:
                return replayed
        feeds = [x.to(device, non_blocking=x.is_pinned())
                 if isinstance(x, torch.Tensor) and x.device != device and s.name not in self._host_names
                 else x for s, x in zip(self._specs, feeds)]
        executor = self.engine.executor_for(feeds)
        # Debugging keeps every layer's output: none may share memory with another.
        arena = self._arena_for(executor) if record is None else None
        with self._tf32():
            # Debugging and profiling run every layer on one stream, in order.
            streams = self._streams if record is None and timer is None else None
            if self._order is not None:
                self._order.wait_for_previous()
            outs = executor.run(feeds, record=record, timer=timer, streams=streams, arena=arena)
            if self._order is not None:
                self._order.finished()
        if record is not None:
            for name in list(record):
                record[name] = to_user_value(record[name], as_numpy)
        return self._deliver(outs, as_numpy, outputs, fresh=True)

    def _replay_checked(self, inputs: Mapping[str, Any]) -> Optional[dict[str, Any]]:
        """The replay path with the least host work, for a call like one already checked: every
        input a torch tensor on the engine's device and a signature seen before. At batch 1 the
        host's work before the replay starts is part of the latency. None: take the general path
        (which checks, converts and explains)."""
        graphs = self._graphs
        if (graphs is None or not self._plain_inputs or len(inputs) != len(self._names)
                or self.engine._cuda_graph_failure is not None):
            return None
        device = self.engine.device
        feeds = []
        for name in self._names:
            x = inputs.get(name)
            if type(x) is not torch.Tensor or x.device != device:
                return None
            feeds.append(x)
        key = signature(feeds)
        if key not in self._checked or graphs.wants_eager(key):
            return None
        return self._replay_and_deliver(graphs, key, feeds, False, None)

    def _replay_and_deliver(self, graphs: CudaGraphs, key: tuple, feeds: list[Any], as_numpy: bool,
                            outputs: Optional[Outputs]) -> Optional[dict[str, Any]]:
        """The result of replaying the graph of `key` on these feeds, or None when the capture
        failed (the caller then runs eagerly)."""
        self._order.wait_for_previous()
        try:
            outs = graphs.run(key, feeds, self._run_for_capture, self._tf32)
        except Exception as exc:  # noqa: BLE001 - any capture failure means: run eagerly from now on
            reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            self.engine._cuda_graph_failure = f"capture failed ({reason})"
            self.warnings.append(f"CUDA graph capture failed; running eagerly from now on: {reason}")
            self._graphs = None
            return None
        try:
            return self._deliver(outs, as_numpy, outputs, fresh=False)
        finally:
            self._order.finished()  # the copies out of the static outputs are enqueued

    def _run_for_capture(self, feeds: Sequence[Any]) -> list[Any]:
        executor = self.engine.executor_for(feeds, graph=True)
        return executor.run(feeds, streams=self._streams, arena=self._arena_for(executor))

    def _deliver(self, outs: list[Any], as_numpy: bool, outputs: Optional[Outputs], fresh: bool) -> dict[str, Any]:
        """The result dict. `fresh`: the tensors belong to this call, from the eager executor.
        Else they are a CUDA graph's static outputs, which the next replay overwrites: copied
        out, and cast on the way to the dtypes of the output casts the graph left out."""
        for spec, value in zip(self.engine._outputs, outs):
            if value is None and not isinstance(spec.type, OptionalType):
                raise ExecutionError(f"output '{spec.name}' was not produced")
        names = self.engine._output_names
        casts = [None] * len(names) if fresh else self.engine._output_casts
        # (name, value, dtype still to cast to) by position.
        rest = list(zip(names, outs, casts))
        result: dict[str, Any] = {}
        if outputs:
            result.update(copy_into_user_buffers({n: _cast(v, d) for n, v, d in rest if n in outputs}, outputs))
            rest = [r for r in rest if r[0] not in result]
        if as_numpy and self._on_cuda:
            result.update(zip([n for n, _, _ in rest], device_to_host([_cast(v, d) for _, v, d in rest])))
        else:
            if not fresh:
                tensors = [r for r in rest if isinstance(r[1], torch.Tensor)]
                copied = dict(zip([n for n, _, _ in tensors],
                                  copy_out([v for _, v, _ in tensors], [d for _, _, d in tensors])))
                rest = [(n, copied.get(n, v), d) for n, v, d in rest]
            for n, v, _ in rest:
                result[n] = to_user_value(dense(v) if fresh else v, as_numpy)
        return {n: result[n] for n in names}

    __call__ = execute
