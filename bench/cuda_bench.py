#!/usr/bin/env python3
"""tensorkiln vs PyTorch eager and torch.compile on the GPU, all in one process run.

Workloads: ResNet-50 at batch 1 and 128, BERT-base at sequence 128, batch 1 and 64, each
in FP16 and in FP32 with TF32 allowed ("tf32"; strict "fp32" on request). For each:

  * ONE model for every system (bench/models.py): the peers' own PyTorch modules
    (torchvision ResNet-50, transformers BertModel(BertConfig()), seeded, eval), exported
    to ONNX (TorchScript exporter first, then dynamo; opset 17; dynamic batch) for
    tensorkiln; the zoo model + the same graph run op by op in torch only where that fails
    (the output says so).
  * the same seeded random inputs on the device for everyone (3 sets, rotated);
  * before timing, every system's outputs against PyTorch eager at the same precision,
    at that precision's tolerance (tensorkiln/testing/tolerances.py): max abs error and
    whether every element is within atol + rtol*|ref|; also the max abs error against
    strict FP32 eager (TF32 off). A wrong result is reported in the table, never hidden;
  * latency: CUDA events around each call, the device synchronized between calls (each
    call is one inference from an idle GPU), after warm-up calls; median and p99 over the
    calls. "host ms" is the median time the CPU spent inside the call (enqueueing work):
    when it is close to the latency, the run is bound by the CPU launching kernels;
  * throughput: calls enqueued back to back without a synchronization between them (as
    trtexec and a server do), rounds of >= 100 ms between CUDA events, the median round's
    ms per inference; throughput = batch / that. A system whose host work per call is
    shorter than its GPU work hides that host work here and not in the latency;
  * tensorkiln: engine build time (ONNX parse + build) cold and again with the warm timing
    cache (where BuilderConfig has a timing cache; else "n/a"), then engine load + first
    inference from the serialized plan in a fresh Runtime; the engine timed is that
    loaded one. CUDA graphs are used where the runtime offers them (the output says so);
  * in FP16 every system takes and gives fp16 tensors: the peers run model.half() on inputs cast
    to fp16, and tensorkiln's engine is built with fp16 I/O formats for its float32 inputs and
    outputs (trtexec's --inputIOFormats=fp16:chw --outputIOFormats=fp16:chw; the "I/O" column);
  * torch.compile: mode="reduce-overhead" (CUDA graphs); "max-autotune" with
    --max-autotune (slow to compile); compile + warm-up time reported, outside the timing;
  * with --profile: one profiled call per system (torch.profiler, CUDA activity): kernels per
    inference and their summed GPU time, to show where time goes. Off by default: under
    torch 2.11 + CUDA 13.0, CUPTI can segfault the process while torch.compile's CUDA graphs
    replay (seen at ResNet-50 b128), which would lose the whole run.

Prints rich tables; with --out DIR (default $OUT when set) writes results.json and
results.md (date, device, versions, the exact command, the tables and ratios) after every
workload, so a run cut short still leaves what it measured. A benchmark, not a test.

    python3 bench/cuda_bench.py --quick --workloads resnet50-b1
    python3 bench/cuda_bench.py --out /tmp/bench
    python3 bench/cuda_bench.py --device cpu --small --quick   # smoke test without a GPU
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import importlib
import inspect
import json
import math
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ siblings, run from anywhere
import models as bench_models  # noqa: E402
import peers  # noqa: E402
from models import WORKLOADS, ModelBundle, Workload  # noqa: E402

import tensorkiln  # noqa: E402
from tensorkiln.builder import Builder, BuilderConfig  # noqa: E402
from tensorkiln.builder.config import OptimizationProfile  # noqa: E402
from tensorkiln.frontends.onnx import parse_onnx  # noqa: E402
from tensorkiln.runtime import Runtime  # noqa: E402
from tensorkiln.testing.tolerances import tolerance_for  # noqa: E402

PRECISIONS = ("fp16", "tf32", "fp32")
TENSORKILN = "tensorkiln"
# The same model built for a range of shapes (--dynamic-profile): what a server deploys.
TENSORKILN_DYNAMIC = "tensorkiln (dynamic profile)"
# The largest batch a dynamic-profile engine takes (its opt shape is the workload's).
DYNAMIC_MAX_BATCH = 64


def entry_name(dynamic: bool) -> str:
    return TENSORKILN_DYNAMIC if dynamic else TENSORKILN


def _is_ours(system: str) -> bool:
    return system in (TENSORKILN, TENSORKILN_DYNAMIC)
EAGER = "torch eager"
N_INPUT_SETS = 3


# ---------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------

@dataclass
class Check:
    max_abs_error: float  # against eager at the same precision
    within_tolerance: bool
    worst_ratio: float  # max over elements of the smaller |err| / (atol + rtol*|ref|) of the two refs; <= 1 passes
    max_abs_error_vs_fp32: float  # against strict FP32 eager
    detail: str = ""


@dataclass
class Timing:
    iterations: int
    median_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    host_median_ms: float


@dataclass
class BackToBack:
    """Calls enqueued back to back: throughput as a server sees it."""

    rounds: int
    calls_per_round: int
    ms_per_call: float  # the median round's
    min_ms_per_call: float  # the fastest round's
    host_ms_per_call: float  # the median round's CPU time per call: near ms_per_call means host-bound


@dataclass
class Profile:
    kernels_per_call: float
    gpu_kernel_ms_per_call: float
    device_to_host_copies_per_call: float  # each one makes the host wait for the GPU
    top: list[tuple[str, float, int]]  # (kernel, ms per call, count per call)


@dataclass
class Row:
    workload: str
    precision: str
    system: str
    unit: str
    batch: int
    throughput: Optional[float] = None  # batch / back_to_back.ms_per_call
    timing: Optional[Timing] = None  # one call at a time: latency
    back_to_back: Optional[BackToBack] = None
    check: Optional[Check] = None
    ratio_to_best_peer: Optional[float] = None  # throughput / the best peer's
    latency_ratio_to_best_peer: Optional[float] = None  # median latency / the best peer's (< 1: faster)
    prepare_seconds: Optional[float] = None
    prepare_what: str = ""
    profile: Optional[Profile] = None
    error: str = ""  # why this system has no numbers


@dataclass
class BuildRow:
    workload: str
    precision: str
    parse_seconds: Optional[float] = None
    build_cold_seconds: Optional[float] = None
    build_warm_seconds: Optional[float] = None  # None: no timing cache support ("n/a")
    warm_same_tactics: Optional[bool] = None
    load_first_inference_ms: Optional[float] = None
    layers: Optional[int] = None
    tactics: dict[str, int] = field(default_factory=dict)
    cuda_graphs: str = "n/a"
    timing_cache: str = "n/a"
    # Auxiliary streams the engine uses, and of how many independent branches they run.
    aux_streams: str = "n/a"
    # The dtype of the engine's float inputs and outputs ("as declared": the model's float32).
    io_formats: str = "as declared"
    error: str = ""


@dataclass
class Report:
    meta: dict[str, Any]
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    builds: list[BuildRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"meta": self.meta, "models": self.models, "rows": [dataclasses.asdict(r) for r in self.rows],
                "builds": [dataclasses.asdict(b) for b in self.builds], "notes": self.notes}


# ---------------------------------------------------------------------------------------
# Timing, checking, profiling
# ---------------------------------------------------------------------------------------

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(call: Callable[[Any], Any], input_sets: Sequence[Any], device: torch.device, warmup: int,
               iterations: int, max_seconds: float, min_iterations: int) -> Timing:
    """Latency of `call`, one call at a time from an idle device: CUDA events around each
    call (perf_counter on the CPU backend), median and p99 over up to `iterations` calls
    (stopping after `max_seconds` once `min_iterations` ran)."""
    for i in range(warmup):
        call(input_sets[i % len(input_sets)])
    _sync(device)
    cuda = device.type == "cuda"
    if cuda:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    latencies: list[float] = []
    host: list[float] = []
    began = time.perf_counter()
    for i in range(iterations):
        x = input_sets[i % len(input_sets)]
        if cuda:
            start.record()
        t0 = time.perf_counter()
        call(x)
        t1 = time.perf_counter()
        if cuda:
            end.record()
            end.synchronize()
            latencies.append(start.elapsed_time(end))
        else:
            latencies.append((t1 - t0) * 1e3)
        host.append((t1 - t0) * 1e3)
        if i + 1 >= min_iterations and time.perf_counter() - began > max_seconds:
            break
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, max(0, int(round(0.99 * (len(ordered) - 1)))))]
    return Timing(len(latencies), statistics.median(latencies), p99, statistics.fmean(latencies), ordered[0],
                  statistics.median(host))


def time_back_to_back(call: Callable[[Any], Any], input_sets: Sequence[Any], device: torch.device,
                      estimate_ms: float, max_seconds: float, min_rounds: int = 5,
                      round_ms: float = 100.0) -> BackToBack:
    """Throughput of `call` as a server sees it: rounds of calls enqueued back to back with no
    synchronization between them (each round's calls long enough to hide the events'
    overhead: >= `round_ms` at the `estimate_ms` latency), the device synchronized between
    rounds; the median round's time per call. Runs `min_rounds` rounds, then more until
    `max_seconds`."""
    calls = max(8, math.ceil(round_ms / max(estimate_ms, 1e-3)))
    cuda = device.type == "cuda"
    for i in range(min(calls, 20)):  # the latency loop warmed it; this settles the queue
        call(input_sets[i % len(input_sets)])
    _sync(device)
    if cuda:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    per_call: list[float] = []
    host: list[float] = []
    began = time.perf_counter()
    while len(per_call) < min_rounds or time.perf_counter() - began < max_seconds:
        if cuda:
            start.record()
        t0 = time.perf_counter()
        for i in range(calls):
            call(input_sets[i % len(input_sets)])
        t1 = time.perf_counter()
        if cuda:
            end.record()
            end.synchronize()
            per_call.append(start.elapsed_time(end) / calls)
        else:
            per_call.append((t1 - t0) * 1e3 / calls)
        host.append((t1 - t0) * 1e3 / calls)
    return BackToBack(len(per_call), calls, statistics.median(per_call), min(per_call), statistics.median(host))


def check_outputs(got: Sequence[torch.Tensor], ref: Sequence[torch.Tensor], ref32: Sequence[torch.Tensor],
                  precision: str, names: Sequence[str]) -> Check:
    """Each output against torch eager at the same precision and against the fp32 model, at the
    precision's tolerance. An element is wrong only when it is outside the tolerance of both: two
    fp16 results each carry their own rounding, so one element of millions can differ from eager
    fp16 by more than the tolerance while both sit within it of the fp32 answer."""
    tol = tolerance_for(precision)
    max_err, worst, max_err32 = 0.0, 0.0, 0.0
    details = []
    if len(got) != len(ref):
        return Check(float("inf"), False, float("inf"), float("inf"), f"{len(got)} outputs, expected {len(ref)}")
    for name, a, b, c in zip(names, got, ref, ref32):
        if tuple(a.shape) != tuple(b.shape):
            return Check(float("inf"), False, float("inf"), float("inf"),
                         f"{name}: shape {tuple(a.shape)} != {tuple(b.shape)}")
        a64, b64, c64 = (t.detach().to("cpu", torch.float64) for t in (a, b, c))
        if not torch.isfinite(a64).all():
            details.append(f"{name}: non-finite values")
            return Check(float("nan"), False, float("inf"), float("nan"), "; ".join(details))
        err, err32 = (a64 - b64).abs(), (a64 - c64).abs()
        ratio = torch.minimum(err / (tol.atol + tol.rtol * b64.abs()), err32 / (tol.atol + tol.rtol * c64.abs()))
        max_err = max(max_err, err.max().item())
        worst = max(worst, ratio.max().item())
        max_err32 = max(max_err32, err32.max().item())
        if ratio.max().item() > 1:
            bad = int((ratio > 1).sum())
            details.append(f"{name}: {bad}/{err.numel()} elements outside tolerance of both eager {precision} "
                           f"and fp32 (|ref| max {b64.abs().max().item():.3g})")
    return Check(max_err, worst <= 1.0, worst, max_err32, "; ".join(details))


def profile_call(call: Callable[[Any], Any], x: Any, device: torch.device, calls: int = 3,
                 top: int = 8) -> Optional[Profile]:
    """Kernels per call and their summed GPU time, from torch.profiler (CUDA activity)."""
    if device.type != "cuda":
        return None
    from torch.profiler import ProfilerActivity, profile

    call(x)
    _sync(device)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            call(x)
        _sync(device)
    kernels: list[tuple[str, float, int]] = []
    for evt in prof.key_averages():
        if getattr(evt, "device_type", None) != torch.autograd.DeviceType.CUDA:
            continue
        self_us = getattr(evt, "self_device_time_total", None)
        if self_us is None:
            self_us = getattr(evt, "self_cuda_time_total", 0.0)
        if self_us <= 0:
            continue
        kernels.append((evt.key, self_us / 1e3 / calls, evt.count / calls))
    if not kernels:
        return None
    kernels.sort(key=lambda k: -k[1])
    d2h = sum(k[2] for k in kernels if k[0].startswith("Memcpy DtoH"))
    return Profile(sum(k[2] for k in kernels), sum(k[1] for k in kernels), d2h,
                   [(name[:90], round(ms, 4), round(n, 2)) for name, ms, n in kernels[:top]])


# ---------------------------------------------------------------------------------------
# tensorkiln as a system
# ---------------------------------------------------------------------------------------

def _config_field(*needles: str) -> Optional[str]:
    """The BuilderConfig field whose name holds one of `needles` (features land over time)."""
    for name in BuilderConfig.__dataclass_fields__:
        if any(n in name for n in needles):
            return name
    return None


def _graph_context(engine: Any) -> Any:
    """An execution context that replays CUDA graphs where the runtime offers that."""
    make = engine.create_execution_context
    params = inspect.signature(make).parameters
    for name in params:
        if "graph" in name:
            return make(**{name: True})
    return make()


def _graph_state(context: Any, device: torch.device) -> str:
    """Whether the context replays CUDA graphs, in words (after its first call)."""
    if device.type != "cuda":
        return "n/a (cpu)"
    if not hasattr(context, "cuda_graph"):
        return "n/a (runtime has none)"
    warnings = "; ".join(getattr(context, "warnings", []))
    if context.cuda_graph:
        return "on" + (f" ({warnings})" if warnings else "")
    return "off: " + (warnings or "(no reason given)")


def _engine_input_dtypes(engine: Any) -> dict[str, torch.dtype]:
    return {t.name: t.dtype.torch for t in engine.inputs if t.is_tensor}


def dynamic_profile(inputs: dict[str, torch.Tensor]) -> OptimizationProfile:
    """Batch 1..max(DYNAMIC_MAX_BATCH, the workload's), and for token inputs ([batch, sequence]
    integers) sequence 1..the workload's; tuned at the workload's shapes."""
    ranges = {}
    for name, t in inputs.items():
        opt = tuple(t.shape)
        low = [1] + [1 if (not t.is_floating_point() and t.dim() == 2 and axis == 1) else d
                     for axis, d in enumerate(opt[1:], start=1)]
        high = [max(DYNAMIC_MAX_BATCH, opt[0])] + list(opt[1:])
        ranges[name] = (tuple(low), opt, tuple(high))
    return OptimizationProfile(ranges)


def tensorkiln_system(bundle: ModelBundle, workload: Workload, precision: str, device: torch.device,
                      input_sets: Sequence[dict[str, torch.Tensor]], cache_dir: Path,
                      build: BuildRow, dynamic: bool = False) -> peers.System:
    shapes = {name: tuple(t.shape) for name, t in input_sets[0].items()}
    profile = dynamic_profile(input_sets[0]) if dynamic else OptimizationProfile.fixed(shapes)
    config_args: dict[str, Any] = dict(device=str(device), fp16=precision == "fp16", tf32=precision != "fp32",
                                       profiles=(profile,))
    cache_field = _config_field("timing_cache")
    cache_path = cache_dir / f"{workload.name}-{precision}{'-dynamic' if dynamic else ''}.timing"
    if dynamic:
        cache_field = None  # one cold build: the warm-cache build time is the fixed engine's row
    if cache_field is not None:
        config_args[cache_field] = str(cache_path)
        build.timing_cache = f"BuilderConfig.{cache_field}"
    started = time.perf_counter()
    graph = parse_onnx(bundle.onnx_model)
    build.parse_seconds = time.perf_counter() - started
    if precision == "fp16" and _config_field("input_formats") and _config_field("output_formats"):
        # The fp16 peers take and give fp16 tensors (a model.half() module): so does this engine
        # (trtexec's --inputIOFormats=fp16:chw --outputIOFormats=fp16:chw), converting nothing at its boundary.
        from tensorkiln.cli.io_formats import parse_io_formats  # with the config fields it fills

        config_args["input_formats"] = parse_io_formats("fp16:chw", graph.inputs, "input formats")
        config_args["output_formats"] = parse_io_formats("fp16:chw", graph.outputs, "output formats")
        build.io_formats = "fp16"
    config = BuilderConfig(**config_args)
    started = time.perf_counter()
    plan = Builder(config).build(graph)
    _sync(device)
    build.build_cold_seconds = build.parse_seconds + time.perf_counter() - started
    build.layers = len(plan.graph.nodes)
    tactics: dict[str, int] = {}
    for layer in plan.layers:
        name = str(layer.get("tactic", "?"))
        tactics[name] = tactics.get(name, 0) + 1
    build.tactics = dict(sorted(tactics.items(), key=lambda kv: -kv[1]))
    build.aux_streams = _aux_stream_text(plan.build_info.get("streams"))
    if cache_field is not None:
        started = time.perf_counter()
        warm_plan = Builder(config).build(parse_onnx(bundle.onnx_model))
        build.build_warm_seconds = time.perf_counter() - started
        build.warm_same_tactics = [layer.get("tactic") for layer in warm_plan.layers] == \
            [layer.get("tactic") for layer in plan.layers]
        del warm_plan
    blob = bytes(plan.serialize())
    del plan, graph
    gc.collect()

    # Engine load + first inference, as a deployment does it: bytes -> fresh Runtime.
    first = input_sets[0]
    _sync(device)
    started = time.perf_counter()
    engine = Runtime(str(device)).load(blob, source_name=f"{workload.name}-{precision}")
    context = _graph_context(engine)
    dtypes = _engine_input_dtypes(engine)
    feeds = {k: v.to(dtypes.get(k, v.dtype)) for k, v in first.items()}
    outs = context.execute(feeds)
    _sync(device)
    build.load_first_inference_ms = (time.perf_counter() - started) * 1e3
    build.cuda_graphs = _graph_state(context, device)
    del outs
    names = list(bundle.output_names)

    def run(inputs: peers.Inputs) -> peers.Outputs:
        result = context.execute(inputs)
        return tuple(result[n] for n in names)

    def layer_report(inputs: peers.Inputs) -> list[str]:
        return _layer_report_lines(context.profile_layers(inputs, runs=10), top=25)

    system = peers.System(entry_name(dynamic), run, build.load_first_inference_ms / 1e3,
                          "engine load + first inference",
                          status=lambda: _graph_state(context, device), layer_report=layer_report)
    system.input_dtype = next((d for d in dtypes.values() if d.is_floating_point), None)
    return system


def _aux_stream_text(streams: Optional[dict[str, Any]]) -> str:
    """'1 (4/4 branches)': auxiliary streams and the branches on them, of those found."""
    if not streams:
        return "n/a"
    branches = streams.get("branches", [])
    kept = sum(1 for b in branches if b.get("stream"))
    return f"{streams.get('aux_streams', 0)} ({kept}/{len(branches)} branches)"


def _layer_report_lines(profile: Any, top: int) -> list[str]:
    """Eager per-layer time: by op type, then the `top` slowest layers."""
    total = profile.total_average_ms or 1.0
    lines = [f"eager layer profile: {profile.total_average_ms:.3f} ms over {len(profile.layers)} layers"]
    lines += [f"  {ms:8.3f} ms {100 * ms / total:5.1f}%  {op} x{count}"
              for op, count, ms in profile.by_op(with_tactic=True)]
    lines.append(f"  slowest {top} layers:")
    lines += [f"  {t.average_ms:8.4f} ms  {t.name[:60]}  {t.op_type}/{t.tactic}"
              for t in sorted(profile.layers, key=lambda t: -t.average_ms)[:top]]
    return lines


# ---------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------

def set_math(precision: str) -> None:
    """TF32 for the tf32 and fp16 rows (TensorRT's default too), off for strict fp32; the
    same process-wide setting holds for every system of a row."""
    allow = precision != "fp32"
    torch.backends.cuda.matmul.allow_tf32 = allow
    torch.backends.cudnn.allow_tf32 = allow


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _fmt_exc(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text[:400]


def _our_entry(report: Report, bundle: ModelBundle, workload: Workload, precision: str, device: torch.device,
               input_sets: Sequence[dict[str, torch.Tensor]], cache_dir: Path, log: Callable[[str], None],
               dynamic: bool) -> tuple[tuple[str, Optional[peers.System], list[dict[str, torch.Tensor]], str], BuildRow]:
    """Build and load tensorkiln's engine for one row group: its entry, and its build row (in the report too)."""
    name = entry_name(dynamic)
    build = BuildRow(workload.name, precision + (" dynamic" if dynamic else ""))
    report.builds.append(build)
    log(f"  {workload.name} {precision}: building the {name} engine ...")
    try:
        kiln = tensorkiln_system(bundle, workload, precision, device, input_sets, cache_dir, build, dynamic)
        dtypes = kiln.input_dtype
        kiln_inputs = [bench_models.cast_inputs(x, dtypes) if dtypes is not None else x for x in input_sets]
        warm = "n/a" if build.build_warm_seconds is None else f"{build.build_warm_seconds:.2f} s"
        log(f"    built in {build.build_cold_seconds:.2f} s cold, {warm} warm; load + first inference "
            f"{build.load_first_inference_ms:.1f} ms; CUDA graphs: {build.cuda_graphs}; aux streams: "
            f"{build.aux_streams}")
        return (name, kiln, kiln_inputs, ""), build
    except Exception as exc:  # noqa: BLE001 - a failed build is a row with its reason; the run goes on
        build.error = _fmt_exc(exc)
        log(f"    {name} failed: {_fmt_exc(exc)}")
        log(traceback.format_exc(limit=6))
        return (name, None, list(input_sets), f"build/load failed: {_fmt_exc(exc)}"), build


def run_workload(report: Report, bundle: ModelBundle, workload: Workload, args: argparse.Namespace,
                 device: torch.device, cache_dir: Path, log: Callable[[str], None],
                 out_of_time: Callable[[], bool]) -> None:
    input_sets = [bundle.make_inputs(workload.batch, workload.seq, args.seed + 1 + i, device)
                  for i in range(N_INPUT_SETS)]
    set_math("fp32")
    eager32 = peers.eager_peer(bundle.module, bundle.input_names)
    ref32 = eager32.run_checked(input_sets[0])
    for precision in args.precisions:
        if out_of_time():
            report.notes.append(f"{workload.name} {precision}: skipped, past --deadline {args.deadline} s")
            log(f"  {workload.name} {precision}: skipped (past the deadline)")
            continue
        set_math(precision)
        half = precision == "fp16"
        module = bench_models.half_copy(bundle.module) if half else bundle.module
        dtype = torch.float16 if half else torch.float32
        peer_inputs = [bench_models.cast_inputs(x, dtype) for x in input_sets]
        # (name, the system or None when it could not be made, its inputs, why not)
        entries: list[tuple[str, Optional[peers.System], list[dict[str, torch.Tensor]], str]] = []
        eager = peers.eager_peer(module, bundle.input_names)
        entries.append((eager.name, eager, peer_inputs, ""))
        ref = eager.run_checked(peer_inputs[0])
        skipped = f"skipped: past --deadline {args.deadline} s"
        for mode in args.compile_modes:
            label = f"torch.compile({mode})"
            if out_of_time():  # a compile can take minutes (max-autotune): none starts after the deadline
                entries.append((label, None, peer_inputs, skipped))
                log(f"    {label}: {skipped}")
                continue
            log(f"  {workload.name} {precision}: compiling {label} ...")
            try:
                compiled = peers.compiled_peer(module, bundle.input_names, mode, peer_inputs[0], label=label)
                entries.append((label, compiled, peer_inputs, ""))
                log(f"    compiled in {compiled.prepare_seconds:.1f} s")
            except Exception as exc:  # noqa: BLE001 - a peer that fails is reported, the run goes on
                entries.append((label, None, peer_inputs, f"compile failed: {_fmt_exc(exc)}"))
                log(f"    {label} failed: {_fmt_exc(exc)}")
        # Each engine's build row: the CUDA-graph state after timing goes there.
        builds: dict[str, BuildRow] = {}
        for dynamic in ((False, True) if args.dynamic_profile else (False,)):
            if out_of_time():
                entries.append((entry_name(dynamic), None, list(input_sets), skipped))
                log(f"    {entry_name(dynamic)}: {skipped}")
                continue
            entry, builds[entry_name(dynamic)] = _our_entry(report, bundle, workload, precision, device, input_sets,
                                                            cache_dir, log, dynamic)
            entries.append(entry)

        rows: list[Row] = []
        for name, system, inputs, error in entries:
            row = Row(workload.name, precision, name, workload.unit, workload.batch, error=error)
            rows.append(row)
            if system is None:
                continue
            row.prepare_seconds = system.prepare_seconds or None
            row.prepare_what = system.prepare_what
            try:
                out = system.run_checked(inputs[0])
                row.check = check_outputs(out, ref, ref32, precision, bundle.output_names)
                del out
                row.timing = time_calls(system.run, inputs, device, args.warmup, args.iterations, args.max_seconds,
                                        args.min_iterations)
                row.back_to_back = time_back_to_back(system.run, inputs, device, row.timing.median_ms,
                                                     args.max_seconds / 2)
                row.throughput = workload.batch / (row.back_to_back.ms_per_call / 1e3)
                if args.profile:
                    try:
                        row.profile = profile_call(system.run, inputs[0], device, top=args.profile_top)
                        if args.profile_top > 8 and row.profile is not None:
                            log(f"    {system.name} kernels per call:")
                            for name_, ms, n in row.profile.top:
                                log(f"      {ms:8.4f} ms x{n:<5g} {name_}")
                        if args.layer_profile and system.layer_report is not None:
                            for line in system.layer_report(inputs[0]):
                                log(f"    {line}")
                    except Exception as exc:  # noqa: BLE001 - profiling is an extra; say why it is missing
                        log(f"    profiling {system.name} failed: {_fmt_exc(exc)}")
                if system.status is not None and name in builds:
                    builds[name].cuda_graphs = system.status()
                    log(f"    {system.name} after the timed calls: CUDA graphs {builds[name].cuda_graphs}")
                status = "ok" if row.check.within_tolerance else f"OUT OF TOLERANCE ({row.check.detail})"
                log(f"    {system.name:<28} {row.throughput:10.1f} {workload.unit} back to back "
                    f"({row.back_to_back.ms_per_call:.3f} ms/call, host {row.back_to_back.host_ms_per_call:.3f})  "
                    f"latency median {row.timing.median_ms:.3f} ms  p99 {row.timing.p99_ms:.3f} ms  host "
                    f"{row.timing.host_median_ms:.3f} ms  max|err| {row.check.max_abs_error:.3g}  {status}")
            except Exception as exc:  # noqa: BLE001
                row.error = f"run failed: {_fmt_exc(exc)}"
                log(f"    {system.name} failed: {_fmt_exc(exc)}")
        peer_best = max((r.throughput for r in rows if not _is_ours(r.system) and r.throughput), default=None)
        peer_fastest = min((r.timing.median_ms for r in rows if not _is_ours(r.system) and r.timing and
                            r.throughput), default=None)
        for r in rows:
            if r.throughput and peer_best:
                r.ratio_to_best_peer = r.throughput / peer_best
            if r.timing and r.throughput and peer_fastest:
                r.latency_ratio_to_best_peer = r.timing.median_ms / peer_fastest
        report.rows.extend(rows)
        del entries, module, peer_inputs, eager
        if args.compile_modes:
            importlib.import_module("torch._dynamo").reset()
        _free(device)
        write_outputs(report, args.out)


# ---------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------

def _num(value: Optional[float], fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def table_rows(report: Report) -> list[list[str]]:
    out = []
    for r in report.rows:
        if r.error:
            out.append([r.workload, r.precision, r.system] + ["—"] * (len(HEADERS) - 4) + [f"ERROR: {r.error}"])
            continue
        t, b, c = r.timing, r.back_to_back, r.check
        ok = "ok" if c.within_tolerance else f"OUT OF TOL: {c.detail}"
        out.append([r.workload, r.precision, r.system, f"{r.throughput:,.1f} {r.unit}", f"{b.ms_per_call:.3f}",
                    _num(r.ratio_to_best_peer, ".2f") + ("x" if r.ratio_to_best_peer else ""),
                    f"{t.median_ms:.3f}", f"{t.p99_ms:.3f}", f"{t.host_median_ms:.3f}",
                    _num(r.latency_ratio_to_best_peer, ".3f") + ("x" if r.latency_ratio_to_best_peer else ""),
                    f"{c.max_abs_error:.2e}", f"{c.max_abs_error_vs_fp32:.2e}", ok])
    return out


HEADERS = ["workload", "precision", "system", "throughput", "ms/inference back to back", "throughput vs best peer",
           "latency median ms", "p99 ms", "host ms", "latency vs best peer", "max abs err", "err vs fp32", "check"]
BUILD_HEADERS = ["workload", "precision", "parse+build cold s", "build warm cache s", "load + 1st inference ms",
                 "layers", "I/O", "CUDA graphs", "aux streams", "tactics (count)"]


def build_rows(report: Report) -> list[list[str]]:
    out = []
    for b in report.builds:
        if b.error:
            out.append([b.workload, b.precision, "—", "—", "—", "—", "—", "—", "—", f"ERROR: {b.error}"])
            continue
        warm = "n/a" if b.build_warm_seconds is None else (
            f"{b.build_warm_seconds:.2f}" + ("" if b.warm_same_tactics else " (tactics differ!)"))
        tactics = ", ".join(f"{k} {v}" for k, v in list(b.tactics.items())[:6])
        out.append([b.workload, b.precision, _num(b.build_cold_seconds, ".2f"), warm,
                    _num(b.load_first_inference_ms, ".1f"), str(b.layers), b.io_formats, b.cuda_graphs, b.aux_streams,
                    tactics])
    return out


def compile_rows(report: Report) -> list[list[str]]:
    return [[r.workload, r.precision, r.system, f"{r.prepare_seconds:.1f}"] for r in report.rows
            if r.system.startswith("torch.compile") and r.prepare_seconds]


def where_time_goes(report: Report) -> list[str]:
    """For every row group where tensorkiln is slower than the best peer: the facts that say why."""
    lines = []
    groups: dict[tuple[str, str], list[Row]] = {}
    for r in report.rows:
        groups.setdefault((r.workload, r.precision), []).append(r)
    for (workload, precision), rows in groups.items():
        kiln = next((r for r in rows if r.system == TENSORKILN and r.throughput), None)
        peer_rows = [r for r in rows if not _is_ours(r.system) and r.throughput]
        if kiln is None or not peer_rows or ((kiln.ratio_to_best_peer or 0) >= 1.0
                                             and (kiln.latency_ratio_to_best_peer or 2.0) <= 1.0):
            continue
        best = max(peer_rows, key=lambda r: r.throughput or 0)
        t = kiln.timing
        parts = [f"**{workload} {precision}**: tensorkiln {kiln.back_to_back.ms_per_call:.3f} ms per inference back "
                 f"to back, {t.median_ms:.3f} ms latency vs {best.system} {best.back_to_back.ms_per_call:.3f} / "
                 f"{best.timing.median_ms:.3f} ms ({kiln.ratio_to_best_peer:.2f}x throughput, "
                 f"{kiln.latency_ratio_to_best_peer:.3f}x latency); CPU time inside execute() "
                 f"{t.host_median_ms:.3f} ms ({100 * t.host_median_ms / t.median_ms:.0f}% of the latency)"]
        if kiln.profile:
            parts.append(f"GPU kernels {kiln.profile.gpu_kernel_ms_per_call:.3f} ms over "
                         f"{kiln.profile.kernels_per_call:.0f} kernels and copies per inference, "
                         f"{kiln.profile.device_to_host_copies_per_call:.0f} of them device->host copies "
                         "(each a host-device sync)")
        if best.profile:
            parts.append(f"{best.system}: {best.profile.gpu_kernel_ms_per_call:.3f} ms over "
                         f"{best.profile.kernels_per_call:.0f} kernels")
        if kiln.profile:
            top = "; ".join(f"`{name[:60]}` {ms:.3f} ms x{n:g}" for name, ms, n in kiln.profile.top[:4])
            parts.append(f"tensorkiln's top kernels: {top}")
        build = next((b for b in report.builds if (b.workload, b.precision) == (workload, precision)), None)
        if build is not None:
            parts.append(f"CUDA graphs: {build.cuda_graphs}; {build.layers} layers")
        lines.append("- " + "; ".join(parts[:3]) + (". " + ". ".join(parts[3:]) if len(parts) > 3 else ""))
    return lines


def markdown(report: Report) -> str:
    m = report.meta
    lines = [f"### tensorkiln vs PyTorch on {m['device_name']} ({m['date']})", "",
             f"- command: `{m['command']}`",
             f"- device: {m['device_name']}, CUDA {m.get('cuda')}, compute capability "
             f"{m.get('capability')}",
             f"- versions: tensorkiln {m['tensorkiln']}, torch {m['torch']}, triton {m['triton']}, "
             f"torchvision {m['torchvision']}, transformers {m['transformers']}, python {m['python']}",
             f"- timing: {m['timing']}",
             "- throughput vs best peer: throughput / the best PyTorch peer's for the same workload and precision "
             "(>1: more than every peer); latency vs best peer: median latency / the lowest peer median latency "
             "(<1: faster than every peer)"]
    for name, info in report.models.items():
        lines.append(f"- model {name}: {info['source']}")
    lines += ["", "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in table_rows(report)]
    lines += ["", "tensorkiln engine build (ONNX parse + build; warm = the same build again with the timing "
              "cache the cold build filled) and engine load + first inference (serialized plan -> fresh "
              "Runtime -> execution context -> one execute, synchronized):", "",
              "| " + " | ".join(BUILD_HEADERS) + " |", "|" + "---|" * len(BUILD_HEADERS)]
    lines += ["| " + " | ".join(row) + " |" for row in build_rows(report)]
    compiles = compile_rows(report)
    if compiles:
        lines += ["", "torch.compile compile + warm-up time (outside the timed region):", "",
                  "| workload | precision | system | seconds |", "|---|---|---|---|"]
        lines += ["| " + " | ".join(row) + " |" for row in compiles]
    slower = where_time_goes(report)
    if slower:
        lines += ["", "Where the time goes where tensorkiln is slower:", ""] + slower
    if report.notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in report.notes]
    return "\n".join(lines) + "\n"


def print_tables(report: Report) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(markdown(report))
        return
    console = Console(width=200)
    table = Table(title=f"tensorkiln vs PyTorch — {report.meta['device_name']}")
    for h in HEADERS:
        table.add_column(h, justify="right" if h not in ("workload", "precision", "system", "check") else "left",
                         overflow="fold")
    previous = None
    for row in table_rows(report):
        if previous is not None and row[:2] != previous:
            table.add_section()
        previous = row[:2]
        style = "bold" if _is_ours(row[2]) else None
        if "OUT OF TOL" in row[-1] or "ERROR" in row[-1]:
            style = "red"
        table.add_row(*row, style=style)
    console.print(table)
    build = Table(title="tensorkiln build / load")
    for h in BUILD_HEADERS:
        build.add_column(h, overflow="fold")
    for row in build_rows(report):
        build.add_row(*row)
    console.print(build)
    compiles = compile_rows(report)
    if compiles:
        ct = Table(title="torch.compile compile + warm-up")
        for h in ("workload", "precision", "system", "seconds"):
            ct.add_column(h)
        for row in compiles:
            ct.add_row(*row)
        console.print(ct)
    for line in where_time_goes(report):
        console.print(line, markup=False)


def write_outputs(report: Report, out_dir: Optional[Path]) -> None:
    if out_dir is None:
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(report.to_json(), indent=1, default=str))
    (out_dir / "results.md").write_text(markdown(report))


def _version(module: str) -> str:
    try:
        return __import__(module).__version__
    except Exception:  # noqa: BLE001 - a missing package is reported as such
        return "not installed"


def collect_meta(args: argparse.Namespace, device: torch.device, argv: Sequence[str]) -> dict[str, Any]:
    cuda = device.type == "cuda"
    props = torch.cuda.get_device_properties(device) if cuda else None
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device_name": torch.cuda.get_device_name(device) if cuda else f"CPU ({platform.processor() or 'cpu'})",
        "capability": f"{props.major}.{props.minor}" if props else None,
        "cuda": torch.version.cuda,
        "tensorkiln": tensorkiln.__version__ if hasattr(tensorkiln, "__version__") else "?",
        "torch": torch.__version__, "triton": _version("triton"), "torchvision": _version("torchvision"),
        "transformers": _version("transformers"), "onnx": _version("onnx"), "python": platform.python_version(),
        "command": "python3 " + " ".join(shlex.quote(a) for a in [sys.argv[0], *argv]),
        "timing": (f"latency: {'CUDA events' if cuda else 'perf_counter'} around each call, device synchronized "
                   f"between calls, {args.warmup} warm-up calls, up to {args.iterations} calls (at least "
                   f"{args.min_iterations}, stopping after {args.max_seconds} s), median and p99; throughput: calls "
                   "enqueued back to back in rounds of >= 100 ms (at least 5 rounds, then more until "
                   f"{args.max_seconds / 2:g} s), the median round's ms per inference, throughput = batch / that; "
                   f"{N_INPUT_SETS} seeded input sets rotated; inputs already on the device"),
        "args": {k: v for k, v in vars(args).items() if k != "out"},
    }


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    names = [w.name for w in WORKLOADS]
    p.add_argument("--workloads", default=",".join(names),
                   help=f"comma-separated subset of {names}, or model names (resnet50, bert_base)")
    p.add_argument("--precisions", default="fp16,tf32", help=f"comma-separated subset of {list(PRECISIONS)}")
    p.add_argument("--quick", action="store_true", help="fewer calls (warm-up 5, at most 30 calls / 1 s)")
    p.add_argument("--iterations", type=int, default=None, help="timed calls per system (default 200; quick 30)")
    p.add_argument("--min-iterations", type=int, default=None, help="calls before --max-seconds may stop (100)")
    p.add_argument("--max-seconds", type=float, default=None, help="stop timing a system after this (3 s)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up calls per system (default 20; quick 5)")
    p.add_argument("--max-autotune", action="store_true", help="also torch.compile(mode='max-autotune') (slow)")
    p.add_argument("--dynamic-profile", action="store_true",
                   help=f"also time an engine built for batch 1..{DYNAMIC_MAX_BATCH} (and sequence 1..seq), tuned at "
                        "the workload's shape")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    p.add_argument("--profile", dest="profile", action="store_true",
                   help="one profiled call per system (torch.profiler; CUPTI can crash the process while "
                        "torch.compile's CUDA graphs replay)")
    p.add_argument("--no-profile", dest="profile", action="store_false",
                   help="no profiled calls (the default; kept for older command lines)")
    p.add_argument("--profile-top", type=int, default=8, help="kernels kept per profile (> 8 also prints them)")
    p.add_argument("--layer-profile", action="store_true", help="print tensorkiln's eager per-layer profile")
    p.add_argument("--model-route", choices=("auto", "export", "zoo"), default="auto",
                   help="auto: export the PyTorch modules to ONNX, else the zoo fallback; export: fail "
                        "instead of falling back; zoo: the fallback only")
    p.add_argument("--small", action="store_true", help="small zoo models (with --model-route zoo; smoke tests)")
    p.add_argument("--batch", type=int, default=None, help="override every workload's batch (smoke tests)")
    p.add_argument("--seq", type=int, default=None, help="override BERT's sequence length (smoke tests)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--deadline", type=float, default=None,
                   help="seconds after which no workload/precision group, compile or engine build starts (what "
                        "is skipped is said so), so a run under an outside time limit still prints its table")
    p.add_argument("--device", default="cuda", help="cuda (the benchmark), or cpu for a smoke test")
    p.add_argument("--out", type=Path, default=Path(os.environ["OUT"]) if os.environ.get("OUT") else None,
                   help="write results.json and results.md here (default: $OUT when set)")
    args = p.parse_args(argv)
    args.precisions = [x.strip() for x in args.precisions.split(",") if x.strip()]
    for x in args.precisions:
        if x not in PRECISIONS:
            p.error(f"unknown precision '{x}': choose from {list(PRECISIONS)}")
    wanted = [x.strip() for x in args.workloads.split(",") if x.strip()]
    selected = [w for w in WORKLOADS if w.name in wanted or w.model in wanted]
    unknown = [x for x in wanted if x not in names and x not in {w.model for w in WORKLOADS}]
    if unknown or not selected:
        p.error(f"unknown workload(s) {unknown}: choose from {names}")
    if args.batch or args.seq:
        selected = [dataclasses.replace(w, name=f"{w.model}-b{args.batch or w.batch}"
                                        + (f"-s{args.seq or w.seq}" if w.seq else ""),
                                        batch=args.batch or w.batch, seq=(args.seq or w.seq) if w.seq else 0)
                    for w in selected]
        selected = list({w.name: w for w in selected}.values())
    args.selected = selected
    quick = args.quick
    args.iterations = args.iterations or (30 if quick else 200)
    args.min_iterations = args.min_iterations or (10 if quick else 100)
    args.max_seconds = args.max_seconds or (1.0 if quick else 3.0)
    args.warmup = args.warmup if args.warmup is not None else (5 if quick else 20)
    args.compile_modes = [] if args.no_compile else ["reduce-overhead"] + (["max-autotune"] if args.max_autotune
                                                                            else [])
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("cuda_bench: no CUDA GPU here (use --device cpu for a smoke test)", file=sys.stderr)
        return 2
    if device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    began = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - began:6.1f}s] {message}", flush=True)

    report = Report(collect_meta(args, device, argv))

    def out_of_time() -> bool:
        return args.deadline is not None and time.perf_counter() - began > args.deadline

    selected = [w.name for w in args.selected]
    log(f"device {report.meta['device_name']}; torch {torch.__version__}; workloads {selected}; "
        f"precisions {args.precisions}; torch.compile modes {args.compile_modes or 'none'}")
    with tempfile.TemporaryDirectory(prefix="kiln-bench-") as tmp:
        cache_dir = Path(tmp)
        for model in dict.fromkeys(w.model for w in args.selected):
            log(f"model {model}: building the torch module and exporting it to ONNX ...")
            try:
                bundle = bench_models.build_bundle(model, args.seed, device, route=args.model_route,
                                                   small_fallback=args.small)
            except Exception as exc:  # noqa: BLE001
                report.notes.append(f"{model}: no model: {_fmt_exc(exc)}")
                log(f"  no model: {_fmt_exc(exc)}")
                continue
            params = sum(p.numel() for p in bundle.module.parameters()) + sum(
                b.numel() for b in bundle.module.buffers() if b.is_floating_point())
            report.models[model] = {"source": bundle.source, "export_seconds": round(bundle.export_seconds, 2),
                                    "onnx_nodes": len(bundle.onnx_model.graph.node),
                                    "torch_parameters_and_float_buffers": params, "failed_attempts": bundle.notes}
            for note in bundle.notes:
                report.notes.append(f"{model}: {note}")
            log(f"  {bundle.source} ({len(bundle.onnx_model.graph.node)} ONNX nodes, export "
                f"{bundle.export_seconds:.1f} s)")
            for note in bundle.notes:
                log(f"  note: {note}")
            for workload in (w for w in args.selected if w.model == model):
                log(f"workload {workload.name}")
                run_workload(report, bundle, workload, args, device, cache_dir, log, out_of_time)
            del bundle
            _free(device)
    log("done")
    print_tables(report)
    write_outputs(report, args.out)
    if args.out:
        print(f"wrote {args.out / 'results.json'} and {args.out / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
