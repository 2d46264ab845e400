"""Printing: trtexec-style log lines, latency statistics and the performance summary, rich consoles."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence, TextIO

from rich.console import Console

if TYPE_CHECKING:
    from ..runtime.profiler import LayerProfile


def make_console(stream: TextIO) -> Console:
    """A rich Console on `stream`; wide when not a terminal so piped tables are not squeezed to 80 columns."""
    is_tty = hasattr(stream, "isatty") and stream.isatty()
    return Console(file=stream, width=None if is_tty else 160, highlight=False, soft_wrap=False)


class Log:
    """trtexec's log lines: `[I] ...`, `[W] ...`, `[V] ...` (only with --verbose)."""

    def __init__(self, stream: TextIO, verbose: bool = False):
        self.stream = stream
        self.verbose_enabled = verbose

    def info(self, message: str = "") -> None:
        self._write("[I] ", message)

    def warn(self, message: str) -> None:
        self._write("[W] ", message)

    def verbose(self, message: str = "") -> None:
        if self.verbose_enabled:
            self._write("[V] ", message)

    def raw(self, message: str) -> None:
        self.stream.write(message + "\n")
        self.stream.flush()

    def _write(self, prefix: str, message: str) -> None:
        for line in (message.splitlines() or [""]):
            self.stream.write(prefix + line + "\n")
        self.stream.flush()


def one_line(message: str) -> str:
    """Multi-line error texts (e.g. the list of unsupported nodes) joined into one line."""
    parts = [part.strip() for part in str(message).splitlines()]
    parts = [part[2:] if part.startswith("- ") else part for part in parts]
    parts = [p for p in parts if p]
    if not parts:
        return ""
    if len(parts) == 1:
        return parts[0]
    return parts[0].rstrip(":") + ": " + "; ".join(parts[1:])


def print_error(stream: TextIO, prog: str, message: str) -> None:
    stream.write(f"{prog}: error: {one_line(message)}\n")
    stream.flush()


# ---- latency statistics, computed as trtexec computes them ------------------------------

def percentile(sorted_values: Sequence[float], p: float) -> float:
    """trtexec's findPercentile: drop the top (100-p)% and take the largest remaining value."""
    if not sorted_values:
        return math.nan
    count = len(sorted_values)
    # (100 - p) * count / 100 rather than (1 - p/100) * count: the latter makes 90% of 100 values
    # 9.999... and picks the 91st (trtexec's float32 arithmetic happens to round the other way).
    exclude = int((100.0 - p) * count / 100.0)
    return sorted_values[max(count - 1 - exclude, 0)]


def median(sorted_values: Sequence[float]) -> float:
    return statistics.median(sorted_values) if sorted_values else math.nan


def fmt(value: float) -> str:
    """Six significant digits, the default precision of trtexec's C++ stream output."""
    return f"{value:.6g}"


@dataclass(frozen=True)
class Stats:
    min: float
    max: float
    mean: float
    median: float
    percentiles: tuple[tuple[float, float], ...]
    cov: float  # coefficient of variation, percent

    @staticmethod
    def of(values: Sequence[float], percentiles: Sequence[float]) -> "Stats":
        ordered = sorted(values)
        mean = statistics.fmean(ordered) if ordered else math.nan
        std = statistics.pstdev(ordered) if len(ordered) > 1 else 0.0
        return Stats(min=ordered[0] if ordered else math.nan, max=ordered[-1] if ordered else math.nan, mean=mean,
                     median=median(ordered), percentiles=tuple((p, percentile(ordered, p)) for p in percentiles),
                     cov=100.0 * std / mean if mean else 0.0)

    def line(self, unit: str = "ms") -> str:
        parts = [f"min = {fmt(self.min)} {unit}", f"max = {fmt(self.max)} {unit}", f"mean = {fmt(self.mean)} {unit}",
                 f"median = {fmt(self.median)} {unit}"]
        parts += [f"percentile({p:g}%) = {fmt(v)} {unit}" for p, v in self.percentiles]
        return ", ".join(parts)


@dataclass(frozen=True)
class IterationTimes:
    """One timed inference, in milliseconds from the start of the timed run (trtexec's --exportTimes fields)."""

    start_ms: float
    end_enqueue_ms: float
    start_h2d_ms: float
    end_h2d_ms: float
    start_compute_ms: float
    end_compute_ms: float
    start_d2h_ms: float
    end_d2h_ms: float

    @property
    def latency_ms(self) -> float:
        return self.end_d2h_ms - self.start_ms

    @property
    def enqueue_ms(self) -> float:
        return self.end_enqueue_ms - self.start_compute_ms

    @property
    def h2d_ms(self) -> float:
        return self.end_h2d_ms - self.start_h2d_ms

    @property
    def compute_ms(self) -> float:
        return self.end_compute_ms - self.start_compute_ms

    @property
    def d2h_ms(self) -> float:
        return self.end_d2h_ms - self.start_d2h_ms

    def as_json(self) -> dict[str, float]:
        return {"startEnqMs": self.start_compute_ms, "endEnqMs": self.end_enqueue_ms,
                "startH2DMs": self.start_h2d_ms, "endH2DMs": self.end_h2d_ms,
                "startComputeMs": self.start_compute_ms, "endComputeMs": self.end_compute_ms,
                "startD2HMs": self.start_d2h_ms, "endD2HMs": self.end_d2h_ms,
                "h2dMs": self.h2d_ms, "computeMs": self.compute_ms, "d2hMs": self.d2h_ms,
                "latencyMs": self.latency_ms,
                # trtexec's names are above; these two are the plain ones.
                "startMs": self.start_ms, "endMs": self.end_d2h_ms}


def print_trace_averages(log: Log, times: Sequence[IterationTimes], avg_runs: int, on_gpu: bool) -> None:
    """The --verbose "Average on N runs" lines trtexec prints under "=== Trace details ===" (its name)."""
    log.verbose("=== Trace details ===")
    log.verbose(f"Trace averages of {avg_runs} runs:")
    compute_name = "GPU latency" if on_gpu else "Compute latency"
    for first in range(0, len(times), avg_runs):
        chunk = times[first:first + avg_runs]
        n = len(chunk)
        compute = sum(t.compute_ms for t in chunk) / n
        host = sum(t.latency_ms for t in chunk) / n
        enqueue = sum(t.enqueue_ms for t in chunk) / n
        log.verbose(f"Average on {n} runs - {compute_name}: {fmt(compute)} ms - Host latency: {fmt(host)} ms "
                    f"(enqueue {fmt(enqueue)} ms)")


def print_performance_summary(log: Log, times: Sequence[IterationTimes], percentiles: Sequence[float],
                              on_gpu: bool, data_transfers: bool) -> None:
    """trtexec's "=== Performance summary ===" block."""
    count = len(times)
    walltime_ms = times[-1].end_d2h_ms - times[0].start_ms if times else 0.0
    throughput = count / (walltime_ms / 1000.0) if walltime_ms > 0 else math.inf
    latency = Stats.of([t.latency_ms for t in times], percentiles)
    compute = Stats.of([t.compute_ms for t in times], percentiles)
    log.info("=== Performance summary ===")
    log.info(f"Throughput: {fmt(throughput)} qps")
    log.info(f"Latency: {latency.line()}")
    log.info(f"Enqueue Time: {Stats.of([t.enqueue_ms for t in times], percentiles).line()}")
    if on_gpu:
        if data_transfers:
            log.info(f"H2D Latency: {Stats.of([t.h2d_ms for t in times], percentiles).line()}")
        log.info(f"GPU Compute Time: {compute.line()}")
        if data_transfers:
            log.info(f"D2H Latency: {Stats.of([t.d2h_ms for t in times], percentiles).line()}")
    else:
        log.info(f"Compute Time: {compute.line()}")
        log.info("  (CPU backend: no host-to-device copies and no separate device timeline, so compute time "
                 "is the host latency)")
    log.info(f"Total Host Walltime: {fmt(walltime_ms / 1000.0)} s")
    total_compute = sum(t.compute_ms for t in times) / 1000.0
    log.info(f"Total {'GPU ' if on_gpu else ''}Compute Time: {fmt(total_compute)} s")
    what = "GPU compute time" if on_gpu else "Compute time"
    if compute.cov > 1.0:
        log.warn(f"* {what} is unstable, with coefficient of variance = {compute.cov:.3g}%.")
        log.warn("  Longer runs (--duration, --iterations) or a quieter machine may improve the stability.")
    if count and walltime_ms > 0 and total_compute * 1000.0 < 0.8 * walltime_ms:
        log.warn("* Throughput may be bound by host overhead: total compute time is under 80% of host walltime.")
    log.info("Explanations of the performance metrics are printed in the verbose logs.")
    log.verbose("=== Explanations of the performance metrics ===")
    log.verbose("Total Host Walltime: the time from the start of the first query to the end of the last.")
    log.verbose(f"Total {'GPU ' if on_gpu else ''}Compute Time: the summation of the compute time of all queries.")
    log.verbose("Throughput: the observed throughput computed by dividing the number of queries by the Total "
                "Host Walltime.")
    log.verbose("Latency: the summation of H2D Latency, Compute Time, and D2H Latency: the latency of one query.")
    log.verbose("Enqueue Time: the host latency to enqueue a query. On the CPU backend execution is synchronous, "
                "so it equals the compute time.")
    if on_gpu:
        log.verbose("H2D Latency: the latency of host-to-device copies of the inputs of one query.")
        log.verbose("GPU Compute Time: the GPU latency to execute the kernels of one query.")
        log.verbose("D2H Latency: the latency of device-to-host copies of the outputs of one query.")


def print_layer_profile(log: Log, profile: "LayerProfile") -> None:
    """trtexec's --dumpProfile table (with each layer's op and tactic), slowest layers kept in engine order."""
    log.info(f"=== Profile ({profile.runs} iterations, eager: layer by layer without the CUDA graph) ===")
    name_width = max([len("Layer")] + [len(t.name) for t in profile.layers])
    log.info(f"{'Time(ms)':>10} {'Avg.(ms)':>10} {'Median(ms)':>10} {'Time(%)':>8}   {'Layer':<{name_width}}  "
             f"Op / tactic")
    for t in profile.layers:
        log.info(f"{t.total_ms:10.4f} {t.average_ms:10.4f} {t.median_ms:10.4f} {t.percentage:8.1f}   "
                 f"{t.name:<{name_width}}  {t.op_type} / {t.tactic}")
    total = sum(t.total_ms for t in profile.layers)
    log.info(f"{total:10.4f} {profile.total_average_ms:10.4f} {'':>10} {100.0:8.1f}   Total")
    log.info("=== Profile by op type (average ms per inference) ===")
    for op_type, count, ms in profile.by_op():
        share = 100.0 * ms / profile.total_average_ms if profile.total_average_ms else 0.0
        log.info(f"{ms:10.4f} {share:8.1f}%  {op_type} x{count}")


__all__ = ["IterationTimes", "Log", "Stats", "fmt", "make_console", "median", "one_line", "percentile",
           "print_error", "print_layer_profile", "print_performance_summary", "print_trace_averages"]
