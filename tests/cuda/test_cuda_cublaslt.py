"""The cuBLASLt algorithm tactics ("cublaslt_r<i>", "cublaslt_nt_r<i>") against the reference tactic at each
precision's tolerance, every rank, inside and outside CUDA graphs; their supports() reasons (no GPU needed)."""

from __future__ import annotations

import ctypes
import math

import pytest
import torch

from tensorkiln.ir import DType
from tensorkiln.tactics import find_tactic
from tensorkiln.tactics.cuda import cublaslt
from tensorkiln.tactics.cuda.cublaslt_api import MAX_ALGORITHMS, loaded_library_path
from test_cuda_tactics import (DEVICE, DTYPES, _ctx, check_against_reference, make_node, precision_of, random_inputs, run,
                               with_constant_weight)

cuda = pytest.mark.cuda
DOMAIN = "tensorkiln"
RANKS = range(MAX_ALGORITHMS)

CASES = [
    # (a, b, bias, residual, attrs)
    ((2, 16, 64), (64, 96), (96,), None, {"activation": "Relu"}),
    ((2, 16, 64), (64, 96), (96,), None, {"activation": "GeluTanh"}),
    ((37, 48), (48, 200), (200,), (37, 200), {}),                             # residual as C; N not a multiple of 8
    ((1, 768), (768, 2304), (2304,), None, {}),                               # one row
    ((128, 3072), (3072, 768), (768,), None, {}),                             # BERT's FFN2 at batch 1: split-K
    ((16, 64), (96, 64), (1, 96), None, {"transB": 1, "alpha": 0.5}),
    ((32, 64), (64, 96), (96,), (32, 96), {"activation": "Relu"}),           # residual before the activation
    ((32, 64), (64, 96), None, None, {}),
    ((16, 64), (64, 96), (1,), None, {"activation": "Relu"}),                # one bias value for every column
]


def fused_node(case: int, dt: DType):
    a, b, bias, residual, attrs = CASES[case]
    specs = [(a, dt), (b, dt), (bias, dt) if bias else None] + ([(residual, dt)] if residual else [])
    node = make_node("FusedMatMul", specs, attrs, domain=DOMAIN, opset=1)
    inputs = random_inputs(node, [1.0, 1.0 / math.sqrt(a[-1]), 0.5, 1.0], seed=case)
    with_constant_weight(node, inputs[1])
    return node, inputs


@cuda
@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("layout", ["", "nt_"])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_fused_matmul_every_rank_matches_reference(dtype, layout, case):
    node, inputs = fused_node(case, DTYPES[dtype])
    if layout and CASES[case][4].get("transB"):
        assert "transB" in find_tactic("cuda", "FusedMatMul", DOMAIN, "cublaslt_nt_r0").supports(node)
        return
    for rank in RANKS:
        check_against_reference(node, f"cublaslt_{layout}r{rank}", inputs, precision_of(dtype, "gemm"))


@cuda
@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_erf_gelu_runs_in_the_tanh_epilogue_for_half_layers(dtype):
    dt = DTYPES[dtype]
    node = make_node("FusedMatMul", [((2, 128, 768), dt), ((768, 3072), dt), ((3072,), dt)], {"activation": "Gelu"},
                     domain=DOMAIN, opset=1)
    inputs = random_inputs(node, [1.0, 1.0 / math.sqrt(768), 0.5], seed=1)
    with_constant_weight(node, inputs[1])
    for rank in (0, MAX_ALGORITHMS - 1):
        check_against_reference(node, f"cublaslt_nt_r{rank}", inputs, dtype)


@cuda
@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_matmul_reads_strided_rows_and_converts_weights(dtype):
    dt = DTYPES[dtype]
    node = make_node("MatMul", [((3, 20, 64), dt), ((64, 40), dt)])
    inputs = random_inputs(node, [1.0, 0.125], seed=3)
    # Rows 80 elements apart: read in place through the leading dimension.
    inputs[0] = torch.randn(3, 20, 80, device=DEVICE).to(dt.torch)[..., 8:72]
    for rank in (0, 3):
        check_against_reference(node, f"cublaslt_r{rank}", inputs, precision_of(dtype, "gemm"))
    other = DType.FLOAT32 if dt == DType.FLOAT16 else DType.FLOAT16
    mixed = make_node("MatMul", [((3, 20, 64), dt), ((64, 40), other)])
    check_against_reference(mixed, "cublaslt_r0", [inputs[0], inputs[1].to(other.torch)], "fp16")


@cuda
def test_ranks_run_the_heuristics_algorithms():
    node, inputs = fused_node(4, DType.FLOAT16)
    impl = cublaslt.CublasLtAlgorithm(MAX_ALGORITHMS - 1, transposed=False)
    call = impl._prepare(inputs[0], inputs[1], False, inputs[2], None, "", 1.0)
    assert call is not None and call.plan.algorithms, "cuBLASLt offered no algorithm for a plain fp16 GEMM"
    assert call.rank == min(MAX_ALGORITHMS - 1, len(call.plan.algorithms) - 1)
    tactic = find_tactic("cuda", "FusedMatMul", DOMAIN, f"cublaslt_r{MAX_ALGORITHMS - 1}")
    assert tactic.workspace_bytes(node, inputs) == call.plan.algorithms[call.rank].workspace_size
    assert tactic.source == "cublaslt"


def _memset_nodes(graph: torch.cuda.CUDAGraph) -> int:
    """Memset nodes in a kept (keep_graph=True) CUDA graph, through the runtime torch loaded."""
    rt = ctypes.CDLL(loaded_library_path("libcudart.so"))
    raw, count = ctypes.c_void_p(graph.raw_cuda_graph()), ctypes.c_size_t(0)
    assert rt.cudaGraphGetNodes(raw, None, ctypes.byref(count)) == 0
    nodes = (ctypes.c_void_p * count.value)()
    assert rt.cudaGraphGetNodes(raw, nodes, ctypes.byref(count)) == 0
    kinds = []
    for node in nodes:
        kind = ctypes.c_int()
        assert rt.cudaGraphNodeGetType(ctypes.c_void_p(node), ctypes.byref(kind)) == 0
        kinds.append(kind.value)
    return kinds.count(2)  # cudaGraphNodeTypeMemset


@cuda
def test_algorithms_with_workspace_are_also_offered_without():
    # BERT-base's QKV GEMM at batch 64: cuBLAS 13's kernels for it take a 4-byte scheduler counter that
    # cuBLASLt zeroes by a memset before each launch; the ranks after the workspace list run them without.
    node = make_node("FusedMatMul", [((8192, 768), DType.FLOAT16), ((768, 2304), DType.FLOAT16),
                                     ((2304,), DType.FLOAT16)], {}, domain=DOMAIN, opset=1)
    inputs = random_inputs(node, [1.0, 1.0 / math.sqrt(768), 0.5], seed=5)
    with_constant_weight(node, inputs[1])
    call = cublaslt.CublasLtAlgorithm(0, transposed=True)._prepare(inputs[0], inputs[1], False, inputs[2], None,
                                                                  "", 1.0)
    listed = [(bytes(r.algo.data), r.workspace_size) for r in call.plan.algorithms]
    assert len(set(listed)) == len(listed), "an (algorithm, workspace) pair listed twice"
    with_workspace = [rank for rank, (_, size) in enumerate(listed) if size]
    for rank in with_workspace:
        algo = listed[rank][0]
        assert any(a == algo and size == 0 for a, size in listed[rank + 1:]), \
            f"rank {rank} (workspace {listed[rank][1]} B) has no no-workspace form after it"
    without = [rank for rank, (_, size) in enumerate(listed) if size == 0]
    assert without, "no algorithm runs without workspace"
    tactic = find_tactic("cuda", "FusedMatMul", DOMAIN, f"cublaslt_nt_r{without[0]}")
    assert tactic.workspace_bytes(node, inputs) == 0
    check_against_reference(node, f"cublaslt_nt_r{without[0]}", inputs, "fp16")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    graph = torch.cuda.CUDAGraph(keep_graph=True)
    with torch.cuda.graph(graph, stream=stream):
        tactic.run(_ctx(), inputs, node.attrs)
    assert _memset_nodes(graph) == 0, f"rank {without[0]} runs without workspace but its graph has a memset"


@cuda
@pytest.mark.parametrize("case", [0, 4])
def test_graph_replay_matches_eager(case):
    node, inputs = fused_node(case, DType.FLOAT16)
    tactic = find_tactic("cuda", "FusedMatMul", DOMAIN, "cublaslt_nt_r1")
    eager = run(node, "cublaslt_nt_r1", inputs)[0]
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        tactic.run(_ctx(), inputs, node.attrs)  # warm: plan made outside the capture
    torch.cuda.current_stream().wait_stream(stream)
    with torch.cuda.graph(graph):
        captured = tactic.run(_ctx(), inputs, node.attrs)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(captured, eager)


def test_supports_reasons():
    half = DType.FLOAT16
    plain = find_tactic("cuda", "FusedMatMul", DOMAIN, "cublaslt_r0")
    nt = find_tactic("cuda", "FusedMatMul", DOMAIN, "cublaslt_nt_r0")

    def node(attrs=None, a=(16, 64), b=(64, 32), bias=(32,), residual=None, dt=half, const=True):
        specs = [(a, dt), (b, dt), (bias, dt) if bias else None] + ([(residual, dt)] if residual else [])
        n = make_node("FusedMatMul", specs, attrs or {}, domain=DOMAIN, opset=1)
        return with_constant_weight(n, torch.zeros(b)) if const else n

    assert plain.supports(node()) is None and nt.supports(node()) is None
    assert plain.supports(node({"activation": "Gelu"})) is None
    assert "fp32 layer" in plain.supports(node({"activation": "Gelu"}, dt=DType.FLOAT32))
    assert "activation Tanh" in plain.supports(node({"activation": "Tanh"}))
    assert "transA" in plain.supports(node({"transA": 1}, a=(64, 16)))
    assert "not 2-D" in plain.supports(node(b=(2, 64, 32), a=(2, 16, 64)))
    assert "beta" in plain.supports(node({"beta": 0.5}))
    assert "one row" in plain.supports(node(bias=(16, 32)))
    assert "after the activation" in plain.supports(node({"activation": "Relu", "residual_after_activation": 1},
                                                         residual=(16, 32)))
    assert plain.supports(node({"activation": "Relu"}, residual=(16, 32))) is None
    assert "not a constant" in nt.supports(node(const=False))
    assert plain.supports(node(const=False)) is None
    assert "transB" in nt.supports(node({"transB": 1}, b=(32, 64)))
    assert "float64" in plain.supports(node(dt=DType.FLOAT64))
    matmul = find_tactic("cuda", "MatMul", "", "cublaslt_r0")
    assert "1-D" in matmul.supports(make_node("MatMul", [((64,), half), ((64, 32), half)]))


@cuda
def test_workspace_limit_leaves_out_the_algorithms_that_need_one():
    import numpy as np
    import onnx.parser
    from onnx import numpy_helper

    from tensorkiln import Builder, BuilderConfig
    from tensorkiln.frontends.onnx import parse_onnx

    # BERT's FFN2 shape at batch 1: cuBLASLt's first-ranked algorithms split K and need workspace.
    model = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    mm (float16[128,3072] x) => (float16[128,768] y) { y = MatMul(x, w) }
    """)
    w = (np.random.default_rng(0).standard_normal((3072, 768)) / 64).astype(np.float16)
    model.graph.initializer.append(numpy_helper.from_array(w, "w"))
    node = Builder(BuilderConfig(device="cuda", workspace_bytes=0)).build(parse_onnx(model)).graph.nodes[0]
    timed = {name for name in node.meta["tactic_times_ms"] if name.startswith("cublaslt")}
    rejected = {name: why for name, why in node.meta.get("tactic_rejected", {}).items() if name.startswith("cublaslt")}
    assert timed, "no cuBLASLt algorithm without workspace was timed"
    assert all("the limit is 0" in why for why in rejected.values()), rejected
    assert len(timed) + len(rejected) == 2 * MAX_ALGORITHMS
