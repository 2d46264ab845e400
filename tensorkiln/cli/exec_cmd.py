"""`kiln exec`: trtexec's command line (same flag spellings) on tensorkiln.

Build from --onnx (optionally --saveEngine) or load --loadEngine, then time inference
the way trtexec does: warm up for --warmUp ms, run until both --iterations and
--duration are satisfied, and print trtexec's performance summary.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, TextIO

import numpy as np
import torch

from ..builder import BuilderConfig
from ..engine import load_plan
from ..precision import CONSTRAINTS
from ..runtime import ExecutionContext, Runtime
from ..version import __version__
from .build import (TRTEXEC_TUNING_FLAGS, add_tuning_flags, build_engine, optimization_level,
                    parse_layer_precisions, precision_options, save_engine, shape_flags_from, tuning_config)
from .device import resolve_exec_device
from .io_formats import formatted, parse_io_formats
from .ref_outputs import add_reference_flags, check_reference_outputs, validate_reference_flags
from .report import IterationTimes, Log, print_layer_profile, print_performance_summary, print_trace_averages
from .shapes import ShapeFlags, build_profile, format_dims, run_shapes
from .tensors import (is_raw, merge_file_shapes, outputs_as_json, parse_input_files, random_inputs,
                      read_input_files, shapes_of, write_json)
from .usage import KilnArgumentParser, UsageError

SHAPE_FLAG_NAMES = ("--shapes", "--minShapes", "--optShapes", "--maxShapes")

DESCRIPTION = """\
trtexec's command line on tensorkiln: build an engine from --onnx (and --saveEngine it)
or --loadEngine one, then benchmark inference. Flags are spelled as in trtexec and take
--flag=value or --flag value.

Shape specs: name:1x3x224x224,other:1x16. Quote names holding ':' or ',' with single
quotes ('in:0':1x3x224x224); an unquoted name splits on the last ':'.
  --shapes alone builds a fixed profile (min = opt = max) and runs at those shapes.
  --minShapes/--optShapes/--maxShapes build a range (all three for each input they
  name); inference then runs at --shapes if given, else at the opt shapes.
  A dynamic input given no shape: a dynamic leading (batch) dimension defaults to 1,
  with trtexec's "Automatically overriding shape" warning; any other dynamic
  dimension is an error asking for --shapes (trtexec would use 1 there as well, but
  1x1 images and length-1 sequences mostly fail later with a vaguer message). A
  symbolic dimension shared with an input that was given a shape takes its size.

Inputs are random (seeded, so runs repeat: floats in [-1, 1), integers in [0, 8))
unless --loadInputs names files: name:file.npy, name:file.bin (raw bytes of the
input's dtype at its run shape, as trtexec), name:file.npz, or a bare file.npz whose
array names are input names.

Device: the GPU when there is one, else the CPU; --loadEngine defaults to the engine's
backend. --device=N picks GPU N (an error without a GPU); --backend=cpu|cuda picks
the backend. --useCudaGraph and --noDataTransfers take effect with the CUDA backend.
"""


def make_parser() -> KilnArgumentParser:
    p = KilnArgumentParser(prog="kiln exec", description=DESCRIPTION)
    model = p.add_argument_group("Model Options")
    model.add_argument("--onnx", metavar="FILE", help="ONNX model to build")
    model.add_argument("--loadEngine", metavar="FILE", help="load a serialized engine instead of building one")
    build = p.add_argument_group("Build Options")
    build.add_argument("--saveEngine", metavar="FILE", help="save the built engine (written atomically)")
    for flag, dest, helptext in zip(SHAPE_FLAG_NAMES, ("shapes", "min_shapes", "opt_shapes", "max_shapes"), ("shapes to run at (and a fixed profile when building)",
                                                 "profile minimum shapes", "profile optimum shapes",
                                                 "profile maximum shapes")):
        build.add_argument(flag, dest=dest, action="append", metavar="SPEC", help=helptext)
    build.add_argument("--fp16", action="store_true", help="allow float16 layers")
    build.add_argument("--bf16", action="store_true", help="allow bfloat16 layers")
    build.add_argument("--best", action="store_true",
                       help="allow every precision tensorkiln builds: TF32, FP16 and BF16 (as --fp16 --bf16; "
                            "INT8 and FP8 layers are not built yet)")
    build.add_argument("--noTF32", action="store_true", help="disallow TF32 math (CUDA)")
    build.add_argument("--layerPrecisions", action="append", metavar="SPEC",
                       help="per-layer precision: layerName:fp32|fp16|bf16[,spec] (one '*' wildcard per name, "
                            "e.g. '*:fp16'; later entries override earlier ones); effective only with "
                            "--precisionConstraints=prefer|obey")
    build.add_argument("--precisionConstraints", choices=CONSTRAINTS, default=None, metavar="none|prefer|obey",
                       help="none = no constraints (default); prefer = meet --layerPrecisions where possible; "
                            "obey = meet them or fail")
    build.add_argument("--inputIOFormats", metavar="SPEC",
                       help="type:chw[,type:chw...] the engine takes its inputs in, e.g. fp16:chw: one spec for "
                            "every float32 input, or one per input in order (a float32 tensor may be fp16 or bf16)")
    build.add_argument("--outputIOFormats", metavar="SPEC",
                       help="type:chw[,type:chw...] the engine gives its outputs in, as --inputIOFormats")
    build.add_argument("--builderOptimizationLevel", type=int, default=None, metavar="N",
                       help="0: only the required passes; >= 1 folds, eliminates and fuses (default 3); layer "
                            "names (for --layerPrecisions) depend on it")
    build.add_argument("--buildOnly", action="store_true", help="build (and save) the engine; skip inference")
    build.add_argument("--skipInference", action="store_true", help="same as --buildOnly")
    add_tuning_flags(p, TRTEXEC_TUNING_FLAGS)
    inference = p.add_argument_group("Inference Options")
    inference.add_argument("--iterations", default="10", metavar="N",
                           help="run at least N inference iterations (default = 10)")
    inference.add_argument("--warmUp", default="200", metavar="ms",
                           help="warm up for N milliseconds before measuring (default = 200)")
    inference.add_argument("--duration", default="3", metavar="s",
                           help="measure for at least N seconds of wallclock time (default = 3)")
    inference.add_argument("--avgRuns", default="10", metavar="N",
                           help="average the --verbose trace over N consecutive iterations (default = 10)")
    inference.add_argument("--percentile", default="90,95,99", metavar="P1,P2",
                           help="latency percentiles to report, each in [0, 100] (default = 90,95,99)")
    inference.add_argument("--loadInputs", action="append", metavar="SPEC",
                           help="input values from files: name:file.npy|.bin|.npz, comma separated")
    inference.add_argument("--useCudaGraph", action="store_true",
                           help="capture the engine in a CUDA graph per input shape (the default on CUDA)")
    inference.add_argument("--noCudaGraph", action="store_true",
                           help="run the engine's layers one by one instead of replaying a CUDA graph")
    inference.add_argument("--noDataTransfers", action="store_true",
                           help="leave out host-to-device and device-to-host copies (CUDA backend)")
    inference.add_argument("--separateProfileRun", action="store_true",
                           help="accepted: the --dumpProfile/--exportProfile runs are always separate from the "
                                "timed ones")
    reporting = p.add_argument_group("Reporting Options")
    reporting.add_argument("--verbose", action="store_true", help="verbose logs (and tracebacks on errors)")
    reporting.add_argument("--exportOutput", metavar="FILE", help="write the outputs of the last run as JSON")
    reporting.add_argument("--exportTimes", metavar="FILE", help="write the timing of every iteration as JSON")
    reporting.add_argument("--dumpProfile", action="store_true",
                           help="print each layer's time (eager runs after the timed ones, as many as --iterations)")
    reporting.add_argument("--exportProfile", metavar="FILE",
                           help="write each layer's time as JSON (trtexec's layout; implies the profiling runs)")
    system = p.add_argument_group("System Options")
    system.add_argument("--device", metavar="N", help="GPU index to run on (an error where there is no GPU)")
    system.add_argument("--backend", choices=("cpu", "cuda"), help="backend to run on (tensorkiln's own flag)")
    add_reference_flags(p)
    return p


def _int_flag(value: str, flag: str, minimum: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise UsageError(f"{flag} takes an integer, got '{value}'") from None
    if number < minimum:
        raise UsageError(f"{flag} must be >= {minimum}, got {number}")
    return number


def _float_flag(value: str, flag: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise UsageError(f"{flag} takes a number, got '{value}'") from None
    if not math.isfinite(number) or number < 0:
        raise UsageError(f"{flag} must be a number >= 0, got '{value}'")
    return number


def _percentiles(value: str) -> list[float]:
    result = []
    for part in value.split(","):
        try:
            p = float(part)
        except ValueError:
            raise UsageError(f"--percentile takes numbers like 90,95,99, got '{value}'") from None
        if not 0 <= p <= 100:
            raise UsageError(f"--percentile values must be in [0, 100], got {part}")
        result.append(p)
    return result


def _check_combination(args: argparse.Namespace, log: Log) -> None:
    if bool(args.onnx) == bool(args.loadEngine):
        raise UsageError("give exactly one model: --onnx=FILE to build, or --loadEngine=FILE")
    if args.loadEngine:
        if args.saveEngine:
            raise UsageError("--saveEngine needs --onnx (a loaded engine is already saved)")
        if args.buildOnly or args.skipInference:
            raise UsageError("--buildOnly/--skipInference need --onnx (nothing is built with "
                             "--loadEngine)")
        ignored = [flag for flag, on in (("--fp16", args.fp16), ("--bf16", args.bf16), ("--best", args.best),
                                         ("--noTF32", args.noTF32),
                                         ("--minShapes", args.min_shapes), ("--optShapes", args.opt_shapes),
                                         ("--maxShapes", args.max_shapes), ("--layerPrecisions", args.layerPrecisions),
                                         ("--precisionConstraints", args.precisionConstraints),
                                         ("--inputIOFormats", args.inputIOFormats is not None),
                                         ("--outputIOFormats", args.outputIOFormats is not None),
                                         ("--builderOptimizationLevel", args.builderOptimizationLevel is not None),
                                         ("--avgTiming", args.avg_timing is not None),
                                         ("--minTiming", args.min_timing is not None),
                                         ("--tacticSources", args.tactic_sources is not None),
                                         ("--timingCacheFile", args.timing_cache_file is not None),
                                         ("--noBuilderCache", args.no_builder_cache),
                                         ("--memPoolSize", args.mem_pool_size is not None),
                                         ("--maxAuxStreams", args.max_aux_streams is not None))
                   if on]
        if ignored:
            verb = "affects" if len(ignored) == 1 else "affect"
            log.warn(f"{', '.join(ignored)} only {verb} building; ignored with --loadEngine")


def run(args: argparse.Namespace, out: TextIO, err: Optional[TextIO] = None) -> int:
    log = Log(out, verbose=args.verbose)
    iterations = _int_flag(args.iterations, "--iterations", 1)
    warm_up_ms = _float_flag(args.warmUp, "--warmUp")
    duration_s = _float_flag(args.duration, "--duration")
    avg_runs = _int_flag(args.avgRuns, "--avgRuns", 1)
    percentiles = _percentiles(args.percentile)
    _check_combination(args, log)
    if args.best:
        args.fp16 = args.bf16 = True
    validate_reference_flags(args)
    flags = shape_flags_from(args, SHAPE_FLAG_NAMES)
    flags.check_ranges()
    file_pairs = parse_input_files(args.loadInputs, "--loadInputs", ":")
    build_only = args.buildOnly or args.skipInference

    plan = load_plan(args.loadEngine) if args.loadEngine else None
    device = resolve_exec_device(args.device, args.backend, plan.device.backend if plan else None)
    on_gpu = device.startswith("cuda")
    _print_options(log, args, device, iterations, warm_up_ms, duration_s, avg_runs, percentiles)
    if (args.useCudaGraph or args.noCudaGraph or args.noDataTransfers) and not on_gpu:
        log.warn("--useCudaGraph/--noCudaGraph/--noDataTransfers take effect with the CUDA backend; ignored on the CPU")
    if args.useCudaGraph and args.noCudaGraph:
        raise UsageError("--useCudaGraph and --noCudaGraph contradict each other")

    file_arrays: dict[str, np.ndarray] = {}
    if plan is None:
        from ..frontends.onnx import parse_onnx  # only when building: a loaded engine needs no frontend

        log.info(f"Parsing ONNX model '{args.onnx}'")
        graph = parse_onnx(args.onnx)
        input_formats = parse_io_formats(args.inputIOFormats, graph.inputs, "--inputIOFormats")
        output_formats = parse_io_formats(args.outputIOFormats, graph.outputs, "--outputIOFormats")
        file_arrays = read_input_files([p for p in file_pairs if not is_raw(p[1])],
                                       formatted(graph.inputs, input_formats), {}, "--loadInputs")
        build_flags = ShapeFlags(shapes=merge_file_shapes(flags.shapes, shapes_of(file_arrays), "--shapes"),
                                 min=flags.min, opt=flags.opt, max=flags.max, names=flags.names)
        warnings: list[str] = []
        profile = build_profile(graph.inputs, build_flags, warnings)
        for warning in warnings:
            log.warn(warning)
        layer_precisions, constraints = precision_options(
            parse_layer_precisions(args.layerPrecisions, "--layerPrecisions"), args.precisionConstraints,
            ("--layerPrecisions", "--precisionConstraints"), log)
        config = BuilderConfig(device=device, tf32=not args.noTF32, fp16=args.fp16, bf16=args.bf16,
                               profiles=(profile,) if profile else (), layer_precisions=layer_precisions,
                               precision_constraints=constraints, input_formats=input_formats,
                               output_formats=output_formats,
                               **optimization_level(args.builderOptimizationLevel, "--builderOptimizationLevel"),
                               **tuning_config(args, TRTEXEC_TUNING_FLAGS, log),
                               tuning_progress=True if args.verbose else None)
        plan = build_engine(graph, config, log)
        if args.saveEngine:
            save_engine(plan, Path(args.saveEngine), log)
        if build_only:
            log.info("Skipped inference phase since --buildOnly/--skipInference was given.")
            return 0
    else:
        log.info(f"Loaded engine '{args.loadEngine}' (built by tensorkiln {plan.library_version} for "
                 f"{plan.device.describe()}, {len(plan.layers)} layers)")

    engine = Runtime(device).load(plan, source_name=args.loadEngine or "")
    context = engine.create_execution_context(cuda_graph=not args.noCudaGraph)
    if on_gpu and engine.device_memory_size is not None:
        elsewhere = plan.memory.get("arena_plan", {}).get("elsewhere_peak_bytes")
        log.info(f"Device memory for activations: {engine.device_memory_size} bytes preallocated by the context "
                 f"(the arena, planned at the profiles' max shapes)"
                 + (f"; up to {elsewhere} bytes more for the layers that allocate their own outputs"
                    if elsewhere else ""))
    if not file_arrays:
        file_arrays = read_input_files([p for p in file_pairs if not is_raw(p[1])], engine.inputs, {},
                                       "--loadInputs")
    warnings = []
    given = merge_file_shapes(flags.shapes, shapes_of(file_arrays), "--shapes")
    shapes = run_shapes(engine.inputs, {spec.name: spec.profiles for spec in engine.inputs}, given, "--shapes",
                        warnings)
    for warning in warnings:
        log.warn(warning)
    file_arrays.update(read_input_files([p for p in file_pairs if is_raw(p[1])], engine.inputs, shapes,
                                        "--loadInputs"))
    missing = [spec for spec in engine.inputs if spec.name not in file_arrays]
    inputs = {**random_inputs(missing, shapes), **file_arrays}
    for spec in engine.inputs:
        source = "from file" if spec.name in file_arrays else "random"
        log.info(f"Set shape of input tensor {spec.name} to: {format_dims(shapes[spec.name]) or '(scalar)'} "
                 f"({spec.dtype.short}, {source})")

    times, outputs = _benchmark(context, inputs, device, log, iterations, warm_up_ms, duration_s,
                                data_transfers=not args.noDataTransfers)
    for name, value in outputs.items():
        log.verbose(f"Output tensor {name}: {format_dims(tuple(value.shape))}")
    if args.exportOutput:
        write_json(Path(args.exportOutput), outputs_as_json(outputs))
        log.info(f"Outputs written to '{args.exportOutput}'")
    if args.exportTimes:
        write_json(Path(args.exportTimes), [t.as_json() for t in times])
        log.info(f"Timing of {len(times)} iterations written to '{args.exportTimes}'")
    print_trace_averages(log, times, avg_runs, on_gpu)
    for warning in getattr(context, "warnings", []):
        log.warn(warning)
    print_performance_summary(log, times, percentiles, on_gpu, data_transfers=not args.noDataTransfers)
    if args.dumpProfile or args.exportProfile:
        profile = context.profile_layers(inputs, runs=iterations)
        if args.dumpProfile:
            print_layer_profile(log, profile)
        if args.exportProfile:
            write_json(Path(args.exportProfile), profile.to_json())
            log.info(f"Profile of {len(profile.layers)} layers written to '{args.exportProfile}'")
    return 0 if check_reference_outputs(args, outputs, log) else 1


def _print_options(log: Log, args: argparse.Namespace, device: str, iterations: int, warm_up_ms: float,
                   duration_s: float, avg_runs: int, percentiles: list[float]) -> None:
    log.info("=== Model Options ===")
    log.info(f"Format: {'ONNX' if args.onnx else 'engine plan'}")
    log.info(f"Model: {args.onnx or args.loadEngine}")
    if args.onnx:
        log.info("=== Build Options ===")
        precisions = ["FP32"] + (["FP16"] if args.fp16 else []) + (["BF16"] if args.bf16 else [])
        log.info(f"Precision: {'+'.join(precisions)}{'' if args.noTF32 else ' (TF32 allowed)'}")
        log.info(f"Precision constraints: {args.precisionConstraints or 'None'}")
        log.info(f"Layer precisions: {','.join(args.layerPrecisions or []) or 'none'}")
        log.info(f"Input(s) format: {args.inputIOFormats or 'as declared (linear)'}")
        log.info(f"Output(s) format: {args.outputIOFormats or 'as declared (linear)'}")
        log.info(f"Tactic timing: avgTiming {args.avg_timing or 8}, minTiming {args.min_timing or 1}; "
                 f"tactic sources: {args.tactic_sources or 'default'}")
        cache = "disabled" if args.no_builder_cache else (args.timing_cache_file or "in memory (this build only)")
        log.info(f"Timing cache: {cache}")
        log.info(f"Save engine: {args.saveEngine or ''}")
    log.info("=== Inference Options ===")
    log.info(f"Iterations: {iterations}")
    log.info(f"Duration: {duration_s:g}s (+ {warm_up_ms:g}ms warm up)")
    log.info(f"Inputs: {'from files' if args.loadInputs else 'random (seeded)'}")
    log.info("=== Reporting Options ===")
    log.info(f"Averages: {avg_runs} inferences")
    log.info(f"Percentiles: {','.join(f'{p:g}' for p in percentiles)}")
    log.info("=== System Options ===")
    log.info(f"Device: {device}")
    log.info(f"tensorkiln: {__version__}, torch: {torch.__version__}")


def _benchmark(context: ExecutionContext, inputs: Mapping[str, np.ndarray], device: str, log: Log,
               iterations: int, warm_up_ms: float, duration_s: float,
               data_transfers: bool) -> tuple[list[IterationTimes], dict[str, Any]]:
    run_once = _cuda_runner(context, inputs, device, data_transfers) if device.startswith("cuda") \
        else _cpu_runner(context, inputs)
    log.info("Starting inference")
    warm_start = time.perf_counter()
    warm_count = 0
    outputs: dict[str, Any] = {}
    while (time.perf_counter() - warm_start) * 1000.0 < warm_up_ms:
        _, outputs = run_once(warm_start)
        warm_count += 1
    if warm_up_ms > 0:
        log.info(f"Warmup completed {warm_count} queries over {warm_up_ms:g} ms")
    times: list[IterationTimes] = []
    origin = time.perf_counter()
    while len(times) < iterations or time.perf_counter() - origin < duration_s:
        record, outputs = run_once(origin)
        times.append(record)
    log.info(f"Timing trace has {len(times)} queries over {time.perf_counter() - origin:.6g} s")
    return times, outputs


Runner = Callable[[float], tuple[IterationTimes, dict[str, Any]]]


def _cpu_runner(context: ExecutionContext, inputs: Mapping[str, np.ndarray]) -> Runner:
    """On the CPU execution is synchronous and there are no copies: every phase is the one call."""
    def run_once(origin: float) -> tuple[IterationTimes, dict[str, Any]]:
        start = time.perf_counter()
        outputs = context.execute(inputs)
        end = time.perf_counter()
        s, e = (start - origin) * 1000.0, (end - origin) * 1000.0
        return IterationTimes(s, e, s, s, s, e, e, e), outputs
    return run_once


def _cuda_runner(context: ExecutionContext, inputs: Mapping[str, np.ndarray], device: str,
                 data_transfers: bool) -> Runner:
    """Host-side timestamps with a synchronize after each phase, so each phase is measured alone."""
    target = torch.device(device)
    staged = {name: torch.from_numpy(np.ascontiguousarray(a)).to(target) for name, a in inputs.items()}
    host = {name: torch.from_numpy(np.ascontiguousarray(a)).pin_memory() for name, a in inputs.items()}

    def run_once(origin: float) -> tuple[IterationTimes, dict[str, Any]]:
        start = time.perf_counter()
        if data_transfers:
            device_inputs = {name: t.to(target, non_blocking=True) for name, t in host.items()}
            torch.cuda.synchronize(target)
        else:
            device_inputs = staged
        end_h2d = time.perf_counter()
        outputs = context.execute(device_inputs)
        end_enqueue = time.perf_counter()
        torch.cuda.synchronize(target)
        end_compute = time.perf_counter()
        if data_transfers:
            outputs = {name: t.cpu() if isinstance(t, torch.Tensor) else t for name, t in outputs.items()}
        end = time.perf_counter()
        ms = [(t - origin) * 1000.0 for t in (start, end_enqueue, end_h2d, end_compute, end)]
        return IterationTimes(ms[0], ms[1], ms[0], ms[2], ms[2], ms[3], ms[3], ms[4]), outputs
    return run_once
