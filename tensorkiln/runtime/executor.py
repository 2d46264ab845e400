"""Runs a graph whose nodes carry chosen tactics: the runtime's inner loop.

Values live in a list of slots indexed by integers computed once; a value's slot is
cleared after its last reader so memory is returned as soon as possible.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from ..errors import EngineFormatError, ExecutionError, TensorkilnError
from ..ir import DType, Graph, Node, free_names_of_subgraphs, numpy_to_torch
from ..ops import RunContext, get_op
from ..planner import compute_liveness
from ..planner.arena import is_view
from ..planner.streams import LayerSync, StreamSchedule, stream_schedule
from ..tactics.streams import AuxStreams
from .arena import ArenaLayout, BoundArena, Place
from .host_values import HostValues, find_host_values
from .profiler import StepTimer

TacticFn = Callable[[RunContext, list[Optional[torch.Tensor]], dict[str, Any]], Any]
Resolve = Callable[[Node], TacticFn]
# Casts among these a copy_ performs exactly as the Cast layer does (round to nearest even).
_FOLDABLE_CAST_DTYPES = frozenset({DType.FLOAT16, DType.BFLOAT16, DType.FLOAT32})


class _Step:
    __slots__ = ("fn", "attrs", "ins", "outs", "release", "node", "index", "sync", "device_copies")

    def __init__(self, fn: TacticFn, attrs: dict, ins: list[int], outs: list[int], release: list[int], node: Node,
                 index: int, sync: Optional[LayerSync], device_copies: tuple[tuple[int, int], ...] = ()):
        self.fn, self.attrs, self.ins, self.outs, self.release, self.node = fn, attrs, ins, outs, release, node
        # The layer's position in the graph (its stream events are keyed by it) and what it does
        # about streams (None: nothing, on the caller's stream).
        self.index, self.sync = index, sync
        # Of a layer computing shape values on the host (host_values.py): (host slot, device slot)
        # of its outputs that device layers read as data.
        self.device_copies = device_copies


def _to_device(array: np.ndarray, device: torch.device) -> Any:
    if array.dtype == object or not DType.from_numpy(array.dtype).has_torch:
        return array  # strings and dtypes torch lacks stay numpy: only the ops made for them read them
    return numpy_to_torch(array).to(device)


def _stream_of(node: Node) -> int:
    stream = node.meta.get("stream", 0)
    if type(stream) is not int or stream < 0:
        raise EngineFormatError(f"engine layer '{node.name}' has stream {stream!r}: a stream is a number >= 0 "
                                f"(0: the caller's)")
    return stream


class GraphExecutor:
    def __init__(self, graph: Graph, device: torch.device, resolve: Resolve,
                 shape_values_on_host: Optional[bool] = None):
        """`shape_values_on_host`: run the layers computing shape values on the CPU
        (host_values.py); by default where the device is not the CPU itself."""
        self.graph = graph
        self.device = device
        self.resolve = resolve
        self.slot_of: dict[str, int] = {}
        captured = sorted(graph.free_names())
        for name in captured:
            self._slot(name)
        self.captured = [(self.slot_of[n], n) for n in captured]
        self.input_slots = [self._slot(v.name) for v in graph.inputs]
        for v in graph.initializers:
            self._slot(v.name)
        for n in graph.nodes:
            for v in n.outputs:
                self._slot(v.name)
        if shape_values_on_host is None:
            shape_values_on_host = device.type != "cpu"
        self.shape_values_on_host = shape_values_on_host
        self.host = find_host_values(graph) if shape_values_on_host else HostValues(frozenset(), frozenset())
        # Device copies of host values, by content (dtype, shape, bytes): kept for the executor's
        # life, since a captured CUDA graph reads the copy it was captured with on every replay.
        self._device_copies: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        # Host value name -> the slot of its device copy, for the readers that need one.
        self._device_slot_of: dict[str, int] = {}
        for n in graph.nodes:
            for name in free_names_of_subgraphs(n) & self.host.values:
                self._device_slot(name)
        live = compute_liveness(graph)
        # Layers the builder put on auxiliary streams (node.meta["stream"]); None: all on one.
        self.schedule: Optional[StreamSchedule] = stream_schedule(graph, [_stream_of(n) for n in graph.nodes])
        syncs = self.schedule.layers if self.schedule is not None else [None] * len(graph.nodes)
        # CPU copies of the constants read as host values, by slot (see _input_slots).
        host_constants: dict[int, Any] = {}
        inputs = [self._input_slots(n, host_constants, i in self.host.layers) for i, n in enumerate(graph.nodes)]
        self.output_slots = [self._device_slot(v.name) if v.name in self.host.values else self.slot_of[v.name]
                             for v in graph.outputs]
        template: list[Any] = [None] * len(self.slot_of)
        for v in graph.initializers:
            template[self.slot_of[v.name]] = _to_device(v.const, device)
        for slot, value in host_constants.items():
            template[slot] = value
        self.template = template
        self._host_ctx = RunContext(torch.device("cpu"), self._no_subgraphs)
        self.steps = [
            _Step(self._on_host(n) if i in self.host.layers else resolve(n), n.attrs, inputs[i],
                  [self.slot_of[v.name] for v in n.outputs],
                  [self.slot_of[name] for name in live.release_after[i]], n, i, syncs[i],
                  tuple((self.slot_of[v.name], self._device_slot_of[v.name]) for v in n.outputs
                        if v.name in self._device_slot_of))
            for i, n in enumerate(graph.nodes)
        ]
        self._children: dict[int, GraphExecutor] = {}

    def deferring_output_casts(self) -> tuple["GraphExecutor", list[Optional[torch.dtype]]]:
        """This executor without the Cast layers that only turn a value into a graph output (fp16
        results given as fp32, say), and each output's dtype to cast to (None: as produced). The
        CUDA-graph path copies its outputs out of the graph anyway: that copy can convert them,
        one pass where the Cast layer and the copy were two (BERT's fp32 hidden states at batch
        64: ~15 us)."""
        readers: dict[int, int] = {}
        for step in self.steps:
            for i in step.ins:
                readers[i] = readers.get(i, 0) + 1
        outputs, dtypes, folded = list(self.output_slots), [None] * len(self.output_slots), set()
        for step in self.steps:
            node = step.node
            if node.op_type != "Cast" or node.domain not in ("", "ai.onnx") or step.outs[0] not in outputs:
                continue
            source, target = node.inputs[0], node.outputs[0]
            if (step.index in self.host.layers or readers.get(step.outs[0], 0)
                    or self.output_slots.count(step.outs[0]) != 1
                    or source.dtype not in _FOLDABLE_CAST_DTYPES or target.dtype not in _FOLDABLE_CAST_DTYPES
                    or step.ins[0] in self.input_slots or self.template[step.ins[0]] is not None):
                continue
            i = outputs.index(step.outs[0])
            outputs[i], dtypes[i] = step.ins[0], target.dtype.torch
            folded.add(id(step))
        if not folded:
            return self, dtypes
        kept = set(outputs)
        deferred = copy.copy(self)
        deferred.steps = [_Step(s.fn, s.attrs, s.ins, s.outs, [r for r in s.release if r not in kept], s.node,
                                s.index, s.sync, s.device_copies)
                          for s in self.steps if id(s) not in folded]
        deferred.output_slots = outputs
        return deferred, dtypes

    def arena_places(self, layout: ArenaLayout, may_alias: Callable[[Node], bool]
                     ) -> tuple[list[list[Optional[Place]]], list[list[tuple[Place, ...]]]]:
        """Per layer (as this executor runs them), per output: the value's place in the arena, and
        the places it may point into. Values that outlive the call (this executor's outputs, whose
        buffers the plan already leaves out except where deferring_output_casts made a new one)
        and values made on the host have no place. A value may point into its own place and, where
        its layer may return views of its inputs (`may_alias`; the view ops), into theirs: the plan
        keeps those alive as long (planner/arena.py)."""
        name_of = {slot: name for name, slot in self.slot_of.items()}
        kept = {name_of[s] for s in self.output_slots} | set(self.host.values)
        on_host = self.host.layers
        outputs = [[] if step.index in on_host else [name_of[s] for s in step.outs] for step in self.steps]
        places = layout.places(outputs, kept)
        reach: dict[str, tuple[Place, ...]] = {}
        regions: list[list[tuple[Place, ...]]] = []
        for step, row in zip(self.steps, places):
            node, inherited = step.node, ()
            if step.index not in on_host and (is_view(node) or may_alias(node)):
                read = [v.name for v in node.inputs if v is not None] + sorted(free_names_of_subgraphs(node))
                inherited = tuple(dict.fromkeys(p for name in read for p in reach.get(name, ())))
            regions.append([])
            for v, place in zip(node.outputs, row):
                reach[v.name] = ((place,) if place is not None else ()) + inherited
                regions[-1].append(reach[v.name])
        return places, regions

    def _input_slots(self, node: Node, host_constants: dict[int, Any], on_host: bool) -> list[int]:
        """Slots of a node's inputs. A constant an op reads as host values (shape, axes,
        pads: `Op.host_inputs`), or any constant of a layer run on the host, gets a CPU copy,
        so reading it neither waits for the device nor breaks CUDA-graph capture. A host value
        read as device data comes from its device copy."""
        op = get_op(node.op_type, node.domain)
        host = op.host_inputs if op is not None and self.device.type != "cpu" else ()
        slots = []
        for i, v in enumerate(node.inputs):
            if v is None:
                slots.append(-1)
            elif (on_host or i in host) and v.const is not None and v.const.dtype != object:
                slot = self._slot(f"{v.name}@host")
                if slot not in host_constants:
                    host_constants[slot] = numpy_to_torch(v.const)
                slots.append(slot)
            elif v.name in self.host.values and not on_host and i not in host:
                slots.append(self._device_slot(v.name))
            else:
                slots.append(self.slot_of[v.name])
        return slots

    def _device_slot(self, name: str) -> int:
        """The slot of host value `name`'s device copy (made after the layer giving it runs)."""
        slot = self._device_slot_of.get(name)
        if slot is None:
            slot = self._device_slot_of[name] = self._slot(f"{name}@device")
        return slot

    def _on_host(self, node: Node) -> TacticFn:
        """The layer's op reference, run on the CPU whatever context the run hands it."""
        op = get_op(node.op_type, node.domain)
        if op is None:
            raise EngineFormatError(f"engine layer '{node.name}' has op {node.domain or 'ai.onnx'}::{node.op_type}, "
                                    f"which this version does not know")
        reference, host = op.reference, self._host_ctx
        return lambda ctx, args, attrs: reference(host, args, attrs)

    @staticmethod
    def _no_subgraphs(graph: Graph, inputs: Sequence[Any]) -> list[Any]:
        raise ExecutionError(f"a layer run on the host has no subgraphs (asked to run '{graph.name}')")

    def _on_device(self, value: torch.Tensor) -> torch.Tensor:
        """The device copy of a host value, one per distinct content. Made outside CUDA-graph
        capture in practice (a signature's first call runs eagerly with the same shapes, so the
        capture finds it here); a copy made during capture reads pinned memory kept here too."""
        value = value.contiguous()
        # The bytes as uint8: numpy has no bfloat16 (or float8) to read them through.
        key = (value.dtype, tuple(value.shape), value.reshape(-1).view(torch.uint8).numpy().tobytes())
        found = self._device_copies.get(key)
        if found is None:
            if self.device.type != "cuda":
                found = (value, value.to(self.device))
            elif torch.cuda.is_current_stream_capturing():
                source = value.pin_memory()
                found = (source, source.to(self.device, non_blocking=True))
            else:
                found = (value, value.to(self.device))
                # Other contexts (other streams) may read the copy next: it must be there for all.
                torch.cuda.current_stream(self.device).synchronize()
            self._device_copies[key] = found
        return found[1]

    def _slot(self, name: str) -> int:
        if name not in self.slot_of:
            self.slot_of[name] = len(self.slot_of)
        return self.slot_of[name]

    def _child(self, graph: Graph) -> "GraphExecutor":
        ex = self._children.get(id(graph))
        if ex is None:
            ex = self._children[id(graph)] = GraphExecutor(graph, self.device, self.resolve, self.shape_values_on_host)
        return ex

    def run(self, feeds: Sequence[Any], outer: Optional[Callable[[str], Any]] = None,
            record: Optional[dict[str, Any]] = None, timer: Optional[StepTimer] = None,
            streams: Optional[AuxStreams] = None, arena: Optional[BoundArena] = None) -> list[Any]:
        """Run the graph. With `record`, every layer output of this graph (not of subgraphs)
        is also stored there by tensor name, in layer order (for per-layer debugging). With
        `timer`, each layer (a control-flow layer with its subgraphs) is timestamped. With
        `streams` (made for this executor's schedule), layers the builder put on auxiliary
        streams run there; without, every layer runs on the current stream. With `arena`
        (bound to this executor's places), layers write their outputs into their places in it."""
        slots = list(self.template)
        for s, x in zip(self.input_slots, feeds):
            slots[s] = x
        for s, name in self.captured:
            if outer is None:
                raise ExecutionError(f"graph '{self.graph.name}' reads '{name}', which no enclosing graph defines")
            slots[s] = outer(name)
        read = self._device_slot_of
        ctx = RunContext(self.device, lambda g, xs: self._child(g).run(
            xs, lambda name: slots[read[name] if name in read else self.slot_of[name]]))
        if streams is not None:
            streams.begin()
        for index, step in enumerate(self.steps):
            args = [slots[i] if i >= 0 else None for i in step.ins]
            sync = step.sync if streams is not None else None
            if arena is not None:
                ctx.places = arena.places[index]
            try:
                if sync is not None:
                    streams.enter(sync)
                if timer is None:
                    out = step.fn(ctx, args, step.attrs)
                else:
                    timer.start(index)
                    out = step.fn(ctx, args, step.attrs)
                    timer.stop(index)
                for host_slot, device_slot in step.device_copies:
                    produced = out if isinstance(out, torch.Tensor) else out[step.outs.index(host_slot)]
                    slots[device_slot] = self._on_device(produced)
            except TensorkilnError:
                raise
            except Exception as exc:  # noqa: BLE001 - a kernel failure names the layer
                node = step.node
                shapes = ", ".join("None" if a is None else f"{tuple(a.shape)}:{str(a.dtype).replace('torch.', '')}"
                                   if hasattr(a, "shape") else type(a).__name__ for a in args)
                raise ExecutionError(f"layer '{node.name}' ({node.op_type}) failed on inputs [{shapes}]: "
                                     f"{type(exc).__name__}: {exc}") from exc
            finally:
                if sync is not None:
                    streams.leave(sync, step.index, args)
            single = isinstance(out, (torch.Tensor, np.ndarray))
            if arena is not None:
                settled = arena.settle(index, (out,) if single else out)
                if settled is not None:
                    out = settled[0] if single else settled
            if single:
                slots[step.outs[0]] = out
            else:
                for s, o in zip(step.outs, out):
                    slots[s] = o
            if record is not None:
                for v, s in zip(step.node.outputs, step.outs):
                    record[v.name] = slots[s]
            for s in step.release:
                slots[s] = None
        if streams is not None:
            streams.end()
        return [slots[s] for s in self.output_slots]
