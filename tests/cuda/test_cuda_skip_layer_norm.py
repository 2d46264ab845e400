"""The "triton" tactic of tensorkiln::SkipLayerNormalization against the reference tactic, at each
precision's tolerance (running a tactic with test_cuda_tactics.run: the supports() check and the
no-writes-to-inputs check)."""

from __future__ import annotations

from typing import Optional, Sequence

import pytest
import torch

from tensorkiln.ir import DType, Node, TensorType, Value
from tensorkiln.ops import get_op
from tensorkiln.ops.infer import infer_node
from tensorkiln.tactics import candidates, find_tactic
from tensorkiln.testing.tolerances import assert_close
from test_cuda_tactics import run  # pytest puts this folder on sys.path (no package: rootdir imports)

DTYPES = {"fp32": DType.FLOAT32, "fp16": DType.FLOAT16, "bf16": DType.BFLOAT16}
DEVICE = "cuda"
DOMAIN = "tensorkiln"
OP = "SkipLayerNormalization"
cuda = pytest.mark.cuda


def make_node(shapes: Sequence[Optional[tuple]], dtype: DType, attrs: Optional[dict] = None, outputs: int = 1) -> Node:
    """A layer whose inputs (x, skip, gamma, beta) have these shapes (None: absent beta)."""
    op = get_op(OP, DOMAIN)
    values = [None if s is None else Value(f"in{i}", TensorType(dtype, tuple(s))) for i, s in enumerate(shapes)]
    while values[-1] is None:
        values.pop()
    attrs = dict(attrs or {}, sum_output=int(outputs > 1))
    node = Node(OP, values, [Value(f"out{k}") for k in range(outputs)], op.normalize(attrs, 1), name="test_skip_ln",
                domain=DOMAIN, opset=1)
    infer_node(node)
    assert op.check(node) is None
    return node


def random_inputs(node: Node, seed: int = 0) -> list[torch.Tensor]:
    """x with a mean and spread away from 0/1 (so the statistics matter), skip, gamma near 1, small beta."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    scales, offsets = [3.0, 1.0, 0.2, 0.1], [0.5, 0.0, 1.0, 0.0]
    return [(torch.randn(tuple(v.shape), generator=gen) * scales[i] + offsets[i]).to(DEVICE, v.dtype.torch)
            for i, v in enumerate(node.inputs)]


def check_against_reference(node: Node, inputs: list[torch.Tensor], precision: str) -> list[torch.Tensor]:
    expected = run(node, "reference", inputs)
    actual = run(node, "triton", inputs)
    assert len(actual) == len(expected) == len(node.outputs)
    for k, (a, e) in enumerate(zip(actual, expected)):
        assert a.dtype == e.dtype and tuple(a.shape) == tuple(e.shape), (a.dtype, e.dtype, a.shape, e.shape)
        assert_close(a.float().cpu().numpy(), e.float().cpu().numpy(), precision, f"triton output {k}")
    return actual


CASES = [
    # (x shape, skip shape, axis)
    ((1, 768), (1, 768), -1),               # one row
    ((3, 1000), (3, 1000), -1),             # non-power-of-2 N, 3 rows
    ((2, 64, 768), (64, 768), -1),          # skip [S, D] over [B, S, D]
    ((64, 128, 768), (64, 128, 768), -1),   # BERT-base at batch 64: 8192 x 768
    ((128, 64), (1, 64), -1),               # 128 short rows, several per program, one skip row for all
    ((4, 8192), (4, 8192), -1),             # the widest row one block takes
    ((5, 3, 64), (3, 64), -2),              # normalized over [3, 64]
]


@cuda
@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("outputs", [1, 2])
@pytest.mark.parametrize("has_beta", [True, False])
def test_triton_matches_reference(dtype, case, outputs, has_beta):
    x, skip, axis = CASES[case]
    normalized = x[axis:]
    node = make_node([x, skip, normalized, normalized if has_beta else None], DTYPES[dtype],
                     {"axis": axis, "epsilon": 1e-12}, outputs)
    check_against_reference(node, random_inputs(node, seed=case), dtype)


@cuda
def test_triton_takes_non_contiguous_x_and_broadcast_gamma():
    node = make_node([(8, 4, 96), (8, 4, 96), (96,), (96,)], DType.FLOAT16, {"axis": -2}, outputs=2)
    x, skip, gamma, beta = random_inputs(node, seed=3)
    strided = x.transpose(0, 1).contiguous().transpose(0, 1)  # same values, [4, 8, 96] memory
    assert not strided.is_contiguous()
    check_against_reference(node, [strided, skip, gamma, beta], "fp16")


@cuda
def test_triton_falls_back_to_reference_for_other_broadcasts():
    # Built for a row-broadcast skip; at run time the skip repeats inside a row (symbolic at build).
    node = make_node([(4, 6, 32), (6, 32), (32,)], DType.FLOAT32, outputs=2)
    x, _, gamma = random_inputs(node)
    skip = torch.randn(4, 1, 32, device=DEVICE)
    expected = run(node, "reference", [x, skip, gamma])
    actual = run(node, "triton", [x, skip, gamma])
    for a, e in zip(actual, expected):
        assert_close(a.cpu().numpy(), e.cpu().numpy(), "fp32")


@cuda
def test_triton_supports_reasons():
    tactic = find_tactic("cuda", OP, DOMAIN, "triton")
    assert "float64" in tactic.supports(make_node([(4, 8), (4, 8), (8,)], DType.FLOAT64))
    assert "stash_type" in tactic.supports(make_node([(4, 8), (4, 8), (8,)], DType.FLOAT16, {"stash_type": 10}))
    assert "exceed" in tactic.supports(make_node([(2, 9000), (2, 9000), (9000,)], DType.FLOAT16))
    assert "inside a row" in tactic.supports(make_node([(2, 4, 8), (2, 1, 8), (8,)], DType.FLOAT16))
    assert "whole rows" in tactic.supports(make_node([(2, 4, 8), (8,), (4, 8)], DType.FLOAT16, {"axis": 1}))
    assert "not static" in tactic.supports(make_node([("B", "D"), ("B", "D"), ("D",)], DType.FLOAT16))
    offered = {t.name: reason for t, reason in candidates(make_node([(2, 768), (2, 768), (768,)], DType.FLOAT16),
                                                          "cuda")}
    assert offered["triton"] is None and offered["reference"] is None
