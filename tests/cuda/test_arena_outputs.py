"""CUDA tactics registered with `arena_outputs` write their outputs into the tensors RunContext.output
hands them (the runtime's activation arena): run with places that carve each requested output out of
one preallocated buffer, every output lies in the place asked for it, each place is asked for at most
once and used for nothing else, and the results are those of the same tactic without places.

A test checks every such tactic is covered here, so a new one cannot skip these checks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import pytest
import torch

import test_cuda_embed_layer_norm as embed_ln  # this folder is on sys.path (rootdir imports)
import test_cuda_skip_layer_norm as skip_ln
from tensorkiln.ir import DType, Node
from tensorkiln.tactics import find_tactic
from tensorkiln.tactics.cuda.cublaslt_api import MAX_ALGORITHMS
from tensorkiln.tactics.registry import _EXTRA
from test_cuda_tactics import (DEVICE, PREV, X0, X1, X2, _ctx, chain_node, chain_programs, make_node, mask_inputs,
                               projected_inputs, projected_node, random_inputs, sdpa_node, step, with_constant_weight)

cuda = pytest.mark.cuda
FP16, FP32 = DType.FLOAT16, DType.FLOAT32
FUSED = "tensorkiln"
# The runtime's arena places its buffers at multiples of 256 bytes (planner/arena.py ALIGNMENT).
ALIGNMENT = 256


# -- an arena that records what the tactic asks of it ------------------------------------------

@dataclass(frozen=True)
class Request:
    index: int
    shape: tuple[int, ...]
    dtype: torch.dtype
    memory_format: torch.memory_format
    start: int  # byte offset in the buffer
    nbytes: int


class RecordingArena:
    """RunContext.places for a layer's outputs: each request gets a fresh 256-byte aligned region of one
    byte buffer, filled with 0xFF (NaN in every float dtype) so elements a kernel leaves unwritten show."""

    def __init__(self, outputs: int, nbytes: int = 1 << 24):
        self.buffer = torch.full((nbytes,), 0xFF, dtype=torch.uint8, device=DEVICE)
        self.cursor = 0
        self.requests: list[Request] = []
        self.places = [self._place(k) for k in range(outputs)]

    def _place(self, index: int) -> Callable[..., Optional[torch.Tensor]]:
        def place(shape: tuple, dtype: torch.dtype, memory_format: torch.memory_format) -> torch.Tensor:
            shape = tuple(int(d) for d in shape)
            nbytes = math.prod(shape) * dtype.itemsize
            start, size = self.cursor, -(-max(nbytes, 1) // ALIGNMENT) * ALIGNMENT
            self.cursor += size
            assert self.cursor <= self.buffer.numel(), "the test arena is too small for this case"
            strides = torch.empty(shape, dtype=dtype, device="meta", memory_format=memory_format).stride()
            self.requests.append(Request(index, shape, dtype, memory_format, start, nbytes))
            return self.buffer[start:start + size].view(dtype).as_strided(shape, strides)
        return place

    def holds(self, request: Request, t: torch.Tensor) -> bool:
        """Whether every element of `t` lies in the region handed out for `request`."""
        if t.numel() == 0:
            return True
        lo = t.data_ptr() - self.buffer.data_ptr()
        hi = lo + (sum((n - 1) * s for n, s in zip(t.shape, t.stride())) + 1) * t.element_size()
        return request.start <= lo and hi <= request.start + request.nbytes


def outputs_of(out, node: Node) -> list[torch.Tensor]:
    return [out] if isinstance(out, torch.Tensor) else list(out)[:len(node.outputs)]


def same_layout(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal strides along every dim of more than one element (a size-1 dim's stride is arbitrary)."""
    return all(sa == sb for n, sa, sb in zip(a.shape, a.stride(), b.stride()) if n > 1)


# -- the layers --------------------------------------------------------------------------------

def linear(op_type: str, a: tuple, b: tuple, bias: Optional[tuple] = None, residual: Optional[tuple] = None,
           attrs: Optional[dict] = None, dt: DType = FP16, weight_dt: Optional[DType] = None,
           constant: bool = False, seed: int = 0) -> tuple[Node, list]:
    """A MatMul, Gemm or FusedMatMul layer and its inputs; `constant`: the weight is marked constant."""
    domain, opset = {"FusedMatMul": (FUSED, 1), "Gemm": ("", 13)}.get(op_type, ("", 17))
    specs: list = [(a, dt), (b, weight_dt or dt)]
    if bias is not None or residual is not None:
        specs.append(None if bias is None else (bias, dt))
    if residual is not None:
        specs.append((residual, dt))
    node = make_node(op_type, specs, attrs, domain=domain, opset=opset)
    k = a[0] if (attrs or {}).get("transA") else a[-1]
    inputs = random_inputs(node, [1.0, 1.0 / math.sqrt(k), 0.5, 1.0], seed=seed)
    if constant:
        with_constant_weight(node, inputs[1])
    return node, inputs


def attention(shape: tuple, mask: Optional[tuple], dt: DType = FP16, head_split: bool = False
              ) -> tuple[Node, list]:
    """Self-attention of `shape`; `head_split`: Q/K/V as [B, H, S, D] views of one [B, S, 3 * H * D] product
    (the tactic then writes its output in that [B, S, H, D] order)."""
    node = sdpa_node(shape, shape, shape, dt, mask)
    inputs = mask_inputs(node)
    if head_split:
        fused = torch.cat([t.transpose(1, 2) for t in inputs[:3]], dim=-1)
        d = shape[-1]
        inputs = [fused[..., i * d:(i + 1) * d].transpose(1, 2) for i in range(3)] + inputs[3:]
    return node, inputs


def projected(batch: int, heads: int, mask: Optional[tuple]) -> tuple[Node, list]:
    node = projected_node(batch, 128, heads, 64, FP16, mask=mask)
    return node, projected_inputs(node, seed=batch)


def chain(program: list[dict], shapes: list[tuple], dt: DType = FP16,
          memory_format: Optional[torch.memory_format] = None) -> tuple[Node, list]:
    """An ElementwiseChain; `memory_format` for its full-size operands."""
    node = chain_node(program, [(s, dt) for s in shapes])
    inputs = random_inputs(node, seed=1)
    if memory_format is not None:
        out_shape = max(shapes, key=math.prod)
        inputs = [t.contiguous(memory_format=memory_format) if tuple(t.shape) == out_shape else t for t in inputs]
    return node, inputs


def gather(data: tuple, indices: tuple, dt: DType, index_dt: DType = DType.INT64) -> tuple[Node, list]:
    node = make_node("Gather", [(data, dt), (indices, index_dt)], {"axis": 0}, opset=13)
    gen = torch.Generator().manual_seed(2)
    table = (torch.randn(data, generator=gen) * 100).to(device=DEVICE, dtype=dt.torch)
    idx = torch.randint(-data[0], data[0], indices, generator=gen).to(device=DEVICE, dtype=index_dt.torch)
    return node, [table, idx]


def max_pool(shape: tuple, attrs: dict, channels_last: bool) -> tuple[Node, list]:
    node = make_node("MaxPool", [(shape, FP16)], attrs)
    inputs = random_inputs(node, seed=4)
    if channels_last:
        inputs[0] = inputs[0].contiguous(memory_format=torch.channels_last)
    return node, inputs


def skip_layer_norm(outputs: int) -> tuple[Node, list]:
    node = skip_ln.make_node([(4, 8, 64), (8, 64), (64,), (64,)], FP16, {"epsilon": 1e-12}, outputs)
    return node, skip_ln.random_inputs(node, seed=5)


def embed_layer_norm(ids: tuple, vocabs: tuple, width: int, dense: Optional[tuple], outputs: int
                     ) -> tuple[Node, list]:
    node = embed_ln.make_node(ids, vocabs, width, FP16, dense, outputs=outputs)
    return node, embed_ln.random_inputs(node, seed=6)


@dataclass(frozen=True)
class Case:
    op_type: str
    domain: str
    tactic: str
    label: str
    build: Callable[[], tuple[Node, list]]
    # False for a path documented to return a tensor of its own (the place is then not asked for at all).
    in_arena: bool = True

    @property
    def id(self) -> str:
        return f"{self.op_type}-{self.tactic}-{self.label}"


def _cases() -> list[Case]:
    cases = [
        # cuBLAS through torch's out= forms. A MatMul of one dtype is the reference's own call: another
        # weight dtype makes the "cublas" tactic apply.
        Case("MatMul", "", "cublas", "mm", lambda: linear("MatMul", (2, 16, 96), (96, 48), weight_dt=FP32)),
        Case("MatMul", "", "cublas", "bmm", lambda: linear("MatMul", (3, 16, 32), (3, 32, 8), weight_dt=FP32)),
        Case("MatMul", "", "cublas_nt", "mm", lambda: linear("MatMul", (2, 16, 64), (64, 96), constant=True)),
        Case("Gemm", "", "cublas", "addmm_row_bias",
             lambda: linear("Gemm", (32, 96), (48, 96), (48,), attrs={"transB": 1})),
        Case("Gemm", "", "cublas", "addmm_full_c",
             lambda: linear("Gemm", (32, 96), (96, 48), (32, 48), attrs={"alpha": 0.5, "beta": 2.0}, dt=FP32)),
        Case("Gemm", "", "cublas", "mm_alpha", lambda: linear("Gemm", (96, 32), (96, 48), attrs={"transA": 1,
                                                                                                 "alpha": 3.0})),
        Case("Gemm", "", "cublas_nt", "addmm",
             lambda: linear("Gemm", (32, 64), (64, 48), (48,), attrs={"alpha": 0.5}, constant=True)),
        Case("FusedMatMul", FUSED, "cublas", "lt_relu",
             lambda: linear("FusedMatMul", (2, 16, 64), (64, 96), (96,), attrs={"activation": "Relu"})),
        Case("FusedMatMul", FUSED, "cublas", "baddbmm",
             lambda: linear("FusedMatMul", (4, 16, 32), (4, 32, 24), (24,), attrs={"alpha": 0.5})),
        Case("FusedMatMul", FUSED, "cublas", "addmm_tanh",
             lambda: linear("FusedMatMul", (16, 64), (64, 96), (96,), weight_dt=FP32,
                            attrs={"alpha": 2.0, "beta": 0.5, "activation": "Tanh"})),
        # Gelu returns a new tensor (fused_conv's epilogue table): the product is a temporary, not the output.
        Case("FusedMatMul", FUSED, "cublas", "gelu_new_tensor",
             lambda: linear("FusedMatMul", (2, 16, 64), (64, 96), (96,), (2, 16, 96), weight_dt=FP32,
                            attrs={"activation": "Gelu"}), in_arena=False),
        Case("FusedMatMul", FUSED, "cublas_nt", "lt_gelu_tanh",
             lambda: linear("FusedMatMul", (2, 16, 64), (64, 96), (96,), attrs={"activation": "GeluTanh"},
                            constant=True)),
        Case("FusedMatMul", FUSED, "cublaslt_gelu_tanh", "lt",
             lambda: linear("FusedMatMul", (2, 16, 64), (64, 96), (96,), attrs={"activation": "Gelu"},
                            constant=True)),
        # Triton GEMMs with their epilogue.
        *[Case("FusedMatMul", FUSED, f"triton_gemm_{tile}", "residual_gelu_tanh",
               lambda: linear("FusedMatMul", (3, 5, 96), (96, 64), (64,), (3, 5, 64),
                              attrs={"activation": "GeluTanh"}))
          for tile in ("128x256", "64x128", "16x32")],
        Case("FusedMatMul", FUSED, "triton_tma_128x256", "residual_after_relu",
             lambda: linear("FusedMatMul", (70, 64), (136, 64), (1, 136), (70, 136),
                            attrs={"transB": 1, "activation": "Relu", "residual_after_activation": 1})),
        # Attention.
        Case("ScaledDotProductAttention", FUSED, "math", "bmm_mask_added",
             lambda: attention((2, 4, 32, 64), (2, 1, 1, 32))),
        Case("ScaledDotProductAttention", FUSED, "math", "baddbmm_3d",
             lambda: attention((2, 48, 32), (48, 48), dt=FP32)),
        *[Case("ScaledDotProductAttention", FUSED, tactic, label,
               lambda split=split, shape=shape, mask=mask: attention(shape, mask, head_split=split))
          for tactic in ("triton_m64", "triton_m16", "triton_tma_m128", "triton_tma_m64", "triton_tma_m16",
                         "gluon_tma_m128")
          for label, shape, mask, split in (("bert", (2, 12, 128, 64), (2, 1, 1, 128), False),
                                            ("head_split", (2, 12, 128, 64), (2, 1, 1, 128), True),
                                            ("3d", (2, 48, 32), (48, 48), False))],
        # The Q/K/V projection and attention in one kernel: [B, H, S, D] written in [B, S, H, D] order.
        Case("ProjectedAttention", FUSED, "gluon_qkv_m128", "bert", lambda: projected(3, 2, (3, 1, 1, 128))),
        Case("ProjectedAttention", FUSED, "gluon_qkv_m128", "no_mask", lambda: projected(1, 4, None)),
        # Elementwise chains, in each memory order the kernel writes.
        Case("ElementwiseChain", FUSED, "triton", "row_major",
             lambda: chain(*chain_programs(FP16.short)[1])),
        Case("ElementwiseChain", FUSED, "triton", "rank_grows",
             lambda: chain([step("Mul", X0, X1), step("Relu", PREV)], [(7,), (3, 5, 7)])),
        Case("ElementwiseChain", FUSED, "triton", "channels_last",
             lambda: chain([step("Add", X0, X1), step("Relu", PREV), step("Mul", PREV, X2)],
                           [(2, 16, 9, 9), (1, 16, 1, 1), (2, 16, 9, 9)], memory_format=torch.channels_last)),
        Case("ElementwiseChain", FUSED, "triton", "channels_last_3d",
             lambda: chain([step("Add", X0, X1), step("Relu", PREV)], [(2, 8, 3, 4, 5), (1, 8, 1, 1, 1)],
                           memory_format=torch.channels_last_3d)),
        # Row kernels, lookups and pooling.
        Case("SkipLayerNormalization", FUSED, "triton", "y", lambda: skip_layer_norm(1)),
        Case("SkipLayerNormalization", FUSED, "triton", "y_and_sum", lambda: skip_layer_norm(2)),
        Case("EmbedLayerNormalization", FUSED, "triton", "y_and_sum",
             lambda: embed_layer_norm((2, 16), (50, 16, 4), 64, (16, 64), 2)),
        Case("EmbedLayerNormalization", FUSED, "triton", "y", lambda: embed_layer_norm((3, 7), (50,), 1000, None, 1)),
        Case("Gather", "", "triton", "fp16_rows", lambda: gather((50, 3, 5), (7,), FP16)),
        Case("Gather", "", "triton", "bool_rows", lambda: gather((10, 2000), (3, 4), DType.BOOL, DType.INT32)),
        *[Case("MaxPool", "", "triton", "channels_last" if cl else "nchw",
               lambda cl=cl: max_pool((2, 64, 28, 28), {"kernel_shape": [3, 3], "strides": [2, 2],
                                                        "pads": [1, 1, 1, 1]}, cl))
          for cl in (False, True)],
    ]
    # Every cuBLASLt rank, with the weight as given and kept transposed.
    for layout in ("", "nt_"):
        for rank in range(MAX_ALGORITHMS):
            name = f"cublaslt_{layout}r{rank}"
            cases.append(Case("MatMul", "", name, "mm", lambda: linear("MatMul", (2, 16, 64), (64, 96), constant=True)))
            cases.append(Case("FusedMatMul", FUSED, name, "residual_relu",
                              lambda: linear("FusedMatMul", (32, 64), (64, 96), (96,), (32, 96),
                                             attrs={"activation": "Relu"}, constant=True)))
    return cases


CASES = _cases()


# -- the tests ---------------------------------------------------------------------------------

@cuda
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_outputs_are_written_into_their_places(case: Case):
    node, inputs = case.build()
    tactic = find_tactic("cuda", case.op_type, case.domain, case.tactic)
    assert tactic is not None and tactic.arena_outputs, case.id
    reason = tactic.supports(node)
    if reason is not None and "Hopper" in reason:
        pytest.skip(reason)
    assert reason is None, reason

    ctx = _ctx()
    expected = outputs_of(tactic.run(ctx, inputs, node.attrs), node)
    arena = RecordingArena(len(node.outputs))
    ctx.places = arena.places
    got = outputs_of(tactic.run(ctx, inputs, node.attrs), node)
    torch.cuda.synchronize()

    indices = [r.index for r in arena.requests]
    assert len(indices) == len(set(indices)), f"an output asked for more than once: {arena.requests}"
    for r in arena.requests:
        # A place asked for holds that output: never scratch for something else, never another output's.
        assert r.index < len(got) and arena.holds(r, got[r.index]), f"output {r.index} is not in its place {r}"
    if case.in_arena:
        assert sorted(indices) == list(range(len(got))), f"outputs {sorted(indices)} of {len(got)} asked for"
    assert len(got) == len(expected)
    for k, (g, e) in enumerate(zip(got, expected)):
        assert g.dtype == e.dtype and g.shape == e.shape, (k, g.dtype, e.dtype, g.shape, e.shape)
        assert same_layout(g, e), f"output {k}: strides {g.stride()} in the arena, {e.stride()} without"
        # The same kernels on the same inputs: bit for bit (NaN in the arena's fill would fail it).
        assert torch.equal(g, e), f"output {k} differs from the same tactic's output without places"


@cuda
def test_every_arena_tactic_is_covered():
    # Every CUDA tactic that declares arena_outputs, from the registry itself (no list kept by hand).
    declared = {(t.op_type, t.domain, t.name) for tactics in _EXTRA.values() for t in tactics
                if t.backend == "cuda" and t.arena_outputs}
    covered = {(c.op_type, c.domain, c.tactic) for c in CASES}
    assert not declared - covered, f"arena_outputs tactics without a case here: {sorted(declared - covered)}"
    assert not covered - declared, f"cases for tactics that do not declare arena_outputs: {sorted(covered - declared)}"
