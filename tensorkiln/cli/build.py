"""`kiln build MODEL.onnx -o PLAN`: build an engine and save it (atomically)."""

from __future__ import annotations

import argparse
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any, Optional, Sequence, TextIO

from ..builder import Builder, BuilderConfig
from ..engine import EnginePlan
from ..errors import ConfigError
from ..frontends.onnx import parse_onnx
from ..ir import Graph
from ..precision import CONSTRAINTS
from ..tactics.autotune import BUILTIN_SOURCES, parse_tactic_sources
from .device import resolve_device
from .io_formats import parse_io_formats
from .report import Log
from .shapes import ShapeFlags, build_profile, format_dims, parse_shape_spec, split_items, split_name_value
from .usage import KilnArgumentParser, UsageError

DESCRIPTION = """\
Build an engine plan from an ONNX model and save it.

Shapes use trtexec's spec: name:1x3x224x224,other:1x16 (quote names holding ':' or ','
with single quotes; an unquoted name splits on the last ':'). --shapes gives a fixed
profile (min = opt = max); --min-shapes/--opt-shapes/--max-shapes give a range and must
name the same inputs. Dynamic inputs given no shape stay dynamic: the engine accepts any
size for them at run time.

Precision: --fp16/--bf16 allow lower-precision layers (--best allows both, with TF32 unless
--no-tf32); every layer that can runs in them (fp16 when both are allowed), except
numerically sensitive ones (normalisations, softmax, large reductions), which stay fp32.
--layer-precisions name:fp32|fp16|bf16 (one '*' wildcard per name) with
--precision-constraints prefer (honour where possible, keep the fp32 policy) or obey
(always; fail if a named layer cannot) sets layers one by one; `kiln debug precision`
finds which layers must stay fp32.

The file is written atomically: a failed build leaves an existing file untouched.
"""


TRTEXEC_TUNING_FLAGS = {"avg": "--avgTiming", "min": "--minTiming", "sources": "--tacticSources",
                        "cache": "--timingCacheFile", "no_cache": "--noBuilderCache", "pool": "--memPoolSize",
                        "aux": "--maxAuxStreams"}
KILN_TUNING_FLAGS = {"avg": "--avg-timing", "min": "--min-timing", "sources": "--tactic-sources",
                     "cache": "--timing-cache", "no_cache": "--no-builder-cache", "pool": "--mem-pool-size",
                     "aux": "--max-aux-streams"}


def make_parser() -> KilnArgumentParser:
    p = KilnArgumentParser(prog="kiln build", description=DESCRIPTION)
    p.add_argument("model", metavar="MODEL.onnx", help="the ONNX model to build")
    p.add_argument("-o", "--output", required=True, metavar="PLAN", help="where to write the engine plan")
    p.add_argument("--fp16", action="store_true", help="allow float16 layers")
    p.add_argument("--bf16", action="store_true", help="allow bfloat16 layers")
    p.add_argument("--best", action="store_true",
                   help="allow every precision tensorkiln builds: TF32, FP16 and BF16 (as --fp16 --bf16; INT8 and "
                        "FP8 layers are not built yet)")
    p.add_argument("--no-tf32", dest="no_tf32", action="store_true", help="disallow TF32 (CUDA) math")
    p.add_argument("--layer-precisions", dest="layer_precisions", action="append", metavar="SPEC",
                   help="per-layer precision, e.g. conv1:fp16,softmax:fp32 or '*:fp16' (layer names as "
                        "`kiln inspect` shows them; later entries override earlier ones; needs "
                        "--precision-constraints prefer|obey)")
    p.add_argument("--precision-constraints", dest="precision_constraints", choices=CONSTRAINTS, default=None,
                   help="none: ignore --layer-precisions (default); prefer: honour them where a layer can run "
                        "so; obey: honour them always, also for numerically sensitive layers, or fail")
    p.add_argument("--input-io-formats", dest="input_io_formats", metavar="SPEC",
                   help="type:chw[,type:chw...] the engine takes its inputs in, e.g. fp16:chw: one spec for every "
                        "float32 input, or one per input in order (trtexec's --inputIOFormats)")
    p.add_argument("--output-io-formats", dest="output_io_formats", metavar="SPEC",
                   help="type:chw[,type:chw...] the engine gives its outputs in (trtexec's --outputIOFormats)")
    p.add_argument("--shapes", action="append", metavar="SPEC", help="fixed input shapes, e.g. x:1x3x224x224")
    p.add_argument("--min-shapes", dest="min_shapes", action="append", metavar="SPEC", help="profile minimum shapes")
    p.add_argument("--opt-shapes", dest="opt_shapes", action="append", metavar="SPEC",
                   help="profile optimum shapes (tactics are tuned here)")
    p.add_argument("--max-shapes", dest="max_shapes", action="append", metavar="SPEC", help="profile maximum shapes")
    p.add_argument("--optimization-level", "--builderOptimizationLevel", dest="level", type=int, default=None,
                   metavar="N", help="0: only the required passes; >= 1 folds, eliminates and fuses (default 3); "
                                     "layer names depend on it")
    p.add_argument("--device", metavar="cpu|cuda[:N]", help="device to build for (default: cpu)")
    add_tuning_flags(p, KILN_TUNING_FLAGS, aliases=True)
    p.add_argument("--debug", action="store_true",
                   help="verify the graph after every pass; show tracebacks on errors")
    return p


TUNING_HELP = """\
Tactic tuning: layers with several implementations (tactics) are timed on the device at
the profile's opt shapes (or the fixed shapes) and the fastest is kept. Each candidate's
time is the median of at least max(minTiming, 3) measurements, each the mean of avgTiming
runs. The timing cache file (JSON) keeps what was measured: a rebuild with a warm cache
times nothing it knows; a corrupt file is an error naming it. Without a file, timings are
still reused between identical layers of one build; the no-builder-cache flag turns all
caching off.
"""


def add_tuning_flags(p: argparse.ArgumentParser, names: dict[str, str], aliases: bool = False) -> None:
    """The auto-tuner's flags; `names` spells them (trtexec's or kiln's); with `aliases` the
    trtexec spellings are accepted too."""
    trtexec = TRTEXEC_TUNING_FLAGS

    def flags(key: str) -> list[str]:
        return [names[key]] + ([trtexec[key]] if aliases and trtexec[key] != names[key] else [])

    group = p.add_argument_group("Tactic tuning", TUNING_HELP)
    group.add_argument(*flags("avg"), dest="avg_timing", default=None, metavar="N",
                       help="runs averaged per timing measurement (default = 8)")
    group.add_argument(*flags("min"), dest="min_timing", default=None, metavar="N",
                       help="minimum number of timing measurements per candidate (default = 1; at least 3 are "
                            "taken)")
    group.add_argument(*flags("sources"), dest="tactic_sources", default=None, metavar="SPEC",
                       help="enable (+) or disable (-) tactic sources, applied in order to the default (all), "
                            "written with '=': e.g. " + names["sources"] + "=-CUDNN,+CUBLAS,-TRITON; sources: "
                            + ", ".join(s.upper() for s in BUILTIN_SOURCES)
                            + " (reference tactics are always available)")
    group.add_argument(*flags("cache"), dest="timing_cache_file", default=None, metavar="FILE",
                       help="timing cache to read and update (created when missing)")
    group.add_argument(*flags("no_cache"), dest="no_builder_cache", action="store_true",
                       help="no timing cache at all, even with a timing cache file: time every layer")
    group.add_argument(*flags("pool"), dest="mem_pool_size", action="append", default=None, metavar="SPEC",
                       help="memory pool limits, e.g. workspace:1024 (MiB; suffixes B, K, M, G accepted, e.g. "
                            "512M, 1G): tactics that declare a workspace (the cuBLASLt GEMMs) and need more are "
                            "not used; cuDNN and cuBLAS calls made through torch size their own. DLA pools and "
                            "tacticSharedMem are accepted and ignored")
    group.add_argument(*flags("aux"), dest="max_aux_streams", default=None, metavar="N",
                       help="most auxiliary CUDA streams an inference may use to run independent branches "
                            "beside each other; a branch gets one only where that was timed faster (default: "
                            "as many as needed, up to 4; 0: none)")


MEMORY_POOLS = ("workspace", "dlaSRAM", "dlaLocalDRAM", "dlaGlobalDRAM", "tacticSharedMem")
_SIZE_UNITS = {"B": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}


def parse_mem_pool_size(specs: Optional[Sequence[str]], flag: str, log: Log) -> Optional[int]:
    """The workspace limit in bytes from trtexec's --memPoolSize=workspace:N[,pool:N] (MiB unless
    a B/K/M/G suffix says otherwise; decimals allowed). Other pools are accepted and ignored."""
    workspace: Optional[int] = None
    for spec in specs or ():
        for item in split_items(spec, flag):
            pool, size = split_name_value(item, ":", flag, split_on_last=True)
            match = {p.lower(): p for p in MEMORY_POOLS}.get(pool.strip().lower())
            if match is None:
                raise UsageError(f"{flag}: unknown memory pool '{pool}' (pools: {', '.join(MEMORY_POOLS)})")
            text = size.strip()
            suffix = text[-1:] if text[-1:].isalpha() else ""
            try:
                number = float(text[:len(text) - len(suffix)])
            except ValueError:
                raise UsageError(f"{flag}: size '{size}' of pool {match} is not a number") from None
            unit = _SIZE_UNITS.get(suffix.upper()) if suffix else _SIZE_UNITS["M"]
            if unit is None:
                raise UsageError(f"{flag}: size '{size}' of pool {match} has an unknown suffix (use B, K, M or G)")
            if not number >= 0 or number == float("inf"):
                raise UsageError(f"{flag}: size of pool {match} must be a number >= 0, got '{size}'")
            if match != "workspace":
                log.warn(f"{flag}: pool {match} has no meaning for tensorkiln; ignored")
                continue
            workspace = int(number * unit)
    return workspace


def tuning_config(args: argparse.Namespace, names: dict[str, str], log: Log) -> dict[str, Any]:
    """BuilderConfig fields from the tuning flags (add_tuning_flags)."""
    fields: dict[str, Any] = {}
    for dest, key, least in (("avg_timing", "avg", 1), ("min_timing", "min", 1), ("max_aux_streams", "aux", 0)):
        value = getattr(args, dest)
        if value is None:
            continue
        try:
            number = int(value)
        except ValueError:
            raise UsageError(f"{names[key]} takes an integer, got '{value}'") from None
        if number < least:
            raise UsageError(f"{names[key]} must be >= {least}, got {number}")
        fields[dest] = number
    if args.tactic_sources is not None:
        try:
            fields["disabled_tactic_sources"] = parse_tactic_sources(args.tactic_sources)
        except ConfigError as exc:
            raise UsageError(str(exc).replace("--tacticSources", names["sources"])) from None
    if args.no_builder_cache:
        fields["builder_cache"] = False
        if args.timing_cache_file:
            log.warn(f"{names['no_cache']}: the timing cache file '{args.timing_cache_file}' is neither read nor "
                     f"written")
    if args.timing_cache_file:
        fields["timing_cache_file"] = args.timing_cache_file
    workspace = parse_mem_pool_size(args.mem_pool_size, names["pool"], log)
    if workspace is not None:
        fields["workspace_bytes"] = workspace
    return fields


def shape_flags_from(args: argparse.Namespace, names: tuple[str, str, str, str]) -> ShapeFlags:
    return ShapeFlags(shapes=parse_shape_spec(args.shapes, names[0]), min=parse_shape_spec(args.min_shapes, names[1]),
                      opt=parse_shape_spec(args.opt_shapes, names[2]), max=parse_shape_spec(args.max_shapes, names[3]),
                      names=names)


def parse_layer_precisions(specs: Optional[Sequence[str]], flag: str) -> dict[str, str]:
    """`layer1:fp16,'a:b':fp32,*:bf16` -> {layer: precision}, in order (later entries win).
    Names holding ':' or ',' are quoted with single quotes; an unquoted name splits on the
    last ':'. Precision names and layer names are checked by the builder (ConfigError)."""
    result: dict[str, str] = {}
    for spec in specs or ():
        for item in split_items(spec, flag):
            name, precision = split_name_value(item, ":", flag, split_on_last=True)
            result.pop(name, None)  # re-inserted last: a repeated name overrides in order
            result[name] = precision.strip()
    return result


def precision_options(layer_precisions: dict[str, str], constraints: Optional[str], flags: tuple[str, str],
                      log: Log) -> tuple[dict[str, str], str]:
    """(layer_precisions, precision_constraints) for BuilderConfig. As in trtexec, layer
    precisions without constraints 'prefer' or 'obey' are ignored, with a warning."""
    constraints = constraints or "none"
    if layer_precisions and constraints == "none":
        log.warn(f"{flags[0]} has no effect with {flags[1]}=none (the default): the layer precisions are "
                 f"ignored; add {flags[1]}=prefer or {flags[1]}=obey")
        return {}, constraints
    return layer_precisions, constraints


def optimization_level(level: Optional[int], flag: str) -> dict[str, int]:
    """BuilderConfig's optimization_level from a flag (trtexec's --builderOptimizationLevel: 0..5)."""
    if level is None:
        return {}
    if not 0 <= level <= 5:
        raise UsageError(f"{flag} must be in 0..5, got {level}")
    return {"optimization_level": level}


def build_engine(graph: Graph, config: BuilderConfig, log: Log) -> EnginePlan:
    log.info(f"Building an engine for {config.device} ({precision_text(config)}) ...")
    started = time.perf_counter()
    plan = Builder(config).build(graph)
    print_build_summary(log, plan, time.perf_counter() - started)
    return plan


def precision_text(config: BuilderConfig) -> str:
    allowed = ["fp32"] + (["tf32"] if config.tf32 and config.device.startswith("cuda") else []) + \
        (["fp16"] if config.fp16 else []) + (["bf16"] if config.bf16 else [])
    text = "precisions " + "+".join(allowed)
    if config.layer_precisions:
        text += f", {len(config.layer_precisions)} layer precision(s) ({config.precision_constraints})"
    return text


def print_precision_summary(log: Log, precision: dict) -> None:
    """Which precisions the layers run in, the reformat layers, and why layers stayed fp32."""
    counts = precision.get("counts", {})
    lowered = len(precision.get("allowed", [])) > 1 or any(name != "fp32" for name in counts)
    if not counts or not lowered:
        return  # an fp32-only build: nothing to say
    parts = [f"{n} {name}" for name, n in sorted(counts.items(), key=lambda kv: -kv[1])]
    log.info(f"Layers by precision: {', '.join(parts)}; {precision.get('reformat_layers', 0)} reformat (Cast) "
             f"layer(s); {precision.get('converted_weights', 0)} weight(s) converted")
    kept = precision.get("kept_fp32", {})
    if kept:
        log.info(f"{len(kept)} layer(s) kept in fp32 although a lower precision was allowed (--verbose lists why)")
        for name, reason in kept.items():
            log.verbose(f"  {name}: {reason}")


def print_build_summary(log: Log, plan: EnginePlan, seconds: float) -> None:
    layers = plan.layers
    ops = Counter(layer["op"] for layer in layers)
    log.info("=== Build summary ===")
    log.info(f"Engine built in {seconds:.6g} sec.")
    log.info(f"Layers: {len(layers)} ({', '.join(f'{op}: {n}' for op, n in ops.most_common())})")
    for report in plan.build_info.get("passes", []):
        rewrites = ", ".join(f"{rule} x{n}" for rule, n in report.get("rewrites", {}).items())
        log.verbose(f"Pass {report['name']}: {report['layers_before']} -> {report['layers_after']} layers"
                    + (f" ({rewrites})" if rewrites else ""))
        for rule, node, reason in report.get("declines", []):
            log.verbose(f"  {rule} declined at '{node}': {reason}")
    print_precision_summary(log, plan.build_info.get("precision", {}))
    print_tactic_summary(log, plan)
    print_stream_summary(log, plan.build_info.get("streams"))
    memory = plan.memory
    if memory:
        peak = memory.get("peak_activation_bytes_at_opt")
        log.info(f"Weights: {_bytes(memory.get('weights_bytes', 0))}; peak activation memory at opt shapes: "
                 f"{_bytes(peak) if peak is not None else 'unknown (dynamic shapes without a profile)'}")
    for p, profile in enumerate(plan.profiles):
        for name, r in profile.items():
            log.info(f"Profile {p}: input '{name}' min {format_dims(r.min)}, opt {format_dims(r.opt)}, "
                     f"max {format_dims(r.max)}")
    log.verbose("Engine Layer Information:")
    for layer in layers:
        log.verbose(f"Layer({layer['op']}): {layer['name']}, Tactic: {layer['tactic']}, "
                    f"Precision: {layer['precision']}, "
                    + (f"Stream: aux {layer['stream']}, " if layer['stream'] else "")
                    + f"{layer['inputs']} -> {layer['outputs']}")


def print_stream_summary(log: Log, streams: Optional[dict[str, Any]]) -> None:
    """The independent branches found, which got an auxiliary stream, and why the others did not."""
    if not streams or not streams.get("branches"):
        return
    branches = streams["branches"]
    kept = sum(1 for b in branches if b.get("stream"))
    if streams.get("skipped"):
        log.info(f"Auxiliary streams: none; {len(branches)} independent branch(es) not timed: {streams['skipped']}")
    else:
        whole = (f"; the engine {streams['engine_aux_streams_ms']:.4g} ms with them, "
                 f"{streams['engine_one_stream_ms']:.4g} ms on one stream" if "engine_one_stream_ms" in streams else "")
        log.info(f"Auxiliary streams: {streams['aux_streams']}, running {kept} of {len(branches)} independent "
                 f"branch(es) (a branch gets one where that was timed faster){whole}")
    for b in branches:
        times = (f"{b['one_stream_ms']:.4g} ms on one stream, {b['aux_stream_ms']:.4g} ms with an auxiliary one"
                 if "one_stream_ms" in b else "not timed")
        where = f"aux stream {b['stream']}" if b.get("stream") else f"main stream ({b.get('reason', 'not timed')})"
        log.verbose(f"Branch {', '.join(b['side'])} -> {b['join']}: {times}; {where}")


def print_tactic_summary(log: Log, plan: EnginePlan) -> None:
    """What the auto-tuner did: layers timed or answered by the cache, non-reference choices."""
    tactics = plan.build_info.get("tactics")
    if not tactics or not tactics.get("layers_with_choice"):
        return
    if tactics.get("skipped"):
        log.warn(f"Tactics not tuned: {tactics['skipped']}")
    else:
        text = (f"Tactics: {tactics['layers_with_choice']} layer(s) with several candidates; "
                f"{tactics['timed_layers']} timed ({tactics['candidates_timed']} candidate timings), "
                f"{tactics['cached_layers']} from the timing cache, in {tactics['seconds']:.3g} s")
        log.info(text)
    if tactics.get("stopped"):
        log.warn(f"Tuning stopped: {tactics['stopped']}")
    chosen = tactics.get("tactics", {})
    if chosen:
        log.info("Non-reference tactics chosen: " + ", ".join(f"{name} x{n}" for name, n in chosen.items()))
    cache = tactics.get("timing_cache")
    if cache and cache.get("file"):
        log.info(f"Timing cache '{cache['file']}': {cache['hits']} hit(s), {cache['misses']} miss(es), "
                 f"{cache['entries_added']} entr{'y' if cache['entries_added'] == 1 else 'ies'} added")
    for layer in plan.graph.nodes:
        per_profile = layer.meta.get("profile_tactic_times_ms")
        if per_profile:
            timings = [(times, tactic, f" (profile {p})")
                       for p, (times, tactic) in enumerate(zip(per_profile, layer.meta["profile_tactics"]))]
        else:
            timings = [(layer.meta.get("tactic_times_ms"), layer.meta.get("tactic"), "")]
        for times, tactic, which in timings:
            if times:
                listed = ", ".join(f"{name} {ms:.4g} ms" for name, ms in sorted(times.items(), key=lambda kv: kv[1]))
                log.verbose(f"Tactic timing {layer.name} ({layer.op_type}){which}: {listed} -> {tactic}")
        for name, reason in layer.meta.get("tactic_rejected", {}).items():
            log.verbose(f"  {layer.name}: tactic {name} not used: {reason}")


def _bytes(count: int) -> str:
    if count < 1024:
        return f"{count} bytes"
    if count < 1024 ** 2:
        return f"{count / 1024:.4g} KiB"
    return f"{count / 1024 ** 2:.4g} MiB"


def save_engine(plan: EnginePlan, path: Path, log: Log) -> None:
    plan.save(str(path))
    log.info(f"Engine saved to '{path}' ({_bytes(os.path.getsize(path))})")


def run(args: argparse.Namespace, out: TextIO, err: Optional[TextIO] = None) -> int:
    log = Log(out, verbose=args.debug)
    device = resolve_device(args.device)
    flags = shape_flags_from(args, ("--shapes", "--min-shapes", "--opt-shapes", "--max-shapes"))
    flags.check_ranges()  # flag-level mistakes before the (slower) model import
    graph = parse_onnx(args.model)
    warnings: list[str] = []
    profile = build_profile(graph.inputs, flags, warnings, default_missing=False)
    for name in (v.name for v in graph.inputs if profile is None or v.name not in profile.shapes):
        spec = next(v for v in graph.inputs if v.name == name)
        if spec.shape is None or any(not isinstance(d, int) for d in spec.shape):
            log.info(f"Input '{name}' stays dynamic (no shape given): any size is accepted at run time")
    layer_precisions, constraints = precision_options(
        parse_layer_precisions(args.layer_precisions, "--layer-precisions"), args.precision_constraints,
        ("--layer-precisions", "--precision-constraints"), log)
    config = BuilderConfig(device=device, tf32=not args.no_tf32, fp16=args.fp16 or args.best,
                           bf16=args.bf16 or args.best, profiles=(profile,) if profile else (), debug=args.debug,
                           layer_precisions=layer_precisions, precision_constraints=constraints,
                           input_formats=parse_io_formats(args.input_io_formats, graph.inputs, "--input-io-formats"),
                           output_formats=parse_io_formats(args.output_io_formats, graph.outputs,
                                                           "--output-io-formats"),
                           **optimization_level(args.level, "--optimization-level"),
                           **tuning_config(args, KILN_TUNING_FLAGS, log))
    plan = build_engine(graph, config, log)
    save_engine(plan, Path(args.output), log)
    return 0
