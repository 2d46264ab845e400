#!/usr/bin/env python3
"""The graph optimizer report: what the pass pipeline does to the zoo models, and what it buys.

For each zoo model (tensorkiln.testing.zoo; full size by default, `--small` for a quick run):
  * build with tensorkiln at optimization level 0 (required passes only) and at the default
    level, both with a fixed profile at the run shapes (what `kiln exec --shapes` builds);
  * count layers: ONNX nodes, the level-0 engine, the optimized engine, and per pass of the
    optimized build its layers before/after and the rewrites of each rule (and the rules
    whose check declined, with the first reason), from plan.build_info["passes"];
  * check both engines' outputs against onnxruntime (CPU) at the fp32 tolerance of
    tensorkiln/testing/tolerances.py and report the max abs error;
  * time both engines on the CPU: through `kiln exec` itself when it has
    --builderOptimizationLevel (median of its --exportTimes latencies), else through the
    Python API with kiln exec's semantics (warm-up, then at least --iterations runs and
    --duration seconds; median of time.perf_counter latencies). The output says which.

Prints rich tables; `--markdown FILE` writes a snippet for BENCHMARKS.md (date, machine,
command, counts, timings). A benchmark, not a test: nothing here asserts.

    python3 bench/optimizer_report.py --small
    python3 bench/optimizer_report.py --markdown /tmp/optimizer.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import onnx
import onnxruntime
import torch
from rich.console import Console
from rich.table import Table

import tensorkiln
from tensorkiln.builder import Builder, BuilderConfig
from tensorkiln.builder.config import OptimizationProfile
from tensorkiln.engine import EnginePlan
from tensorkiln.frontends.onnx import parse_onnx
from tensorkiln.runtime import Runtime
from tensorkiln.testing import zoo
from tensorkiln.testing.oracles import run_onnxruntime
from tensorkiln.testing.tolerances import tolerance_for

DEFAULT_LEVEL = BuilderConfig().optimization_level
LEVEL_FLAG = "--builderOptimizationLevel"
TIMING_CLI = "kiln exec"
TIMING_API = "python API"


@dataclass
class OutputCheck:
    name: str
    max_abs_error: float
    within_tolerance: bool


@dataclass
class ModelReport:
    name: str
    parameters: int
    onnx_nodes: int
    shapes: dict[str, tuple[int, ...]]
    level0_layers: int
    optimized_layers: int
    build_seconds: tuple[float, float]
    passes: list[dict[str, Any]]
    op_changes: list[tuple[str, int, int]]
    checks_level0: list[OutputCheck]
    checks_optimized: list[OutputCheck]
    median_ms: tuple[float, float] = (float("nan"), float("nan"))
    # Interquartile range of the latencies relative to the median, in percent: the noise.
    spread_pct: tuple[float, float] = (float("nan"), float("nan"))
    timed_runs: tuple[int, int] = (0, 0)
    notes: list[str] = field(default_factory=list)

    @property
    def max_error(self) -> float:
        return max((c.max_abs_error for c in self.checks_optimized), default=float("nan"))

    @property
    def matches(self) -> bool:
        return all(c.within_tolerance for c in self.checks_optimized)


# ---- the machine -------------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or platform.machine()


def machine_line() -> str:
    return (f"{cpu_model()}, {os.cpu_count()} cores (torch uses {torch.get_num_threads()} threads); "
            f"tensorkiln {tensorkiln.__version__}, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
            f"onnx {onnx.__version__}, numpy {np.__version__}")


def kiln_exec_has_level_flag() -> bool:
    """Whether `kiln exec` takes --builderOptimizationLevel (asked of the command itself)."""
    done = subprocess.run([sys.executable, "-m", "tensorkiln", "exec", "--help"], capture_output=True, text=True,
                          timeout=120)
    return done.returncode == 0 and LEVEL_FLAG in done.stdout


# ---- building, checking, timing ----------------------------------------------------------------

def build_plan(graph: Any, level: int, shapes: Mapping[str, tuple[int, ...]]) -> EnginePlan:
    config = BuilderConfig(device="cpu", optimization_level=level, profiles=(OptimizationProfile.fixed(shapes),))
    return Builder(config).build(graph)


def check_outputs(got: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray]) -> list[OutputCheck]:
    tol = tolerance_for("fp32")
    checks = []
    for name, want in expected.items():
        have = got.get(name)
        if have is None or np.shape(have) != want.shape:
            checks.append(OutputCheck(name, float("inf"), False))
            continue
        diff = np.abs(np.asarray(have, dtype=np.float64) - want.astype(np.float64))
        within = bool(np.all(diff <= tol.atol + tol.rtol * np.abs(want.astype(np.float64))))
        checks.append(OutputCheck(name, float(diff.max()) if diff.size else 0.0, within))
    return checks


def time_with_api(plans: Sequence[EnginePlan], feeds: Mapping[str, np.ndarray], warm_up_ms: float, iterations: int,
                  duration_s: float) -> list[list[float]]:
    """kiln exec's loop on the Python API, for several engines at once: warm each up, then run
    them in turn, one inference each, until each has at least `iterations` runs and the loop
    has taken `duration_s` per engine. Taking turns exposes every engine to the same
    background load, so their medians compare even on a busy machine. Returns each
    engine's latencies in ms."""
    contexts = [Runtime("cpu").load(plan).create_execution_context() for plan in plans]
    for context in contexts:
        start = time.perf_counter()
        while (time.perf_counter() - start) * 1000.0 < warm_up_ms:
            context.execute(feeds)
    latencies: list[list[float]] = [[] for _ in contexts]
    origin = time.perf_counter()
    while len(latencies[0]) < iterations or time.perf_counter() - origin < duration_s * len(contexts):
        for context, record in zip(contexts, latencies):
            t0 = time.perf_counter()
            context.execute(feeds)
            record.append((time.perf_counter() - t0) * 1000.0)
    return latencies


def shape_spec(shapes: Mapping[str, tuple[int, ...]]) -> str:
    return ",".join(f"{name}:{'x'.join(map(str, dims))}" for name, dims in shapes.items())


def kiln_exec_command(onnx_path: Path, level: int, shapes: Mapping[str, tuple[int, ...]], inputs_path: Path,
                      times_path: Path, warm_up_ms: float, iterations: int, duration_s: float) -> list[str]:
    return [sys.executable, "-m", "tensorkiln", "exec", f"--onnx={onnx_path}", f"{LEVEL_FLAG}={level}",
            f"--shapes={shape_spec(shapes)}", f"--loadInputs={inputs_path}", f"--warmUp={warm_up_ms:g}",
            f"--iterations={iterations}", f"--duration={duration_s:g}", f"--exportTimes={times_path}",
            "--backend=cpu"]


def time_with_kiln_exec(command: list[str], times_path: Path) -> list[float]:
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
        raise RuntimeError(f"kiln exec failed (exit {done.returncode}): {shlex.join(command)}\n{tail}")
    return [float(t["latencyMs"]) for t in json.loads(times_path.read_text())]


def relative_iqr(latencies: Sequence[float]) -> float:
    """(p75 - p25) / median in percent: how far apart the middle half of the runs lie."""
    if len(latencies) < 4:
        return float("nan")
    q1, q2, q3 = statistics.quantiles(latencies, n=4)
    return 100.0 * (q3 - q1) / q2


def op_changes(before: EnginePlan, after: EnginePlan) -> list[tuple[str, int, int]]:
    """Op types whose layer count differs between the two engines, largest change first."""
    a = Counter(n.op_type for n in before.graph.nodes)
    b = Counter(n.op_type for n in after.graph.nodes)
    changed = [(op, a[op], b[op]) for op in sorted(set(a) | set(b)) if a[op] != b[op]]
    return sorted(changed, key=lambda row: (-abs(row[2] - row[1]), row[0]))


def report_model(name: str, args: argparse.Namespace, timing: str, workdir: Path, console: Console) -> ModelReport:
    console.print(f"[bold]{name}[/]: writing the model", highlight=False)
    model = zoo.build(name, small=args.small)
    feeds = zoo.example_inputs(model, batch=args.batch, seq=args.seq if not args.small else min(args.seq, 16),
                               seed=0)
    shapes = {k: tuple(v.shape) for k, v in feeds.items()}
    graph = parse_onnx(model)
    console.print(f"  building at level 0 and level {DEFAULT_LEVEL}; inputs {shape_spec(shapes)}", highlight=False)
    plan0 = build_plan(graph, 0, shapes)
    plan = build_plan(graph, DEFAULT_LEVEL, shapes)
    console.print("  checking against onnxruntime", highlight=False)
    expected = run_onnxruntime(model, feeds)
    got0 = Runtime("cpu").load(plan0).create_execution_context().execute(feeds)
    got = Runtime("cpu").load(plan).create_execution_context().execute(feeds)
    report = ModelReport(
        name=name, parameters=zoo.parameter_count(model), onnx_nodes=len(model.graph.node), shapes=shapes,
        level0_layers=len(plan0.graph.nodes), optimized_layers=len(plan.graph.nodes),
        build_seconds=(float(plan0.build_info.get("build_seconds", float("nan"))),
                       float(plan.build_info.get("build_seconds", float("nan")))),
        passes=list(plan.build_info.get("passes", [])), op_changes=op_changes(plan0, plan),
        checks_level0=check_outputs(got0, expected), checks_optimized=check_outputs(got, expected))
    del got0, got, expected

    console.print(f"  timing on the CPU ({timing})", highlight=False)
    if timing == TIMING_CLI:
        onnx_path, inputs_path = workdir / f"{name}.onnx", workdir / f"{name}_inputs.npz"
        onnx.save(model, str(onnx_path))
        np.savez(inputs_path, **feeds)
        latencies: list[list[float]] = [[], []]
        # Rounds alternate the two levels, so background load falls on both alike.
        for _ in range(args.rounds):
            for record, level in zip(latencies, (0, DEFAULT_LEVEL)):
                times_path = workdir / f"{name}_level{level}_times.json"
                command = kiln_exec_command(onnx_path, level, shapes, inputs_path, times_path, args.warmup,
                                            args.iterations, args.duration / args.rounds)
                record.extend(time_with_kiln_exec(command, times_path))
        report.notes.append("timed with: " + shlex.join(["kiln", "exec"] + command[4:]).replace(
            f"{LEVEL_FLAG}={DEFAULT_LEVEL}", f"{LEVEL_FLAG}=0|{DEFAULT_LEVEL}").replace(str(workdir) + "/", ""))
        onnx_path.unlink()
    else:
        latencies = time_with_api([plan0, plan], feeds, args.warmup, args.iterations, args.duration)
    report.median_ms = (statistics.median(latencies[0]), statistics.median(latencies[1]))
    report.timed_runs = (len(latencies[0]), len(latencies[1]))
    report.spread_pct = (relative_iqr(latencies[0]), relative_iqr(latencies[1]))
    return report


# ---- printing ----------------------------------------------------------------------------------

def fmt_count(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)


def fmt_rewrites(rewrites: Mapping[str, int]) -> str:
    return ", ".join(f"{rule} x{count}" for rule, count in sorted(rewrites.items(), key=lambda kv: -kv[1])) or "-"


def fmt_declines(declines: Sequence[Sequence[str]]) -> str:
    """Declines grouped by rule: `rule x3 (first reason)`."""
    by_rule: dict[str, list[str]] = {}
    for rule, _node, reason in declines:
        by_rule.setdefault(rule, []).append(reason)
    return "; ".join(f"{rule} x{len(reasons)} ({reasons[0]})" for rule, reasons in by_rule.items()) or "-"


def fmt_errors(checks: Sequence[OutputCheck]) -> str:
    return ", ".join(f"{c.name} {c.max_abs_error:.2e}{'' if c.within_tolerance else ' (OUT of tolerance)'}"
                     for c in checks)


def summary_rows(reports: Sequence[ModelReport]) -> list[list[str]]:
    rows = []
    for r in reports:
        speedup = r.median_ms[0] / r.median_ms[1] if r.median_ms[1] > 0 else float("nan")
        rows.append([r.name, fmt_count(r.parameters), " ".join(shape_spec({k: v}) for k, v in r.shapes.items()),
                     str(r.onnx_nodes), str(r.level0_layers), str(r.optimized_layers),
                     f"{r.max_error:.2e}", "yes" if r.matches else "NO",
                     f"{r.median_ms[0]:.3f} (±{r.spread_pct[0] / 2:.0f}%)",
                     f"{r.median_ms[1]:.3f} (±{r.spread_pct[1] / 2:.0f}%)", f"{speedup:.2f}x"])
    return rows


SUMMARY_HEADER = ["model", "params", "inputs", "ONNX nodes", "layers L0", f"layers L{DEFAULT_LEVEL}",
                  f"max abs err L{DEFAULT_LEVEL} vs ORT", "within fp32 tol", "L0 median ms",
                  f"L{DEFAULT_LEVEL} median ms", "speed-up"]
PASS_HEADER = ["pass", "layers before", "layers after", "rewrites", "declined"]


def pass_rows(r: ModelReport) -> list[list[str]]:
    return [[p["name"], str(p["layers_before"]), str(p["layers_after"]), fmt_rewrites(p.get("rewrites", {})),
             fmt_declines(p.get("declines", []))] for p in r.passes]


def print_report(console: Console, reports: Sequence[ModelReport], timing: str, warm_up_ms: float, iterations: int,
                 duration_s: float, rounds: int) -> None:
    table = Table(title=f"Graph optimizer: level 0 vs level {DEFAULT_LEVEL} (CPU)")
    for column in SUMMARY_HEADER:
        table.add_column(column, justify="left" if column in ("model", "inputs") else "right")
    for row in summary_rows(reports):
        table.add_row(*row)
    console.print(table)
    for r in reports:
        passes = Table(title=f"{r.name}: passes of the level-{DEFAULT_LEVEL} build", title_justify="left")
        for column in PASS_HEADER:
            passes.add_column(column, justify="right" if column.startswith("layers") else "left",
                              overflow="fold")
        for row in pass_rows(r):
            passes.add_row(*row)
        console.print(passes)
        changes = ", ".join(f"{op} {a}->{b}" for op, a, b in r.op_changes) or "none"
        console.print(f"  layers by op, level 0 -> level {DEFAULT_LEVEL}: {changes}", highlight=False)
        console.print(f"  max abs error vs onnxruntime: level 0: {fmt_errors(r.checks_level0)}; "
                      f"level {DEFAULT_LEVEL}: {fmt_errors(r.checks_optimized)}", highlight=False)
        console.print(f"  build seconds: level 0 {r.build_seconds[0]:.2f}, level {DEFAULT_LEVEL} "
                      f"{r.build_seconds[1]:.2f}; timed runs {r.timed_runs[0]} / {r.timed_runs[1]}", highlight=False)
        for note in r.notes:
            console.print(f"  {note}", highlight=False)
    console.print(f"Timing: {timing_text(timing, warm_up_ms, iterations, duration_s, rounds)}", highlight=False)


def timing_text(timing: str, warm_up_ms: float, iterations: int, duration_s: float, rounds: int) -> str:
    if timing == TIMING_CLI:
        how = (f"`kiln exec` (median of its --exportTimes latencies; {rounds} alternating rounds per level, "
               f"each --duration={duration_s / rounds:g})")
    else:
        how = (f"the Python API with kiln exec's loop, the two engines taking turns run by run (median of "
               f"time.perf_counter latencies; `kiln exec` had no {LEVEL_FLAG} flag when this ran)")
    return (f"{how}; warm-up {warm_up_ms:g} ms, then at least {iterations} runs and {duration_s:g} s per engine, "
            f"on the CPU backend; load average (1, 5, 15 min) at the end: {load_average()}")


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown(reports: Sequence[ModelReport], command: str, timing: str, warm_up_ms: float, iterations: int,
             duration_s: float, rounds: int, small: bool) -> str:
    parts = [f"### Graph optimizer ({datetime.date.today().isoformat()}, {'small' if small else 'full-size'} "
             f"zoo models)", "",
             f"- Machine: {machine_line()}",
             f"- Command: `{command}`",
             f"- Builds: level 0 (required passes only) and level {DEFAULT_LEVEL} (the default), each with a fixed "
             f"profile at the input shapes; outputs checked against onnxruntime (CPU) at the fp32 tolerance "
             f"(rtol {tolerance_for('fp32').rtol:g}, atol {tolerance_for('fp32').atol:g}).",
             f"- Timing: {timing_text(timing, warm_up_ms, iterations, duration_s, rounds)}.", "",
             markdown_table(SUMMARY_HEADER, summary_rows(reports)), ""]
    for r in reports:
        parts += [f"#### {r.name}: passes of the level-{DEFAULT_LEVEL} build", "",
                  markdown_table(PASS_HEADER, pass_rows(r)), ""]
        changes = ", ".join(f"{op} {a}→{b}" for op, a, b in r.op_changes) or "none"
        parts += [f"Layers by op, level 0 → level {DEFAULT_LEVEL}: {changes}.", ""]
    return "\n".join(parts)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="the zoo's small variants (a quick run)")
    parser.add_argument("--models", default=",".join(zoo.ZOO), help="comma-separated zoo models (default: all)")
    parser.add_argument("--batch", type=int, default=1, help="batch size to check and time at (default 1)")
    parser.add_argument("--seq", type=int, default=128, help="BERT sequence length (default 128; 16 with --small)")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds to time each engine (default 3)")
    parser.add_argument("--iterations", type=int, default=10, help="minimum timed runs per engine (default 10)")
    parser.add_argument("--warmup", type=float, default=200.0, help="warm-up milliseconds (default 200)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="kiln exec timing: alternating runs per level, --duration split among them (default 2)")
    parser.add_argument("--timing", choices=("auto", "cli", "api"), default="auto",
                        help=f"auto: kiln exec when it has {LEVEL_FLAG}, else the Python API")
    parser.add_argument("--markdown", metavar="FILE", help="write a markdown snippet for BENCHMARKS.md")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in zoo.ZOO]
    if unknown:
        parser.error(f"unknown model(s) {unknown}: the zoo has {sorted(zoo.ZOO)}")

    console = Console(width=None if sys.stdout.isatty() else 200)
    has_flag = kiln_exec_has_level_flag()
    if args.timing == "cli" and not has_flag:
        parser.error(f"--timing=cli: `kiln exec` has no {LEVEL_FLAG} flag (yet)")
    timing = TIMING_CLI if args.timing == "cli" or (args.timing == "auto" and has_flag) else TIMING_API
    console.print(f"Machine: {machine_line()}", highlight=False)
    console.print(f"Timing through {timing}"
                  f"{'' if has_flag else f' (kiln exec has no {LEVEL_FLAG} flag)'}", highlight=False)

    reports = []
    with tempfile.TemporaryDirectory(prefix="kiln_optimizer_report_") as tmp:
        for name in names:
            reports.append(report_model(name, args, timing, Path(tmp), console))
    print_report(console, reports, timing, args.warmup, args.iterations, args.duration, args.rounds)
    if args.markdown:
        command = shlex.join(["python3", "bench/optimizer_report.py"] + list(sys.argv[1:] if argv is None else argv))
        Path(args.markdown).write_text(markdown(reports, command, timing, args.warmup, args.iterations,
                                                args.duration, args.rounds, args.small) + "\n")
        console.print(f"Markdown written to {args.markdown}", highlight=False)
    return 0 if all(r.matches for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
