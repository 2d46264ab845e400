"""Signal processing (DFT, STFT, windows, MelWeightMatrix), losses, training ops,
ai.onnx.ml ops and random generators: results against onnxruntime or the ONNX
reference evaluator, inferred shapes, and the errors unsupported attributes give.

Random ops draw from torch's generators, so their tests check shape, dtype, range,
statistics and seed reproducibility rather than exact values.
"""

from __future__ import annotations

import numpy as np
import pytest

import tensorkiln
from tensorkiln import DType, NetworkDefinition
from tensorkiln.ir import TensorType
from tensorkiln.errors import UnsupportedOpError
from tensorkiln.testing.check import check_model, parse

TRAINING = "ai.onnx.preview.training"


def model(opset: int, signature: str, body: str, init: str = "", extra: str = "") -> str:
    """ONNX text of a one-graph model; `extra` adds opset imports (e.g. '"ai.onnx.ml" : 1')."""
    init = f"<{init}>" if init else ""
    imports = f'"" : {opset}' + (f", {extra}" if extra else "")
    return f"<ir_version: 10, opset_import: [{imports}]>\ng {signature} {init}\n{{\n{body}\n}}"


def randn(rng, shape, dtype="float32") -> np.ndarray:
    return rng.standard_normal(shape).astype(dtype)


def run(text: str, feeds: dict, backend: str) -> dict:
    return tensorkiln.compile(parse(text), device=backend).predict(feeds)


# -- DFT ------------------------------------------------------------------------------------

@pytest.mark.parametrize("complex_input", [False, True])
@pytest.mark.parametrize("onesided", [0, 1])
@pytest.mark.parametrize("axis", [1, 2, -2])
def test_dft_forward_opset20(backend, rng, complex_input, onesided, axis):
    last = 2 if complex_input else 1
    text = model(20, f"(float[2,8,6,{last}] x) => (float y)", f"y = DFT<onesided={onesided}>(x, , a)",
                 f"int64 a = {{{axis}}}")
    check_model(text, {"x": randn(rng, (2, 8, 6, last))}, device=backend, oracle="ref")


@pytest.mark.parametrize("dft_length", [5, 8, 12])
def test_dft_length_pads_or_truncates(backend, rng, dft_length):
    text = model(20, "(float[3,8,1] x) => (float y)", "y = DFT(x, n, )", f"int64 n = {{{dft_length}}}")
    got = check_model(text, {"x": randn(rng, (3, 8, 1))}, device=backend, oracle="ref")
    assert got["y"].shape == (3, dft_length, 2)


@pytest.mark.parametrize("axis", [1, 2])
def test_dft_opset17_axis_attribute(backend, rng, axis):
    text = model(17, "(float[2,6,5,2] x) => (float y)", f"y = DFT<axis={axis}>(x)")
    check_model(text, {"x": randn(rng, (2, 6, 5, 2))}, device=backend, oracle="ref")


def test_dft_inverse_roundtrip(backend, rng):
    text = model(20, "(float[2,10,2] x) => (float y)", "f = DFT(x)\ny = DFT<inverse=1>(f)")
    x = randn(rng, (2, 10, 2))
    check_model(text, {"x": x}, device=backend, expected={"y": x})


@pytest.mark.parametrize("n", [None, 9])
def test_dft_irfft(backend, rng, n):
    x = randn(rng, (2, 9))
    n_out = n or 2 * (5 - 1)
    spec = np.fft.rfft(x, axis=1)[:, :5]
    spec = np.stack([spec.real, spec.imag], -1).astype(np.float32)
    body = "y = DFT<inverse=1, onesided=1>(s, n, )" if n else "y = DFT<inverse=1, onesided=1>(s)"
    init = f"int64 n = {{{n}}}" if n else ""
    text = model(20, "(float[2,5,2] s) => (float y)", body, init)
    want = np.fft.irfft(spec[..., 0] + 1j * spec[..., 1], n=n_out, axis=1)[..., None].astype(np.float32)
    check_model(text, {"s": spec}, device=backend, expected={"y": want})


def test_dft_float64(backend, rng):
    text = model(20, "(double[4,7,1] x) => (double y)", "y = DFT(x)")
    x = rng.standard_normal((4, 7, 1))
    f = np.fft.fft(x[..., 0], axis=1)
    check_model(text, {"x": x}, device=backend, expected={"y": np.stack([f.real, f.imag], -1)}, precision="fp64")


def test_dft_shape_inference():
    net = NetworkDefinition(opset=20)
    x = net.add_input("x", DType.FLOAT32, ("B", 16, 1))
    assert net.add_layer("DFT", [x, np.array(10, np.int64)], {"onesided": 1})[0].shape == ("B", 6, 2)
    assert net.add_layer("DFT", [x])[0].shape == ("B", 16, 2)
    spectrum = net.add_input("s", DType.FLOAT32, (2, "T", 5, 2))
    inverse = net.add_layer("DFT", [spectrum, None, np.array(2, np.int64)], {"inverse": 1, "onesided": 1})[0]
    assert inverse.shape == (2, "T", 8, 1)


def test_dft_rejects_integer_input():
    text = model(20, "(int32[2,8,1] x) => (int32 y)", "y = DFT(x)")
    with pytest.raises(UnsupportedOpError, match="DFT.*not a float type"):
        tensorkiln.compile(parse(text))


# -- STFT -----------------------------------------------------------------------------------

@pytest.mark.parametrize("onesided", [0, 1])
@pytest.mark.parametrize("step,frame", [(8, 16), (5, 12), (16, 16)])
def test_stft_with_window(backend, rng, onesided, step, frame):
    text = model(17, f"(float[2,64,1] x, float[{frame}] w) => (float y)",
                 f"y = STFT<onesided={onesided}>(x, s, w, n)", f"int64 s = {{{step}}}, int64 n = {{{frame}}}")
    w = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(frame) / frame)).astype(np.float32)
    got = check_model(text, {"x": randn(rng, (2, 64, 1)), "w": w}, device=backend, oracle="ort")
    assert got["y"].shape == (2, 1 + (64 - frame) // step, frame // 2 + 1 if onesided else frame, 2)


def test_stft_complex_no_window(backend, rng):
    text = model(17, "(float[1,32,2] x) => (float y)", "y = STFT<onesided=0>(x, s, , n)",
                 "int64 s = {4}, int64 n = {8}")
    check_model(text, {"x": randn(rng, (1, 32, 2))}, device=backend, oracle="ref")


def test_stft_shape_inference():
    net = NetworkDefinition(opset=17)
    x = net.add_input("x", DType.FLOAT32, ("B", 128, 1))
    y = net.add_layer("STFT", [x, np.array(8, np.int64), None, np.array(16, np.int64)])[0]
    assert y.shape == ("B", 15, 9, 2)


# -- windows and MelWeightMatrix --------------------------------------------------------------

@pytest.mark.parametrize("op", ["HannWindow", "HammingWindow", "BlackmanWindow"])
@pytest.mark.parametrize("periodic", [0, 1])
@pytest.mark.parametrize("out_type", [1, 11, 10])
def test_windows(backend, op, periodic, out_type):
    t = {1: "float", 11: "double", 10: "float16"}[out_type]
    text = model(17, f"(int64 n) => ({t} y)", f"y = {op}<periodic={periodic}, output_datatype={out_type}>(n)")
    got = check_model(text, {"n": np.array(12, np.int64)}, device=backend, oracle="ref",
                      precision={1: "fp32", 11: "fp64", 10: "fp16"}[out_type])
    assert got["y"].shape == (12,)


def test_window_and_mel_shape_inference():
    net = NetworkDefinition(opset=17)
    window = net.add_layer("HannWindow", [np.array(10, np.int32)], {"output_datatype": 11})[0]
    assert window.type == TensorType(DType.FLOAT64, (10,))
    i32 = lambda v: np.array(v, np.int32)  # noqa: E731
    f32 = lambda v: np.array(v, np.float32)  # noqa: E731
    mel = net.add_layer("MelWeightMatrix", [i32(8), i32(16), i32(8192), f32(0), f32(4096)])[0]
    assert mel.type == TensorType(DType.FLOAT32, (9, 8))


def test_window_rejects_string_output():
    text = model(17, "(int64 n) => (float y)", "y = HannWindow<output_datatype=8>(n)")
    with pytest.raises(UnsupportedOpError, match="output_datatype"):
        tensorkiln.compile(parse(text))


@pytest.mark.parametrize("bins,dft,rate,low,high", [(8, 16, 8192, 0.0, 4096.0), (10, 64, 16000, 20.0, 7600.0),
                                                     (4, 31, 22050, 300.0, 3000.0)])
def test_melweightmatrix(backend, bins, dft, rate, low, high):
    text = model(17, "(int32 b, int32 d, int32 r, float lo, float hi) => (float y)",
                 "y = MelWeightMatrix(b, d, r, lo, hi)")
    feeds = {"b": np.array(bins, np.int32), "d": np.array(dft, np.int32), "r": np.array(rate, np.int32),
             "lo": np.array(low, np.float32), "hi": np.array(high, np.float32)}
    got = check_model(text, feeds, device=backend, oracle="ref")
    assert got["y"].shape == (dft // 2 + 1, bins)


# -- losses ----------------------------------------------------------------------------------

LOSS_CASES = [
    ("none", None, False), ("sum", None, False), ("mean", None, False),
    ("mean", None, True), ("sum", 2, True), ("mean", 1, True), ("none", -1, False), ("mean", 0, False),
]


@pytest.mark.parametrize("reduction,ignore_index,weighted", LOSS_CASES)
@pytest.mark.parametrize("spatial", [(), (3,), (2, 3)])
def test_nllloss(backend, rng, reduction, ignore_index, weighted, spatial):
    n, c = 4, 5
    x_shape, t_shape = (n, c) + spatial, (n,) + spatial
    dims = lambda s: ",".join(map(str, s))  # noqa: E731
    attrs = f'reduction="{reduction}"' + (f", ignore_index={ignore_index}" if ignore_index is not None else "")
    args = "x, t, w" if weighted else "x, t"
    sig = f"(float[{dims(x_shape)}] x, int64[{dims(t_shape)}] t" + (f", float[{c}] w" if weighted else "") + ")"
    text = model(13, f"{sig} => (float y)", f"y = NegativeLogLikelihoodLoss<{attrs}>({args})")
    target = rng.integers(0, c, t_shape).astype(np.int64)
    if ignore_index is not None:
        target.reshape(-1)[::3] = ignore_index
    feeds = {"x": randn(rng, x_shape), "t": target}
    if weighted:
        feeds["w"] = rng.random(c).astype(np.float32) + 0.1
    check_model(text, feeds, device=backend, oracle="ort")


@pytest.mark.parametrize("reduction,ignore_index,weighted", LOSS_CASES)
@pytest.mark.parametrize("log_prob", [False, True])
def test_softmax_cross_entropy(backend, rng, reduction, ignore_index, weighted, log_prob):
    attrs = f'reduction="{reduction}"' + (f", ignore_index={ignore_index}" if ignore_index is not None else "")
    args = "x, t, w" if weighted else "x, t"
    sig = "(float[3,6,4] x, int32[3,4] t" + (", float[6] w" if weighted else "") + ")"
    outs = "(float y, float lp)" if log_prob else "(float y)"
    body = f"y, lp = SoftmaxCrossEntropyLoss<{attrs}>({args})" if log_prob else \
        f"y = SoftmaxCrossEntropyLoss<{attrs}>({args})"
    text = model(13, f"{sig} => {outs}", body)
    target = rng.integers(0, 6, (3, 4)).astype(np.int32)
    if ignore_index is not None:
        target.reshape(-1)[::4] = ignore_index
    feeds = {"x": randn(rng, (3, 6, 4)), "t": target}
    if weighted:
        feeds["w"] = rng.random(6).astype(np.float32) + 0.1
    check_model(text, feeds, device=backend, oracle="ort")


def test_softmax_cross_entropy_float16(backend, rng):
    text = model(13, "(float16[8,10] x, int64[8] t) => (float16 y)", "y = SoftmaxCrossEntropyLoss(x, t)")
    x = randn(rng, (8, 10))
    t = rng.integers(0, 10, 8).astype(np.int64)
    logp = x - np.log(np.exp(x - x.max(1, keepdims=True)).sum(1, keepdims=True)) - x.max(1, keepdims=True)
    want = np.float16(-logp[np.arange(8), t].mean())
    check_model(text, {"x": x.astype(np.float16), "t": t}, device=backend, precision="fp16",
                expected={"y": np.array(want)})


def test_loss_shape_inference():
    net = NetworkDefinition(opset=13)
    x = net.add_input("x", DType.FLOAT32, ("N", 5, 7))
    t = net.add_input("t", DType.INT64, ("N", 7))
    assert net.add_layer("NegativeLogLikelihoodLoss", [x, t], {"reduction": "none"})[0].shape == ("N", 7)
    loss, log_prob = net.add_layer("SoftmaxCrossEntropyLoss", [x, t], num_outputs=2)
    assert loss.shape == () and log_prob.shape == ("N", 5, 7)


def test_loss_rejects_unknown_reduction():
    text = model(13, "(float[4,5] x, int64[4] t) => (float y)", 'y = NegativeLogLikelihoodLoss<reduction="max">(x, t)')
    with pytest.raises(UnsupportedOpError, match="NegativeLogLikelihoodLoss.*reduction 'max'"):
        tensorkiln.compile(parse(text))


# -- training ops (ai.onnx.preview.training) ---------------------------------------------------

def training_model(op: str, attrs: str, groups: str, shapes: list[tuple[int, ...]]) -> str:
    """A model of one training op over len(shapes) tensors; `groups` names the input groups after
    R and T (e.g. "XGV"); the op returns every group but G, updated."""
    names = [f"{g}{i}" for g in groups for i in range(len(shapes))]
    out_names = [f"{g}{i}_new" for g in groups.replace("G", "") for i in range(len(shapes))]
    dims = [",".join(map(str, shapes[i % len(shapes)])) for i in range(len(names))]
    sig_in = ", ".join(["float r", "int64 t"] + [f"float[{d}] {n}" for d, n in zip(dims, names)])
    sig_out = ", ".join(f"float {n}" for n in out_names)
    body = f"{', '.join(out_names)} = {TRAINING}.{op}<{attrs}>(r, t, {', '.join(names)})"
    return model(17, f"({sig_in}) => ({sig_out})", body, extra=f'"{TRAINING}" : 1')


def training_feeds(rng, groups: str, shapes: list[tuple[int, ...]], t: int) -> dict[str, np.ndarray]:
    feeds = {"r": np.array(0.1, np.float32), "t": np.array(t, np.int64)}
    for g in groups:
        for i, s in enumerate(shapes):
            x = randn(rng, s)
            feeds[f"{g}{i}"] = np.abs(x) if g == "H" else x  # H accumulates squares
    return feeds


@pytest.mark.parametrize("t", [0, 3])
@pytest.mark.parametrize("mode", ["standard", "nesterov"])
def test_momentum(backend, rng, t, mode):
    shapes = [(3,), (2, 4)]
    text = training_model("Momentum", f'alpha=0.9, beta=0.5, mode="{mode}", norm_coefficient=0.01', "XGV", shapes)
    check_model(text, training_feeds(rng, "XGV", shapes, t), device=backend, oracle="ref")


@pytest.mark.parametrize("t", [0, 5])
def test_adagrad(backend, rng, t):
    shapes = [(4,), (2, 3)]
    text = training_model("Adagrad", "decay_factor=0.1, epsilon=1e-5, norm_coefficient=0.001", "XGH", shapes)
    check_model(text, training_feeds(rng, "XGH", shapes, t), device=backend, oracle="ref")


@pytest.mark.parametrize("t", [0, 2])
def test_adam(backend, rng, t):
    shapes = [(5,), (3, 2)]
    text = training_model("Adam", "alpha=0.9, beta=0.99, epsilon=1e-3, norm_coefficient=0.01, "
                                  "norm_coefficient_post=0.02", "XGVH", shapes)
    check_model(text, training_feeds(rng, "XGVH", shapes, t), device=backend, oracle="ref")


def test_momentum_rejects_unknown_mode():
    text = training_model("Momentum", 'alpha=0.9, beta=0.5, mode="heavy", norm_coefficient=0.0', "XGV", [(2,)])
    with pytest.raises(UnsupportedOpError, match="Momentum.*mode 'heavy'"):
        tensorkiln.compile(parse(text))


# -- ai.onnx.ml ----------------------------------------------------------------------------------

ML1 = '"ai.onnx.ml" : 1'


@pytest.mark.parametrize("dtype", ["float32", "float64", "int64", "int32"])
def test_binarizer(backend, rng, dtype):
    t = {"float32": "float", "float64": "double", "int64": "int64", "int32": "int32"}[dtype]
    text = model(17, f"({t}[3,4] x) => ({t} y)", "y = ai.onnx.ml.Binarizer<threshold=0.5>(x)", extra=ML1)
    x = (randn(rng, (3, 4)) * 3).astype(dtype)
    check_model(text, {"x": x}, device=backend, expected={"y": (x > 0.5).astype(dtype)})


@pytest.mark.parametrize("x_shape,idx", [((3, 5), [0, 4, 2]), ((2, 3, 4), [3]), ((6,), [1, 5]), ((2, 5), [[1, 2]])])
def test_array_feature_extractor(backend, rng, x_shape, idx):
    idx = np.array(idx, np.int64)
    dims = ",".join(map(str, x_shape))
    text = model(17, f"(float[{dims}] x, int64[{','.join(map(str, idx.shape))}] i) => (float y)",
                 "y = ai.onnx.ml.ArrayFeatureExtractor(x, i)", extra=ML1)
    check_model(text, {"x": randn(rng, x_shape), "i": idx}, device=backend, oracle="ort")


# Two trees over 3 features and 3 targets. Tree 0: node 0 (x0 <= 0.2) -> node 1 (x1 < -0.5: leaf 0 | leaf 1)
# | node 2 (x2 in {1, 2, 3}: leaf 2 | leaf 3). Tree 1: node 3 (x1 > 0 [NaN goes true]) -> leaf 4 | node 4
# (x0 != 1: leaf 5 | leaf 6).
FOREST = dict(
    n_targets=3, tree_roots=[0, 3], nodes_featureids=[0, 1, 2, 1, 0],
    nodes_modes="uint8[5] {{0, 1, 6, 3, 5}}", nodes_splits="{dtype}[5] {{0.2, -0.5, 0.0, 0.0, 1.0}}",
    nodes_truenodeids=[1, 0, 2, 4, 5], nodes_trueleafs=[0, 1, 1, 1, 1],
    nodes_falsenodeids=[2, 1, 3, 4, 6], nodes_falseleafs=[0, 1, 1, 0, 1],
    nodes_missing_value_tracks_true=[0, 0, 0, 1, 0],
    membership_values="{dtype}[4] {{1.0, 2.0, 3.0, nan}}",
    leaf_targetids=[0, 1, 2, 0, 1, 2, 0], leaf_weights="{dtype}[7] {{1.5, -2.0, 3.25, 0.5, 4.0, -1.0, 2.5}}",
)


def forest_text(dtype: str, aggregate: int, post: int) -> str:
    attrs = ", ".join(f"{k}={str(v).format(dtype=dtype)}" for k, v in FOREST.items())
    attrs += f", aggregate_function={aggregate}, post_transform={post}"
    return model(17, f"({dtype}[N,3] x) => ({dtype} y)", f"y = ai.onnx.ml.TreeEnsemble<{attrs}>(x)",
                 extra='"ai.onnx.ml" : 5')


def forest_input(rng, dtype: str) -> np.ndarray:
    x = rng.integers(-2, 4, (16, 3)).astype(dtype) / np.array([4, 2, 1], dtype)
    x[3, 1] = np.nan
    x[7, 1] = np.nan
    return x


@pytest.mark.parametrize("dtype", ["float", "double"])
@pytest.mark.parametrize("aggregate", [0, 1, 2, 3])
def test_tree_ensemble_aggregates(backend, rng, dtype, aggregate):
    text = forest_text(dtype, aggregate, 0)
    np_dtype = "float32" if dtype == "float" else "float64"
    check_model(text, {"x": forest_input(rng, np_dtype)}, device=backend, oracle="ref")


def _softmax_zero(raw: np.ndarray) -> np.ndarray:
    e = np.where(np.abs(raw) > 1e-7, np.exp(raw - raw.max(1, keepdims=True)), 0.0)
    return e / e.sum(1, keepdims=True)


POST_TRANSFORMS = {
    1: lambda r: np.exp(r - r.max(1, keepdims=True)) / np.exp(r - r.max(1, keepdims=True)).sum(1, keepdims=True),
    2: lambda r: 1 / (1 + np.exp(-r)),
    3: _softmax_zero,
}


@pytest.mark.parametrize("post", [1, 2, 3, 4])
def test_tree_ensemble_post_transform(backend, rng, post):
    # Expected values from numpy: the ONNX reference evaluator ignores post_transform, and
    # onnxruntime 1.31 swaps SOFTMAX (1) and LOGISTIC (2) against the spec and approximates erfinv.
    text = forest_text("float", 1, 0)
    if post == 4:  # probit needs scores in (0, 1)
        text = text.replace("{1.5, -2.0, 3.25, 0.5, 4.0, -1.0, 2.5}", "{0.15, 0.2, 0.325, 0.05, 0.4, 0.1, 0.25}")
    x = forest_input(rng, "float32")
    raw = run(text, {"x": x}, backend)["y"].astype(np.float64)
    if post == 4:
        # probit(p) = sqrt(2) * erfinv(2p - 1), the standard normal's inverse CDF (stdlib, not torch).
        from statistics import NormalDist
        inv_cdf = NormalDist().inv_cdf
        want = np.vectorize(lambda p: inv_cdf(p) if 0 < p < 1 else (np.inf if p >= 1 else -np.inf))(raw)
    else:
        want = POST_TRANSFORMS[post](raw)
    check_model(text.replace("post_transform=0", f"post_transform={post}"), {"x": x}, device=backend,
                expected={"y": want.astype(np.float32)})


def test_tree_ensemble_softmax_zero_matches_onnxruntime(backend, rng):
    check_model(forest_text("float", 1, 3), {"x": forest_input(rng, "float32")}, device=backend, oracle="ort")


def test_tree_ensemble_rejects_bad_membership():
    text = forest_text("float", 1, 0).replace("membership_values=float[4] {1.0, 2.0, 3.0, nan}",
                                              "membership_values=float[3] {1.0, 2.0, 3.0}")
    with pytest.raises(UnsupportedOpError, match="TreeEnsemble.*membership_values"):
        tensorkiln.compile(parse(text))


# -- random ----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [1, 11, 10])
def test_random_normal_and_uniform(backend, dtype):
    t = {1: "float", 11: "double", 10: "float16"}[dtype]
    np_dtype = {1: np.float32, 11: np.float64, 10: np.float16}[dtype]
    text = model(17, f"() => ({t} a, {t} b)",
                 f"a = RandomNormal<shape=[200,50], mean=2.0, scale=0.5, seed=3.0, dtype={dtype}>()\n"
                 f"b = RandomUniform<shape=[200,50], low=-1.0, high=3.0, seed=4.0, dtype={dtype}>()")
    first, second = run(text, {}, backend), run(text, {}, backend)
    a, b = first["a"], first["b"]
    assert a.dtype == np_dtype and b.dtype == np_dtype and a.shape == (200, 50) and b.shape == (200, 50)
    assert abs(float(a.mean()) - 2.0) < 0.05 and abs(float(a.std()) - 0.5) < 0.05
    assert float(b.min()) >= -1.0 and float(b.max()) <= 3.0 and abs(float(b.mean()) - 1.0) < 0.1
    np.testing.assert_array_equal(a, second["a"])
    np.testing.assert_array_equal(b, second["b"])


def test_random_seed_changes_values(backend):
    texts = [model(17, "() => (float a)", f"a = RandomUniform<shape=[64], seed={s}>()") for s in (1.0, 2.0)]
    a, b = (run(t, {}, backend)["a"] for t in texts)
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("op", ["RandomNormalLike", "RandomUniformLike"])
def test_random_like(backend, rng, op):
    text = model(17, "(int32[N,7] x) => (double y, int32 z)",
                 f"y = {op}<dtype=11, seed=0.0>(x)\nz = Identity(x)")
    out = run(text, {"x": np.zeros((5, 7), np.int32)}, backend)
    assert out["y"].shape == (5, 7) and out["y"].dtype == np.float64
    text = model(17, "(float16[3,2] x) => (float16 y)", f"y = {op}(x)")
    out = run(text, {"x": np.zeros((3, 2), np.float16)}, backend)
    assert out["y"].shape == (3, 2) and out["y"].dtype == np.float16


def test_random_shape_inference():
    net = NetworkDefinition(opset=22)
    x = net.add_input("x", DType.FLOAT16, ("B", 3))
    assert net.add_layer("RandomUniformLike", [x])[0].type == TensorType(DType.FLOAT16, ("B", 3))
    assert net.add_layer("Bernoulli", [x], {"dtype": 9})[0].type == TensorType(DType.BOOL, ("B", 3))
    normal = net.add_layer("RandomNormal", [], {"shape": [4, 2], "dtype": 11})[0]
    assert normal.type == TensorType(DType.FLOAT64, (4, 2))
    assert net.add_layer("Multinomial", [x], {"sample_size": 7})[0].type == TensorType(DType.INT32, ("B", 7))


def test_random_rejects_integer_dtype():
    text = model(17, "() => (int32 a)", "a = RandomUniform<shape=[2], dtype=6>()")
    with pytest.raises(UnsupportedOpError, match="RandomUniform.*int32"):
        tensorkiln.compile(parse(text))


@pytest.mark.parametrize("out_dtype", [None, 11, 9, 6])
def test_bernoulli(backend, rng, out_dtype):
    t = {None: "float", 11: "double", 9: "bool", 6: "int32"}[out_dtype]
    attrs = "seed=5.0" + (f", dtype={out_dtype}" if out_dtype else "")
    text = model(22, f"(float[4000] p) => ({t} y)", f"y = Bernoulli<{attrs}>(p)")
    p = np.concatenate([np.zeros(1000), np.ones(1000), np.full(2000, 0.3)]).astype(np.float32)
    first, second = run(text, {"p": p}, backend)["y"], run(text, {"p": p}, backend)["y"]
    want_dtype = {None: np.float32, 11: np.float64, 9: np.bool_, 6: np.int32}[out_dtype]
    assert first.dtype == want_dtype and first.shape == (4000,)
    values = first.astype(np.float64)
    assert set(np.unique(values)) <= {0.0, 1.0}
    assert values[:1000].sum() == 0 and values[1000:2000].sum() == 1000
    assert abs(values[2000:].mean() - 0.3) < 0.04
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("out_dtype", [6, 7])
def test_multinomial(backend, out_dtype):
    t = {6: "int32", 7: "int64"}[out_dtype]
    text = model(17, f"(float[2,4] x) => ({t} y)", f"y = Multinomial<sample_size=3000, seed=1.0, dtype={out_dtype}>(x)")
    logits = np.log(np.array([[0.1, 0.2, 0.3, 0.4], [0.0, 0.0, 1.0, 0.0]], np.float32) + 1e-30)
    first, second = run(text, {"x": logits}, backend)["y"], run(text, {"x": logits}, backend)["y"]
    assert first.shape == (2, 3000) and first.dtype == {6: np.int32, 7: np.int64}[out_dtype]
    assert (first[1] == 2).all()
    freq = np.bincount(first[0], minlength=4) / 3000
    np.testing.assert_allclose(freq, [0.1, 0.2, 0.3, 0.4], atol=0.04)
    np.testing.assert_array_equal(first, second)


def test_multinomial_rejects_float_dtype():
    text = model(17, "(float[2,4] x) => (float y)", "y = Multinomial<dtype=1>(x)")
    with pytest.raises(UnsupportedOpError, match="Multinomial.*dtype"):
        tensorkiln.compile(parse(text))
