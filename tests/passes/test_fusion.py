"""Layer fusion: folding per-channel scales/shifts into weights (fold_scale_and_bias) and fusing
bias / residual / activation epilogues into FusedConv and FusedMatMul (fuse_epilogues).

Every case checks how many rewrites each rule made, the layers left, and the numbers: the model
before the passes (built at optimization level 0), after them, and onnxruntime agree at the fp32
tolerance. The cases that must not fuse check the reason reported."""

from __future__ import annotations

from typing import Mapping, Optional

import numpy as np
import onnx
import onnx.parser
import pytest
import torch
from onnx import numpy_helper

import tensorkiln
from tensorkiln.builder.config import BuilderConfig
from tensorkiln.frontends.onnx import parse_onnx
from tensorkiln.ir import Graph, format_graph, verify
from tensorkiln.ops import get_op, infer_graph_types
from tensorkiln.passes import PassContext
from tensorkiln.passes.dead_code import eliminate_dead_nodes
from tensorkiln.passes.fuse_layers import fold_scale_and_bias, fuse_epilogues
from tensorkiln.testing.oracles import run_onnxruntime
from tensorkiln.testing.tolerances import assert_close

RNG_SEED = 7


def onnx_model(body: str, inputs: str, outputs: str, inits: Optional[Mapping[str, np.ndarray]] = None,
               opset: int = 17) -> onnx.ModelProto:
    model = onnx.parser.parse_model(f"""<ir_version: 8, opset_import: ["" : {opset}]>
    g ({inputs}) => ({outputs}) {{
        {body}
    }}""")
    for name, array in (inits or {}).items():
        model.graph.initializer.append(numpy_helper.from_array(array, name))
    return model


def rand(*shape: int, low: float = -1.0, high: float = 1.0, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(RNG_SEED + seed).uniform(low, high, size=shape).astype(np.float32)


def bn_stats(c: int, seed: int = 0) -> dict[str, np.ndarray]:
    return {"gamma": rand(c, low=0.5, high=1.5, seed=seed + 1), "beta": rand(c, seed=seed + 2),
            "mean": rand(c, seed=seed + 3), "var": rand(c, low=0.2, high=2.0, seed=seed + 4)}


class Fused:
    """A model run through the fusion passes, with what each pass reported."""

    def __init__(self, model: onnx.ModelProto, passes=(fold_scale_and_bias, fuse_epilogues)):
        self.model = model
        graph = parse_onnx(model)
        infer_graph_types(graph)
        self.rewrites: dict[str, int] = {}
        self.declines: list[tuple[str, str, str]] = []
        for p in tuple(passes) + (eliminate_dead_nodes,):
            ctx = PassContext()
            graph = p(graph, ctx)
            infer_graph_types(graph)
            verify(graph)
            if p is not eliminate_dead_nodes:
                for k, v in ctx.rewrites.items():
                    self.rewrites[k] = self.rewrites.get(k, 0) + v
                self.declines += ctx.declines
        self.graph = graph

    @property
    def ops(self) -> list[str]:
        return [n.op_type for n in self.graph.nodes]

    def node(self, op_type: str):
        found = [n for n in self.graph.nodes if n.op_type == op_type]
        assert len(found) == 1, format_graph(self.graph)
        return found[0]

    def reasons(self, rule: str) -> list[str]:
        return [reason for r, _, reason in self.declines if r == rule]

    def check_numbers(self, feeds: Mapping[str, np.ndarray], precision: str = "fp32", oracle: bool = True
                      ) -> dict[str, np.ndarray]:
        """Before (level 0) == after == onnxruntime, at the precision's tolerance."""
        level0 = BuilderConfig(optimization_level=0)
        before = run_graph(parse_onnx(self.model), feeds, level0)
        after = run_graph(self.graph, feeds, level0)
        expected = run_onnxruntime(self.model, feeds) if oracle else before
        for name, want in expected.items():
            assert after[name].dtype == want.dtype
            assert_close(before[name], want, precision, what=f"unfused '{name}'")
            assert_close(after[name], want, precision, what=f"fused '{name}'")
        return after


def run_graph(graph: Graph, feeds: Mapping[str, np.ndarray], config: BuilderConfig) -> dict[str, np.ndarray]:
    plan = tensorkiln.Builder(config).build(graph)
    return tensorkiln.Runtime().load(plan).create_execution_context().execute(dict(feeds))


# ---- fold_scale_and_bias ------------------------------------------------------------------------

CONV_CASES = {
    # name: (input shape, weight shape, conv attrs)
    "1d": ((2, 4, 11), (6, 4, 3), "pads = [1, 1]"),
    "2d": ((2, 4, 9, 9), (6, 4, 3, 3), "pads = [1, 0, 1, 2], strides = [2, 1]"),
    "3d": ((1, 4, 5, 6, 5), (6, 4, 3, 1, 3), "dilations = [1, 1, 2]"),
    "grouped": ((2, 4, 9, 9), (6, 2, 3, 3), "group = 2, pads = [1, 1, 1, 1]"),
    "depthwise": ((2, 4, 9, 9), (8, 1, 3, 3), "group = 4, auto_pad = \"SAME_UPPER\", strides = [2, 2]"),
}


@pytest.mark.parametrize("case", sorted(CONV_CASES))
@pytest.mark.parametrize("with_bias", [True, False])
def test_batchnorm_folds_into_conv(case, with_bias):
    xshape, wshape, attrs = CONV_CASES[case]
    cout = wshape[0]
    bias = ", b" if with_bias else ""
    inits = {"w": rand(*wshape, seed=1), "b": rand(cout, seed=2), **bn_stats(cout)}
    m = onnx_model(f"c = Conv<{attrs}>(x, w{bias})\n"
                   " y = BatchNormalization<epsilon = 0.001>(c, gamma, beta, mean, var)",
                   f"float[{','.join(map(str, xshape))}] x", "float[?] y", inits)
    f = Fused(m)
    assert f.rewrites == {"fold_batchnorm": 1}
    assert f.ops == ["Conv"] and len(f.node("Conv").inputs) == 3
    assert f.node("Conv").meta["fused_from"] == ["Conv_0", "BatchNormalization_1"]
    # The folded weights are new constants; the model's own weights are untouched.
    np.testing.assert_array_equal(numpy_helper.to_array(m.graph.initializer[0]), inits["w"])
    f.check_numbers({"x": rand(*xshape, seed=9)})


@pytest.mark.parametrize("group", [1, 2])
def test_batchnorm_folds_into_conv_transpose(group):
    # ConvTranspose weights are [Cin, Cout/group, k...]: the output channel is axis 1 within each group.
    inits = {"w": rand(4, 3, 3, 3, seed=1), "b": rand(3 * group, seed=2), **bn_stats(3 * group)}
    m = onnx_model(f"c = ConvTranspose<group = {group}, strides = [2, 2], pads = [1, 0, 0, 1]>(x, w, b)\n"
                   " y = BatchNormalization(c, gamma, beta, mean, var)", "float[2,4,5,5] x", "float[?] y", inits)
    f = Fused(m)
    assert f.rewrites == {"fold_batchnorm": 1} and f.ops == ["ConvTranspose"]
    f.check_numbers({"x": rand(2, 4, 5, 5, seed=9)})


@pytest.mark.parametrize("trans_b", [0, 1])
def test_batchnorm_folds_into_gemm(trans_b):
    b_shape = (5, 8) if trans_b else (8, 5)
    inits = {"B": rand(*b_shape, seed=1), "C": rand(1, 5, seed=2), **bn_stats(5)}
    m = onnx_model(f"g = Gemm<transB = {trans_b}, alpha = 0.5, beta = 2.0>(a, B, C)\n"
                   " y = BatchNormalization(g, gamma, beta, mean, var)", "float[3,8] a", "float[3,5] y", inits)
    f = Fused(m)
    assert f.rewrites == {"fold_batchnorm": 1} and f.ops == ["Gemm"]
    gemm = f.node("Gemm")
    assert gemm.attrs["transB"] == trans_b and gemm.attrs["beta"] == 1.0 and gemm.attrs["alpha"] == 0.5
    f.check_numbers({"a": rand(3, 8, seed=9)})


def test_batchnorm_after_2d_matmul_becomes_gemm():
    # BN folds into the MatMul's weights; its shift stays an Add, which the epilogue pass makes a Gemm bias.
    inits = {"B": rand(8, 5, seed=1), **bn_stats(5)}
    m = onnx_model("p = MatMul(a, B)\n y = BatchNormalization(p, gamma, beta, mean, var)", "float[3,8] a",
                   "float[3,5] y", inits)
    folded = Fused(m, passes=(fold_scale_and_bias,))
    assert folded.rewrites == {"fold_batchnorm": 1} and folded.ops == ["MatMul", "Add"]
    folded.check_numbers({"a": rand(3, 8, seed=9)})
    f = Fused(m)
    assert f.rewrites == {"fold_batchnorm": 1, "matmul_add": 1} and f.ops == ["Gemm"]
    f.check_numbers({"a": rand(3, 8, seed=9)})


def test_mul_add_div_sub_fold_into_conv():
    # Per-channel constants in each layout that broadcasts along the channel axis only.
    inits = {"w": rand(6, 4, 3, 3, seed=1), "s": rand(6, 1, 1, low=0.5, high=2.0, seed=2),
             "t": rand(1, 6, 1, 1, seed=3), "d": np.array([4.0], np.float32), "u": np.array(0.25, np.float32)}
    m = onnx_model("c = Conv(x, w)\n m1 = Mul(s, c)\n a1 = Add(m1, t)\n d1 = Div(a1, d)\n y = Sub(d1, u)",
                   "float[2,4,7,7] x", "float[2,6,5,5] y", inits)
    f = Fused(m)
    assert f.rewrites == {"fold_mul": 1, "fold_add": 1, "fold_div": 1, "fold_sub": 1}
    assert f.ops == ["Conv"] and f.node("Conv").meta["fused_from"] == ["Conv_0", "Mul_1", "Add_2", "Div_3", "Sub_4"]
    f.check_numbers({"x": rand(2, 4, 7, 7, seed=9)})


def test_mul_folds_into_batched_matmul_weights():
    inits = {"B": rand(8, 6, seed=1), "s": rand(6, seed=2)}
    m = onnx_model("p = MatMul(a, B)\n y = Mul(p, s)", "float[2,5,8] a", "float[2,5,6] y", inits)
    f = Fused(m)
    assert f.rewrites == {"fold_mul": 1} and f.ops == ["MatMul"]
    f.check_numbers({"a": rand(2, 5, 8, seed=9)})


def test_folded_weights_keep_their_dtype():
    inits = {"w": rand(6, 4, 3, 3, seed=1).astype(np.float16), "b": rand(6, seed=2).astype(np.float16),
             **{k: v.astype(np.float16) for k, v in bn_stats(6).items()}}
    m = onnx_model("c = Conv(x, w, b)\n y = BatchNormalization(c, gamma, beta, mean, var)",
                   "float16[1,4,6,6] x", "float16[?] y", inits)
    f = Fused(m)
    conv = f.node("Conv")
    assert conv.inputs[1].const.dtype == np.float16 and conv.inputs[2].const.dtype == np.float16
    f.check_numbers({"x": rand(1, 4, 6, 6, seed=9).astype(np.float16)}, precision="fp16")


def test_unread_batchnorm_statistics_outputs_are_dropped_and_folded():
    inits = {"w": rand(6, 4, 3, 3, seed=1), **bn_stats(6)}
    m = onnx_model("c = Conv(x, w)\n y, rm, rv = BatchNormalization<training_mode = 0>(c, gamma, beta, mean, var)",
                   "float[2,4,7,7] x", "float[2,6,5,5] y", inits, opset=15)
    f = Fused(m)
    assert f.rewrites == {"drop_unread_batchnorm_outputs": 1, "fold_batchnorm": 1} and f.ops == ["Conv"]
    f.check_numbers({"x": rand(2, 4, 7, 7, seed=9)}, oracle=False)


def test_fold_declines_non_constant_weights():
    m = onnx_model("c = Conv(x, w)\n y = BatchNormalization(c, gamma, beta, mean, var)",
                   "float[2,4,7,7] x, float[6,4,3,3] w", "float[2,6,5,5] y", bn_stats(6))
    f = Fused(m, passes=(fold_scale_and_bias,))
    assert f.rewrites == {} and f.ops == ["Conv", "BatchNormalization"]
    assert f.reasons("fold_batchnorm") == ["weights of Conv 'Conv_0' are not constant"]


def test_fold_declines_scale_that_is_not_per_channel():
    # [6] against a [N, 6, 5, 5] output broadcasts along the last spatial axis, not the channels.
    inits = {"w": rand(6, 4, 3, 3, seed=1), "s": rand(5, seed=2), "t": rand(1, 6, 5, 1, seed=3)}
    m = onnx_model("c = Conv(x, w)\n m1 = Mul(c, s)\n y = Add(m1, t)", "float[2,4,7,7] x", "float[2,6,5,5] y",
                   inits)
    f = Fused(m, passes=(fold_scale_and_bias,))
    assert f.rewrites == {} and f.ops == ["Conv", "Mul", "Add"]
    assert len(f.reasons("fold_mul")) == 1 and "scale is not per-output-channel" in f.reasons("fold_mul")[0]
    f.check_numbers({"x": rand(2, 4, 7, 7, seed=9)})


def test_fold_declines_non_constant_scale():
    m = onnx_model("c = Conv(x, w)\n y = Mul(c, s)", "float[2,4,7,7] x, float[6,1,1] s", "float[2,6,5,5] y",
                   {"w": rand(6, 4, 3, 3, seed=1)})
    f = Fused(m, passes=(fold_scale_and_bias,))
    assert f.ops == ["Conv", "Mul"] and f.reasons("fold_mul") == ["scale 's' is not constant"]


def test_fold_declines_when_conv_output_is_read_elsewhere():
    m = onnx_model("c = Conv(x, w)\n y = BatchNormalization(c, gamma, beta, mean, var)", "float[2,4,7,7] x",
                   "float[2,6,5,5] y, float[2,6,5,5] c", {"w": rand(6, 4, 3, 3, seed=1), **bn_stats(6)})
    f = Fused(m, passes=(fold_scale_and_bias,))
    assert f.rewrites == {} and f.ops == ["Conv", "BatchNormalization"]
    assert f.reasons("fold_batchnorm") == ["Conv 'Conv_0' output 'c' is read elsewhere (2 readers)"]


def test_fold_declines_batchnorm_over_the_wrong_axis_of_a_matmul():
    m = onnx_model("p = MatMul(a, B)\n y = BatchNormalization(p, gamma, beta, mean, var)", "float[2,5,8] a",
                   "float[2,5,6] y", {"B": rand(8, 6, seed=1), **bn_stats(5)})
    f = Fused(m, passes=(fold_scale_and_bias,))
    assert f.ops == ["MatMul", "BatchNormalization"]
    assert "normalizes axis 1 of the 3-D output" in f.reasons("fold_batchnorm")[0]


def test_fold_declines_training_mode_batchnorm():
    m = onnx_model("c = Conv(x, w)\n y = BatchNormalization<training_mode = 1>(c, gamma, beta, mean, var)",
                   "float[2,4,7,7] x", "float[2,6,5,5] y", {"w": rand(6, 4, 3, 3, seed=1), **bn_stats(6)}, opset=15)
    f = Fused(m, passes=(fold_scale_and_bias,))
    assert f.ops == ["Conv", "BatchNormalization"]
    assert f.reasons("fold_batchnorm") == ["BatchNormalization in training mode normalizes with batch statistics"]


# ---- fuse_epilogues: convolutions ---------------------------------------------------------------

@pytest.mark.parametrize("case", sorted(CONV_CASES))
def test_conv_relu_becomes_fused_conv(case):
    xshape, wshape, attrs = CONV_CASES[case]
    m = onnx_model(f"c = Conv<{attrs}>(x, w, b)\n y = Relu(c)", f"float[{','.join(map(str, xshape))}] x",
                   "float[?] y", {"w": rand(*wshape, seed=1), "b": rand(wshape[0], seed=2)})
    f = Fused(m)
    assert f.rewrites == {"conv_activation": 1} and f.ops == ["FusedConv"]
    node = f.node("FusedConv")
    assert node.domain == "tensorkiln" and node.attrs["activation"] == "Relu" and node.attrs["transposed"] == 0
    assert [v.name for v in node.inputs] == ["x", "w", "b"] and node.outputs[0].name == "y"
    f.check_numbers({"x": rand(*xshape, seed=9)})


ACTIVATIONS = {
    # name: (ONNX body computing y from c, opset, FusedConv activation, parameters)
    "relu6": ("y = Clip(c, lo, hi)", 13, "Clip", [0.0, 6.0]),
    "clip_min_only": ("y = Clip(c, lo)", 13, "Clip", [0.0, 3.4028234663852886e38]),
    "clip_attrs": ("y = Clip<min = -0.5, max = 0.5>(c)", 9, "Clip", [-0.5, 0.5]),
    "sigmoid": ("y = Sigmoid(c)", 17, "Sigmoid", []),
    "tanh": ("y = Tanh(c)", 17, "Tanh", []),
    "leaky_relu": ("y = LeakyRelu<alpha = 0.2>(c)", 17, "LeakyRelu", [0.2]),
    "prelu_scalar": ("y = PRelu(c, slope)", 17, "LeakyRelu", [0.25]),
    "elu": ("y = Elu<alpha = 0.7>(c)", 17, "Elu", [0.7]),
    "selu": ("y = Selu(c)", 17, "Selu", [1.6732632, 1.050701]),
    "celu": ("y = Celu<alpha = 1.5>(c)", 17, "Celu", [1.5]),
    "hard_sigmoid": ("y = HardSigmoid<alpha = 0.3, beta = 0.4>(c)", 17, "HardSigmoid", [0.3, 0.4]),
    "hard_swish": ("y = HardSwish(c)", 17, "HardSwish", []),
    "hard_swish_primitives": ("h = HardSigmoid<alpha = 0.16666667, beta = 0.5>(c)\n y = Mul(c, h)", 17,
                              "HardSwish", []),
    "silu_primitives": ("s = Sigmoid(c)\n y = Mul(s, c)", 17, "Silu", []),
    "gelu": ("y = Gelu(c)", 20, "Gelu", []),
    "gelu_tanh": ("y = Gelu<approximate = \"tanh\">(c)", 20, "GeluTanh", []),
    "mish": ("y = Mish(c)", 18, "Mish", []),
    "softplus": ("y = Softplus(c)", 17, "Softplus", []),
    "softsign": ("y = Softsign(c)", 17, "Softsign", []),
    "thresholded_relu": ("y = ThresholdedRelu<alpha = 0.3>(c)", 17, "ThresholdedRelu", [0.3]),
}


@pytest.mark.parametrize("case", sorted(ACTIVATIONS))
def test_conv_activation_variants(case):
    body, opset, activation, params = ACTIVATIONS[case]
    inits = {"w": rand(6, 4, 3, 3, seed=1), "b": rand(6, seed=2), "lo": np.array(0.0, np.float32),
             "hi": np.array(6.0, np.float32), "slope": np.array([0.25], np.float32)}
    used = {k: v for k, v in inits.items() if k in ("w", "b") or k in body}
    m = onnx_model(f"c = Conv<pads = [1, 1, 1, 1]>(x, w, b)\n {body}", "float[2,4,6,6] x", "float[2,6,6,6] y",
                   used, opset=opset)
    f = Fused(m)
    assert f.ops == ["FusedConv"], format_graph(f.graph)
    node = f.node("FusedConv")
    assert node.attrs["activation"] == activation
    np.testing.assert_allclose(node.attrs["activation_params"], params, rtol=1e-6)
    if case.endswith("_primitives"):
        assert f.rewrites == {case.replace("_primitives", "_from_primitives"): 1, "conv_activation": 1}
    # Scale the input so every activation sees both signs and its saturated ranges.
    f.check_numbers({"x": rand(2, 4, 6, 6, low=-4.0, high=4.0, seed=9)})


def test_resnet_residual_then_relu():
    # Relu(Add(Conv(x), x)): conv + bias + identity, then the activation (ResNet's order).
    inits = {"w": rand(4, 4, 3, 3, seed=1), "b": rand(4, seed=2)}
    m = onnx_model("c = Conv<pads = [1, 1, 1, 1]>(x, w, b)\n a = Add(x, c)\n y = Relu(a)", "float[2,4,6,6] x",
                   "float[2,4,6,6] y", inits)
    f = Fused(m)
    assert f.rewrites == {"conv_residual": 1, "fused_conv_activation": 1} and f.ops == ["FusedConv"]
    node = f.node("FusedConv")
    assert [v.name for v in node.inputs] == ["x", "w", "b", "x"]
    assert node.attrs["activation"] == "Relu" and node.attrs["residual_after_activation"] == 0
    f.check_numbers({"x": rand(2, 4, 6, 6, seed=9)})


def test_residual_after_activation():
    # Add(Relu(Conv(x)), r) is a different function: the residual comes after the activation.
    inits = {"w": rand(4, 4, 3, 3, seed=1)}
    m = onnx_model("c = Conv<pads = [1, 1, 1, 1]>(x, w)\n r1 = Relu(c)\n y = Add(r1, r)",
                   "float[2,4,6,6] x, float[2,4,1,6] r", "float[2,4,6,6] y", inits)
    f = Fused(m)
    assert f.rewrites == {"conv_activation": 1, "fused_conv_residual": 1} and f.ops == ["FusedConv"]
    node = f.node("FusedConv")
    assert node.inputs[2] is None and node.inputs[3].name == "r"
    assert node.attrs["residual_after_activation"] == 1
    f.check_numbers({"x": rand(2, 4, 6, 6, seed=9), "r": rand(2, 4, 1, 6, seed=8)})


def test_resnet_block_with_batchnorm_folds_and_fuses_to_two_layers():
    # x -> Conv-BN-Relu -> Conv-BN -> Add(x) -> Relu: two FusedConvs.
    inits = {"w1": rand(4, 4, 3, 3, seed=1), "w2": rand(4, 4, 3, 3, seed=2)}
    inits.update({f"{k}1": v for k, v in bn_stats(4, seed=10).items()})
    inits.update({f"{k}2": v for k, v in bn_stats(4, seed=20).items()})
    m = onnx_model("c1 = Conv<pads = [1, 1, 1, 1]>(x, w1)\n n1 = BatchNormalization(c1, gamma1, beta1, mean1, var1)\n"
                   " r1 = Relu(n1)\n c2 = Conv<pads = [1, 1, 1, 1]>(r1, w2)\n"
                   " n2 = BatchNormalization(c2, gamma2, beta2, mean2, var2)\n a = Add(n2, x)\n y = Relu(a)",
                   "float[N,4,6,6] x", "float[N,4,6,6] y", inits)
    f = Fused(m)
    assert f.rewrites == {"fold_batchnorm": 2, "conv_activation": 1, "conv_residual": 1, "fused_conv_activation": 1}
    assert f.ops == ["FusedConv", "FusedConv"]
    f.check_numbers({"x": rand(3, 4, 6, 6, seed=9)})


@pytest.mark.parametrize("attrs", ["strides = [2, 2], pads = [1, 1, 1, 1], output_padding = [1, 1]",
                                   "strides = [2, 2], pads = [0, 1, 1, 0]",
                                   "strides = [2, 2], output_shape = [11, 12]",
                                   "group = 2, strides = [3, 2], dilations = [1, 2]"])
def test_conv_transpose_bias_activation(attrs):
    inits = {"w": rand(4, 3, 3, 3, seed=1), "b": rand(6 if "group" in attrs else 3, seed=2)}
    m = onnx_model(f"c = ConvTranspose<{attrs}>(x, w, b)\n y = LeakyRelu(c)", "float[2,4,5,5] x", "float[?] y",
                   inits)
    f = Fused(m)
    assert f.rewrites == {"conv_activation": 1} and f.ops == ["FusedConv"]
    assert f.node("FusedConv").attrs["transposed"] == 1
    f.check_numbers({"x": rand(2, 4, 5, 5, seed=9)})


def test_fused_conv_in_half_precision():
    inits = {"w": rand(6, 4, 3, 3, seed=1).astype(np.float16), "b": rand(6, seed=2).astype(np.float16)}
    m = onnx_model("c = Conv(x, w, b)\n y = Sigmoid(c)", "float16[1,4,6,6] x", "float16[1,6,4,4] y", inits)
    f = Fused(m)
    assert f.ops == ["FusedConv"]
    f.check_numbers({"x": rand(1, 4, 6, 6, seed=9).astype(np.float16)}, precision="fp16")


def test_epilogue_declines_shared_conv_output():
    m = onnx_model("c = Conv(x, w)\n y = Relu(c)", "float[2,4,7,7] x", "float[2,6,5,5] y, float[2,6,5,5] c",
                   {"w": rand(6, 4, 3, 3, seed=1)})
    f = Fused(m)
    assert f.rewrites == {} and f.ops == ["Conv", "Relu"]
    assert f.reasons("conv_activation") == ["Conv 'Conv_0' output 'c' is read elsewhere (2 readers)"]


@pytest.mark.parametrize("body, inputs, reason", [
    ("y = PRelu(c, slope)", "float[2,4,7,7] x",
     "PRelu with a per-channel slope is not a supported epilogue activation"),
    ("y = Clip(c, lo, hi)", "float[2,4,7,7] x, float hi", "Clip bound 'hi' is not constant"),
    ("y = Shrink(c)", "float[2,4,7,7] x", None),
])
def test_epilogue_declines_unsupported_activation(body, inputs, reason):
    inits = {"w": rand(6, 4, 3, 3, seed=1), "slope": rand(6, 1, 1, seed=2), "lo": np.array(0.0, np.float32)}
    m = onnx_model(f"c = Conv(x, w)\n {body}", inputs, "float[2,6,5,5] y",
                   {k: v for k, v in inits.items() if k == "w" or k in body})
    f = Fused(m)
    assert f.rewrites == {} and len(f.ops) == 2
    # Shrink is no activation an epilogue knows at all: nothing matches, nothing to report.
    assert f.reasons("conv_activation") == ([reason] if reason else [])


def test_epilogue_declines_residual_that_would_grow_the_output():
    m = onnx_model("c = Conv(x, w)\n y = Add(c, r)", "float[1,4,7,7] x, float[3,6,5,5] r", "float[3,6,5,5] y",
                   {"w": rand(6, 4, 3, 3, seed=1)})
    f = Fused(m)
    assert f.ops == ["Conv", "Add"]
    assert f.reasons("conv_residual") == [
        "addend 'r' [3, 6, 5, 5] does not broadcast into the output [1, 6, 5, 5] without growing it"]


def test_epilogue_declines_second_activation_and_second_residual():
    m = onnx_model("c = Conv(x, w)\n a1 = Add(c, r1)\n a2 = Add(a1, r2)\n t1 = Relu(a2)\n y = Relu(t1)",
                   "float[1,4,7,7] x, float[1,6,5,5] r1, float[1,6,5,5] r2", "float[1,6,5,5] y",
                   {"w": rand(6, 4, 3, 3, seed=1)})
    f = Fused(m)
    assert f.rewrites == {"conv_residual": 1}
    assert f.ops == ["FusedConv", "Add", "Relu", "Relu"]
    assert f.reasons("fused_conv_residual") == ["FusedConv 'Conv_0+Add_1' already has a residual input"]
    feeds = {"x": rand(1, 4, 7, 7, seed=9), "r1": rand(1, 6, 5, 5, seed=8), "r2": rand(1, 6, 5, 5, seed=7)}
    f.check_numbers(feeds)
    m2 = onnx_model("c = Conv(x, w)\n t1 = Relu(c)\n y = Sigmoid(t1)", "float[1,4,7,7] x", "float[1,6,5,5] y",
                    {"w": rand(6, 4, 3, 3, seed=1)})
    f2 = Fused(m2)
    assert f2.ops == ["FusedConv", "Sigmoid"]
    assert f2.reasons("fused_conv_activation") == ["FusedConv 'Conv_0+Relu_1' already ends in Relu"]


# ---- fuse_epilogues: matrix products --------------------------------------------------------------

def test_matmul_bias_relu_becomes_gemm_then_fused_matmul():
    m = onnx_model("p = MatMul(a, B)\n q = Add(p, bias)\n y = Relu(q)", "float[4,8] a", "float[4,6] y",
                   {"B": rand(8, 6, seed=1), "bias": rand(6, seed=2)})
    gemm_only = onnx_model("p = MatMul(a, B)\n y = Add(bias, p)", "float[4,8] a", "float[4,6] y",
                           {"B": rand(8, 6, seed=1), "bias": rand(6, seed=2)})
    g = Fused(gemm_only)
    assert g.rewrites == {"matmul_add": 1} and g.ops == ["Gemm"]
    assert [v.name for v in g.node("Gemm").inputs] == ["a", "B", "bias"]
    g.check_numbers({"a": rand(4, 8, seed=9)})
    f = Fused(m)
    assert f.rewrites == {"matmul_add": 1, "gemm_activation": 1} and f.ops == ["FusedMatMul"]
    node = f.node("FusedMatMul")
    assert [v.name for v in node.inputs] == ["a", "B", "bias"] and node.attrs["activation"] == "Relu"
    f.check_numbers({"a": rand(4, 8, seed=9)})


def test_batched_matmul_bias_gelu_residual():
    # A transformer MLP: MatMul + bias + Gelu, MatMul + bias, + residual.
    inits = {"W1": rand(8, 16, seed=1), "b1": rand(16, seed=2), "W2": rand(16, 8, seed=3), "b2": rand(8, seed=4)}
    m = onnx_model("p1 = MatMul(x, W1)\n q1 = Add(p1, b1)\n h = Gelu(q1)\n p2 = MatMul(h, W2)\n q2 = Add(b2, p2)\n"
                   " y = Add(x, q2)", "float[B,5,8] x", "float[B,5,8] y", inits, opset=20)
    f = Fused(m)
    assert f.rewrites == {"matmul_add": 2, "fused_matmul_activation": 1, "fused_matmul_add": 1}
    assert f.ops == ["FusedMatMul", "FusedMatMul"]
    first, second = f.graph.nodes
    assert first.attrs["activation"] == "Gelu" and first.inputs[2].name == "b1" and len(first.inputs) == 3
    assert second.inputs[2].name == "b2" and second.inputs[3].name == "x"
    assert second.attrs["activation"] == "" and second.outputs[0].name == "y"
    f.check_numbers({"x": rand(3, 5, 8, seed=9)})


def test_matmul_of_two_activations_with_residual_and_activation():
    # Non-constant batched operands: bias-less FusedMatMul, the full-shape addend is a residual.
    m = onnx_model("p = MatMul(a, b)\n q = Add(p, r)\n y = Tanh(q)",
                   "float[2,3,4,5] a, float[2,3,5,6] b, float[2,3,4,6] r", "float[2,3,4,6] y")
    f = Fused(m)
    assert f.rewrites == {"matmul_add": 1, "fused_matmul_activation": 1} and f.ops == ["FusedMatMul"]
    node = f.node("FusedMatMul")
    assert node.inputs[2] is None and node.inputs[3].name == "r" and node.attrs["residual_after_activation"] == 0
    f.check_numbers({"a": rand(2, 3, 4, 5, seed=9), "b": rand(2, 3, 5, 6, seed=8), "r": rand(2, 3, 4, 6, seed=7)})


@pytest.mark.parametrize("trans_a, trans_b", [(0, 1), (1, 0), (1, 1)])
def test_gemm_activation_keeps_transposes_alpha_beta(trans_a, trans_b):
    a_shape = (8, 4) if trans_a else (4, 8)
    b_shape = (6, 8) if trans_b else (8, 6)
    m = onnx_model(f"g = Gemm<transA = {trans_a}, transB = {trans_b}, alpha = 0.5, beta = 1.5>(a, B, C)\n"
                   " y = HardSigmoid(g)", f"float[{a_shape[0]},{a_shape[1]}] a", "float[4,6] y",
                   {"B": rand(*b_shape, seed=1), "C": rand(4, 1, seed=2)})
    f = Fused(m)
    assert f.rewrites == {"gemm_activation": 1} and f.ops == ["FusedMatMul"]
    a = f.node("FusedMatMul").attrs
    assert (a["transA"], a["transB"], a["alpha"], a["beta"]) == (trans_a, trans_b, 0.5, 1.5)
    f.check_numbers({"a": rand(*a_shape, seed=9)})


def test_gemm_without_bias_takes_the_add_as_its_bias():
    m = onnx_model("g = Gemm<transB = 1, beta = 0.0>(a, B)\n y = Add(g, r)", "float[4,8] a, float[4,6] r",
                   "float[4,6] y", {"B": rand(6, 8, seed=1)})
    f = Fused(m)
    assert f.rewrites == {"gemm_add": 1} and f.ops == ["Gemm"]
    gemm = f.node("Gemm")
    assert gemm.inputs[2].name == "r" and gemm.attrs["beta"] == 1.0 and gemm.attrs["transB"] == 1
    f.check_numbers({"a": rand(4, 8, seed=9), "r": rand(4, 6, seed=8)})


def test_silu_after_batched_matmul():
    m = onnx_model("p = MatMul(x, W)\n s = Sigmoid(p)\n y = Mul(p, s)", "float[2,5,8] x", "float[2,5,6] y",
                   {"W": rand(8, 6, seed=1)})
    f = Fused(m)
    assert f.rewrites == {"silu_from_primitives": 1, "matmul_activation": 1} and f.ops == ["FusedMatMul"]
    assert f.node("FusedMatMul").attrs["activation"] == "Silu"
    f.check_numbers({"x": rand(2, 5, 8, seed=9)})


def test_integer_matmul_is_not_fused():
    m = onnx_model("p = MatMul(a, b)\n y = Add(p, c)", "int32[4,8] a, int32[8,6] b, int32[6] c", "int32[4,6] y")
    f = Fused(m)
    assert f.ops == ["MatMul", "Add"]
    assert f.reasons("matmul_add") == ["MatMul 'MatMul_0' computes int32 tensors (only floating point is fused)"]


def test_fused_matmul_infers_shapes_with_transposes():
    op = get_op("FusedMatMul", "tensorkiln")
    from tensorkiln.ir import DType, Node, TensorType, Value
    from tensorkiln.ops import InferContext
    a = Value("a", TensorType(DType.FLOAT32, ("B", 8, 4)))
    b = Value("b", TensorType(DType.FLOAT32, (6, 8)))
    node = Node("FusedMatMul", [a, b], [Value("y")], op.normalize({"transA": 1, "transB": 1}, 1),
                domain="tensorkiln", opset=1)
    assert op.infer(InferContext(node, [a.type, b.type], node.attrs)) == [TensorType(DType.FLOAT32, ("B", 4, 6))]


def test_fused_layers_do_not_modify_their_inputs():
    # Debug runs keep references to every tensor: the epilogue works in place on its own output only.
    ctx = None
    x, w, b, r = (torch.randn(2, 4, 6, 6), torch.randn(4, 4, 3, 3), torch.randn(4), torch.randn(2, 4, 6, 6))
    w2, b2 = torch.randn(6, 6), torch.randn(6)
    inputs = (x, w, b, r, w2, b2)
    copies = [t.clone() for t in inputs]
    conv = get_op("FusedConv", "tensorkiln")
    y = conv.reference(ctx, [x, w, b, r], conv.normalize({"pads": [1, 1, 1, 1], "activation": "Relu"}, 1))
    assert y.shape == x.shape and float(y.min()) >= 0.0
    mm = get_op("FusedMatMul", "tensorkiln")
    for attrs in ({"activation": "Silu"}, {"activation": "Tanh", "residual_after_activation": 1, "alpha": 2.0}):
        y = mm.reference(ctx, [x, w2, b2, r], mm.normalize(attrs, 1))
        assert y.shape == x.shape
    for t, c in zip(inputs, copies):
        assert torch.equal(t, c)


# ---- the engine file ----------------------------------------------------------------------------

def test_engine_file_roundtrip_of_fused_model():
    inits = {"w": rand(6, 4, 3, 3, seed=1), "W": rand(6 * 5 * 5, 10, seed=2), "bias": rand(10, seed=3),
             **bn_stats(6)}
    m = onnx_model("c = Conv(x, w)\n n = BatchNormalization(c, gamma, beta, mean, var)\n r = Clip(n, lo, hi)\n"
                   " f = Flatten(r)\n p = MatMul(f, W)\n q = Add(p, bias)\n s = Sigmoid(q)\n y = Mul(q, s)",
                   "float[2,4,7,7] x", "float[2,10] y",
                   {**inits, "lo": np.array(0.0, np.float32), "hi": np.array(6.0, np.float32)})
    f = Fused(m)
    assert f.ops == ["FusedConv", "Flatten", "FusedMatMul"]
    feeds = {"x": rand(2, 4, 7, 7, seed=9)}
    direct = f.check_numbers(feeds)
    plan = tensorkiln.Builder(BuilderConfig(optimization_level=0)).build(f.graph)
    engine = tensorkiln.Runtime().load(plan.serialize())
    assert [layer["op"] for layer in engine.layers] == ["FusedConv", "Flatten", "FusedMatMul"]
    again = engine.create_execution_context().execute(feeds)
    np.testing.assert_array_equal(again["y"], direct["y"])


def test_downsample_bias_joins_the_fused_conv():
    # Relu(Add(Conv(x, W, b), Conv(x, Wd, bd))): the downsample branch's bias is added inside the fused layer.
    inits = {"w": rand(4, 4, 3, 3, seed=1), "b": rand(4, seed=2), "wd": rand(4, 4, 1, 1, seed=3), "bd": rand(4, seed=4)}
    m = onnx_model("c = Conv<pads = [1, 1, 1, 1]>(x, w, b)\n d = Conv(x, wd, bd)\n a = Add(c, d)\n y = Relu(a)",
                   "float[2,4,6,6] x", "float[2,4,6,6] y", inits)
    f = Fused(m)
    assert f.rewrites["residual_bias_hoist"] == 1 and sorted(f.ops) == ["Conv", "FusedConv"]
    conv = f.node("Conv")
    assert len(conv.inputs) == 2  # no bias pass left on the downsample branch
    fused = f.node("FusedConv")
    np.testing.assert_allclose(fused.inputs[2].const, inits["b"] + inits["bd"], rtol=1e-6)
    f.check_numbers({"x": rand(2, 4, 6, 6, seed=9)})


def test_downsample_bias_stays_when_the_residual_follows_the_activation():
    # FusedConv(x, W, residual=Conv(x, Wd, bd), Relu, residual after it): bd cannot move past the ReLU.
    from tensorkiln.ir import DType, Node, TensorType, Value
    from tensorkiln.passes.fusion import apply_rules
    from tensorkiln.passes.fusion.rules.epilogue import EPILOGUE_RULES
    t = TensorType(DType.FLOAT32, (2, 4, 6, 6))
    x, d, y = Value("x", t), Value("d", t), Value("y", t)
    w, wd, bd = (Value(n, const=rand(*s, seed=i)) for i, (n, s) in
                 enumerate([("w", (4, 4, 3, 3)), ("wd", (4, 4, 1, 1)), ("bd", (4,))]))
    fused_op = get_op("FusedConv", "tensorkiln")
    attrs = fused_op.normalize({"pads": [1, 1, 1, 1], "activation": "Relu", "residual_after_activation": 1}, 1)
    graph = Graph("g", [x], [y], [Node("Conv", [x, wd, bd], [d], get_op("Conv").normalize({}, 17), name="down",
                                       opset=17),
                                  Node("FusedConv", [x, w, None, d], [y], attrs, name="main", domain="tensorkiln",
                                       opset=1)], [w, wd, bd])
    ctx = PassContext()
    apply_rules(graph, EPILOGUE_RULES, ctx)
    assert "residual_bias_hoist" not in ctx.rewrites
    assert ("residual_bias_hoist", "main",
            "the residual is added after the activation, so its bias cannot join the conv's") in ctx.declines


def test_new_tensor_activations_are_the_epilogues_without_an_in_place_form():
    # GEMM tactics writing into the arena rely on this set (tactics/cuda/gemm.py): every other epilogue
    # activation overwrites the tensor it is given.
    from tensorkiln.ops.fused_conv import EPILOGUE_ACTIVATIONS, NEW_TENSOR_ACTIVATIONS

    returns_new = set()
    for name, (params, fn) in EPILOGUE_ACTIVATIONS.items():
        y = torch.full((4,), 0.5)
        if fn(y, [1.0] * len(params)).data_ptr() != y.data_ptr():
            returns_new.add(name)
    assert returns_new == NEW_TENSOR_ACTIVATIONS
