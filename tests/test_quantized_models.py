"""Dynamically quantized models (onnxruntime's quantize_dynamic form: DynamicQuantizeLinear + MatMulInteger)
built and run end to end, against onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models import dynamic_quantized_mlp
from tensorkiln import Builder, BuilderConfig, Runtime
from tensorkiln.frontends.onnx import parse_onnx
from tensorkiln.testing.oracles import run_onnxruntime
from tensorkiln.testing.tolerances import assert_close


@pytest.mark.parametrize("a_dtype", [torch.int8, torch.uint8])
@pytest.mark.parametrize("b_dtype", [torch.int8, torch.uint8])
@pytest.mark.parametrize("zero_points", ["none", "scalar", "per_row_column", "b_only", "a_only"])
@pytest.mark.parametrize("a_shape, n", [((5, 12), 7), ((2, 3, 20), 16), ((40, 64), 24), ((4, 6, 8), 8)])
def test_the_int8_decomposition_equals_the_exact_product(a_dtype, b_dtype, zero_points, a_shape, n):
    """int8_mm's zero-point algebra around torch._int_mm (which runs on the CPU too), bit for bit against
    the op's float64 product, with padded rows/columns and flattened leading dims."""
    from tensorkiln.ops.matmul_integer import quantized_product
    from tensorkiln.tactics.cuda.int8_gemm import int8_product

    gen = torch.Generator().manual_seed(len(a_shape) * 100 + n)

    def ints(shape, dtype):
        low, high = (-128, 128) if dtype == torch.int8 else (0, 256)
        return torch.randint(low, high, shape, generator=gen, dtype=torch.int16).to(dtype)

    a, b = ints(a_shape, a_dtype), ints((a_shape[-1], n), b_dtype)
    za = {"scalar": ints((), a_dtype), "per_row_column": ints((a_shape[-2],), a_dtype),
          "a_only": ints((a_shape[-2],), a_dtype)}.get(zero_points)
    zb = {"scalar": ints((), b_dtype), "per_row_column": ints((n,), b_dtype),
          "b_only": ints((n,), b_dtype)}.get(zero_points)
    assert torch.equal(int8_product(a, za, b, zb), quantized_product(a, za, b, zb))


def _feeds(batch: int) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(1).standard_normal((batch, 64)).astype(np.float32)}


def test_a_cpu_engine_matches_onnxruntime():
    model = dynamic_quantized_mlp()
    feeds = _feeds(8)
    plan = Builder(BuilderConfig(device="cpu")).build(parse_onnx(model))
    got = Runtime("cpu").load(plan).create_execution_context().execute(feeds)["y"]
    assert_close(got, run_onnxruntime(model, feeds)["y"], "fp32", what="y")


@pytest.mark.cuda
def test_a_cuda_engine_runs_the_int8_gemms_on_the_gpu_in_its_cuda_graph():
    """The products stay on the device (the reference multiplies in float64 there, int8_mm on the int8 tensor
    cores), so the engine is captured into a CUDA graph; both match onnxruntime."""
    model = dynamic_quantized_mlp()
    feeds = _feeds(48)
    plan = Builder(BuilderConfig(device="cuda")).build(parse_onnx(model))
    tactics = {layer["tactic"] for layer in plan.layers if layer["op"] == "MatMulInteger"}
    assert tactics <= {"int8_mm", "reference"} and tactics, plan.layers
    engine = Runtime("cuda").load(plan)
    on_gpu = {"x": torch.from_numpy(feeds["x"]).cuda()}
    eager = engine.create_execution_context(cuda_graph=False).execute(on_gpu)["y"]
    context = engine.create_execution_context()
    for _ in range(3):
        graphed = context.execute(on_gpu)["y"]
    assert engine.cuda_graph_failure is None and not context.warnings, context.warnings
    assert torch.equal(eager, graphed)
    assert_close(graphed.cpu().numpy(), run_onnxruntime(model, feeds)["y"], "fp32", what="y")
