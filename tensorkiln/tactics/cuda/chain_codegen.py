"""Triton source for a tensorkiln::ElementwiseChain program: one kernel for the whole chain.

Pure Python (no triton import): the source and the operand layouts are worked out here, so
both are testable without a GPU; `triton_kernels.compile_chain` turns the source into a kernel.

The kernel walks the output's elements in memory order. Each tensor operand is read at the
output positions through one of four index forms, chosen from its broadcast shape:

    full    same shape as the output              x[offs]
    scalar  one element                           x[0]
    last    varies along the trailing dims only   x[offs % span]          (a bias row)
    mid     varies along one run of dims          x[(offs // inner) % span]  (a per-channel vector)

Every value is computed in fp32; after each step it is rounded to the chain's dtype, as the
layers it replaced stored each intermediate result, so the kernel matches them step by step.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch

# The per-element expression of each step op. `a` holds the operand expressions (None for an
# absent optional operand), `c` the inline constant of each operand (None for tensors), `p` the
# step's attributes. Everything is fp32.
Expr = Callable[[list[Optional[str]], list[Optional[float]], dict[str, Any]], str]


def _f(v: Any) -> str:
    return f"({float(v)!r})"


def _sigmoid(x: str) -> str:
    return f"(1.0 / (1.0 + tl.exp(-({x}))))"


def _softplus(x: str) -> str:
    # torch's softplus (beta 1, threshold 20): x itself above the threshold.
    return f"tl.where({x} > 20.0, {x}, libdevice.log1p(tl.exp({x})))"


def _pow(a: list[Optional[str]], c: list[Optional[float]], p: dict[str, Any]) -> str:
    if c[1] == 2.0:
        return f"({a[0]} * {a[0]})"
    if c[1] == 1.0:
        return a[0]
    if c[1] == 0.5:
        return f"tl.sqrt({a[0]})"
    return f"libdevice.pow({a[0]}, {a[1]})"


def _mod(a: list[Optional[str]], c: list[Optional[float]], p: dict[str, Any]) -> str:
    r = f"libdevice.fmod({a[0]}, {a[1]})"
    if int(p.get("fmod", 0)):
        return r
    # Python/numpy remainder: the sign of the divisor.
    return f"tl.where(({r} != 0) & (({r} < 0) != ({a[1]} < 0)), {r} + {a[1]}, {r})"


def _clip(a: list[Optional[str]], c: list[Optional[float]], p: dict[str, Any]) -> str:
    x = a[0]
    low = a[1] if len(a) > 1 and a[1] is not None else (_f(p["min"]) if p.get("min") is not None else None)
    high = a[2] if len(a) > 2 and a[2] is not None else (_f(p["max"]) if p.get("max") is not None else None)
    # max then min: the order that makes the upper bound win when min > max (the op's rule).
    if low is not None:
        x = f"tl.maximum({x}, {low})"
    if high is not None:
        x = f"tl.minimum({x}, {high})"
    return x


def _gelu(a: list[Optional[str]], c: list[Optional[float]], p: dict[str, Any]) -> str:
    x = a[0]
    if p.get("approximate", "none") == "tanh":
        inner = f"{math.sqrt(2.0 / math.pi)!r} * ({x} + 0.044715 * {x} * {x} * {x})"
        return f"(0.5 * {x} * (1.0 + libdevice.tanh({inner})))"
    return f"(0.5 * {x} * (1.0 + tl.erf({x} * {1.0 / math.sqrt(2.0)!r})))"


def _elu(x: str, alpha: Any) -> str:
    return f"tl.where({x} > 0, {x}, {_f(alpha)} * libdevice.expm1({x}))"


STEP_EXPRESSIONS: dict[str, Expr] = {
    "Abs": lambda a, c, p: f"tl.abs({a[0]})",
    "Neg": lambda a, c, p: f"(-{a[0]})",
    "Floor": lambda a, c, p: f"tl.floor({a[0]})",
    "Ceil": lambda a, c, p: f"tl.ceil({a[0]})",
    "Round": lambda a, c, p: f"libdevice.rint({a[0]})",  # half to even, as ONNX asks
    "Sign": lambda a, c, p: f"tl.where({a[0]} > 0, 1.0, tl.where({a[0]} < 0, -1.0, {a[0]} * 0.0))",
    "Reciprocal": lambda a, c, p: f"(1.0 / {a[0]})",
    "Sqrt": lambda a, c, p: f"tl.sqrt({a[0]})",
    "Exp": lambda a, c, p: f"tl.exp({a[0]})",
    "Log": lambda a, c, p: f"tl.log({a[0]})",
    "Erf": lambda a, c, p: f"tl.erf({a[0]})",
    "Sin": lambda a, c, p: f"tl.sin({a[0]})",
    "Cos": lambda a, c, p: f"tl.cos({a[0]})",
    **{op: (lambda fn: (lambda a, c, p: f"libdevice.{fn}({a[0]})"))(op.lower())
       for op in ("Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh", "Tanh")},
    "Relu": lambda a, c, p: f"tl.where({a[0]} < 0, 0.0, {a[0]})",  # NaN stays NaN, as torch.relu
    "Sigmoid": lambda a, c, p: _sigmoid(a[0]),
    "Softsign": lambda a, c, p: f"({a[0]} / (1.0 + tl.abs({a[0]})))",
    "Softplus": lambda a, c, p: _softplus(a[0]),
    "LeakyRelu": lambda a, c, p: f"tl.where({a[0]} > 0, {a[0]}, {a[0]} * {_f(p.get('alpha', 0.01))})",
    "Elu": lambda a, c, p: _elu(a[0], p.get("alpha", 1.0)),
    "Selu": lambda a, c, p: f"({_f(p['gamma'])} * {_elu(a[0], p['alpha'])})",
    "Celu": lambda a, c, p: (f"tl.where({a[0]} > 0, {a[0]}, {_f(p.get('alpha', 1.0))} * "
                             f"libdevice.expm1({a[0]} / {_f(p.get('alpha', 1.0))}))"),
    "HardSigmoid": lambda a, c, p: (f"tl.minimum(tl.maximum({_f(p.get('alpha', 0.2))} * {a[0]} + "
                                    f"{_f(p.get('beta', 0.5))}, 0.0), 1.0)"),
    "HardSwish": lambda a, c, p: f"({a[0]} * tl.minimum(tl.maximum({a[0]} / 6.0 + 0.5, 0.0), 1.0))",
    "ThresholdedRelu": lambda a, c, p: f"tl.where({a[0]} > {_f(p.get('alpha', 1.0))}, {a[0]}, 0.0)",
    "Gelu": _gelu,
    "Mish": lambda a, c, p: f"({a[0]} * libdevice.tanh({_softplus(a[0])}))",
    "Shrink": lambda a, c, p: (f"tl.where({a[0]} < -{_f(p.get('lambd', 0.5))}, {a[0]} + {_f(p.get('bias', 0.0))}, "
                               f"tl.where({a[0]} > {_f(p.get('lambd', 0.5))}, {a[0]} - {_f(p.get('bias', 0.0))}, "
                               f"0.0))"),
    "Swish": lambda a, c, p: f"({a[0]} * {_sigmoid(_f(p.get('alpha', 1.0)) + ' * ' + a[0])})",
    "Add": lambda a, c, p: f"({a[0]} + {a[1]})",
    "Sub": lambda a, c, p: f"({a[0]} - {a[1]})",
    "Mul": lambda a, c, p: f"({a[0]} * {a[1]})",
    "Div": lambda a, c, p: f"({a[0]} / {a[1]})",
    "Pow": _pow,
    "Mod": _mod,
    "PRelu": lambda a, c, p: f"tl.where({a[0]} < 0, {a[0]} * {a[1]}, {a[0]})",
    "Max": lambda a, c, p: f"tl.maximum({a[0]}, {a[1]})",
    "Min": lambda a, c, p: f"tl.minimum({a[0]}, {a[1]})",
    "Clip": _clip,
}

TRITON_DTYPES = {torch.float32: "tl.float32", torch.float16: "tl.float16", torch.bfloat16: "tl.bfloat16"}
FLOAT_NAMES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

KINDS = ("full", "scalar", "last", "mid")


def program_reason(program: Any) -> Optional[str]:
    """Why the chain program cannot become one Triton kernel (an op without a translation, a
    non-float constant), or None."""
    if not isinstance(program, list):
        return "program is not a list of steps"
    for k, step in enumerate(program):
        op = step.get("op")
        if step.get("domain") or op not in STEP_EXPRESSIONS:
            return f"step {k} ({op}) has no Triton translation"
        if op == "Gelu" and step.get("attrs", {}).get("approximate", "none") not in ("none", "tanh"):
            return f"step {k}: Gelu approximate={step['attrs']['approximate']!r}"
        for arg in step.get("args", []):
            if isinstance(arg, dict) and "const" in arg and not isinstance(arg["const"], (int, float)):
                return f"step {k} ({op}) has a non-numeric constant"
    return None


def program_key(program: list[dict]) -> str:
    return json.dumps(program, sort_keys=True, separators=(",", ":"))


def const_shapes(program: list[dict]) -> list[tuple[int, ...]]:
    """The shapes of the inline constants: they take part in the output's broadcast shape."""
    return [tuple(a["shape"]) for step in program for a in step["args"]
            if isinstance(a, dict) and "const" in a]


def used_inputs(program: list[dict]) -> list[int]:
    return sorted({a["input"] for step in program for a in step["args"] if isinstance(a, dict) and "input" in a})


def first_dtype(program: list[dict], input_dtypes: Sequence[torch.dtype]) -> torch.dtype:
    """The chain's dtype: its first step's first operand's (each op keeps it, see elementwise_chain)."""
    arg = program[0]["args"][0]
    if "input" in arg:
        return input_dtypes[arg["input"]]
    return FLOAT_NAMES.get(arg["dtype"], torch.float64)


def kernel_source(name: str, program: list[dict], kinds: dict[int, str], chain_dtype: torch.dtype,
                  out_dtype: torch.dtype, wide_offsets: bool) -> str:
    """The Triton source of a kernel computing `program`. `kinds[i]` is the index form of layer
    input i (only inputs the program reads); `wide_offsets` uses 64-bit offsets (> 2**31 elements)."""
    params = ["out_ptr"]
    lines: list[str] = []
    for i in sorted(kinds):
        kind = kinds[i]
        params.append(f"in{i}_ptr")
        if kind == "full":
            index = "offs"
        elif kind == "scalar":
            index = "offs * 0"  # one element, read by every lane (it stays in cache)
        elif kind == "last":
            params.append(f"in{i}_span")
            index = f"offs % in{i}_span"
        elif kind == "mid":
            params += [f"in{i}_inner", f"in{i}_span"]
            index = f"(offs // in{i}_inner) % in{i}_span"
        else:
            raise ValueError(f"unknown operand kind '{kind}'")
        lines.append(f"    x{i} = tl.load(in{i}_ptr + {index}, mask=mask).to(tl.float32)")
    params += ["n", "BLOCK: tl.constexpr"]
    start = "tl.program_id(0).to(tl.int64) * BLOCK" if wide_offsets else "tl.program_id(0) * BLOCK"
    head = [f"def {name}({', '.join(params)}):",
            f"    offs = {start} + tl.arange(0, BLOCK)",
            "    mask = offs < n"]
    round_to = TRITON_DTYPES[chain_dtype] if chain_dtype != torch.float32 else None
    body: list[str] = []
    for k, step in enumerate(program):
        exprs: list[Optional[str]] = []
        consts: list[Optional[float]] = []
        for arg in step["args"]:
            if arg is None:
                exprs.append(None)
                consts.append(None)
            elif "prev" in arg:
                exprs.append("v")
                consts.append(None)
            elif "input" in arg:
                exprs.append(f"x{arg['input']}")
                consts.append(None)
            else:
                value = float(arg["const"])
                if round_to is not None:
                    # The constant as the layer saw it: stored in the chain's dtype.
                    value = torch.tensor(value, dtype=chain_dtype).item()
                exprs.append(_f(value))
                consts.append(value)
        body.append(f"    v = {STEP_EXPRESSIONS[step['op']](exprs, consts, step.get('attrs', {}))}")
        if round_to is not None:
            body.append(f"    v = v.to({round_to}).to(tl.float32)")
    tail = [f"    tl.store(out_ptr + offs, v.to({TRITON_DTYPES[out_dtype]}), mask=mask)"]
    return "\n".join(head + lines + body + tail) + "\n"


@dataclass(frozen=True)
class OperandIndex:
    """How the kernel indexes one operand: its kind and the integers the kind takes."""

    kind: str
    inner: int = 1
    span: int = 1

    def args(self) -> tuple[int, ...]:
        return {"full": (), "scalar": (), "last": (self.span,), "mid": (self.inner, self.span)}[self.kind]


def classify(view: torch.Tensor, out_shape: Sequence[int]) -> Optional[OperandIndex]:
    """The index form of `view` (already aligned to the output's rank and memory order) over an
    output of `out_shape` in row-major order, or None when it needs more than one run of dims or
    its memory is not row-major over that run."""
    shape = tuple(view.shape)
    varying = [d for d in range(len(shape)) if shape[d] != 1]
    total = math.prod(out_shape)
    if not varying:
        return OperandIndex("scalar")
    lo, hi = varying[0], varying[-1]
    if any(shape[d] != out_shape[d] for d in range(lo, hi + 1)):
        return None
    expected = 1
    for d in range(hi, lo - 1, -1):
        if shape[d] != 1 and view.stride(d) != expected:
            return None
        expected *= shape[d]
    inner = math.prod(out_shape[hi + 1:])
    span = math.prod(out_shape[lo:hi + 1])
    if span == total:
        return OperandIndex("full")
    return OperandIndex("last", 1, span) if inner == 1 else OperandIndex("mid", inner, span)


def memory_order(t: torch.Tensor) -> Optional[tuple[int, ...]]:
    """The dim order in which `t` is row-major (identity for contiguous, NHWC for channels_last)."""
    if t.is_contiguous():
        return tuple(range(t.dim()))
    if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last):
        return (0, 2, 3, 1)
    if t.dim() == 5 and t.is_contiguous(memory_format=torch.channels_last_3d):
        return (0, 2, 3, 4, 1)
    return None


def aligned(t: torch.Tensor, rank: int, order: Sequence[int]) -> torch.Tensor:
    """`t` viewed with the output's rank (leading 1s) and its dims permuted into `order`."""
    if t.dim() < rank:
        t = t.reshape((1,) * (rank - t.dim()) + tuple(t.shape))
    return t.permute(*order)


def static_block_reason(out_shape: Optional[Sequence[Any]], in_shape: Optional[Sequence[Any]], which: str
                        ) -> Optional[str]:
    """Build-time check of an operand's broadcast form on (possibly symbolic) shapes: a reason
    when it surely needs more than one run of varying dims; None when it fits or is unknown."""
    if out_shape is None or in_shape is None or len(in_shape) > len(out_shape):
        return None
    padded = (1,) * (len(out_shape) - len(in_shape)) + tuple(in_shape)
    if any(d is None or not isinstance(d, (int, str)) for d in padded):
        return None
    varying = [d for d in range(len(padded)) if padded[d] != 1]
    if not varying:
        return None
    lo, hi = varying[0], varying[-1]
    for d in range(lo, hi + 1):
        if padded[d] != out_shape[d] and out_shape[d] is not None:
            return (f"{which} of shape {list(in_shape)} broadcasts over the output {list(out_shape)} along "
                    f"more than one run of dims (the kernel indexes one run: a full, scalar, per-channel "
                    f"or last-dims operand)")
    return None
