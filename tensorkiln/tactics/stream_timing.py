"""Times each candidate branch of a tuned network one way and the other: the region's layers on
one stream, and with the branch's side on an auxiliary stream beside the rest.

The builder keeps an auxiliary stream for a branch only where that was faster (planner/streams.py
finds the branches). The network runs layer by layer with the chosen tactics on the tuner's
seeded inputs at each tuning shape; when it reaches a branch's region, both forms of the region
are captured into CUDA graphs and replayed, as the engine replays its graph: a CUDA graph runs
the two streams' kernels as parallel branches. The timing cache keeps the two times, keyed by
the region's layers, tactics and inputs, so a warm rebuild times nothing again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, Union

import torch

from ..ir import Graph
from ..ops import RunContext
from .autotune import (CaptureFailed, Shapes, TuningOptions, constant_on_device, measure, random_feeds,
                       release_after, store_outputs)
from .registry import find_tactic
from .select import profile_tactic
from .streams import AuxStreams
from .timing_cache import CacheEntry, TimingCache, attrs_digest, layer_key

SERIAL, AUX = "one stream", "aux stream"


@dataclass(frozen=True)
class BranchTiming:
    serial_ms: float  # the region on one stream (mean over the tuning shapes)
    aux_ms: float     # with the side on an auxiliary stream
    cached: bool      # every time came from the timing cache


def time_branches(graph: Graph, device: torch.device, shapes: Sequence[Shapes],
                  branches: Sequence[tuple[Sequence[int], Sequence[int]]], options: TuningOptions,
                  cache: Optional[TimingCache], environment: Mapping[str, Any]) -> list[Union[BranchTiming, str]]:
    """For each (side layers, region layers) branch, its timing, or why it could not be timed.
    Layers are positions in graph.nodes, whose meta["tactic"] the tuner has set."""
    nodes = graph.nodes
    constants, release = _constants(graph, device), release_after(graph)
    starting: dict[int, list[int]] = {}
    for b, (_, region) in enumerate(branches):
        starting.setdefault(region[0], []).append(b)
    samples: list[list[tuple[float, float, bool]]] = [[] for _ in branches]
    failed: dict[int, str] = {}
    ctx = RunContext(device, _no_subgraphs)
    aux = torch.cuda.Stream(device)
    with torch.no_grad():
        for index, profile in enumerate(shapes):
            tactics = _tactics(graph, device, index)
            env = {**constants, **_inputs(graph, profile, device, options)}
            for i, node in enumerate(nodes):
                for b in starting.get(i, ()):
                    if b in failed:
                        continue
                    side, region = branches[b]
                    try:
                        samples[b].append(_time_region(graph, tactics, ctx, env, side, region, aux, options,
                                                       cache, environment))
                    except CaptureFailed as exc:
                        failed[b] = f"the region cannot be captured: {exc}"
                args = [None if v is None else env[v.name] for v in node.inputs]
                store_outputs(env, node, tactics[i].run(ctx, args, node.attrs))
                for name in release[i]:
                    env.pop(name, None)
    return [failed[b] if b in failed else
            BranchTiming(serial_ms=sum(s for s, _, _ in got) / len(got), aux_ms=sum(a for _, a, _ in got) / len(got),
                         cached=all(c for _, _, c in got))
            for b, got in enumerate(samples)]


def time_network(graph: Graph, device: torch.device, shapes: Sequence[Shapes], schedule: Any,
                 options: TuningOptions, cache: Optional[TimingCache],
                 environment: Mapping[str, Any]) -> tuple[float, float, bool]:
    """(ms on one stream, ms run by `schedule` (a planner.streams.StreamSchedule), from the cache)
    of the whole network, each replayed from a CUDA graph and averaged over the tuning shapes.
    Branches timed faster one by one need not make the whole faster: weights read cold and the
    other layers' traffic count here. Raises CaptureFailed when the network cannot be captured."""
    nodes = graph.nodes
    key = {"network": [[n.op_type, n.domain, attrs_digest(n.attrs), n.meta.get("profile_tactics", n.meta["tactic"]),
                        [None if v is None else str(v.type) for v in n.inputs]] for n in nodes],
           "streams": [0 if sync is None else sync.stream for sync in schedule.layers],
           "shapes": [{k: list(v) for k, v in p.items()} for p in shapes], "environment": dict(environment)}
    entry = cache.lookup(key) if cache is not None else None
    if entry is not None and set(entry.times_ms) == {SERIAL, AUX}:
        return entry.times_ms[SERIAL], entry.times_ms[AUX], True
    constants, release = _constants(graph, device), release_after(graph)
    ctx = RunContext(device, _no_subgraphs)
    streams = AuxStreams(device, schedule)

    def network(feeds: Mapping[str, Any], aux: Optional[AuxStreams], tactics: list[Any]) -> None:
        # The executor's loop, as the engine runs it (runtime/executor.py), less its bookkeeping.
        env = dict(feeds)
        if aux is not None:
            aux.begin()
        for i, node in enumerate(nodes):
            args = [None if v is None else env[v.name] for v in node.inputs]
            sync = schedule.layers[i] if aux is not None else None
            if sync is None:
                store_outputs(env, node, tactics[i].run(ctx, args, node.attrs))
            else:
                aux.enter(sync)
                try:
                    store_outputs(env, node, tactics[i].run(ctx, args, node.attrs))
                finally:
                    aux.leave(sync, i, args)
            for name in release[i]:
                env.pop(name, None)
        if aux is not None:
            aux.end()

    totals = {SERIAL: 0.0, AUX: 0.0}
    with torch.no_grad():
        for index, profile in enumerate(shapes):
            tactics = _tactics(graph, device, index)
            feeds = {**constants, **_inputs(graph, profile, device, options)}
            for name, aux in ((SERIAL, None), (AUX, streams)):
                totals[name] += measure(lambda: network(feeds, aux, tactics), device, options.avg_timing,
                                        options.measurements, graphs=True)
    times = {name: total / len(shapes) for name, total in totals.items()}
    if cache is not None:
        cache.store(key, CacheEntry(min(times, key=times.__getitem__), times))
    return times[SERIAL], times[AUX], False


def _tactics(graph: Graph, device: torch.device, profile: int) -> list[Any]:
    """Each layer's tactic chosen for the profile at this position."""
    return [find_tactic(device.type, n.op_type, n.domain, profile_tactic(n, profile)) for n in graph.nodes]


def _constants(graph: Graph, device: torch.device) -> dict[str, Any]:
    return {v.name: constant_on_device(v.const, device) for v in graph.initializers}


def _inputs(graph: Graph, profile: Shapes, device: torch.device, options: TuningOptions) -> dict[str, Any]:
    """The tuner's seeded inputs at one tuning shape, by name."""
    return {v.name: x for v, x in zip(graph.inputs, random_feeds(graph, profile, device, options.seed))}


def _no_subgraphs(graph: Graph, feeds: Sequence[Any]) -> list[Any]:
    raise RuntimeError("layers with subgraphs have no auxiliary streams")


def _time_region(graph: Graph, tactics: list[Any], ctx: RunContext, env: Mapping[str, Any], side: Sequence[int],
                 region: Sequence[int], aux: torch.cuda.Stream, options: TuningOptions,
                 cache: Optional[TimingCache], environment: Mapping[str, Any]) -> tuple[float, float, bool]:
    """(one stream ms, auxiliary stream ms, from the cache) for a region, from the values in `env`."""
    nodes = graph.nodes
    device = ctx.device
    side_set = set(side)
    beside = [j for j in region[:-1] if j not in side_set]
    join = region[-1]
    described: list[Any] = []

    def run_layer(j: int, local: dict[str, Any], describe: bool = False) -> None:
        node = nodes[j]
        args = [None if v is None else local[v.name] if v.name in local else env[v.name] for v in node.inputs]
        if describe:
            described.append(layer_key(node, args, [tactics[j].name], {}))
        store_outputs(local, node, tactics[j].run(ctx, args, node.attrs))

    def serial() -> None:
        local: dict[str, Any] = {}
        for j in region:
            run_layer(j, local)

    def overlapped() -> None:
        # The side's values are freed at the end of each call, on the auxiliary stream's pool; the
        # next call's side work starts only after this call's join (the wait below), which orders
        # any reuse of their memory after the join has read them.
        local: dict[str, Any] = {}
        caller = torch.cuda.current_stream(device)
        aux.wait_stream(caller)
        with torch.cuda.stream(aux):
            for j in side:
                run_layer(j, local)
        for j in beside:
            run_layer(j, local)
        caller.wait_stream(aux)
        run_layer(join, local)

    first: dict[str, Any] = {}
    for j in region:
        run_layer(j, first, describe=True)
    key = {"streams": described, "side": [region.index(j) for j in side], "environment": dict(environment)}
    entry = cache.lookup(key) if cache is not None else None
    if entry is not None and set(entry.times_ms) == {SERIAL, AUX}:
        return entry.times_ms[SERIAL], entry.times_ms[AUX], True
    times = {name: measure(call, device, options.avg_timing, options.measurements, graphs=True)
             for name, call in ((SERIAL, serial), (AUX, overlapped))}
    if cache is not None:
        cache.store(key, CacheEntry(min(times, key=times.__getitem__), times))
    return times[SERIAL], times[AUX], False


