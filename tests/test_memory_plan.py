"""The activation arena plan: no two buffers alive at once share memory, and the arena
is at least the peak of live activation bytes, on hand-made graphs and the zoo."""

from __future__ import annotations

import numpy as np
import onnx.parser
import pytest

from tensorkiln import Builder, BuilderConfig, DType
from tensorkiln.frontends.onnx import parse_onnx
from tensorkiln.ir import Graph, TensorType
from tensorkiln.planner import ALIGNMENT, overlapping_pairs, plan_arena
from tensorkiln.planner.arena import memory_summary, value_nbytes
from tensorkiln.testing import zoo


def _check_invariants(graph: Graph, dims: dict) -> None:
    plan = plan_arena(graph, dims)
    # Every pair whose lifetimes intersect lies in disjoint memory.
    assert overlapping_pairs(plan) == []
    bs = plan.buffers
    for i in range(len(bs)):
        for j in range(i + 1, len(bs)):
            if bs[i].first <= bs[j].last and bs[j].first <= bs[i].last:
                assert bs[i].end <= bs[j].offset or bs[j].end <= bs[i].offset, (bs[i], bs[j])
    for b in bs:
        assert b.offset % ALIGNMENT == 0 and b.end <= plan.size and b.first <= b.last
    assert plan.size % ALIGNMENT == 0
    # The peak computed independently: at each layer, the bytes of buffers alive there.
    peak = max((sum(b.nbytes for b in bs if b.first <= t <= b.last) for t in range(len(graph.nodes))), default=0)
    assert plan.peak_live_bytes == peak
    assert plan.size >= peak
    # Every activation is planned exactly once (or listed as unplanned).
    names = [n for b in bs for n in b.values]
    assert len(names) == len(set(names))
    return plan


def _graph(text: str) -> Graph:
    return parse_onnx(onnx.parser.parse_model(text))


def test_chain_reuses_memory():
    # a -> b -> c -> d: only two neighbours are alive at a time, so two slots suffice.
    g = _graph("""
    <ir_version: 8, opset_import: ["" : 17]>
    chain (float[1024] x) => (float[1024] y) {
        a = Relu(x)
        b = Neg(a)
        c = Abs(b)
        d = Sigmoid(c)
        y = Relu(d)
    }
    """)
    plan = _check_invariants(g, {})
    assert plan.size == 2 * 4096 and plan.peak_live_bytes == 2 * 4096
    assert plan.io_bytes == 2 * 4096  # x and y: not in the arena


def test_branches_keep_long_lived_values_apart():
    g = _graph("""
    <ir_version: 8, opset_import: ["" : 17]>
    branches (float[N,100] x) => (float[N,100] y) {
        a = Relu(x)
        b = Neg(a)
        c = Abs(b)
        d = Add(a, c)
        e = Sigmoid(d)
        y = Mul(e, b)
    }
    """)
    plan = _check_invariants(g, {"N": 3})
    sizes = {b.values[0]: b.nbytes for b in plan.buffers}
    assert sizes["a"] == 3 * 100 * 4
    # a, b and c are alive together at layer 'c'.
    assert plan.size >= 3 * 1280


def test_views_share_their_base_buffer():
    g = _graph("""
    <ir_version: 8, opset_import: ["" : 17]>
    views (float[2,8] x) => (float[16] y) {
        a = Relu(x)
        shape = Constant<value = int64[1] {16}>()
        r = Reshape(a, shape)
        b = Neg(r)
        y = Abs(b)
    }
    """)
    plan = plan_arena(g, {})
    assert overlapping_pairs(plan) == []
    by_name = {n: b for b in plan.buffers for n in b.values}
    assert by_name["a"] is by_name["r"]
    a = by_name["a"]
    # The base lives until its view's last reader ('b').
    layer_of = {n.outputs[0].name: i for i, n in enumerate(g.nodes)}
    assert a.last == layer_of["b"]


def test_unknown_sizes_are_reported_not_guessed():
    g = _graph("""
    <ir_version: 8, opset_import: ["" : 17]>
    dyn (float[N,4] x) => (float[N,4] y) {
        a = Relu(x)
        y = Neg(a)
    }
    """)
    plan = plan_arena(g, {})
    assert plan.unplanned == ("a",) and not plan.complete and plan.size == 0
    assert plan_arena(g, {"N": 5}).complete
    assert plan_arena(g, {}, nbytes_of={"a": 80}).buffers[0].nbytes == 80


def test_value_nbytes():
    assert value_nbytes(TensorType(DType.FLOAT16, ("N", 3)), {"N": 2}) == 12
    assert value_nbytes(TensorType(DType.FLOAT32, ("N", 3)), {}) is None
    assert value_nbytes(TensorType(DType.FLOAT32, None), {}) is None


def test_random_dags_never_overlap():
    # Random DAGs over values of random sizes: each layer reduces one earlier value to a
    # scalar, broadcasts it to a new width and adds another earlier value's scalar.
    for seed in range(20):
        rng = np.random.default_rng(seed)
        lines, names, widths = [], ["x"], {"x": 8}
        for i in range(int(rng.integers(5, 30))):
            w = int(rng.choice([8, 64, 300, 1000]))
            src, other = (names[int(k)] for k in rng.integers(0, len(names), 2))
            lines += [f"s{i} = Constant<value = int64[1] {{{w}}}>()",
                      f"r{i} = ReduceSum<keepdims = 1>({src})",
                      f"q{i} = ReduceSum<keepdims = 1>({other})",
                      f"v{i} = Expand(r{i}, s{i})",
                      f"v{i}b = Add(v{i}, q{i})"]
            names.append(f"v{i}b")
            widths[f"v{i}b"] = w
        body = "\n            ".join(lines)
        g = _graph(f"""
        <ir_version: 8, opset_import: ["" : 17]>
        rand (float[8] x) => (float[{widths[names[-1]]}] y) {{
            {body}
            y = Relu({names[-1]})
        }}
        """)
        plan = _check_invariants(g, {})
        assert plan.complete


SMALL_ZOO = ["resnet50", "mobilenetv2", "bert_encoder", "detector"]


@pytest.mark.parametrize("name", SMALL_ZOO)
def test_zoo_arena(name):
    model = zoo.build(name, small=True)
    graph = Builder(BuilderConfig()).build(parse_onnx(model)).graph
    plan = _check_invariants(graph, {"N": 2, "B": 2, "S": 16})
    assert plan.buffers
    # Reuse makes the arena much smaller than giving every activation its own memory.
    assert plan.size < sum(b.nbytes for b in plan.buffers) or len(plan.buffers) <= 2


def test_memory_summary_at_opt_and_max():
    model = zoo.build("resnet50", small=True)
    graph = Builder(BuilderConfig()).build(parse_onnx(model)).graph
    summary = memory_summary(graph, {"N": 1}, {"N": 4})
    # Every layer in the arena (no `include`): the arena is every activation's plan at max.
    assert summary["device_memory_size"] == summary["activations_at_max"]["size"] == summary["arena"]["size"]
    assert summary["activation_bytes_at_max"] == summary["device_memory_size"]
    assert summary["activations_at_max"]["size"] > summary["activations_at_opt"]["size"] > 0
    assert summary["activations_at_max"]["unplanned"] == 0
    placed = [name for _, _, names in summary["arena"]["buffers"] for name in names]
    assert len(placed) == len(set(placed)) > 0
    unknown = memory_summary(graph, {}, {})  # N unknown: nothing can be placed before run time
    assert unknown["activation_bytes_at_max"] is None and unknown["device_memory_size"] == 0


def test_arena_holds_only_the_included_layers():
    # Only the Relu layers write where the runtime says: the Neg outputs are allocated by their
    # layers, and counted apart; a value named in `exclude` stays out with its whole buffer.
    g = _graph("""
    <ir_version: 8, opset_import: ["" : 17]>
    mixed (float[1024] x) => (float[1024] y) {
        a = Relu(x)
        b = Neg(a)
        c = Relu(b)
        d = Neg(c)
        e = Relu(d)
        y = Neg(e)
    }
    """)
    plan = plan_arena(g, {}, include=lambda node: node.op_type == "Relu")
    assert sorted(n for b in plan.buffers for n in b.values) == ["a", "c", "e"]
    assert plan.elsewhere == ("b", "d") and plan.elsewhere_peak_bytes == 4096
    # a, c and e are never alive together (each dies at the next layer): one place serves all.
    assert plan.size == 4096 and overlapping_pairs(plan) == []
    layout = plan.layout()
    assert layout["size"] == 4096 and [entry[:2] for entry in layout["buffers"]] == [[0, 4096]] * 3
    kept = plan_arena(g, {}, include=lambda node: node.op_type == "Relu", exclude=frozenset({"c"}))
    assert sorted(n for b in kept.buffers for n in b.values) == ["a", "e"] and "c" in kept.elsewhere
