"""Linear algebra, reductions, the softmax family, parametric activations and
normalizations, checked against onnxruntime ("ort") or the ONNX reference evaluator
("ref") on every backend."""

from __future__ import annotations

from typing import Optional

import numpy as np
import onnx.parser
import pytest

from tensorkiln.errors import UnsupportedOpError
from tensorkiln.frontends.onnx import parse_onnx
from tensorkiln.ir import DType
from tensorkiln.testing.check import check_model

_NP = {"uint16": np.uint16, "uint64": np.uint64, "float": np.float32, "float16": np.float16, "double": np.float64, "int32": np.int32, "int64": np.int64,
       "uint8": np.uint8, "int8": np.int8, "uint32": np.uint32, "bool": np.bool_}
_PRECISION = {"float": "fp32", "float16": "fp16", "double": "fp64"}


def model(body: str, inputs: str, outputs: str, opset: int = 17) -> str:
    return f"""<ir_version: 10, opset_import: ["" : {opset}]>
    g ({inputs}) => ({outputs}) {{
        {body}
    }}"""


def rand(rng: np.random.Generator, shape: tuple, dtype: str, low: float = -3.0, high: float = 3.0) -> np.ndarray:
    np_dtype = _NP[dtype]
    if np.issubdtype(np_dtype, np.integer):
        info = np.iinfo(np_dtype)
        return rng.integers(max(info.min, int(low)), min(info.max, int(high)) + 1, size=shape).astype(np_dtype)
    if np_dtype == np.bool_:
        return rng.random(shape) < 0.5
    return rng.uniform(low, high, size=shape).astype(np_dtype)


def parse_unshaped(text: str) -> onnx.ModelProto:
    """The model with its outputs' shapes left undeclared, so inference alone decides them."""
    m = onnx.parser.parse_model(text)
    for out in m.graph.output:
        out.type.tensor_type.ClearField("shape")
    return m


def dims(shape: tuple) -> str:
    return ",".join(str(d) for d in shape)


# ---- MatMul / Gemm / integer matmuls / Einsum -------------------------------------------

@pytest.mark.parametrize("dtype", ["float", "float16", "int32", "int64"])
@pytest.mark.parametrize("a_shape,b_shape", [((2, 3), (3, 4)), ((3,), (3, 4)), ((2, 3), (3,)), ((3,), (3,)),
                                             ((2, 1, 3, 4), (5, 4, 2))])
def test_matmul(backend, rng, dtype, a_shape, b_shape):
    text = model("y = MatMul(a, b)", f"{dtype}[{dims(a_shape)}] a, {dtype}[{dims(b_shape)}] b", f"{dtype} y")
    feeds = {"a": rand(rng, a_shape, dtype, -5, 5), "b": rand(rng, b_shape, dtype, -5, 5)}
    check_model(text, feeds, device=backend, oracle="ref", precision=_PRECISION.get(dtype, "exact"))


@pytest.mark.parametrize("trans_a,trans_b", [(0, 0), (1, 0), (0, 1), (1, 1)])
@pytest.mark.parametrize("c_shape", [None, (), (4,), (2, 1), (2, 4)])
def test_gemm(backend, rng, trans_a, trans_b, c_shape):
    a_shape = (3, 2) if trans_a else (2, 3)
    b_shape = (4, 3) if trans_b else (3, 4)
    inputs = f"float[{dims(a_shape)}] a, float[{dims(b_shape)}] b"
    feeds = {"a": rand(rng, a_shape, "float"), "b": rand(rng, b_shape, "float")}
    call = "a, b"
    if c_shape is not None:
        inputs += f", float[{dims(c_shape)}] c"
        feeds["c"] = rand(rng, c_shape, "float")
        call += ", c"
    body = f"y = Gemm <alpha: float = 0.5, beta: float = 2.0, transA: int = {trans_a}, transB: int = {trans_b}> ({call})"
    check_model(model(body, inputs, "float y"), feeds, device=backend, oracle="ort")


def test_gemm_opset6_broadcast_attribute(backend, rng):
    text = model("y = Gemm <broadcast: int = 1, beta: float = 3.0> (a, b, c)", "float[2,3] a, float[3,4] b, float[4] c",
                 "float y", opset=6)
    feeds = {"a": rand(rng, (2, 3), "float"), "b": rand(rng, (3, 4), "float"), "c": rand(rng, (4,), "float")}
    check_model(text, feeds, device=backend, oracle="ref")


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
@pytest.mark.parametrize("zero_points", ["none", "scalar", "per_row_column"])
def test_matmul_integer(backend, rng, dtype, zero_points):
    inputs = f"{dtype}[4,5] a, {dtype}[5,3] b"
    feeds = {"a": rand(rng, (4, 5), dtype, -128, 255), "b": rand(rng, (5, 3), dtype, -128, 255)}
    call = "a, b"
    if zero_points != "none":
        za, zb = ((), ()) if zero_points == "scalar" else ((4,), (3,))
        inputs += f", {dtype}[{dims(za)}] za, {dtype}[{dims(zb)}] zb"
        feeds["za"] = rand(rng, za, dtype, -10, 20)
        feeds["zb"] = rand(rng, zb, dtype, -10, 20)
        call += ", za, zb"
    # Computed here: the reference evaluator cannot broadcast a per-row a_zero_point.
    a = feeds["a"].astype(np.int32) - (feeds["za"].astype(np.int32).reshape(-1, 1) if "za" in feeds else 0)
    b = feeds["b"].astype(np.int32) - (feeds["zb"].astype(np.int32) if "zb" in feeds else 0)
    check_model(model(f"y = MatMulInteger({call})", inputs, "int32 y"), feeds, device=backend,
                expected={"y": a @ b}, precision="exact")


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
@pytest.mark.parametrize("scale_dtype", ["float", "float16"])
def test_qlinear_matmul(backend, rng, dtype, scale_dtype):
    text = model("y = QLinearMatMul(a, sa, za, b, sb, zb, sy, zy)",
                 f"{dtype}[2,4,3] a, {scale_dtype} sa, {dtype} za, {dtype}[3,5] b, {scale_dtype} sb, {dtype} zb, "
                 f"{scale_dtype} sy, {dtype} zy", f"{dtype} y", opset=21)
    np_scale = _NP[scale_dtype]
    feeds = {"a": rand(rng, (2, 4, 3), dtype, -128, 255), "b": rand(rng, (3, 5), dtype, -128, 255),
             "sa": np.array(0.05, np_scale), "sb": np.array(0.02, np_scale), "sy": np.array(0.07, np_scale),
             "za": np.array(3, _NP[dtype]), "zb": np.array(5, _NP[dtype]), "zy": np.array(4, _NP[dtype])}
    check_model(text, feeds, device=backend, oracle="ref", precision="exact")


@pytest.mark.parametrize("equation,shapes", [
    ("ij,jk->ik", [(2, 3), (3, 4)]),
    ("bij,bjk->bik", [(2, 2, 3), (2, 3, 4)]),
    ("ij,jk", [(2, 3), (3, 4)]),
    ("...ij->...ji", [(2, 3, 4)]),
    ("ii->i", [(3, 3)]),
    ("i,i", [(5,), (5,)]),
    ("bhqd,bhkd->bhqk", [(1, 2, 3, 4), (1, 2, 5, 4)]),
])
@pytest.mark.parametrize("dtype", ["float", "int64"])
def test_einsum(backend, rng, equation, shapes, dtype):
    names = [f"x{i}" for i in range(len(shapes))]
    inputs = ", ".join(f"{dtype}[{dims(s)}] {n}" for n, s in zip(names, shapes))
    text = model(f'y = Einsum <equation: string = "{equation}"> ({", ".join(names)})', inputs, f"{dtype} y")
    feeds = {n: rand(rng, s, dtype) for n, s in zip(names, shapes)}
    check_model(text, feeds, device=backend, oracle="ref", precision=_PRECISION.get(dtype, "exact"))


def test_einsum_symbolic_shape():
    text = model('y = Einsum <equation: string = "bij,bjk->bik"> (a, b)', "float[N,2,3] a, float[N,3,M] b", "float y")
    g = parse_onnx(parse_unshaped(text))
    assert g.outputs[0].shape == ("N", 2, "M")


def test_matmul_symbolic_shape():
    text = model("y = MatMul(a, b)", "float[B,S,8] a, float[8,16] b", "float y")
    g = parse_onnx(parse_unshaped(text))
    assert g.outputs[0].shape == ("B", "S", 16)


# ---- Softmax family ----------------------------------------------------------------------

@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax", "Hardmax"])
@pytest.mark.parametrize("opset", [11, 13])
@pytest.mark.parametrize("axis", [None, 0, 1, -1])
def test_softmax_family(backend, rng, op, opset, axis):
    attr = "" if axis is None else f"<axis: int = {axis}>"
    text = model(f"y = {op} {attr} (x)", "float[2,3,4] x", "float y", opset=opset)
    x = rand(rng, (2, 3, 4), "float")
    if op == "Hardmax":
        x = np.round(x)  # ties: the first maximum wins
    # onnxruntime: the reference evaluator lacks the opset < 13 flattening rule.
    check_model(text, {"x": x}, device=backend, oracle="ort")


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_softmax_float16_accumulates_in_float32(backend, rng, op):
    text = model(f"y = {op}(x)", "float16[4,300] x", "float16 y", opset=13)
    x = rand(rng, (4, 300), "float16", -8, 8)
    check_model(text, {"x": x}, device=backend, oracle="ort", precision="fp16")


def test_softmax_large_values_are_stable(backend):
    text = model("y = Softmax(x)", "float[1,3] x", "float y", opset=13)
    got = check_model(text, {"x": np.array([[1e4, 1e4 + 1, 1e4 + 2]], np.float32)}, device=backend, oracle="ort")
    assert np.isfinite(got["y"]).all()


def test_softmax_integer_input_is_unsupported():
    text = model("y = Softmax(x)", "int32[2,3] x", "int32 y", opset=13)
    with pytest.raises(UnsupportedOpError, match="Softmax"):
        parse_onnx(onnx.parser.parse_model(text))


# ---- Reductions --------------------------------------------------------------------------

_REDUCE_OPS = ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
               "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"]


def _reduce_model(op: str, dtype: str, shape: tuple, axes: Optional[list[int]], keepdims: int, opset: int,
                  noop: int = 0) -> tuple[str, dict]:
    axes_as_input = opset >= (13 if op == "ReduceSum" else 18)
    attrs = [f"keepdims: int = {keepdims}"]
    if noop:
        attrs.append(f"noop_with_empty_axes: int = {noop}")
    inputs = f"{dtype}[{dims(shape)}] x"
    call = "x"
    feeds: dict = {}
    if axes is not None:
        if axes_as_input:
            inputs += f", int64[{len(axes)}] axes"
            feeds["axes"] = np.array(axes, np.int64)
            call += ", axes"
        else:
            attrs.append(f"axes: ints = [{dims(tuple(axes))}]")
    return model(f"y = {op} <{', '.join(attrs)}> ({call})", inputs, f"{dtype} y", opset=opset), feeds


@pytest.mark.parametrize("op", _REDUCE_OPS)
@pytest.mark.parametrize("opset", [13, 18])
@pytest.mark.parametrize("axes,keepdims", [(None, 1), ([1], 0), ([0, -1], 1)])
def test_reduce(backend, rng, op, opset, axes, keepdims):
    text, feeds = _reduce_model(op, "float", (3, 4, 5), axes, keepdims, opset)
    low = 0.1 if op == "ReduceLogSum" else -2.0
    feeds["x"] = rand(rng, (3, 4, 5), "float", low, 2.0)
    check_model(text, feeds, device=backend, oracle="ort")


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceL2", "ReduceLogSumExp"])
def test_reduce_float16_accumulates_in_float32(backend, rng, op):
    text, feeds = _reduce_model(op, "float16", (4, 512), [1], 1, 18)
    feeds["x"] = rand(rng, (4, 512), "float16", 0.0, 1.0)
    got = check_model(text, feeds, device=backend, oracle="ref", precision="fp16")
    assert got["y"].dtype == np.float16


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceSumSquare", "ReduceL1",
                                "ReduceMean"])
@pytest.mark.parametrize("dtype", ["int32", "int64", "uint8"])
def test_reduce_integers(backend, rng, op, dtype):
    text, feeds = _reduce_model(op, dtype, (3, 4), [1], 0, 18)
    x = feeds["x"] = rand(rng, (3, 4), dtype, 0 if dtype == "uint8" else -5, 5)
    # Computed here: the reference evaluator widens some integer results to int64.
    wide = x.astype(np.int64)
    want = {"ReduceSum": wide.sum(1), "ReduceMax": wide.max(1), "ReduceMin": wide.min(1), "ReduceProd": wide.prod(1),
            "ReduceSumSquare": (wide * wide).sum(1), "ReduceL1": np.abs(wide).sum(1),
            "ReduceMean": np.trunc(wide.mean(1))}[op]
    check_model(text, feeds, device=backend, expected={"y": want.astype(x.dtype)}, precision="exact")


@pytest.mark.parametrize("op", ["ReduceMax", "ReduceMin"])
def test_reduce_bool(backend, rng, op):
    text, feeds = _reduce_model(op, "bool", (3, 4), [1], 1, 20)
    feeds["x"] = rand(rng, (3, 4), "bool")
    check_model(text, feeds, device=backend, oracle="ref", precision="exact")


@pytest.mark.parametrize("op,identity", [("ReduceSum", 0.0), ("ReduceProd", 1.0), ("ReduceMax", -np.inf),
                                         ("ReduceMin", np.inf), ("ReduceL2", 0.0), ("ReduceLogSumExp", -np.inf),
                                         ("ReduceLogSum", -np.inf), ("ReduceSumSquare", 0.0)])
def test_reduce_empty_set_gives_identity(backend, op, identity):
    text, feeds = _reduce_model(op, "float", (2, 0, 4), [1], 1, 18)
    feeds["x"] = np.zeros((2, 0, 4), np.float32)
    expected = {"y": np.full((2, 1, 4), identity, np.float32)}
    check_model(text, feeds, device=backend, expected=expected)


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceSumSquare", "ReduceMax", "ReduceL1"])
def test_reduce_noop_with_empty_axes(backend, rng, op):
    text, feeds = _reduce_model(op, "float", (2, 3), [], 1, 18, noop=1)
    feeds["x"] = rand(rng, (2, 3), "float")
    check_model(text, feeds, device=backend, oracle="ref")


def test_reduce_empty_axes_reduce_everything(backend, rng):
    text, feeds = _reduce_model("ReduceMean", "float", (2, 3), [], 0, 18)
    feeds["x"] = rand(rng, (2, 3), "float")
    check_model(text, feeds, device=backend, oracle="ref")


def test_reduce_symbolic_shape():
    text = model("y = ReduceSum <keepdims: int = 0> (x, axes)", "float[N,C,H] x", "float y", opset=13)
    text = text.replace("{", "{\n axes = Constant <value = int64[1] {1}> ()", 1)
    g = parse_onnx(parse_unshaped(text))
    assert g.outputs[0].shape == ("N", "H")


# ---- ArgMax / ArgMin ---------------------------------------------------------------------

@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("axis", [0, -1])
@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("select_last_index", [0, 1])
@pytest.mark.parametrize("dtype", ["float", "int32"])
def test_arg_extreme(backend, rng, op, axis, keepdims, select_last_index, dtype):
    attrs = f"axis: int = {axis}, keepdims: int = {keepdims}, select_last_index: int = {select_last_index}"
    text = model(f"y = {op} <{attrs}> (x)", f"{dtype}[3,4] x", "int64 y", opset=13)
    x = rand(rng, (3, 4), dtype, -2, 2)
    x = np.round(x).astype(x.dtype)  # many ties, where select_last_index matters
    check_model(text, {"x": x}, device=backend, oracle="ref", precision="exact")


# ---- Clip --------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float", "float16", "int32", "int64", "uint8"])
@pytest.mark.parametrize("bounds", [(-1, 2), (None, 1), (0, None), (2, -1)])
def test_clip_inputs(backend, rng, dtype, bounds):
    low, high = bounds
    names = ["" if low is None else "lo", "" if high is None else "hi"]
    call = ", ".join(["x"] + names).rstrip(", ")
    inputs = f"{dtype}[3,4] x" + "".join(f", {dtype} {n}" for n in names if n)
    feeds = {"x": rand(rng, (3, 4), dtype, 0 if dtype == "uint8" else -4, 4)}
    if low is not None:
        feeds["lo"] = np.array(max(low, 0) if dtype == "uint8" else low, _NP[dtype])
    if high is not None:
        feeds["hi"] = np.array(max(high, 1) if dtype == "uint8" else high, _NP[dtype])
    check_model(model(f"y = Clip({call})", inputs, f"{dtype} y", opset=13), feeds, device=backend, oracle="ref",
                precision=_PRECISION.get(dtype, "exact"))


@pytest.mark.parametrize("attrs", ["<min: float = -0.5, max: float = 0.5>", "<max: float = 1.0>", ""])
def test_clip_opset6_attributes(backend, rng, attrs):
    text = model(f"y = Clip {attrs} (x)", "float[3,4] x", "float y", opset=6)
    x = rand(rng, (3, 4), "float")
    x[0, 0] = np.inf
    check_model(text, {"x": x}, device=backend, oracle="ref")


# ---- Parametric activations ----------------------------------------------------------------

_ACTIVATIONS = [
    ("LeakyRelu", "<alpha: float = 0.1>", 16), ("LeakyRelu", "", 6), ("Elu", "<alpha: float = 0.7>", 6),
    ("Selu", "", 6), ("Selu", "<alpha: float = 2.0, gamma: float = 3.0>", 6), ("Celu", "<alpha: float = 1.5>", 12),
    ("HardSigmoid", "<alpha: float = 0.3, beta: float = 0.4>", 6), ("HardSwish", "", 14),
    ("ThresholdedRelu", "<alpha: float = 0.5>", 10), ("Gelu", "", 20),
    ("Gelu", '<approximate: string = "tanh">', 20), ("Mish", "", 18), ("Shrink", "<bias: float = 0.5>", 9),
    ("Shrink", "<lambd: float = 1.5>", 9), ("Swish", "<alpha: float = 1.5>", 24),
]


@pytest.mark.parametrize("op,attrs,opset", _ACTIVATIONS)
@pytest.mark.parametrize("dtype", ["float", "float16"])
def test_activation(backend, rng, op, attrs, opset, dtype):
    text = model(f"y = {op} {attrs} (x)", f"{dtype}[3,5] x", f"{dtype} y", opset=opset)
    # onnxruntime lacks Swish, and Celu in float16.
    oracle = "ref" if op in ("Swish", "Celu") else "ort"
    check_model(text, {"x": rand(rng, (3, 5), dtype)}, device=backend, oracle=oracle,
                precision=_PRECISION[dtype])


def test_activation_opset1_consumed_inputs_ignored(backend, rng):
    text = model("y = LeakyRelu <alpha: float = 0.2, consumed_inputs: ints = [0]> (x)", "float[4] x", "float y",
                 opset=1)
    x = rand(rng, (4,), "float")
    check_model(text, {"x": x}, device=backend, expected={"y": np.where(x < 0, np.float32(0.2) * x, x)})


def test_shrink_integer(backend, rng):
    text = model("y = Shrink <bias: float = 1.0, lambd: float = 1.0> (x)", "int32[8] x", "int32 y", opset=9)
    check_model(text, {"x": rand(rng, (8,), "int32", -4, 4)}, device=backend, oracle="ref", precision="exact")


def test_gelu_unknown_approximation_is_unsupported():
    text = model('y = Gelu <approximate: string = "sigmoid"> (x)', "float[3] x", "float y", opset=20)
    with pytest.raises(UnsupportedOpError) as err:
        parse_onnx(onnx.parser.parse_model(text))
    assert err.value.problems[0][1] == "Gelu" and "approximate" in err.value.problems[0][3]


# ---- Det and normalizations ----------------------------------------------------------------

@pytest.mark.parametrize("shape", [(3, 3), (2, 4, 4)])
def test_det(backend, rng, shape):
    text = model("y = Det(x)", f"float[{dims(shape)}] x", "float y")
    check_model(text, {"x": rand(rng, shape, "float")}, device=backend, oracle="ort")


@pytest.mark.parametrize("axis", [-1, 1, 0])
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("dtype", ["float", "float16"])
def test_layer_normalization(backend, rng, axis, with_bias, dtype):
    shape = (2, 3, 8)
    norm_shape = shape[axis % 3:]
    inputs = f"{dtype}[{dims(shape)}] x, {dtype}[{dims(norm_shape)}] s"
    call = "x, s"
    feeds = {"x": rand(rng, shape, dtype), "s": rand(rng, norm_shape, dtype)}
    if with_bias:
        inputs += f", {dtype}[{dims(norm_shape)}] b"
        feeds["b"] = rand(rng, norm_shape, dtype)
        call += ", b"
    outputs = f"{dtype} y" + (", float mean, float inv_std" if dtype == "float" else "")
    out_names = "y, mean, inv_std" if dtype == "float" else "y"
    text = model(f"{out_names} = LayerNormalization <axis: int = {axis}, epsilon: float = 1e-3> ({call})",
                 inputs, outputs)
    check_model(text, feeds, device=backend, oracle="ort", precision=_PRECISION[dtype])


def test_layer_normalization_statistics_types():
    text = model("y, m, r = LayerNormalization <axis: int = 2> (x, s)", "float16[N,4,8] x, float16[8] s",
                 "float16 y, float m, float r")
    g = parse_onnx(parse_unshaped(text))
    assert g.outputs[1].dtype is DType.FLOAT32 and g.outputs[1].shape == ("N", 4, 1)


@pytest.mark.parametrize("axis", [-1, 1])
@pytest.mark.parametrize("dtype", ["float", "float16"])
def test_rms_normalization(backend, rng, axis, dtype):
    shape = (2, 3, 8)
    norm_shape = shape[axis % 3:]
    text = model(f"y = RMSNormalization <axis: int = {axis}> (x, s)",
                 f"{dtype}[{dims(shape)}] x, {dtype}[{dims(norm_shape)}] s", f"{dtype} y", opset=23)
    feeds = {"x": rand(rng, shape, dtype), "s": rand(rng, norm_shape, dtype)}
    check_model(text, feeds, device=backend, oracle="ref", precision=_PRECISION[dtype])


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("axis", [0, -1])
def test_lp_normalization(backend, rng, p, axis):
    text = model(f"y = LpNormalization <axis: int = {axis}, p: int = {p}> (x)", "float[3,4] x", "float y")
    check_model(text, {"x": rand(rng, (3, 4), "float")}, device=backend, oracle="ort")


def test_lp_normalization_zero_vector_gives_zero(backend):
    text = model("y = LpNormalization(x)", "float[2,3] x", "float y")
    x = np.array([[0, 0, 0], [3, 4, 0]], np.float32)
    check_model(text, {"x": x}, device=backend, expected={"y": np.array([[0, 0, 0], [0.6, 0.8, 0]], np.float32)})


def test_lp_normalization_p3_is_unsupported():
    text = model("y = LpNormalization <p: int = 3> (x)", "float[2,3] x", "float y")
    with pytest.raises(UnsupportedOpError, match="p=3"):
        parse_onnx(onnx.parser.parse_model(text))


@pytest.mark.parametrize("axes", [None, [1], [0, 2, 3]])
def test_mean_variance_normalization(backend, rng, axes):
    attr = "" if axes is None else f"<axes: ints = [{dims(tuple(axes))}]>"
    text = model(f"y = MeanVarianceNormalization {attr} (x)", "float[2,3,4,5] x", "float y", opset=13)
    check_model(text, {"x": rand(rng, (2, 3, 4, 5), "float")}, device=backend, oracle="ort")


# ---- Unsigned dtypes torch only half supports ---------------------------------------------

@pytest.mark.parametrize("dtype", ["uint16", "uint32", "uint64"])
@pytest.mark.parametrize("case", ["ReduceMax", "ReduceMin", "ArgMax", "Clip", "MatMul", "ReduceSum"])
def test_wide_unsigned(backend, rng, dtype, case):
    np_dtype = np.dtype(dtype)
    top = np.iinfo(np_dtype).max
    # Values above the signed range, where a plain signed reinterpretation would misorder them.
    x = np.array([[top - 1, 3, top // 2 + 7], [5, top, 1]], np_dtype)
    feeds = {"x": x}
    if case in ("ReduceMax", "ReduceMin", "ReduceSum"):
        text = model(f"y = {case} <keepdims: int = 0> (x, axes)", f"{dtype}[2,3] x, int64[1] axes", f"{dtype} y",
                     opset=18)
        feeds["axes"] = np.array([1], np.int64)
        with np.errstate(over="ignore"):
            want = {"ReduceMax": x.max(1), "ReduceMin": x.min(1), "ReduceSum": x.sum(1, dtype=np_dtype)}[case]
    elif case == "ArgMax":
        text = model("y = ArgMax <axis: int = 1> (x)", f"{dtype}[2,3] x", "int64 y", opset=13)
        want = x.argmax(1, keepdims=True).astype(np.int64)
    elif case == "Clip":
        text = model("y = Clip(x, lo, hi)", f"{dtype}[2,3] x, {dtype} lo, {dtype} hi", f"{dtype} y", opset=13)
        feeds["lo"], feeds["hi"] = np.array(4, np_dtype), np.array(top - 2, np_dtype)
        want = np.clip(x, feeds["lo"], feeds["hi"])
    else:
        if dtype == "uint16":
            pytest.skip("ONNX MatMul has no uint16")
        text = model("y = MatMul(x, w)", f"{dtype}[2,3] x, {dtype}[3,2] w", f"{dtype} y", opset=13)
        feeds["w"] = np.array([[1, 2], [top, 3], [4, 5]], np_dtype)
        with np.errstate(over="ignore"):
            want = x @ feeds["w"]
    check_model(text, feeds, device=backend, expected={"y": want}, precision="exact")
