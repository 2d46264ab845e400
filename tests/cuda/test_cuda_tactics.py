"""CUDA tactics against the reference tactic on fresh random inputs, at each precision's tolerance.

Every test carries the `cuda` marker (this folder is skipped without a GPU), the supports()
reasons and the Triton source generator included: they belong with the kernels they describe.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import pytest
import torch

from tensorkiln.ir import DType, Node, TensorType, Value
from tensorkiln.ops import RunContext, get_op
from tensorkiln.ops.infer import infer_node
from tensorkiln.tactics import candidates, find_tactic
from tensorkiln.tactics.cuda import chain_codegen
from tensorkiln.tactics.tf32 import tf32_scope
from tensorkiln.testing.tolerances import assert_close

DTYPES = {"fp32": DType.FLOAT32, "fp16": DType.FLOAT16, "bf16": DType.BFLOAT16}
cuda = pytest.mark.cuda
# Where the tensors live (a module constant so the CPU-runnable tactics can be debugged on the CPU).
DEVICE = "cuda"


# -- building layers and running tactics ------------------------------------------------------

def make_node(op_type: str, inputs: Sequence[Optional[tuple]], attrs: Optional[dict] = None, domain: str = "",
              opset: int = 17, outputs: int = 1) -> Node:
    """A layer whose inputs are (shape, DType) pairs (None for an absent optional input)."""
    op = get_op(op_type, domain)
    values = [None if spec is None else Value(f"in{i}", TensorType(spec[1], tuple(spec[0])))
              for i, spec in enumerate(inputs)]
    node = Node(op_type, values, [Value(f"out{k}") for k in range(outputs)], op.normalize(dict(attrs or {}), opset),
                name=f"test_{op_type}", domain=domain, opset=opset)
    infer_node(node)
    return node


def _ctx() -> RunContext:
    def no_subgraphs(graph, xs):
        raise AssertionError("no subgraphs here")
    return RunContext(torch.device(DEVICE), no_subgraphs)


def run(node: Node, name: str, inputs: list[Optional[torch.Tensor]]) -> list[torch.Tensor]:
    tactic = find_tactic("cuda", node.op_type, node.domain, name)
    assert tactic is not None, f"no tactic {name} for {node.op_type}"
    if name != "reference":
        assert tactic.supports(node) is None, tactic.supports(node)
    snapshot = [None if t is None else t.clone() for t in inputs]
    out = tactic.run(_ctx(), inputs, node.attrs)
    for t, before in zip(inputs, snapshot):
        if t is not None:
            # NaN-aware: some tests plant NaNs in the inputs.
            torch.testing.assert_close(t, before, rtol=0, atol=0, equal_nan=True,
                                       msg=f"{name} modified an input in place")
    return [out] if isinstance(out, torch.Tensor) else list(out)[:len(node.outputs)]


def random_inputs(node: Node, scales: Optional[Sequence[float]] = None, seed: int = 0) -> list[Optional[torch.Tensor]]:
    gen = torch.Generator(device="cpu").manual_seed(seed)
    out: list[Optional[torch.Tensor]] = []
    for i, v in enumerate(node.inputs):
        if v is None:
            out.append(None)
            continue
        scale = 1.0 if scales is None else scales[i]
        t = torch.randn(tuple(v.shape), generator=gen) * scale
        out.append(t.to(device=DEVICE, dtype=v.dtype.torch))
    return out


def tf32_on(kind: str) -> bool:
    """Whether torch's global flags let this kind of layer ("conv" or "gemm") run in TF32."""
    if kind == "conv":
        return bool(torch.backends.cudnn.allow_tf32)
    if kind == "gemm":
        return bool(torch.backends.cuda.matmul.allow_tf32)
    return False


def precision_of(dtype: str, kind: str = "") -> str:
    """The tolerance row: fp32 convolutions/GEMMs that the global flags let run in TF32 use the tf32 row."""
    if dtype == "fp32" and tf32_on(kind):
        return "tf32"
    return dtype


def check_against_reference(node: Node, name: str, inputs: list[Optional[torch.Tensor]], precision: str) -> list:
    expected = run(node, "reference", inputs)
    actual = run(node, name, inputs)
    assert len(actual) == len(expected)
    for k, (a, e) in enumerate(zip(actual, expected)):
        assert a.dtype == e.dtype and tuple(a.shape) == tuple(e.shape), (a.dtype, e.dtype, a.shape, e.shape)
        assert_close(a.float().cpu().numpy(), e.float().cpu().numpy(), precision, f"{name} output {k}")
    return actual


def conv_weight_scale(w_shape: Sequence[int], groups: int = 1) -> float:
    return 1.0 / math.sqrt(max(1, math.prod(w_shape[1:])))


# -- convolution ------------------------------------------------------------------------------

CONV_CASES = [
    # (x shape, w shape, attrs)
    ((2, 16, 14, 14), (32, 16, 3, 3), {"pads": [1, 1, 1, 1]}),
    ((2, 16, 14, 14), (32, 16, 1, 1), {"strides": [2, 2]}),
    ((1, 3, 32, 32), (16, 3, 7, 7), {"pads": [3, 3, 3, 3], "strides": [2, 2]}),
    ((2, 32, 9, 9), (32, 1, 3, 3), {"pads": [1, 1, 1, 1], "group": 32}),
    ((2, 8, 12, 12), (8, 8, 3, 3), {"pads": [2, 2, 2, 2], "dilations": [2, 2]}),
    ((2, 8, 10, 10), (16, 8, 3, 3), {"auto_pad": "SAME_UPPER"}),
]


@cuda
@pytest.mark.parametrize("layout", ["cudnn_nchw", "cudnn_nhwc"])
@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("case", range(len(CONV_CASES)))
def test_conv_matches_reference(layout, dtype, case):
    xs, ws, attrs = CONV_CASES[case]
    dt = DTYPES[dtype]
    node = make_node("Conv", [(xs, dt), (ws, dt), ((ws[0],), dt)], attrs)
    inputs = random_inputs(node, [1.0, conv_weight_scale(ws), 0.1], seed=case)
    check_against_reference(node, layout, inputs, precision_of(dtype, "conv"))


FUSED_EPILOGUES = [
    {"activation": "Relu"},
    {"activation": "Clip", "activation_params": [0.0, 6.0]},
    {"activation": "Silu", "residual_after_activation": 1},
    {"activation": "LeakyRelu", "activation_params": [0.1]},
]


@cuda
@pytest.mark.parametrize("layout", ["cudnn_nchw", "cudnn_nhwc"])
@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("epilogue", range(len(FUSED_EPILOGUES)))
@pytest.mark.parametrize("residual", [False, True])
def test_fused_conv_matches_reference(layout, dtype, epilogue, residual):
    dt = DTYPES[dtype]
    xs, ws = (2, 16, 14, 14), (16, 16, 3, 3)
    specs = [(xs, dt), (ws, dt), ((16,), dt)] + ([((2, 16, 14, 14), dt)] if residual else [])
    node = make_node("FusedConv", specs, {"pads": [1, 1, 1, 1], **FUSED_EPILOGUES[epilogue]}, domain="tensorkiln",
                     opset=1)
    inputs = random_inputs(node, [1.0, conv_weight_scale(ws), 0.1, 1.0], seed=epilogue)
    check_against_reference(node, layout, inputs, precision_of(dtype, "conv"))


@cuda
@pytest.mark.parametrize("layout", ["cudnn_nchw", "cudnn_nhwc"])
@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_conv3d_and_conv1d(layout, dtype):
    dt = DTYPES[dtype]
    node = make_node("Conv", [((2, 4, 6, 8, 8), dt), ((8, 4, 3, 3, 3), dt)], {"pads": [1] * 6})
    check_against_reference(node, layout, random_inputs(node, [1.0, 0.2]), precision_of(dtype, "conv"))
    node1 = make_node("Conv", [((2, 4, 20), dt), ((8, 4, 3), dt)], {"pads": [1, 1]})
    if layout == "cudnn_nchw":
        check_against_reference(node1, layout, random_inputs(node1, [1.0, 0.3]), precision_of(dtype, "conv"))
    else:
        reason = find_tactic("cuda", "Conv", "", layout).supports(node1)
        assert reason and "channels-last" in reason


@cuda
@pytest.mark.parametrize("layout", ["cudnn_nchw", "cudnn_nhwc"])
@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16"])
def test_conv_transpose_matches_reference(layout, dtype):
    dt = DTYPES[dtype]
    attrs = {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1]}
    node = make_node("ConvTranspose", [((2, 16, 7, 7), dt), ((16, 8, 3, 3), dt), ((8,), dt)], attrs)
    check_against_reference(node, layout, random_inputs(node, [1.0, 0.1, 0.1]), precision_of(dtype, "conv"))
    fused = make_node("FusedConv", [((2, 16, 7, 7), dt), ((16, 8, 3, 3), dt), ((8,), dt)],
                      {**attrs, "transposed": 1, "activation": "Relu"}, domain="tensorkiln", opset=1)
    check_against_reference(fused, layout, random_inputs(fused, [1.0, 0.1, 0.1]), precision_of(dtype, "conv"))


@cuda
@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_nhwc_chain_stays_channels_last_and_converts_weights_once(dtype):
    dt = DTYPES[dtype]
    first = make_node("FusedConv", [((2, 16, 14, 14), dt), ((32, 16, 3, 3), dt), ((32,), dt)],
                      {"pads": [1, 1, 1, 1], "activation": "Relu"}, domain="tensorkiln", opset=1)
    second = make_node("Conv", [((2, 32, 14, 14), dt), ((32, 32, 1, 1), dt), ((32,), dt)], {})
    x, w1, b1 = random_inputs(first, [1.0, 0.08, 0.1], seed=1)
    _, w2, b2 = random_inputs(second, [1.0, 0.17, 0.1], seed=2)
    tactic = find_tactic("cuda", "Conv", "", "cudnn_nhwc")
    cache = tactic.run.__self__.weights
    y1 = run(first, "cudnn_nhwc", [x, w1, b1])[0]
    assert y1.is_contiguous(memory_format=torch.channels_last)
    y2 = run(second, "cudnn_nhwc", [y1, w2, b2])[0]
    assert y2.is_contiguous(memory_format=torch.channels_last)
    entries = len(cache)
    for _ in range(3):
        again = run(second, "cudnn_nhwc", [y1, w2, b2])[0]
    assert len(cache) == entries, "weights are converted once per weight tensor, not per call"
    assert torch.equal(again, y2)
    r1 = run(first, "reference", [x, w1, b1])[0]
    r2 = run(second, "reference", [r1, w2, b2])[0]
    assert_close(y2.float().cpu().numpy(), r2.float().cpu().numpy(), precision_of(dtype, "conv"), "NHWC chain")


# -- GEMM -------------------------------------------------------------------------------------

@cuda
@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("shapes", [((64, 96), (96, 48)), ((2, 16, 96), (96, 48)), ((2, 4, 16, 32), (2, 4, 32, 16)),
                                    ((3, 16, 32), (3, 32, 8)), ((2, 1, 16, 32), (4, 32, 8))])
def test_matmul_matches_reference(dtype, shapes):
    dt = DTYPES[dtype]
    same = make_node("MatMul", [(shapes[0], dt), (shapes[1], dt)])
    assert "same cuBLAS call" in find_tactic("cuda", "MatMul", "", "cublas").supports(same)
    # A weight kept in another dtype: the tactic converts it once, the reference on every call.
    other = DType.FLOAT16 if dt == DType.FLOAT32 else DType.FLOAT32
    node = make_node("MatMul", [(shapes[0], dt), (shapes[1], other)])
    inputs = random_inputs(node, [1.0, 1.0 / math.sqrt(shapes[0][-1])])
    check_against_reference(node, "cublas", inputs, precision_of(dtype, "gemm"))


@cuda
@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("c_shape, attrs", [((48,), {"transB": 1}), ((32, 48), {"alpha": 0.5, "beta": 2.0}),
                                            ((32, 1), {"transA": 1}), (None, {"alpha": 3.0})])
def test_gemm_matches_reference(dtype, c_shape, attrs):
    dt = DTYPES[dtype]
    a = (96, 32) if attrs.get("transA") else (32, 96)
    b = (48, 96) if attrs.get("transB") else (96, 48)
    specs = [(a, dt), (b, dt)] + ([(c_shape, dt)] if c_shape else [])
    node = make_node("Gemm", specs, attrs, opset=13)
    check_against_reference(node, "cublas", random_inputs(node, [1.0, 0.1, 1.0]), precision_of(dtype, "gemm"))


def with_constant_weight(node: Node, weight: torch.Tensor, index: int = 1) -> Node:
    """The node with its weight input (`index`) marked constant (what cublas_nt and int8_mm need), holding
    `weight`."""
    node.inputs[index].const = weight.float().cpu().numpy().astype(node.inputs[index].dtype.numpy)
    return node


@cuda
@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("op_type, a, b, bias, attrs", [
    ("MatMul", (2, 16, 64), (64, 96), None, {}),
    ("Gemm", (32, 64), (64, 48), (48,), {"alpha": 0.5}),
    ("FusedMatMul", (2, 16, 64), (64, 96), (96,), {"activation": "Relu"}),
    ("FusedMatMul", (2, 16, 64), (64, 96), (96,), {"activation": "Gelu"}),
])
def test_transposed_weight_gemm_matches_reference(dtype, op_type, a, b, bias, attrs):
    dt = DTYPES[dtype]
    domain, opset = ("tensorkiln", 1) if op_type == "FusedMatMul" else ("", 13)
    specs = [(a, dt), (b, dt)] + ([(bias, dt)] if bias else [])
    node = make_node(op_type, specs, attrs, domain=domain, opset=opset)
    tactic = find_tactic("cuda", op_type, domain, "cublas_nt")
    assert "not a constant" in tactic.supports(node)
    inputs = random_inputs(node, [1.0, 1.0 / math.sqrt(a[-1]), 0.5], seed=3)
    with_constant_weight(node, inputs[1])
    assert tactic.supports(node) is None
    check_against_reference(node, "cublas_nt", inputs, precision_of(dtype, "gemm"))
    transposed = make_node("Gemm", [((32, 64), dt), ((48, 64), dt)], {"transB": 1}, opset=13)
    with_constant_weight(transposed, torch.zeros(48, 64))
    assert "transB" in find_tactic("cuda", "Gemm", "", "cublas_nt").supports(transposed)


FUSED_MATMUL_CASES = [
    # (a, b, bias, residual, attrs)
    ((2, 16, 64), (64, 96), (96,), None, {"activation": "Relu"}),            # cuBLASLt bias+ReLU epilogue
    ((2, 16, 64), (64, 96), (96,), None, {"activation": "GeluTanh"}),        # cuBLASLt bias+GELU epilogue
    ((2, 16, 64), (64, 96), (96,), (2, 16, 96), {"activation": "Gelu"}),
    ((32, 64), (96, 64), (1, 96), (32, 96), {"transB": 1, "activation": "Relu", "residual_after_activation": 1}),
    ((32, 64), (64, 96), (96,), (32, 96), {"activation": "Relu"}),           # residual before act: no Lt epilogue
    ((4, 16, 32), (4, 32, 24), (24,), None, {"alpha": 0.5}),                 # batched: baddbmm
    ((16, 64), (64, 96), (96,), None, {"alpha": 2.0, "beta": 0.5, "activation": "Tanh"}),
]


@cuda
@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("case", range(len(FUSED_MATMUL_CASES)))
def test_fused_matmul_matches_reference(dtype, case):
    dt = DTYPES[dtype]
    a, b, bias, residual, attrs = FUSED_MATMUL_CASES[case]
    specs = [(a, dt), (b, dt), (bias, dt)] + ([(residual, dt)] if residual else [])
    node = make_node("FusedMatMul", specs, attrs, domain="tensorkiln", opset=1)
    reason = find_tactic("cuda", "FusedMatMul", "tensorkiln", "cublas").supports(node)
    if reason is not None:
        # Nothing for cuBLAS to do beyond the reference's own call; with a weight in another dtype it applies.
        assert "same cuBLAS call" in reason and case in (2, 4, 6)
        specs[1] = (b, DType.FLOAT16 if dt == DType.FLOAT32 else DType.FLOAT32)
        node = make_node("FusedMatMul", specs, attrs, domain="tensorkiln", opset=1)
    else:
        assert case in (0, 1, 3, 5)
    k = a[-1]
    inputs = random_inputs(node, [1.0, 1.0 / math.sqrt(k), 0.5, 1.0], seed=case)
    check_against_reference(node, "cublas", inputs, precision_of(dtype, "gemm"))


# -- attention --------------------------------------------------------------------------------

def sdpa_node(q, k, v, dt, mask=None) -> Node:
    specs = [(q, dt), (k, dt), (v, dt)] + ([(mask, dt)] if mask is not None else [])
    return make_node("ScaledDotProductAttention", specs, {"scale": 1.0 / math.sqrt(q[-1])}, domain="tensorkiln",
                     opset=1)


def mask_inputs(node: Node, seed: int = 0) -> list[torch.Tensor]:
    inputs = random_inputs(node, seed=seed)
    if len(inputs) > 3:
        # A padding mask as BERT writes it: 0 for kept keys, -10000 for dropped ones.
        keep = torch.rand(tuple(inputs[3].shape), generator=torch.Generator().manual_seed(seed)) > 0.2
        inputs[3] = torch.where(keep, 0.0, -10000.0).to(device=DEVICE, dtype=inputs[3].dtype)
    return inputs


@cuda
@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
@pytest.mark.parametrize("shape", [(2, 4, 64, 64), (2, 64, 32), (3, 2, 2, 40, 16)])
def test_flash_matches_reference(dtype, shape):
    node = sdpa_node(shape, shape, shape, DTYPES[dtype])
    check_against_reference(node, "flash", random_inputs(node), dtype)


@cuda
@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("shape, mask", [((2, 4, 64, 64), None), ((2, 4, 64, 64), (2, 1, 1, 64)),
                                         ((2, 4, 50, 32), (2, 1, 1, 50)), ((2, 48, 32), (48, 48)),
                                         ((2, 4, 32, 64), (2, 4, 32, 32))])
def test_mem_efficient_and_math_match_reference(dtype, shape, mask):
    node = sdpa_node(shape, shape, shape, DTYPES[dtype], mask)
    inputs = mask_inputs(node)
    check_against_reference(node, "mem_efficient", inputs, dtype)
    check_against_reference(node, "math", inputs, precision_of(dtype, "gemm"))


@cuda
@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
@pytest.mark.parametrize("shape, mask", [((2, 4, 64, 64), None), ((2, 4, 64, 64), (2, 1, 1, 64)),
                                         ((2, 4, 50, 32), (2, 1, 1, 50)), ((2, 48, 32), (48, 48)),
                                         ((2, 4, 32, 64), (2, 4, 32, 32)), ((2, 12, 128, 64), (2, 1, 1, 128))])
def test_cudnn_attention_matches_reference(dtype, shape, mask):
    if not hasattr(torch.ops.aten, "_scaled_dot_product_cudnn_attention"):
        pytest.skip("this torch has no cuDNN attention operator")
    node = sdpa_node(shape, shape, shape, DTYPES[dtype], mask)
    inputs = mask_inputs(node)
    check_against_reference(node, "cudnn", inputs, dtype)
    if len(shape) == 4:
        # Q/K/V as a head split leaves them: [B, S, H, D] memory viewed as [B, H, S, D].
        strided = [t.transpose(1, 2).contiguous().transpose(1, 2) for t in inputs[:3]] + inputs[3:]
        check_against_reference(node, "cudnn", strided, dtype)


@cuda
@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
@pytest.mark.parametrize("tactic", ["triton_m64", "triton_m16", "triton_tma_m128", "triton_tma_m64", "triton_tma_m16",
                                    "gluon_tma_m128"])
@pytest.mark.parametrize("shape, mask", [((2, 4, 64, 64), None), ((2, 12, 128, 64), (2, 1, 1, 128)),
                                         ((2, 4, 50, 32), (2, 1, 1, 50)), ((2, 48, 32), (48, 48)),
                                         ((2, 4, 32, 64), (2, 4, 32, 32)), ((3, 2, 2, 40, 16), None),
                                         ((1, 2, 7, 24), (7, 7))])
def test_triton_attention_matches_reference(dtype, tactic, shape, mask):
    node = sdpa_node(shape, shape, shape, DTYPES[dtype], mask)
    reason = find_tactic("cuda", "ScaledDotProductAttention", "tensorkiln", tactic).supports(node)
    if reason:
        pytest.skip(reason)
    inputs = mask_inputs(node)
    check_against_reference(node, tactic, inputs, dtype)
    if len(shape) == 4:
        # Q/K/V as a head split of one QKV product leaves them: the output comes back in Q's memory order.
        fused = torch.cat([t.transpose(1, 2) for t in inputs[:3]], dim=-1)
        d = shape[-1]
        strided = [fused[..., i * d:(i + 1) * d].transpose(1, 2) for i in range(3)] + inputs[3:]
        out = check_against_reference(node, tactic, strided, dtype)[0]
        assert out.transpose(1, 2).is_contiguous()


@cuda
@pytest.mark.parametrize("tile", ["m64", "m16"])
@pytest.mark.parametrize("tf32", [True, False])
@pytest.mark.parametrize("shape, mask", [((2, 12, 128, 64), (2, 1, 1, 128)), ((2, 4, 50, 32), (2, 1, 1, 50)),
                                         ((1, 2, 7, 24), (7, 7)), ((3, 2, 2, 40, 16), None)])
def test_triton_attention_in_float32(tile, tf32, shape, mask):
    # TF32 products where the engine allows TF32 (the tf32 row); full fp32 where it does not (the fp32 row).
    node = sdpa_node(shape, shape, shape, DType.FLOAT32, mask)
    inputs = mask_inputs(node)
    with tf32_scope(tf32):
        check_against_reference(node, f"triton_{tile}", inputs, "tf32" if tf32 else "fp32")


@cuda
@pytest.mark.parametrize("tile", ["m64", "m16", "tma_m64", "tma_m16"])
def test_triton_attention_edges(tile):
    """Keys not a multiple of the block, V's head dim unlike Q's, a row masked for every key (zeros,
    as ops/sdpa.py specifies) and no keys at all."""
    dt = DType.FLOAT16
    node = sdpa_node((2, 3, 20, 24), (2, 3, 150, 24), (2, 3, 150, 40), dt, (2, 1, 20, 150))
    inputs = mask_inputs(node, seed=3)
    inputs[3][0, 0, 5] = float("-inf")
    out = check_against_reference(node, f"triton_{tile}", inputs, "fp16")[0]
    assert torch.all(out[0, :, 5] == 0)
    empty = sdpa_node((1, 2, 4, 16), (1, 2, 0, 16), (1, 2, 0, 16), dt)
    assert torch.all(run(empty, f"triton_{tile}", random_inputs(empty))[0] == 0)


@cuda
@pytest.mark.parametrize("tactic", ["triton_tma_m128", "gluon_tma_m128"])
@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_tma_attention_edges(tactic, dtype):
    """Queries past one 128-row block (the last block's store is clipped), keys short of the block,
    a row masked for every key (zeros), masks with a row per query and one row for all, no mask,
    and no keys at all."""
    tma = find_tactic("cuda", "ScaledDotProductAttention", "tensorkiln", tactic)
    dt = DTYPES[dtype]
    for q_shape, kv_len, mask in [((2, 3, 200, 64), 100, (2, 3, 200, 100)), ((2, 3, 200, 64), 72, (2, 1, 1, 72)),
                                  ((1, 2, 130, 32), 128, None), ((3, 2, 1, 64), 40, (3, 1, 1, 40))]:
        kv_shape = q_shape[:2] + (kv_len, q_shape[3])
        node = sdpa_node(q_shape, kv_shape, kv_shape, dt, mask)
        reason = tma.supports(node)
        if reason:
            pytest.skip(reason)
        inputs = mask_inputs(node, seed=11)
        if mask is not None:
            inputs[3][0, 0, -1] = float("-inf")
        out = check_against_reference(node, tactic, inputs, dtype)[0]
        if mask is not None:
            assert torch.all(out[0, 0, -1] == 0)
    empty = sdpa_node((1, 2, 4, 16), (1, 2, 0, 16), (1, 2, 0, 16), dt)
    assert torch.all(run(empty, tactic, random_inputs(empty))[0] == 0)


@cuda
def test_gluon_attention_supports_reasons(monkeypatch):
    node = sdpa_node((2, 12, 128, 64), (2, 12, 128, 64), (2, 12, 128, 64), DType.FLOAT16, (2, 1, 1, 128))
    gluon = find_tactic("cuda", "ScaledDotProductAttention", "tensorkiln", "gluon_tma_m128")
    if torch.cuda.get_device_capability()[0] == 9:
        assert gluon.supports(node) is None
    assert "head dim 128" in gluon.supports(sdpa_node((1, 8, 128), (1, 8, 128), (1, 8, 128), DType.FLOAT16))
    assert "129 keys" in gluon.supports(sdpa_node((1, 8, 16), (1, 129, 16), (1, 129, 16), DType.FLOAT16))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: (10, 0))
    assert "Hopper" in gluon.supports(node)


def projected_node(batch, seq, heads, d, dt, bias=True, mask=None, embed=None) -> Node:
    embed = embed or heads * d
    inputs = [((batch, seq, embed), dt), ((3 * heads * d, embed), dt), ((3 * heads * d,), dt) if bias else None]
    if mask is not None:
        inputs.append((mask, dt))
    return make_node("ProjectedAttention", inputs, {"heads": heads, "scale": 1 / math.sqrt(d)}, domain="tensorkiln")


def projected_inputs(node: Node, seed: int) -> list[Optional[torch.Tensor]]:
    """x, W scaled as a trained projection's (unit-variance outputs), a bias, and a padding mask: 0 for kept
    keys, -10000 for the last quarter of every other sequence and -inf for every key of the first (a mask
    broadcast over the batch: -10000 for the last quarter)."""
    embed = node.inputs[0].shape[2]
    inputs = random_inputs(node, [1.0, embed ** -0.5, 0.1, 1.0][:len(node.inputs)], seed=seed)
    if len(inputs) > 3 and inputs[3] is not None:
        mask = torch.zeros(tuple(node.inputs[3].shape))
        keys = mask.shape[-1]
        if mask.dim() == 4 and mask.shape[0] > 1:
            mask[1::2, ..., keys * 3 // 4:] = -10000.0
            mask[0] = float("-inf")
        else:
            mask[..., keys * 3 // 4:] = -10000.0
        inputs[3] = mask.to(device=DEVICE, dtype=inputs[3].dtype)
    return inputs


@cuda
@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
@pytest.mark.parametrize("case", [dict(batch=3, heads=2, mask=(3, 1, 1, 128)), dict(batch=1, heads=12, mask=None),
                                  dict(batch=4, heads=3, mask=(1, 1, 128), bias=False),
                                  dict(batch=2, heads=2, mask=(2, 1, 1, 128), embed=192)])
def test_projected_attention_matches_reference(dtype, case):
    """The fused projection + attention kernel against the reference (cuBLAS's product, then torch's
    attention): masks of one row per sequence (padding, and a sequence masked everywhere: zeros),
    broadcast over the batch, none; no bias; an embedding wider than heads x 64."""
    case = dict(case)
    node = projected_node(case.pop("batch"), 128, case.pop("heads"), 64, DTYPES[dtype], **case)
    fused = find_tactic("cuda", "ProjectedAttention", "tensorkiln", "gluon_qkv_m128")
    reason = fused.supports(node)
    if reason:
        pytest.skip(reason)
    for seed in (0, 1):
        inputs = projected_inputs(node, seed)
        out = check_against_reference(node, "gluon_qkv_m128", inputs, dtype)[0]
        assert torch.isfinite(out).all()
        if len(inputs) > 3 and inputs[3] is not None and inputs[3].dim() == 4 and inputs[3].shape[0] > 1:
            assert torch.all(out[0] == 0)


@cuda
def test_projected_attention_other_lengths_fall_back():
    """An engine with a dynamic sequence runs the fused layer at any length: lengths the kernel does not
    take (not 128 tokens, a mask with a row per query) are computed as the reference does."""
    symbolic = projected_node(2, "seq", 2, 64, DType.FLOAT16, mask=(2, 1, 1, "seq"))
    fused = find_tactic("cuda", "ProjectedAttention", "tensorkiln", "gluon_qkv_m128")
    reason = fused.supports(symbolic)
    if reason:
        pytest.skip(reason)
    for seq in (64, 128, 7):
        node = projected_node(2, seq, 2, 64, DType.FLOAT16, mask=(2, 1, 1, seq))
        inputs = projected_inputs(node, seq)
        tactic = find_tactic("cuda", "ProjectedAttention", "tensorkiln", "gluon_qkv_m128")
        expected = run(node, "reference", inputs)[0]
        got = tactic.run(_ctx(), inputs, node.attrs)
        assert_close(got.float().cpu().numpy(), expected.float().cpu().numpy(), "fp16", f"seq {seq}")
    rows = projected_node(2, 128, 2, 64, DType.FLOAT16, mask=(2, 1, 128, 128))
    inputs = projected_inputs(rows, 3)
    got = find_tactic("cuda", "ProjectedAttention", "tensorkiln", "gluon_qkv_m128").run(_ctx(), inputs, rows.attrs)
    assert_close(got.float().cpu().numpy(), run(rows, "reference", inputs)[0].float().cpu().numpy(), "fp16",
                 "a mask with a row per query")


@cuda
def test_projected_attention_supports_reasons(monkeypatch):
    fused = find_tactic("cuda", "ProjectedAttention", "tensorkiln", "gluon_qkv_m128")
    node = projected_node(2, 128, 12, 64, DType.FLOAT16, mask=(2, 1, 1, 128))
    if torch.cuda.get_device_capability()[0] == 9:
        assert fused.supports(node) is None
    assert "head dim 32" in fused.supports(projected_node(2, 128, 2, 32, DType.FLOAT16))
    assert "sequences of 64 tokens" in fused.supports(projected_node(2, 64, 2, 64, DType.FLOAT16))
    assert "one row of keys per sequence" in fused.supports(projected_node(2, 128, 2, 64, DType.FLOAT16,
                                                                           mask=(2, 1, 128, 128)))
    assert "embedding of 160" in fused.supports(projected_node(2, 128, 2, 64, DType.FLOAT16, embed=160))
    assert "float32" in fused.supports(projected_node(2, 128, 2, 64, DType.FLOAT32))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: (8, 0))
    assert "Hopper" in fused.supports(node)


@cuda
@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_math_takes_broadcast_batches_and_widening_masks(dtype):
    dt = DTYPES[dtype]
    node = sdpa_node((2, 4, 16, 32), (1, 4, 24, 32), (1, 4, 24, 32), dt, (2, 4, 16, 24))
    check_against_reference(node, "math", mask_inputs(node), precision_of(dtype, "gemm"))
    widening = sdpa_node((1, 16, 32), (1, 24, 32), (1, 24, 32), dt, (3, 16, 24))
    check_against_reference(widening, "math", mask_inputs(widening), precision_of(dtype, "gemm"))


@cuda
def test_attention_supports_reasons():
    node = sdpa_node((2, 4, 64, 64), (2, 4, 64, 64), (2, 4, 64, 64), DType.FLOAT16, (2, 1, 1, 64))
    flash = find_tactic("cuda", "ScaledDotProductAttention", "tensorkiln", "flash")
    if hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention"):
        assert "mask" in flash.supports(node)
        fp32 = sdpa_node((2, 4, 64, 64), (2, 4, 64, 64), (2, 4, 64, 64), DType.FLOAT32)
        assert "float32" in flash.supports(fp32)
        odd = sdpa_node((2, 4, 64, 20), (2, 4, 64, 20), (2, 4, 64, 20), DType.FLOAT16)
        assert "head dim 20" in flash.supports(odd)
    mem = find_tactic("cuda", "ScaledDotProductAttention", "tensorkiln", "mem_efficient")
    if hasattr(torch.ops.aten, "_scaled_dot_product_efficient_attention"):
        broadcast = sdpa_node((2, 4, 16, 32), (1, 4, 24, 32), (1, 4, 24, 32), DType.FLOAT16)
        assert "batch dims" in mem.supports(broadcast)
        widening = sdpa_node((1, 16, 32), (1, 24, 32), (1, 24, 32), DType.FLOAT16, (3, 16, 24))
        assert "widening" in mem.supports(widening)
    double = sdpa_node((2, 8, 8), (2, 8, 8), (2, 8, 8), DType.FLOAT64)
    assert "float64" in find_tactic("cuda", "ScaledDotProductAttention", "tensorkiln", "math").supports(double)
    triton = find_tactic("cuda", "ScaledDotProductAttention", "tensorkiln", "triton_m16")
    assert triton.supports(node) is None
    assert triton.supports(sdpa_node((2, 8, 16), (2, 8, 16), (2, 8, 16), DType.FLOAT32)) is None
    assert "float64" in triton.supports(sdpa_node((2, 8, 16), (2, 8, 16), (2, 8, 16), DType.FLOAT64))
    assert "head dim 256 in float32" in triton.supports(
        sdpa_node((1, 8, 256), (1, 8, 256), (1, 8, 256), DType.FLOAT32))
    assert "head dim 512" in triton.supports(sdpa_node((1, 8, 512), (1, 8, 512), (1, 8, 512), DType.FLOAT16))
    assert "Q and K head dims differ" in triton.supports(sdpa_node((1, 8, 32), (1, 8, 16), (1, 8, 16), DType.FLOAT16))
    tma = find_tactic("cuda", "ScaledDotProductAttention", "tensorkiln", "triton_tma_m128")
    assert tma.supports(node) is None
    assert "129 keys" in tma.supports(sdpa_node((1, 8, 16), (1, 129, 16), (1, 129, 16), DType.FLOAT16))
    # A sequence length known only at run time (a dynamic profile): taken, checked per call
    # (test_tma_attention_reads_any_strides_and_longer_keys_fall_back runs one past the block).
    assert tma.supports(sdpa_node((1, "S", 16), (1, "S", 16), (1, "S", 16), DType.FLOAT16)) is None
    assert "head dims [20, 20, 20]" in tma.supports(sdpa_node((1, 8, 20), (1, 8, 20), (1, 8, 20), DType.FLOAT16))
    assert "head dim 128" in tma.supports(sdpa_node((1, 8, 128), (1, 8, 128), (1, 8, 128), DType.FLOAT16))
    assert "float32" in tma.supports(sdpa_node((2, 8, 16), (2, 8, 16), (2, 8, 16), DType.FLOAT32))
    # 256 keys of head dim 128: two stages of K and V would not fit the shared memory; 128 keys do.
    tma64 = find_tactic("cuda", "ScaledDotProductAttention", "tensorkiln", "triton_tma_m64")
    assert "KiB of shared memory" in tma64.supports(
        sdpa_node((1, 2, 64, 128), (1, 2, 256, 128), (1, 2, 256, 128), DType.FLOAT16))
    fits = sdpa_node((1, 2, 64, 128), (1, 2, 128, 128), (1, 2, 128, 128), DType.FLOAT16)
    assert tma64.supports(fits) is None
    check_against_reference(fits, "triton_tma_m64", random_inputs(fits), "fp16")


@cuda
def test_tma_attention_reads_any_strides_and_longer_keys_fall_back():
    """Q/K/V that are not TMA-aligned views are copied first; keys longer than the tile's block at run
    time (a symbolic length at build time) go through the m64 kernel. Both match the reference, and
    so do the reference and the fused torch kernels on such views (torch's own F.sdpa gave wrong
    values for them before the reference aligned its operands)."""
    dt = DType.FLOAT16
    node = sdpa_node((2, 3, 16, 24), (2, 3, 16, 24), (2, 3, 16, 24), dt, (2, 1, 1, 16))
    inputs = mask_inputs(node, seed=5)
    # Rows 28 elements apart (56 bytes): not a 16-byte multiple.
    padded = [torch.nn.functional.pad(t, (0, 4))[..., :24] for t in inputs[:3]]
    assert padded[0].stride(2) == 28
    check_against_reference(node, "triton_tma_m128", padded + inputs[3:], "fp16")
    dense = run(node, "reference", [t.contiguous() for t in padded] + inputs[3:])[0]
    for name in ("reference", "mem_efficient", "cudnn", "triton_m64"):
        if find_tactic("cuda", "ScaledDotProductAttention", "tensorkiln", name).supports(node) is None:
            got = run(node, name, padded + inputs[3:])[0]
            assert_close(got.float().cpu().numpy(), dense.float().cpu().numpy(), "fp16", f"{name} on padded rows")
    # A size-1 dim's stride is never stepped along, and need not be aligned (7 elements here).
    single = sdpa_node((1, 3, 16, 24), (1, 3, 16, 24), (1, 3, 16, 24), dt)
    odd = [torch.as_strided(t.contiguous().view(-1), (1, 3, 16, 24), (7, 384, 24, 1))
           for t in random_inputs(single, seed=7)]
    check_against_reference(single, "triton_tma_m128", odd, "fp16")
    tma = find_tactic("cuda", "ScaledDotProductAttention", "tensorkiln", "triton_tma_m128")
    longer = sdpa_node((2, 3, 16, 24), (2, 3, 200, 24), (2, 3, 200, 24), dt)
    got = tma.run(_ctx(), random_inputs(longer, seed=6), longer.attrs)
    ref = run(longer, "reference", random_inputs(longer, seed=6))[0]
    assert_close(got.float().cpu().numpy(), ref.float().cpu().numpy(), "fp16", "keys past the block")


# -- LayerNormalization and Softmax -----------------------------------------------------------

@cuda
@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("shape, axis, outputs", [((4, 16, 768), -1, 1), ((3, 100), -1, 3), ((2, 5, 1000), -1, 1),
                                                  ((2, 6, 4, 5), 2, 3)])
def test_layer_norm_matches_reference(dtype, shape, axis, outputs):
    dt = DTYPES[dtype]
    normalized = shape[axis:]
    node = make_node("LayerNormalization", [(shape, dt), (normalized, dt), (normalized, dt)],
                     {"epsilon": 1e-5, "axis": axis}, outputs=outputs)
    inputs = random_inputs(node, [2.0, 1.0, 1.0])
    inputs[0] = inputs[0] + 3.0  # a mean far from 0: the variance must not cancel
    check_against_reference(node, "torch_fused", inputs, dtype)


@cuda
@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
@pytest.mark.parametrize("shape, axis, opset", [((2, 4, 128, 128), -1, 13), ((8, 1000), -1, 13), ((3, 7), -1, 13),
                                                ((2, 3, 5, 6), 1, 13), ((2, 3, 5, 6), 1, 11)])
def test_softmax_matches_reference(dtype, shape, axis, opset):
    node = make_node("Softmax", [(shape, DTYPES[dtype])], {"axis": axis}, opset=opset)
    check_against_reference(node, "torch_fused", random_inputs(node, [4.0]), dtype)


@cuda
def test_norm_supports_reasons():
    sm = make_node("Softmax", [((4, 8), DType.FLOAT32)], {"axis": -1}, opset=13)
    assert "float32" in find_tactic("cuda", "Softmax", "", "torch_fused").supports(sm)
    ln = make_node("LayerNormalization", [((4, 8, 16), DType.FLOAT16), ((16,), DType.FLOAT16)],
                   {"stash_type": int(DType.FLOAT16.value)})
    assert "stash_type" in find_tactic("cuda", "LayerNormalization", "", "torch_fused").supports(ln)
    assert "float64" in find_tactic("cuda", "LayerNormalization", "", "torch_fused").supports(
        make_node("LayerNormalization", [((4, 8), DType.FLOAT64), ((8,), DType.FLOAT64)], {}))


# -- elementwise chains -----------------------------------------------------------------------

def chain_node(program: list[dict], specs: list[tuple]) -> Node:
    return make_node("ElementwiseChain", specs, {"program": program}, domain="tensorkiln", opset=1)


def step(op: str, *args: Any, **attrs: Any) -> dict:
    return {"op": op, "domain": "", "opset": 17, "attrs": attrs, "args": list(args)}


PREV, X0, X1, X2 = {"prev": 1}, {"input": 0}, {"input": 1}, {"input": 2}


def const(value: float, dtype: str) -> dict:
    return {"const": value, "dtype": dtype, "shape": []}


def chain_programs(dt: str) -> list[tuple[list[dict], list[tuple]]]:
    """(program, input shapes) pairs covering the index forms and many step ops."""
    return [
        # x + per-channel bias, * 0.5, sigmoid, * x: full + mid operands
        ([step("Add", X0, X1), step("Mul", PREV, const(0.5, dt)), step("Sigmoid", PREV), step("Mul", PREV, X0)],
         [(2, 16, 9, 9), (1, 16, 1, 1)]),
        # last-dim bias, erf GELU, times a one-element tensor: last + scalar operands
        ([step("Add", X0, X1), step("Gelu", PREV, approximate="none"), step("Mul", PREV, X2)],
         [(2, 24, 96), (96,), (1,)]),
        # a [1, S, D] position table over [B, S, D]: a run of two trailing dims
        ([step("Add", X0, X1), step("Tanh", PREV), step("Sub", const(1.0, dt), PREV)], [(3, 10, 32), (1, 10, 32)]),
        # an SE-block scale [N, C, 1, 1]: a run of two leading dims
        ([step("Mul", X0, X1), step("HardSwish", PREV)], [(2, 8, 5, 5), (2, 8, 1, 1)]),
        # many unary ops in a row
        ([step("Abs", X0), step("Add", PREV, const(1.0, dt)), step("Log", PREV), step("Sqrt", PREV),
          step("Exp", PREV), step("Neg", PREV), step("LeakyRelu", PREV, alpha=0.2), step("Erf", PREV),
          step("Clip", PREV, const(-0.5, dt), const(0.75, dt)), step("Pow", PREV, const(2, dt)),
          step("Div", PREV, X1), step("Max", PREV, X1), step("Softplus", PREV), step("Relu", PREV)],
         [(4, 33, 17), (4, 33, 17)]),
        # broadcast growing the rank: a [C] operand first, the full tensor second
        ([step("Mul", X0, X1), step("Elu", PREV, alpha=1.0), step("Swish", PREV, alpha=1.0)], [(7,), (3, 5, 7)]),
    ]


@cuda
@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("case", range(6))
def test_triton_chain_matches_reference(dtype, case):
    dt = DTYPES[dtype]
    program, shapes = chain_programs(dt.short)[case]
    node = chain_node(program, [(s, dt) for s in shapes])
    inputs = random_inputs(node, seed=case)
    if case == 4:
        inputs[1] = inputs[1].abs() + 0.5  # a divisor away from 0
    check_against_reference(node, "triton", inputs, dtype)


@cuda
@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_triton_chain_keeps_channels_last(dtype):
    dt = DTYPES[dtype]
    program = [step("Add", X0, X1), step("Relu", PREV), step("Mul", PREV, X2)]
    node = chain_node(program, [((2, 16, 9, 9), dt), ((1, 16, 1, 1), dt), ((2, 16, 9, 9), dt)])
    x, bias, other = random_inputs(node)
    x = x.contiguous(memory_format=torch.channels_last)
    other = other.contiguous(memory_format=torch.channels_last)
    out = check_against_reference(node, "triton", [x, bias, other], dtype)[0]
    assert out.is_contiguous(memory_format=torch.channels_last)
    # An SE-style [N, C, 1, 1] operand is not one run of dims in NHWC order: the plain order is used.
    se = chain_node([step("Mul", X0, X1), step("Sigmoid", PREV)], [((2, 16, 9, 9), dt), ((2, 16, 1, 1), dt)])
    xs, scale = random_inputs(se)
    check_against_reference(se, "triton", [xs.contiguous(memory_format=torch.channels_last), scale], dtype)


@cuda
def test_triton_chain_supports_reasons():
    triton_tactic = find_tactic("cuda", "ElementwiseChain", "tensorkiln", "triton")
    two_runs = chain_node([step("Add", X0, X1), step("Relu", PREV)],
                          [((2, 16, 9, 9), DType.FLOAT16), ((2, 1, 9, 9), DType.FLOAT16)])
    ints = chain_node([step("Add", X0, X1), step("Relu", PREV)], [((4, 8), DType.INT32), ((4, 8), DType.INT32)])
    odd_op = chain_node([step("Add", X0, X1), step("Acosh", PREV), step("Sign", PREV)],
                        [((4, 8), DType.FLOAT32), ((4, 8), DType.FLOAT32)])
    reasons = [triton_tactic.supports(n) for n in (two_runs, ints, odd_op)]
    try:
        import triton  # noqa: F401
    except ImportError:
        assert reasons == ["triton is not installed"] * 3
        return
    assert "more than one run" in reasons[0]
    assert "int32" in reasons[1]
    assert reasons[2] is None


@cuda
def test_chain_source_generation_and_operand_forms():
    dt = "float16"
    program, _ = chain_programs(dt)[0]
    source = chain_codegen.kernel_source("k", program, {0: "full", 1: "mid"}, torch.float16, torch.float16, False)
    assert source.startswith("def k(out_ptr, in0_ptr, in1_ptr, in1_inner, in1_span, n, BLOCK: tl.constexpr):")
    assert "(offs // in1_inner) % in1_span" in source
    assert source.count(".to(tl.float16).to(tl.float32)") == len(program)  # rounded per step, as the layers did
    compile(source, "<test>", "exec")
    for programs in (chain_programs("float32"), chain_programs("bfloat16")):
        for prog, shapes in programs:
            kinds = {i: "full" for i in chain_codegen.used_inputs(prog)}
            compile(chain_codegen.kernel_source("k", prog, kinds, torch.float32, torch.float32, True), "<t>", "exec")
    out = (2, 16, 9, 9)
    forms = {
        "full": torch.zeros(out), "scalar": torch.zeros(1, 1, 1, 1),
        "mid": torch.zeros(1, 16, 1, 1), "last": torch.zeros(1, 1, 9, 9),
    }
    for kind, t in forms.items():
        assert chain_codegen.classify(t, out).kind == kind
    assert chain_codegen.classify(torch.zeros(1, 16, 1, 1), out) == chain_codegen.OperandIndex("mid", 81, 16)
    assert chain_codegen.classify(torch.zeros(2, 1, 9, 9), out) is None
    nhwc = torch.zeros(out).contiguous(memory_format=torch.channels_last)
    order = chain_codegen.memory_order(nhwc)
    assert order == (0, 2, 3, 1)
    permuted_out = tuple(out[d] for d in order)
    assert chain_codegen.classify(chain_codegen.aligned(nhwc, 4, order), permuted_out).kind == "full"
    assert chain_codegen.classify(chain_codegen.aligned(torch.zeros(16, 1, 1), 4, order), permuted_out) \
        == chain_codegen.OperandIndex("last", 1, 16)


# -- applicability ----------------------------------------------------------------------------

@cuda
@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("geometry", [((2, 16, 14, 14), (16, 16, 3, 3), {"pads": [1, 1, 1, 1]}),
                                      ((2, 8, 15, 15), (32, 8, 1, 1), {"strides": [2, 2]})])
def test_cudnn_fused_relu_matches_reference(dtype, residual, geometry):
    dt = DTYPES[dtype]
    xs, ws, attrs = geometry
    out = (xs[0], ws[0], *(((s - 1) // attrs.get("strides", [1, 1])[0] + 1) if not attrs.get("pads") else s
                          for s in xs[2:]))
    specs = [(xs, dt), (ws, dt), ((ws[0],), dt)] + ([(out, dt)] if residual else [])
    node = make_node("FusedConv", specs, {**attrs, "activation": "Relu"}, domain="tensorkiln", opset=1)
    inputs = random_inputs(node, [1.0, conv_weight_scale(ws), 0.1, 1.0], seed=7)
    check_against_reference(node, "cudnn_fused_relu", inputs, precision_of(dtype, "conv"))


@cuda
def test_cudnn_fused_relu_supports_reasons():
    dt = DType.FLOAT16
    fused = find_tactic("cuda", "FusedConv", "tensorkiln", "cudnn_fused_relu")
    silu = make_node("FusedConv", [((1, 4, 8, 8), dt), ((4, 4, 3, 3), dt)], {"pads": [1, 1, 1, 1],
                     "activation": "Silu"}, domain="tensorkiln", opset=1)
    assert "apply only ReLU" in fused.supports(silu)
    after = make_node("FusedConv", [((1, 4, 8, 8), dt), ((4, 4, 3, 3), dt), None, ((1, 4, 8, 8), dt)],
                      {"pads": [1, 1, 1, 1], "activation": "Relu", "residual_after_activation": 1},
                      domain="tensorkiln", opset=1)
    assert "after the ReLU" in fused.supports(after)


@cuda
def test_conv_supports_reasons():
    dt = DType.FLOAT16
    asym = make_node("Conv", [((1, 4, 8, 8), dt), ((4, 4, 3, 3), dt)], {"pads": [0, 0, 1, 1]})
    nchw = find_tactic("cuda", "Conv", "", "cudnn_nchw")
    assert "asymmetric" in nchw.supports(asym)
    same_symbolic = make_node("Conv", [(("N", 4, "H", "W"), dt), ((4, 4, 3, 3), dt)], {"auto_pad": "SAME_UPPER"})
    assert "unknown before run time" in nchw.supports(same_symbolic)
    double = make_node("Conv", [((1, 4, 8, 8), DType.FLOAT64), ((4, 4, 3, 3), DType.FLOAT64)], {})
    assert "float64" in nchw.supports(double)
    big_outpad = make_node("ConvTranspose", [((1, 4, 8, 8), dt), ((4, 4, 3, 3), dt)],
                           {"strides": [2, 2], "output_padding": [2, 2]})
    assert "output_padding" in find_tactic("cuda", "ConvTranspose", "", "cudnn_nhwc").supports(big_outpad)
    ok = make_node("Conv", [(("N", 4, 8, 8), dt), ((4, 4, 3, 3), dt)], {"pads": [1, 1, 1, 1]})
    names = [t.name for t, reason in candidates(ok, "cuda") if reason is None]
    assert names == ["reference", "cudnn_nchw", "cudnn_nhwc"]


@cuda
def test_gemm_supports_reasons():
    vec = make_node("MatMul", [((8,), DType.FLOAT16), ((8, 4), DType.FLOAT32)])
    assert "1-D" in find_tactic("cuda", "MatMul", "", "cublas").supports(vec)
    ints = make_node("MatMul", [((2, 8), DType.INT32), ((8, 4), DType.INT32)])
    assert "int32" in find_tactic("cuda", "MatMul", "", "cublas").supports(ints)
    fused = find_tactic("cuda", "FusedMatMul", "tensorkiln", "cublas")
    lt = make_node("FusedMatMul", [((2, 8, 16), DType.FLOAT16), ((16, 4), DType.FLOAT16), ((4,), DType.FLOAT16)],
                   {"activation": "GeluTanh"}, domain="tensorkiln", opset=1)
    assert fused.supports(lt) is None
    erf = make_node("FusedMatMul", [((2, 8, 16), DType.FLOAT16), ((16, 4), DType.FLOAT16), ((4,), DType.FLOAT16)],
                    {"activation": "Gelu"}, domain="tensorkiln", opset=1)
    assert "same cuBLAS call" in fused.supports(erf)


# -- max pooling ------------------------------------------------------------------------------

MAX_POOL_CASES = [
    # (x shape, attrs): ResNet's stem pool, ceil mode, dilation with uneven pads, SAME padding, a
    # window wider than the input's border
    ((2, 64, 28, 28), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ((1, 5, 9, 9), {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}),
    ((2, 3, 10, 11), {"kernel_shape": [3, 2], "dilations": [2, 1], "pads": [2, 0, 1, 1]}),
    ((1, 70, 7, 7), {"kernel_shape": [3, 3], "auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    ((2, 4, 6, 6), {"kernel_shape": [4, 4], "pads": [2, 2, 2, 2]}),
]


@cuda
@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("case", range(len(MAX_POOL_CASES)))
def test_triton_max_pool_matches_reference(dtype, channels_last, case):
    shape, attrs = MAX_POOL_CASES[case]
    node = make_node("MaxPool", [(shape, DTYPES[dtype])], attrs)
    inputs = random_inputs(node, seed=case)
    inputs[0][0, 0, 1, 1] = float("nan")  # NaN propagates, as in torch's kernels
    if channels_last:
        inputs[0] = inputs[0].to(memory_format=torch.channels_last)
    expected = run(node, "reference", inputs)[0]
    actual = run(node, "triton", inputs)[0]
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    # A max is exact in any precision: the results are equal, NaN where the reference has NaN.
    assert torch.equal(torch.nan_to_num(actual, nan=7.0), torch.nan_to_num(expected, nan=7.0))
    wide = shape[1] > 1 and channels_last
    assert actual.is_contiguous(memory_format=torch.channels_last if wide else torch.contiguous_format)


@cuda
def test_triton_max_pool_supports_reasons():
    tactic = find_tactic("cuda", "MaxPool", "", "triton")
    with_indices = make_node("MaxPool", [((1, 2, 8, 8), DType.FLOAT32)], {"kernel_shape": [2, 2]}, outputs=2)
    assert "Indices" in tactic.supports(with_indices)
    three_d = make_node("MaxPool", [((1, 2, 4, 8, 8), DType.FLOAT32)], {"kernel_shape": [2, 2, 2]})
    assert "3-D" in tactic.supports(three_d)
    assert "int8" in tactic.supports(make_node("MaxPool", [((1, 2, 8, 8), DType.INT8)], {"kernel_shape": [2, 2]},
                                               opset=12))


# -- Triton Gather (embedding lookups) ---------------------------------------------------------

@cuda
@pytest.mark.parametrize("data_dtype", ["fp16", "fp32", "int64", "bool"])
@pytest.mark.parametrize("index_dtype", [DType.INT64, DType.INT32])
@pytest.mark.parametrize("data, indices", [((30522, 768), (2, 128)), ((2, 768), (1, 16)), ((50, 3, 5), (7,)),
                                           ((10, 2000), (3, 4)), ((9,), (2, 2)), ((128, 1), (4, 1, 1, 32))])
def test_triton_gather_matches_reference(data_dtype, index_dtype, data, indices):
    # The last case is the padding-mask gather of BERT exported for a range of shapes (bool rows).
    dt = {"fp16": DType.FLOAT16, "fp32": DType.FLOAT32, "int64": DType.INT64, "bool": DType.BOOL}[data_dtype]
    node = make_node("Gather", [(data, dt), (indices, index_dtype)], {"axis": 0}, opset=13)
    gen = torch.Generator().manual_seed(len(data))
    table = torch.randn(data, generator=gen) * 100
    idx = torch.randint(-data[0], data[0], indices, generator=gen)
    inputs = [table.to(device=DEVICE, dtype=dt.torch), idx.to(device=DEVICE, dtype=index_dtype.torch)]
    out = check_against_reference(node, "triton", inputs, "exact")[0]
    assert out.shape == tuple(indices) + tuple(data[1:])


@cuda
def test_triton_gather_out_of_range_rows_are_zeros_and_supports_reasons():
    node = make_node("Gather", [((4, 8), DType.FLOAT32), ((3,), DType.INT64)], {"axis": 0}, opset=13)
    table = torch.arange(32, dtype=torch.float32, device=DEVICE).reshape(4, 8) + 1
    for name in ("triton", "reference"):  # the reference too: no device-side assert
        out = run(node, name, [table, torch.tensor([1, 7, -5], device=DEVICE)])[0]
        assert torch.equal(out[0], table[1]) and torch.all(out[1:] == 0), name
    # Along another axis, of an integer table, and of an empty axis.
    columns = make_node("Gather", [((4, 8), DType.INT64), ((2,), DType.INT64)], {"axis": 1}, opset=13)
    ints = torch.arange(32, device=DEVICE).reshape(4, 8) + 1
    out = run(columns, "reference", [ints, torch.tensor([-1, 8], device=DEVICE)])[0]
    assert torch.equal(out[:, 0], ints[:, 7]) and torch.all(out[:, 1] == 0)
    empty = make_node("Gather", [((0, 3), DType.FLOAT32), ((2,), DType.INT64)], {"axis": 0}, opset=13)
    out = run(empty, "reference", [torch.zeros(0, 3, device=DEVICE), torch.tensor([0, 1], device=DEVICE)])[0]
    assert out.shape == (2, 3) and torch.all(out == 0)
    torch.cuda.synchronize()  # a device assert would surface here
    tactic = find_tactic("cuda", "Gather", "", "triton")
    axis1 = make_node("Gather", [((4, 8), DType.FLOAT32), ((3,), DType.INT64)], {"axis": 1}, opset=13)
    assert "axis other than the first" in tactic.supports(axis1)
    halves = make_node("Gather", [((4, 8), DType.UINT16), ((3,), DType.INT64)], {"axis": 0}, opset=13)
    assert "uint16 data" in tactic.supports(halves)


@cuda
def test_index_families_out_of_range_give_zeros_or_drop_updates_on_the_gpu():
    # GatherElements/GatherND gather zeros, ScatterElements/ScatterND drop the update, and no
    # device-side assert leaves the CUDA context unusable (ops/_shape_common.bounded_indices).
    data = torch.arange(12, dtype=torch.float32, device=DEVICE).reshape(3, 4) + 1
    node = make_node("GatherElements", [((3, 4), DType.FLOAT32), ((3, 2), DType.INT64)], {"axis": 1}, opset=13)
    idx = torch.tensor([[0, -1], [4, 1], [-5, 3]], device=DEVICE)
    out = run(node, "reference", [data, idx])[0]
    assert out.tolist() == [[1, 4], [0, 6], [0, 12]]
    node = make_node("GatherND", [((3, 4), DType.FLOAT32), ((3, 2), DType.INT64)], {}, opset=13)
    out = run(node, "reference", [data, torch.tensor([[0, 1], [3, 0], [2, -1]], device=DEVICE)])[0]
    assert out.tolist() == [2, 0, 12]
    rows = make_node("GatherND", [((3, 4), DType.FLOAT32), ((2, 1), DType.INT64)], {}, opset=13)
    out = run(rows, "reference", [data, torch.tensor([[-1], [7]], device=DEVICE)])[0]
    assert out.tolist() == [[9, 10, 11, 12], [0, 0, 0, 0]]
    for reduction in ("none", "add"):
        node = make_node("ScatterElements", [((3, 4), DType.FLOAT32), ((1, 4), DType.INT64), ((1, 4), DType.FLOAT32)],
                         {"axis": 0, "reduction": reduction}, opset=16)
        out = run(node, "reference", [data, torch.tensor([[0, 3, -1, -4]], device=DEVICE),
                                      torch.full((1, 4), 100.0, device=DEVICE)])[0]
        want = data.clone()
        want[0, 0] = 100 if reduction == "none" else 101
        want[2, 2] = 100 if reduction == "none" else 111
        assert torch.equal(out, want), reduction
        node = make_node("ScatterND", [((3, 4), DType.FLOAT32), ((2, 1), DType.INT64), ((2, 4), DType.FLOAT32)],
                         {"reduction": reduction}, opset=16)
        out = run(node, "reference", [data, torch.tensor([[1], [3]], device=DEVICE),
                                      torch.full((2, 4), 100.0, device=DEVICE)])[0]
        want = data.clone()
        want[1] = 100 if reduction == "none" else data[1] + 100
        assert torch.equal(out, want), reduction
    torch.cuda.synchronize()  # a device assert would surface here


@cuda
@pytest.mark.parametrize("data, axis, indices, view", [
    ((128, 1), 0, torch.arange(128).reshape(1, 1, 1, 128), True),    # BERT's padding mask gather
    ((2, 128, 768), 1, torch.tensor(0), True),                       # BERT's pooler: token 0
    ((5, 6), 1, torch.tensor([-3, -2, -1]), True),                   # consecutive once wrapped
    ((5, 6), 0, torch.tensor([[4, -5], [2, 2]]), False),             # not consecutive: index_select
    ((5, 6), 1, torch.zeros(0, dtype=torch.int64), False),           # no indices
])
def test_constant_index_gather_matches_reference(data, axis, indices, view):
    node = make_node("Gather", [(data, DType.FLOAT16), (tuple(indices.shape), DType.INT64)], {"axis": axis}, opset=13)
    node.inputs[1].const = indices.numpy()
    table = torch.randn(data, generator=torch.Generator().manual_seed(0)).to(device=DEVICE, dtype=torch.float16)
    out = check_against_reference(node, "constant_indices", [table, indices.to(DEVICE)], "exact")[0]
    assert (out.untyped_storage().data_ptr() == table.untyped_storage().data_ptr()) == view


@cuda
def test_constant_index_gather_supports_reasons():
    tactic = find_tactic("cuda", "Gather", "", "constant_indices")
    node = make_node("Gather", [((4, 8), DType.FLOAT32), ((3,), DType.INT64)], {"axis": 1}, opset=13)
    assert "not a constant" in tactic.supports(node)
    node.inputs[1].const = torch.tensor([0, 7, -8]).numpy()
    assert tactic.supports(node) is None
    node.inputs[1].const = torch.tensor([0, 8]).numpy()
    assert "outside [-8, 8)" in tactic.supports(node)
    # An axis sized at run time is checked then (below).
    symbolic = make_node("Gather", [(("B", "S", 8), DType.FLOAT32), ((), DType.INT64)], {"axis": 1}, opset=13)
    symbolic.inputs[1].const = torch.tensor(0).numpy()
    assert tactic.supports(symbolic) is None


@cuda
def test_constant_index_gather_checks_a_run_time_axis_per_size():
    # BERT's pooler in an engine built for a range of sequence lengths: token 0 of [B, S, H].
    node = make_node("Gather", [(("B", "S", 8), DType.FLOAT16), ((2,), DType.INT64)], {"axis": 1}, opset=13)
    node.inputs[1].const = torch.tensor([0, 4]).numpy()
    table = torch.randn(2, 6, 8, generator=torch.Generator().manual_seed(0)).to(device=DEVICE, dtype=torch.float16)
    index = torch.tensor([0, 4], device=DEVICE)
    check_against_reference(node, "constant_indices", [table, index], "exact")
    # At S = 3 index 4 is outside: the reference's zero rows, no device assert.
    out = run(node, "constant_indices", [table[:, :3].contiguous(), index])[0]
    assert torch.equal(out[:, 0], table[:, 0]) and torch.all(out[:, 1] == 0)
    torch.cuda.synchronize()


# -- Triton GEMM with a fused epilogue ---------------------------------------------------------

TRITON_GEMM_CASES = [
    # (a, b, bias, residual, attrs): BERT's feed-forward shape, a transposed weight with a residual
    # added after the activation, edges that are not tile multiples, K not a multiple of 64
    ((2, 128, 768), (768, 3072), (3072,), None, {"activation": "Gelu"}),
    ((70, 64), (130, 64), (1, 130), (70, 130), {"transB": 1, "activation": "Relu", "residual_after_activation": 1}),
    ((3, 5, 96), (96, 64), (64,), (3, 5, 64), {"activation": "GeluTanh"}),
    ((33, 200), (200, 72), None, None, {"activation": "Silu"}),
    ((16, 64), (64, 48), (48,), None, {"activation": "Sigmoid"}),
    ((16, 64), (64, 48), (48,), (16, 48), {"activation": "Tanh"}),
    ((1, 768), (768, 768), (768,), None, {"activation": "Tanh"}),            # BERT's pooler at batch 1
]


@cuda
@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
@pytest.mark.parametrize("tile", ["128x256", "64x128", "16x32"])
@pytest.mark.parametrize("case", range(len(TRITON_GEMM_CASES)))
def test_triton_gemm_matches_reference(dtype, tile, case):
    dt = DTYPES[dtype]
    a, b, bias, residual, attrs = TRITON_GEMM_CASES[case]
    specs = [(a, dt), (b, dt), (bias, dt) if bias else None] + ([(residual, dt)] if residual else [])
    node = make_node("FusedMatMul", specs, attrs, domain="tensorkiln", opset=1)
    inputs = random_inputs(node, [1.0, 1.0 / math.sqrt(a[-1]), 0.5, 1.0], seed=case)
    check_against_reference(node, f"triton_gemm_{tile}", inputs, dtype)


TMA_GEMM_CASES = [
    # (a, b, bias, residual, attrs): BERT's feed-forward shape, a transposed weight with a residual
    # after the activation, rows and columns that are not tile multiples, a residual before a Relu
    ((2, 128, 768), (768, 3072), (3072,), None, {"activation": "Gelu"}),
    ((70, 64), (136, 64), (1, 136), (70, 136), {"transB": 1, "activation": "Relu", "residual_after_activation": 1}),
    ((3, 5, 96), (96, 64), (64,), (3, 5, 64), {"activation": "GeluTanh"}),
    ((300, 200), (200, 72), None, (300, 72), {}),
    ((16, 64), (64, 48), (48,), (16, 48), {"activation": "Relu"}),
]


@cuda
@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
@pytest.mark.parametrize("case", range(len(TMA_GEMM_CASES)))
def test_tma_gemm_matches_reference(dtype, case):
    if torch.cuda.get_device_capability() < (9, 0):
        pytest.skip("TMA needs a Hopper GPU")
    dt = DTYPES[dtype]
    a, b, bias, residual, attrs = TMA_GEMM_CASES[case]
    specs = [(a, dt), (b, dt), (bias, dt) if bias else None] + ([(residual, dt)] if residual else [])
    node = make_node("FusedMatMul", specs, attrs, domain="tensorkiln", opset=1)
    inputs = random_inputs(node, [1.0, 1.0 / math.sqrt(a[-1]), 0.5, 1.0], seed=case)
    check_against_reference(node, "triton_tma_128x256", inputs, dtype)
    # An A that TMA cannot read in place (rows 16-byte misaligned) is copied first.
    k = a[-1]
    wide = torch.randn(*a[:-1], k + 1, device=DEVICE).to(dt.torch)
    inputs[0] = wide[..., 1:]
    check_against_reference(node, "triton_tma_128x256", inputs, dtype)


@cuda
@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_cublaslt_tanh_gelu_matches_reference(dtype):
    dt = DTYPES[dtype]
    node = make_node("FusedMatMul", [((2, 128, 768), dt), ((768, 3072), dt), ((3072,), dt)], {"activation": "Gelu"},
                     domain="tensorkiln", opset=1)
    inputs = random_inputs(node, [1.0, 1.0 / math.sqrt(768), 0.5], seed=1)
    with_constant_weight(node, inputs[1])
    check_against_reference(node, "cublaslt_gelu_tanh", inputs, dtype)


@cuda
def test_cublaslt_tanh_gelu_supports_reasons():
    tactic = find_tactic("cuda", "FusedMatMul", "tensorkiln", "cublaslt_gelu_tanh")
    assert tactic.source == "cublaslt"

    def node(attrs, dt=DType.FLOAT16, bias=(32,)):
        specs = [((16, 64), dt), ((64, 32), dt), (bias, dt) if bias else None]
        return with_constant_weight(make_node("FusedMatMul", specs, attrs, domain="tensorkiln", opset=1),
                                    torch.randn(64, 32))

    assert tactic.supports(node({"activation": "Gelu"})) is None
    assert "float32" in tactic.supports(node({"activation": "Gelu"}, dt=DType.FLOAT32))
    assert "no erf GELU" in tactic.supports(node({"activation": "Relu"}))
    assert "row bias" in tactic.supports(node({"activation": "Gelu"}, bias=None))
    plain = make_node("FusedMatMul", [((16, 64), DType.FLOAT16), ((64, 32), DType.FLOAT16), ((32,), DType.FLOAT16)],
                      {"activation": "Gelu"}, domain="tensorkiln", opset=1)
    assert "not a constant" in tactic.supports(plain)


@cuda
def test_tma_gemm_supports_reasons():
    tactic = find_tactic("cuda", "FusedMatMul", "tensorkiln", "triton_tma_128x256")
    odd = make_node("FusedMatMul", [((16, 60), DType.FLOAT16), ((60, 32), DType.FLOAT16), ((32,), DType.FLOAT16)],
                    {"activation": "Relu"}, domain="tensorkiln", opset=1)
    reason = tactic.supports(odd)
    if torch.cuda.get_device_capability() < (9, 0):
        assert "Hopper" in reason
    else:
        assert "multiples of 8" in reason


@cuda
def test_triton_gemm_supports_reasons():
    tactic = find_tactic("cuda", "FusedMatMul", "tensorkiln", "triton_gemm_128x256")
    half = DType.FLOAT16

    def node(attrs, a=(16, 64), b=(64, 32), dt=half, residual=None):
        specs = [(a, dt), (b, dt), ((32,), dt)] + ([(residual, dt)] if residual else [])
        return make_node("FusedMatMul", specs, attrs, domain="tensorkiln", opset=1)

    assert tactic.supports(node({"activation": "Gelu"})) is None
    assert tactic.supports(node({}, residual=(16, 32))) is None
    assert "cuBLASLt's bias epilogue" in tactic.supports(node({}))
    assert "float32" in tactic.supports(node({"activation": "Relu"}, dt=DType.FLOAT32))
    assert "alpha" in tactic.supports(node({"activation": "Relu", "alpha": 2.0}))
    assert "3-D weight" in tactic.supports(node({"activation": "Relu"}, a=(2, 16, 64), b=(2, 64, 32)))
    assert "activation Elu" in tactic.supports(node({"activation": "Elu", "activation_params": [1.0]}))


# -- int8 GEMMs (MatMulInteger, QLinearMatMul) -----------------------------------------------

_QUANT = {"int8": DType.INT8, "uint8": DType.UINT8}


def quantized_tensor(shape: Sequence[int], dtype: str, gen: torch.Generator) -> torch.Tensor:
    low, high = (-128, 128) if dtype == "int8" else (0, 256)
    return torch.randint(low, high, tuple(shape), generator=gen, dtype=torch.int16).to(_QUANT[dtype].torch).to(DEVICE)


# (a shape, b shape, zero points: "none" | "scalar" | "per_row_column")
INT8_GEMM_CASES = [
    ((64, 96), (96, 48), "per_row_column"),
    ((2, 24, 64), (64, 32), "scalar"),         # leading dims flattened into rows
    ((4, 20, 40), (40, 24), "per_row_column"),  # per-row zero points repeat over the batch
    ((3, 17), (17, 5), "scalar"),               # M <= 16, K and N not multiples of 8: padded
    ((128, 768), (768, 200), "none"),
]


@cuda
@pytest.mark.parametrize("a_dtype", ["int8", "uint8"])
@pytest.mark.parametrize("b_dtype", ["int8", "uint8"])
@pytest.mark.parametrize("case", range(len(INT8_GEMM_CASES)))
def test_int8_mm_matmul_integer_is_exact(a_dtype, b_dtype, case):
    a_shape, b_shape, zero_points = INT8_GEMM_CASES[case]
    gen = torch.Generator().manual_seed(case)
    specs: list[Optional[tuple]] = [(a_shape, _QUANT[a_dtype]), (b_shape, _QUANT[b_dtype])]
    inputs = [quantized_tensor(a_shape, a_dtype, gen), quantized_tensor(b_shape, b_dtype, gen)]
    if zero_points != "none":
        za_shape, zb_shape = ((), ()) if zero_points == "scalar" else ((a_shape[-2],), (b_shape[1],))
        specs += [(za_shape, _QUANT[a_dtype]), (zb_shape, _QUANT[b_dtype])]
        inputs += [quantized_tensor(za_shape, a_dtype, gen), quantized_tensor(zb_shape, b_dtype, gen)]
    node = with_constant_weight(make_node("MatMulInteger", specs), inputs[1])
    out = check_against_reference(node, "int8_mm", inputs, "exact")[0]
    assert out.dtype == torch.int32 and out.device == inputs[0].device


@cuda
@pytest.mark.parametrize("dtype", ["int8", "uint8"])
@pytest.mark.parametrize("per_row", [False, True])
def test_int8_mm_qlinear_matmul_is_exact(dtype, per_row):
    gen = torch.Generator().manual_seed(7)
    m, k, n = 40, 72, 24
    q = _QUANT[dtype]
    rows = (m,) if per_row else ()
    specs = [((2, m, k), q), (rows, DType.FLOAT32), (rows, q), ((k, n), DType.INT8), ((n,), DType.FLOAT32),
             ((n,), DType.INT8), ((), DType.FLOAT32), ((), q)]
    scale = torch.rand(rows, generator=gen).to(DEVICE) * 0.05 + 0.01
    inputs = [quantized_tensor((2, m, k), dtype, gen), scale, quantized_tensor(rows, dtype, gen),
              quantized_tensor((k, n), "int8", gen), torch.rand(n, generator=gen).to(DEVICE) * 0.02 + 0.005,
              quantized_tensor((n,), "int8", gen), torch.tensor(0.9, device=DEVICE), quantized_tensor((), dtype, gen)]
    node = with_constant_weight(make_node("QLinearMatMul", specs, opset=21), inputs[3], 3)
    check_against_reference(node, "int8_mm", inputs, "exact")


@cuda
def test_int8_mm_supports_reasons():
    from tensorkiln.tactics.cuda.int8_gemm import MAX_K

    tactic = find_tactic("cuda", "MatMulInteger", "", "int8_mm")
    i8 = DType.INT8

    def node(a_shape, b_shape, constant=True):
        made = make_node("MatMulInteger", [(a_shape, i8), (b_shape, i8)])
        return with_constant_weight(made, torch.zeros(b_shape, dtype=torch.int8)) if constant else made

    assert tactic.supports(node((8, 16), (16, 8))) is None
    assert "not a constant" in tactic.supports(node((8, 16), (16, 8), constant=False))
    assert "K = " in tactic.supports(node((8, MAX_K + 8), (MAX_K + 8, 8)))
    assert "not 2-D" in tactic.supports(make_node("MatMulInteger", [((2, 8, 16), i8), ((2, 16, 8), i8)]))
    assert "rank >= 2" in tactic.supports(make_node("MatMulInteger", [((16,), i8), ((16, 8), i8)]))
