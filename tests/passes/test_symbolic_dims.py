"""name_symbolic_dims: dims that run-time shape arithmetic computes get the inputs' dim names.

The model is written in ONNX text the way transformers 5 exports BERT with dynamic batch and
sequence axes: position ids sliced to Shape(input_ids)[1], the padding mask gathered by
Range-built indices, widened by an all-true query-side test computed from Range, and expanded to
a target made by Where(Equal(t, -1), 1, t); one attention layer whose head split and merge take
their targets from Shape. Checked: the dims the pass names, the fusions an engine with a fixed
shape gets (EmbedLayerNorm, the narrow mask, SkipLayerNorm) happening in an engine built for a
range of shapes, the engine against onnxruntime at several shapes within the profile, and where
the profile does not bound a dim, the fusion that needs it left alone.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser
import pytest
from onnx import numpy_helper

from tensorkiln import Builder, BuilderConfig, Runtime
from tensorkiln.builder.config import OptimizationProfile
from tensorkiln.frontends.onnx import parse_onnx
from tensorkiln.ir import TensorType
from tensorkiln.ops import infer_graph_types
from tensorkiln.passes.context import PassContext
from tensorkiln.passes.symbolic_dims import analyze_shapes, name_symbolic_dims
from tensorkiln.testing.oracles import run_onnxruntime
from tensorkiln.testing.tolerances import assert_close

VOCAB, POSITIONS, H, HEADS = 40, 16, 32, 2
INPUTS = ("input_ids", "token_type_ids", "attention_mask")

BERT_DYNAMIC = f"""<ir_version: 8, opset_import: ["" : 17]>
g (int64[batch, seq] input_ids, int64[batch, seq] token_type_ids, int64[batch, seq] attention_mask)
  => (float[batch, seq, {H}] y) {{
    zero = Constant <value = int64 {{0}}> ()
    one = Constant <value = int64 {{1}}> ()
    axis0 = Constant <value = int64[1] {{0}}> ()
    axis1 = Constant <value = int64[1] {{1}}> ()
    minus1 = Constant <value = int64[1] {{-1}}> ()
    width = Constant <value = int64[1] {{{H}}}> ()
    head_dim = Constant <value = int64[1] {{{H // HEADS}}}> ()
    ids_shape = Shape (input_ids)
    ids_len = Gather <axis = 0> (ids_shape, one)
    ids_len1 = Unsqueeze (ids_len, axis0)
    position_ids = Slice (all_positions, axis0, ids_len1, axis1)
    w = Gather (word, input_ids)
    t = Gather (token_type, token_type_ids)
    p = Gather (position, position_ids)
    wt = Add (w, t)
    e = Add (wt, p)
    emb = LayerNormalization <epsilon = 1e-12> (e, gamma, beta)

    emb_shape = Shape (emb)
    batch = Gather <axis = 0> (emb_shape, zero)
    q_len = Gather <axis = 0> (emb_shape, one)
    mask_shape = Shape (attention_mask)
    kv_len = Gather <axis = 0> (mask_shape, one)
    b_index = Range (zero, batch, one)
    q_index = Range (zero, q_len, one)
    kv_index = Range (zero, kv_len, one)
    b4 = Unsqueeze (b_index, axes_123)
    q4 = Unsqueeze (q_index, axes_013)
    kv4 = Unsqueeze (kv_index, axes_012)
    q_ok = GreaterOrEqual (q4, zero)
    query_side = And (all_true, q_ok)
    mask_bool = Cast <to = 9> (attention_mask)
    flat = Flatten <axis = 2> (mask_bool)
    kv_len1 = Unsqueeze (kv_len, axis0)
    row = Mul (b4, kv_len1)
    index = Add (row, kv4)
    picked = Gather <axis = 0> (flat, index)
    picked_flat = Reshape (picked, minus1)
    index_shape = Shape (index)
    pad = Reshape (picked_flat, index_shape)
    both = And (query_side, pad)
    batch1 = Unsqueeze (batch, axis0)
    q_len1 = Unsqueeze (q_len, axis0)
    target = Concat <axis = 0> (batch1, minus1, q_len1, kv_len1)
    target_rank = Shape (target)
    ones = ConstantOfShape <value = int64[1] {{1}}> (target_rank)
    minus_ones = Mul (ones, minus1)
    unset = Equal (target, minus_ones)
    expand_to = Where (unset, ones, target)
    mask = Expand (both, expand_to)
    additive = Where (mask, zero_f, minus_inf)

    q = MatMul (emb, wq)
    k = MatMul (emb, wk)
    v = MatMul (emb, wv)
    split_to = Concat <axis = 0> (batch1, q_len1, minus1, head_dim)
    qh = Reshape (q, split_to)
    kh = Reshape (k, split_to)
    vh = Reshape (v, split_to)
    qt = Transpose <perm = [0, 2, 1, 3]> (qh)
    kt = Transpose <perm = [0, 2, 3, 1]> (kh)
    vt = Transpose <perm = [0, 2, 1, 3]> (vh)
    raw = MatMul (qt, kt)
    scores = Mul (raw, scale)
    masked = Add (scores, additive)
    weights = Softmax <axis = -1> (masked)
    attended = MatMul (weights, vt)
    merged_t = Transpose <perm = [0, 2, 1, 3]> (attended)
    att_shape = Shape (attended)
    att_batch = Gather <axis = 0> (att_shape, zero)
    att_len = Gather <axis = 0> (att_shape, axis_two)
    att_batch1 = Unsqueeze (att_batch, axis0)
    att_len1 = Unsqueeze (att_len, axis0)
    merge_to = Concat <axis = 0> (att_batch1, att_len1, width)
    merged = Reshape (merged_t, merge_to)
    projected = MatMul (merged, wo)
    biased = Add (projected, bo)
    residual = Add (biased, emb)
    y = LayerNormalization <epsilon = 1e-12> (residual, gamma2, beta2)
}}"""


def weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)

    def normal(*shape: int, scale: float = 1.0) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    return {
        "all_positions": np.arange(POSITIONS, dtype=np.int64)[None], "word": normal(VOCAB, H),
        "token_type": normal(2, H, scale=0.5), "position": normal(POSITIONS, H, scale=0.5),
        "gamma": 1 + normal(H, scale=0.1), "beta": normal(H, scale=0.1),
        "gamma2": 1 + normal(H, scale=0.1), "beta2": normal(H, scale=0.1),
        "wq": normal(H, H, scale=H ** -0.5), "wk": normal(H, H, scale=H ** -0.5),
        "wv": normal(H, H, scale=H ** -0.5), "wo": normal(H, H, scale=H ** -0.5), "bo": normal(H, scale=0.1),
        "axes_123": np.array([1, 2, 3], np.int64), "axes_013": np.array([0, 1, 3], np.int64),
        "axes_012": np.array([0, 1, 2], np.int64), "axis_two": np.array(2, np.int64),
        "all_true": np.array(True), "zero_f": np.array(0.0, np.float32),
        "minus_inf": np.array(-np.inf, np.float32), "scale": np.array((H // HEADS) ** -0.5, np.float32),
    }


def bert_dynamic() -> onnx.ModelProto:
    m = onnx.parser.parse_model(BERT_DYNAMIC)
    for name, array in weights().items():
        m.graph.initializer.append(numpy_helper.from_array(array, name))
    onnx.checker.check_model(m)
    return m


def profile(max_seq: int = POSITIONS) -> OptimizationProfile:
    return OptimizationProfile({n: ((1, 1), (2, 8), (4, max_seq)) for n in INPUTS})


def feeds(batch: int, seq: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, seq), np.int64)
    mask[0, seq // 2 + 1:] = 0  # the first sequence is padded
    return {"input_ids": rng.integers(0, VOCAB, (batch, seq)).astype(np.int64),
            "token_type_ids": rng.integers(0, 2, (batch, seq)).astype(np.int64), "attention_mask": mask}


def unnamed_as_none(shape: tuple) -> tuple:
    """The dims with names that shape inference invented (unk__N) shown as unknown."""
    return tuple(None if isinstance(d, str) and d.startswith("unk__") else d for d in shape)


def named_shapes(bounds: dict[str, int]) -> tuple[dict[str, tuple], PassContext]:
    graph = infer_graph_types(parse_onnx(bert_dynamic()))
    ctx = PassContext(dim_bounds=bounds)
    name_symbolic_dims(graph, ctx)
    shapes = {v.name: unnamed_as_none(v.type.shape) for n in graph.nodes for v in n.outputs
              if isinstance(v.type, TensorType) and v.type.shape is not None}
    return shapes, ctx


def test_dims_computed_from_shapes_get_the_inputs_names():
    before = {v.name: v.type.shape for n in infer_graph_types(parse_onnx(bert_dynamic())).nodes for v in n.outputs}
    # Plain inference names none of these: they come from Range, Reshape and Expand of values
    # computed from shapes.
    for name in ("b_index", "pad", "mask", "qh", "attended", "merged", "residual"):
        assert before[name] is None or None in unnamed_as_none(before[name]), name
    shapes, ctx = named_shapes({"batch": 4, "seq": POSITIONS})
    assert shapes["b_index"] == ("batch",) and shapes["q_index"] == ("seq",)
    assert shapes["flat"] == (None, 1)  # batch * seq: right, but no input's dim, so it stays unnamed
    assert shapes["picked"] == ("batch", 1, 1, "seq", 1)
    assert shapes["pad"] == ("batch", 1, 1, "seq")
    assert shapes["ones"] == (4,)
    assert shapes["mask"] == shapes["additive"] == ("batch", 1, "seq", "seq")
    assert shapes["qh"] == ("batch", "seq", HEADS, H // HEADS)
    assert shapes["masked"] == ("batch", HEADS, "seq", "seq")
    assert shapes["attended"] == ("batch", HEADS, "seq", H // HEADS)
    assert shapes["merged"] == shapes["residual"] == shapes["y"] == ("batch", "seq", H)
    # The positions are a prefix of 16: their count is the sequence length because the profile
    # keeps it at most 16.
    assert shapes["position_ids"] == (1, "seq") and shapes["e"] == ("batch", "seq", H)
    assert ctx.rewrites["name_symbolic_dims"] == len(ctx.details) > 20


def test_an_unbounded_dim_is_not_assumed_to_fit():
    # No profile: the positions' count is min(seq, 16), not provably seq; the sum still is seq wide
    # (a valid broadcast takes the larger dim).
    shapes = named_shapes({})[0]
    assert shapes["position_ids"][1] is None and shapes["p"][1] is None
    assert shapes["e"] == ("batch", "seq", H)
    # A bound above the table's 16 rows proves nothing either.
    shapes = named_shapes({"batch": 4, "seq": POSITIONS + 1})[0]
    assert shapes["position_ids"][1] is None


def test_a_graph_with_static_inputs_is_left_alone():
    m = bert_dynamic()
    graph = parse_onnx(m)
    for v in graph.inputs:
        v.type = TensorType(v.type.dtype, (2, 8))
    infer_graph_types(graph)
    ctx = PassContext(dim_bounds={})
    name_symbolic_dims(graph, ctx)
    assert ctx.rewrites == {}


def test_engine_for_a_range_of_shapes_fuses_as_a_fixed_one():
    m = bert_dynamic()
    dynamic = Builder(BuilderConfig(profiles=(profile(),))).build(parse_onnx(m))
    fixed = Builder(BuilderConfig(profiles=(OptimizationProfile.fixed({n: (2, 8) for n in INPUTS}),))).build(
        parse_onnx(m))
    layers = [n.op_type for n in dynamic.graph.nodes]
    for op in ("EmbedLayerNormalization", "ScaledDotProductAttention", "SkipLayerNormalization"):
        assert layers.count(op) == 1 and [n.op_type for n in fixed.graph.nodes].count(op) == 1, op
    assert "Expand" not in layers and "LayerNormalization" not in layers
    attention = next(n for n in dynamic.graph.nodes if n.op_type == "ScaledDotProductAttention")
    assert attention.inputs[3].shape == ("batch", 1, 1, "seq")  # narrowed: one mask row per sequence
    context = Runtime("cpu").load(dynamic).create_execution_context()
    for batch, seq in [(1, 1), (2, 8), (3, 5), (4, POSITIONS)]:
        data = feeds(batch, seq, seed=batch * seq)
        got = context.execute(dict(data))["y"]
        assert got.shape == (batch, seq, H)
        assert_close(np.asarray(got), run_onnxruntime(m, data)["y"], "fp32", what=f"y at {batch}x{seq}")


def test_without_the_bound_the_position_lookup_stays_apart():
    m = bert_dynamic()
    plan = Builder(BuilderConfig(profiles=(profile(max_seq=POSITIONS + 4),))).build(parse_onnx(m))
    layers = [n.op_type for n in plan.graph.nodes]
    # The embeddings' sum is no longer provably [batch, seq] rows plus a broadcast row, so the
    # norm stays a SkipLayerNorm of its own; the attention layer fuses as before.
    assert "EmbedLayerNormalization" not in layers
    assert layers.count("ScaledDotProductAttention") == 1
    context = Runtime("cpu").load(plan).create_execution_context()
    data = feeds(2, 12)
    assert_close(np.asarray(context.execute(dict(data))["y"]), run_onnxruntime(m, data)["y"], "fp32", what="y")


@pytest.mark.parametrize("seq", [POSITIONS + 1])
def test_outside_the_profile_is_refused(seq):
    plan = Builder(BuilderConfig(profiles=(profile(),))).build(parse_onnx(bert_dynamic()))
    context = Runtime("cpu").load(plan).create_execution_context()
    with pytest.raises(Exception, match="outside every optimization profile"):
        context.execute(feeds(1, seq))


def parse_text(signature: str, body: str, init: str = ""):
    init = f"<{init}>" if init else ""
    m = onnx.parser.parse_model(f'<ir_version: 8, opset_import: ["" : 17]>\ng {signature} {init}\n{{\n{body}\n}}')
    return infer_graph_types(parse_onnx(m))


def shapes_after_naming(signature: str, body: str, bounds: dict[str, int], init: str = "") -> dict[str, tuple]:
    graph = parse_text(signature, body, init)
    name_symbolic_dims(graph, PassContext(dim_bounds=bounds))
    return {v.name: unnamed_as_none(v.type.shape) for n in graph.nodes for v in n.outputs
            if isinstance(v.type, TensorType) and v.type.shape is not None}


def test_shape_rules_of_single_ops():
    body = """
        s = Shape (x)
        n = Gather <axis = 0> (s, zero)
        m = Gather <axis = 0> (s, one)
        n1 = Unsqueeze (n, axis0)
        m1 = Unsqueeze (m, axis0)
        reps = Concat <axis = 0> (two, one1)
        tiled = Tile (x, reps)
        flat_to = Concat <axis = 0> (minus1, one1)
        flat = Reshape (x, flat_to)
        both = Concat <axis = 0> (x, x)
        half = Div (n, two0)
        evens = Range (zero, n, two0)
        back = Range (n, zero, minus2)
        tail = Slice (x, one1, big, axis01)
        reversed = Slice (x, minus1, minus_big, axis01, minus1)
        filled = ConstantOfShape <value = float[1] {0.5}> (n1)
        y = Identity (x)
    """
    init = ("int64 zero = {0}, int64 one = {1}, int64[1] axis0 = {0}, int64[1] two = {2}, int64[1] minus1 = {-1}, "
            "int64[1] one1 = {1}, int64 two0 = {2}, int64 minus2 = {-2}, int64[1] big = {9223372036854775807}, "
            "int64[1] axis01 = {0}, int64[1] minus_big = {-9223372036854775807}")
    analysis = analyze_shapes(parse_text("(float[n, m] x) => (float[n, m] y)", body, init), {"n": 8, "m": 8})
    worked_out = {name: tuple(str(d) for d in analysis.shapes[name])
                  for name in ("tiled", "flat", "both", "evens", "back", "tail", "filled")}
    assert worked_out == {"tiled": ("2*n", "m"), "flat": ("m*n", "1"), "both": ("2*n", "m"),
                          "evens": ("ceiling(n/2)",), "back": ("ceiling(n/2)",),
                          "tail": ("Max(0, n - Min(1, n))", "m"), "filled": ("n",)}
    assert [str(e) for e in analysis.values["half"]] == ["floor(n/2)"]
    # A negative step is not worked out: the dim stays what type inference said.
    assert str(analysis.shapes["reversed"][1]) == "m"
    assert str(analysis.shapes["reversed"][0]).startswith(("unk__", "?"))
    # Only the dims that are an input's dim are written into the types.
    shapes = shapes_after_naming("(float[n, m] x) => (float[n, m] y)", body, {"n": 8, "m": 8}, init)
    assert shapes["tiled"] == (None, "m") and shapes["flat"] == (None, 1) and shapes["filled"] == ("n",)


def test_shape_values_through_arithmetic_and_selection():
    body = """
        s = Shape (x)
        n = Gather <axis = 0> (s, zero)
        m = Gather <axis = 0> (s, one)
        nm = Mul (n, m)
        nm1 = Unsqueeze (nm, axis0)
        flat = Reshape (x, nm1)
        same = Reshape (flat, s)
        m1 = Slice (s, one1, two1)
        n1 = Slice (s, zero1, one1)
        swapped_to = Concat <axis = 0> (m1, n1)
        swapped = Reshape (x, swapped_to)
        is_n = Equal (n, m)
        pick = Where (is_n, n, m)
        pick1 = Unsqueeze (pick, axis0)
        unsure = Reshape (flat, pick1)
        y = Identity (x)
    """
    init = ("int64 zero = {0}, int64 one = {1}, int64[1] axis0 = {0}, int64[1] zero1 = {0}, int64[1] one1 = {1}, "
            "int64[1] two1 = {2}")
    shapes = shapes_after_naming("(float[n, m] x) => (float[n, m] y)", body, {}, init)
    assert shapes["flat"] == (None,)  # n * m
    assert shapes["same"] == ("n", "m")
    assert shapes["swapped"] == ("m", "n")
    # Whether n == m is not known, so neither is the dim Where picks.
    assert shapes["unsure"] == (None,)
