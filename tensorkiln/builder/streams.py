"""Auxiliary streams at build: which independent branches run beside the rest, on CUDA.

planner/streams.py finds the branches; tactics/stream_timing.py times each one way and the other
on the device. A branch's side goes on an auxiliary stream only where its region was faster so,
and the kept branches only where the whole engine was faster with them (branches that each
overlapped well alone may not together, with the weights read cold). The choice is stored per
layer (node.meta["stream"]) and reported in build_info["streams"].
"""

from __future__ import annotations

from typing import Any, Optional, Union

import torch

from ..ir import Graph
from ..planner.streams import assign_streams, find_branches, stream_schedule
from ..tactics.autotune import TuningOptions, TuningSummary
from ..tactics.stream_timing import time_branches, time_network
from ..tactics.timing_cache import TimingCache
from .config import DEFAULT_MAX_AUX_STREAMS, BuilderConfig

# A branch gets an auxiliary stream only when that makes its region at least this much faster,
# and the kept branches only when they make the whole engine at least ENGINE_MIN_GAIN faster.
AUX_STREAM_MIN_GAIN = 0.03
ENGINE_MIN_GAIN = 0.005


def plan_streams(graph: Graph, device: torch.device, config: BuilderConfig, shapes: Union[list, str],
                 summary: TuningSummary, options: TuningOptions, cache: Optional[TimingCache],
                 environment: dict[str, Any]) -> dict[str, Any]:
    """Put the side of each branch that was timed faster so on an auxiliary stream
    (node.meta["stream"]); the report says what was timed and kept."""
    limit = DEFAULT_MAX_AUX_STREAMS if config.max_aux_streams is None else config.max_aux_streams
    report: dict[str, Any] = {"max_aux_streams": limit, "aux_streams": 0, "branches": []}
    branches = find_branches(graph)
    if not branches:
        return report
    names = [n.name for n in graph.nodes]
    entries = [{"side": [names[i] for i in b.side], "join": names[b.join]} for b in branches]
    report["branches"] = entries
    skipped = ("--maxAuxStreams=0" if limit == 0 else shapes if isinstance(shapes, str)
               else summary.skipped or summary.stopped or
               (None if summary.graph_timing else summary.graph_timing_off or "the engine is not captured"))
    if skipped:
        report["skipped"] = skipped
        return report
    try:
        timings = time_branches(graph, device, shapes, [(b.side, b.region) for b in branches], options, cache,
                                environment)
    except Exception as exc:  # noqa: BLE001 - branches stay on the main stream, with the reason
        report["skipped"] = f"timing the branches failed: {type(exc).__name__}: {exc}"
        return report
    kept = []
    for branch, entry, timing in zip(branches, entries, timings):
        if isinstance(timing, str):
            entry["reason"] = timing
            continue
        entry.update(one_stream_ms=round(timing.serial_ms, 6), aux_stream_ms=round(timing.aux_ms, 6),
                     from_cache=timing.cached)
        if timing.aux_ms < timing.serial_ms * (1 - AUX_STREAM_MIN_GAIN):
            kept.append((branch, entry))
        else:
            entry["reason"] = "not faster on an auxiliary stream"
    stream_of, given = assign_streams(graph, [b for b, _ in kept], limit)
    if any(stream_of):
        # The branches were timed one by one; the whole engine must be faster with them too.
        try:
            one_ms, aux_ms, _ = time_network(graph, device, shapes, stream_schedule(graph, stream_of), options, cache,
                                             environment)
        except Exception as exc:  # noqa: BLE001 - the engine then runs on one stream, with the reason
            whole = f"timing the whole engine with them failed: {type(exc).__name__}: {exc}"
        else:
            report.update(engine_one_stream_ms=round(one_ms, 6), engine_aux_streams_ms=round(aux_ms, 6))
            whole = None if aux_ms < one_ms * (1 - ENGINE_MIN_GAIN) else (
                f"the whole engine was not faster with them ({aux_ms:.4g} ms against {one_ms:.4g} ms on one stream)")
        if whole:
            stream_of, given = [0] * len(graph.nodes), [0] * len(kept)
            for _, entry in kept:
                entry["reason"] = whole
    for (_, entry), stream in zip(kept, given):
        if stream:
            entry["stream"] = stream
        elif "reason" not in entry:
            entry["reason"] = f"overlaps branches on all {limit} auxiliary streams"
    for node, stream in zip(graph.nodes, stream_of):
        if stream:
            node.meta["stream"] = stream
    report["aux_streams"] = max(stream_of, default=0)
    return report
