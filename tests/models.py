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
