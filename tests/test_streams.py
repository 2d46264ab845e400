"""Stream assignment (planner/streams.py): the independent branches found, the streams given to
them, and the waits, signals and cross-stream reads derived; the flags and engine fields that
carry it. Running on auxiliary streams is in tests/test_runtime_cuda.py."""

from __future__ import annotations

import copy

import numpy as np
import onnx.parser
import pytest

from tensorkiln import Builder, BuilderConfig, Runtime
from tensorkiln.cli.main import main as kiln_main
from tensorkiln.errors import ConfigError, EngineFormatError
from tensorkiln.frontends.onnx import parse_onnx
from tensorkiln.planner.streams import Branch, assign_streams, find_branches, stream_schedule
from tensorkiln.testing import zoo

# x -> a1 -> a2 -> a3 (main line); x -> d (shortcut); join: Add(a3, d) -> Relu -> y.
BLOCK = """
<ir_version: 8, opset_import: ["" : 17]>
block (float[2, 8] x) => (float[2, 8] y) {
    a1 = Relu(x)
    a2 = Sigmoid(a1)
    a3 = Tanh(a2)
    d = Neg(x)
    s = Add(a3, d)
    y = Relu(s)
}
"""

# Three towers from one input, concatenated: two of them can run beside the first.
TOWERS = """
<ir_version: 8, opset_import: ["" : 17]>
towers (float[2, 8] x) => (float[2, 24] y) {
    p = Relu(x)
    a1 = Sigmoid(p)
    a2 = Tanh(a1)
    b1 = Neg(p)
    b2 = Abs(b1)
    c1 = Exp(p)
    c2 = Sqrt(c1)
    y = Concat<axis = 1>(a2, b2, c2)
}
"""


def _graph(text: str):
    return parse_onnx(onnx.parser.parse_model(text))


def _names(graph, indices):
    return [graph.nodes[i].outputs[0].name for i in indices]


def test_a_shortcut_beside_a_chain_is_a_branch():
    g = _graph(BLOCK)
    [branch] = find_branches(g)
    assert _names(g, branch.side) == ["d"]
    assert _names(g, [branch.join]) == ["s"]
    assert _names(g, branch.region) == ["a1", "a2", "a3", "d", "s"]


def test_no_branch_in_a_chain_or_where_a_side_gives_an_output():
    chain = _graph("""
    <ir_version: 8, opset_import: ["" : 17]>
    chain (float[2, 8] x) => (float[2, 8] y) { a = Relu(x)  b = Tanh(a)  y = Neg(b) }
    """)
    assert find_branches(chain) == []
    # The second line is itself a graph output: its layers stay on the caller's stream.
    two_outputs = _graph("""
    <ir_version: 8, opset_import: ["" : 17]>
    two (float[2, 8] x) => (float[2, 8] y, float[2, 8] d) { a = Relu(x)  b = Tanh(a)  d = Neg(x)  y = Add(b, d) }
    """)
    assert find_branches(two_outputs) == []


def test_overlapping_branches_get_different_streams_up_to_the_limit():
    g = _graph(TOWERS)
    branches = find_branches(g)
    assert sorted(_names(g, b.side) for b in branches) == [["b1", "b2"], ["c1", "c2"]]
    stream_of, given = assign_streams(g, branches, 4)
    assert sorted(given) == [1, 2]
    assert {stream_of[i] for b in branches for i in b.side} == {1, 2}
    stream_of, given = assign_streams(g, branches, 1)
    assert sorted(given) == [0, 1]
    assert sorted(stream_of).count(1) == 2 and max(stream_of) == 1
    stream_of, given = assign_streams(g, branches, 0)
    assert given == [0, 0] and not any(stream_of)


def test_branches_that_do_not_overlap_share_a_stream():
    g = parse_onnx(zoo.resnet50(**zoo.SMALL["resnet50"]))
    branches = find_branches(g)
    # One per stage, the downsample shortcut beside the stage's first block.
    assert len(branches) == 4
    assert all("downsample" in g.nodes[i].name for b in branches for i in b.side)
    _, given = assign_streams(g, branches, 4)
    assert given == [1, 1, 1, 1]


def test_schedule_waits_signals_and_cross_stream_reads():
    g = _graph(BLOCK)
    [branch] = find_branches(g)
    stream_of, _ = assign_streams(g, [branch], 1)
    schedule = stream_schedule(g, stream_of)
    index = {n.outputs[0].name: i for i, n in enumerate(g.nodes)}
    d, s = schedule.layers[index["d"]], schedule.layers[index["s"]]
    # The shortcut reads only the graph input x: the fork at the run's start orders that.
    assert d.stream == 1 and d.waits == () and d.signal and d.foreign == (0,)
    # The join waits for the shortcut and keeps its result alive for the caller's stream.
    assert s.stream == 0 and s.waits == (index["d"],) and s.foreign == (1,)
    assert schedule.aux_streams == 1 and schedule.last_on_aux == (index["d"],)
    # Layers with nothing to do about streams carry no sync.
    assert schedule.layers[index["a2"]] is None and schedule.layers[index["y"]] is None
    assert stream_schedule(g, [0] * len(g.nodes)) is None


def test_a_stream_waits_once_for_what_stream_order_already_gives():
    g = _graph(TOWERS)
    stream_of, _ = assign_streams(g, find_branches(g), 4)
    schedule = stream_schedule(g, stream_of)
    index = {n.outputs[0].name: i for i, n in enumerate(g.nodes)}
    b1, b2 = schedule.layers[index["b1"]], schedule.layers[index["b2"]]
    assert b1.waits == (index["p"],) and schedule.layers[index["p"]].signal
    assert b2 is None or not b2.waits  # same stream as b1: in order already
    concat = schedule.layers[index["y"]]
    assert sorted(concat.waits) == sorted([index["b2"], index["c2"]]) and concat.foreign == (1, 2)


def test_engine_layers_carry_their_stream_through_the_file(tmp_path, capsys):
    # Level 0: the elementwise chain stays three layers (fusion would make it one).
    plan = Builder(BuilderConfig(optimization_level=0)).build(_graph(BLOCK))
    assert all(layer["stream"] == 0 for layer in plan.layers)
    assert "streams" not in plan.build_info  # CPU builds put nothing on streams
    [branch] = find_branches(plan.graph)
    forced = copy.deepcopy(plan)
    for i in branch.side:
        forced.graph.nodes[i].meta["stream"] = 1
    path = tmp_path / "block.plan"
    forced.save(str(path))
    engine = Runtime("cpu").load(str(path))
    assert [layer["stream"] for layer in engine.layers] == [layer["stream"] for layer in forced.layers]
    assert engine.executor.schedule is not None and engine.executor.schedule.aux_streams == 1
    # On the CPU every layer runs in order; the results are the plain engine's.
    x = np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32)
    plain = Runtime("cpu").load(plan).create_execution_context()
    np.testing.assert_array_equal(engine.create_execution_context().execute({"x": x})["y"],
                                  plain.execute({"x": x})["y"])
    # `kiln inspect` gives the stream column only to engines with layers on auxiliary streams.
    capsys.readouterr()
    assert kiln_main(["inspect", str(path)]) == 0
    assert "┃ stream ┃" in capsys.readouterr().out
    plain_path = tmp_path / "plain.plan"
    plan.save(str(plain_path))
    assert kiln_main(["inspect", str(plain_path)]) == 0
    assert "┃ stream ┃" not in capsys.readouterr().out


@pytest.mark.parametrize("bad", ["1", -1, 1.5, True, "abc"])
def test_an_engine_with_a_bad_stream_is_refused(bad, tmp_path, capsys):
    plan = copy.deepcopy(Builder(BuilderConfig()).build(_graph(BLOCK)))
    plan.graph.nodes[0].meta["stream"] = bad
    with pytest.raises(EngineFormatError, match=f"'{plan.graph.nodes[0].name}' has stream"):
        Runtime("cpu").load(plan)
    # `kiln inspect` still shows such an engine (with the value as stored), without an internal error.
    path = tmp_path / "bad.plan"
    plan.save(str(path))
    assert kiln_main(["inspect", str(path)]) == 0
    assert "internal error" not in capsys.readouterr().err


def test_max_aux_streams_flag_and_config(tmp_path, capsys):
    with pytest.raises(ConfigError, match="max_aux_streams"):
        BuilderConfig(max_aux_streams=-1)
    model = tmp_path / "block.onnx"
    onnx.save(onnx.parser.parse_model(BLOCK), str(model))
    for flag in ("--maxAuxStreams=-1", "--max-aux-streams=x"):
        assert kiln_main(["build", str(model), "-o", str(tmp_path / "b.plan"), flag]) != 0
        assert "aux-streams" in capsys.readouterr().err.lower().replace("auxstreams", "aux-streams")
    assert kiln_main(["build", str(model), "-o", str(tmp_path / "b.plan"), "--maxAuxStreams=2"]) == 0
    assert Runtime("cpu").load(str(tmp_path / "b.plan")).plan.build_config["max_aux_streams"] == 2


def test_branch_dataclass_join_is_the_last_of_the_region():
    assert Branch(side=(3,), region=(1, 2, 3, 4)).join == 4


def test_exec_takes_max_aux_streams_and_warns_it_is_ignored_on_load(tmp_path, capsys):
    model = tmp_path / "block.onnx"
    onnx.save(onnx.parser.parse_model(BLOCK), str(model))
    plan = tmp_path / "b.plan"
    assert kiln_main(["exec", f"--onnx={model}", f"--saveEngine={plan}", "--maxAuxStreams=1", "--iterations=1",
                      "--duration=0", "--warmUp=0"]) == 0
    assert Runtime("cpu").load(str(plan)).plan.build_config["max_aux_streams"] == 1
    capsys.readouterr()
    assert kiln_main(["exec", f"--loadEngine={plan}", "--maxAuxStreams=1", "--iterations=1", "--duration=0",
                      "--warmUp=0"]) == 0
    assert "--maxAuxStreams" in capsys.readouterr().out
