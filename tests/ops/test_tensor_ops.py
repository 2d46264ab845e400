"""Tensor / shape manipulation ops: results against onnxruntime or the ONNX reference
evaluator, symbolic shape inference, and the errors unsupported attributes give."""

from __future__ import annotations

import numpy as np
import pytest

from tensorkiln import DType, NetworkDefinition
from tensorkiln.errors import UnsupportedOpError
from tensorkiln.frontends.onnx.importer import parse_onnx
from tensorkiln.testing.check import check_model, parse


def model(opset: int, signature: str, body: str, init: str = "") -> str:
    """ONNX text of a one-graph model; `init` holds initializers (constant inputs)."""
    init = f"<{init}>" if init else ""
    return f'<ir_version: 10, opset_import: ["" : {opset}]>\ng {signature} {init}\n{{\n{body}\n}}'


def rand(rng, shape, dtype="float32") -> np.ndarray:
    if np.dtype(dtype).kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if np.dtype(dtype).kind == "b":
        return rng.random(shape) > 0.5
    info = np.iinfo(dtype)
    return rng.integers(max(info.min, -50), min(info.max, 50), shape, endpoint=True).astype(dtype)


TYPE = {"float32": "float", "float16": "float16", "int64": "int64", "int32": "int32", "bool": "bool",
        "uint8": "uint8", "uint16": "uint16", "uint64": "uint64", "int8": "int8", "float64": "double"}


# -- reshaping ------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "int64", "bool"])
@pytest.mark.parametrize("target,allowzero", [([0, -1], 0), ([4, 0, 2], 0), ([-1], 0), ([3, 2, 4], 1)])
def test_reshape(backend, rng, dtype, target, allowzero):
    t = TYPE[dtype]
    text = model(14, f"({t}[2,3,4] x) => ({t} y)", f"y = Reshape<allowzero={allowzero}>(x, s)",
                 f"int64[{len(target)}] s = {{{', '.join(map(str, target))}}}")
    check_model(text, {"x": rand(rng, (2, 3, 4), dtype)}, device=backend, oracle="ref")


def test_reshape_allowzero_empty(backend):
    text = model(14, "(float[0,3] x) => (float y)", "y = Reshape<allowzero=1>(x, s)", "int64[3] s = {3, 0, 1}")
    got = check_model(text, {"x": np.zeros((0, 3), np.float32)}, device=backend, oracle="ref")
    assert got["y"].shape == (3, 0, 1)


def test_reshape_opset1_shape_attribute(backend, rng):
    text = model(1, "(float[2,6] x) => (float y)", "y = Reshape<shape=[3, -1]>(x)")
    x = rand(rng, (2, 6))
    check_model(text, {"x": x}, device=backend, expected={"y": x.reshape(3, 4)})


@pytest.mark.parametrize("axis", [0, 1, 2, -1, -3])
def test_flatten(backend, rng, axis):
    text = model(13, "(float[2,3,4] x) => (float y)", f"y = Flatten<axis={axis}>(x)")
    check_model(text, {"x": rand(rng, (2, 3, 4))}, device=backend)


@pytest.mark.parametrize("opset", [11, 13])
@pytest.mark.parametrize("axes", [[0], [-1, 0], None])
def test_squeeze(backend, rng, opset, axes):
    if axes is None:
        body = "y = Squeeze(x)"
        init = ""
    elif opset < 13:
        body, init = f"y = Squeeze<axes={axes}>(x)", ""
    else:
        body, init = "y = Squeeze(x, a)", f"int64[{len(axes)}] a = {{{', '.join(map(str, axes))}}}"
    text = model(opset, "(float[1,3,1] x) => (float y)", body, init)
    check_model(text, {"x": rand(rng, (1, 3, 1))}, device=backend)


@pytest.mark.parametrize("opset", [11, 13])
@pytest.mark.parametrize("axes", [[0], [1, -1], [3, 0]])
def test_unsqueeze(backend, rng, opset, axes):
    if opset < 13:
        body, init = f"y = Unsqueeze<axes={axes}>(x)", ""
    else:
        body, init = "y = Unsqueeze(x, a)", f"int64[{len(axes)}] a = {{{', '.join(map(str, axes))}}}"
    text = model(opset, "(int32[2,3] x) => (int32 y)", body, init)
    check_model(text, {"x": rand(rng, (2, 3), "int32")}, device=backend)


@pytest.mark.parametrize("perm", [None, [0, 2, 1], [2, 0, 1]])
@pytest.mark.parametrize("dtype", ["float32", "float16", "uint8"])
def test_transpose(backend, rng, perm, dtype):
    attr = "" if perm is None else f"<perm={perm}>"
    t = TYPE[dtype]
    text = model(13, f"({t}[2,3,4] x) => ({t} y)", f"y = Transpose{attr}(x)")
    check_model(text, {"x": rand(rng, (2, 3, 4), dtype)}, device=backend)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_concat(backend, rng, axis):
    shapes = [[2, 3, 4], [2, 3, 4], [2, 3, 4]]
    shapes[1][axis] = 1
    sig = ", ".join(f"float[{','.join(map(str, s))}] x{i}" for i, s in enumerate(shapes))
    text = model(13, f"({sig}) => (float y)", f"y = Concat<axis={axis}>(x0, x1, x2)")
    check_model(text, {f"x{i}": rand(rng, s) for i, s in enumerate(shapes)}, device=backend)


@pytest.mark.parametrize("case", ["attr11", "input13", "equal13", "num_outputs18_uneven", "zero_size13"])
def test_split(backend, rng, case):
    body = {
        "attr11": ("y0, y1 = Split<axis=1, split=[2, 5]>(x)", 11, ""),
        "input13": ("y0, y1 = Split<axis=-1>(x, s)", 13, "int64[2] s = {3, 4}"),
        "equal13": ("y0, y1 = Split<axis=0>(x)", 13, ""),
        "num_outputs18_uneven": ("y0, y1 = Split<axis=1, num_outputs=2>(x)", 18, ""),
        "zero_size13": ("y0, y1 = Split<axis=1>(x, s)", 13, "int64[2] s = {0, 7}"),
    }[case]
    text = model(body[1], "(float[4,7] x) => (float y0, float y1)", body[0], body[2])
    check_model(text, {"x": rand(rng, (4, 7))}, device=backend)


@pytest.mark.parametrize("starts,ends,axes,steps", [
    ([1, 0], [3, 10], [0, 1], [1, 2]),
    ([-1], [-100], [1], [-1]),                 # negative step, end clamps below 0
    ([10, -2], [-10, 0], [0, 1], [-2, -1]),    # start past the end clamps to dim - 1
    ([0], [2 ** 63 - 1], [-1], None),          # INT64_MAX end
    ([5], [1], [0], None),                     # empty result
])
def test_slice(backend, rng, starts, ends, axes, steps):
    init = [f"int64[{len(starts)}] s = {{{', '.join(map(str, starts))}}}",
            f"int64[{len(ends)}] e = {{{', '.join(map(str, ends))}}}",
            f"int64[{len(axes)}] a = {{{', '.join(map(str, axes))}}}"]
    args = "x, s, e, a"
    if steps is not None:
        init.append(f"int64[{len(steps)}] p = {{{', '.join(map(str, steps))}}}")
        args += ", p"
    text = model(13, "(float[4,6] x) => (float y)", f"y = Slice({args})", ", ".join(init))
    check_model(text, {"x": rand(rng, (4, 6))}, device=backend)


def test_slice_opset1_attributes(backend, rng):
    text = model(9, "(float[4,6] x) => (float y)", "y = Slice<starts=[1, -3], ends=[100, -1], axes=[0, 1]>(x)")
    check_model(text, {"x": rand(rng, (4, 6))}, device=backend)


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
@pytest.mark.parametrize("pads", [[1, 2, 2, 1], [0, 3, 1, 0], [-1, 1, 1, -2]])
def test_pad(backend, rng, mode, pads):
    init = f"int64[4] p = {{{', '.join(map(str, pads))}}}, float v = {{1.5}}"
    args = "x, p, v" if mode == "constant" else "x, p"
    text = model(19, "(float[3,4] x) => (float y)", f'y = Pad<mode="{mode}">({args})', init)
    x = rand(rng, (3, 4))
    if min(pads) >= 0:
        check_model(text, {"x": x}, device=backend, oracle="ref")
        return
    # The reference evaluator refuses negative pads: they crop, then the rest pads the cropped input.
    begin, end = pads[:2], pads[2:]
    cropped = x[max(-begin[0], 0):3 - max(-end[0], 0), max(-begin[1], 0):4 - max(-end[1], 0)]
    widths = [(max(b, 0), max(e, 0)) for b, e in zip(begin, end)]
    want = np.pad(cropped, widths, mode="constant", constant_values=1.5) if mode == "constant" else \
        np.pad(cropped, widths, mode=mode)
    check_model(text, {"x": x}, device=backend, expected={"y": want})


def test_pad_axes_input(backend, rng):
    text = model(18, "(int32[2,3,4] x) => (int32 y)", 'y = Pad<mode="edge">(x, p, , a)',
                 "int64[4] p = {1, 2, 0, 3}, int64[2] a = {-1, 0}")
    check_model(text, {"x": rand(rng, (2, 3, 4), "int32")}, device=backend, oracle="ref")


def test_pad_opset2_attributes(backend, rng):
    text = model(2, "(float[2,3] x) => (float y)", 'y = Pad<mode="constant", pads=[0, 1, 2, 0], value=2.0>(x)')
    check_model(text, {"x": rand(rng, (2, 3))}, device=backend, oracle="ref")


# -- gathers and scatters ---------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "int64", "uint16"])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_gather(backend, rng, dtype, axis):
    t = TYPE[dtype]
    text = model(13, f"({t}[3,4,5] x, int64[2,2] i) => ({t} y)", f"y = Gather<axis={axis}>(x, i)")
    idx = np.array([[0, -1], [2, 1]], np.int64)
    check_model(text, {"x": rand(rng, (3, 4, 5), dtype), "i": idx}, device=backend, oracle="ref")


@pytest.mark.parametrize("index, axis", [(7, 0), (-6, 0), (5, 1)])
def test_gather_index_out_of_range_names_it(index, axis):
    """On the CPU an index outside [-size, size) is an error naming the layer and the index (on a
    GPU it is a row of zeros: tests/cuda/test_cuda_tactics.py)."""
    import torch

    from tensorkiln import Builder, BuilderConfig, Runtime
    from tensorkiln.errors import ExecutionError
    from tensorkiln.ops import get_op
    text = model(13, "(float[5,5] x, int64[2] i) => (float y)", f"y = Gather<axis={axis}>(x, i)")
    plan = Builder(BuilderConfig()).build(parse_onnx(parse(text)))
    ctx = Runtime().load(plan).create_execution_context()
    feeds = {"x": np.ones((5, 5), np.float32), "i": np.array([0, index], np.int64)}
    with pytest.raises(ExecutionError, match=rf"Gather.*index {index} is outside \[-5, 5\) along axis {axis}"):
        ctx.execute(feeds)
    embed = get_op("EmbedLayerNormalization", "tensorkiln")
    ids, table = torch.tensor([[1, index]]), torch.ones(5, 4)
    with pytest.raises(IndexError, match=rf"EmbedLayerNormalization: index {index} is outside"):
        embed.reference(None, [torch.ones(4), torch.zeros(4), None, ids, table],
                        {"epsilon": 1e-5, "stash_type": 1, "sum_output": 0})


@pytest.mark.parametrize("signature, body, indices, message", [
    ("(float[3,4] x, int64[3,2] i) => (float y)", "y = GatherElements<axis=1>(x, i)", [[0, 1], [4, 0], [1, 1]],
     r"GatherElements: index 4 is outside \[-4, 4\) along axis 1"),
    ("(float[3,4] x, int64[2,2] i) => (float y)", "y = GatherND(x, i)", [[0, 1], [3, 0]],
     r"GatherND: index 3 is outside \[-3, 3\) \(coordinate 0 of an index tuple\)"),
    ("(float[3,4] x, int64[1,4] i, float[1,4] u) => (float y)", "y = ScatterElements<axis=0>(x, i, u)",
     [[0, -4, 1, 2]], r"ScatterElements: index -4 is outside \[-3, 3\) along axis 0"),
    ("(float[3,4] x, int64[2,1] i, float[2,4] u) => (float y)", "y = ScatterND(x, i, u)", [[1], [5]],
     r"ScatterND: index 5 is outside \[-3, 3\)"),
])
def test_gather_and_scatter_indices_out_of_range_name_it(signature, body, indices, message):
    """On the CPU the index families' out-of-range indices are errors naming the layer and the
    index (on a GPU: zeros gathered, updates dropped, tests/cuda/test_cuda_tactics.py)."""
    from tensorkiln import Builder, BuilderConfig, Runtime
    from tensorkiln.errors import ExecutionError
    text = model(16, signature, body)
    plan = Builder(BuilderConfig()).build(parse_onnx(parse(text)))
    ctx = Runtime().load(plan).create_execution_context()
    idx = np.array(indices, np.int64)
    feeds = {"x": np.ones((3, 4), np.float32), "i": idx}
    if "u)" in signature:
        feeds["u"] = np.ones((idx.shape[0], 4), np.float32)
    with pytest.raises(ExecutionError, match=message):
        ctx.execute(feeds)


@pytest.mark.parametrize("axis", [0, 1])
def test_gather_elements(backend, rng, axis):
    ishape = (2, 4) if axis == 0 else (3, 2)
    text = model(13, f"(float[3,4] x, int32[{ishape[0]},{ishape[1]}] i) => (float y)",
                 f"y = GatherElements<axis={axis}>(x, i)")
    idx = rng.integers(-3, 3, ishape).astype(np.int32)
    check_model(text, {"x": rand(rng, (3, 4)), "i": idx}, device=backend, oracle="ref")


@pytest.mark.parametrize("batch_dims,ishape", [(0, (2, 2)), (0, (3, 1)), (1, (2, 1)), (1, (2, 3, 2))])
def test_gather_nd(backend, rng, batch_dims, ishape):
    text = model(13, f"(float[2,3,4] x, int64[{','.join(map(str, ishape))}] i) => (float y)",
                 f"y = GatherND<batch_dims={batch_dims}>(x, i)")
    k = ishape[-1]
    bounds = [2, 3, 4][batch_dims:batch_dims + k]
    idx = np.stack([rng.integers(-b, b, ishape[:-1]) for b in bounds], -1).astype(np.int64)
    check_model(text, {"x": rand(rng, (2, 3, 4)), "i": idx}, device=backend, oracle="ref")


@pytest.mark.parametrize("dtype", ["float32", "int32", "uint64"])
@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
def test_scatter_elements(backend, rng, dtype, reduction):
    t = TYPE[dtype]
    text = model(18, f"({t}[3,4] x, int64[2,4] i, {t}[2,4] u) => ({t} y)",
                 f'y = ScatterElements<axis=0, reduction="{reduction}">(x, i, u)')
    idx = np.array([[0, 1, 2, -1], [1, 2, 0, 0]], np.int64) if reduction == "none" else \
        rng.integers(-3, 3, (2, 4)).astype(np.int64)
    x = np.abs(rand(rng, (3, 4), dtype)) if dtype == "uint64" else rand(rng, (3, 4), dtype)
    u = np.abs(rand(rng, (2, 4), dtype)) if dtype == "uint64" else rand(rng, (2, 4), dtype)
    check_model(text, {"x": x.astype(dtype), "i": idx, "u": u.astype(dtype)}, device=backend, oracle="ref")


def test_scatter_deprecated(backend, rng):
    text = model(10, "(float[3,3] x, int64[1,2] i, float[1,2] u) => (float y)", "y = Scatter<axis=1>(x, i, u)")
    x, u = rand(rng, (3, 3)), rand(rng, (1, 2))
    want = x.copy()
    want[0, 2], want[0, 0] = u[0, 0], u[0, 1]
    check_model(text, {"x": x, "i": np.array([[2, 0]], np.int64), "u": u}, device=backend, expected={"y": want})


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
def test_scatter_nd(backend, rng, reduction):
    text = model(18, "(float[4,3,2] x, int64[2,2] i, float[2,2] u) => (float y)",
                 f'y = ScatterND<reduction="{reduction}">(x, i, u)')
    idx = np.array([[0, 1], [-1, 2]] if reduction == "none" else [[0, 1], [0, 1]], np.int64)
    check_model(text, {"x": rand(rng, (4, 3, 2)), "i": idx, "u": rand(rng, (2, 2))}, device=backend, oracle="ref")


@pytest.mark.parametrize("mode", ["linear", "circular"])
def test_tensor_scatter(backend, rng, mode):
    text = model(24, "(float[2,3,5,4] c, float[2,3,2,4] u, int64[2] w) => (float y)",
                 f'y = TensorScatter<mode="{mode}", axis=2>(c, u, w)')
    write = np.array([1, 3] if mode == "linear" else [4, 2], np.int64)
    check_model(text, {"c": rand(rng, (2, 3, 5, 4)), "u": rand(rng, (2, 3, 2, 4)), "w": write},
                device=backend, oracle="ref")


# -- shapes, constants, generators ------------------------------------------------------------

@pytest.mark.parametrize("target", [[3, 1, 4], [2, 1, 1, 1], [1]])
def test_expand(backend, rng, target):
    text = model(13, "(float[3,1] x) => (float y)", "y = Expand(x, s)",
                 f"int64[{len(target)}] s = {{{', '.join(map(str, target))}}}")
    check_model(text, {"x": rand(rng, (3, 1))}, device=backend)


@pytest.mark.parametrize("reps", [[1, 1], [2, 3], [0, 2]])
def test_tile(backend, rng, reps):
    text = model(13, "(int64[2,3] x) => (int64 y)", "y = Tile(x, r)", f"int64[2] r = {{{reps[0]}, {reps[1]}}}")
    check_model(text, {"x": rand(rng, (2, 3), "int64")}, device=backend)


@pytest.mark.parametrize("start,end", [(None, None), (1, None), (-2, -1), (5, None), (2, 1)])
def test_shape_and_size(backend, rng, start, end):
    attrs = [f"start={start}"] if start is not None else []
    attrs += [f"end={end}"] if end is not None else []
    attr = f"<{', '.join(attrs)}>" if attrs else ""
    text = model(15, "(float[2,3,4] x) => (int64 s, int64 n)", f"s = Shape{attr}(x)\nn = Size(x)")
    check_model(text, {"x": rand(rng, (2, 3, 4))}, device=backend)


@pytest.mark.parametrize("value", ["", "<value=int32[1] {7}>", "<value=double[1] {2.5}>"])
def test_constant_of_shape(backend, value):
    text = model(13, "(int64[3] s) => (y)", f"y = ConstantOfShape{value}(s)")
    check_model(text, {"s": np.array([2, 0, 3], np.int64)}, device=backend)
    check_model(text, {"s": np.array([2, 1, 3], np.int64)}, device=backend)


def test_constant_forms(backend):
    text = model(13, "(float[2] x) => (float y, int64 z)",
                 "c = Constant<value_floats=[1.0, 2.0]>()\ny = Add(x, c)\nz = Constant<value_int=3>()")
    check_model(text, {"x": np.ones(2, np.float32)}, device=backend)


def test_constant_layer_in_network_api(backend):
    import tensorkiln
    net = NetworkDefinition()
    x = net.add_input("x", DType.FLOAT32, ("N", 2))
    c = net.add_layer("Constant", [], {"value": np.array([[1.0, 2.0]], np.float32)})[0]
    assert c.type.shape == (1, 2)
    net.mark_output(net.add_elementwise(x, c, "add"), "y")
    out = tensorkiln.compile(net, device=backend).predict({"x": np.ones((3, 2), np.float32)})
    np.testing.assert_array_equal(out["y"], np.array([[2.0, 3.0]] * 3, np.float32))


@pytest.mark.parametrize("dtype", ["float32", "int64", "uint8", "bool"])
def test_where(backend, rng, dtype):
    t = TYPE[dtype]
    text = model(16, f"(bool[3,1] c, {t}[1,4] x, {t}[3,4] y) => ({t} z)", "z = Where(c, x, y)")
    check_model(text, {"c": rng.random((3, 1)) > 0.5, "x": rand(rng, (1, 4), dtype), "y": rand(rng, (3, 4), dtype)},
                device=backend, oracle="ref")


@pytest.mark.parametrize("dtype,args", [("float32", (1.5, 7.0, 0.5)), ("int32", (10, -3, -4)), ("int64", (3, 3, 1)),
                                        ("float64", (0.0, -1.0, 0.25))])
def test_range(backend, dtype, args):
    t = TYPE[dtype]
    text = model(11, f"({t} a, {t} b, {t} d) => ({t} y)", "y = Range(a, b, d)")
    check_model(text, {k: np.array(v, dtype) for k, v in zip("abd", args)}, device=backend)


@pytest.mark.parametrize("dtype", ["float32", "int32", "bool", "uint16"])
def test_non_zero(backend, rng, dtype):
    t = TYPE[dtype]
    text = model(13, f"({t}[3,4] x) => (int64 y)", "y = NonZero(x)")
    x = rand(rng, (3, 4), dtype)
    if dtype != "bool":
        x = x * (rng.random((3, 4)) > 0.5).astype(dtype)
    check_model(text, {"x": x.astype(dtype)}, device=backend, oracle="ref")


@pytest.mark.parametrize("dtype", ["float32", "int64", "uint64"])
@pytest.mark.parametrize("largest,axis", [(1, -1), (0, 0), (1, 0)])
def test_top_k_ties_take_lower_index(backend, rng, dtype, largest, axis):
    t = TYPE[dtype]
    text = model(11, f"({t}[4,6] x, int64[1] k) => ({t} v, int64 i)",
                 f"v, i = TopK<axis={axis}, largest={largest}>(x, k)")
    x = rng.integers(0, 3, (4, 6)).astype(dtype)  # few distinct values: many ties
    check_model(text, {"x": x, "k": np.array([3], np.int64)}, device=backend, oracle="ref")


def test_top_k_opset1_attribute(backend, rng):
    text = model(1, "(float[3,5] x) => (float v, int64 i)", "v, i = TopK<k=2>(x)")
    check_model(text, {"x": rand(rng, (3, 5))}, device=backend, oracle="ref")


@pytest.mark.parametrize("axis", [None, 0, -1])
def test_compress(backend, rng, axis):
    attr = "" if axis is None else f"<axis={axis}>"
    text = model(11, "(float[3,4] x, bool[3] c) => (float y)", f"y = Compress{attr}(x, c)")
    check_model(text, {"x": rand(rng, (3, 4)), "c": np.array([True, False, True])}, device=backend)


@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_one_hot(backend, axis):
    text = model(11, "(int64[2,3] i, int64 d, float[2] v) => (float y)", f"y = OneHot<axis={axis}>(i, d, v)")
    idx = np.array([[0, -1, 4], [7, 2, -5]], np.int64)  # 7 is out of range: all "off"
    check_model(text, {"i": idx, "d": np.array(5, np.int64), "v": np.array([-1.0, 3.0], np.float32)}, device=backend)


@pytest.mark.parametrize("k,dtype_attr", [(0, ""), (1, ", dtype=7"), (-2, ", dtype=9")])
def test_eye_like(backend, rng, k, dtype_attr):
    text = model(9, "(float[3,5] x) => (y)", f"y = EyeLike<k={k}{dtype_attr}>(x)")
    check_model(text, {"x": rand(rng, (3, 5))}, device=backend, oracle="ref")


@pytest.mark.parametrize("upper", [0, 1])
@pytest.mark.parametrize("k", [None, -1, 2, 10])
def test_trilu(backend, rng, upper, k):
    if k is None:
        text = model(14, "(float[2,3,4] x) => (float y)", f"y = Trilu<upper={upper}>(x)")
        feeds = {"x": rand(rng, (2, 3, 4))}
    else:
        text = model(14, "(float[2,3,4] x, int64 k) => (float y)", f"y = Trilu<upper={upper}>(x, k)")
        feeds = {"x": rand(rng, (2, 3, 4)), "k": np.array(k, np.int64)}
    check_model(text, feeds, device=backend, oracle="ref")


@pytest.mark.parametrize("batch_axis,time_axis", [(1, 0), (0, 1)])
def test_reverse_sequence(backend, rng, batch_axis, time_axis):
    shape = [4, 4, 2]
    text = model(10, "(float[4,4,2] x, int64[4] l) => (float y)",
                 f"y = ReverseSequence<batch_axis={batch_axis}, time_axis={time_axis}>(x, l)")
    check_model(text, {"x": rand(rng, shape), "l": np.array([4, 1, 3, 2], np.int64)}, device=backend)


@pytest.mark.parametrize("sorted_", [0, 1])
@pytest.mark.parametrize("axis", [None, 0, 1])
def test_unique(backend, sorted_, axis):
    attr = f"sorted={sorted_}" + ("" if axis is None else f", axis={axis}")
    text = model(11, "(float[3,4] x) => (float y, int64 i, int64 inv, int64 n)", f"y, i, inv, n = Unique<{attr}>(x)")
    x = np.array([[2, 1, 1, 3], [2, 1, 1, 3], [0, 5, 5, 1]], np.float32)
    check_model(text, {"x": x}, device=backend)


@pytest.mark.parametrize("op,opset", [("CumSum", 14), ("CumProd", 26)])
@pytest.mark.parametrize("exclusive,reverse", [(0, 0), (1, 0), (0, 1), (1, 1)])
@pytest.mark.parametrize("dtype", ["float32", "int32"])
def test_cumulative(backend, rng, op, opset, exclusive, reverse, dtype):
    t = TYPE[dtype]
    text = model(opset, f"({t}[3,4] x, int32 a) => ({t} y)",
                 f"y = {op}<exclusive={exclusive}, reverse={reverse}>(x, a)")
    x = rng.integers(1, 4, (3, 4)).astype(dtype)
    check_model(text, {"x": x, "a": np.array(-1, np.int32)}, device=backend, oracle="ref")


# -- symbolic shape inference ---------------------------------------------------------------

def _layer(net: NetworkDefinition, op: str, inputs, attrs=None, outputs: int = 1):
    return net.add_layer(op, inputs, attrs or {}, num_outputs=outputs)


def test_shapes_propagate_symbolic_dims():
    net = NetworkDefinition()
    x = net.add_input("x", DType.FLOAT32, ("N", 3, 4))
    i64 = lambda *v: np.array(v, np.int64)  # noqa: E731
    assert _layer(net, "Reshape", [x, i64(0, -1)])[0].type.shape == ("N", 12)
    assert _layer(net, "Reshape", [x, i64(-1, 4)])[0].type.shape == (None, 4)
    assert _layer(net, "Reshape", [x, i64(0, 2, -1)])[0].type.shape == ("N", 2, 6)
    assert _layer(net, "Flatten", [x], {"axis": 1})[0].type.shape == ("N", 12)
    assert _layer(net, "Unsqueeze", [x, i64(1, -1)])[0].type.shape == ("N", 1, 3, 4, 1)
    assert _layer(net, "Transpose", [x], {"perm": [2, 0, 1]})[0].type.shape == (4, "N", 3)
    assert _layer(net, "Slice", [x, i64(0, 1), i64(2 ** 63 - 1, 3), i64(0, 1)])[0].type.shape == ("N", 2, 4)
    assert _layer(net, "Slice", [x, i64(-1), i64(-100), i64(2), i64(-1)])[0].type.shape == ("N", 3, 4)
    assert _layer(net, "Concat", [x, x], {"axis": 1})[0].type.shape == ("N", 6, 4)
    assert _layer(net, "Concat", [x, x], {"axis": 0})[0].type.shape == (None, 3, 4)
    assert _layer(net, "Gather", [x, i64(0, 2)], {"axis": 1})[0].type.shape == ("N", 2, 4)
    shape = _layer(net, "Shape", [x])[0]
    assert shape.type.shape == (3,) and shape.type.dtype == DType.INT64
    assert _layer(net, "Pad", [x, i64(0, 1, 0, 0, 1, 2)])[0].type.shape == ("N", 5, 6)
    a, b = _layer(net, "Split", [x, i64(1, 3)], {"axis": 2}, outputs=2)
    assert a.type.shape == ("N", 3, 1) and b.type.shape == ("N", 3, 3)
    assert _layer(net, "Expand", [x, i64(2, 1, 1, 1)])[0].type.shape == (2, "N", 3, 4)
    assert _layer(net, "Tile", [x, i64(1, 2, 1)])[0].type.shape == ("N", 6, 4)
    v, idx = _layer(net, "TopK", [x, i64(2)], {"axis": 1}, outputs=2)
    assert v.type.shape == ("N", 2, 4) and idx.type.dtype == DType.INT64
    assert _layer(net, "ConstantOfShape", [i64(2, 5)])[0].type.shape == (2, 5)
    nz = _layer(net, "NonZero", [x])[0]
    assert nz.type.shape == (3, None)
    assert _layer(net, "OneHot", [x, np.array(7, np.int64), np.array([0, 1], np.float32)])[0].type.shape == \
        ("N", 3, 4, 7)


def test_shapes_from_non_constant_inputs_keep_rank():
    net = NetworkDefinition()
    x = net.add_input("x", DType.FLOAT32, ("N", 3, 4))
    s = net.add_input("s", DType.INT64, (2,))
    assert _layer(net, "Reshape", [x, s])[0].type.shape == (None, None)
    assert _layer(net, "ConstantOfShape", [s])[0].type.shape == (None, None)
    assert _layer(net, "Unsqueeze", [x, s])[0].type.shape == (None,) * 5


def test_imported_shape_chain_keeps_symbols():
    text = model(13, "(float[N,3,4] x) => (float y)", "r = Reshape(x, s)\ny = Identity(r)", "int64[2] s = {0, -1}")
    g = parse_onnx(parse(text))
    assert g.nodes[0].outputs[0].type.shape == ("N", 12)


# -- errors ----------------------------------------------------------------------------------

def test_unsupported_attributes_name_the_node():
    text = model(18, "(float[3] x, int64[1] i, float[1] u, int64[2] p) => (float y, float z)",
                 'y = ScatterElements<reduction="avg">(x, i, u)\nz = Pad<mode="mirror">(x, p)')
    with pytest.raises(UnsupportedOpError) as err:
        parse_onnx(parse(text))
    msg = str(err.value)
    assert "2 unsupported" in msg and "ScatterElements" in msg and "'avg'" in msg and "'mirror'" in msg


def test_pad_wrap_needs_opset_19():
    text = model(18, "(float[3] x, int64[2] p) => (float y)", 'y = Pad<mode="wrap">(x, p)')
    with pytest.raises(UnsupportedOpError, match="Pad"):
        parse_onnx(parse(text))
