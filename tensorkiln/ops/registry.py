"""The op registry: one `Op` object per (domain, op type).

An Op holds everything tensorkiln knows about one operator: its attributes and
defaults, how opset versions differ (branches in `normalize`/`reference`), shape and
dtype inference, and the reference implementation in torch, which runs on any device
and is what every backend's "reference" tactic calls.

Register with the class decorator ``@register`` (one op per file) or by calling
``register(instance)`` from a family table (unary/binary elementwise, reductions).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Optional, Sequence, Union

import numpy as np
import torch

from ..ir import DType, Graph, Node, Shape, TensorType, Value
from ..ir.shape import Dim

REQUIRED = object()  # marks an attribute with no default

Tensor = torch.Tensor


@dataclass
class InferContext:
    """What shape/dtype inference of one node can see."""

    node: Node
    input_types: list[Optional[TensorType]]
    attrs: dict[str, Any]
    # Infers a subgraph's output types given its input types (set by `infer_graph_types`).
    infer_subgraph: Optional[Callable[[Graph, list[Optional[TensorType]]], list[Optional[TensorType]]]] = None

    @property
    def opset(self) -> int:
        return self.node.opset

    @property
    def num_inputs(self) -> int:
        return len(self.input_types)

    @property
    def num_outputs(self) -> int:
        return len(self.node.outputs)

    def has_input(self, i: int) -> bool:
        return i < len(self.node.inputs) and self.node.inputs[i] is not None

    def type(self, i: int) -> Optional[TensorType]:
        return self.input_types[i] if i < len(self.input_types) else None

    def dtype(self, i: int) -> Optional[DType]:
        t = self.type(i)
        return None if t is None else t.dtype

    def shape(self, i: int) -> Shape:
        t = self.type(i)
        return None if t is None else t.shape

    def rank(self, i: int) -> Optional[int]:
        s = self.shape(i)
        return None if s is None else len(s)

    def const(self, i: int) -> Optional[np.ndarray]:
        """The value of input i if it is a constant known at build time."""
        if not self.has_input(i):
            return None
        return self.node.inputs[i].const

    def const_ints(self, i: int) -> Optional[list[int]]:
        c = self.const(i)
        return None if c is None else [int(x) for x in np.asarray(c).reshape(-1)]


class RunContext:
    """What a reference implementation can see at run time besides its inputs.

    `run_subgraph` executes a subgraph (If/Loop/Scan bodies) with the given inputs and
    returns its outputs; values the subgraph captures from enclosing graphs are resolved
    by the executor.
    """

    def __init__(self, device: torch.device, run_subgraph: Callable[[Graph, Sequence[Optional[Tensor]]], list[Tensor]]):
        self.device = device
        self.run_subgraph = run_subgraph
        # Where the current layer's outputs go, set by the runtime before each layer: one entry
        # per output, a function (shape, dtype, memory_format) -> a tensor in the execution
        # context's activation arena, or None where that output is not planned there (or too
        # large for its place). None: no arena (every output is newly allocated).
        self.places: Optional[Sequence[Optional[Callable[..., Optional[Tensor]]]]] = None

    def output(self, index: int, shape: Sequence[int], dtype: torch.dtype,
               memory_format: torch.memory_format = torch.contiguous_format) -> Tensor:
        """The tensor a tactic writes the layer's output `index` into: its place in the execution
        context's activation arena (planned by the builder, reused by other layers once this value
        is dead), or newly allocated where there is none. Ask once per output and layer call."""
        places = self.places
        if places is not None and index < len(places):
            place = places[index]
            if place is not None:
                tensor = place(tuple(shape), dtype, memory_format)
                if tensor is not None:
                    return tensor
        return torch.empty(tuple(shape), dtype=dtype, device=self.device, memory_format=memory_format)

    def output_like(self, index: int, like: Tensor, dtype: Optional[torch.dtype] = None) -> Tensor:
        """`output` shaped as `like`, in its layout where that is channels_last (as torch.empty_like
        keeps it), else row-major."""
        channels_last = like.dim() == 4 and not like.is_contiguous() and like.is_contiguous(
            memory_format=torch.channels_last)
        return self.output(index, like.shape, like.dtype if dtype is None else dtype,
                           torch.channels_last if channels_last else torch.contiguous_format)


class Op:
    """Base class of op definitions. Subclasses set `name` (the ONNX op type)."""

    name: ClassVar[str] = ""
    domain: ClassVar[str] = ""
    # attribute name -> default (REQUIRED if none)
    attrs: ClassVar[dict[str, Any]] = {}
    # Oldest opset this definition handles; older models are refused with a reason.
    since_opset: ClassVar[int] = 1
    # False for ops whose output is not a function of their inputs (random ops): constant
    # folding must leave them alone.
    deterministic: ClassVar[bool] = True
    # Inputs the op reads as host values (a shape, axes, pads, k): a constant there is
    # handed over as a CPU tensor on every backend, so reading it costs no device sync.
    host_inputs: ClassVar[tuple[int, ...]] = ()
    # True for ops whose every implementation accumulates in float32 whatever the I/O dtype
    # (norms, softmax, sum-like reductions): they may take and give fp16/bf16 tensors safely.
    accumulates_in_fp32: ClassVar[bool] = False

    def normalize(self, attrs: dict[str, Any], opset: int) -> dict[str, Any]:
        """Fill defaults; subclasses adjust for opset differences. Returns a new dict."""
        out = dict(attrs)
        for k, default in self.attrs.items():
            if k not in out:
                if default is REQUIRED:
                    raise ValueError(f"missing required attribute '{k}'")
                out[k] = default
        return out

    def check(self, node: Node) -> Optional[str]:
        """A reason this node cannot be run (unsupported attribute value, dtype), or None."""
        return None

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        """Output types; None for an output whose type cannot be known before running."""
        return [None] * ctx.num_outputs

    def reference(self, ctx: RunContext, inputs: list[Optional[Tensor]], attrs: dict[str, Any]) -> Union[Tensor, Sequence[Tensor]]:
        raise NotImplementedError

    def index_inputs(self, node: Node) -> list[tuple[Value, Dim]]:
        """(indices, size of the axis they index) for each lookup the layer makes: index values
        outside [-size, size) are invalid (the tuner makes up its integer inputs below them)."""
        return []


@dataclass
class OpRegistry:
    ops: dict[tuple[str, str], Op] = field(default_factory=dict)

    def add(self, op: Op) -> Op:
        key = (_canon_domain(op.domain), op.name)
        if key in self.ops:
            raise RuntimeError(f"op {key} registered twice")
        self.ops[key] = op
        return op

    def get(self, op_type: str, domain: str = "") -> Optional[Op]:
        return self.ops.get((_canon_domain(domain), op_type))


def _canon_domain(domain: str) -> str:
    return "" if domain in ("", "ai.onnx") else domain


REGISTRY = OpRegistry()


def register(op: Union[type, Op]) -> Any:
    """Class decorator (or call with an instance) adding an op to the registry."""
    if isinstance(op, type):
        REGISTRY.add(op())
        return op
    return REGISTRY.add(op)


def get_op(op_type: str, domain: str = "") -> Optional[Op]:
    return REGISTRY.get(op_type, domain)


def all_ops() -> list[Op]:
    return list(REGISTRY.ops.values())


# ---- helpers shared by op definitions -------------------------------------------------

def same_as_input(ctx: InferContext, i: int = 0) -> list[Optional[TensorType]]:
    return [ctx.type(i)] + [None] * (ctx.num_outputs - 1)


def normalize_axis(axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        raise ValueError(f"axis {axis} is out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


def as_tuple(x: Tensor) -> list[int]:
    """A 1-D int tensor (shape, axes, pads...) as Python ints."""
    return [int(v) for v in x.reshape(-1).tolist()]
