"""Dtype conversion (Cast, CastLike, BitCast), quantization (QuantizeLinear, DequantizeLinear,
DynamicQuantizeLinear) and the transformer ops (Attention, RotaryEmbedding, SwiGLU,
LinearAttention, CausalConvWithState, FlexAttention), checked against the ONNX reference
evaluator ("ref") or onnxruntime ("ort") on every backend."""

from __future__ import annotations

from typing import Mapping, Optional

import ml_dtypes
import numpy as np
import onnx.parser
import pytest

import tensorkiln
from tensorkiln.errors import UnsupportedOpError
from tensorkiln.frontends.onnx import parse_onnx
from tensorkiln.testing.check import check_model
from tensorkiln.testing.oracles import run_reference_evaluator

_NP = {
    "float": np.float32, "double": np.float64, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16,
    "int8": np.int8, "uint8": np.uint8, "int16": np.int16, "uint16": np.uint16, "int32": np.int32,
    "int64": np.int64, "uint32": np.uint32, "uint64": np.uint64, "bool": np.bool_,
    "float8e4m3fn": ml_dtypes.float8_e4m3fn, "float8e4m3fnuz": ml_dtypes.float8_e4m3fnuz,
    "float8e5m2": ml_dtypes.float8_e5m2, "float8e5m2fnuz": ml_dtypes.float8_e5m2fnuz,
    "float8e8m0": ml_dtypes.float8_e8m0fnu, "float4e2m1": ml_dtypes.float4_e2m1fn,
    "int4": ml_dtypes.int4, "uint4": ml_dtypes.uint4, "int2": ml_dtypes.int2, "uint2": ml_dtypes.uint2,
}
_CODE = {"float": 1, "uint8": 2, "int8": 3, "uint16": 4, "int16": 5, "int32": 6, "int64": 7, "bool": 9,
         "float16": 10, "double": 11, "uint32": 12, "uint64": 13, "bfloat16": 16, "float8e4m3fn": 17,
         "float8e4m3fnuz": 18, "float8e5m2": 19, "float8e5m2fnuz": 20, "uint4": 21, "int4": 22,
         "float4e2m1": 23, "float8e8m0": 24, "uint2": 25, "int2": 26}
# Dtypes torch lacks: inputs of these stay numpy and are CPU-only.
_NUMPY_ONLY = {"int4", "uint4", "int2", "uint2", "float4e2m1"}
_PRECISION = {"float": "fp32", "double": "fp64", "float16": "fp16", "bfloat16": "bf16"}


def model(body: str, inputs: str, outputs: str, opset: int = 23, extra_opsets: str = "") -> str:
    return f"""<ir_version: 10, opset_import: ["" : {opset}{extra_opsets}]>
    g ({inputs}) => ({outputs}) {{
        {body}
    }}"""


def dims(shape: tuple) -> str:
    return ",".join(str(d) for d in shape)


def values(rng: np.random.Generator, shape: tuple, dtype: str, low: float = -4.0, high: float = 4.0) -> np.ndarray:
    np_dtype = np.dtype(_NP[dtype])
    if dtype == "bool":
        return rng.random(shape) < 0.5
    if dtype in ("int4", "uint4", "int2", "uint2") or np.issubdtype(np_dtype, np.integer):
        info = ml_dtypes.iinfo(np_dtype)
        return rng.integers(max(info.min, int(low)), min(info.max, int(high)) + 1, size=shape).astype(np_dtype)
    return rng.uniform(low, high, size=shape).astype(np.float32).astype(np_dtype)


def skip_numpy_only_on_gpu(backend: str, *dtypes: str) -> None:
    if backend != "cpu" and any(d in _NUMPY_ONLY for d in dtypes):
        pytest.skip("tensors of dtypes torch lacks are CPU-only")


def check_bits(text: str, feeds: Mapping[str, np.ndarray], backend: str) -> None:
    """Exact comparison with the reference evaluator, bit for bit except for NaN payloads
    (float8 arrays cannot go through assert_allclose)."""
    m = onnx.parser.parse_model(text)
    expected = run_reference_evaluator(m, feeds)
    got = tensorkiln.compile(m, device=backend).predict(dict(feeds))
    for name, want in expected.items():
        have = np.asarray(got[name])
        assert have.dtype == want.dtype, f"{name}: dtype {have.dtype} != {want.dtype}"
        assert have.shape == want.shape, f"{name}: shape {have.shape} != {want.shape}"
        if want.dtype.kind == "V" or want.dtype.itemsize == 1 and want.dtype.kind not in "iub":
            want_nan = np.isnan(want.astype(np.float32))
            have_nan = np.isnan(have.astype(np.float32))
            np.testing.assert_array_equal(have_nan, want_nan, err_msg=f"{name}: NaN positions")
            width = want.dtype.itemsize
            view = {1: np.uint8, 2: np.uint16}[width]
            np.testing.assert_array_equal(have[~have_nan].view(view), want[~want_nan].view(view), err_msg=name)
        else:
            np.testing.assert_array_equal(have, want, err_msg=name)


# ---- Cast / CastLike ---------------------------------------------------------------------

_PLAIN_PAIRS = [
    ("float", "double"), ("double", "float"), ("float", "float16"), ("float16", "float"), ("float", "bfloat16"),
    ("bfloat16", "float"), ("float16", "bfloat16"), ("float", "int32"), ("float", "int8"), ("double", "int64"),
    ("int32", "float"), ("int64", "int8"), ("int32", "uint8"), ("uint8", "int64"), ("int16", "uint16"),
    ("uint16", "float"), ("float", "bool"), ("bool", "float"), ("int32", "bool"), ("bool", "int64"),
    ("uint32", "int64"), ("int8", "float16"),
]


@pytest.mark.parametrize("src,dst", _PLAIN_PAIRS)
def test_cast_plain_dtypes(backend, rng, src, dst):
    text = model(f"y = Cast <to: int = {_CODE[dst]}> (x)", f"{src}[3,4] x", f"{dst}[3,4] y")
    low, high = (0, 120) if dst.startswith("uint") or src.startswith("uint") else (-120, 120)
    x = values(rng, (3, 4), src, low, high)
    check_model(text, {"x": x}, device=backend, oracle="ref", precision=_PRECISION.get(dst, "exact"))


def test_cast_integer_narrowing_wraps(backend):
    text = model("y = Cast <to: int = 3> (x)", "int32[4] x", "int8[4] y")
    check_model(text, {"x": np.array([200, -200, 127, 1000], np.int32)}, device=backend, oracle="ort",
                precision="exact")


_FLOAT8 = ["float8e4m3fn", "float8e4m3fnuz", "float8e5m2", "float8e5m2fnuz"]
_EDGES = np.array([0.0, -0.0, 0.3, -1.7, 447.0, 463.9, 464.0, 470.0, 250.0, 1e5, -1e5, 61440.0, np.inf, -np.inf,
                   np.nan, 1e-4], np.float32)


@pytest.mark.parametrize("saturate", [0, 1])
@pytest.mark.parametrize("dst", _FLOAT8)
@pytest.mark.parametrize("src", ["float", "float16"])
def test_cast_to_float8(backend, src, dst, saturate):
    text = model(f"y = Cast <to: int = {_CODE[dst]}, saturate: int = {saturate}> (x)", f"{src}[16] x", f"{dst}[16] y")
    with np.errstate(over="ignore"):  # the edges include values beyond float16
        x = _EDGES.astype(_NP[src])
    check_bits(text, {"x": x}, backend)


@pytest.mark.parametrize("src", _FLOAT8)
@pytest.mark.parametrize("dst", ["float", "float16"])
def test_cast_from_float8(backend, rng, src, dst):
    x = rng.uniform(-200, 200, size=(4, 5)).astype(_NP[src])
    text = model(f"y = Cast <to: int = {_CODE[dst]}> (x)", f"{src}[4,5] x", f"{dst}[4,5] y")
    check_model(text, {"x": x}, device=backend, oracle="ref", precision="exact")


@pytest.mark.parametrize("round_mode", ["up", "down", "nearest"])
@pytest.mark.parametrize("saturate", [0, 1])
def test_cast_to_float8e8m0(backend, rng, round_mode, saturate):
    x = np.concatenate([np.exp2(rng.uniform(-130, 127, 20)), [0.0, 1.0, 1.5, 3.0, 3.4e38, np.inf, np.nan]])
    text = model(f'y = Cast <to: int = 24, saturate: int = {saturate}, round_mode: string = "{round_mode}"> (x)',
                 "float[27] x", "float8e8m0[27] y", opset=24)
    check_bits(text, {"x": x.astype(np.float32)}, backend)


def test_cast_from_float8e8m0(backend):
    x = np.array([0, 1, 100, 127, 128, 200, 254, 255], np.uint8).view(ml_dtypes.float8_e8m0fnu)
    text = model("y = Cast <to: int = 1> (x)", "float8e8m0[8] x", "float[8] y", opset=24)
    check_bits(text, {"x": x}, backend)


@pytest.mark.parametrize("dst", ["int4", "uint4", "int2", "uint2", "float4e2m1"])
@pytest.mark.parametrize("src", ["float", "float16", "int32"])
def test_cast_to_sub_byte(backend, src, dst):
    x = np.array([-9, -8, -2.5, -1, -0.4, 0, 0.6, 1, 2.5, 3, 7, 8, 15, 16, 100], np.float32)
    if src == "int32":
        x = np.trunc(x)
    text = model(f"y = Cast <to: int = {_CODE[dst]}> (x)", f"{src}[15] x", f"{dst}[15] y", opset=25)
    check_bits(text, {"x": x.astype(_NP[src])}, backend)


@pytest.mark.parametrize("dst", ["float", "float16", "int8", "uint8", "int32"])
@pytest.mark.parametrize("src", ["int4", "uint4", "int2", "uint2", "float4e2m1"])
def test_cast_from_sub_byte(backend, rng, src, dst):
    skip_numpy_only_on_gpu(backend, src)
    if src == "float4e2m1" and dst not in ("float", "float16"):
        pytest.skip("float4 to integer is not a conversion the reference evaluator defines")
    x = values(rng, (3, 5), src) if src != "float4e2m1" else rng.uniform(-6, 6, (3, 5)).astype(_NP[src])
    text = model(f"y = Cast <to: int = {_CODE[dst]}> (x)", f"{src}[3,5] x", f"{dst}[3,5] y", opset=25)
    check_model(text, {"x": x}, device=backend, oracle="ref", precision="exact")


@pytest.mark.parametrize("src,dst", [("float", "float16"), ("float", "float8e4m3fn"), ("float16", "int4"),
                                     ("int8", "float"), ("int4", "float")])
def test_castlike(backend, rng, src, dst):
    skip_numpy_only_on_gpu(backend, src, dst)
    x = values(rng, (2, 6), src, -6, 6)
    like = values(rng, (1,), dst, 0, 1)
    text = model("y = CastLike (x, t)", f"{src}[2,6] x, {dst}[1] t", f"{dst}[2,6] y", opset=25)
    check_bits(text, {"x": x, "t": like}, backend)


def test_castlike_no_saturate_keeps_overflow(backend):
    text = model("y = CastLike <saturate: int = 0> (x, t)", "float[4] x, float8e5m2[1] t", "float8e5m2[4] y",
                 opset=21)
    x = np.array([1e6, -1e6, 2.0, np.inf], np.float32)
    check_bits(text, {"x": x, "t": np.zeros(1, ml_dtypes.float8_e5m2)}, backend)


def test_cast_symbolic_shape_inferred():
    text = model("y = Cast <to: int = 10> (x)", "float[N,4] x", "float16[N,4] y")
    g = parse_onnx(onnx.parser.parse_model(text))
    assert g.nodes[0].outputs[0].type.shape == ("N", 4)


def test_cast_unknown_round_mode_is_refused():
    text = model('y = Cast <to: int = 24, round_mode: string = "sideways"> (x)', "float[2] x", "float8e8m0[2] y",
                 opset=24)
    with pytest.raises(UnsupportedOpError) as err:
        parse_onnx(onnx.parser.parse_model(text))
    assert "Cast" in str(err.value) and "sideways" in str(err.value)


# ---- BitCast -----------------------------------------------------------------------------

@pytest.mark.parametrize("src,dst", [("float", "int32"), ("int32", "float"), ("double", "int64"),
                                     ("uint16", "int16"), ("float16", "bfloat16"), ("int8", "uint8"),
                                     ("bool", "uint8"), ("uint32", "float"), ("int4", "uint4")])
def test_bitcast(backend, rng, src, dst):
    skip_numpy_only_on_gpu(backend, src)
    x = values(rng, (2, 3), src, -50, 50)
    text = model(f"y = BitCast <to: int = {_CODE[dst]}> (x)", f"{src}[2,3] x", f"{dst}[2,3] y", opset=26)
    check_bits(text, {"x": x}, backend)


def test_bitcast_width_mismatch_is_refused():
    text = model("y = BitCast <to: int = 7> (x)", "float[2] x", "int64[2] y", opset=26)
    with pytest.raises(UnsupportedOpError) as err:
        parse_onnx(onnx.parser.parse_model(text))
    assert "BitCast" in str(err.value) and "bit widths" in str(err.value)


# ---- QuantizeLinear / DequantizeLinear -------------------------------------------------

_QTYPES = ["uint8", "int8", "uint16", "int16", "int4", "uint4", "int2", "uint2"]


def _zero_point(qtype: str, shape: tuple) -> np.ndarray:
    info = ml_dtypes.iinfo(np.dtype(_NP[qtype]))
    mid = (int(info.min) + int(info.max)) // 2 + 1
    return np.full(shape, mid, dtype=_NP[qtype])


@pytest.mark.parametrize("qtype", _QTYPES)
@pytest.mark.parametrize("mode", ["tensor", "axis", "block"])
def test_quantize_dequantize_integer(backend, rng, qtype, mode):
    x = rng.uniform(-20, 20, size=(4, 6)).astype(np.float32)
    if mode == "tensor":
        scale, attrs = np.array(0.15, np.float32), "axis: int = 1"
    elif mode == "axis":
        scale, attrs = rng.uniform(0.05, 0.3, size=(6,)).astype(np.float32), "axis: int = 1"
    else:
        scale, attrs = rng.uniform(0.05, 0.3, size=(4, 2)).astype(np.float32), "axis: int = 1, block_size: int = 4"
    zp = _zero_point(qtype, scale.shape)
    sdims = dims(scale.shape)
    text = model(f"q = QuantizeLinear <{attrs}> (x, s, z)\n y = DequantizeLinear <{attrs}> (q, s, z)",
                 f"float[4,6] x, float[{sdims}] s, {qtype}[{sdims}] z", f"{qtype}[4,6] q, float[4,6] y", opset=25)
    skip_numpy_only_on_gpu(backend, qtype)
    check_bits(text, {"x": x, "s": scale, "z": zp}, backend)


@pytest.mark.parametrize("xtype", ["float", "float16", "bfloat16"])
def test_quantize_without_zero_point_gives_uint8(backend, rng, xtype):
    x = rng.uniform(-5, 40, size=(3, 4)).astype(_NP[xtype])
    scale = np.array(0.2, _NP[xtype])
    text = model("y = QuantizeLinear (x, s)", f"{xtype}[3,4] x, {xtype} s", "uint8[3,4] y", opset=21)
    check_model(text, {"x": x, "s": scale}, device=backend, oracle="ref", precision="exact")


def test_quantize_output_dtype_attribute(backend, rng):
    x = rng.uniform(-5, 5, size=(3, 4)).astype(np.float32)
    text = model("y = QuantizeLinear <output_dtype: int = 3> (x, s)", "float[3,4] x, float s", "int8[3,4] y",
                 opset=21)
    check_model(text, {"x": x, "s": np.array(0.05, np.float32)}, device=backend, oracle="ref", precision="exact")


@pytest.mark.parametrize("saturate", [0, 1])
@pytest.mark.parametrize("qtype", _FLOAT8 + ["float4e2m1"])
def test_quantize_float8(backend, rng, qtype, saturate):
    if qtype == "float4e2m1" and saturate == 0:
        pytest.skip("float4e2m1 has no non-saturating mode")
    skip_numpy_only_on_gpu(backend, qtype)
    x = np.concatenate([rng.uniform(-50, 50, 12), [1e5, -1e5, 0.0, 3.0]]).astype(np.float32).reshape(4, 4)
    text = model(f"q = QuantizeLinear <saturate: int = {saturate}> (x, s, z)\n y = DequantizeLinear (q, s, z)",
                 f"float[4,4] x, float s, {qtype} z", f"{qtype}[4,4] q, float[4,4] y", opset=25)
    check_bits(text, {"x": x, "s": np.array(0.5, np.float32), "z": np.zeros((), _NP[qtype])}, backend)


@pytest.mark.parametrize("out", ["float", "float16", "bfloat16"])
def test_dequantize_output_dtype(backend, rng, out):
    x = values(rng, (3, 8), "int8", -128, 127)
    scale = rng.uniform(0.01, 0.1, size=(3, 2)).astype(np.float32)
    attrs = f"axis: int = 1, block_size: int = 4, output_dtype: int = {_CODE[out]}"
    text = model(f"y = DequantizeLinear <{attrs}> (x, s)", "int8[3,8] x, float[3,2] s", f"{out}[3,8] y", opset=23)
    check_model(text, {"x": x, "s": scale}, device=backend, oracle="ref", precision=_PRECISION[out])


def test_dequantize_int32_per_axis_ort(backend, rng):
    x = values(rng, (2, 3, 4), "int32", -1000, 1000)
    scale = rng.uniform(0.01, 0.1, size=(3,)).astype(np.float32)
    text = model("y = DequantizeLinear <axis: int = 1> (x, s)", "int32[2,3,4] x, float[3] s", "float[2,3,4] y",
                 opset=21)
    check_model(text, {"x": x, "s": scale}, device=backend, oracle="ort")


def test_quantize_zero_point_output_dtype_conflict_is_refused():
    text = model("y = QuantizeLinear <output_dtype: int = 3> (x, s, z)", "float[2] x, float s, uint8 z",
                 "uint8[2] y", opset=21)
    with pytest.raises(UnsupportedOpError) as err:
        parse_onnx(onnx.parser.parse_model(text))
    assert "QuantizeLinear" in str(err.value) and "output_dtype" in str(err.value)


@pytest.mark.parametrize("low,high", [(-3.0, 5.0), (1.0, 4.0), (-6.0, -1.0), (0.0, 0.0)])
def test_dynamic_quantize_linear(backend, rng, low, high):
    x = rng.uniform(low, high, size=(3, 5)).astype(np.float32)
    text = model("y, s, z = DynamicQuantizeLinear (x)", "float[3,5] x", "uint8[3,5] y, float s, uint8 z", opset=11)
    # All-zero input: the spec's scale would be 0/255; the ONNX reference uses 1/255 where
    # onnxruntime uses 1.0. tensorkiln follows the reference.
    oracle = "ref" if low == high else "ort"
    check_model(text, {"x": x}, device=backend, oracle=oracle, precision="exact")


# ---- Attention -----------------------------------------------------------------------------

def _attention_case(rng: np.random.Generator, *, rank: int, hq: int, hkv: int, q_len: int = 3, kv_len: int = 5,
                    head: int = 8, v_head: int = 8, past: int = 0, mask: Optional[str] = None,
                    dtype: str = "float", attrs: str = "", qk_output: bool = False) -> tuple[str, dict]:
    b = 2
    if rank == 4:
        q_shape, k_shape, v_shape = (b, hq, q_len, head), (b, hkv, kv_len, head), (b, hkv, kv_len, v_head)
    else:
        q_shape, k_shape, v_shape = (b, q_len, hq * head), (b, kv_len, hkv * head), (b, kv_len, hkv * v_head)
        heads = f"q_num_heads: int = {hq}, kv_num_heads: int = {hkv}"
        attrs = f"{heads}, {attrs}" if attrs else heads
    feeds = {"q": values(rng, q_shape, dtype, -1, 1), "k": values(rng, k_shape, dtype, -1, 1),
             "v": values(rng, v_shape, dtype, -1, 1)}
    inputs = [f"{dtype}[{dims(q_shape)}] q", f"{dtype}[{dims(k_shape)}] k", f"{dtype}[{dims(v_shape)}] v"]
    call = ["q", "k", "v", "", "", ""]
    total = past + kv_len
    if mask is not None:
        m_shape = (q_len, total) if mask != "bool4d" else (b, hq, q_len, total)
        if mask.startswith("bool"):
            m = rng.random(m_shape) < 0.7
            m[..., 0] = True
            feeds["m"] = m
            inputs.append(f"bool[{dims(m_shape)}] m")
        else:
            feeds["m"] = values(rng, m_shape, dtype, -2, 0)
            inputs.append(f"{dtype}[{dims(m_shape)}] m")
        call[3] = "m"
    outputs = [f"{dtype} y"]
    results = ["y"]
    if past:
        pk = (b, hkv, past, head)
        pv = (b, hkv, past, v_head)
        feeds["pk"], feeds["pv"] = values(rng, pk, dtype, -1, 1), values(rng, pv, dtype, -1, 1)
        inputs += [f"{dtype}[{dims(pk)}] pk", f"{dtype}[{dims(pv)}] pv"]
        call[4], call[5] = "pk", "pv"
        outputs += [f"{dtype} pk_out", f"{dtype} pv_out"]
        results += ["pk_out", "pv_out"]
    if qk_output:
        if not past:
            results += ["", ""]
        outputs.append(f"{dtype} qk")
        results.append("qk")
    while call and call[-1] == "":
        call.pop()
    body = f"{', '.join(results)} = Attention <{attrs}> ({', '.join(call)})" if attrs else \
        f"{', '.join(results)} = Attention ({', '.join(call)})"
    return model(body, ", ".join(inputs), ", ".join(outputs), opset=23), feeds


@pytest.mark.parametrize("rank", [3, 4])
@pytest.mark.parametrize("hq,hkv", [(2, 2), (4, 2), (4, 1)])
@pytest.mark.parametrize("causal", [0, 1])
def test_attention_heads_and_causal(backend, rng, rank, hq, hkv, causal):
    text, feeds = _attention_case(rng, rank=rank, hq=hq, hkv=hkv, attrs=f"is_causal: int = {causal}")
    check_model(text, feeds, device=backend, oracle="ref")


@pytest.mark.parametrize("mask", ["bool", "float", "bool4d"])
@pytest.mark.parametrize("causal", [0, 1])
def test_attention_masks(backend, rng, mask, causal):
    text, feeds = _attention_case(rng, rank=4, hq=2, hkv=2, mask=mask, attrs=f"is_causal: int = {causal}")
    check_model(text, feeds, device=backend, oracle="ref")


@pytest.mark.parametrize("rank", [3, 4])
@pytest.mark.parametrize("causal", [0, 1])
def test_attention_past_and_present(backend, rng, rank, causal):
    text, feeds = _attention_case(rng, rank=rank, hq=4, hkv=2, q_len=2, kv_len=2, past=3, mask="float",
                                  attrs=f"is_causal: int = {causal}")
    check_model(text, feeds, device=backend, oracle="ref")


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
@pytest.mark.parametrize("softcap", [0.0, 2.5])
def test_attention_qk_matmul_output_modes(backend, rng, mode, softcap):
    attrs = f"qk_matmul_output_mode: int = {mode}, softcap: float = {softcap}, scale: float = 0.3"
    text, feeds = _attention_case(rng, rank=4, hq=2, hkv=2, mask="float", attrs=attrs, qk_output=True)
    check_model(text, feeds, device=backend, oracle="ref")


def test_attention_diff_head_sizes_and_softmax_precision(backend, rng):
    text, feeds = _attention_case(rng, rank=3, hq=2, hkv=2, head=8, v_head=4,
                                  attrs="softmax_precision: int = 1", dtype="float16")
    check_model(text, feeds, device=backend, oracle="ref", precision="fp16")


def test_attention_fully_masked_rows_give_zeros(backend, rng):
    text, feeds = _attention_case(rng, rank=4, hq=2, hkv=2, mask="bool")
    feeds["m"][1, :] = False
    got = check_model(text, feeds, device=backend, oracle="ref")
    assert np.all(got["y"][:, :, 1, :] == 0)


def test_attention_3d_without_heads_is_refused():
    text = model("y = Attention (q, k, v)", "float[1,2,8] q, float[1,2,8] k, float[1,2,8] v", "float y")
    with pytest.raises(UnsupportedOpError) as err:
        parse_onnx(onnx.parser.parse_model(text))
    assert "Attention" in str(err.value) and "q_num_heads" in str(err.value)


def test_attention_shapes_inferred_symbolically():
    text = model("y, pk, pv, qk = Attention <q_num_heads: int = 4, kv_num_heads: int = 2> (q, k, v, , p, p)",
                 "float[B,3,32] q, float[B,5,16] k, float[B,5,24] v, float[B,2,7,8] p",
                 "float y, float pk, float pv, float qk")
    m = onnx.parser.parse_model(text)
    for o in m.graph.output:
        o.type.tensor_type.ClearField("shape")
    g = parse_onnx(m)
    shapes = [v.type.shape for v in g.nodes[0].outputs]
    assert shapes == [("B", 3, 48), ("B", 2, 12, 8), ("B", 2, 12, 12), ("B", 4, 3, 12)]


# ---- RotaryEmbedding / SwiGLU / LinearAttention / CausalConvWithState / FlexAttention -----

@pytest.mark.parametrize("interleaved", [0, 1])
@pytest.mark.parametrize("rank", [3, 4])
@pytest.mark.parametrize("rotary_dim", [0, 4])
def test_rotary_embedding(backend, rng, interleaved, rank, rotary_dim):
    b, s, h, d = 2, 3, 2, 8
    half = (rotary_dim or d) // 2
    x_shape = (b, h, s, d) if rank == 4 else (b, s, h * d)
    attrs = f"interleaved: int = {interleaved}, rotary_embedding_dim: int = {rotary_dim}"
    if rank == 3:
        attrs += f", num_heads: int = {h}"
    text = model(f"y = RotaryEmbedding <{attrs}> (x, c, sn, p)",
                 f"float[{dims(x_shape)}] x, float[10,{half}] c, float[10,{half}] sn, int64[{b},{s}] p",
                 f"float[{dims(x_shape)}] y")
    angles = rng.uniform(0, 3, size=(10, half))
    feeds = {"x": values(rng, x_shape, "float"), "c": np.cos(angles).astype(np.float32),
             "sn": np.sin(angles).astype(np.float32), "p": rng.integers(0, 10, size=(b, s)).astype(np.int64)}
    check_model(text, feeds, device=backend, oracle="ref")


@pytest.mark.parametrize("dtype", ["float", "float16"])
@pytest.mark.parametrize("alpha", [1.0, 1.702])
def test_swiglu(backend, rng, dtype, alpha):
    text = model(f"y = SwiGLU <alpha: float = {alpha}> (a, b)", f"{dtype}[3,8] a, {dtype}[3,8] b",
                 f"{dtype}[3,8] y", opset=28)
    feeds = {"a": values(rng, (3, 8), dtype), "b": values(rng, (3, 8), dtype)}
    check_model(text, feeds, device=backend, oracle="ref", precision=_PRECISION[dtype])


@pytest.mark.parametrize("rule", ["linear", "gated", "delta", "gated_delta"])
@pytest.mark.parametrize("hq,hkv", [(2, 2), (4, 2)])
def test_linear_attention(backend, rng, rule, hq, hkv):
    b, t, dk, dv = 2, 4, 4, 3
    inputs = f"float[{b},{t},{hq * dk}] q, float[{b},{t},{hkv * dk}] k, float[{b},{t},{hkv * dv}] v, " \
             f"float[{b},{hkv},{dk},{dv}] s"
    feeds = {"q": values(rng, (b, t, hq * dk), "float", -1, 1), "k": values(rng, (b, t, hkv * dk), "float", -1, 1),
             "v": values(rng, (b, t, hkv * dv), "float", -1, 1), "s": values(rng, (b, hkv, dk, dv), "float", -1, 1)}
    call = ["q", "k", "v", "s", "", ""]
    if rule in ("gated", "gated_delta"):
        inputs += f", float[{b},{t},{hkv}] g"
        feeds["g"] = values(rng, (b, t, hkv), "float", -1, 0)
        call[4] = "g"
    if rule in ("delta", "gated_delta"):
        inputs += f", float[{b},{t},{hkv}] beta"
        feeds["beta"] = values(rng, (b, t, hkv), "float", 0, 1)
        call[5] = "beta"
    while call[-1] == "":
        call.pop()
    attrs = f'q_num_heads: int = {hq}, kv_num_heads: int = {hkv}, update_rule: string = "{rule}"'
    text = model(f"y, state = LinearAttention <{attrs}> ({', '.join(call)})", inputs, "float y, float state",
                 opset=27)
    check_model(text, feeds, device=backend, oracle="ref")


def test_linear_attention_missing_decay_is_refused():
    text = model('y, s = LinearAttention <q_num_heads: int = 1, kv_num_heads: int = 1, update_rule: string = "gated"> '
                 "(q, k, v)", "float[1,2,4] q, float[1,2,4] k, float[1,2,4] v", "float y, float s", opset=27)
    with pytest.raises(UnsupportedOpError) as err:
        parse_onnx(onnx.parser.parse_model(text))
    assert "LinearAttention" in str(err.value) and "decay" in str(err.value)


@pytest.mark.parametrize("activation", ["none", "silu"])
@pytest.mark.parametrize("with_state", [False, True])
def test_causal_conv_with_state(backend, rng, activation, with_state):
    b, c, length, k = 2, 3, 5, 4
    inputs = f"float[{b},{c},{length}] x, float[{c},1,{k}] w, float[{c}] bias"
    feeds = {"x": values(rng, (b, c, length), "float"), "w": values(rng, (c, 1, k), "float", -1, 1),
             "bias": values(rng, (c,), "float", -1, 1)}
    call = "x, w, bias"
    if with_state:
        inputs += f", float[{b},{c},{k - 1}] st"
        feeds["st"] = values(rng, (b, c, k - 1), "float")
        call += ", st"
    text = model(f'y, st_out = CausalConvWithState <activation: string = "{activation}"> ({call})', inputs,
                 "float y, float st_out", opset=27)
    check_model(text, feeds, device=backend, oracle="ref")


@pytest.mark.parametrize("hq,hkv", [(2, 2), (4, 2)])
@pytest.mark.parametrize("score_mod", [False, True])
def test_flex_attention(backend, rng, hq, hkv, score_mod):
    mod = ""
    if score_mod:
        mod = (" <score_mod: graph = sm (float[B,H,L,S] s) => (float[B,H,L,S] s_out) "
               "<float bias = {0.5}> { s_out = Add (s, bias) }>")
    text = model(f"y = ai.onnx.preview.FlexAttention{mod} (q, k, v)",
                 f"float[1,{hq},3,4] q, float[1,{hkv},5,4] k, float[1,{hkv},5,6] v", f"float[1,{hq},3,6] y",
                 opset=26, extra_opsets=', "ai.onnx.preview" : 1')
    feeds = {"q": values(rng, (1, hq, 3, 4), "float", -1, 1), "k": values(rng, (1, hkv, 5, 4), "float", -1, 1),
             "v": values(rng, (1, hkv, 5, 6), "float", -1, 1)}
    check_model(text, feeds, device=backend, oracle="ref")


# ---- engine files ------------------------------------------------------------------------

def test_attributes_survive_an_engine_file(rng, tmp_path):
    """Cast/BitCast/Q/Attention/FlexAttention attributes (dtype codes, None scale, subgraphs)
    are plain data that an engine file stores and gives back."""
    text = model(
        "h = Cast <to: int = 10> (x)\n"
        " b = BitCast <to: int = 4> (h)\n"
        " q = QuantizeLinear <output_dtype: int = 3> (x, s)\n"
        " y = Attention <is_causal: int = 1> (x4, x4, x4)\n"
        " f = ai.onnx.preview.FlexAttention <score_mod: graph = sm (float[B,H,L,S] t) => (float[B,H,L,S] u) "
        "{ u = Neg (t) }> (x4, x4, x4)",
        "float[2,4] x, float s, float[1,2,4,4] x4", "uint16[2,4] b, int8[2,4] q, float[1,2,4,4] y, float[1,2,4,4] f",
        opset=26, extra_opsets=', "ai.onnx.preview" : 1')
    feeds = {"x": values(rng, (2, 4), "float"), "s": np.array(0.1, np.float32),
             "x4": values(rng, (1, 2, 4, 4), "float", -1, 1)}
    compiled = tensorkiln.compile(onnx.parser.parse_model(text))
    path = tmp_path / "m.plan"
    compiled.save(str(path))
    reloaded = tensorkiln.Runtime().load(str(path)).create_execution_context().execute(feeds)
    direct = compiled.predict(feeds)
    for name in ("b", "q", "y", "f"):
        np.testing.assert_array_equal(reloaded[name], direct[name], err_msg=name)
