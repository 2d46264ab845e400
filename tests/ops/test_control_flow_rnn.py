"""Control flow (If, Loop, Scan), recurrent layers (RNN, GRU, LSTM), sequences and optionals."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from tensorkiln.errors import UnsupportedOpError
from tensorkiln.testing.check import check_model, parse

HEADER = '<ir_version: 10, opset_import: ["" : {opset}]>'

# ---- RNN / GRU / LSTM --------------------------------------------------------------------

GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
SEQ, BATCH, INPUT, HIDDEN = 5, 3, 4, 6


def _rnn_case(rng, op: str, direction: str = "forward", layout: int = 0, bias: bool = True,
              seq_lens: bool = False, initial: bool = False, peepholes: bool = False, extra_attrs: str = "",
              opset: int = 14, dtype: type = np.float32):
    dirs = 2 if direction == "bidirectional" else 1
    g = GATES[op]
    x_shape = [BATCH, SEQ, INPUT] if layout else [SEQ, BATCH, INPUT]
    h_shape = [BATCH, dirs, HIDDEN] if layout else [dirs, BATCH, HIDDEN]
    feeds = {"X": rng.standard_normal(x_shape).astype(np.float32),
             "W": (rng.standard_normal([dirs, g * HIDDEN, INPUT]) * 0.5).astype(np.float32),
             "R": (rng.standard_normal([dirs, g * HIDDEN, HIDDEN]) * 0.5).astype(np.float32)}
    decls = ["float[{}] X".format(",".join(map(str, x_shape))),
             f"float[{dirs},{g * HIDDEN},{INPUT}] W", f"float[{dirs},{g * HIDDEN},{HIDDEN}] R"]
    args = ["X", "W", "R"]

    def add(name: str, decl: str, value: np.ndarray) -> None:
        feeds[name] = value
        decls.append(decl)
        args.append(name)

    if bias:
        add("B", f"float[{dirs},{2 * g * HIDDEN}] B", rng.standard_normal([dirs, 2 * g * HIDDEN]).astype(np.float32))
    else:
        args.append("")
    if seq_lens:
        lens = np.array([SEQ, 2, 4][:BATCH], dtype=np.int32)
        add("L", f"int32[{BATCH}] L", lens)
    else:
        args.append("")
    if initial:
        add("H0", "float[{}] H0".format(",".join(map(str, h_shape))), rng.standard_normal(h_shape).astype(np.float32))
        if op == "LSTM":
            add("C0", "float[{}] C0".format(",".join(map(str, h_shape))),
                rng.standard_normal(h_shape).astype(np.float32))
    else:
        args.append("")
        if op == "LSTM":
            args.append("")
    if peepholes:
        add("P", f"float[{dirs},{3 * HIDDEN}] P", rng.standard_normal([dirs, 3 * HIDDEN]).astype(np.float32))
    while args and args[-1] == "":
        args.pop()
    outs = ["Y", "Y_h"] + (["Y_c"] if op == "LSTM" else [])
    y_shape = [BATCH, SEQ, dirs, HIDDEN] if layout else [SEQ, dirs, BATCH, HIDDEN]
    out_decls = ["float[{}] Y".format(",".join(map(str, y_shape)))]
    out_decls += ["float[{}] {}".format(",".join(map(str, h_shape)), o) for o in outs[1:]]
    attrs = f'hidden_size = {HIDDEN}, direction = "{direction}"'
    if opset >= 14:
        attrs += f", layout = {layout}"
    if extra_attrs:
        attrs += ", " + extra_attrs
    text = f"""{HEADER.format(opset=opset)}
agraph ({", ".join(decls)}) => ({", ".join(out_decls)}) {{
    {", ".join(outs)} = {op} <{attrs}> ({", ".join(args)})
}}"""
    if dtype is not np.float32:
        feeds = {k: v.astype(dtype) if v.dtype == np.float32 else v for k, v in feeds.items()}
        text = text.replace("float[", {np.float16: "float16[", np.float64: "double["}[dtype])
    return text, feeds


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize("dtype,precision", [(np.float64, "fp32"), (np.float16, "fp16")])
def test_recurrent_dtypes(backend, rng, op, dtype, precision):
    text, feeds = _rnn_case(rng, op, "bidirectional", initial=True, dtype=dtype)
    check_model(text, feeds, device=backend, oracle="ref", precision=precision)


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("layout", [0, 1])
def test_recurrent_directions_layouts(backend, rng, op, direction, layout):
    text, feeds = _rnn_case(rng, op, direction, layout, initial=True)
    # onnxruntime refuses the batch-first layout; the reference evaluator has it.
    check_model(text, feeds, device=backend, oracle="ort" if layout == 0 else "ref")


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_recurrent_sequence_lens(backend, rng, op, direction):
    text, feeds = _rnn_case(rng, op, direction, seq_lens=True, initial=True)
    check_model(text, feeds, device=backend, oracle="ort")


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
def test_recurrent_no_bias_no_initial_state_opset7(backend, rng, op):
    text, feeds = _rnn_case(rng, op, bias=False, opset=7)
    check_model(text, feeds, device=backend, oracle="ort")


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
def test_recurrent_clip(backend, rng, op):
    text, feeds = _rnn_case(rng, op, "bidirectional", extra_attrs="clip = 0.5")
    check_model(text, feeds, device=backend, oracle="ort")


@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_lstm_peepholes(backend, rng, direction):
    text, feeds = _rnn_case(rng, "LSTM", direction, seq_lens=True, initial=True, peepholes=True)
    check_model(text, feeds, device=backend, oracle="ort")


def test_lstm_input_forget(backend, rng):
    text, feeds = _rnn_case(rng, "LSTM", "forward", initial=True, extra_attrs="input_forget = 1")
    check_model(text, feeds, device=backend, oracle="ort")


@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_gru_linear_before_reset(backend, rng, direction):
    text, feeds = _rnn_case(rng, "GRU", direction, seq_lens=True, initial=True, extra_attrs="linear_before_reset = 1")
    check_model(text, feeds, device=backend, oracle="ort")


@pytest.mark.parametrize("op,direction,activations", [
    ("RNN", "forward", '["LeakyRelu"], activation_alpha = [0.2]'),
    ("RNN", "bidirectional", '["Relu", "Affine"], activation_alpha = [0.5], activation_beta = [0.25]'),
    ("GRU", "forward", '["HardSigmoid", "Softsign"], activation_alpha = [0.3], activation_beta = [0.4]'),
    # alpha/beta go, in order, to the activations that take them: ScaledTanh (0.9, 1.5), Elu (0.7).
    ("LSTM", "forward", '["Sigmoid", "ScaledTanh", "Elu"], activation_alpha = [0.9, 0.7], activation_beta = [1.5]'),
])
def test_recurrent_activations(backend, rng, op, direction, activations):
    text, feeds = _rnn_case(rng, op, direction, initial=True, extra_attrs=f"activations = {activations}")
    check_model(text, feeds, device=backend, oracle="ort")


def test_recurrent_only_last_state_output(backend, rng):
    text = f"""{HEADER.format(opset=14)}
agraph (float[{SEQ},{BATCH},{INPUT}] X, float[1,{4 * HIDDEN},{INPUT}] W, float[1,{4 * HIDDEN},{HIDDEN}] R)
    => (float[1,{BATCH},{HIDDEN}] Y_c) {{
    Y, Y_h, Y_c = LSTM <hidden_size = {HIDDEN}> (X, W, R)
}}"""
    feeds = {"X": rng.standard_normal([SEQ, BATCH, INPUT]).astype(np.float32),
             "W": rng.standard_normal([1, 4 * HIDDEN, INPUT]).astype(np.float32),
             "R": rng.standard_normal([1, 4 * HIDDEN, HIDDEN]).astype(np.float32)}
    check_model(text, feeds, device=backend, oracle="ort")


def test_recurrent_unknown_activation_is_unsupported(rng):
    text, feeds = _rnn_case(rng, "RNN", extra_attrs='activations = ["Swish"]')
    with pytest.raises(UnsupportedOpError, match="RNN.*Swish|Swish.*RNN"):
        check_model(text, feeds, expected={})


def test_recurrent_wrong_activation_count_is_unsupported(rng):
    text, feeds = _rnn_case(rng, "LSTM", extra_attrs='activations = ["Sigmoid", "Tanh"]')
    with pytest.raises(UnsupportedOpError, match="activations must list 3"):
        check_model(text, feeds, expected={})


# ---- If ------------------------------------------------------------------------------------

IF_MODEL = f"""{HEADER.format(opset=13)}
agraph (bool c, float[2,3] x, float[2,3] y) => (float[2,3] out, float[2,3] other) {{
    out, other = If (c) <
        then_branch = then_g () => (float[2,3] a, float[2,3] b) {{ a = Add (x, y)  b = Identity (x) }},
        else_branch = else_g () => (float[2,3] a2, float[2,3] b2) {{ a2 = Mul (x, y)  b2 = Neg (y) }}
    >
}}"""


@pytest.mark.parametrize("cond", [True, False])
def test_if_captures_outer_values(backend, rng, cond):
    feeds = {"c": np.array(cond), "x": rng.standard_normal([2, 3]).astype(np.float32),
             "y": rng.standard_normal([2, 3]).astype(np.float32)}
    check_model(IF_MODEL, feeds, device=backend, oracle="ort")


def test_if_branches_with_different_shapes(backend, rng):
    text = f"""{HEADER.format(opset=13)}
agraph (bool[1] c, float[4] x) => (float[?] out) {{
    out = If (c) <
        then_branch = then_g () => (float[?] a) {{ a = Identity (x) }},
        else_branch = else_g () => (float[?] b) {{ b = Concat <axis = 0> (x, x) }}
    >
}}"""
    for cond in (True, False):
        feeds = {"c": np.array([cond]), "x": rng.standard_normal([4]).astype(np.float32)}
        check_model(text, feeds, device=backend, oracle="ort")


def test_nested_if_reads_outermost_values(backend, rng):
    text = f"""{HEADER.format(opset=13)}
agraph (bool c, bool d, float[3] x) => (float[3] out) {{
    out = If (c) <
        then_branch = t () => (float[3] a) {{
            a = If (d) <
                then_branch = tt () => (float[3] p) {{ p = Abs (x) }},
                else_branch = te () => (float[3] q) {{ q = Neg (x) }}
            >
        }},
        else_branch = e () => (float[3] b) {{ b = Identity (x) }}
    >
}}"""
    for c in (True, False):
        for d in (True, False):
            feeds = {"c": np.array(c), "d": np.array(d), "x": rng.standard_normal([3]).astype(np.float32)}
            check_model(text, feeds, device=backend, oracle="ort")


# ---- Loop ------------------------------------------------------------------------------------

# Carried: a running sum (depends on the previous iteration) and a counter; scan output: each sum.
LOOP_MODEL = f"""{HEADER.format(opset=13)}
agraph (int64 M, bool cond, float[2] x0, float[2] step) => (float[2] x_final, float[?,2] xs) {{
    x_final, xs = Loop (M, cond, x0) <body = body (int64 i, bool c_in, float[2] x) => (bool c_out, float[2] x_next,
                                                                                    float[2] x_scan) {{
        i_f = Cast <to = 1> (i)
        scaled = Mul (step, i_f)
        x_next = Add (x, scaled)
        x_scan = Identity (x_next)
        limit = Constant <value = float {{20}}> ()
        total = ReduceSum <keepdims = 0> (x_next)
        c_out = Less (total, limit)
    }}>
}}"""


@pytest.mark.parametrize("trips,cond", [(5, True), (100, True), (3, False), (0, True)])
def test_loop_trip_count_and_condition(backend, rng, trips, cond):
    feeds = {"M": np.array(trips, dtype=np.int64), "cond": np.array(cond),
             "x0": rng.standard_normal([2]).astype(np.float32), "step": np.array([1.0, 0.5], dtype=np.float32)}
    check_model(LOOP_MODEL, feeds, device=backend, oracle="ort")


def test_loop_without_condition_ignores_body_condition(backend, rng):
    text = f"""{HEADER.format(opset=13)}
agraph (int64 M, float[2] x0) => (float[2] x_final, float[?,2] xs) {{
    x_final, xs = Loop (M, , x0) <body = body (int64 i, bool c_in, float[2] x) => (bool c_out, float[2] x_next,
                                                                                 float[2] x_scan) {{
        one = Constant <value = float {{1}}> ()
        x_next = Add (x, one)
        x_scan = Identity (x)
        c_out = Constant <value = bool {{0}}> ()
    }}>
}}"""
    feeds = {"M": np.array(4, dtype=np.int64), "x0": rng.standard_normal([2]).astype(np.float32)}
    check_model(text, feeds, device=backend, oracle="ort")


def test_loop_without_trip_count_is_a_while_loop(backend):
    text = f"""{HEADER.format(opset=13)}
agraph (bool cond, float x0) => (float x_final) {{
    x_final = Loop (, cond, x0) <body = body (int64 i, bool c_in, float x) => (bool c_out, float x_next) {{
        two = Constant <value = float {{2}}> ()
        x_next = Mul (x, two)
        limit = Constant <value = float {{100}}> ()
        c_out = Less (x_next, limit)
    }}>
}}"""
    check_model(text, {"cond": np.array(True), "x0": np.array(1.5, dtype=np.float32)}, device=backend, oracle="ort")


def test_loop_carried_value_grows(backend, rng):
    text = f"""{HEADER.format(opset=13)}
agraph (int64 M, float[1] x0) => (float[?] out) {{
    out = Loop (M, , x0) <body = body (int64 i, bool c_in, float[?] acc) => (bool c_out, float[?] acc_next) {{
        c_out = Identity (c_in)
        acc_next = Concat <axis = 0> (acc, acc)
        n = Shape (acc_next)
    }}>
}}"""
    feeds = {"M": np.array(3, dtype=np.int64), "x0": rng.standard_normal([1]).astype(np.float32)}
    check_model(text, feeds, device=backend, oracle="ort")


# ---- Scan ------------------------------------------------------------------------------------

@pytest.mark.parametrize("in_axis,in_dir,out_axis,out_dir", [(0, 0, 0, 0), (1, 1, 0, 0), (0, 0, 1, 1), (-1, 1, -1, 0)])
def test_scan_axes_and_directions(backend, rng, in_axis, in_dir, out_axis, out_dir):
    x_shape = [4, 3] if in_axis == 0 else [3, 4]
    text = f"""{HEADER.format(opset=16)}
agraph (float[3] s0, float[{x_shape[0]},{x_shape[1]}] x) => (float[3] s, float[?,?] ys) {{
    s, ys = Scan <num_scan_inputs = 1, scan_input_axes = [{in_axis}], scan_input_directions = [{in_dir}],
                  scan_output_axes = [{out_axis}], scan_output_directions = [{out_dir}],
                  body = body (float[3] acc, float[3] xi) => (float[3] acc_next, float[3] y) {{
            acc_next = Add (acc, xi)
            y = Mul (acc_next, xi)
        }}> (s0, x)
}}"""
    feeds = {"s0": rng.standard_normal([3]).astype(np.float32), "x": rng.standard_normal(x_shape).astype(np.float32)}
    check_model(text, feeds, device=backend, oracle="ort")


def test_scan_opset8_batched_with_sequence_lens(backend, rng):
    text = f"""{HEADER.format(opset=8)}
agraph (int64[2] lens, float[2,3] s0, float[2,4,3] x) => (float[2,3] s, float[2,4,3] ys) {{
    s, ys = Scan <num_scan_inputs = 1, directions = [1],
                  body = body (float[3] acc, float[3] xi) => (float[3] acc_next, float[3] y) {{
            acc_next = Add (acc, xi)
            y = Identity (acc_next)
        }}> (lens, s0, x)
}}"""
    feeds = {"lens": np.array([4, 4], dtype=np.int64), "s0": rng.standard_normal([2, 3]).astype(np.float32),
             "x": rng.standard_normal([2, 4, 3]).astype(np.float32)}
    check_model(text, feeds, device=backend, oracle="ort")
    short = dict(feeds, lens=np.array([4, 2], dtype=np.int64))
    got = check_model(text, short, device=backend, expected={})
    x, s0 = short["x"], short["s0"]
    # Entry 1 runs 2 steps backwards from its own last step; its later outputs are zero.
    want_s1 = s0[1] + x[1, 1] + x[1, 0]
    np.testing.assert_allclose(got["s"][1], want_s1, rtol=1e-6)
    np.testing.assert_allclose(got["ys"][1, :2], [s0[1] + x[1, 1], want_s1], rtol=1e-6)
    np.testing.assert_array_equal(got["ys"][1, 2:], 0)


# ---- sequences and optionals -------------------------------------------------------------------

def test_split_insert_erase_concat(backend, rng):
    text = f"""{HEADER.format(opset=17)}
agraph (float[6,4] x, float[1,4] extra) => (float[?,4] out, int64 n, float[?,4] picked) {{
    parts = SplitToSequence <axis = 0> (x, sizes)
    with_extra = SequenceInsert (parts, extra, front)
    appended = SequenceInsert (with_extra, extra)
    trimmed = SequenceErase (appended, minus_two)
    n = SequenceLength (trimmed)
    out = ConcatFromSequence <axis = 0> (trimmed)
    picked = SequenceAt (trimmed, minus_one)
}}"""
    model = text.replace("parts = ", "sizes = Constant <value = int64[3] {1, 2, 3}> ()\n"
                         "    front = Constant <value = int64 {0}> ()\n"
                         "    minus_two = Constant <value = int64 {-2}> ()\n"
                         "    minus_one = Constant <value = int64 {-1}> ()\n    parts = ")
    feeds = {"x": rng.standard_normal([6, 4]).astype(np.float32), "extra": rng.standard_normal([1, 4]).astype(np.float32)}
    check_model(model, feeds, device=backend, oracle="ort")


@pytest.mark.parametrize("keepdims,new_axis,axis", [(1, 0, 1), (0, 1, 1), (0, 1, -1), (0, 1, 0)])
def test_split_to_sequence_keepdims_and_stack(backend, rng, keepdims, new_axis, axis):
    text = f"""{HEADER.format(opset=17)}
agraph (float[2,3,4] x) => (float[?,?,?] out) {{
    parts = SplitToSequence <axis = 1, keepdims = {keepdims}> (x)
    out = ConcatFromSequence <axis = {axis}, new_axis = {new_axis}> (parts)
}}"""
    check_model(text, {"x": rng.standard_normal([2, 3, 4]).astype(np.float32)}, device=backend, oracle="ort")


def test_split_to_sequence_scalar_split(backend, rng):
    text = f"""{HEADER.format(opset=17)}
agraph (int32[7,2] x) => (int64 n, int32[?,2] last) {{
    size = Constant <value = int64 {{3}}> ()
    parts = SplitToSequence (x, size)
    n = SequenceLength (parts)
    idx = Constant <value = int64 {{2}}> ()
    last = SequenceAt (parts, idx)
}}"""
    check_model(text, {"x": rng.integers(-9, 9, [7, 2]).astype(np.int32)}, device=backend, oracle="ort")


def test_sequence_construct_empty_and_map(backend, rng):
    text = f"""{HEADER.format(opset=17)}
agraph (float[3] a, float[5] b, float k) => (float[?] out, int64 n_empty) {{
    seq = SequenceConstruct (a, b)
    mapped = SequenceMap (seq, k) <body = body (float[?] e, float s) => (float[?] r) {{ r = Mul (e, s) }}>
    out = ConcatFromSequence <axis = 0> (mapped)
    empty = SequenceEmpty <dtype = 1> ()
    n_empty = SequenceLength (empty)
}}"""
    feeds = {"a": rng.standard_normal([3]).astype(np.float32), "b": rng.standard_normal([5]).astype(np.float32),
             "k": np.array(2.5, dtype=np.float32)}
    check_model(text, feeds, device=backend, oracle="ref")


def test_loop_builds_a_sequence(backend, rng):
    text = f"""{HEADER.format(opset=17)}
agraph (int64 M, float[2] x) => (float[?,2] out) {{
    empty = SequenceEmpty ()
    seq = Loop (M, , empty) <body = body (int64 i, bool c, seq_in) => (bool c_out, seq_out) {{
        c_out = Identity (c)
        f = Cast <to = 1> (i)
        v = Mul (x, f)
        seq_out = SequenceInsert (seq_in, v)
    }}>
    out = ConcatFromSequence <axis = 0, new_axis = 1> (seq)
}}"""
    text = text.replace("seq_in)", "seq(float[2]) seq_in)").replace("seq_out)", "seq(float[2]) seq_out)")
    check_model(text, {"M": np.array(4, dtype=np.int64), "x": rng.standard_normal([2]).astype(np.float32)},
                device=backend, oracle="ort")


def test_optional_of_tensor(backend, rng):
    text = f"""{HEADER.format(opset=18)}
agraph (float[3] x) => (bool has, float[3] y, bool has_empty) {{
    opt = Optional (x)
    has = OptionalHasElement (opt)
    y = OptionalGetElement (opt)
    has_empty = OptionalHasElement (empty)
}}"""
    model = parse(text)
    # The text format has no type-proto attributes: the empty optional is added by hand.
    empty = onnx.helper.make_node("Optional", [], ["empty"],
                                  type=onnx.helper.make_tensor_type_proto(onnx.TensorProto.FLOAT, [3]))
    model.graph.node.insert(0, empty)
    check_model(model, {"x": rng.standard_normal([3]).astype(np.float32)}, device=backend, oracle="ort")


def test_sequence_at_out_of_range_names_the_layer(rng):
    text = f"""{HEADER.format(opset=17)}
agraph (float[3] a) => (float[3] out) {{
    seq = SequenceConstruct (a)
    idx = Constant <value = int64 {{5}}> ()
    out = SequenceAt (seq, idx)
}}"""
    from tensorkiln.errors import ExecutionError
    with pytest.raises(ExecutionError, match="SequenceAt.*out of range"):
        check_model(text, {"a": rng.standard_normal([3]).astype(np.float32)}, expected={})
