"""recognize_patterns / recognize_attention: primitive subgraphs -> single layers.

Each model is written in ONNX text with seeded weights; every rewrite is checked for how
many times it fired, what the graph looks like after, and that the rewritten graph computes
what onnxruntime computes for the original, at the fp32 tolerance. Near misses must not
match, and the reason must be reported.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, Optional

import numpy as np
import onnx
import onnx.parser
import pytest
import torch
from onnx import numpy_helper

from tensorkiln import Builder, BuilderConfig, Runtime
from tensorkiln.frontends.onnx import parse_onnx
from tensorkiln.ir import Graph, verify
from tensorkiln.ops import get_op, infer_graph_types
from tensorkiln.passes import PassContext
from tensorkiln.passes.recognize import recognize_attention, recognize_patterns
from tensorkiln.testing.oracles import run_onnxruntime
from tensorkiln.testing.tolerances import assert_close

SQRT2 = math.sqrt(2.0)


# ---- helpers --------------------------------------------------------------------------------

def model(text: str, weights: Optional[Mapping[str, np.ndarray]] = None) -> onnx.ModelProto:
    m = onnx.parser.parse_model(text)
    for name, array in (weights or {}).items():
        m.graph.initializer.append(numpy_helper.from_array(np.asarray(array), name))
    onnx.checker.check_model(m)
    return m


def header(opset: int) -> str:
    return f'<ir_version: 8, opset_import: ["" : {opset}]>'


def recognize(m: onnx.ModelProto, *passes: Callable[[Graph, PassContext], Graph]) -> tuple[Graph, PassContext]:
    graph = parse_onnx(m)
    ctx = PassContext()
    for p in passes or (recognize_patterns,):
        graph = p(graph, ctx)
    infer_graph_types(graph)
    verify(graph, check_node=lambda n: get_op(n.op_type, n.domain).check(n))
    return graph, ctx


def ops(graph: Graph) -> list[str]:
    return [n.op_type for n in graph.nodes]


def run(graph: Graph, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    plan = Builder(BuilderConfig(optimization_level=0)).build(graph)
    return Runtime().load(plan).create_execution_context().execute(dict(feeds))


def assert_same_as_onnxruntime(m: onnx.ModelProto, graph: Graph, feeds: Mapping[str, np.ndarray]) -> None:
    want = run_onnxruntime(m, feeds)
    got = run(graph, feeds)
    for name, expected in want.items():
        assert_close(got[name], expected, "fp32", what=name)


def declines(ctx: PassContext, rule: str) -> list[str]:
    return [reason for r, _, reason in ctx.declines if r == rule]


def normal(rng: np.random.Generator, *shape: int, scale: float = 1.0) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def f32(x: float) -> np.ndarray:
    return np.array(x, dtype=np.float32)


# ---- LayerNorm -------------------------------------------------------------------------------

def layer_norm_text(x: str, out: str, p: str, opset: int, axes: list[int], form: str = "pytorch",
                    affine: bool = True) -> str:
    """Primitive layer norm lines. form: pytorch (Pow, Div), tf (two Subs, Pow, Reciprocal),
    mul (Mul(d, d), Div(1, Sqrt)). Axes as attribute before opset 18, as input after."""
    def reduce(inp: str, o: str) -> str:
        if opset >= 18:
            return f"{o} = ReduceMean({inp}, {p}axes)"
        return f"{o} = ReduceMean<axes = {axes}>({inp})"
    lines = [reduce(x, f"{p}mean")]
    if form == "pytorch":
        lines += [f"{p}d = Sub({x}, {p}mean)", f"{p}sq = Pow({p}d, two)", reduce(f"{p}sq", f"{p}var"),
                  f"{p}ve = Add({p}var, {p}eps)", f"{p}std = Sqrt({p}ve)", f"{p}n = Div({p}d, {p}std)"]
    elif form == "tf":
        lines += [f"{p}d2 = Sub({x}, {p}mean)", f"{p}sq = Pow({p}d2, two)", reduce(f"{p}sq", f"{p}var"),
                  f"{p}ve = Add({p}eps, {p}var)", f"{p}std = Sqrt({p}ve)", f"{p}inv = Reciprocal({p}std)",
                  f"{p}d = Sub({x}, {p}mean)", f"{p}n = Mul({p}inv, {p}d)"]
    else:
        lines += [f"{p}d = Sub({x}, {p}mean)", f"{p}sq = Mul({p}d, {p}d)", reduce(f"{p}sq", f"{p}var"),
                  f"{p}ve = Add({p}var, {p}eps)", f"{p}std = Sqrt({p}ve)", f"{p}inv = Div(one, {p}std)",
                  f"{p}n = Mul({p}d, {p}inv)"]
    if affine:
        lines += [f"{p}g = Mul({p}n, {p}gamma)", f"{out} = Add({p}beta, {p}g)"]
    else:
        lines[-1] = lines[-1].replace(f"{p}n =", f"{out} =")
    return "\n".join(lines)


def layer_norm_weights(rng, p: str, shape: tuple[int, ...], axes: list[int], eps: float = 1e-5,
                       form: str = "pytorch") -> dict:
    weights = {f"{p}gamma": normal(rng, *shape) + 1, f"{p}beta": normal(rng, *shape), f"{p}eps": f32(eps),
               f"{p}axes": np.array(axes, dtype=np.int64)}
    weights.update({"one": f32(1)} if form == "mul" else {"two": f32(2)})
    return weights


@pytest.mark.parametrize("opset", [13, 18])
@pytest.mark.parametrize("form", ["pytorch", "tf", "mul"])
def test_layer_norm_with_scale_and_shift_becomes_one_layer(rng, opset, form):
    text = f"""{header(opset)}
    ln (float[B, 5, 16] x) => (float[B, 5, 16] y) {{
        {layer_norm_text("x", "y", "", opset, [-1], form)}
    }}"""
    weights = layer_norm_weights(rng, "", (16,), [-1], eps=1e-5, form=form)
    if opset < 18:
        del weights["axes"]
    m = model(text, weights)
    graph, ctx = recognize(m)
    assert ops(graph) == ["LayerNormalization"]
    assert ctx.rewrites["layer_norm"] == 1
    assert ctx.rewrites["layer_norm_scale"] == 1 and ctx.rewrites["layer_norm_bias"] == 1
    (ln,) = graph.nodes
    assert ln.attrs["axis"] == 2 and ln.attrs["epsilon"] == pytest.approx(1e-5)
    np.testing.assert_allclose(ln.inputs[1].const, weights["gamma"], rtol=1e-6)
    np.testing.assert_allclose(ln.inputs[2].const, weights["beta"], rtol=1e-6)
    assert ln.outputs[0] is graph.outputs[0]
    # The replaced chain's constants do not ride along; only the folded scale and shift remain.
    assert sorted(v.name for v in graph.initializers) == sorted(v.name for v in ln.inputs[1:])
    assert_same_as_onnxruntime(m, graph, {"x": normal(rng, 3, 5, 16, scale=3.0) + 1})


def test_layer_norm_over_two_trailing_axes_without_affine(rng):
    text = f"""{header(18)}
    ln (float[2, 3, 4, 6] x) => (float[2, 3, 4, 6] y) {{
        {layer_norm_text("x", "y", "", 18, [2, 3], affine=False)}
    }}"""
    weights = layer_norm_weights(rng, "", (4, 6), [2, 3])
    del weights["gamma"], weights["beta"]
    m = model(text, weights)
    graph, ctx = recognize(m)
    assert ops(graph) == ["LayerNormalization"] and graph.nodes[0].attrs["axis"] == 2
    np.testing.assert_array_equal(graph.nodes[0].inputs[1].const, np.ones((4, 6), np.float32))
    assert ctx.rewrites["orphaned_node"] == 2  # x - mean and the mean
    assert_same_as_onnxruntime(m, graph, {"x": normal(rng, 2, 3, 4, 6)})


def test_layer_norm_over_a_leading_axis_is_declined(rng):
    text = f"""{header(13)}
    ln (float[B, 5, 16] x) => (float[B, 5, 16] y) {{
        {layer_norm_text("x", "y", "", 13, [1], affine=False)}
    }}"""
    m = model(text, {k: v for k, v in layer_norm_weights(rng, "", (16,), [1]).items()
                     if k in ("eps", "two", "one")})
    graph, ctx = recognize(m)
    assert "LayerNormalization" not in ops(graph) and len(graph.nodes) == 7
    assert any("normalizes axes [1] of a rank-3 tensor" in r for r in declines(ctx, "layer_norm"))
    assert_same_as_onnxruntime(m, graph, {"x": normal(rng, 2, 5, 16)})


def test_layer_norm_scale_varying_along_an_outer_axis_is_not_folded(rng):
    text = f"""{header(13)}
    ln (float[2, 5, 16] x) => (float[2, 5, 16] y) {{
        {layer_norm_text("x", "y", "", 13, [-1])}
    }}"""
    weights = layer_norm_weights(rng, "", (16,), [-1])
    del weights["axes"]
    weights["gamma"] = normal(rng, 5, 1)  # one factor per row: not a per-feature scale
    m = model(text, weights)
    graph, ctx = recognize(m)
    assert ops(graph) == ["LayerNormalization", "Mul", "Add"]
    assert "layer_norm_scale" not in ctx.rewrites
    assert any("varies along axes" in r for r in declines(ctx, "layer_norm_scale"))
    assert_same_as_onnxruntime(m, graph, {"x": normal(rng, 2, 5, 16)})


def test_rms_norm_like_chain_is_not_a_layer_norm(rng):
    # x / sqrt(mean(x²) + eps) has no mean subtracted: not a layer norm.
    text = f"""{header(13)}
    rms (float[2, 16] x) => (float[2, 16] y) {{
        sq = Pow(x, two)
        var = ReduceMean<axes = [-1]>(sq)
        ve = Add(var, eps)
        std = Sqrt(ve)
        y = Div(x, std)
    }}"""
    m = model(text, {"two": f32(2), "eps": f32(1e-6)})
    graph, ctx = recognize(m)
    assert ops(graph) == ["Pow", "ReduceMean", "Add", "Sqrt", "Div"]
    assert any("is not x - ReduceMean(x)" in r for r in declines(ctx, "layer_norm"))


# ---- GELU ------------------------------------------------------------------------------------

GELU_ERF_BODIES = {
    # torch.onnx: Mul(Mul(x, Add(Erf(Div(x, √2)), 1)), 0.5)
    "pytorch": "a = Div(x, c)\n e = Erf(a)\n p = Add(e, one)\n t = Mul(x, p)\n y = Mul(t, half)",
    # HF: x * 0.5 * (1 + erf(x / √2))
    "hf": "h = Mul(x, half)\n a = Div(x, c)\n e = Erf(a)\n p = Add(one, e)\n y = Mul(h, p)",
    # TF: x * (0.5 * (1 + erf(x · 1/√2)))
    "tf": "a = Mul(c, x)\n e = Erf(a)\n p = Add(e, one)\n q = Mul(half, p)\n y = Mul(q, x)",
}


def gelu_model(body: str, consts: dict, opset: int = 13) -> onnx.ModelProto:
    return model(f"""{header(opset)}
    gelu (float[N, 64] x) => (float[N, 64] y) {{
        {body}
    }}""", {k: f32(v) for k, v in consts.items()})


@pytest.mark.parametrize("form", list(GELU_ERF_BODIES))
def test_gelu_erf_forms(rng, form):
    c = 1 / SQRT2 if form == "tf" else SQRT2
    m = gelu_model(GELU_ERF_BODIES[form], {"c": c, "half": 0.5, "one": 1.0})
    graph, ctx = recognize(m)
    assert ops(graph) == ["Gelu"] and graph.nodes[0].attrs["approximate"] == "none"
    assert ctx.rewrites == {"gelu_erf": 1}
    assert graph.initializers == []
    assert_same_as_onnxruntime(m, graph, {"x": normal(rng, 4, 64, scale=3.0)})


GELU_TANH_BODIES = {
    # torch.onnx, approximate="tanh": cube as x·(x·x), ½ applied last
    "pytorch": ("xx = Mul(x, x)\n x3 = Mul(x, xx)\n k = Mul(kappa, x3)\n s = Add(x, k)\n i = Mul(beta, s)\n"
                " t = Tanh(i)\n p = Add(one, t)\n q = Mul(x, p)\n y = Mul(half, q)"),
    # HF NewGELU: 0.5 * x * (1 + tanh(√(2/π) · (x + 0.044715 · x³)))
    "hf": ("h = Mul(half, x)\n x3 = Pow(x, three)\n k = Mul(x3, kappa)\n s = Add(k, x)\n i = Mul(s, beta)\n"
           " t = Tanh(i)\n p = Add(t, one)\n y = Mul(h, p)"),
}


@pytest.mark.parametrize("form", list(GELU_TANH_BODIES))
def test_gelu_tanh_forms(rng, form):
    consts = {"half": 0.5, "one": 1.0, "beta": math.sqrt(2 / math.pi), "kappa": 0.044715, "three": 3.0}
    body = GELU_TANH_BODIES[form]
    m = gelu_model(body, {k: v for k, v in consts.items() if k in body})
    graph, ctx = recognize(m)
    assert ops(graph) == ["Gelu"] and graph.nodes[0].attrs["approximate"] == "tanh"
    assert ctx.rewrites == {"gelu_tanh": 1}
    assert_same_as_onnxruntime(m, graph, {"x": normal(rng, 4, 64, scale=3.0)})


def test_gelu_with_a_wrong_constant_is_declined(rng):
    m = gelu_model(GELU_ERF_BODIES["pytorch"], {"c": 1.5, "half": 0.5, "one": 1.0})
    graph, ctx = recognize(m)
    assert ops(graph) == ["Div", "Erf", "Add", "Mul", "Mul"]
    (reason,) = declines(ctx, "gelu_erf")
    assert "not x/sqrt(2)" in reason and "0.6666" in reason
    assert_same_as_onnxruntime(m, graph, {"x": normal(rng, 4, 64)})


def test_gelu_tanh_with_a_wrong_cubic_coefficient_is_declined():
    consts = {"half": 0.5, "one": 1.0, "beta": math.sqrt(2 / math.pi), "kappa": 0.045, "three": 3.0}
    body = GELU_TANH_BODIES["hf"]
    graph, ctx = recognize(gelu_model(body, consts))
    assert "Gelu" not in ops(graph)
    assert any("cubic coefficient is 0.045" in r for r in declines(ctx, "gelu_tanh"))


# ---- SiLU / HardSwish ------------------------------------------------------------------------

def activation_model(body: str, consts: Optional[dict] = None, opset: int = 13) -> onnx.ModelProto:
    return model(f"""{header(opset)}
    act (float[N, 3, 8] x) => (float[N, 3, 8] y) {{
        {body}
    }}""", {k: f32(v) for k, v in (consts or {}).items()})


@pytest.mark.parametrize("body, consts, rule, op, attrs", [
    ("s = Sigmoid(x)\n y = Mul(s, x)", {}, "silu", "Swish", {"alpha": 1.0}),
    ("a = Mul(x, alpha)\n s = Sigmoid(a)\n y = Mul(x, s)", {"alpha": 1.702}, "swish", "Swish",
     {"alpha": pytest.approx(1.702)}),
    ("h = HardSigmoid<alpha = 0.16666667, beta = 0.5>(x)\n y = Mul(x, h)", {}, "hard_swish", "HardSwish", {}),
    # PyTorch: x * relu6(x + 3) / 6
    ("a = Add(x, three)\n r = Clip(a, zero, six)\n m = Mul(x, r)\n y = Div(m, six)",
     {"three": 3.0, "zero": 0.0, "six": 6.0}, "hard_swish", "HardSwish", {}),
    # x * (relu6(x + 3) * (1/6))
    ("a = Add(three, x)\n r = Clip(a, zero, six)\n m = Mul(r, sixth)\n y = Mul(x, m)",
     {"three": 3.0, "zero": 0.0, "six": 6.0, "sixth": 1 / 6}, "hard_swish", "HardSwish", {}),
])
def test_swish_and_hard_swish(rng, body, consts, rule, op, attrs):
    m = activation_model(body, consts)
    graph, ctx = recognize(m)
    assert ops(graph) == [op] and ctx.rewrites == {rule: 1}
    for k, v in attrs.items():
        assert graph.nodes[0].attrs[k] == v
    assert_same_as_onnxruntime(m, graph, {"x": normal(rng, 2, 3, 8, scale=4.0)})


def test_hard_swish_on_opset_10_clip_attributes(rng):
    m = activation_model("a = Add(x, three)\n r = Clip<min = 0.0, max = 6.0>(a)\n m = Mul(x, r)\n y = Div(m, six)",
                         {"three": 3.0, "six": 6.0}, opset=10)
    graph, ctx = recognize(m)
    assert ops(graph) == ["HardSwish"]
    assert_same_as_onnxruntime(m, graph, {"x": normal(rng, 2, 3, 8, scale=4.0)})


def test_hard_sigmoid_with_other_slope_is_not_hard_swish(rng):
    m = activation_model("h = HardSigmoid<alpha = 0.2, beta = 0.5>(x)\n y = Mul(x, h)")
    graph, ctx = recognize(m)
    assert ops(graph) == ["HardSigmoid", "Mul"]
    assert any("alpha=0.2" in r for r in declines(ctx, "hard_swish"))


def test_relu6_with_other_bounds_is_not_hard_swish():
    m = activation_model("a = Add(x, three)\n r = Clip(a, zero, five)\n m = Mul(x, r)\n y = Div(m, six)",
                         {"three": 3.0, "zero": 0.0, "five": 5.0, "six": 6.0})
    graph, ctx = recognize(m)
    assert "HardSwish" not in ops(graph)
    assert any("not [0, 6]" in r for r in declines(ctx, "hard_swish"))


def test_sigmoid_of_another_tensor_is_not_silu():
    m = model(f"""{header(13)}
    g (float[4] x, float[4] z) => (float[4] y) {{
        s = Sigmoid(z)
        y = Mul(x, s)
    }}""")
    graph, ctx = recognize(m)
    assert ops(graph) == ["Sigmoid", "Mul"] and ctx.rewrites == {} and ctx.declines == []


# ---- Softmax ---------------------------------------------------------------------------------

@pytest.mark.parametrize("opset", [13, 18])
@pytest.mark.parametrize("subtract_max", [True, False])
@pytest.mark.parametrize("axis", [-1, 1])
def test_softmax_forms(rng, opset, subtract_max, axis):
    reduce_max = f"ReduceMax(x, ax)" if opset >= 18 else f"ReduceMax<axes = [{axis}]>(x)"
    head = f"m = {reduce_max}\n d = Sub(x, m)\n e = Exp(d)" if subtract_max else "e = Exp(x)"
    m = model(f"""{header(opset)}
    sm (float[N, 6, 7] x) => (float[N, 6, 7] y) {{
        {head}
        s = ReduceSum(e, ax)
        y = Div(e, s)
    }}""", {"ax": np.array([axis], np.int64)})
    graph, ctx = recognize(m)
    assert ops(graph) == ["Softmax"] and graph.nodes[0].attrs["axis"] == axis % 3
    assert graph.nodes[0].inputs[0] is graph.inputs[0]
    assert ctx.rewrites["softmax"] == 1
    assert_same_as_onnxruntime(m, graph, {"x": normal(rng, 2, 6, 7, scale=5.0)})


def test_softmax_over_two_axes_is_declined():
    m = model(f"""{header(13)}
    sm (float[N, 6, 7] x) => (float[N, 6, 7] y) {{
        e = Exp(x)
        s = ReduceSum(e, ax)
        y = Div(e, s)
    }}""", {"ax": np.array([1, 2], np.int64)})
    graph, ctx = recognize(m)
    assert ops(graph) == ["Exp", "ReduceSum", "Div"]
    assert any("ReduceSum sums axes [1, 2]" in r for r in declines(ctx, "softmax"))


def test_softmax_whose_max_is_over_another_axis_keeps_the_subtraction(rng):
    # exp(x - max over axis 1) / sum over axis 2 is softmax(x - m) over axis 2: still exact.
    m = model(f"""{header(13)}
    sm (float[2, 6, 7] x) => (float[2, 6, 7] y) {{
        m = ReduceMax<axes = [1]>(x)
        d = Sub(x, m)
        e = Exp(d)
        s = ReduceSum(e, ax)
        y = Div(e, s)
    }}""", {"ax": np.array([2], np.int64)})
    graph, _ = recognize(m)
    assert ops(graph) == ["ReduceMax", "Sub", "Softmax"]
    assert_same_as_onnxruntime(m, graph, {"x": normal(rng, 2, 6, 7)})


# ---- Attention -------------------------------------------------------------------------------

HIDDEN, HEADS, HEAD = 32, 4, 8


def bert_layer_model(rng, masked: bool) -> onnx.ModelProto:
    """One BERT encoder layer as PyTorch (opset 13) exports it: primitives for LN and GELU,
    heads by Reshape/Transpose, K transposed by perm [0, 2, 3, 1], scores divided by √d."""
    mask_in = ", float[B, S] mask" if masked else ""
    mask_lines = ("ext = Unsqueeze(mask, ax12)\n inv = Sub(one, ext)\n bias = Mul(inv, neg)\n"
                  " sc = Add(s1, bias)") if masked else ""
    text = f"""{header(13)}
    bert (float[B, S, {HIDDEN}] x{mask_in}) => (float[B, S, {HIDDEN}] y) {{
        q0 = MatMul(x, wq)
        q1 = Add(q0, bq)
        q2 = Reshape(q1, heads)
        q = Transpose<perm = [0, 2, 1, 3]>(q2)
        k0 = MatMul(x, wk)
        k1 = Add(k0, bk)
        k2 = Reshape(k1, heads)
        kt = Transpose<perm = [0, 2, 3, 1]>(k2)
        v0 = MatMul(x, wv)
        v1 = Add(v0, bv)
        v2 = Reshape(v1, heads)
        v = Transpose<perm = [0, 2, 1, 3]>(v2)
        s0 = MatMul(q, kt)
        s1 = Div(s0, root_d)
        {mask_lines}
        p = Softmax<axis = -1>({"sc" if masked else "s1"})
        c0 = MatMul(p, v)
        c1 = Transpose<perm = [0, 2, 1, 3]>(c0)
        c2 = Reshape(c1, hidden)
        o0 = MatMul(c2, wo)
        o1 = Add(o0, bo)
        r1 = Add(o1, x)
        {layer_norm_text("r1", "h1", "ln1_", 13, [-1])}
        f0 = MatMul(h1, w1)
        f1 = Add(f0, b1)
        ga = Div(f1, sqrt2)
        ge = Erf(ga)
        gp = Add(ge, one)
        gm = Mul(f1, gp)
        g = Mul(gm, half)
        f2 = MatMul(g, w2)
        f3 = Add(f2, b2)
        r2 = Add(f3, h1)
        {layer_norm_text("r2", "y", "ln2_", 13, [-1])}
    }}"""
    w = {name: normal(rng, HIDDEN, HIDDEN, scale=0.3) for name in ("wq", "wk", "wv", "wo")}
    w.update({name: normal(rng, HIDDEN, scale=0.1) for name in ("bq", "bk", "bv", "bo")})
    w.update({"w1": normal(rng, HIDDEN, 64, scale=0.2), "b1": normal(rng, 64, scale=0.1),
              "w2": normal(rng, 64, HIDDEN, scale=0.2), "b2": normal(rng, HIDDEN, scale=0.1),
              "heads": np.array([0, 0, HEADS, HEAD], np.int64), "hidden": np.array([0, 0, HIDDEN], np.int64),
              "root_d": f32(math.sqrt(HEAD)), "sqrt2": f32(SQRT2), "half": f32(0.5), "one": f32(1.0)})
    for p in ("ln1_", "ln2_"):
        w.update({k: v for k, v in layer_norm_weights(rng, p, (HIDDEN,), [-1], eps=1e-12).items()
                  if not k.endswith("axes")})
    if masked:
        w.update({"ax12": np.array([1, 2], np.int64), "neg": f32(-10000.0)})
    return model(text, w)


@pytest.mark.parametrize("masked", [True, False])
def test_bert_encoder_layer(rng, masked):
    m = bert_layer_model(rng, masked)
    graph, ctx = recognize(m, recognize_patterns, recognize_attention)
    assert ctx.rewrites["attention"] == 1 and ctx.rewrites["layer_norm"] == 2 and ctx.rewrites["gelu_erf"] == 1
    assert ctx.declines == []
    counts = {op: ops(graph).count(op) for op in set(ops(graph))}
    assert counts["ScaledDotProductAttention"] == 1 and counts["LayerNormalization"] == 2 and counts["Gelu"] == 1
    assert not {"Softmax", "Erf", "Div", "Pow", "Sqrt", "ReduceMean"} & set(counts)
    # Kᵀ's Transpose [0, 2, 3, 1] becomes K's [0, 2, 1, 3]: three head splits, one merge.
    assert sorted(tuple(n.attrs["perm"]) for n in graph.nodes if n.op_type == "Transpose") == [(0, 2, 1, 3)] * 4
    (sdpa,) = [n for n in graph.nodes if n.op_type == "ScaledDotProductAttention"]
    assert sdpa.domain == "tensorkiln" and sdpa.attrs["scale"] == pytest.approx(1 / math.sqrt(HEAD))
    assert len(sdpa.inputs) == (4 if masked else 3)
    assert sdpa.outputs[0].shape == ("B", HEADS, "S", HEAD)
    feeds = {"x": normal(rng, 2, 5, HIDDEN)}
    if masked:
        feeds["mask"] = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.float32)
    assert_same_as_onnxruntime(m, graph, feeds)


def vit_block_model(rng) -> onnx.ModelProto:
    """A ViT attention block at opset 18 (reduction axes as inputs): LN, QKV, scores scaled by a
    Mul, softmax written as exp/sum with the max subtracted, GELU tanh MLP."""
    text = f"""{header(18)}
    vit (float[B, 9, {HIDDEN}] x) => (float[B, 9, {HIDDEN}] y) {{
        {layer_norm_text("x", "h", "ln_", 18, [-1])}
        q0 = MatMul(h, wq)
        q1 = Reshape(q0, heads)
        q = Transpose<perm = [0, 2, 1, 3]>(q1)
        k0 = MatMul(h, wk)
        k1 = Reshape(k0, heads)
        k = Transpose<perm = [0, 2, 1, 3]>(k1)
        kt = Transpose<perm = [0, 1, 3, 2]>(k)
        v0 = MatMul(h, wv)
        v1 = Reshape(v0, heads)
        v = Transpose<perm = [0, 2, 1, 3]>(v1)
        s0 = MatMul(q, kt)
        s1 = Mul(scale, s0)
        mx = ReduceMax(s1, last)
        sd = Sub(s1, mx)
        e = Exp(sd)
        es = ReduceSum(e, last)
        p = Div(e, es)
        c0 = MatMul(p, v)
        c1 = Transpose<perm = [0, 2, 1, 3]>(c0)
        c2 = Reshape(c1, hidden)
        r1 = Add(c2, x)
        f0 = MatMul(r1, w1)
        h3 = Pow(f0, three)
        hk = Mul(h3, kappa)
        hs = Add(f0, hk)
        hi = Mul(hs, beta)
        ht = Tanh(hi)
        hp = Add(ht, one)
        hx = Mul(f0, half)
        g = Mul(hx, hp)
        y = MatMul(g, w2)
    }}"""
    w = {name: normal(rng, HIDDEN, HIDDEN, scale=0.3) for name in ("wq", "wk", "wv")}
    w.update({"w1": normal(rng, HIDDEN, 48, scale=0.2), "w2": normal(rng, 48, HIDDEN, scale=0.2),
              "heads": np.array([0, 0, HEADS, HEAD], np.int64), "hidden": np.array([0, 0, HIDDEN], np.int64),
              "scale": f32(HEAD ** -0.5), "last": np.array([-1], np.int64), "half": f32(0.5), "one": f32(1.0),
              "three": f32(3.0), "kappa": f32(0.044715), "beta": f32(math.sqrt(2 / math.pi))})
    w.update(layer_norm_weights(rng, "ln_", (HIDDEN,), [-1], eps=1e-6))
    w["ln_axes"] = w.pop("ln_axes")
    return model(text, w)


def test_vit_block_without_mask(rng):
    m = vit_block_model(rng)
    graph, ctx = recognize(m, recognize_patterns, recognize_attention)
    assert {k: ctx.rewrites[k] for k in ("softmax", "attention", "layer_norm", "gelu_tanh")} == \
        {"softmax": 1, "attention": 1, "layer_norm": 1, "gelu_tanh": 1}
    counts = {op: ops(graph).count(op) for op in set(ops(graph))}
    assert counts["ScaledDotProductAttention"] == 1 and "Softmax" not in counts and "Exp" not in counts
    # K's Transpose [0, 1, 3, 2] composed with the swap back is the identity: it is dropped.
    sdpa = graph.nodes[[n.op_type for n in graph.nodes].index("ScaledDotProductAttention")]
    assert sdpa.inputs[1].name == "k" and len(sdpa.inputs) == 3
    assert sdpa.attrs["scale"] == pytest.approx(HEAD ** -0.5)
    assert_same_as_onnxruntime(m, graph, {"x": normal(rng, 2, 9, HIDDEN)})


def attention_model(scores: str, softmax_axis: int = -1, inputs: str = "", consts: Optional[dict] = None,
                    k_shape: str = "float[2, 4, 8, 6]") -> onnx.ModelProto:
    """Q[2,4,5,8], Kᵀ given already transposed, V[2,4,6,8]; `scores` turns s0 = Q·Kᵀ into sc."""
    return model(f"""{header(13)}
    att (float[2, 4, 5, 8] q, {k_shape} kt, float[2, 4, 6, 8] v{inputs}) => (float[2, 4, 5, 8] y) {{
        s0 = MatMul(q, kt)
        {scores}
        p = Softmax<axis = {softmax_axis}>(sc)
        y = MatMul(p, v)
    }}""", {k: np.asarray(v, np.float32) for k, v in (consts or {}).items()})


def attention_feeds(rng, **extra: np.ndarray) -> dict[str, np.ndarray]:
    return {"q": normal(rng, 2, 4, 5, 8), "kt": normal(rng, 2, 4, 8, 6), "v": normal(rng, 2, 4, 6, 8), **extra}


def test_attention_with_key_already_transposed(rng):
    m = attention_model("sc = Mul(c, s0)", consts={"c": 0.125})
    graph, ctx = recognize(m, recognize_attention)
    assert ops(graph) == ["Transpose", "ScaledDotProductAttention"] and ctx.rewrites == {"attention": 1}
    # Kᵀ comes from outside: a Transpose of its last two axes makes K.
    assert graph.nodes[0].attrs["perm"] == [0, 1, 3, 2] and graph.nodes[0].inputs[0].name == "kt"
    assert graph.nodes[1].inputs[1] is graph.nodes[0].outputs[0]
    assert graph.nodes[1].attrs["scale"] == pytest.approx(0.125)
    assert graph.initializers == []
    assert_same_as_onnxruntime(m, graph, attention_feeds(rng))


def test_attention_with_broadcast_mask_and_no_scale(rng):
    m = attention_model("sc = Add(mask, s0)", inputs=", float[4, 1, 6] mask")
    graph, ctx = recognize(m, recognize_attention)
    assert ops(graph) == ["Transpose", "ScaledDotProductAttention"] and ctx.rewrites["attention"] == 1
    assert graph.nodes[1].attrs["scale"] == 1.0 and graph.nodes[1].inputs[3].name == "mask"
    mask = np.where(rng.random((4, 1, 6)) < 0.3, -1e4, 0).astype(np.float32)
    assert_same_as_onnxruntime(m, graph, attention_feeds(rng, mask=mask))


def test_attention_scaled_before_the_matmul(rng):
    # torch's export of F.scaled_dot_product_attention: Q and Kᵀ each times √scale.
    m = model(f"""{header(13)}
    att (float[3, 5, 8] q, float[3, 6, 8] k, float[3, 6, 8] v) => (float[3, 5, 8] y) {{
        kt = Transpose<perm = [0, 2, 1]>(k)
        qs = Mul(q, r)
        ks = Mul(kt, r)
        s0 = MatMul(qs, ks)
        p = Softmax<axis = -1>(s0)
        y = MatMul(p, v)
    }}""", {"r": f32(8 ** -0.25)})
    graph, ctx = recognize(m, recognize_attention)
    assert ops(graph) == ["ScaledDotProductAttention"] and ctx.rewrites == {"attention": 1, "orphaned_node": 1}
    assert graph.nodes[0].inputs[1].name == "k" and graph.nodes[0].attrs["scale"] == pytest.approx(8 ** -0.5)
    assert_same_as_onnxruntime(m, graph, {"q": normal(rng, 3, 5, 8), "k": normal(rng, 3, 6, 8),
                                          "v": normal(rng, 3, 6, 8)})


def test_attention_with_non_constant_scale_is_declined(rng):
    m = attention_model("sc = Div(s0, t)", inputs=", float t")
    graph, ctx = recognize(m, recognize_attention)
    assert ops(graph) == ["MatMul", "Div", "Softmax", "MatMul"]
    assert declines(ctx, "attention") == ["the scores' scale 't' is not a constant"]
    assert_same_as_onnxruntime(m, graph, attention_feeds(rng, t=f32(2.5)))


def test_attention_with_per_head_scale_is_declined():
    m = attention_model("sc = Mul(s0, c)", consts={"c": np.full((4, 1, 1), 0.3)})
    _, ctx = recognize(m, recognize_attention)
    assert declines(ctx, "attention") == ["the scores' scale 'c' is not a scalar (shape [4, 1, 1])"]


def test_attention_softmax_over_another_axis_is_declined(rng):
    m = attention_model("sc = Mul(s0, c)", softmax_axis=2, consts={"c": 0.125})
    graph, ctx = recognize(m, recognize_attention)
    assert "ScaledDotProductAttention" not in ops(graph)
    assert declines(ctx, "attention") == ["Softmax normalizes axis 2 of the rank-4 scores, not the last (key) axis"]
    assert_same_as_onnxruntime(m, graph, attention_feeds(rng))


def test_attention_with_key_shared_across_heads_is_declined():
    # Kᵀ of rank 3 broadcasts over Q's heads in the MatMul: not the layout the fused layer takes.
    m = attention_model("sc = Mul(s0, c)", consts={"c": 0.125}, k_shape="float[2, 8, 6]")
    _, ctx = recognize(m, recognize_attention)
    (reason,) = declines(ctx, "attention")
    assert "ranks [4, 3, 4]: K is not transposed as expected" in reason


# ---- the fused op itself -----------------------------------------------------------------------

def test_sdpa_reference_matches_the_chain_when_shapes_broadcast(rng, backend):
    # Fused kernel (same batch dims) and by-parts path (K broadcast over the batch) alike.
    op = get_op("ScaledDotProductAttention", "tensorkiln")
    device = torch.device(backend)
    q = torch.from_numpy(normal(rng, 2, 3, 5, 8)).to(device)
    k = torch.from_numpy(normal(rng, 1, 3, 6, 8)).to(device)
    v = torch.from_numpy(normal(rng, 2, 3, 6, 4)).to(device)
    mask = torch.from_numpy(normal(rng, 2, 3, 5, 6)).to(device)
    for key, m in ((k, mask), (k.expand(2, 3, 6, 8), mask), (k.expand(2, 3, 6, 8), mask[:1, :, :1]),
                   (k.expand(2, 3, 6, 8), None)):
        scores = (q.double() @ key.double().transpose(-1, -2)) * 0.3 + (0 if m is None else m.double())
        want = torch.softmax(scores, dim=-1) @ v.double()
        got = op.reference(None, [q, key, v] + ([] if m is None else [m]), {"scale": 0.3})
        assert got.dtype == torch.float32
        assert_close(got.cpu().numpy(), want.float().cpu().numpy(), "fp32")


def nan_guarded_attention(fill: float) -> onnx.ModelProto:
    # PyTorch's export of BERT's SDPA path: prescaled Q and Kᵀ, a mask, and a NaN guard after the softmax.
    return model(f"""{header(13)}
    att (float[2, 3, 5, 8] q, float[2, 3, 6, 8] k, float[2, 3, 6, 8] v, float[2, 1, 5, 6] mask)
        => (float[2, 3, 5, 8] y) {{
        kt = Transpose<perm = [0, 1, 3, 2]>(k)
        qs = Mul(q, r)
        ks = Mul(kt, r)
        s0 = MatMul(qs, ks)
        sm = Add(s0, mask)
        p = Softmax<axis = -1>(sm)
        bad = IsNaN(p)
        pg = Where(bad, fill, p)
        y = MatMul(pg, v)
    }}""", {"r": f32(8 ** -0.25), "fill": f32(fill)})


def test_attention_with_the_exported_nan_guard(rng):
    m = nan_guarded_attention(0.0)
    graph, ctx = recognize(m, recognize_attention)
    assert ops(graph) == ["ScaledDotProductAttention"] and ctx.rewrites["attention"] == 1
    # Row 0 of the first batch masks every key: the guard makes it 0, and so does the fused layer.
    mask = np.where(rng.random((2, 1, 5, 6)) < 0.3, -np.inf, 0).astype(np.float32)
    mask[0, 0, 0, :] = -np.inf
    feeds = {"q": normal(rng, 2, 3, 5, 8), "k": normal(rng, 2, 3, 6, 8), "v": normal(rng, 2, 3, 6, 8), "mask": mask}
    got = run(graph, feeds)["y"]
    assert np.all(got[0, :, 0, :] == 0)
    assert_same_as_onnxruntime(m, graph, feeds)


def test_attention_with_a_non_zero_nan_fill_is_declined():
    graph, ctx = recognize(nan_guarded_attention(1.0), recognize_attention)
    assert "ScaledDotProductAttention" not in ops(graph)
    assert declines(ctx, "attention") == [
        "the NaN guard after the softmax fills with a non-zero value (the fused layer gives 0)"]
