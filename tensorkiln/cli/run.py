"""`kiln run PLAN`: load an engine, run it (once or N times), show and optionally save the outputs."""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any, Optional, TextIO

import numpy as np
from rich.table import Table

from ..engine import load_plan
from ..runtime import Runtime
from .device import resolve_device
from .report import Log, fmt, make_console
from .shapes import format_dims, parse_shape_spec, run_shapes
from .tensors import (is_raw, merge_file_shapes, parse_input_files, random_inputs, read_input_files,
                      save_outputs_dir, save_outputs_npz, shapes_of, to_numpy)
from .usage import KilnArgumentParser, UsageError

DESCRIPTION = """\
Load an engine plan and run it. Inputs come from --input name=file (.npy, .npz, or raw
bytes of the input's dtype); the others are random (seeded). Dynamic inputs run at
--shapes, else the engine's first profile's opt shape, else a dynamic leading
dimension of 1 (see `kiln exec --help`).
"""

PREVIEW_VALUES = 6


def make_parser() -> KilnArgumentParser:
    p = KilnArgumentParser(prog="kiln run", description=DESCRIPTION)
    p.add_argument("plan", metavar="PLAN", help="engine plan file")
    p.add_argument("--input", action="append", metavar="NAME=FILE", help="an input from a file (repeatable)")
    p.add_argument("--shapes", action="append", metavar="SPEC", help="run shapes, e.g. x:4x3x224x224")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--output-dir", dest="output_dir", metavar="DIR", help="save each output as DIR/<name>.npy")
    out.add_argument("--save-outputs", dest="save_outputs", metavar="FILE.npz", help="save all outputs in one .npz")
    p.add_argument("--iterations", type=int, default=1, metavar="N", help="run N times and print latency")
    p.add_argument("--device", metavar="cpu|cuda[:N]", help="device to run on (default: the engine's)")
    p.add_argument("--noCudaGraph", action="store_true",
                   help="run the engine's layers one by one instead of replaying a CUDA graph (CUDA backend)")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return p


def run(args: argparse.Namespace, out: TextIO, err: Optional[TextIO] = None) -> int:
    if args.iterations < 1:
        raise UsageError(f"--iterations must be >= 1, got {args.iterations}")
    log = Log(out)
    console = make_console(out)
    plan = load_plan(args.plan)
    device = resolve_device(args.device, default=plan.device.backend)
    if args.noCudaGraph and not device.startswith("cuda"):
        log.warn("--noCudaGraph takes effect with the CUDA backend; ignored on the CPU")
    engine = Runtime(device).load(plan, source_name=str(args.plan))
    pairs = parse_input_files(args.input, "--input", "=")
    arrays = read_input_files([p for p in pairs if not is_raw(p[1])], engine.inputs, {}, "--input")
    warnings: list[str] = []
    shapes = run_shapes(engine.inputs, {s.name: s.profiles for s in engine.inputs},
                        merge_file_shapes(parse_shape_spec(args.shapes, "--shapes"), shapes_of(arrays), "--shapes"),
                        "--shapes", warnings)
    for warning in warnings:
        log.warn(warning)
    arrays.update(read_input_files([p for p in pairs if is_raw(p[1])], engine.inputs, shapes, "--input"))
    inputs = {**random_inputs([s for s in engine.inputs if s.name not in arrays], shapes), **arrays}

    context = engine.create_execution_context(cuda_graph=not args.noCudaGraph)
    latencies = []
    outputs: dict[str, Any] = {}
    for _ in range(args.iterations):
        start = time.perf_counter()
        outputs = context.execute(inputs)
        latencies.append((time.perf_counter() - start) * 1000.0)

    table = Table(title=f"outputs of '{args.plan}' on {device}")
    for column in ("output", "shape", "dtype", "values"):
        table.add_column(column, overflow="fold")
    for name, value in outputs.items():
        array = to_numpy(value)
        table.add_row(name, format_dims(array.shape) or "(scalar)", str(array.dtype), _preview(array))
    console.print(table)
    if args.iterations > 1:
        log.info(f"Latency over {args.iterations} runs: min = {fmt(min(latencies))} ms, "
                 f"mean = {fmt(statistics.fmean(latencies))} ms, median = {fmt(statistics.median(latencies))} ms, "
                 f"max = {fmt(max(latencies))} ms")
    else:
        log.info(f"Latency: {fmt(latencies[0])} ms (first run, includes one-time setup)")
    if args.output_dir:
        for path in save_outputs_dir(Path(args.output_dir), outputs):
            log.info(f"Saved '{path}'")
    if args.save_outputs:
        save_outputs_npz(Path(args.save_outputs), outputs)
        log.info(f"Saved {len(outputs)} output(s) to '{args.save_outputs}'")
    return 0


def _preview(array: np.ndarray) -> str:
    flat = array.reshape(-1)
    shown = flat[:PREVIEW_VALUES]
    if array.dtype.kind == "f":
        text = ", ".join(f"{float(v):.5g}" for v in shown)
    else:
        text = ", ".join(str(v) for v in shown.tolist())
    return f"[{text}{', ...' if flat.size > PREVIEW_VALUES else ''}]"
