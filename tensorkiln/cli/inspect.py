"""`kiln inspect FILE`: what is in an engine plan or an ONNX model (and how much of it tensorkiln supports)."""

from __future__ import annotations

import argparse
import copy
import json
from collections import Counter
from pathlib import Path
from typing import Any, Optional, TextIO

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..engine import EnginePlan, deserialize_plan
from ..engine.format import MAGIC
from ..errors import ModelLoadError, TensorkilnError
from ..ir import DType, Graph, format_graph, format_shape
from ..ops import infer_graph_types
from ..passes import default_pipeline, run_pipeline
from ..runtime.host_values import find_host_values
from .report import make_console, one_line
from .shapes import format_dims
from .usage import KilnArgumentParser

ENGINE_SUFFIXES = (".plan", ".engine", ".trt", ".kiln")

DESCRIPTION = """\
Show an engine plan (I/O with dtypes, symbolic shapes and profiles; layers with op,
chosen tactic and precision; memory plan; build config; device) or an ONNX model (I/O,
opsets, op histogram and which ops tensorkiln supports). The kind is detected from the
file's magic bytes, then its extension.
"""


def make_parser() -> KilnArgumentParser:
    p = KilnArgumentParser(prog="kiln inspect", description=DESCRIPTION)
    p.add_argument("file", metavar="FILE", help="engine plan or .onnx model")
    p.add_argument("--graph", action="store_true", help="also print the IR graph as text")
    p.add_argument("--json", action="store_true", help="machine-readable output (JSON on stdout)")
    p.add_argument("--passes", action="store_true",
                   help="run the optimizer on an ONNX model (or show an engine's record) and report each pass: "
                        "layer count before and after, what each rule rewrote, and why rules declined")
    p.add_argument("--builderOptimizationLevel", "--optimization-level", dest="level", type=int, default=3,
                   metavar="N", help="optimization level for --passes (0: required passes only; default 3)")
    p.add_argument("--dump-passes", metavar="DIR",
                   help="with --passes: write the graph as text after every pass into DIR (and verify it)")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return p


def run(args: argparse.Namespace, out: TextIO, err: Optional[TextIO] = None) -> int:
    path = Path(args.file)
    if not path.exists():
        raise ModelLoadError(f"file '{path}' does not exist")
    if path.is_dir():
        raise ModelLoadError(f"'{path}' is a directory, not an engine plan or ONNX model")
    data = path.read_bytes()
    if data[:len(MAGIC)] == MAGIC or path.suffix.lower() in ENGINE_SUFFIXES:
        plan = deserialize_plan(data, str(path))
        info = engine_info(plan, path, len(data))
        graph: Optional[Graph] = plan.graph
        import_error = None
    else:
        info, graph, import_error = onnx_info(path)
        if args.passes:
            if graph is None:
                raise import_error or TensorkilnError("the model could not be imported")
            graph, info["passes"] = optimize_for_report(graph, args.level, args.dump_passes)
    if args.json:
        if args.graph:
            info["graph_text"] = format_graph(graph) if graph is not None else None
        out.write(json.dumps(info, indent=1, default=str) + "\n")
        return 0
    console = make_console(out)
    if info["kind"] == "engine":
        print_engine(console, info)
    else:
        print_onnx(console, info)
    if args.passes:
        print_passes(console, info.get("passes") or info["build_info"].get("passes", []), verbose=args.debug)
    if args.graph:
        if graph is None:
            # Asked for explicitly, so the missing graph is an error (the report above still printed).
            raise import_error or TensorkilnError("the model could not be imported")
        console.print(format_graph(graph), markup=False, highlight=False)
    return 0


# ---- engine plans -------------------------------------------------------------------------

def _shape_json(shape: Any) -> Optional[list]:
    return None if shape is None else list(shape)


def engine_info(plan: EnginePlan, path: Path, size: int) -> dict[str, Any]:
    return {
        "kind": "engine", "file": str(path), "size_bytes": size,
        "tensorkiln_version": plan.library_version, "format_version": plan.format_version,
        "device": {"backend": plan.device.backend, "name": plan.device.name,
                   "compute_capability": list(plan.device.compute_capability) if plan.device.compute_capability
                   else None, "description": plan.device.describe()},
        "build_config": plan.build_config,
        "inputs": [{"name": t.name, "dtype": t.dtype.short if t.dtype else None, "shape": _shape_json(t.shape),
                    "profiles": [{"min": list(r.min), "opt": list(r.opt), "max": list(r.max)} for r in t.profiles]}
                   for t in plan.inputs],
        "outputs": [{"name": t.name, "dtype": t.dtype.short if t.dtype else None, "shape": _shape_json(t.shape)}
                    for t in plan.outputs],
        "layers": _layers_with_placement(plan),
        "memory": plan.memory,
        "build_info": plan.build_info,
    }


def _layers_with_placement(plan: EnginePlan) -> list[dict[str, Any]]:
    """plan.layers; on a GPU engine each also says where it runs: shape arithmetic runs on the
    host (runtime/host_values.py, as the runtime decides when it loads the plan), the rest on
    the device."""
    layers = plan.layers
    if plan.device.backend == "cpu":
        return layers
    on_host = find_host_values(plan.graph).layers
    for i, layer in enumerate(layers):
        layer["runs_on"] = "host" if i in on_host else "device"
    return layers


def _shape_text(shape: Optional[list]) -> str:
    return format_shape(None if shape is None else tuple(shape))


def print_engine(console: Console, info: dict[str, Any]) -> None:
    console.print(f"[bold]Engine plan[/bold] {escape(info['file'])} ({info['size_bytes']} bytes)")
    console.print(f"  built by tensorkiln {info['tensorkiln_version']} (format {info['format_version']})")
    console.print(f"  device: {info['device']['description']}")
    config = info["build_config"]
    console.print("  build config: " + ", ".join(f"{k}={v}" for k, v in config.items() if k != "profiles"),
                  markup=False)
    io = Table(title="I/O")
    for column in ("", "name", "dtype", "shape", "profiles (min / opt / max)"):
        io.add_column(column, overflow="fold")
    for direction, rows in (("input", info["inputs"]), ("output", info["outputs"])):
        for row in rows:
            profiles = "; ".join(f"#{i}: {format_dims(p['min'])} / {format_dims(p['opt'])} / {format_dims(p['max'])}"
                                 for i, p in enumerate(row.get("profiles", [])))
            io.add_row(direction, escape(row["name"]), escape(row["dtype"] or "?"), escape(_shape_text(row["shape"])),
                       escape(profiles))
    console.print(io)
    layers = Table(title=f"Layers ({len(info['layers'])})")
    # The stream column only for engines with layers on auxiliary streams (0: the caller's stream).
    on_streams = any(layer.get("stream") for layer in info["layers"])
    # The "runs on" column only for engines with layers on the host (shape arithmetic).
    on_host = any(layer.get("runs_on") == "host" for layer in info["layers"])
    for column in ("#", "name", "op", "tactic", "precision") + (("stream",) if on_streams else ()) + (
            ("runs on",) if on_host else ()) + ("inputs -> outputs",):
        layers.add_column(column, overflow="fold")
    for i, layer in enumerate(info["layers"]):
        ins = ", ".join("_" if x is None else x for x in layer["inputs"])
        stream = (str(layer.get("stream", 0)),) if on_streams else ()
        place = (layer["runs_on"],) if on_host else ()
        # Profiles tuned to different tactics: "profile: tactic" each.
        tactic = ("; ".join(f"{p}: {t}" for p, t in enumerate(layer["profile_tactics"]))
                  if layer.get("profile_tactics") else layer["tactic"])
        layers.add_row(str(i), escape(layer["name"]), escape(layer["op"]), escape(tactic),
                       escape(layer["precision"]), *stream, *place, escape(f"{ins} -> {', '.join(layer['outputs'])}"))
    if on_host:
        count = sum(1 for layer in info["layers"] if layer.get("runs_on") == "host")
        console.print(f"  {count} layer(s) of shape arithmetic run on the host: no kernel, no device sync")
    console.print(layers)
    console.print("[bold]Memory plan[/bold]")
    for key, value in info["memory"].items():
        if key == "arena" and isinstance(value, dict):  # every buffer's offset: in the JSON output
            value = f"{value.get('size')} bytes, {len(value.get('buffers', []))} buffers"
        console.print(f"  {key}: {value}", markup=False)
    build = info["build_info"]
    if build:
        console.print("[bold]Build[/bold]")
        if "build_seconds" in build:
            console.print(f"  build time: {build['build_seconds']} s")
        for p in build.get("passes", []):
            console.print(f"  pass {p['name']}: {p['layers_before']} -> {p['layers_after']} layers", markup=False)
        streams = build.get("streams")
        if streams and streams.get("branches"):
            kept = sum(1 for b in streams["branches"] if b.get("stream"))
            console.print(f"  auxiliary streams: {streams['aux_streams']} ({kept} of {len(streams['branches'])} "
                          f"independent branches on them)" + (f"; {streams['skipped']}" if streams.get("skipped")
                                                              else ""), markup=False)


def optimize_for_report(graph: Graph, level: int, dump_dir: Optional[str]) -> tuple[Graph, list[dict[str, Any]]]:
    """Run the builder's pass pipeline on a copy of the graph, as a build would."""
    graph = copy.deepcopy(graph)
    infer_graph_types(graph)
    graph, reports = run_pipeline(graph, default_pipeline(level), debug=True,
                                  dump_dir=Path(dump_dir) if dump_dir else None)
    return graph, [r.to_json() for r in reports]


def print_passes(console: Console, passes: list[dict[str, Any]], verbose: bool = False) -> None:
    table = Table(title="Optimizer passes")
    for column in ("pass", "layers", "rewrites", "declined"):
        table.add_column(column, overflow="fold")
    for p in passes:
        rewrites = ", ".join(f"{rule} x{n}" for rule, n in p.get("rewrites", {}).items()) or "-"
        declined = Counter(d[0] for d in p.get("declines", []))
        table.add_row(escape(p["name"]), f"{p['layers_before']} -> {p['layers_after']}", escape(rewrites),
                      escape(", ".join(f"{rule} x{n}" for rule, n in declined.items()) or "-"))
    console.print(table)
    declines = [d for p in passes for d in p.get("declines", [])]
    if declines:
        console.print("[bold]Why rules declined[/bold]")
        for rule, node, reason in declines[: None if verbose else 20]:
            console.print(f"  {rule} at '{node}': {reason}", markup=False, highlight=False)
        if not verbose and len(declines) > 20:
            console.print(f"  ... {len(declines) - 20} more (--debug lists all)")
    if verbose:
        for p in passes:
            for line in p.get("details", []):
                console.print(f"  {p['name']}: {line}", markup=False, highlight=False)


# ---- ONNX models --------------------------------------------------------------------------

def _onnx_type(type_proto: Any) -> tuple[str, Optional[list]]:
    if not type_proto.HasField("tensor_type"):
        return type_proto.WhichOneof("value") or "?", None
    tensor = type_proto.tensor_type
    try:
        dtype = DType(tensor.elem_type).short
    except ValueError:
        dtype = f"elem_type {tensor.elem_type}"
    if not tensor.HasField("shape"):
        return dtype, None
    dims: list = []
    for d in tensor.shape.dim:
        dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or None))
    return dtype, dims


def _op_support(op_type: str, domain: str, opset: int) -> tuple[str, str]:
    """("yes" | "function" | "no", reason) for one op of the model, from the registry alone."""
    from ..ops import get_op

    op = get_op(op_type, domain)
    if op is not None:
        if opset < op.since_opset:
            return "no", f"opset {opset} is older than supported ({op.since_opset})"
        return "yes", ""
    try:
        import onnx.defs
        schema = onnx.defs.get_schema(op_type, opset, domain)
        if schema.has_function or schema.has_context_dependent_function:
            return "function", "expanded into its ONNX function body"
    except Exception:  # noqa: BLE001 - unknown ops/domains have no schema
        pass
    return "no", "no implementation of this op"


def onnx_info(path: Path) -> tuple[dict[str, Any], Optional[Graph], Optional[TensorkilnError]]:
    from ..frontends.onnx import import_model, load_model_proto

    try:
        model = load_model_proto(path)
    except ModelLoadError as exc:
        raise ModelLoadError(f"'{path}' is neither a tensorkiln engine plan (no {MAGIC.decode()} magic) nor a "
                             f"readable ONNX model: {one_line(str(exc))}") from exc
    g = model.graph
    opsets = {(o.domain or "ai.onnx"): o.version for o in model.opset_import}
    initializer_names = {t.name for t in g.initializer}
    inputs = []
    for vi in g.input:
        if vi.name in initializer_names:
            continue
        dtype, shape = _onnx_type(vi.type)
        inputs.append({"name": vi.name, "dtype": dtype, "shape": shape})
    outputs = []
    for vi in g.output:
        dtype, shape = _onnx_type(vi.type)
        outputs.append({"name": vi.name, "dtype": dtype, "shape": shape})
    histogram = Counter((n.domain if n.domain not in ("", "ai.onnx") else "", n.op_type) for n in g.node)
    graph: Optional[Graph] = None
    import_error: Optional[TensorkilnError] = None
    problems_by_op: dict[str, str] = {}
    try:
        graph = import_model(model)
    except TensorkilnError as exc:
        import_error = exc
        for _, op_type, _, reason in getattr(exc, "problems", []):
            problems_by_op.setdefault(op_type, reason)
    ops = []
    for (domain, op_type), count in sorted(histogram.items(), key=lambda kv: (-kv[1], kv[0])):
        opset = opsets.get(domain or "ai.onnx", 0)
        status, reason = _op_support(op_type, domain, opset)
        if op_type in problems_by_op:
            status, reason = "no", problems_by_op[op_type]
        ops.append({"op": op_type, "domain": domain or "ai.onnx", "count": count, "supported": status != "no",
                    "support": status, "reason": reason})
    inner = sorted({p[1] for p in getattr(import_error, "problems", [])} - {o["op"] for o in ops})
    info = {
        "kind": "onnx", "file": str(path), "ir_version": model.ir_version,
        "producer": f"{model.producer_name} {model.producer_version}".strip(), "opsets": opsets,
        "inputs": inputs, "outputs": outputs, "initializers": len(g.initializer), "nodes": len(g.node),
        "ops": ops,
        "import": {"ok": graph is not None, "layers": len(graph.nodes) if graph is not None else None,
                   "error": None if import_error is None else one_line(str(import_error)),
                   "unsupported_inside_functions": inner},
    }
    return info, graph, import_error


def print_onnx(console: Console, info: dict[str, Any]) -> None:
    console.print(f"[bold]ONNX model[/bold] {escape(info['file'])}")
    console.print(f"  IR version {info['ir_version']}, producer '{info['producer'] or '?'}'", markup=False)
    console.print("  opsets: " + ", ".join(f"{d} {v}" for d, v in info["opsets"].items()), markup=False)
    console.print(f"  {info['nodes']} nodes, {info['initializers']} initializers")
    io = Table(title="I/O")
    for column in ("", "name", "dtype", "shape"):
        io.add_column(column, overflow="fold")
    for direction, rows in (("input", info["inputs"]), ("output", info["outputs"])):
        for row in rows:
            io.add_row(direction, escape(row["name"]), escape(row["dtype"]), escape(_shape_text(row["shape"])))
    console.print(io)
    ops = Table(title="Ops")
    for column in ("op", "domain", "count", "supported", "note"):
        ops.add_column(column, overflow="fold")
    for row in info["ops"]:
        mark = {"yes": "yes", "function": "yes (function)", "no": "[red]no[/red]"}[row["support"]]
        ops.add_row(escape(row["op"]), escape(row["domain"]), str(row["count"]), mark, escape(row["reason"]))
    console.print(ops)
    supported = sum(r["count"] for r in info["ops"] if r["supported"])
    total = sum(r["count"] for r in info["ops"])
    console.print(f"Supported nodes: {supported}/{total}")
    result = info["import"]
    if result["ok"]:
        console.print(f"Import: ok ({result['layers']} layers)")
    else:
        console.print(f"Import: [red]fails[/red]: {escape(result['error'])}", highlight=False)
