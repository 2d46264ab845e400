"""index_gathers_as_views: gathers whose indices enumerate the data in order become views.

An engine built for a range of shapes keeps the exporter's index arithmetic (position ids
sliced from an arange buffer, the padding mask indexed by Range-built indices). Checked: the
BERT-like model of test_symbolic_dims has no gather, Range or index arithmetic left on the
device beyond what the fixed-shape engine has; each rule against onnxruntime at several shapes;
and the indices that only look alike (another constant, a table of other length, a step, a
transposed enumeration) keep their Gather and their results.
"""

from __future__ import annotations

import collections

import numpy as np
import onnx
import onnx.parser
import pytest
from onnx import numpy_helper

from tensorkiln import Builder, BuilderConfig, Runtime
from tensorkiln.builder.config import OptimizationProfile
from tensorkiln.frontends.onnx import parse_onnx
from tensorkiln.runtime.host_values import find_host_values
from tensorkiln.testing.oracles import run_onnxruntime
from tensorkiln.testing.tolerances import assert_close

from test_symbolic_dims import INPUTS, bert_dynamic, feeds, profile

SHAPES = [(1, 1), (2, 8), (3, 5), (4, 16)]


def _rewrites(plan) -> dict[str, int]:
    return next(p["rewrites"] for p in plan.build_info["passes"] if p["name"] == "index_gathers_as_views")


def _declines(plan) -> list:
    return next(p["declines"] for p in plan.build_info["passes"] if p["name"] == "index_gathers_as_views")


def _device_layers(plan) -> collections.Counter:
    host = find_host_values(plan.graph)
    return collections.Counter(n.op_type for i, n in enumerate(plan.graph.nodes) if i not in host.layers)


def test_a_dynamic_bert_engine_computes_no_indices():
    m = bert_dynamic()
    dynamic = Builder(BuilderConfig(profiles=(profile(),))).build(parse_onnx(m))
    fixed = Builder(BuilderConfig(profiles=(OptimizationProfile.fixed({n: (2, 8) for n in INPUTS}),))).build(
        parse_onnx(m))
    assert _rewrites(dynamic) == {"gather_positions_as_slice": 1, "gather_enumeration_as_unsqueeze": 1}
    layers = _device_layers(dynamic)
    for op in ("Range", "Gather", "Flatten", "Mul", "Add", "ElementwiseChain"):
        assert layers[op] == 0, op
    # Beyond the fixed engine's layers only views: the position rows' Slice and two Unsqueezes.
    extra = layers - collections.Counter(n.op_type for n in fixed.graph.nodes)
    assert extra == collections.Counter({"Unsqueeze": 2, "Slice": 1})
    context = Runtime("cpu").load(dynamic).create_execution_context()
    for batch, seq in SHAPES:
        data = feeds(batch, seq, seed=batch + seq)
        assert_close(np.asarray(context.execute(dict(data))["y"]), run_onnxruntime(m, data)["y"], "fp32",
                     what=f"y at {batch}x{seq}")


def positions_model(positions: np.ndarray, rows: int, step: int = 1) -> onnx.ModelProto:
    m = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (int64[batch, seq] ids) => (float[batch, seq, 4] y) {
            one = Constant <value = int64 {1}> ()
            axis0 = Constant <value = int64[1] {0}> ()
            axis1 = Constant <value = int64[1] {1}> ()
            s = Shape (ids)
            n = Gather <axis = 0> (s, one)
            n1 = Unsqueeze (n, axis0)
            pos = Slice (positions, axis0, n1, axis1, step)
            p = Gather (table, pos)
            w = Gather (word, ids)
            y = Add (w, p)
        }""")
    rng = np.random.default_rng(0)
    for name, array in {"positions": positions, "step": np.array([step], np.int64),
                        "table": rng.standard_normal((rows, 4)).astype(np.float32),
                        "word": rng.standard_normal((10, 4)).astype(np.float32)}.items():
        m.graph.initializer.append(numpy_helper.from_array(array, name))
    return m


def _check_against_onnxruntime(m: onnx.ModelProto, plan, make_feeds, shapes=SHAPES) -> None:
    context = Runtime("cpu").load(plan).create_execution_context()
    for batch, seq in shapes:
        data = make_feeds(batch, seq)
        expected = run_onnxruntime(m, data)
        got = context.execute(dict(data))
        for name, want in expected.items():
            assert_close(np.asarray(got[name]), want, "fp32", what=f"{name} at {batch}x{seq}")


def _ids(batch: int, seq: int) -> dict[str, np.ndarray]:
    return {"ids": np.random.default_rng(batch * 10 + seq).integers(0, 10, (batch, seq)).astype(np.int64)}


def _build(m: onnx.ModelProto, name: str, seq_max: int = 16):
    return Builder(BuilderConfig(profiles=(OptimizationProfile({name: ((1, 1), (2, 8), (4, seq_max))}),))).build(
        parse_onnx(m))


def test_position_rows_are_a_slice_of_the_table():
    m = positions_model(np.arange(16, dtype=np.int64)[None], rows=16)
    plan = _build(m, "ids")
    assert _rewrites(plan) == {"gather_positions_as_slice": 1}
    gathered = {n.inputs[0].name for n in plan.graph.nodes if n.op_type == "Gather"}
    assert "table" not in gathered
    _check_against_onnxruntime(m, plan, _ids)


@pytest.mark.parametrize("positions, rows, step, why", [
    (np.arange(16, dtype=np.int64)[None, ::-1].copy(), 16, 1, "descending positions"),
    (np.arange(16, dtype=np.int64)[None] * 2 % 16, 16, 1, "positions with a stride"),
    (np.arange(16, dtype=np.int64)[None], 20, 1, "a table longer than the positions"),
    (np.arange(16, dtype=np.int64)[None], 16, 2, "every other position"),
])
def test_other_position_lookups_stay_gathers(positions, rows, step, why):
    m = positions_model(positions, rows, step)
    plan = _build(m, "ids")
    assert _rewrites(plan) == {}, why
    assert [d[0] for d in _declines(plan)] == ["gather_positions_as_slice"], why  # with its reason
    assert "table" in {n.inputs[0].name for n in plan.graph.nodes if n.op_type == "Gather"}, why
    # Every other position of a sequence is half as long: the model adds them only at length 1.
    _check_against_onnxruntime(m, plan, _ids, SHAPES if step == 1 else [(1, 1), (3, 1)])


def enumeration_model(transposed: bool = False) -> onnx.ModelProto:
    # index[b, 0, 0, s] = b * seq + s (as transformers' padding mask), or s * batch + b: a permutation.
    index = "row = Mul (s4, b1)\n index = Add (row, b4)" if transposed else \
        "row = Mul (b4, n1)\n index = Add (row, s4)"
    m = onnx.parser.parse_model(f"""<ir_version: 8, opset_import: ["" : 17]>
        g (int64[batch, seq] mask) => (bool[batch, 1, 1, seq] y) {{
            zero = Constant <value = int64 {{0}}> ()
            one = Constant <value = int64 {{1}}> ()
            axis0 = Constant <value = int64[1] {{0}}> ()
            axes_123 = Constant <value = int64[3] {{1, 2, 3}}> ()
            axes_012 = Constant <value = int64[3] {{0, 1, 2}}> ()
            s = Shape (mask)
            b = Gather <axis = 0> (s, zero)
            n = Gather <axis = 0> (s, one)
            b_index = Range (zero, b, one)
            s_index = Range (zero, n, one)
            b4 = Unsqueeze (b_index, axes_123)
            s4 = Unsqueeze (s_index, axes_012)
            n1 = Unsqueeze (n, axis0)
            b1 = Unsqueeze (b, axis0)
            {index}
            mask_bool = Cast <to = 9> (mask)
            flat = Flatten <axis = 2> (mask_bool)
            picked = Gather <axis = 0> (flat, index)
            index_shape = Shape (index)
            y = Reshape (picked, index_shape)
        }}""")
    onnx.checker.check_model(m)
    return m


def _mask(batch: int, seq: int) -> dict[str, np.ndarray]:
    return {"mask": np.random.default_rng(batch * 10 + seq).integers(0, 2, (batch, seq)).astype(np.int64)}


def test_the_padding_mask_gather_is_an_unsqueeze_of_the_mask():
    m = enumeration_model()
    plan = _build(m, "mask")
    assert _rewrites(plan) == {"gather_enumeration_as_unsqueeze": 1}
    layers = _device_layers(plan)
    # The indices' shape is read from the view: the index arithmetic is gone with the gather.
    for op in ("Range", "Gather", "Flatten", "Mul", "Add", "ElementwiseChain"):
        assert layers[op] == 0, op
    _check_against_onnxruntime(m, plan, _mask)


def test_a_transposed_enumeration_stays_a_gather():
    m = enumeration_model(transposed=True)
    plan = _build(m, "mask")
    assert _rewrites(plan) == {}
    (rule, _, reason), = _declines(plan)
    assert rule == "gather_enumeration_as_unsqueeze" and "in order" in reason
    assert "Gather" in {n.op_type for n in plan.graph.nodes}
    _check_against_onnxruntime(m, plan, _mask)
