"""`kiln debug TOOL ...`: debugging tools. `kiln debug precision` finds the layers that must stay FP32.

Polygraphy's `debug precision` for tensorkiln: build the engine with fp16 (or bf16)
allowed, compare it with a reference, and when it fails, bisect over its layers for the
fewest that must stay FP32; print the builder flags that keep them there and verify that
the engine those flags build passes.
"""

from __future__ import annotations

import argparse
import shlex
from typing import Any, Mapping, Optional, Sequence, TextIO

import numpy as np
from rich.markup import escape
from rich.table import Table

from ..builder import Builder, BuilderConfig, OptimizationProfile
from ..debug.bisect import BisectResult, BisectStep, PrecisionBisector
from ..debug.compare import REFERENCES, run_reference
from ..engine import ProfileRange
from ..ir import Graph
from ..runtime import Runtime
from .build import parse_layer_precisions
from .compare import add_threshold_arguments, load_input_files, thresholds_from_flags
from .device import resolve_device
from .report import Log, make_console
from .shapes import ShapeFlags, build_profile, format_dims, parse_shape_spec, run_shapes
from .tensors import RANDOM_SEED, merge_file_shapes, random_inputs, shapes_of
from .usage import KilnArgumentParser, UsageError

TOOLS = ("precision",)
FAILED_EXIT_CODE = 1
# Layer names shown per step in the table before the list is shortened.
NAMES_PER_STEP = 8

DESCRIPTION = """\
Debugging tools.

kiln debug precision MODEL.onnx --fp16|--bf16
  Build MODEL with fp16 (or bf16) layers allowed and compare its outputs with a
  reference (onnxruntime by default; --reference ref for the ONNX reference evaluator,
  fp32 for tensorkiln's own fp32 engine). If they are not within tolerance, find the
  fewest layers that must stay FP32 for the engine to pass: a bisection over the layers
  that ran in the lower precision, in graph order (the shortest prefix kept in FP32
  that passes ends at a needed layer; repeat on the layers before it), until the layers
  found pass alone and none of them can be dropped. Each step's layer set and verdict
  is shown in a table. The result is printed as the flags to build it
  with (kiln exec --layerPrecisions=...:fp32 --precisionConstraints=obey, and kiln
  build's spelling), and the engine built from exactly those flags is checked.
  Exit code 0 when a passing set was found (or the all-low engine already passes), 1
  otherwise.

Tolerances default to the tolerance table's row for the precision (fp16: atol = rtol =
1e-2; bf16: 5e-2); --atol/--rtol/--check-error-stat work as in `kiln compare`.
Inputs are random (seeded by --seed) unless --load-inputs gives them; dynamic inputs
take --shapes (or a default batch of 1).
"""


def make_parser() -> KilnArgumentParser:
    p = KilnArgumentParser(prog="kiln debug", description=DESCRIPTION,
                           usage="kiln debug precision MODEL.onnx --fp16|--bf16 [options]")
    p.add_argument("tool", choices=TOOLS, metavar="TOOL", help="the tool: precision")
    p.add_argument("model", metavar="MODEL.onnx", help="the ONNX model")
    precision = p.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_true", help="debug the float16 engine")
    precision.add_argument("--bf16", action="store_true", help="debug the bfloat16 engine")
    p.add_argument("--reference", choices=(*REFERENCES, "fp32"), default="ort",
                   help="ort: onnxruntime (default); ref: the ONNX reference evaluator; fp32: tensorkiln's fp32 "
                        "engine")
    p.add_argument("--shapes", action="append", metavar="SPEC", help="input shapes, e.g. x:1x3x224x224")
    p.add_argument("--seed", type=int, default=RANDOM_SEED, metavar="N", help="seed of the random inputs")
    p.add_argument("--load-inputs", dest="load_inputs", action="append", metavar="FILE",
                   help="inputs from FILE.npz|FILE.json|[NAME:]FILE.npy (repeatable); others are random")
    add_threshold_arguments(p, "output")
    p.add_argument("--optimization-level", "--builderOptimizationLevel", dest="level", type=int, default=3,
                   metavar="N", help="builder optimization level (default 3)")
    p.add_argument("--device", metavar="cpu|cuda[:N]", help="device to build for and run on (default: cpu)")
    p.add_argument("--verbose", action="store_true", help="log each step as it is tried")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return p


def run(args: argparse.Namespace, out: TextIO, err: Optional[TextIO] = None) -> int:
    from ..frontends.onnx import parse_onnx  # only here: the other debug tools may not need the frontend

    log = Log(out, verbose=args.verbose)
    console = make_console(out)
    if not (args.fp16 or args.bf16):
        raise UsageError("kiln debug precision needs --fp16 or --bf16 (the precision to debug)")
    precision = "fp16" if args.fp16 else "bf16"
    thresholds, from_table = thresholds_from_flags(args, precision)
    device = resolve_device(args.device)
    graph = parse_onnx(args.model)
    file_inputs = load_input_files(args.load_inputs, graph.inputs)
    shape_flags = ShapeFlags(shapes=merge_file_shapes(parse_shape_spec(args.shapes, "--shapes"),
                                                      shapes_of(file_inputs), "--shapes"),
                             names=("--shapes", "--min-shapes", "--opt-shapes", "--max-shapes"))
    warnings: list[str] = []
    profile = build_profile(graph.inputs, shape_flags, warnings)
    for warning in warnings:
        log.warn(warning)
    config = BuilderConfig(device=device, profiles=(profile,) if profile else (), optimization_level=args.level,
                           debug=args.debug)
    feeds = _inputs(graph, profile, shape_flags, file_inputs, args.seed, log)
    log.info(f"Tolerances: {thresholds.describe()}"
             + (f"; defaults from the {precision} row of the tolerance table" if from_table else ""))
    reference_name, expected = _expected(args, graph, config, feeds, log)

    def on_step(step: BisectStep) -> None:
        log.verbose(f"Step {step.number} ({step.stage}): {len(step.trial.fp32_layers)} layer(s) in fp32 -> "
                    f"{'PASSED' if step.trial.passed else 'FAILED'}: {step.trial.detail}")

    log.info(f"Bisecting the {precision} engine against {reference_name}")
    bisector = PrecisionBisector(graph, feeds, expected, precision=precision, thresholds=thresholds, config=config,
                                 on_step=on_step)
    result = bisector.run()
    _print_steps(console, result)
    return _conclude(result, bisector, log, args)


def _inputs(graph: Graph, profile: Optional[OptimizationProfile], flags: ShapeFlags,
            file_inputs: Mapping[str, np.ndarray], seed: int, log: Log) -> dict[str, np.ndarray]:
    warnings: list[str] = []
    ranges = {name: (ProfileRange(*r),) for name, r in profile.shapes.items()} if profile else {}
    shapes = run_shapes(graph.inputs, ranges, flags.shapes, "--shapes", warnings, what="model")
    for warning in warnings:
        log.warn(warning)
    random = random_inputs([v for v in graph.inputs if v.name not in file_inputs], shapes, seed)
    for v in graph.inputs:
        source = "from file" if v.name in file_inputs else f"random, seed {seed}"
        log.info(f"Input '{v.name}': {format_dims(shapes[v.name]) or '(scalar)'} "
                 f"{v.dtype.short if v.dtype else ''} ({source})")
    return {v.name: file_inputs[v.name] if v.name in file_inputs else random[v.name] for v in graph.inputs}


def _expected(args: argparse.Namespace, graph: Graph, config: BuilderConfig, feeds: Mapping[str, np.ndarray],
              log: Log) -> tuple[str, dict[str, Any]]:
    if args.reference == "fp32":
        log.info("Running the reference (tensorkiln's fp32 engine)")
        plan = Builder(config).build(graph)
        outputs = Runtime(config.device).load(plan).create_execution_context().execute(dict(feeds))
        return "tensorkiln's fp32 engine", outputs
    import onnx
    name = "onnxruntime" if args.reference == "ort" else "the ONNX reference evaluator"
    log.info(f"Running the reference ({name})")
    result = run_reference(onnx.load(args.model), feeds, args.reference)
    return name, dict(result.outputs)


def _names(names: Sequence[str]) -> str:
    if not names:
        return "(none)"
    if len(names) <= NAMES_PER_STEP:
        return ", ".join(names)
    head = ", ".join(names[:NAMES_PER_STEP - 2])
    return f"{head}, ... {', '.join(names[-2:])}"


def _print_steps(console: Any, result: BisectResult) -> None:
    table = Table(title=f"precision bisect: which layers must stay fp32 ({len(result.candidates)} layer(s) ran in "
                        f"{result.precision})")
    for column in ("step", "tried", "fp32 layers", "layers kept in fp32", "result", "worst output"):
        table.add_column(column, overflow="fold")
    for step in result.steps:
        t = step.trial
        tried = step.stage + (f" (as step {step.repeat_of}: not rebuilt)" if step.repeat_of else "")
        table.add_row(str(step.number), escape(tried), str(len(t.fp32_layers)), escape(_names(t.fp32_layers)),
                      "[green]PASSED[/]" if t.passed else "[bold red]FAILED[/]", escape(t.detail))
    console.print(table)


def _conclude(result: BisectResult, bisector: PrecisionBisector, log: Log, args: argparse.Namespace) -> int:
    flag = f"--{result.precision}"
    if result.all_low_passed:
        log.info(f"PASSED: the {result.precision} engine is within tolerance as it is; no layer needs to stay fp32")
        return 0
    if not result.found:
        log.raw(f"[E] FAILED: even with all {len(result.candidates)} {result.precision} layers kept in fp32 the "
                f"engine does not match: the difference does not come from {result.precision} (compare the fp32 "
                f"engine with `kiln compare {shlex.quote(args.model)} --mark-all`)")
        return FAILED_EXIT_CODE
    layers = result.fp32_layers or ()
    log.info(f"{len(layers)} of {len(result.candidates)} {result.precision} layer(s) must stay fp32: "
             + ", ".join(f"'{name}' ({result.layer_ops.get(name, '?')})" for name in layers))
    spec = result.layer_precisions_spec()
    # Layer names depend on the optimization level (fusions rename layers): repeat a non-default one.
    level = args.level != BuilderConfig().optimization_level
    log.info("Build with:")
    log.info(f"  kiln exec --onnx={shlex.quote(args.model)} {flag} "
             f"{shlex.quote('--layerPrecisions=' + spec)} --precisionConstraints=obey"
             + (f" --builderOptimizationLevel={args.level}" if level else ""))
    log.info(f"  kiln build {shlex.quote(args.model)} -o MODEL.plan {flag} --layer-precisions {shlex.quote(spec)} "
             f"--precision-constraints obey" + (f" --optimization-level {args.level}" if level else ""))
    # Verify the printed spec itself (read back as --layerPrecisions is read), not the set it came from.
    trial = bisector.trial(parse_layer_precisions([spec], "--layerPrecisions"), "verify the printed flags",
                           fresh=True)
    if trial.passed:
        log.info(f"PASSED: the engine built with these flags matches ({trial.detail})")
        return 0
    log.raw(f"[E] FAILED: the engine built with these flags does not match: {trial.detail}")
    return FAILED_EXIT_CODE
