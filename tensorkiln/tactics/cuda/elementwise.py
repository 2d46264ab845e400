""""triton" tactic for tensorkiln::ElementwiseChain: the whole program as one generated kernel.

One read of each operand and one write of the result, instead of one pass over memory (and one
fresh tensor) per step. The kernel is generated from the program (chain_codegen) and compiled
once per (program, operand index forms, dtypes); launches reuse it.

Operands are read in the output's memory order. When the widest operand is channels_last (the
output of an NHWC convolution), the output is channels_last too and per-channel vectors become
last-dim vectors: nothing is converted. An operand pattern the kernel cannot index under that
order is retried in plain row-major order (copying non-contiguous operands); one it cannot index
either way (possible only where the shapes were symbolic at build time) runs the op's reference.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Optional

import torch

from ...ir import Node
from ...ops import get_op
from ...ops.elementwise_chain import DOMAIN as CHAIN_DOMAIN, OP_TYPE as CHAIN_OP
from ._common import FAST_FLOATS, inputs_dtype_reason, register, triton_missing
from .chain_codegen import (TRITON_DTYPES, OperandIndex, aligned, classify, const_shapes, first_dtype, kernel_source,
                            memory_order, program_key, program_reason, static_block_reason, used_inputs)

_BLOCK = 1024
_WARPS = 4
# The memory format of an output written in a dim order chain_codegen.memory_order gives (other than row-major).
_FORMATS = {(0, 2, 3, 1): torch.channels_last, (0, 2, 3, 4, 1): torch.channels_last_3d}


class _Program:
    """What is known about one program regardless of its operands: key, inputs read, constants."""

    def __init__(self, program: list[dict]):
        self.program = program
        self.key = program_key(program)
        self.digest = hashlib.sha1(self.key.encode()).hexdigest()[:16]
        self.inputs = used_inputs(program)
        self.const_shapes = const_shapes(program)


class _Launch:
    """Everything one call needs once the operands' shapes, strides and dtypes are known."""

    def __init__(self, kernel: Any, out_shape: tuple[int, ...], order: tuple[int, ...], dtype: torch.dtype,
                 copies: dict[int, bool], indices: dict[int, OperandIndex]):
        self.kernel = kernel
        self.out_shape = out_shape
        self.order = order
        self.memory_format = torch.contiguous_format if order == tuple(range(len(order))) else _FORMATS[order]
        self.dtype = dtype
        self.copies = copies
        self.indices = indices
        self.numel = math.prod(out_shape)
        self.grid = (max(1, -(-self.numel // _BLOCK)),)


class TritonChain:
    def __init__(self) -> None:
        # id(program list) -> (the list, its analysis): programs live in the layer's attrs.
        self._programs: dict[int, tuple[list, _Program]] = {}
        # (program key, kinds, dtypes) -> compiled kernel.
        self._kernels: dict[tuple, Any] = {}
        # (id(program), operand signature) -> launch plan.
        self._launches: dict[tuple, Optional[_Launch]] = {}

    def supports(self, node: Node) -> Optional[str]:
        missing = triton_missing()
        if missing:
            return missing
        program = node.attrs.get("program")
        reason = program_reason(program)
        if reason:
            return reason
        reason = inputs_dtype_reason(node)
        if reason:
            return reason
        out = node.outputs[0].type if node.outputs else None
        if out is not None and out.dtype is not None and out.dtype not in FAST_FLOATS:
            return f"{out.dtype.short} output (the kernel computes float32/float16/bfloat16 chains)"
        out_shape = None if out is None or out.shape is None else tuple(out.shape)
        for i, v in enumerate(node.inputs):
            if v is not None:
                reason = static_block_reason(out_shape, v.shape, f"input {i}")
                if reason:
                    return reason
        return None

    def _program(self, program: list[dict]) -> _Program:
        entry = self._programs.get(id(program))
        if entry is not None and entry[0] is program:
            return entry[1]
        info = _Program(program)
        self._programs[id(program)] = (program, info)
        return info

    def _kernel(self, info: _Program, indices: dict[int, OperandIndex], in_dtypes: tuple, dtype: torch.dtype,
                wide: bool) -> Any:
        kinds = {i: indices[i].kind for i in info.inputs}
        key = (info.key, tuple(sorted(kinds.items())), in_dtypes, dtype, wide)
        kernel = self._kernels.get(key)
        if kernel is None:
            from . import triton_kernels  # lazily: triton exists only where CUDA tactics run
            name = f"chain_{info.digest}_{len(self._kernels)}"
            kernel = triton_kernels.compile_chain(name, kernel_source(name, info.program, kinds, dtype, dtype, wide))
            self._kernels[key] = kernel
        return kernel

    def _plan(self, info: _Program, tensors: dict[int, torch.Tensor], in_dtypes: tuple) -> Optional[_Launch]:
        out_shape = tuple(torch.broadcast_shapes(*(t.shape for t in tensors.values()), *info.const_shapes))
        rank = len(out_shape)
        dtype = first_dtype(info.program, in_dtypes)
        if dtype not in TRITON_DTYPES:
            return None
        # Memory order: that of the first operand as large as the output (channels_last stays so).
        orders = []
        for t in tensors.values():
            if tuple(t.shape) == out_shape:
                order = memory_order(t)
                if order is not None and order != tuple(range(rank)):
                    orders.append(order)
                break
        orders.append(tuple(range(rank)))
        for order in orders:
            permuted_out = tuple(out_shape[d] for d in order)
            indices: dict[int, OperandIndex] = {}
            copies: dict[int, bool] = {}
            for i, t in tensors.items():
                view = aligned(t, rank, order)
                index = classify(view, permuted_out)
                copies[i] = False
                if index is None:
                    # A block that is not row-major in memory: index a row-major copy instead.
                    index = classify(view.contiguous(), permuted_out)
                    copies[i] = True
                if index is None:
                    break
                indices[i] = index
            else:
                numel = math.prod(out_shape)
                kernel = self._kernel(info, indices, in_dtypes, dtype, numel >= 2 ** 31 - _BLOCK)
                return _Launch(kernel, out_shape, order, dtype, copies, indices)
        return None

    def run(self, ctx: Any, inputs: list[Optional[torch.Tensor]], attrs: dict[str, Any]) -> torch.Tensor:
        program = attrs["program"]
        info = self._program(program)
        tensors = {i: inputs[i] for i in info.inputs}
        in_dtypes = tuple(t.dtype for t in inputs)
        signature = (id(program), tuple((tuple(t.shape), t.stride(), t.dtype) for t in tensors.values()))
        if signature in self._launches:
            launch = self._launches[signature]
        else:
            launch = self._launches[signature] = self._plan(info, tensors, in_dtypes)
        if launch is None:
            # An operand pattern the kernel does not index (symbolic shapes at build time): rare, and the
            # reference's output is its own tensor, not the arena's.
            return get_op(CHAIN_OP, CHAIN_DOMAIN).reference(ctx, inputs, attrs)
        rank = len(launch.out_shape)
        y = ctx.output(0, launch.out_shape, launch.dtype, launch.memory_format)
        if launch.numel == 0:
            return y
        # The kernel writes element i of the output in its memory order at offset i: row-major in that order.
        args: list[Any] = [y.permute(*launch.order)]
        for i in sorted(tensors):
            view = aligned(tensors[i], rank, launch.order)
            args.append(view.contiguous() if launch.copies[i] else view)
            args.extend(launch.indices[i].args())
        launch.kernel[launch.grid](*args, launch.numel, BLOCK=_BLOCK, num_warps=_WARPS)
        return y


def _register() -> None:
    chain = TritonChain()
    register("triton", CHAIN_OP, chain.run, chain.supports, domain=CHAIN_DOMAIN, source="triton", arena_outputs=True)


_register()

__all__ = ["TritonChain"]
