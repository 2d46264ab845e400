"""The "triton" tactic of tensorkiln::EmbedLayerNormalization against the reference tactic, at each
precision's tolerance (running a tactic with test_cuda_tactics.run: the supports() check and the
no-writes-to-inputs check); its supports() reasons."""

from __future__ import annotations

from typing import Optional, Sequence

import pytest
import torch

from tensorkiln.ir import DType, Node, TensorType, Value
from tensorkiln.ops import get_op
from tensorkiln.ops.infer import infer_node
from tensorkiln.tactics import find_tactic
from test_cuda_skip_layer_norm import check_against_reference  # this folder is on sys.path (rootdir imports)
from test_cuda_tactics import run

DTYPES = {"fp32": DType.FLOAT32, "fp16": DType.FLOAT16, "bf16": DType.BFLOAT16}
DEVICE = "cuda"
DOMAIN = "tensorkiln"
OP = "EmbedLayerNormalization"
cuda = pytest.mark.cuda


def make_node(ids_shape: tuple, vocabs: Sequence[int], width: int, dtype: DType, dense: Optional[tuple] = None,
              has_beta: bool = True, outputs: int = 1, ids_dtype: DType = DType.INT64) -> Node:
    """A layer with one lookup per vocabulary size (tables [vocab, width], ids of ids_shape)."""
    op = get_op(OP, DOMAIN)
    f = lambda name, shape: Value(name, TensorType(dtype, tuple(shape)))  # noqa: E731
    values: list[Optional[Value]] = [f("gamma", (width,)), f("beta", (width,)) if has_beta else None,
                                     f("dense", dense) if dense else None]
    for i, vocab in enumerate(vocabs):
        values += [Value(f"ids{i}", TensorType(ids_dtype, ids_shape)), f(f"table{i}", (vocab, width))]
    node = Node(OP, values, [Value(f"out{k}") for k in range(outputs)],
                op.normalize({"epsilon": 1e-12, "sum_output": int(outputs > 1)}, 1), name="test_embed_ln",
                domain=DOMAIN, opset=1)
    infer_node(node)
    assert op.check(node) is None, op.check(node)
    return node


def random_inputs(node: Node, seed: int = 0) -> list[Optional[torch.Tensor]]:
    """Tables with a mean and spread away from 0/1 (so the statistics matter), gamma near 1, small beta;
    ids over the whole table, negative ones included."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    out: list[Optional[torch.Tensor]] = []
    for i, v in enumerate(node.inputs):
        if v is None:
            out.append(None)
        elif v.name.startswith("ids"):
            vocab = node.inputs[i + 1].shape[0]
            out.append(torch.randint(-vocab, vocab, tuple(v.shape), generator=gen).to(DEVICE, v.dtype.torch))
        else:
            scale, offset = {"gamma": (0.2, 1.0), "beta": (0.1, 0.0), "dense": (1.0, 0.0)}.get(v.name, (2.0, 0.3))
            out.append((torch.randn(tuple(v.shape), generator=gen) * scale + offset).to(DEVICE, v.dtype.torch))
    return out


CASES = [
    # (ids shape, vocabularies, width, dense shape)
    ((1, 128), (30522, 2), 768, (1, 128, 768)),   # BERT-base at batch 1, positions folded
    ((64, 128), (30522, 2), 768, (1, 128, 768)),  # BERT-base at batch 64
    ((3, 7), (50,), 1000, None),                  # one lookup, a row width that is no power of two
    ((2, 16), (50, 16, 4), 64, (16, 64)),         # three lookups, dense [S, D] over [B, S, D]
    ((5,), (10, 10), 8192, None),                 # the widest row one block takes
    ((16,), (40,), 32, (1, 32)),                  # one dense row for every output row
]


@cuda
@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("outputs", [1, 2])
def test_triton_matches_reference(dtype, case, outputs):
    ids, vocabs, width, dense = CASES[case]
    node = make_node(ids, vocabs, width, DTYPES[dtype], dense, has_beta=case % 2 == 0, outputs=outputs)
    check_against_reference(node, random_inputs(node, seed=case), dtype)


@cuda
def test_int32_ids_and_strided_ids():
    node = make_node((4, 32), (100, 3), 256, DType.FLOAT16, (32, 256), ids_dtype=DType.INT32)
    inputs = random_inputs(node, seed=7)
    check_against_reference(node, inputs, "fp16")
    # ids read through a transposed view: made contiguous, same rows.
    inputs[3] = inputs[3].t().contiguous().t()
    check_against_reference(node, inputs, "fp16")


@cuda
@pytest.mark.parametrize("tactic", ["triton", "reference"])
def test_ids_outside_the_table_give_zero_rows(tactic):
    """No device-side assert (it would stop every later CUDA call of the process): both tactics
    give such rows as zeros."""
    node = make_node((1, 4), (10,), 64, DType.FLOAT32, None, has_beta=True, outputs=2)
    inputs = random_inputs(node, seed=3)
    inputs[3] = torch.tensor([[0, 10, -11, 9]], device=DEVICE)
    y, total = run(node, tactic, inputs)
    assert torch.equal(total[0, 1], torch.zeros(64, device=DEVICE)) and torch.equal(total[0, 2], total[0, 1])
    torch.testing.assert_close(total[0, 3], inputs[4][9])
    torch.testing.assert_close(y[0, 1], inputs[1])  # a zero row normalizes to beta
    torch.cuda.synchronize()  # a device assert would surface here


def test_supports_reasons():
    tactic = find_tactic("cuda", OP, DOMAIN, "triton")
    assert tactic is not None
    if tactic.supports(make_node((2, 8), (10,), 64, DType.FLOAT32)) == "triton is not installed":
        pytest.skip("triton is not installed")
    assert "float64" in tactic.supports(make_node((2, 8), (10,), 64, DType.FLOAT64))
    assert "4 lookups" in tactic.supports(make_node((2, 8), (10, 10, 10, 10), 64, DType.FLOAT16))
    assert "exceed one block" in tactic.supports(make_node((2, 8), (10,), 16384, DType.FLOAT16))
    stats = make_node((2, 8), (10,), 64, DType.FLOAT16)
    stats.attrs["stash_type"] = DType.FLOAT16.value
    assert "stash_type" in tactic.supports(stats)
    assert tactic.supports(make_node((2, 8), (10, 3), 64, DType.BFLOAT16, (8, 64))) is None
