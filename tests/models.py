"""Small models for the core tests, in ONNX text with seeded weights."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser
from onnx import numpy_helper

ELEMENTWISE = """
<ir_version: 8, opset_import: ["" : 17]>
elementwise (float[N,4] x, float[N,4] y) => (float[N,4] z) {
    s = Add(x, y)
    m = Mul(s, w)
    z = Relu(m)
}
"""


def elementwise_model(seed: int = 0) -> onnx.ModelProto:
    """z = relu((x + y) * w) with a seeded weight w[4]."""
    model = onnx.parser.parse_model(ELEMENTWISE)
    w = np.random.default_rng(seed).standard_normal(4).astype(np.float32)
    model.graph.initializer.append(numpy_helper.from_array(w, "w"))
    return model


def elementwise_expected(x: np.ndarray, y: np.ndarray, model: onnx.ModelProto) -> np.ndarray:
    w = numpy_helper.to_array(model.graph.initializer[0])
    return np.maximum((x + y) * w, 0)


def _quantized_linear(x: str, layer: str, y: str) -> str:
    """ONNX text of y = dequantized(quantize(x) @ w) + b, the way quantize_dynamic writes a linear layer."""
    return f"""
    {x}_q, {x}_scale, {x}_zero = DynamicQuantizeLinear({x})
    {layer}_int = MatMulInteger({x}_q, {layer}_w, {x}_zero, {layer}_w_zero)
    {layer}_float = Cast <to = 1> ({layer}_int)
    {layer}_scale = Mul({x}_scale, {layer}_w_scale)
    {layer}_scaled = Mul({layer}_float, {layer}_scale)
    {y} = Add({layer}_scaled, {layer}_b)"""


DYNAMIC_QUANTIZED_MLP = f"""
<ir_version: 8, opset_import: ["" : 17]>
mlp (float[N,64] x) => (float[N,40] y) {{{_quantized_linear("x", "l1", "h")}
    r = Relu(h){_quantized_linear("r", "l2", "y")}
}}
"""


def dynamic_quantized_mlp(seed: int = 0) -> onnx.ModelProto:
    """Two linear layers as onnxruntime's quantize_dynamic writes them: the activations quantized to uint8 at
    run time (DynamicQuantizeLinear), int8 weights with per-column scales and zero points (the second a
    scalar zero point), MatMulInteger, then the scales and the bias in float. The weights use 7 bits, as
    quantize_dynamic's reduce_range writes them: onnxruntime's uint8 x int8 kernel on CPUs without VNNI
    sums pairs of products in saturating int16, and full-range weights make it inexact."""
    rng = np.random.default_rng(seed)
    model = onnx.parser.parse_model(DYNAMIC_QUANTIZED_MLP)
    weights = {
        "l1_w": rng.integers(-64, 64, (64, 96)).astype(np.int8),
        "l1_w_zero": rng.integers(-4, 5, (96,)).astype(np.int8),
        "l1_w_scale": (rng.random(96) * 0.01 + 0.005).astype(np.float32),
        "l1_b": rng.standard_normal(96).astype(np.float32),
        "l2_w": rng.integers(-64, 64, (96, 40)).astype(np.int8),
        "l2_w_zero": np.array(3, np.int8),
        "l2_w_scale": (rng.random(40) * 0.01 + 0.005).astype(np.float32),
        "l2_b": rng.standard_normal(40).astype(np.float32),
    }
    model.graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in weights.items())
    return model
