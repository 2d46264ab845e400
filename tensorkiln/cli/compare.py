"""`kiln compare MODEL.onnx`: tensorkiln's outputs (or every layer's) against onnxruntime's.

Polygraphy's `run --onnxrt --trt` in one built-in command: build the model (or load
--engine), feed tensorkiln and the reference the same inputs, and judge each output
against --atol/--rtol; --mark-all compares every intermediate tensor in the engine's
layer order and names the first layer that diverges.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, TextIO

import numpy as np
from rich import box
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ..builder import Builder, BuilderConfig
from ..debug.compare import (REFERENCES, ComparisonReport, LayerComparisonReport, LayerInfo, TensorComparison,
                             Thresholds, compare_layers, compare_outputs, default_precision, layers_by_output,
                             run_reference)
from ..debug.data_files import load_tensors, save_tensors
from ..debug.stats import ERROR_STATS, format_number
from ..engine import EnginePlan, load_plan
from ..errors import ConfigError
from ..runtime import Runtime
from ..testing.tolerances import tolerance_for
from .device import resolve_device
from .report import Log, make_console
from .shapes import ShapeFlags, TensorSpec, build_profile, format_dims, parse_shape_spec, run_shapes, split_items
from .shapes import split_name_value
from .tensors import RANDOM_SEED, InputFileError, merge_file_shapes, random_inputs, shapes_of
from .usage import KilnArgumentParser, UsageError

DESCRIPTION = """\
Run MODEL.onnx through tensorkiln and through a reference (onnxruntime, or the ONNX
reference evaluator with --reference ref) on the same inputs, and report per output:
max/mean/median absolute and relative error, cosine similarity, SNR (dB), NaN/Inf
counts, and PASSED/FAILED against the tolerances. The exit code is 1 when anything
fails.

Tolerances: --atol/--rtol take a default and per-tensor values, e.g.
  --atol 1e-3 probs:1e-4 --rtol 1e-3
Without them the defaults come from tensorkiln's tolerance table for the loosest
precision the engine allows (fp32, tf32 on CUDA, fp16, bf16). With the default
--check-error-stat elemwise an element fails when its absolute error > atol AND its
relative error > rtol (Polygraphy's rule); max|mean|median|quantile instead judge that
statistic of the errors (--error-quantile 0.99 for quantile).

Inputs are random (seeded by --seed; floats in [-1, 1), integers in [0, 8)) unless
--load-inputs gives them (.npz or JSON with input names, name:file.npy, or a bare .npy
for a model with one input). --save-inputs/--save-outputs write .npz or .json;
--save-outputs writes the reference's outputs (and with --mark-all every intermediate),
which --load-outputs then uses instead of running the reference, so a reference run on
one machine can be checked on another (MODEL may then be left out with --engine).

--mark-all compares every engine layer's output with the reference's tensor of the same
name, in engine layer order, and names the first that diverges. Tensors only one side has
(fused away, folded, or not exposed by onnxruntime) are counted, not compared.
"""

LAYERS_BEFORE_DIVERGENCE = 10
LAYERS_AFTER_DIVERGENCE = 5
LAYER_ROWS_WITHOUT_DIVERGENCE = 40
FAILED_EXIT_CODE = 1


def make_parser() -> KilnArgumentParser:
    p = KilnArgumentParser(prog="kiln compare", description=DESCRIPTION)
    p.add_argument("model", nargs="?", metavar="MODEL.onnx", help="the ONNX model (the reference runs it)")
    engine = p.add_argument_group("tensorkiln side")
    engine.add_argument("--engine", metavar="PLAN", help="compare this engine plan instead of building MODEL")
    engine.add_argument("--fp16", action="store_true", help="allow float16 layers")
    engine.add_argument("--bf16", action="store_true", help="allow bfloat16 layers")
    engine.add_argument("--no-tf32", dest="no_tf32", action="store_true", help="disallow TF32 (CUDA) math")
    engine.add_argument("--shapes", action="append", metavar="SPEC", help="input shapes, e.g. x:1x3x224x224")
    engine.add_argument("--optimization-level", "--builderOptimizationLevel", dest="level", type=int, default=3,
                        metavar="N", help="builder optimization level (0: required passes only; default 3)")
    engine.add_argument("--device", metavar="cpu|cuda[:N]", help="device to build for and run on (default: cpu, "
                        "or the engine's)")
    reference = p.add_argument_group("reference side")
    reference.add_argument("--reference", choices=REFERENCES, default="ort",
                           help="ort: onnxruntime (default); ref: onnx.reference.ReferenceEvaluator")
    reference.add_argument("--load-outputs", dest="load_outputs", metavar="FILE",
                           help="saved reference outputs (.npz/.json) to compare against instead of running one")
    data = p.add_argument_group("inputs and outputs")
    data.add_argument("--seed", type=int, default=RANDOM_SEED, metavar="N", help="seed of the random inputs")
    data.add_argument("--load-inputs", dest="load_inputs", action="append", metavar="FILE",
                      help="inputs from FILE.npz|FILE.json|[NAME:]FILE.npy (repeatable); others are random")
    data.add_argument("--save-inputs", dest="save_inputs", metavar="FILE", help="save the inputs (.npz or .json)")
    data.add_argument("--save-outputs", dest="save_outputs", metavar="FILE",
                      help="save the reference's outputs, and with --mark-all its intermediates (.npz or .json)")
    check = p.add_argument_group("checking")
    add_threshold_arguments(check, "tensor")
    check.add_argument("--mark-all", dest="mark_all", action="store_true",
                       help="compare every layer's output and name the first layer that diverges")
    p.add_argument("--verbose", action="store_true", help="show every compared layer with --mark-all")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return p


# ---- flags ------------------------------------------------------------------------------------------

def parse_tolerances(values: Optional[Sequence[str]], flag: str) -> tuple[Optional[float], dict[str, float]]:
    """`1e-3 probs:1e-4` -> (1e-3, {"probs": 1e-4}). An unquoted name splits on the last ':'."""
    default: Optional[float] = None
    per_tensor: dict[str, float] = {}
    for text in values or ():
        for item in split_items(text, flag):
            name: Optional[str] = None
            number_text = item
            if ":" in item.replace("'", "") or item.startswith("'"):
                name, number_text = split_name_value(item, ":", flag, split_on_last=True)
            try:
                number = float(number_text)
            except ValueError:
                raise UsageError(f"{flag}: '{item}' is not a number or NAME:NUMBER (the model goes before "
                                 f"{flag}, whose values run to the next flag)") from None
            if not number >= 0 or math.isinf(number):
                raise UsageError(f"{flag}: tolerances must be finite numbers >= 0, got '{item}'")
            if name is None:
                if default is not None:
                    raise UsageError(f"{flag}: the default is given twice ({default:g} and {number:g})")
                default = number
            else:
                if name in per_tensor:
                    raise UsageError(f"{flag}: tensor '{name}' is given more than once")
                per_tensor[name] = number
    return default, per_tensor


def add_threshold_arguments(group: Any, per: str) -> None:
    """--atol, --rtol, --check-error-stat and --error-quantile, which thresholds_from_flags reads;
    `per` names what a NAME:VALUE tolerance is for ("tensor", "output")."""
    group.add_argument("--atol", nargs="+", action="extend", metavar="[NAME:]ATOL",
                       help=f"absolute tolerance: a default and/or per {per} (NAME:VALUE)")
    group.add_argument("--rtol", nargs="+", action="extend", metavar="[NAME:]RTOL",
                       help=f"relative tolerance: a default and/or per {per} (NAME:VALUE)")
    group.add_argument("--check-error-stat", dest="check_error_stat", choices=ERROR_STATS, default="elemwise",
                       help="what must be within tolerance (default: elemwise, every element)")
    group.add_argument("--error-quantile", dest="error_quantile", type=float, default=0.99, metavar="Q",
                       help="the quantile for --check-error-stat quantile (default 0.99)")


def thresholds_from_flags(args: argparse.Namespace, precision: str) -> tuple[Thresholds, bool]:
    """The thresholds, and whether a default came from the tolerance table's row for `precision`."""
    atol, per_atol = parse_tolerances(args.atol, "--atol")
    rtol, per_rtol = parse_tolerances(args.rtol, "--rtol")
    row = tolerance_for(precision)
    if not 0.0 <= args.error_quantile <= 1.0:
        raise UsageError(f"--error-quantile must be in [0, 1], got {args.error_quantile}")
    thresholds = Thresholds(atol=row.atol if atol is None else atol, rtol=row.rtol if rtol is None else rtol,
                            per_tensor_atol=per_atol, per_tensor_rtol=per_rtol,
                            check_error_stat=args.check_error_stat, error_quantile=args.error_quantile)
    return thresholds, atol is None or rtol is None


def _check_combination(args: argparse.Namespace, log: Log) -> None:
    if args.model is None and not (args.engine and args.load_outputs):
        raise UsageError("give MODEL.onnx (it is built and run by the reference); it may be left out only when "
                         "--engine and --load-outputs give both sides")
    if args.load_outputs and args.reference != "ort":
        log.warn("--reference is ignored with --load-outputs: the saved outputs are the reference")
    if args.engine:
        ignored = [flag for flag, on in (("--fp16", args.fp16), ("--bf16", args.bf16), ("--no-tf32", args.no_tf32),
                                         ("--optimization-level", args.level != 3)) if on]
        if ignored:
            verb = "affects" if len(ignored) == 1 else "affect"
            log.warn(f"{', '.join(ignored)} only {verb} building; ignored with --engine")


# ---- inputs -----------------------------------------------------------------------------------------

def load_input_files(specs: Optional[Sequence[str]], inputs: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
    """Arrays from --load-inputs files, checked against the inputs' names and dtypes."""
    by_name = {spec.name: spec for spec in inputs}
    dtypes = {spec.name: spec.dtype.numpy for spec in inputs if spec.dtype is not None}
    arrays: dict[str, np.ndarray] = {}
    for text in specs or ():
        for item in split_items(text, "--load-inputs"):
            name: Optional[str] = None
            path = Path(item)
            if not path.exists() and ":" in item:
                name, file_text = split_name_value(item, ":", "--load-inputs", split_on_last=True)
                path = Path(file_text)
            if path.suffix.lower() == ".npy" and name is None:
                if len(inputs) != 1:
                    raise InputFileError(f"--load-inputs: '{path}' holds one unnamed array, and the model has "
                                         f"{len(inputs)} inputs: write NAME:{path} (inputs: "
                                         f"{', '.join(repr(n) for n in by_name)})")
                name = inputs[0].name
            loaded = load_tensors(path, dtypes=dtypes, npy_name=name)
            if name is not None and path.suffix.lower() != ".npy":
                if name not in loaded:
                    raise InputFileError(f"--load-inputs: '{path}' has no tensor '{name}' (it has "
                                         f"{', '.join(repr(n) for n in loaded) or 'none'})")
                loaded = {name: loaded[name]}
            for key, array in loaded.items():
                spec = by_name.get(key)
                if spec is None:
                    raise InputFileError(f"--load-inputs: '{key}' (from '{path}') is not an input of the model "
                                         f"(inputs: {', '.join(repr(n) for n in by_name)})")
                if key in arrays:
                    raise InputFileError(f"--load-inputs: input '{key}' is given more than once")
                if spec.dtype is not None and array.dtype != spec.dtype.numpy:
                    raise InputFileError(f"--load-inputs: input '{key}' from '{path}' is {array.dtype}, but the "
                                         f"model input is {spec.dtype.short}: save it as {spec.dtype.short}")
                arrays[key] = array
    return arrays


# ---- the run ---------------------------------------------------------------------------------------

def run(args: argparse.Namespace, out: TextIO, err: Optional[TextIO] = None) -> int:
    log = Log(out, verbose=args.verbose)
    console = make_console(out)
    thresholds_from_flags(args, "fp32")  # malformed tolerances fail before the (slow) build
    _check_combination(args, log)
    shape_flags = ShapeFlags(shapes=parse_shape_spec(args.shapes, "--shapes"),
                             names=("--shapes", "--min-shapes", "--opt-shapes", "--max-shapes"))

    graph = None
    if args.engine:
        plan = load_plan(args.engine)
        device = resolve_device(args.device, default=plan.device.backend)
        file_inputs = load_input_files(args.load_inputs, plan.inputs)
        log.info(f"Loaded engine '{args.engine}' ({len(plan.graph.nodes)} layers, built for "
                 f"{plan.device.describe()})")
    else:
        from ..frontends.onnx import parse_onnx  # only when building
        device = resolve_device(args.device)
        graph = parse_onnx(args.model)
        file_inputs = load_input_files(args.load_inputs, graph.inputs)
        plan = _build(graph, args, device, shape_flags, file_inputs, log)
    build = plan.build_config
    precision = default_precision(bool(build.get("fp16")), bool(build.get("bf16")), bool(build.get("tf32", True)),
                                  str(build.get("device", device)))
    thresholds, from_table = thresholds_from_flags(args, precision)
    log.info(f"Tolerances: {thresholds.describe()}"
             + (f"; defaults from the {precision} row of the tolerance table" if from_table else ""))

    engine = Runtime(device).load(plan, source_name=args.engine or "")
    inputs = _inputs(engine.inputs, shape_flags, file_inputs, args.seed, log)
    if args.save_inputs:
        save_tensors(args.save_inputs, inputs)
        log.info(f"Saved {len(inputs)} input(s) to '{args.save_inputs}'")

    context = engine.create_execution_context()
    engine_layers: dict[str, Any] = {}
    if args.mark_all:
        outputs, engine_layers = context.execute_debug(inputs)
    else:
        outputs = context.execute(inputs)

    reference_name, ref_outputs, ref_intermediates, unavailable = _reference(args, plan, inputs, log)
    if args.save_outputs:
        save_tensors(args.save_outputs, {**ref_intermediates, **ref_outputs})
        what = f"{len(ref_outputs)} output(s)" + (f" and {len(ref_intermediates)} intermediate tensor(s)"
                                                  if ref_intermediates else "")
        log.info(f"Saved the reference's {what} to '{args.save_outputs}'")

    expected = {name: ref_outputs[name] for name in engine.output_names if name in ref_outputs}
    for name in engine.output_names:
        if name not in ref_outputs:
            log.warn(f"Output '{name}' has no reference value: not compared")
    report = compare_outputs(outputs, expected, thresholds)
    _print_outputs(console, log, report, reference_name, thresholds)
    passed = report.passed

    layer_report: Optional[LayerComparisonReport] = None
    if args.mark_all:
        layer_report = compare_layers(engine_layers, {**ref_intermediates, **ref_outputs}, thresholds)
        _print_layers(console, log, layer_report, layers_by_output(plan.graph), unavailable, reference_name,
                      args.verbose)
        passed = passed and layer_report.passed

    compared = {t.name for t in report.tensors} | ({t.name for t in layer_report.compared} if layer_report else set())
    for name in sorted((set(thresholds.per_tensor_atol) | set(thresholds.per_tensor_rtol)) - compared):
        log.warn(f"--atol/--rtol name '{name}', which was not compared (no such "
                 f"{'tensor' if args.mark_all else 'output'} on both sides)")
    if passed:
        log.info(f"PASSED: tensorkiln matches {reference_name}")
        return 0
    log.raw(f"[E] FAILED: tensorkiln does not match {reference_name}")
    return FAILED_EXIT_CODE


def _build(graph: Any, args: argparse.Namespace, device: str, shape_flags: ShapeFlags,
           file_inputs: Mapping[str, np.ndarray], log: Log) -> EnginePlan:
    flags = ShapeFlags(shapes=merge_file_shapes(shape_flags.shapes, shapes_of(file_inputs), "--shapes"),
                       names=shape_flags.names)
    warnings: list[str] = []
    profile = build_profile(graph.inputs, flags, warnings)
    for warning in warnings:
        log.warn(warning)
    config = BuilderConfig(device=device, tf32=not args.no_tf32, fp16=args.fp16, bf16=args.bf16,
                           profiles=(profile,) if profile else (), optimization_level=args.level, debug=args.debug)
    plan = Builder(config).build(graph)
    log.info(f"Built an engine of {len(plan.graph.nodes)} layers for {device} from '{args.model}'")
    return plan


def _inputs(specs: Sequence[Any], shape_flags: ShapeFlags, file_inputs: dict[str, np.ndarray], seed: int,
            log: Log) -> dict[str, np.ndarray]:
    warnings: list[str] = []
    given = merge_file_shapes(shape_flags.shapes, shapes_of(file_inputs), "--shapes")
    shapes = run_shapes(specs, {s.name: s.profiles for s in specs}, given, "--shapes", warnings)
    for warning in warnings:
        log.warn(warning)
    random = random_inputs([s for s in specs if s.name not in file_inputs], shapes, seed)
    for spec in specs:
        source = "from file" if spec.name in file_inputs else f"random, seed {seed}"
        log.info(f"Input '{spec.name}': {format_dims(shapes[spec.name]) or '(scalar)'} "
                 f"{spec.dtype.short if spec.dtype else ''} ({source})")
    return {spec.name: file_inputs[spec.name] if spec.name in file_inputs else random[spec.name] for spec in specs}


def _numpy_dtypes(plan: EnginePlan) -> dict[str, np.dtype]:
    """Tensor name -> numpy dtype of the engine's layer outputs (types JSON values saved without one)."""
    dtypes = {}
    for node in plan.graph.nodes:
        for value in node.outputs:
            try:
                dtypes[value.name] = value.dtype.numpy
            except (AttributeError, TypeError):  # untyped, or a dtype numpy lacks
                continue
    return dtypes


def _reference(args: argparse.Namespace, plan: EnginePlan, inputs: Mapping[str, np.ndarray], log: Log
               ) -> tuple[str, dict[str, Any], dict[str, Any], dict[str, str]]:
    """(what the reference is, its outputs, its intermediates, {tensor: why not exposed})."""
    output_names = {v.name for v in plan.graph.outputs}
    if args.load_outputs:
        loaded = load_tensors(args.load_outputs, dtypes=_numpy_dtypes(plan))
        if not loaded:
            raise ConfigError(f"--load-outputs: '{args.load_outputs}' holds no tensors")
        outputs = {name: a for name, a in loaded.items() if name in output_names}
        intermediates = {name: a for name, a in loaded.items() if name not in output_names}
        if args.mark_all and not intermediates:
            log.warn(f"--mark-all: '{args.load_outputs}' holds only outputs; save the reference with --mark-all "
                     f"--save-outputs to compare every layer")
        return f"the outputs saved in '{args.load_outputs}'", outputs, intermediates, {}
    import onnx
    model = onnx.load(args.model)
    known = {v.name: v.dtype.value for n in plan.graph.nodes for v in n.outputs if v.dtype is not None}
    name = "onnxruntime" if args.reference == "ort" else "the ONNX reference evaluator"
    log.info(f"Running the reference ({name}){' with every node output exposed' if args.mark_all else ''}")
    result = run_reference(model, inputs, args.reference, intermediates=args.mark_all, known_dtypes=known)
    return name, result.outputs, result.intermediates, result.unavailable


# ---- printing ------------------------------------------------------------------------------------

def _counts(nan: int, inf: int) -> str:
    return f"{nan}/{inf}"


def _stat_cells(t: TensorComparison, quantile: bool) -> list[str]:
    s = t.stats
    if s is None:
        return ["-"] * (10 if quantile else 8)
    cells = [format_number(s.max_abs), format_number(s.mean_abs), format_number(s.median_abs)]
    if quantile:
        cells.append(format_number(s.quantile_abs))
    cells += [format_number(s.max_rel), format_number(s.mean_rel), format_number(s.median_rel)]
    if quantile:
        cells.append(format_number(s.quantile_rel))
    cells += [format_number(s.cosine), format_number(s.snr_db)]
    return cells


def _verdict(t: TensorComparison) -> str:
    return "[green]PASSED[/]" if t.passed else "[bold red]FAILED[/]"


def _print_outputs(console: Any, log: Log, report: ComparisonReport, reference_name: str,
                   thresholds: Thresholds) -> None:
    quantile = thresholds.check_error_stat == "quantile"
    q = f"q{thresholds.error_quantile:g}"
    table = Table(title=f"tensorkiln vs {escape(reference_name)}: outputs", box=box.SIMPLE_HEAD)
    columns = ["output", "shape", "max abs", "mean abs", "median abs", *([f"{q} abs"] if quantile else []),
               "max rel", "mean rel", "median rel", *([f"{q} rel"] if quantile else []), "cosine", "SNR dB",
               "NaN/Inf kiln, ref", "atol, rtol", "result"]
    for column in columns:
        table.add_column(column, overflow="fold")
    for t in report.tensors:
        s = t.stats
        table.add_row(escape(t.name), format_dims(t.shape) or "(scalar)", *_stat_cells(t, quantile),
                      f"{_counts(s.nan_actual, s.inf_actual)}, {_counts(s.nan_expected, s.inf_expected)}" if s else "-",
                      f"{format_number(t.atol)}, {format_number(t.rtol)}", _verdict(t))
    console.print(table)
    for t in report.failures:
        log.raw(f"[E] Output {t.summary()}")
    for name in report.missing:
        log.raw(f"[E] Output '{name}': the reference has it, tensorkiln produced no such output")
    for name, why in report.skipped:
        log.warn(f"Output '{name}' not compared: {why}")
    if not report.tensors and not report.missing:
        log.raw("[E] No output in common with the reference: nothing was compared")


def _layer_rows(report: LayerComparisonReport, verbose: bool) -> tuple[list[int], int, int]:
    """Indices of the compared tensors to show, and how many are hidden before / after them."""
    total = len(report.compared)
    if verbose:
        return list(range(total)), 0, 0
    first = report.first_divergence
    if first is None:
        shown = min(total, LAYER_ROWS_WITHOUT_DIVERGENCE)
        return list(range(shown)), 0, total - shown
    k = report.compared.index(first)
    start = max(0, k - LAYERS_BEFORE_DIVERGENCE)
    end = min(total, k + LAYERS_AFTER_DIVERGENCE + 1)
    return list(range(start, end)), start, total - end


def _print_layers(console: Any, log: Log, report: LayerComparisonReport, producers: Mapping[str, LayerInfo],
                  unavailable: Mapping[str, str], reference_name: str, verbose: bool) -> None:
    rows, hidden_before, hidden_after = _layer_rows(report, verbose)
    table = Table(title=f"tensorkiln vs {escape(reference_name)}: every layer (engine order)", box=box.SIMPLE_HEAD)
    for column in ("#", "layer", "op", "tactic", "precision", "tensor", "max abs", "max rel", "cosine", "SNR dB",
                   "NaN/Inf kiln", "result"):
        table.add_column(column, overflow="fold")
    if hidden_before:
        table.add_row("...", f"({hidden_before} earlier tensors passed)", *[""] * 10)
    for i in rows:
        t = report.compared[i]
        layer = producers.get(t.name)
        s = t.stats
        table.add_row(str(layer.index) if layer else "?", escape(layer.name) if layer else "?",
                      layer.op_type if layer else "?", escape(layer.tactic) if layer else "?",
                      layer.precision if layer else "?", escape(t.name),
                      format_number(s.max_abs) if s else "-", format_number(s.max_rel) if s else "-",
                      format_number(s.cosine) if s else "-", format_number(s.snr_db) if s else "-",
                      _counts(s.nan_actual, s.inf_actual) if s else "-", _verdict(t))
    if hidden_after:
        table.add_row("...", f"({hidden_after} later tensors; --verbose shows all)", *[""] * 10)
    console.print(table)
    log.info(f"Compared {len(report.compared)} tensors of {len(report.compared) + len(report.engine_only)} engine "
             f"layer outputs; {len(report.engine_only)} exist only in the engine (renamed, or not exposed by the "
             f"reference), {len(report.reference_only)} only in the reference (fused away or folded)"
             + (f", {len(unavailable)} the reference could not expose" if unavailable else ""))
    for name, why in list(unavailable.items())[:5]:
        log.verbose(f"Reference could not expose '{name}': {why}")
    for name, why in report.skipped:
        log.warn(f"Tensor '{name}' not compared: {why}")
    first = report.first_divergence
    if first is None:
        if report.compared:
            log.info("Every compared layer output is within tolerance")
        else:
            log.raw("[E] No layer output in common with the reference: nothing was compared")
        return
    layer = producers.get(first.name)
    where = layer.describe() if layer else "an unknown layer"
    line = f"FIRST DIVERGENCE: {where}, tensor '{first.name}': {first.reason}"
    console.print(Text(line, style="bold red"), soft_wrap=True)
    later = len(report.failures) - 1
    if later:
        log.info(f"{later} later tensor(s) also fail (they may only inherit the first divergence)")


__all__ = ["load_input_files", "make_parser", "parse_tolerances", "run", "thresholds_from_flags"]
