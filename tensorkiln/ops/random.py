"""Random generators: RandomNormal, RandomUniform, RandomNormalLike, RandomUniformLike,
Multinomial, Bernoulli.

With a `seed` attribute every run draws from a torch.Generator seeded with int(seed),
so a node gives the same values on every run (on a given device); without one they
draw from torch's global generator. Values follow torch's generators, so they are not
the numbers numpy or onnxruntime would draw for the same seed.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from ..ir import DType, Node, TensorType
from .registry import REQUIRED, InferContext, Op, register

_FLOAT_OUTPUTS = {DType.FLOAT32, DType.FLOAT16, DType.FLOAT64, DType.BFLOAT16}
_BERNOULLI_OUTPUTS = _FLOAT_OUTPUTS | {DType.BOOL, DType.UINT8, DType.UINT16, DType.UINT32, DType.UINT64,
                                       DType.INT8, DType.INT16, DType.INT32, DType.INT64}


def generator_for(seed: Optional[float], device: torch.device) -> Optional[torch.Generator]:
    if seed is None:
        return None
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen


def _sample_dtype(dtype: torch.dtype) -> torch.dtype:
    # Draw in float32 (float64 for double outputs) and round to narrower float types afterwards.
    return torch.float64 if dtype == torch.float64 else torch.float32


def _output_dtype(attrs: dict[str, Any], like: Optional[DType]) -> Optional[DType]:
    code = attrs.get("dtype")
    return DType(code) if code is not None else like


def _check_dtype(node: Node, allowed: set[DType], like_input: bool) -> Optional[str]:
    code = node.attrs.get("dtype")
    if code is None:
        if like_input and node.inputs[0] is not None and node.inputs[0].dtype is not None:
            dtype = node.inputs[0].dtype
        else:
            return None
    else:
        try:
            dtype = DType(code)
        except ValueError:
            return f"dtype {code} is not an ONNX tensor type"
    if dtype not in allowed:
        return f"output dtype {dtype.short} is not supported (allowed: {', '.join(sorted(d.short for d in allowed))})"
    return None


class _Distribution(Op):
    """Normal or uniform samples of a shape given by attribute (or by the input, for *Like)."""

    deterministic = False

    def __init__(self, name: str, params: dict[str, Any], like: bool):
        self.name = name
        self.like = like
        self.attrs = {"dtype": None if like else DType.FLOAT32.value, "seed": None, **params}
        if not like:
            self.attrs["shape"] = REQUIRED

    def check(self, node: Node) -> Optional[str]:
        return _check_dtype(node, _FLOAT_OUTPUTS, like_input=self.like)

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        if not self.like:
            return [TensorType(DType(ctx.attrs["dtype"]), tuple(int(d) for d in ctx.attrs["shape"]))]
        t = ctx.type(0)
        dtype = _output_dtype(ctx.attrs, None if t is None else t.dtype)
        return [None if dtype is None else TensorType(dtype, None if t is None else t.shape)]

    def reference(self, ctx, inputs, attrs):
        if self.like:
            like = inputs[0]
            shape, device = tuple(like.shape), like.device
            dtype = DType(attrs["dtype"]).torch if attrs["dtype"] is not None else like.dtype
        else:
            shape, device = tuple(int(d) for d in attrs["shape"]), ctx.device
            dtype = DType(attrs["dtype"]).torch
        gen = generator_for(attrs["seed"], device)
        if "mean" in attrs:
            sample = torch.randn(shape, generator=gen, device=device, dtype=_sample_dtype(dtype))
            sample = sample * attrs["scale"] + attrs["mean"]
        else:
            sample = torch.rand(shape, generator=gen, device=device, dtype=_sample_dtype(dtype))
            sample = sample * (attrs["high"] - attrs["low"]) + attrs["low"]
        return sample.to(dtype)


_NORMAL = {"mean": 0.0, "scale": 1.0}
_UNIFORM = {"high": 1.0, "low": 0.0}
for _op in (_Distribution("RandomNormal", _NORMAL, like=False), _Distribution("RandomUniform", _UNIFORM, like=False),
            _Distribution("RandomNormalLike", _NORMAL, like=True),
            _Distribution("RandomUniformLike", _UNIFORM, like=True)):
    register(_op)


@register
class Bernoulli(Op):
    """1 with probability p (the input), else 0, per element."""

    name = "Bernoulli"
    deterministic = False
    since_opset = 15
    attrs = {"dtype": None, "seed": None}

    def check(self, node: Node) -> Optional[str]:
        return _check_dtype(node, _BERNOULLI_OUTPUTS, like_input=True)

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        t = ctx.type(0)
        dtype = _output_dtype(ctx.attrs, None if t is None else t.dtype)
        return [None if dtype is None else TensorType(dtype, None if t is None else t.shape)]

    def reference(self, ctx, inputs, attrs):
        p = inputs[0]
        dtype = DType(attrs["dtype"]).torch if attrs["dtype"] is not None else p.dtype
        gen = generator_for(attrs["seed"], p.device)
        probs = p.to(_sample_dtype(p.dtype))
        return torch.bernoulli(probs, generator=gen).to(dtype)


@register
class Multinomial(Op):
    """`sample_size` class indices per batch row, drawn (with replacement) from softmax(input)."""

    name = "Multinomial"
    deterministic = False
    since_opset = 7
    attrs = {"dtype": DType.INT32.value, "sample_size": 1, "seed": None}

    def check(self, node: Node) -> Optional[str]:
        if node.attrs["dtype"] not in (DType.INT32.value, DType.INT64.value):
            return f"dtype {node.attrs['dtype']} must be int32 (6) or int64 (7)"
        x = node.inputs[0]
        if x is not None and x.shape is not None and len(x.shape) != 2:
            return f"input must be [batch, classes], got rank {len(x.shape)}"
        return None

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        s = ctx.shape(0)
        batch = s[0] if s else None
        return [TensorType(DType(ctx.attrs["dtype"]), (batch, int(ctx.attrs["sample_size"])))]

    def reference(self, ctx, inputs, attrs):
        logits = inputs[0]
        gen = generator_for(attrs["seed"], logits.device)
        probs = torch.softmax(logits.to(_sample_dtype(logits.dtype)), dim=1)
        samples = torch.multinomial(probs, int(attrs["sample_size"]), replacement=True, generator=gen)
        return samples.to(DType(attrs["dtype"]).torch)
