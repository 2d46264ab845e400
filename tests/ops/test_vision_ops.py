"""CNN / vision ops: convolutions, pooling, normalisations, Resize/Upsample, sampling, detection
helpers; checked against onnxruntime ("ort") or the ONNX reference evaluator ("ref") on every backend."""

from __future__ import annotations

import numpy as np
import pytest

from tensorkiln.errors import UnsupportedOpError
from tensorkiln.frontends.onnx import parse_onnx
from tensorkiln.testing.check import check_model, parse

_NP = {"float": np.float32, "float16": np.float16, "double": np.float64, "uint8": np.uint8, "int8": np.int8,
       "int32": np.int32, "int64": np.int64}
_PRECISION = {"float": "fp32", "float16": "fp16", "double": "fp64"}


def conv_precision(backend: str) -> str:
    """Convolutions run with TF32 allowed on CUDA (the builder's default, as in TensorRT)."""
    return "tf32" if backend == "cuda" else "fp32"


def model(body: str, inputs: str, outputs: str, opset: int = 19, inits: str = "") -> str:
    return f"""<ir_version: 9, opset_import: ["" : {opset}]>
    g ({inputs}) => ({outputs}) {inits} {{
        {body}
    }}"""


def rand(rng: np.random.Generator, shape: tuple, dtype: str = "float", low: float = -2.0, high: float = 2.0
         ) -> np.ndarray:
    np_dtype = _NP[dtype]
    if np.issubdtype(np_dtype, np.integer):
        info = np.iinfo(np_dtype)
        return rng.integers(max(info.min, int(low)), min(info.max, int(high)) + 1, size=shape).astype(np_dtype)
    return rng.uniform(low, high, size=shape).astype(np_dtype)


def dims(shape: tuple) -> str:
    return ",".join(str(d) for d in shape)


def ints(values) -> str:
    return "[" + ", ".join(str(int(v)) for v in values) + "]"


def attr_text(attrs: dict) -> str:
    parts = []
    for k, v in attrs.items():
        if isinstance(v, str):
            parts.append(f'{k} = "{v}"')
        elif isinstance(v, (list, tuple)):
            parts.append(f"{k} = " + ("[" + ", ".join(repr(float(x)) for x in v) + "]"
                                      if any(isinstance(x, float) for x in v) else ints(v)))
        else:
            parts.append(f"{k} = {v}")
    return ("<" + ", ".join(parts) + ">") if parts else ""


# ---- Conv / ConvTranspose ------------------------------------------------------------------

CONV_CASES = [
    # (spatial, kernel, attrs)
    ((9,), (3,), {}),
    ((9,), (3,), {"strides": [2], "pads": [1, 2], "dilations": [2]}),
    ((7, 8), (3, 3), {}),
    ((7, 8), (3, 2), {"strides": [2, 1], "pads": [1, 0, 2, 1]}),
    ((7, 8), (3, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    ((7, 8), (2, 3), {"auto_pad": "SAME_LOWER", "strides": [2, 3]}),
    ((7, 8), (3, 3), {"auto_pad": "VALID", "strides": [2, 2]}),
    ((4, 5, 6), (2, 3, 2), {"pads": [1, 0, 1, 0, 1, 1], "strides": [1, 2, 1]}),
]


@pytest.mark.parametrize("spatial,kernel,attrs", CONV_CASES)
@pytest.mark.parametrize("group", [1, 2])
def test_conv(backend, rng, spatial, kernel, attrs, group):
    cin, cout = 4, 6
    xs, ws = (2, cin, *spatial), (cout, cin // group, *kernel)
    text = model(f"y = Conv {attr_text({**attrs, 'group': group})} (x, w, b)",
                 f"float[{dims(xs)}] x, float[{dims(ws)}] w, float[{cout}] b", "float y")
    # Unit-range data keeps TF32's operand rounding (relative to the summed magnitudes) inside tolerance.
    check_model(text, {"x": rand(rng, xs, low=-1, high=1), "w": rand(rng, ws, low=-1, high=1), "b": rand(rng, (cout,))},
                device=backend, oracle="ort",
                precision=conv_precision(backend))


def test_conv_fp16(backend, rng):
    text = model("y = Conv <pads = [1, 1, 1, 1]> (x, w)", "float16[1,3,6,6] x, float16[4,3,3,3] w", "float16 y")
    check_model(text, {"x": rand(rng, (1, 3, 6, 6), "float16"), "w": rand(rng, (4, 3, 3, 3), "float16", -0.5, 0.5)},
                device=backend, oracle="ort", precision="fp16")


CONV_T_CASES = [
    ((5,), (3,), {"strides": [2]}),
    ((4, 5), (3, 3), {"strides": [2, 2], "pads": [1, 0, 0, 1], "output_padding": [1, 1]}),
    ((4, 5), (3, 2), {"strides": [3, 2], "dilations": [2, 1]}),
    ((4, 5), (3, 3), {"strides": [2, 2], "output_shape": [10, 9]}),
    ((4, 5), (3, 3), {"strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    ((3, 4, 3), (2, 2, 2), {"strides": [2, 1, 2], "pads": [0, 1, 0, 0, 0, 1]}),
]


@pytest.mark.parametrize("spatial,kernel,attrs", CONV_T_CASES)
@pytest.mark.parametrize("group", [1, 2])
def test_conv_transpose(backend, rng, spatial, kernel, attrs, group):
    cin, cout_per_group = 4, 3
    xs, ws = (2, cin, *spatial), (cin, cout_per_group, *kernel)
    text = model(f"y = ConvTranspose {attr_text({**attrs, 'group': group})} (x, w, b)",
                 f"float[{dims(xs)}] x, float[{dims(ws)}] w, float[{cout_per_group * group}] b", "float y")
    check_model(text, {"x": rand(rng, xs, low=-1, high=1), "w": rand(rng, ws, low=-1, high=1),
                       "b": rand(rng, (cout_per_group * group,))},
                device=backend, oracle="ort", precision=conv_precision(backend))


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
def test_conv_integer(backend, rng, dtype):
    text = model("y = ConvInteger <pads = [1, 0, 0, 1], strides = [1, 2]> (x, w, xz, wz)",
                 f"{dtype}[1,2,5,6] x, {dtype}[3,2,2,2] w, {dtype} xz, {dtype} wz", "int32 y", opset=10)
    feeds = {"x": rand(rng, (1, 2, 5, 6), dtype, -100, 200), "w": rand(rng, (3, 2, 2, 2), dtype, -100, 200),
             "xz": np.array(3, _NP[dtype]), "wz": np.array(1, _NP[dtype])}
    check_model(text, feeds, device=backend, oracle="ref", precision="exact")


@pytest.mark.parametrize("per_channel", [False, True])
def test_qlinear_conv(backend, rng, per_channel):
    ws_shape = "[3]" if per_channel else ""
    text = model("y = QLinearConv <pads = [1, 1, 1, 1]> (x, xs, xz, w, ws, wz, ys, yz, b)",
                 f"uint8[1,2,5,5] x, float xs, uint8 xz, int8[3,2,3,3] w, float{ws_shape} ws, int8{ws_shape} wz, "
                 "float ys, uint8 yz, int32[3] b", "uint8 y", opset=10)
    feeds = {"x": rand(rng, (1, 2, 5, 5), "uint8", 0, 255), "xs": np.array(0.02, np.float32),
             "xz": np.array(128, np.uint8), "w": rand(rng, (3, 2, 3, 3), "int8", -127, 127),
             "ws": (rng.uniform(0.005, 0.02, size=(3,)) if per_channel else np.array(0.01)).astype(np.float32),
             "wz": np.zeros((3,) if per_channel else (), np.int8), "ys": np.array(0.05, np.float32),
             "yz": np.array(100, np.uint8), "b": rand(rng, (3,), "int32", -500, 500)}
    # onnxruntime's u8s8 kernels saturate intermediate sums on some CPUs; the reference is exact.
    check_model(text, feeds, device=backend, oracle="ref", precision="exact")


def test_deform_conv(backend, rng):
    text = model("y = DeformConv <pads = [1, 1, 1, 1], offset_group = 2, group = 2> (x, w, off, b, m)",
                 "float[1,4,5,5] x, float[4,2,3,3] w, float[1,36,5,5] off, float[4] b, float[1,18,5,5] m", "float y")
    feeds = {"x": rand(rng, (1, 4, 5, 5)), "w": rand(rng, (4, 2, 3, 3)), "off": rand(rng, (1, 36, 5, 5), low=-1.5,
             high=1.5), "b": rand(rng, (4,)), "m": rand(rng, (1, 18, 5, 5), low=0, high=1)}
    check_model(text, feeds, device=backend, oracle="ref")


# ---- pooling ---------------------------------------------------------------------------------

POOL_CASES = [
    ((10,), {"kernel_shape": [3], "strides": [2]}),
    ((10,), {"kernel_shape": [3], "strides": [2], "pads": [1, 1], "ceil_mode": 1}),
    ((7, 8), {"kernel_shape": [3, 3]}),
    ((7, 8), {"kernel_shape": [3, 2], "strides": [2, 2], "pads": [1, 0, 1, 1]}),
    ((7, 8), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    ((7, 8), {"kernel_shape": [2, 2], "strides": [2, 2], "dilations": [2, 1], "pads": [1, 1, 1, 1]}),
    ((7, 8), {"kernel_shape": [3, 3], "strides": [2, 3], "auto_pad": "SAME_UPPER"}),
    ((7, 8), {"kernel_shape": [2, 3], "strides": [2, 2], "auto_pad": "SAME_LOWER"}),
    ((7, 8), {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "VALID"}),
    ((4, 5, 6), {"kernel_shape": [2, 2, 3], "strides": [1, 2, 2], "pads": [0, 1, 1, 1, 0, 1]}),
]


@pytest.mark.parametrize("spatial,attrs", POOL_CASES)
def test_max_pool(backend, rng, spatial, attrs):
    xs = (2, 3, *spatial)
    text = model(f"y, i = MaxPool {attr_text(attrs)} (x)", f"float[{dims(xs)}] x", "float y, int64 i")
    if "dilations" in attrs:  # onnxruntime's argmax path refuses dilations; check values only
        text = model(f"y = MaxPool {attr_text(attrs)} (x)", f"float[{dims(xs)}] x", "float y")
    check_model(text, {"x": rand(rng, xs)}, device=backend, oracle="ort")


@pytest.mark.parametrize("storage_order", [0, 1])
def test_max_pool_indices_storage_order(backend, rng, storage_order):
    text = model(f"y, i = MaxPool <kernel_shape = [2, 2], strides = [2, 1], storage_order = {storage_order}> (x)",
                 "float[2,2,5,4] x", "float y, int64 i")
    check_model(text, {"x": rand(rng, (2, 2, 5, 4))}, device=backend, oracle="ort")


@pytest.mark.parametrize("dtype", ["uint8", "int8", "float16", "double"])
def test_max_pool_dtypes(backend, rng, dtype):
    text = model("y = MaxPool <kernel_shape = [3, 3], pads = [1, 1, 1, 1], strides = [2, 2]> (x)",
                 f"{dtype}[1,2,6,7] x", f"{dtype} y")
    check_model(text, {"x": rand(rng, (1, 2, 6, 7), dtype, -100, 200)}, device=backend, oracle="ort",
                precision=_PRECISION.get(dtype, "exact"))


@pytest.mark.parametrize("spatial,attrs", POOL_CASES)
@pytest.mark.parametrize("count_include_pad", [0, 1])
def test_average_pool(backend, rng, spatial, attrs, count_include_pad):
    xs = (2, 3, *spatial)
    text = model(f"y = AveragePool {attr_text({**attrs, 'count_include_pad': count_include_pad})} (x)",
                 f"float[{dims(xs)}] x", "float y")
    check_model(text, {"x": rand(rng, xs)}, device=backend, oracle="ort")


@pytest.mark.parametrize("spatial,attrs", POOL_CASES[::2])
@pytest.mark.parametrize("p", [1, 2, 3])
def test_lp_pool(backend, rng, spatial, attrs, p):
    xs = (2, 3, *spatial)
    text = model(f"y = LpPool {attr_text({**attrs, 'p': p})} (x)", f"float[{dims(xs)}] x", "float y")
    # The reference evaluator scales partial ceil_mode windows by kernel size / taps; LpPool is a plain sum.
    check_model(text, {"x": rand(rng, xs)}, device=backend, oracle="ort")


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"])
@pytest.mark.parametrize("shape", [(2, 3, 5), (2, 3, 4, 5), (1, 2, 3, 4, 5)])
def test_global_pool(backend, rng, op, shape):
    text = model(f"y = {op} (x)", f"float[{dims(shape)}] x", "float y")
    check_model(text, {"x": rand(rng, shape)}, device=backend, oracle="ort")


def test_max_unpool(backend, rng):
    text = model("y, i = MaxPool <kernel_shape = [2, 2], strides = [2, 2]> (x)\n"
                 "z = MaxUnpool <kernel_shape = [2, 2], strides = [2, 2]> (y, i, s)",
                 "float[1,2,4,6] x, int64[4] s", "float z")
    feeds = {"x": rand(rng, (1, 2, 4, 6)), "s": np.array([1, 2, 5, 7], np.int64)}
    check_model(text, feeds, device=backend, oracle="ref")


# ---- normalisations ----------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(2, 3), (2, 3, 5), (2, 3, 4, 5), (1, 3, 2, 3, 4)])
@pytest.mark.parametrize("dtype", ["float", "float16"])
def test_batch_norm_inference(backend, rng, shape, dtype):
    text = model("y = BatchNormalization <epsilon = 0.001> (x, s, b, m, v)",
                 f"{dtype}[{dims(shape)}] x, {dtype}[3] s, {dtype}[3] b, {dtype}[3] m, {dtype}[3] v", f"{dtype} y",
                 opset=15)
    feeds = {"x": rand(rng, shape, dtype), "s": rand(rng, (3,), dtype), "b": rand(rng, (3,), dtype),
             "m": rand(rng, (3,), dtype), "v": rand(rng, (3,), dtype, 0.5, 2.0)}
    check_model(text, feeds, device=backend, oracle="ort", precision=_PRECISION[dtype])


def test_batch_norm_training(backend, rng):
    text = model("y, rm, rv = BatchNormalization <training_mode = 1, momentum = 0.8> (x, s, b, m, v)",
                 "float[4,3,5] x, float[3] s, float[3] b, float[3] m, float[3] v", "float y, float rm, float rv",
                 opset=15)
    feeds = {"x": rand(rng, (4, 3, 5)), "s": rand(rng, (3,)), "b": rand(rng, (3,)), "m": rand(rng, (3,)),
             "v": rand(rng, (3,), low=0.5, high=2.0)}
    check_model(text, feeds, device=backend, oracle="ref")


@pytest.mark.parametrize("shape", [(2, 3, 7), (2, 3, 4, 5)])
def test_instance_norm(backend, rng, shape):
    text = model("y = InstanceNormalization <epsilon = 0.01> (x, s, b)",
                 f"float[{dims(shape)}] x, float[3] s, float[3] b", "float y")
    check_model(text, {"x": rand(rng, shape), "s": rand(rng, (3,)), "b": rand(rng, (3,))}, device=backend,
                oracle="ort")


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_group_norm(backend, rng, groups):
    text = model(f"y = GroupNormalization <num_groups = {groups}, epsilon = 0.001> (x, s, b)",
                 "float[2,4,3,5] x, float[4] s, float[4] b", "float y", opset=21)
    check_model(text, {"x": rand(rng, (2, 4, 3, 5)), "s": rand(rng, (4,)), "b": rand(rng, (4,))}, device=backend,
                oracle="ref")


def _lrn_expected(x: np.ndarray, size: int, alpha: float, beta: float, bias: float) -> np.ndarray:
    """LRN as the ONNX spec defines it (the reference evaluator windows the wrong axis)."""
    c = x.shape[1]
    sq = np.zeros_like(x, dtype=np.float64)
    for i in range(c):
        lo, hi = max(0, i - (size - 1) // 2), min(c, i + int(np.ceil((size - 1) / 2)) + 1)
        sq[:, i] = (x[:, lo:hi].astype(np.float64) ** 2).sum(axis=1)
    return (x / (bias + alpha / size * sq) ** beta).astype(x.dtype)


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5])
def test_lrn(backend, rng, size):
    text = model(f"y = LRN <size = {size}, alpha = 0.001, beta = 0.6, bias = 1.5> (x)", "float[2,6,3,4] x", "float y")
    x = rand(rng, (2, 6, 3, 4))
    if size % 2:
        check_model(text, {"x": x}, device=backend, oracle="ort")
    else:  # onnxruntime accepts odd sizes only
        check_model(text, {"x": x}, device=backend, expected={"y": _lrn_expected(x, size, 0.001, 0.6, 1.5)})


# ---- Resize / Upsample -------------------------------------------------------------------------

COORD_MODES = ["half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric"]
NEAREST_MODES = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]


def _resize_check(backend, rng, attrs: dict, scales=None, sizes=None, shape=(1, 2, 5, 6), opset: int = 19,
                  oracle: str = "ref", dtype: str = "float", roi=None):
    args = ["x", "roi" if roi is not None else "", "sc" if scales is not None else "", "sz" if sizes is not None else ""]
    while args[-1] == "":
        args.pop()
    inputs = [f"{dtype}[{dims(shape)}] x"]
    feeds = {"x": rand(rng, shape, dtype, -50, 50) if dtype != "float" else rand(rng, shape)}
    if roi is not None:
        inputs.append(f"float[{len(roi)}] roi")
        feeds["roi"] = np.array(roi, np.float32)
    if scales is not None:
        inputs.append(f"float[{len(scales)}] sc")
        feeds["sc"] = np.array(scales, np.float32)
    if sizes is not None:
        inputs.append(f"int64[{len(sizes)}] sz")
        feeds["sz"] = np.array(sizes, np.int64)
    text = model(f"y = Resize {attr_text(attrs)} ({', '.join(args)})", ", ".join(inputs), f"{dtype} y", opset=opset)
    check_model(text, feeds, device=backend, oracle=oracle, precision=_PRECISION.get(dtype, "exact"))


@pytest.mark.parametrize("coord", COORD_MODES + ["tf_crop_and_resize"])
@pytest.mark.parametrize("nearest_mode", NEAREST_MODES)
@pytest.mark.parametrize("scales", [[1, 1, 1.7, 2.5], [1, 1, 0.6, 0.5]])
def test_resize_nearest(backend, rng, coord, nearest_mode, scales):
    roi = [0, 0, 0.2, 0.1, 1, 1, 0.9, 1.2] if coord == "tf_crop_and_resize" else None
    _resize_check(backend, rng, {"mode": "nearest", "coordinate_transformation_mode": coord,
                                 "nearest_mode": nearest_mode, "extrapolation_value": 7.0}, scales=scales, roi=roi)


@pytest.mark.parametrize("mode", ["linear", "cubic"])
@pytest.mark.parametrize("coord", COORD_MODES + ["tf_crop_and_resize"])
@pytest.mark.parametrize("sizes", [[1, 2, 8, 9], [1, 2, 3, 4], [1, 2, 1, 1]])
def test_resize_linear_cubic(backend, rng, mode, coord, sizes):
    roi = [0, 0, -0.1, 0.2, 1, 1, 0.8, 1.1] if coord == "tf_crop_and_resize" else None
    _resize_check(backend, rng, {"mode": mode, "coordinate_transformation_mode": coord}, sizes=sizes, roi=roi)


@pytest.mark.parametrize("mode", ["linear", "cubic"])
@pytest.mark.parametrize("sizes", [[1, 2, 3, 4], [1, 2, 2, 2]])
def test_resize_antialias(backend, rng, mode, sizes):
    _resize_check(backend, rng, {"mode": mode, "antialias": 1}, sizes=sizes, shape=(1, 2, 7, 9))


@pytest.mark.parametrize("policy", ["not_larger", "not_smaller"])
@pytest.mark.parametrize("axes", [[2, 3], [3, 2], [3]])
def test_resize_keep_aspect_ratio_axes(backend, rng, policy, axes):
    sizes = {2: 7, 3: 4}
    _resize_check(backend, rng, {"mode": "nearest", "keep_aspect_ratio_policy": policy, "axes": axes},
                  sizes=[sizes[a] for a in axes])


def test_resize_cubic_exclude_outside(backend, rng):
    _resize_check(backend, rng, {"mode": "cubic", "cubic_coeff_a": -0.5, "exclude_outside": 1},
                  scales=[1, 1, 1.6, 0.7])


@pytest.mark.parametrize("dtype", ["uint8", "int8", "double"])
def test_resize_dtypes(backend, rng, dtype):
    # onnxruntime lacks double Resize and rounds integer results differently from the ONNX definition
    _resize_check(backend, rng, {"mode": "linear"}, scales=[1, 1, 1.5, 2.0], dtype=dtype, oracle="ref")


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
@pytest.mark.parametrize("coord", ["half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel"])
def test_resize_vs_onnxruntime(backend, rng, mode, coord):
    _resize_check(backend, rng, {"mode": mode, "coordinate_transformation_mode": coord}, scales=[1, 1, 2.0, 1.5],
                  opset=13, oracle="ort")


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_opset10_and_upsample(backend, rng, mode):
    text = model(f'y = Resize <mode = "{mode}"> (x, s)', "float[1,2,3,4] x, float[4] s", "float y", opset=10)
    feeds = {"x": rand(rng, (1, 2, 3, 4)), "s": np.array([1, 1, 2, 3], np.float32)}
    check_model(text, feeds, device=backend, oracle="ort")
    text = model(f'y = Upsample <mode = "{mode}"> (x, s)', "float[1,2,3,4] x, float[4] s", "float y", opset=9)
    check_model(text, feeds, device=backend, oracle="ort")


def test_resize_3d_volume(backend, rng):
    _resize_check(backend, rng, {"mode": "linear"}, scales=[1, 1, 2.0, 0.5, 1.5], shape=(1, 1, 3, 4, 4),
                  oracle="ort")


# ---- sampling, regions, layout ---------------------------------------------------------------

@pytest.mark.parametrize("mode", ["linear", "nearest", "cubic"])
@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align_corners", [0, 1])
def test_grid_sample(backend, rng, mode, padding_mode, align_corners):
    text = model(f'y = GridSample <mode = "{mode}", padding_mode = "{padding_mode}", '
                 f"align_corners = {align_corners}> (x, g)", "float[2,3,5,6] x, float[2,4,7,2] g", "float y", opset=20)
    check_model(text, {"x": rand(rng, (2, 3, 5, 6)), "g": rand(rng, (2, 4, 7, 2), low=-1.3, high=1.3)},
                device=backend, oracle="ref")


@pytest.mark.parametrize("mode", ["linear", "nearest"])
def test_grid_sample_3d(backend, rng, mode):
    text = model(f'y = GridSample <mode = "{mode}"> (x, g)', "float[1,2,3,4,5] x, float[1,2,3,4,3] g", "float y",
                 opset=20)
    check_model(text, {"x": rand(rng, (1, 2, 3, 4, 5)), "g": rand(rng, (1, 2, 3, 4, 3), low=-1.1, high=1.1)},
                device=backend, oracle="ref")


@pytest.mark.parametrize("size", [[2, 3, 4, 5], [2, 3, 3, 4, 5]])
@pytest.mark.parametrize("align_corners", [0, 1])
def test_affine_grid(backend, rng, size, align_corners):
    nd = len(size) - 2
    theta_shape = (2, nd, nd + 1)
    text = model(f"y = AffineGrid <align_corners = {align_corners}> (t, s)", f"float[{dims(theta_shape)}] t, int64[{len(size)}] s",
                 "float y", opset=20)
    check_model(text, {"t": rand(rng, theta_shape), "s": np.array(size, np.int64)}, device=backend, oracle="ref")


@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("ctm", ["half_pixel", "output_half_pixel"])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_roi_align(backend, rng, mode, ctm, sampling_ratio):
    text = model(f'y = RoiAlign <mode = "{mode}", coordinate_transformation_mode = "{ctm}", output_height = 3, '
                 f"output_width = 4, sampling_ratio = {sampling_ratio}, spatial_scale = 0.5> (x, r, b)",
                 "float[2,3,8,9] x, float[3,4] r, int64[3] b", "float y", opset=16)
    rois = np.array([[0, 0, 12, 10], [3.3, 2.1, 9.7, 15.2], [-2, 1, 20, 19]], np.float32)
    check_model(text, {"x": rand(rng, (2, 3, 8, 9)), "r": rois, "b": np.array([0, 1, 1], np.int64)},
                device=backend, oracle="ort")


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
def test_depth_space_roundtrip(backend, rng, mode):
    text = model(f'y = DepthToSpace <blocksize = 2, mode = "{mode}"> (x)', "float[2,8,3,4] x", "float y")
    check_model(text, {"x": rand(rng, (2, 8, 3, 4))}, device=backend, oracle="ort", precision="exact")
    text = model("y = SpaceToDepth <blocksize = 3> (x)", "float[2,2,6,9] x", "float y")
    check_model(text, {"x": rand(rng, (2, 2, 6, 9))}, device=backend, oracle="ort", precision="exact")


@pytest.mark.parametrize("image,block,attrs", [
    ((5, 5), (2, 2), {}),
    ((6, 7), (3, 2), {"strides": [2, 1], "pads": [1, 0, 1, 1], "dilations": [1, 2]}),
    ((4, 5, 6), (2, 2, 3), {"strides": [1, 2, 1]}),
])
def test_col2im(backend, rng, image, block, attrs):
    nd = len(image)
    st = attrs.get("strides", [1] * nd)
    dl = attrs.get("dilations", [1] * nd)
    pd = attrs.get("pads", [0] * 2 * nd)
    length = 1
    for i in range(nd):
        length *= (image[i] + pd[i] + pd[nd + i] - (dl[i] * (block[i] - 1) + 1)) // st[i] + 1
    cb = 2 * int(np.prod(block))
    text = model(f"y = Col2Im {attr_text(attrs)} (x, i, b)", f"float[1,{cb},{length}] x, int64[{nd}] i, int64[{nd}] b",
                 "float y", opset=18)
    feeds = {"x": rand(rng, (1, cb, length)), "i": np.array(image, np.int64), "b": np.array(block, np.int64)}
    check_model(text, feeds, device=backend, oracle="ref")


@pytest.mark.parametrize("shape,target,axes", [((5, 6, 3), (3, 9), [0, 1]), ((4, 7, 2), (6, 2), [-2, 0]),
                                               ((4, 5), (5, 4), None)])
def test_center_crop_pad(backend, rng, shape, target, axes):
    attrs = {} if axes is None else {"axes": axes}
    text = model(f"y = CenterCropPad {attr_text(attrs)} (x, s)", f"float[{dims(shape)}] x, int64[{len(target)}] s",
                 "float y", opset=18)
    check_model(text, {"x": rand(rng, shape), "s": np.array(target, np.int64)}, device=backend, oracle="ref",
                precision="exact")


@pytest.mark.parametrize("opset", [7, 12, 13])
def test_dropout_inference(backend, rng, opset):
    mask_t = "bool" if opset >= 10 else "float"  # the mask has the data's type before opset 10
    text = model("y, m = Dropout (x)", "float[3,4] x", f"float y, {mask_t} m", opset=opset)
    x = rand(rng, (3, 4))
    check_model(text, {"x": x}, device=backend, expected={"y": x, "m": np.ones(x.shape, _NP.get(mask_t, np.bool_))},
                precision="exact")


def test_dropout_training_keeps_expectation(backend, rng):
    text = model("y, m = Dropout <seed = 3> (x, r, t)", "float[200,100] x, float r, bool t", "float y, bool m",
                 opset=13)
    import tensorkiln
    x = np.ones((200, 100), np.float32)
    got = tensorkiln.compile(parse(text), device=backend).predict(
        {"x": x, "r": np.array(0.25, np.float32), "t": np.array(True)})
    kept = got["m"]
    np.testing.assert_allclose(got["y"][kept], 1 / 0.75, rtol=1e-6)
    assert (got["y"][~kept] == 0).all()
    assert 0.70 < kept.mean() < 0.80


@pytest.mark.parametrize("center_point_box", [0, 1])
@pytest.mark.parametrize("score_threshold", [None, 0.3])
def test_non_max_suppression(backend, rng, center_point_box, score_threshold):
    n_boxes = 30
    xy = rng.uniform(0, 10, size=(2, n_boxes, 2))
    wh = rng.uniform(1, 4, size=(2, n_boxes, 2))
    if center_point_box:
        boxes = np.concatenate([xy, wh], axis=-1)
    else:
        boxes = np.concatenate([xy[..., ::-1], (xy + wh)[..., ::-1]], axis=-1)
    args = "b, s, mo, iou" + (", st" if score_threshold is not None else "")
    inputs = "float[2,30,4] b, float[2,3,30] s, int64[1] mo, float[1] iou" + (
        ", float[1] st" if score_threshold is not None else "")
    text = model(f"y = NonMaxSuppression <center_point_box = {center_point_box}> ({args})", inputs, "int64 y")
    feeds = {"b": boxes.astype(np.float32), "s": rng.uniform(0, 1, size=(2, 3, n_boxes)).astype(np.float32),
             "mo": np.array([5], np.int64), "iou": np.array([0.3], np.float32)}
    if score_threshold is not None:
        feeds["st"] = np.array([score_threshold], np.float32)
    check_model(text, feeds, device=backend, oracle="ort", precision="exact")


# ---- refusals ----------------------------------------------------------------------------------

@pytest.mark.parametrize("body,inputs,opset,needle", [
    ('y = Resize <mode = "bogus"> (x, , s)', "float[1,1,2,2] x, float[4] s", 19, "mode 'bogus'"),
    ('y = Conv <auto_pad = "SAME_MIDDLE"> (x, w)', "float[1,1,4,4] x, float[1,1,3,3] w", 19, "auto_pad"),
    ('y = GridSample <mode = "cubic"> (x, g)', "float[1,1,2,2,2] x, float[1,2,2,2,3] g", 20, "cubic"),
    ("y, m, v, sm, sv = BatchNormalization (x, s, b, mu, var)",
     "float[2,3] x, float[3] s, float[3] b, float[3] mu, float[3] var", 9, "training-mode"),
])
def test_unsupported_attributes_are_refused(body, inputs, opset, needle):
    outputs = "float y" if "BatchNormalization" not in body else "float y, float m, float v, float sm, float sv"
    text = model(body, inputs, outputs, opset=opset)
    with pytest.raises(UnsupportedOpError) as err:
        parse_onnx(parse(text))
    message = str(err.value)
    assert needle in message and "node '" in message
