"""Per-layer timing of an engine (trtexec's --dumpProfile / --exportProfile).

Layers run eagerly, one after the other, with a timestamp around each: CUDA events on the
execution stream (no synchronisation between layers, so the GPU is not starved more than
eager execution already starves it) or the host clock on the CPU. A layer's time is what
the device spent between its two timestamps, so a layer too small to hide its launch
shows its launch cost; the sum is the eager latency, not the CUDA-graph latency.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class LayerTime:
    name: str
    op_type: str
    tactic: str
    total_ms: float  # over all profiled runs
    average_ms: float
    median_ms: float
    percentage: float  # of the summed layer time


@dataclass(frozen=True)
class LayerProfile:
    runs: int
    layers: tuple[LayerTime, ...]

    @property
    def total_average_ms(self) -> float:
        return sum(layer.average_ms for layer in self.layers)

    def by_op(self, with_tactic: bool = False) -> list[tuple[str, int, float]]:
        """(op type, or "op/tactic", layer count, average ms per inference), slowest first."""
        groups: dict[str, list[float]] = {}
        for t in self.layers:
            entry = groups.setdefault(f"{t.op_type}/{t.tactic}" if with_tactic else t.op_type, [0, 0.0])
            entry[0] += 1
            entry[1] += t.average_ms
        return sorted(((key, int(n), ms) for key, (n, ms) in groups.items()), key=lambda g: -g[2])

    def to_json(self) -> list[dict[str, Any]]:
        """trtexec's --exportProfile layout: a count record, then one record per layer."""
        return [{"count": self.runs}] + [
            {"name": t.name, "opType": t.op_type, "tactic": t.tactic, "timeMs": t.total_ms,
             "averageMs": t.average_ms, "medianMs": t.median_ms, "percentage": t.percentage}
            for t in self.layers]


class StepTimer:
    """Timestamps around each executor step, for `runs` runs of the same graph."""

    def __init__(self, steps: int, device: torch.device):
        self.steps = steps
        self.cuda = device.type == "cuda"
        self._open: list[Any] = [None] * steps
        self._pairs: list[list[tuple[Any, Any]]] = [[] for _ in range(steps)]

    def _stamp(self) -> Any:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def start(self, step: int) -> None:
        self._open[step] = self._stamp()

    def stop(self, step: int) -> None:
        self._pairs[step].append((self._open[step], self._stamp()))

    def milliseconds(self) -> list[list[float]]:
        """Per step, the time of each run (waits for the device once)."""
        if self.cuda:
            torch.cuda.synchronize()
            return [[a.elapsed_time(b) for a, b in pairs] for pairs in self._pairs]
        return [[(b - a) * 1e3 for a, b in pairs] for pairs in self._pairs]


def layer_profile(nodes: list[Any], per_step_ms: list[list[float]], runs: int, skip: int = 0) -> LayerProfile:
    """The profile of `nodes` (engine layers in order) from a StepTimer's times, leaving
    out the first `skip` runs (warm-up)."""
    kept = [times[skip:] for times in per_step_ms]
    totals = [sum(times) for times in kept]
    grand = sum(totals) or 1.0
    layers = tuple(
        LayerTime(node.name, node.op_type, str(node.meta.get("tactic", "")), total,
                  total / max(len(times), 1), statistics.median(times) if times else 0.0, 100.0 * total / grand)
        for node, times, total in zip(nodes, kept, totals))
    return LayerProfile(runs, layers)
