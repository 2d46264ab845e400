"""The optimizer's cleanup passes: constant folding (with shape arithmetic), common-subexpression
elimination, no-op removal and pruning of unused inputs.

Each test runs one pass on a parsed model and checks what it reports (rewrites and declines),
the layers left, and that the engine built from the rewritten graph computes what the model
computes: against onnxruntime, next to an engine built with optimization_level=0.
"""

from __future__ import annotations

import importlib
from typing import Callable, Mapping

import numpy as np
import pytest

from tensorkiln import Builder, BuilderConfig, ExecutionContext, Runtime
from tensorkiln.frontends.onnx import parse_onnx
from tensorkiln.ir import Graph, format_graph, verify
from tensorkiln.passes import PassContext
from tensorkiln.passes.cse import eliminate_common_subexpressions
from tensorkiln.passes.dead_code import eliminate_dead_nodes
from tensorkiln.passes.fold_constants import fold_constants
from tensorkiln.passes.noops import remove_noops
from tensorkiln.passes.pipeline import OPTIMIZING_PIPELINE
from tensorkiln.passes.prune import prune_unused_inputs
from tensorkiln.testing.check import parse
from tensorkiln.testing.oracles import run_onnxruntime
from tensorkiln.testing.tolerances import assert_close

Pass = Callable[[Graph, PassContext], Graph]

# The module (the package may re-export the function under the same name).
fold_module = importlib.import_module("tensorkiln.passes.fold_constants")

# The order recommended for default_pipeline: dead code, then pruning the inputs the model
# never reads (before folding, so an input read only through its static shape stays an input
# of the engine), no-ops (an inference Dropout or Identity must not hide constants from
# folding), folding, CSE (folding makes equal constants), no-ops again (folded Reshape
# targets reveal same-shape Reshapes), dead code.
RECOMMENDED = (eliminate_dead_nodes, prune_unused_inputs, remove_noops, fold_constants,
               eliminate_common_subexpressions, remove_noops, eliminate_dead_nodes)


def model(signature: str, body: str, init: str = "", opset: int = 17) -> str:
    init = f"<{init}>" if init else ""
    return f'<ir_version: 8, opset_import: ["" : {opset}]>\ng {signature} {init}\n{{\n{body}\n}}'


def run_passes(text: str, *passes: Pass) -> tuple[Graph, PassContext]:
    """Parse, run the passes with one shared context, verify the result."""
    graph = parse_onnx(parse(text))
    ctx = PassContext()
    for p in passes:
        graph = p(graph, ctx)
    verify(graph)
    return graph, ctx


def ops(graph: Graph) -> list[str]:
    return [n.op_type for n in graph.nodes]


def live_ops(graph: Graph) -> list[str]:
    """The layers left once dead code is gone (folding leaves the dead chain to that pass)."""
    return ops(eliminate_dead_nodes(graph, PassContext()))


def engine(graph: Graph) -> ExecutionContext:
    """An engine of exactly this graph: optimization level 0 runs only the required passes."""
    plan = Builder(BuilderConfig(optimization_level=0)).build(graph)
    return Runtime("cpu").load(plan).create_execution_context()


def assert_same_numbers(text: str, after: Graph, feeds: Mapping[str, np.ndarray]) -> None:
    """The rewritten graph's engine, and the original model's engine, both match onnxruntime
    at the fp32 tolerance."""
    want = run_onnxruntime(parse(text), feeds)
    before = engine(parse_onnx(parse(text))).execute(dict(feeds))
    got = engine(after).execute(dict(feeds))
    for name, expected in want.items():
        assert_close(before[name], expected, "fp32", what=f"level-0 output '{name}'")
        assert_close(got[name], expected, "fp32", what=f"optimized output '{name}'\n{format_graph(after)}")


def rand(rng, *shape) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


# -- fold_constants ------------------------------------------------------------------------------

def test_fold_weight_preprocessing(rng):
    # Transpose and scale of a weight are done once at build time; only the MatMul stays.
    text = model("(float[2,3] x) => (float[2,4] y)",
                 "wt = Transpose<perm=[1, 0]>(w)\nws = Mul(wt, two)\ny = MatMul(x, ws)",
                 "float[4,3] w = {1,2,3,4,5,6,7,8,9,10,11,12}, float two = {2.0}")
    graph, ctx = run_passes(text, fold_constants)
    assert ctx.rewrites == {"constant_fold": 2}
    assert ops(graph) == ["MatMul"]
    folded = graph.nodes[0].inputs[1]
    assert folded.name == "ws" and folded.const.shape == (3, 4)
    np.testing.assert_array_equal(folded.const, 2 * np.arange(1, 13, dtype=np.float32).reshape(4, 3).T)
    assert_same_numbers(text, graph, {"x": rand(rng, 2, 3)})


def test_fold_keeps_graph_output_produced(rng):
    # y depends on constants only; it stays an output of the engine, produced by an Identity.
    text = model("(float[3] x) => (float[3] y, float[3] z)", "y = Add(a, b)\nz = Mul(x, y)",
                 "float[3] a = {1,2,3}, float[3] b = {10,20,30}")
    graph, ctx = run_passes(text, fold_constants)
    assert ctx.rewrites == {"constant_fold": 1}
    assert ops(graph) == ["Identity", "Mul"]
    assert graph.nodes[0].outputs[0].name == "y" and graph.nodes[0].inputs[0].const.tolist() == [11, 22, 33]
    again = PassContext()
    fold_constants(graph, again)
    assert again.rewrites == {}, "the Identity that keeps the output is not folded again"
    assert engine(graph).engine.output_names == ["y", "z"]
    assert_same_numbers(text, graph, {"x": rand(rng, 3)})


def test_fold_runs_subgraphs_with_constant_captures(rng):
    text = model("(float[2] x) => (float[2] y)", """
        r = If(cond) <then_branch = t () => (float[2] o) { o = Add(c, c) },
                      else_branch = e () => (float[2] o) { o = Sub(c, c) }>
        y = Mul(x, r)""", "bool cond = {1}, float[2] c = {1.5, -2.0}")
    graph, ctx = run_passes(text, fold_constants)
    assert ctx.rewrites == {"constant_fold": 1}
    assert ops(graph) == ["Mul"] and graph.nodes[0].inputs[1].const.tolist() == [3.0, -4.0]
    assert_same_numbers(text, graph, {"x": rand(rng, 2)})


def test_fold_declines_random_ops():
    text = model("(float[2,3] x) => (float[2,3] y)",
                 "r = RandomUniform<shape=[2, 3], seed=1.0>()\nn = RandomNormalLike<seed=2.0>(c)\n"
                 "s = Add(r, n)\ny = Add(x, s)", "float[2,3] c = {0,0,0,0,0,0}")
    graph, ctx = run_passes(text, fold_constants)
    assert ctx.rewrites == {}
    assert ops(graph) == ["RandomUniform", "RandomNormalLike", "Add", "Add"]
    reasons = {node: reason for _, node, reason in ctx.declines}
    assert reasons == {graph.nodes[0].name: "RandomUniform is not deterministic",
                       graph.nodes[1].name: "RandomNormalLike is not deterministic"}


def test_fold_declines_outputs_over_the_size_cap(monkeypatch, rng):
    monkeypatch.setattr(fold_module, "FOLD_SIZE_CAP_BYTES", 1024)
    text = model("(float[16,64] x) => (float[16,64] y)", "e = Expand(c, shape)\ny = Add(x, e)",
                 "float[1,64] c = {" + ",".join(["0.5"] * 64) + "}, int64[2] shape = {16, 64}")
    graph, ctx = run_passes(text, fold_constants)
    assert ctx.rewrites == {}
    assert ops(graph) == ["Expand", "Add"]
    [(rule, node, reason)] = ctx.declines
    assert rule == "constant_fold" and node == graph.nodes[0].name
    assert reason == "outputs would take 4096 bytes (cap 1024)"
    assert_same_numbers(text, graph, {"x": rand(rng, 16, 64)})


def test_fold_checks_the_size_cap_after_running_when_the_shape_was_unknown(monkeypatch):
    # NonZero's output length is known only once it runs.
    monkeypatch.setattr(fold_module, "FOLD_SIZE_CAP_BYTES", 1024)
    text = model("(int64[1,200] x) => (int64[1,200] y)", "n = NonZero(c)\ny = Add(x, n)",
                 "float[200] c = {" + ",".join(["1"] * 200) + "}")
    graph, ctx = run_passes(text, fold_constants)
    assert ops(graph) == ["NonZero", "Add"]
    assert [r for _, _, r in ctx.declines] == ["outputs take 1600 bytes (cap 1024)"]


def test_fold_keeps_dequantize_of_weights_for_precision(rng):
    text = model("(float[2,3] x) => (float[2,3] y)", "w = DequantizeLinear(q, scale)\ny = Mul(x, w)",
                 "int8[3] q = {-4, 0, 9}, float scale = {0.5}")
    graph, ctx = run_passes(text, fold_constants)
    assert ops(graph) == ["DequantizeLinear", "Mul"]
    assert [r for _, _, r in ctx.declines] == ["DequantizeLinear is kept for the precision passes"]


def test_fold_shape_and_size_of_static_values(rng):
    text = model("(float[2,3] x) => (float[2,3] y)",
                 "s = Shape(x)\nn = Size(x)\nnf = Cast<to=1>(n)\nsf = Cast<to=1>(s)\n"
                 "r = ReduceSum<keepdims=1>(sf)\nt = Add(r, nf)\ny = Add(x, t)")
    graph, ctx = run_passes(text, fold_constants)
    assert ctx.rewrites == {"shape_fold": 2, "constant_fold": 4}
    assert ops(graph) == ["Add"] and graph.nodes[0].inputs[1].const.tolist() == [11.0]
    assert_same_numbers(text, graph, {"x": rand(rng, 2, 3)})


EXPORTER_RESHAPE = """
    s = Shape(x)
    d0 = Gather<axis=0>(s, i0)
    d1 = Gather<axis=0>(s, i1)
    d2 = Gather<axis=0>(s, i2)
    u0 = Unsqueeze(d0, zero)
    u1 = Unsqueeze(d1, zero)
    u2 = Unsqueeze(d2, zero)
    p = Mul(u1, u2)
    t = Concat<axis=0>({first}, {second})
    y = Reshape(x, t)"""
EXPORTER_INIT = "int64 i0 = {0}, int64 i1 = {1}, int64 i2 = {2}, int64[1] zero = {0}"


@pytest.mark.parametrize("batch", [1, 5])
def test_fold_exporter_reshape_chain_with_symbolic_batch(rng, batch):
    # Shape->Gather->Unsqueeze->Concat->Reshape: the static dims fold to 12; the batch entry
    # is x's own dim 0, so the target becomes [0, 12] ("copy dim 0") and the chain disappears.
    text = model("(float[N,3,4] x) => (float[N,12] y)", EXPORTER_RESHAPE.format(first="u0", second="p"),
                 EXPORTER_INIT)
    graph, ctx = run_passes(text, fold_constants)
    assert ctx.rewrites == {"shape_fold": 2, "constant_fold": 3, "reshape_copy_dims": 1}
    assert live_ops(graph) == ["Reshape"]
    reshape = graph.nodes[-1]
    assert reshape.inputs[1].const.tolist() == [0, 12]
    assert reshape.outputs[0].shape == ("N", 12)
    assert_same_numbers(text, graph, {"x": rand(rng, batch, 3, 4)})


def test_fold_exporter_chain_folds_only_the_static_part(rng):
    # Reshape to [12, N]: the batch lands at position 1, so it cannot be "copy dim 1"; the
    # 3*4 part folds, the batch part stays computed at run time.
    text = model("(float[N,3,4] x) => (float[12,N] y)", EXPORTER_RESHAPE.format(first="p", second="u0"),
                 EXPORTER_INIT)
    graph, ctx = run_passes(text, fold_constants)
    assert ctx.rewrites == {"shape_fold": 2, "constant_fold": 3}
    assert live_ops(graph) == ["Shape", "Gather", "Unsqueeze", "Concat", "Reshape"]
    concat = graph.nodes[-2]
    assert concat.inputs[0].const.tolist() == [12] and concat.inputs[1].const is None
    assert_same_numbers(text, graph, {"x": rand(rng, 2, 3, 4)})


# -- eliminate_common_subexpressions ---------------------------------------------------------------

def test_cse_merges_duplicated_weights_and_chains(rng):
    # Two copies of the same branch, each with its own (identical) weight, collapse into one.
    text = model("(float[2,3] x) => (float[2,3] y)",
                 "r1 = Relu(x)\nm1 = Mul(r1, w1)\nr2 = Relu(x)\nm2 = Mul(r2, w2)\ny = Add(m1, m2)",
                 "float[3] w1 = {1, 2, 3}, float[3] w2 = {1, 2, 3}")
    graph, ctx = run_passes(text, eliminate_common_subexpressions)
    assert ctx.rewrites == {"duplicate_constant": 1, "common_subexpression": 2}
    assert ops(graph) == ["Relu", "Mul", "Add"]
    add = graph.nodes[-1]
    assert add.inputs[0] is add.inputs[1]
    assert [v.name for v in graph.initializers] == ["w1"]
    assert_same_numbers(text, graph, {"x": rand(rng, 2, 3)})


def test_cse_compares_tensor_attributes_by_value(rng):
    text = model("(float[2,3] x) => (float[2,3] y)",
                 "a = ConstantOfShape<value = float[1] {2.0}>(s)\nb = ConstantOfShape<value = float[1] {2.0}>(s)\n"
                 "c = ConstantOfShape<value = float[1] {3.0}>(s)\nab = Add(a, b)\nabc = Add(ab, c)\ny = Mul(x, abc)",
                 "int64[2] s = {2, 3}")
    graph, ctx = run_passes(text, eliminate_common_subexpressions)
    assert ctx.rewrites == {"common_subexpression": 1}
    assert ops(graph) == ["ConstantOfShape", "ConstantOfShape", "Add", "Add", "Mul"]
    assert_same_numbers(text, graph, {"x": rand(rng, 2, 3)})


def test_cse_leaves_different_attributes_dtypes_and_random_ops_apart(rng):
    text = model("(float[3,3] x) => (float[3,3] y, float[3,3] z)",
                 "s0 = Softmax<axis=0>(x)\ns1 = Softmax<axis=1>(x)\ny = Add(s0, s1)\n"
                 "r0 = RandomUniformLike<seed=1.0>(x)\nr1 = RandomUniformLike<seed=1.0>(x)\nr = Add(r0, r1)\n"
                 "ci = Cast<to=1>(i)\nzf = Add(ci, f)\nz = Add(zf, r)",
                 "int32[3] i = {1, 2, 3}, float[3] f = {1, 2, 3}")
    graph, ctx = run_passes(text, eliminate_common_subexpressions)
    assert ctx.rewrites == {}
    assert ops(graph) == ["Softmax", "Softmax", "Add", "RandomUniformLike", "RandomUniformLike", "Add", "Cast", "Add",
                          "Add"]
    assert [v.name for v in graph.initializers] == ["i", "f"]


def test_cse_of_graph_outputs_keeps_both_names(rng):
    text = model("(float[2,3] x) => (float[2,3] y1, float[2,3] y2)", "y1 = Relu(x)\ny2 = Relu(x)")
    graph, ctx = run_passes(text, eliminate_common_subexpressions)
    assert ctx.rewrites == {"common_subexpression": 1}
    assert ops(graph) == ["Relu", "Identity"]
    assert [v.name for v in graph.outputs] == ["y1", "y2"]
    assert_same_numbers(text, graph, {"x": rand(rng, 2, 3)})


# -- remove_noops --------------------------------------------------------------------------------

NOOP_CASES = [
    # (id, signature input type, body producing `n` from x, initializers, opset, rewrites)
    ("identity", "float[2,3,4]", "n = Identity(x)", "", 17, {"identity": 1}),
    ("dropout", "float[2,3,4]", "n, mask = Dropout(x, ratio)", "float ratio = {0.3}", 13,
     {"inference_dropout": 1}),
    ("dropout_training_false", "float[2,3,4]", "n = Dropout(x, ratio, mode)",
     "float ratio = {0.3}, bool mode = {0}", 13, {"inference_dropout": 1}),
    ("dropout_opset7", "float[2,3,4]", "n = Dropout<ratio=0.2>(x)", "", 7, {"inference_dropout": 1}),
    ("cast", "float[2,3,4]", "n = Cast<to=1>(x)", "", 17, {"same_dtype_cast": 1}),
    ("castlike", "float[2,3,4]", "n = CastLike(x, like)", "float like = {0.0}", 17, {"same_dtype_cast": 1}),
    ("reshape_static", "float[2,3,4]", "n = Reshape(x, s)", "int64[3] s = {2, 3, 4}", 17,
     {"same_shape_reshape": 1}),
    ("reshape_symbolic", "float[N,3,4]", "n = Reshape(x, s)", "int64[3] s = {0, 3, -1}", 17,
     {"same_shape_reshape": 1}),
    ("transpose_identity", "float[2,3,4]", "n = Transpose<perm=[0, 1, 2]>(x)", "", 17, {"identity_transpose": 1}),
    ("transpose_pair", "float[2,3,4]", "t = Transpose<perm=[1, 2, 0]>(x)\nn = Transpose<perm=[2, 0, 1]>(t)", "",
     17, {"compose_transposes": 1, "identity_transpose": 1}),
    ("expand", "float[N,3,4]", "n = Expand(x, s)", "int64[2] s = {1, 4}", 17, {"same_shape_expand": 1}),
    ("squeeze_unsqueeze", "float[2,3,4]", "u = Unsqueeze(x, ax)\nn = Squeeze(u, ax)", "int64[1] ax = {-2}", 17,
     {"cancel_squeeze_unsqueeze": 1, "identity": 1}),
    ("unsqueeze_squeeze", "float[2,1,4]", "s = Squeeze(x, ax)\nn = Unsqueeze(s, ax)", "int64[1] ax = {1}", 17,
     {"cancel_unsqueeze_squeeze": 1, "identity": 1}),
    ("unsqueeze_squeeze_opset11", "float[2,1,4]", "s = Squeeze<axes=[1]>(x)\nn = Unsqueeze<axes=[1]>(s)", "", 11,
     {"cancel_unsqueeze_squeeze": 1, "identity": 1}),
    ("pad", "float[2,3,4]", "n = Pad(x, pads)", "int64[6] pads = {0, 0, 0, 0, 0, 0}", 17, {"zero_pad": 1}),
    ("slice", "float[N,3,4]", "n = Slice(x, starts, ends, axes)",
     "int64[2] starts = {0, 0}, int64[2] ends = {9223372036854775807, 4}, int64[2] axes = {0, -1}", 17,
     {"full_slice": 1}),
    ("concat", "float[2,3,4]", "n = Concat<axis=1>(x)", "", 17, {"single_input_concat": 1}),
    ("split", "float[2,3,4]", "n = Split<axis=1, num_outputs=1>(x)", "", 18, {"single_output_split": 1}),
]


@pytest.mark.parametrize("name,in_type,body,init,opset,rewrites", NOOP_CASES, ids=[c[0] for c in NOOP_CASES])
def test_noop_removed(rng, name, in_type, body, init, opset, rewrites):
    text = model(f"({in_type} x) => (float y)", f"{body}\ny = Relu(n)", init, opset=opset)
    graph, ctx = run_passes(text, remove_noops)
    assert ctx.rewrites == rewrites
    assert ctx.declines == []
    assert ops(graph) == ["Relu"]
    assert graph.nodes[0].inputs[0].name == "x"
    shape = [2 if d == "N" else int(d) for d in in_type[6:-1].split(",")]
    assert_same_numbers(text, graph, {"x": rand(rng, *shape)})


def test_transposes_compose_into_one(rng):
    text = model("(float[2,3,4] x) => (float y)",
                 "a = Transpose<perm=[1, 0, 2]>(x)\nb = Transpose<perm=[0, 2, 1]>(a)\ny = Relu(b)")
    graph, ctx = run_passes(text, remove_noops)
    assert ctx.rewrites == {"compose_transposes": 1}
    assert ops(graph) == ["Transpose", "Relu"]
    assert graph.nodes[0].attrs["perm"] == [1, 2, 0] and graph.nodes[0].inputs[0].name == "x"
    assert_same_numbers(text, graph, {"x": rand(rng, 2, 3, 4)})


NOT_NOOP_CASES = [
    # (id, body, initializers, opset, declines as (rule, reason) or [])
    ("dropout_training", "n = Dropout(x, ratio, mode)", "float ratio = {0.0}, bool mode = {1}", 13,
     [("inference_dropout", "training_mode is true: it drops at random")]),
    ("cast_other_dtype", "c = Cast<to=11>(x)\nn = Cast<to=1>(c)", "", 17, []),
    ("reshape_other_shape", "n = Reshape(x, s)", "int64[3] s = {3, 2, 4}", 17, []),
    ("transpose_permutes", "n = Transpose<perm=[1, 0, 2]>(x)", "", 17, []),
    ("expand_broadcasts", "n = Expand(x, s)", "int64[4] s = {2, 1, 1, 1}", 17, []),
    ("pad_pads", "n = Pad(x, pads)", "int64[6] pads = {0, 1, 0, 0, 0, 0}", 17, []),
    ("slice_cuts", "n = Slice(x, starts, ends)", "int64[1] starts = {1}, int64[1] ends = {2}", 17, []),
    ("squeeze_other_axis", "u = Unsqueeze(x, a0)\nn = Squeeze(u, a3)", "int64[1] a0 = {0}, int64[1] a3 = {3}", 17,
     [("cancel_squeeze_unsqueeze", "Unsqueeze adds axes [0], Squeeze drops [3]")]),
]


@pytest.mark.parametrize("name,body,init,opset,declines", NOT_NOOP_CASES, ids=[c[0] for c in NOT_NOOP_CASES])
def test_noop_not_removed(rng, name, body, init, opset, declines):
    shape = (2, 3, 4) if name != "squeeze_other_axis" else (2, 3, 1)
    text = model(f"(float[{','.join(map(str, shape))}] x) => (float y)", f"{body}\ny = Relu(n)", init, opset=opset)
    before = ops(parse_onnx(parse(text)))
    graph, ctx = run_passes(text, remove_noops)
    assert ctx.rewrites == {}
    assert ops(graph) == before
    assert [(rule, reason) for rule, _, reason in ctx.declines] == declines
    if name != "dropout_training":  # random: nothing to compare with
        assert_same_numbers(text, graph, {"x": rand(rng, *shape)})


def test_dropout_with_read_mask_stays(rng):
    text = model("(float[2,3] x) => (float[2,3] y, bool[2,3] mask)", "d, mask = Dropout(x)\ny = Relu(d)", opset=13)
    graph, ctx = run_passes(text, remove_noops)
    assert ops(graph) == ["Dropout", "Relu"]
    assert [(r, reason) for r, _, reason in ctx.declines] == [
        ("inference_dropout", "its mask output 'mask' is read")]


def test_noop_producing_graph_output_renames_its_producer(rng):
    text = model("(float[2,3] x) => (float[2,3] y)", "r = Relu(x)\ny = Identity(r)")
    graph, ctx = run_passes(text, remove_noops)
    assert ctx.rewrites == {"identity": 1}
    assert ops(graph) == ["Relu"] and graph.nodes[0].outputs[0].name == "y"
    assert_same_numbers(text, graph, {"x": rand(rng, 2, 3)})


def test_noop_between_graph_input_and_output_keeps_an_identity(rng):
    text = model("(float[2,3] x) => (float[2,3] y, float[2,3] z)",
                 "y = Identity(x)\nz = Reshape(x, s)", "int64[2] s = {2, 3}")
    graph, ctx = run_passes(text, remove_noops)
    assert ctx.rewrites == {"same_shape_reshape": 1}
    assert ops(graph) == ["Identity", "Identity"]
    assert [n.outputs[0].name for n in graph.nodes] == ["y", "z"]
    # Both Identities stay: nothing else can produce the outputs under their names.
    assert [(rule, reason) for rule, _, reason in ctx.declines] == [
        ("identity", "output 'y' is a graph output and its input 'x' cannot take its name"),
        ("identity", "output 'z' is a graph output and its input 'x' cannot take its name")]
    assert_same_numbers(text, graph, {"x": rand(rng, 2, 3)})


def test_noop_rewires_subgraph_captures(rng):
    text = model("(float[2] x, bool c) => (float[2] y)", """
        i = Identity(x)
        y = If(c) <then_branch = t () => (float[2] o) { o = Relu(i) },
                   else_branch = e () => (float[2] o) { o = Neg(i) }>""")
    graph, ctx = run_passes(text, remove_noops)
    assert ctx.rewrites == {"identity": 1}
    assert ops(graph) == ["If"]
    then_branch = graph.nodes[0].attrs["then_branch"]
    assert then_branch.nodes[0].inputs[0].name == "x"
    for flag in (True, False):
        assert_same_numbers(text, graph, {"x": rand(rng, 2), "c": np.array(flag)})


# -- prune_unused_inputs -------------------------------------------------------------------------

def test_prune_unused_inputs_and_initializers(rng):
    text = model("(float[2,3] x, float[2,3] unused) => (float[2,3] y)", "y = Relu(x)", "float[3] w = {1, 2, 3}")
    graph, ctx = run_passes(text, prune_unused_inputs)
    assert ctx.rewrites == {"unused_input": 1, "unused_initializer": 1}
    assert "unused_input: unused - input 'unused' is never read; removed from the engine's inputs (a value given for it is ignored)" in ctx.details
    assert [v.name for v in graph.inputs] == ["x"] and graph.initializers == []
    assert engine(graph).engine.input_names == ["x"]


def test_prune_keeps_inputs_read_by_subgraphs_or_outputs():
    text = model("(float[2] x, bool c, float[2] z) => (float[2] y, float[2] z)", """
        y = If(c) <then_branch = t () => (float[2] o) { o = Relu(x) },
                   else_branch = e () => (float[2] o) { o = Neg(x) }>""")
    graph, ctx = run_passes(text, prune_unused_inputs)
    assert ctx.rewrites == {}
    assert [v.name for v in graph.inputs] == ["x", "c", "z"]


# -- the passes together ---------------------------------------------------------------------------

def test_recommended_order_cleans_an_exported_block(rng):
    # What an exporter leaves around a linear layer: a duplicated weight, an inference
    # Dropout, a shape chain for the flatten, a no-op Cast and an unused input.
    text = model("(float[N,2,3] x, float[4] unused) => (float[N,4] y)", """
        d = Dropout(x, ratio)
        s = Shape(d)
        b = Gather<axis=0>(s, i0)
        bu = Unsqueeze(b, zero)
        t = Concat<axis=0>(bu, six)
        f = Reshape(d, t)
        wt = Transpose<perm=[1, 0]>(w)
        m1 = MatMul(f, wt)
        wt2 = Transpose<perm=[1, 0]>(w2)
        m2 = MatMul(f, wt2)
        a = Add(m1, m2)
        y = Cast<to=1>(a)""",
                 "float ratio = {0.5}, int64 i0 = {0}, int64[1] zero = {0}, int64[1] six = {6}, "
                 "float[4,6] w = {" + ",".join(str(i) for i in range(24)) + "}, "
                 "float[4,6] w2 = {" + ",".join(str(i) for i in range(24)) + "}", opset=13)
    graph, ctx = run_passes(text, *RECOMMENDED)
    assert ops(graph) == ["Reshape", "MatMul", "Add"]
    assert graph.nodes[0].inputs[1].const.tolist() == [0, 6]
    assert [v.name for v in graph.inputs] == ["x"]
    assert graph.outputs[0].name == "y" and graph.nodes[-1].outputs[0].name == "y"
    feeds = {"x": rand(rng, 3, 2, 3), "unused": rand(rng, 4)}
    want = run_onnxruntime(parse(text), feeds)
    got = engine(graph).execute({"x": feeds["x"]})
    assert_close(got["y"], want["y"], "fp32")


def test_recommended_order_keeps_inputs_read_only_through_their_shape(rng):
    # y depends on x's static shape only: folding makes x unread, but x was read by the model,
    # so it stays one of the engine's inputs (pruning runs before folding).
    text = model("(float[2,3] x) => (int64[2] y)", "y = Shape(x)")
    graph, ctx = run_passes(text, *RECOMMENDED)
    assert ops(graph) == ["Identity"] and graph.nodes[0].inputs[0].const.tolist() == [2, 3]
    assert [v.name for v in graph.inputs] == ["x"]
    got = engine(graph).execute({"x": rand(rng, 2, 3)})
    assert got["y"].tolist() == [2, 3]


def test_fold_equal_and_where_on_a_partly_symbolic_shape(rng):
    # The exporter's Expand target Where(Equal(t, -1), 1, t) with a dynamic batch: no dim is -1,
    # so the Equal folds (to all false); the Where keeps the batch, so it stays, and later passes
    # see the Expand's output named [N, 3] like its input (the engine drops the Expand then).
    text = model("(float[N,3] x) => (float[N,3] y)",
                 "s = Shape(x)\nr = Shape(s)\nones = ConstantOfShape<value = int64[1] {1}>(r)\n"
                 "m = Mul(ones, minus1)\ne = Equal(s, m)\nt = Where(e, ones, s)\ny = Expand(x, t)",
                 "int64[1] minus1 = {-1}")
    graph, ctx = run_passes(text, fold_constants)
    # Folding names dims too (symbolic_dims.write_dim_names): here the Expand's output, [N, 3].
    assert ctx.rewrites == {"shape_fold": 2, "constant_fold": 2, "name_symbolic_dims": 2}
    assert graph.nodes[-1].outputs[0].shape == ("N", 3)
    assert live_ops(graph) == ["Shape", "Where", "Expand"]
    where = next(n for n in graph.nodes if n.op_type == "Where")
    assert where.inputs[0].const.tolist() == [False, False]
    full, _ = run_passes(text, *OPTIMIZING_PIPELINE)
    assert ops(full) == ["Identity"] and full.nodes[0].inputs[0].name == "x"
    assert_same_numbers(text, graph, {"x": rand(rng, 4, 3)})
