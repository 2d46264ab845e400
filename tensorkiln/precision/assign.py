"""Per-layer compute precision: choose it, and insert Cast ("reformat") layers at the boundaries.

A layer "runs in fp16" when its float32 inputs are converted to float16 before it and its
reference computes on them: torch keeps the dtype of its inputs (on the CPU most kernels
accumulate fp16/bf16 in fp32 internally but round every output). So choosing a precision
is a graph rewrite, and the runtime needs nothing new: Casts are ordinary layers.

Rules (the builder runs this after the pass pipeline, before tactic selection):
- Only tensors whose dtype is float32 in the network are ever lowered; integer, bool and
  other float tensors (a model's own fp16 or fp64) are left as they are.
- A layer with float32 inputs runs in fp32, fp16 or bf16. Its float32 inputs are cast to
  that precision (constants are converted at build time, with no Cast layer); its float
  outputs stay in it until a consumer needs another precision, which gets a Cast.
- Graph outputs and values read by subgraphs keep their declared dtype: a lower-precision
  producer writes a renamed tensor and a Cast back produces the declared one.
- With fp16 and/or bf16 allowed and no per-layer constraint, every layer that can runs in
  the lower precision (fp16 when both are allowed): there is no timing-based choice on
  the CPU yet, so "allowed" means "used". Numerically sensitive layers (policy.py) stay
  fp32. Layers without float outputs (comparisons, ArgMax, Shape) follow their inputs'
  precision, which is exact and needs no Cast; so does a Cast layer of the model (its
  output dtype is its `to`; a lower-precision input widens exactly).
- `layer_precisions` (layer name or pattern with one '*' -> "fp32" | "fp16" | "bf16") is
  applied with `constraints` "prefer" (honoured where the layer can run so, and not over
  the sensitivity policy) or "obey" (honoured always, over the policy; a layer named
  explicitly that cannot run so is a BuildError). An explicitly requested precision is
  allowed for that layer even when the config's fp16/bf16 flags are off.

Whether an op can run in a lower precision is decided from its definition: its type
inference with lower-precision inputs must give lower-precision float outputs (an op whose
output dtype is an attribute, like Cast or RandomNormal, cannot) and its `check` must
accept the node. Every op's torch reference was run with fp16 and bf16 inputs over the
ONNX node tests on torch's CPU backend, and all that pass type inference also ran, so no
op is excluded for lack of a kernel; an op that gains such a limit gets a row in
`UNSUPPORTED_LOW_PRECISION`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from ..errors import BuildError, ConfigError
from ..ir import HALF_FLOATS, DType, Graph, NameScope, Node, TensorType, Value, free_names_of_subgraphs
from ..ops import InferContext, get_op
from ..ops.infer import merge_types
from .policy import sensitivity_reason

# Precision names as users write them (trtexec's --layerPrecisions) -> dtype.
PRECISIONS: dict[str, DType] = {"fp32": DType.FLOAT32, "fp16": DType.FLOAT16, "bf16": DType.BFLOAT16}
_ALIASES = {"float32": "fp32", "float": "fp32", "float16": "fp16", "half": "fp16", "bfloat16": "bf16"}
CONSTRAINTS = ("none", "prefer", "obey")

# (op type, dtype) -> why the op cannot run in that precision on the torch backends. Empty:
# see the module docstring for how that was established.
UNSUPPORTED_LOW_PRECISION: dict[tuple[str, DType], str] = {}



def _lower_chain_constants(attrs: dict[str, Any], dtype: DType) -> dict[str, Any]:
    """ElementwiseChain keeps its scalar operands inline in `program` ({"const": v, "dtype":
    "float32", "shape": [1]}): converted with the layer, as weights are, so that an fp16
    chain does not compute against float32 constants (which would promote it back to fp32)."""
    program = []
    for step in attrs.get("program", []):
        args = []
        for arg in step.get("args", []):
            if isinstance(arg, dict) and "const" in arg and arg.get("dtype") == DType.FLOAT32.short:
                rounded = float(np.asarray(arg["const"], dtype=np.float32).astype(dtype.numpy).astype(np.float32))
                arg = {**arg, "const": rounded, "dtype": dtype.short}
            args.append(arg)
        program.append({**step, "args": args})
    return {**attrs, "program": program}


# Ops that hold float constants in attributes rather than as inputs: (domain, op type) ->
# the node's attributes with those constants converted to the layer's precision.
INLINE_CONSTANTS: dict[tuple[str, str], Callable[[dict[str, Any], DType], dict[str, Any]]] = {
    ("tensorkiln", "ElementwiseChain"): _lower_chain_constants,
}

_NAMES = {DType.FLOAT32: "fp32", DType.FLOAT16: "fp16", DType.BFLOAT16: "bf16", DType.FLOAT64: "fp64"}


def precision_name(dtype: Optional[DType]) -> str:
    """fp32/fp16/bf16/fp64 for float dtypes, the dtype's name otherwise ("int64")."""
    if dtype is None:
        return "?"
    return _NAMES.get(dtype, dtype.short)


def parse_precision(text: str, layer: str) -> DType:
    """A precision name from layer_precisions; ConfigError naming the layer otherwise."""
    key = str(text).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in PRECISIONS:
        raise ConfigError(f"layer_precisions: unknown precision '{text}' for layer '{layer}' "
                          f"(use {', '.join(PRECISIONS)})")
    return PRECISIONS[key]


def check_layer_precisions(layer_precisions: Mapping[str, str], constraints: str) -> None:
    """What can be checked without the network: constraint and precision names, patterns."""
    if constraints not in CONSTRAINTS:
        raise ConfigError(f"precision_constraints must be one of {', '.join(CONSTRAINTS)}, got '{constraints}'")
    for pattern, text in layer_precisions.items():
        if not isinstance(pattern, str) or not pattern:
            raise ConfigError(f"layer_precisions: layer names must be non-empty strings, got {pattern!r}")
        if pattern.count("*") > 1:
            raise ConfigError(f"layer_precisions: '{pattern}' has more than one '*' (one wildcard per name)")
        parse_precision(text, pattern)
    if layer_precisions and constraints == "none":
        raise ConfigError("layer_precisions is set but precision_constraints is 'none', which ignores it (as "
                          "TensorRT does): set precision_constraints to 'prefer' or 'obey'")


def _matches(pattern: str, name: str) -> bool:
    if "*" not in pattern:
        return pattern == name
    prefix, suffix = pattern.split("*")
    return len(name) >= len(prefix) + len(suffix) and name.startswith(prefix) and name.endswith(suffix)


@dataclass(frozen=True)
class Request:
    precision: DType
    explicit: bool  # named exactly (not only through a '*' pattern)
    spec: str


def match_layer_precisions(graph: Graph, layer_precisions: Mapping[str, str]) -> dict[str, Request]:
    """Layer name -> requested precision. Specs apply in order, later ones override earlier
    ones (as trtexec reads --layerPrecisions); a name or pattern that matches no layer is an error."""
    names = [n.name for n in graph.nodes]
    requests: dict[str, Request] = {}
    for pattern, text in layer_precisions.items():
        precision = parse_precision(text, pattern)
        hits = [name for name in names if _matches(pattern, name)]
        if not hits:
            shown = ", ".join(repr(n) for n in names[:12]) + (", ..." if len(names) > 12 else "")
            what = f"pattern '{pattern}' matches no layer" if "*" in pattern else \
                f"names layer '{pattern}', which the network does not have"
            raise ConfigError(f"layer_precisions {what} (layers are named as `kiln inspect` shows them, after "
                              f"optimization; {len(names)} layers: {shown})")
        for name in hits:
            explicit = "*" not in pattern or (name in requests and requests[name].explicit)
            requests[name] = Request(precision, explicit, f"{pattern}:{precision_name(precision)}")
    return requests


@dataclass
class PrecisionReport:
    """What the assignment did, for build_info and the build summary."""

    allowed: tuple[str, ...]
    constraints: str
    counts: dict[str, int] = field(default_factory=dict)  # layer precision -> layers (reformats not counted)
    reformat_layers: int = 0
    converted_weights: int = 0
    # Layers that run in fp32 although a lower precision was allowed or asked for, and why.
    kept_fp32: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"allowed": list(self.allowed), "constraints": self.constraints, "counts": dict(self.counts),
                "reformat_layers": self.reformat_layers, "converted_weights": self.converted_weights,
                "kept_fp32": dict(self.kept_fp32)}


def low_precision_blocker(node: Node, low: DType,
                          lowered: Optional[Callable[[Value], bool]] = None) -> Optional[str]:
    """Why `node` cannot compute in `low` (fp16/bf16), or None when it can.

    Tried on a copy: the inputs `lowered` selects (default: the float32 ones) retyped to
    `low`, its op's inference and check run on that; the original node is not touched."""
    if any(True for _ in node.subgraphs()):
        return "control flow: its subgraphs run at their own layers' precision"
    op = get_op(node.op_type, node.domain)
    if op is None:
        return f"op {node.op_type} is not registered"
    unsupported = UNSUPPORTED_LOW_PRECISION.get((node.op_type, low))
    if unsupported:
        return unsupported
    # Only tensor outputs of known dtype can be retyped (and their consumers given Casts).
    if any(not isinstance(v.type, TensorType) for v in node.outputs):
        return "it has sequence, optional or untyped outputs"
    trial = _retyped(node, low, lowered or (lambda v: v.dtype == DType.FLOAT32))
    try:
        types = op.infer(InferContext(node=trial, input_types=[None if v is None else v.type for v in trial.inputs],
                                      attrs=trial.attrs))
    except Exception as exc:  # noqa: BLE001 - a refusal of the lower dtype is the answer, not a bug
        return f"{node.op_type} does not accept {low.short} inputs ({type(exc).__name__}: {exc})"
    reason = op.check(trial)
    if reason:
        return f"{node.op_type} in {low.short}: {reason}"
    follows = False
    for v, t in zip(node.outputs, list(types) + [None] * len(node.outputs)):
        if v.dtype != DType.FLOAT32:
            continue
        new = t.dtype if isinstance(t, TensorType) else None
        if new == low:
            follows = True
        elif new not in (None, DType.FLOAT32):
            return f"its output '{v.name}' would become {new.short}"
    if not follows and any(v.dtype is not None and v.dtype.is_float for v in node.outputs):
        return f"its output dtype is set by the {node.op_type} op, not by its inputs"
    return None


def _retyped(node: Node, low: DType, lowered: Callable[[Value], bool]) -> Node:
    inputs = []
    for v in node.inputs:
        if v is not None and lowered(v):
            const = None if v.const is None else v.const.astype(low.numpy)
            inputs.append(Value(v.name, TensorType(low, v.shape), const))
        else:
            inputs.append(v)
    outputs = [Value(v.name, v.type) for v in node.outputs]
    return Node(node.op_type, inputs, outputs, _lowered_attrs(node, low), node.name, node.domain, node.opset)


def _lowered_attrs(node: Node, low: DType) -> dict[str, Any]:
    convert = INLINE_CONSTANTS.get((node.domain, node.op_type))
    return convert(dict(node.attrs), low) if convert else dict(node.attrs)


def _reads_any_float(node: Node) -> bool:
    """A Cast gives the same values whatever float dtype its input is held in (a lower
    precision value widens exactly), so it reads its input as it comes and needs no Cast in
    front of it. Not to strings: a value's text depends on its dtype."""
    return node.op_type == "Cast" and node.domain in ("", "ai.onnx") and node.attrs.get("to") != DType.STRING.value


def _float32_inputs(node: Node, original: Mapping[str, Optional[DType]]) -> list[Value]:
    return [v for v in node.inputs if v is not None and original.get(v.name) == DType.FLOAT32]


class _Assigner:
    def __init__(self, graph: Graph, allowed_low: Sequence[DType], requests: Mapping[str, Request],
                 constraints: str, input_dtypes: Mapping[str, DType], output_dtypes: Mapping[str, DType]):
        self.graph = graph
        self.allowed_low = tuple(allowed_low)
        self.default_low = self.allowed_low[0] if self.allowed_low else None
        self.requests = requests
        self.constraints = constraints
        self.names = NameScope(_all_names(graph))
        self.original: dict[str, Optional[DType]] = {}
        for v in [*graph.inputs, *graph.initializers]:
            self.original[v.name] = v.dtype
        for n in graph.nodes:
            for v in n.outputs:
                self.original[v.name] = v.dtype
        # Tensors that must keep their declared dtype under their own name.
        self.pinned = {v.name for v in graph.outputs}
        for n in graph.nodes:
            self.pinned |= free_names_of_subgraphs(n)
        # tensor name -> {dtype: the Value holding it in that dtype}
        self.versions: dict[str, dict[DType, Value]] = {}
        for v in [*graph.inputs, *graph.initializers]:
            if v.dtype is not None:
                self.versions[v.name] = {v.dtype: v}
        self.consts = {v.name: v for v in graph.initializers}
        # I/O formats (io_formats.py): an input that arrives in another dtype is that dtype's
        # version of its float32 tensor; an output may leave in another dtype.
        self.output_dtypes = dict(output_dtypes)
        for v in graph.inputs:
            arrives = input_dtypes.get(v.name)
            if arrives is not None:
                v.type = TensorType(arrives, v.shape)
                self.versions[v.name] = {arrives: v}
        self.report = PrecisionReport(tuple(precision_name(d) for d in (DType.FLOAT32, *self.allowed_low)),
                                      constraints)

    def _lowerable(self, v: Value) -> bool:
        """Whether `v` was float32 in the network (earlier layers may have lowered it already)."""
        return self.original.get(v.name) == DType.FLOAT32

    # ---- the decision for one layer ------------------------------------------------------
    def decide(self, node: Node) -> tuple[Optional[DType], str]:
        """(compute precision, why it is not the lower one); precision None: not assignable."""
        request = self.requests.get(node.name)
        floats = _float32_inputs(node, self.original)
        if not floats or _reads_any_float(node):
            if request is not None and request.explicit and request.precision != DType.FLOAT32:
                reason = ("it has no float32 inputs (its precision is set by its op and input dtypes)" if not floats
                          else "a Cast's output dtype is its 'to' attribute; it reads its input as it comes")
                if self.constraints == "obey":
                    raise BuildError(f"layer '{node.name}' ({node.op_type}) cannot run in "
                                     f"{precision_name(request.precision)} as layer_precisions asks "
                                     f"('{request.spec}'): {reason}")
                return None, reason
            return None, ""
        if request is not None:
            return self._requested(node, request)
        if self.default_low is None:
            return DType.FLOAT32, ""
        if not any(v.dtype is not None and v.dtype.is_float for v in node.outputs):
            return self._follow_inputs(node, floats)
        sensitive = sensitivity_reason(node)
        if sensitive:
            return DType.FLOAT32, sensitive
        blocker = low_precision_blocker(node, self.default_low, self._lowerable)
        if blocker:
            return DType.FLOAT32, f"cannot run in {precision_name(self.default_low)}: {blocker}"
        return self.default_low, ""

    def _requested(self, node: Node, request: Request) -> tuple[DType, str]:
        want = request.precision
        if want == DType.FLOAT32:
            return DType.FLOAT32, f"layer_precisions asks for fp32 ('{request.spec}')"
        blocker = low_precision_blocker(node, want, self._lowerable)
        if blocker:
            if self.constraints == "obey" and request.explicit:
                raise BuildError(f"layer '{node.name}' ({node.op_type}) cannot run in {precision_name(want)} as "
                                 f"layer_precisions asks ('{request.spec}') with precision_constraints 'obey': "
                                 f"{blocker} (use 'prefer' to fall back to fp32)")
            return DType.FLOAT32, f"cannot run in {precision_name(want)} as asked ('{request.spec}'): {blocker}"
        sensitive = sensitivity_reason(node)
        if sensitive and self.constraints != "obey":
            return DType.FLOAT32, (f"{sensitive}; layer_precisions asks for {precision_name(want)} but "
                                   f"precision_constraints 'prefer' keeps the policy ('obey' overrides it)")
        return want, ""

    def _follow_inputs(self, node: Node, floats: list[Value]) -> tuple[DType, str]:
        """A layer without float outputs reads its inputs in the precision they already have:
        comparing or indexing fp16 values gives the same result in fp32, so no Cast is worth it."""
        produced = {self._current_dtype(v) for v in floats if v.name not in self.consts}
        if len(produced) == 1:
            dtype = produced.pop()
            if dtype in HALF_FLOATS:
                blocker = low_precision_blocker(node, dtype, self._lowerable)
                if blocker is None:
                    return dtype, ""
                return DType.FLOAT32, f"cannot read its {precision_name(dtype)} inputs as they are: {blocker}"
        return DType.FLOAT32, ""

    def _current_dtype(self, v: Value) -> DType:
        versions = self.versions.get(v.name, {})
        return next(iter(versions)) if versions else DType.FLOAT32

    # ---- the rewrite ----------------------------------------------------------------------
    def run(self) -> PrecisionReport:
        new_nodes: list[Node] = []
        for node in self.graph.nodes:
            precision, reason = self.decide(node)
            if reason and (precision in (None, DType.FLOAT32)) and (self.allowed_low or node.name in self.requests):
                self.report.kept_fp32[node.name] = reason
            if precision is None:
                node.meta["precision"] = _label(node)
                if reason:
                    node.meta["precision_reason"] = reason
                self._record_outputs(node)
                new_nodes.append(node)
                continue
            for i, v in enumerate(node.inputs):
                if v is not None and self.original.get(v.name) == DType.FLOAT32:
                    node.inputs[i] = self._version(v, precision, new_nodes, node)
            if precision != DType.FLOAT32:
                self._lower_outputs(node, precision, new_nodes)
            else:
                self._record_outputs(node)
                new_nodes.append(node)
            node.meta["precision"] = precision_name(precision)
            if reason:
                node.meta["precision_reason"] = reason
            label = precision_name(precision)
            self.report.counts[label] = self.report.counts.get(label, 0) + 1
        self._convert_outputs(new_nodes)
        self.graph.nodes = new_nodes
        self._drop_unused_initializers()
        return self.report

    def _record_outputs(self, node: Node) -> None:
        for v in node.outputs:
            if v.dtype is not None:
                self.versions[v.name] = {v.dtype: v}

    def _version(self, v: Value, dtype: DType, new_nodes: list[Node], consumer: Node) -> Value:
        """The tensor `v` in `dtype`: an existing version, a converted constant, or a new Cast."""
        versions = self.versions.setdefault(v.name, {v.dtype: v} if v.dtype is not None else {})
        if dtype in versions:
            return versions[dtype]
        # Convert from the widest version there is: fp16 -> bf16 directly would round twice.
        source = versions.get(DType.FLOAT32) or next(iter(versions.values()))
        suffix = precision_name(dtype)
        if v.name in self.consts:
            converted = Value(self.names.unique(f"{v.name}_{suffix}"), const=v.const.astype(dtype.numpy))
            self.graph.initializers.append(converted)
            self.consts[converted.name] = converted
            self.report.converted_weights += 1
            versions[dtype] = converted
            return converted
        out = Value(self.names.unique(f"{v.name}_{suffix}"), TensorType(dtype, source.shape))
        new_nodes.append(self._cast(v.name, source, out, dtype, consumer.opset))
        versions[dtype] = out
        return out

    def _cast(self, tensor: str, source: Value, out: Value, dtype: DType, opset: int) -> Node:
        """A reformat layer: `source` (a version of tensor `tensor`) converted into `out`."""
        cast = Node("Cast", [source], [out], {"to": dtype.value, "saturate": 1, "round_mode": "up"},
                    name=self.names.unique(f"{tensor}_reformat_{precision_name(dtype)}"),
                    opset=self.graph.opsets.get("", 0) or opset)
        cast.meta["precision"] = precision_name(dtype)
        cast.meta["reformat"] = True
        self.report.reformat_layers += 1
        return cast

    def _lower_outputs(self, node: Node, precision: DType, new_nodes: list[Node]) -> None:
        op = get_op(node.op_type, node.domain)
        assert op is not None  # low_precision_blocker checked it
        if (node.domain, node.op_type) in INLINE_CONSTANTS:
            node.attrs = _lowered_attrs(node, precision)
        types = op.infer(InferContext(node=node, input_types=[None if v is None else v.type for v in node.inputs],
                                      attrs=node.attrs))
        cast_back: list[tuple[Value, Value]] = []
        for j, v in enumerate(node.outputs):
            t = types[j] if j < len(types) else None
            new_type = merge_types(t, v.type) if isinstance(t, TensorType) else v.type
            if v.dtype != DType.FLOAT32 or not isinstance(new_type, TensorType) or new_type.dtype == DType.FLOAT32:
                if v.dtype is not None:
                    self.versions[v.name] = {v.dtype: v}
                continue
            if self.output_dtypes.get(v.name) == new_type.dtype:
                # An output whose I/O format is this precision leaves as it is made: no Cast back.
                v.type = new_type
                self.versions[v.name] = {new_type.dtype: v}
            elif v.name in self.pinned:
                # Graph outputs and captured tensors keep their dtype under their own name.
                low = Value(self.names.unique(f"{v.name}_{precision_name(new_type.dtype)}"), new_type)
                node.outputs[j] = low
                self.versions[v.name] = {new_type.dtype: low, v.dtype: v}
                cast_back.append((low, v))
            else:
                v.type = new_type
                self.versions[v.name] = {new_type.dtype: v}
        new_nodes.append(node)
        for low, declared in cast_back:
            new_nodes.append(self._cast(declared.name, low, declared, declared.dtype, node.opset))

    def _convert_outputs(self, new_nodes: list[Node]) -> None:
        """Outputs whose I/O format is not the dtype they came out in: the producer (or the
        constant) takes a new name, and a Cast at the end gives the output in its format, converted
        from the widest version there is (fp16 -> bf16 directly would round twice)."""
        for out in self.graph.outputs:
            want = self.output_dtypes.get(out.name)
            if want is None or out.dtype == want:
                continue
            held = Value(self.names.unique(f"{out.name}_{precision_name(out.dtype)}"), out.type)
            for i, v in enumerate(self.graph.initializers):
                if v is out:
                    held.const, out.const = out.const, None
                    self.graph.initializers[i] = held
                    self.consts.pop(out.name, None)
            for node in new_nodes:
                node.outputs = [held if v is out else v for v in node.outputs]
                node.inputs = [held if v is out else v for v in node.inputs]
            versions = self.versions.setdefault(out.name, {})
            for dtype, v in list(versions.items()):
                if v is out:
                    versions[dtype] = held
            source = versions.get(DType.FLOAT32) or held
            out.type = TensorType(want, out.shape)
            new_nodes.append(self._cast(out.name, source, out, want, 13))

    def _drop_unused_initializers(self) -> None:
        used = {v.name for v in self.graph.outputs}
        for n in self.graph.nodes:
            used.update(v.name for v in n.inputs if v is not None)
            used |= free_names_of_subgraphs(n)
        self.graph.initializers = [v for v in self.graph.initializers if v.name in used]


def _label(node: Node) -> str:
    """The precision shown for a layer with no float32 inputs: its first float output's, else
    its first output's dtype."""
    for v in node.outputs:
        if v.dtype is not None and v.dtype.is_float:
            return precision_name(v.dtype)
    for v in node.outputs:
        if v.dtype is not None:
            return precision_name(v.dtype)
    return "?"


def _all_names(graph: Graph) -> set[str]:
    names: set[str] = set()
    stack = [graph]
    while stack:
        g = stack.pop()
        names.update(v.name for v in [*g.inputs, *g.initializers])
        for n in g.nodes:
            names.add(n.name)
            names.update(v.name for v in n.outputs)
            stack.extend(n.subgraphs())
    return names


def assign_precisions(graph: Graph, *, fp16: bool = False, bf16: bool = False,
                      layer_precisions: Optional[Mapping[str, str]] = None,
                      constraints: str = "none", input_dtypes: Optional[Mapping[str, DType]] = None,
                      output_dtypes: Optional[Mapping[str, DType]] = None) -> PrecisionReport:
    """Choose each top-level layer's precision and rewrite `graph` in place (Casts inserted,
    constant weights converted, node.meta["precision"] set). Returns what was done.
    `input_dtypes` / `output_dtypes`: the I/O formats that change a tensor's dtype, as
    io_formats.boundary_dtypes checked them (names no longer in the graph are ignored)."""
    layer_precisions = dict(layer_precisions or {})
    check_layer_precisions(layer_precisions, constraints)
    requests = match_layer_precisions(graph, layer_precisions) if constraints != "none" else {}
    allowed_low = [d for d, on in ((DType.FLOAT16, fp16), (DType.BFLOAT16, bf16)) if on]
    present_inputs = {v.name for v in graph.inputs}
    present_outputs = {v.name for v in graph.outputs}
    return _Assigner(graph, allowed_low, requests, constraints,
                     {n: d for n, d in (input_dtypes or {}).items() if n in present_inputs},
                     {n: d for n, d in (output_dtypes or {}).items() if n in present_outputs}).run()
