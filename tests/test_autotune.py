"""The auto-tuner and the timing cache (tensorkiln/tactics/autotune.py, timing_cache.py).

Test tactics register on the CPU backend in a copy of the (global) registry that the
`registry` fixture puts back afterwards.
"""

from __future__ import annotations

import dataclasses
import io
import json
import time
import warnings
from typing import Any, Callable

import numpy as np
import onnx.parser
from onnx import numpy_helper
import pytest
import torch

import tensorkiln.tactics.autotune as autotune
from tensorkiln import Builder, BuilderConfig, OptimizationProfile, Runtime
from tensorkiln.cli.build import parse_mem_pool_size
from tensorkiln.cli.main import main
from tensorkiln.cli.report import Log
from tensorkiln.cli.usage import UsageError
from tensorkiln.errors import ConfigError, EngineFormatError, ShapeError
from tensorkiln.frontends.onnx import parse_onnx
from tensorkiln.ir import Node
from tensorkiln.tactics import Tactic, register_tactic
from tensorkiln.tactics import registry as tactic_registry
from tensorkiln.tactics.autotune import (TuningOptions, parse_tactic_sources, random_feeds, timing_environment,
                                         tune_graph)
from tensorkiln.tactics.select import TacticChoice, select_tactic
from tensorkiln.tactics.timing_cache import CacheEntry, TimingCache, key_digest, layer_key

SLOW_SECONDS = 0.005


@pytest.fixture
def registry(monkeypatch):
    """A private copy of the tactic registry: tactics registered in the test are gone after it."""
    monkeypatch.setattr(tactic_registry, "_EXTRA", {k: list(v) for k, v in tactic_registry._EXTRA.items()})
    return register_tactic


@pytest.fixture
def timer_calls(monkeypatch):
    """Counts the candidate timings (calls of autotune.measure), by tactic-free count."""
    calls = []
    real = autotune.measure

    def counting(call, device, avg_timing, measurements):
        calls.append((avg_timing, measurements))
        return real(call, device, avg_timing, measurements)

    monkeypatch.setattr(autotune, "measure", counting)
    return calls


def _relu(ctx, inputs, attrs):
    return torch.relu(inputs[0])


def _slow_relu(ctx, inputs, attrs):
    time.sleep(SLOW_SECONDS)
    return torch.relu(inputs[0])


def _relu_tactics(register: Callable[[Tactic], Tactic], **fast_fields: Any) -> None:
    register(Tactic("slow", "Relu", "cpu", _slow_relu))
    register(Tactic("fast", "Relu", "cpu", _relu, **fast_fields))


def _model(text: str):
    return parse_onnx(onnx.parser.parse_model(text))


RELU = """<ir_version: 8, opset_import: ["" : 17]>
g (float[2,64] x) => (float[2,64] y) { y = Relu(x) }"""

TWO_RELUS = """<ir_version: 8, opset_import: ["" : 17]>
g (float[2,64] x) => (float[2,64] y) { h = Relu(x) y = Relu(h) }"""


def _build(text: str, **config: Any):
    config.setdefault("optimization_level", 0)
    config.setdefault("avg_timing", 1)
    return Builder(BuilderConfig(**config)).build(_model(text))


# ---- choosing the fastest --------------------------------------------------------------------------

def test_fastest_candidate_wins_and_is_recorded_in_the_plan(registry, timer_calls, tmp_path):
    _relu_tactics(registry)
    plan = _build(RELU)
    node = plan.graph.nodes[0]
    times = node.meta["tactic_times_ms"]
    assert set(times) == {"reference", "slow", "fast"}
    assert times["slow"] >= SLOW_SECONDS * 1e3
    assert node.meta["tactic"] != "slow"
    assert node.meta["tactic_time_ms"] == min(times.values()) == times[node.meta["tactic"]]
    assert len(timer_calls) == 3 and all(c == (1, 3) for c in timer_calls)
    summary = plan.build_info["tactics"]
    assert summary["timed_layers"] == 1 and summary["candidates_timed"] == 3 and summary["tuned_at"] == [{}]
    # The choice survives the engine file and the runtime runs it.
    path = tmp_path / "relu.plan"
    plan.save(str(path))
    engine = Runtime().load(str(path))
    assert engine.layers[0]["tactic"] == node.meta["tactic"]
    assert engine.plan.graph.nodes[0].meta["tactic_times_ms"] == times
    x = np.linspace(-1, 1, 128, dtype=np.float32).reshape(2, 64)
    np.testing.assert_array_equal(engine.create_execution_context().execute({"x": x})["y"], np.maximum(x, 0))


def test_slow_reference_loses_to_a_registered_tactic(registry):
    # The reference is the only slow one here: the registered tactic must win.
    registry(Tactic("fast", "Relu", "cpu", _relu))
    registry(Tactic("slow_ref", "Relu", "cpu", _slow_relu))
    graph = _model(RELU)
    choices = {n: TacticChoice("slow_ref", (("slow_ref", None), ("fast", None))) for n in graph.walk()}
    summary = tune_graph(graph, torch.device("cpu"), choices, [{}], TuningOptions(avg_timing=1), None, {})
    assert graph.nodes[0].meta["tactic"] == "fast"
    assert summary.chosen == {"fast": 1}


def _choice_without_reference(node: Node) -> TacticChoice:
    choice = select_tactic(node, "cpu")
    return TacticChoice(choice.tactic, tuple((name, "test: left out" if name == "reference" else reason)
                                             for name, reason in choice.considered))


def test_avg_and_min_timing_set_the_measurements(registry, timer_calls):
    _relu_tactics(registry)
    _build(RELU, avg_timing=2, min_timing=5)
    assert timer_calls and all(c == (2, 5) for c in timer_calls)
    with pytest.raises(ConfigError, match="avgTiming"):
        BuilderConfig(avg_timing=0)
    with pytest.raises(ConfigError, match="minTiming"):
        BuilderConfig(min_timing=0)


def test_reference_only_layers_are_not_timed(timer_calls):
    plan = _build("""<ir_version: 8, opset_import: ["" : 17]>
    g (float[2,8] x) => (float[2,8] y) { h = Sigmoid(x) y = Add(h, x) }""")
    assert timer_calls == []
    assert all(n.meta["tactic"] == "reference" and "tactic_time_ms" not in n.meta for n in plan.graph.nodes)
    assert plan.build_info["tactics"]["layers_with_choice"] == 0


def test_failing_and_wrong_shaped_candidates_are_left_out(registry):
    def broken(ctx, inputs, attrs):
        raise RuntimeError("no kernel for this shape")

    def wrong_shape(ctx, inputs, attrs):
        return torch.relu(inputs[0]).reshape(-1)

    registry(Tactic("broken", "Relu", "cpu", broken))
    registry(Tactic("wrong_shape", "Relu", "cpu", wrong_shape))
    plan = _build(RELU)
    node = plan.graph.nodes[0]
    assert node.meta["tactic"] == "reference"
    assert "no kernel for this shape" in node.meta["tactic_rejected"]["broken"]
    assert "differ from the reference" in node.meta["tactic_rejected"]["wrong_shape"]
    assert set(node.meta["tactic_times_ms"]) == {"reference"}


def test_reference_failing_on_random_inputs_stops_tuning_with_defaults(registry, timer_calls):
    # Reshape to a shape read from an input: random values cannot fit, so tuning stops there.
    _relu_tactics(registry)
    plan = _build("""<ir_version: 8, opset_import: ["" : 17]>
    g (float[2,64] x, int64[2] s) => (float[N,M] y) { r = Reshape(x, s) y = Relu(r) }""")
    summary = plan.build_info["tactics"]
    assert summary["stopped"] and "Reshape" in summary["stopped"] and "default tactic" in summary["stopped"]
    assert [n.meta["tactic"] for n in plan.graph.nodes] == ["reference", "reference"]


# ---- layouts and shapes -----------------------------------------------------------------------------

def test_downstream_candidates_are_timed_on_the_upstream_winners_layout(registry):
    seen: list[str] = []

    def nhwc_relu(ctx, inputs, attrs):
        return torch.relu(inputs[0]).contiguous(memory_format=torch.channels_last)

    def spy_sigmoid(ctx, inputs, attrs):
        x = inputs[0]
        seen.append("channels_last" if not x.is_contiguous() and
                    x.is_contiguous(memory_format=torch.channels_last) else "contiguous")
        return torch.sigmoid(x)

    registry(Tactic("nhwc", "Relu", "cpu", nhwc_relu))
    registry(Tactic("slow", "Relu", "cpu", _slow_relu))
    registry(Tactic("spy", "Sigmoid", "cpu", spy_sigmoid))
    graph = _model("""<ir_version: 8, opset_import: ["" : 17]>
    g (float[1,4,6,6] x) => (float[1,4,6,6] y) { h = Relu(x) y = Sigmoid(h) }""")
    choices = {n: select_tactic(n, "cpu") for n in graph.walk()}
    relu = graph.nodes[0]
    choices[relu] = _choice_without_reference(relu)  # nhwc vs slow: nhwc wins
    cache = TimingCache()
    tune_graph(graph, torch.device("cpu"), choices, [{}], TuningOptions(avg_timing=1), cache,
               {"device": "test"})
    assert relu.meta["tactic"] == "nhwc"
    assert seen and set(seen) == {"channels_last"}
    keys = [record["key"] for record in cache._entries.values()]
    sigmoid_key = next(k for k in keys if k["op"] == "Sigmoid")
    assert sigmoid_key["inputs"] == [["float32", [1, 4, 6, 6], "channels_last"]]


def test_tuned_at_each_profiles_opt_shape(registry):
    shapes: list[tuple[int, ...]] = []

    def spy(ctx, inputs, attrs):
        shapes.append(tuple(inputs[0].shape))
        return torch.relu(inputs[0])

    registry(Tactic("spy", "Relu", "cpu", spy))
    text = """<ir_version: 8, opset_import: ["" : 17]>
    g (float[N,8] x) => (float[N,8] y) { y = Relu(x) }"""
    profiles = (OptimizationProfile({"x": ((1, 8), (4, 8), (16, 8))}),
                OptimizationProfile({"x": ((16, 8), (32, 8), (64, 8))}))
    plan = _build(text, profiles=profiles)
    assert set(shapes) == {(4, 8), (32, 8)}
    assert plan.build_info["tactics"]["tuned_at"] == [{"x": [4, 8]}, {"x": [32, 8]}]
    assert set(plan.graph.nodes[0].meta["tactic_times_ms"]) == {"reference", "spy"}


def _shape_dependent_relus(registry, monkeypatch, backend: str = "cpu") -> list[tuple[str, int]]:
    """Tactics "small" (fastest below 16 rows) and "large" (fastest from 16), with a measure that
    times them so; the reference is slowest. Returns the (tactic, rows) of every call."""
    calls: list[tuple[str, int]] = []

    def tactic(name):
        def run(ctx, inputs, attrs):
            calls.append((name, inputs[0].shape[0]))
            return torch.relu(inputs[0])
        return run

    registry(Tactic("small", "Relu", backend, tactic("small")))
    registry(Tactic("large", "Relu", backend, tactic("large")))

    def synthetic_measure(call, device, avg_timing, measurements, graphs=False):
        before = len(calls)
        (call[0] if isinstance(call, (list, tuple)) else call)()
        if len(calls) == before:
            return 1.0  # the reference
        name, rows = calls[-1]
        return 0.1 if (name == "small") == (rows < 16) else 0.5

    monkeypatch.setattr(autotune, "measure", synthetic_measure)
    return calls


TWO_PROFILES = (OptimizationProfile({"x": ((1, 8), (2, 8), (8, 8))}),
                OptimizationProfile({"x": ((16, 8), (64, 8), (64, 8))}))


def test_each_profile_runs_the_tactic_tuned_at_its_opt_shape(registry, monkeypatch, capsys, tmp_path):
    """As TensorRT does, each optimization profile keeps its own fastest tactic; a call runs with
    the tactics of the profile holding its shapes, eagerly and through a saved engine."""
    calls = _shape_dependent_relus(registry, monkeypatch)
    plan = _build("""<ir_version: 8, opset_import: ["" : 17]>
    g (float[N,8] x) => (float[N,8] y) { h = Relu(x) y = Relu(h) }""", profiles=TWO_PROFILES)
    for node in plan.graph.nodes:
        assert node.meta["tactic"] == "small" and node.meta["profile_tactics"] == ["small", "large"]
        assert [t["large"] < t["small"] for t in node.meta["profile_tactic_times_ms"]] == [False, True]
    assert [layer["profile_tactics"] for layer in plan.layers] == [["small", "large"]] * 2
    assert plan.build_info["tactics"]["tactics"] == {"large": 2, "small": 2}
    for engine in (Runtime().load(plan), Runtime().load(plan.serialize())):
        ctx = engine.create_execution_context()
        for rows, tactic in ((2, "small"), (64, "large"), (8, "small"), (16, "large")):
            calls.clear()
            x = torch.randn(rows, 8, generator=torch.Generator().manual_seed(rows))
            assert torch.equal(ctx.execute({"x": x})["y"], torch.relu(x))
            assert calls == [(tactic, rows)] * 2
    path = tmp_path / "two_profiles.plan"
    path.write_bytes(plan.serialize())
    assert main(["inspect", str(path)]) == 0
    assert "0: small; 1: large" in capsys.readouterr().out.replace("\n", " ")


@pytest.mark.cuda
def test_each_profile_captures_its_own_tactics_in_cuda_graphs(registry, monkeypatch):
    calls = _shape_dependent_relus(registry, monkeypatch, "cuda")
    plan = _build("""<ir_version: 8, opset_import: ["" : 17]>
    g (float[N,8] x) => (float[N,8] y) { h = Relu(x) y = Relu(h) }""", profiles=TWO_PROFILES, device="cuda")
    assert [node.meta["profile_tactics"] for node in plan.graph.nodes] == [["small", "large"]] * 2
    ctx = Runtime("cuda").load(plan).create_execution_context()
    for rows, tactic in ((2, "small"), (64, "large")):
        calls.clear()
        for seed in range(3):  # eager warm-up, capture, replay
            x = torch.randn(rows, 8, generator=torch.Generator().manual_seed(seed)).cuda()
            assert torch.equal(ctx.execute({"x": x})["y"], torch.relu(x))
        assert calls and set(calls) == {(tactic, rows)}, calls
    assert len(ctx._graphs.captured_signatures) == 2


def test_profiles_tuned_alike_keep_one_tactic_list(registry, monkeypatch):
    _shape_dependent_relus(registry, monkeypatch)
    same = (OptimizationProfile({"x": ((1, 8), (2, 8), (8, 8))}), OptimizationProfile({"x": ((9, 8), (12, 8), (15, 8))}))
    plan = _build(RELU.replace("float[2,64] x) => (float[2,64] y", "float[N,8] x) => (float[N,8] y"), profiles=same)
    assert plan.graph.nodes[0].meta["tactic"] == "small" and "profile_tactics" not in plan.graph.nodes[0].meta
    assert Runtime().load(plan)._profile_executors == []


def test_inputs_must_fit_one_profile_together():
    text = """<ir_version: 8, opset_import: ["" : 17]>
    g (float[N,8] x, float[M,8] z) => (float[N,8] y, float[M,8] w) { y = Relu(x) w = Relu(z) }"""
    profiles = (OptimizationProfile({"x": ((1, 8), (2, 8), (4, 8)), "z": ((1, 8), (2, 8), (4, 8))}),
                OptimizationProfile({"x": ((8, 8), (8, 8), (16, 8)), "z": ((8, 8), (8, 8), (16, 8))}))
    ctx = Runtime().load(_build(text, profiles=profiles)).create_execution_context()
    ctx.execute({"x": np.ones((2, 8), np.float32), "z": np.ones((3, 8), np.float32)})
    with pytest.raises(ShapeError, match="not all inside one optimization profile"):
        ctx.execute({"x": np.ones((2, 8), np.float32), "z": np.ones((16, 8), np.float32)})


def test_profile_tactics_that_do_not_match_the_profiles_are_refused(registry, monkeypatch):
    _shape_dependent_relus(registry, monkeypatch)
    plan = _build("""<ir_version: 8, opset_import: ["" : 17]>
    g (float[N,8] x) => (float[N,8] y) { y = Relu(x) }""", profiles=TWO_PROFILES)
    plan.graph.nodes[0].meta["profile_tactics"] = ["small"]
    with pytest.raises(EngineFormatError, match="profile tactics"):
        Runtime().load(plan)
    plan.graph.nodes[0].meta["profile_tactics"] = ["large", "large"]  # profile 0's is the layer's own tactic
    with pytest.raises(EngineFormatError, match="profile tactics"):
        Runtime().load(plan)
    plan.graph.nodes[0].meta["profile_tactics"] = ["small", "nonexistent"]
    with pytest.raises(EngineFormatError, match="nonexistent"):
        Runtime().load(plan)


def test_dynamic_inputs_without_a_profile_keep_the_default(registry, timer_calls):
    _relu_tactics(registry)
    plan = _build("""<ir_version: 8, opset_import: ["" : 17]>
    g (float[N,8] x) => (float[N,8] y) { y = Relu(x) }""")
    assert timer_calls == []
    assert plan.graph.nodes[0].meta["tactic"] == "reference"
    assert "'x'" in plan.build_info["tactics"]["skipped"] and "profile" in plan.build_info["tactics"]["skipped"]


def test_random_index_inputs_stay_inside_the_gathered_axis():
    model = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
    g (int64[64] ids, float[5] f) => (float[64] y) { y = Gather(table, ids) }""")
    model.graph.initializer.append(numpy_helper.from_array(np.arange(3, dtype=np.float32), "table"))
    graph = parse_onnx(model)
    ids, f = random_feeds(graph, {}, torch.device("cpu"), seed=0)
    assert ids.dtype == torch.int64 and 0 <= int(ids.min()) and int(ids.max()) < 3
    assert f.dtype == torch.float32 and f.shape == (5,)
    again = random_feeds(graph, {}, torch.device("cpu"), seed=0)
    assert torch.equal(again[1], f)  # seeded


def test_subgraph_layers_keep_their_default_and_still_run(registry):
    _relu_tactics(registry)
    plan = _build("""<ir_version: 8, opset_import: ["" : 17]>
    g (float[4] x, bool c) => (float[4] y) {
        h = Relu(x)
        y = If(c) <then_branch = then_g () => (float[4] t) { t = Relu(h) },
                   else_branch = else_g () => (float[4] e) { e = Neg(h) }>
    }""")
    if_node = next(n for n in plan.graph.nodes if n.op_type == "If")
    assert all(n.meta["tactic"] == "reference" for g in if_node.subgraphs() for n in g.nodes)
    assert plan.build_info["tactics"]["stopped"] is None
    assert plan.build_info["tactics"]["timed_layers"] == 1


# ---- timing cache ---------------------------------------------------------------------------------

def test_warm_cache_skips_timing(registry, timer_calls, tmp_path):
    _relu_tactics(registry)
    path = tmp_path / "timing.cache"
    first = _build(TWO_RELUS, timing_cache_file=str(path))
    timed = len(timer_calls)
    # The two Relus are the same layer signature: the second is answered by the first's timing.
    assert timed == 3 and first.build_info["tactics"]["cached_layers"] == 1
    document = json.loads(path.read_text())
    assert document["format"] == "tensorkiln-timing-cache" and len(document["entries"]) == 1
    entry = next(iter(document["entries"].values()))
    assert entry["key"]["op"] == "Relu" and entry["key"]["inputs"] == [["float32", [2, 64], "contiguous"]]
    assert set(entry["times_ms"]) == {"reference", "slow", "fast"}
    assert entry["key"]["environment"]["tensorkiln"] and entry["key"]["environment"]["torch"] == torch.__version__

    second = _build(TWO_RELUS, timing_cache_file=str(path))
    assert len(timer_calls) == timed  # nothing timed
    info = second.build_info["tactics"]
    assert info["timed_layers"] == 0 and info["cached_layers"] == 2
    assert info["timing_cache"]["hits"] == 2 and info["timing_cache"]["entries_added"] == 0
    assert [n.meta["tactic"] for n in second.graph.nodes] == [n.meta["tactic"] for n in first.graph.nodes]


def test_no_builder_cache_times_every_layer_and_writes_nothing(registry, timer_calls, tmp_path):
    _relu_tactics(registry)
    path = tmp_path / "timing.cache"
    plan = _build(TWO_RELUS, timing_cache_file=str(path), builder_cache=False)
    assert len(timer_calls) == 6 and plan.build_info["tactics"]["timed_layers"] == 2
    assert not path.exists() and "timing_cache" not in plan.build_info["tactics"]


def test_cache_key_changes_with_shape_dtype_layout_attrs_candidates_and_environment():
    graph = _model("""<ir_version: 8, opset_import: ["" : 17]>
    g (float[1,4,6,6] x) => (float[1,4,6,6] y) { y = Softmax <axis = 1> (x) }""")
    node = graph.nodes[0]
    env = {"device": "gpu-a", "tensorkiln": "0.1.0", "torch": "2.11"}
    x = torch.zeros(1, 4, 6, 6)
    base = key_digest(layer_key(node, [x], ["reference", "triton"], env))
    assert base == key_digest(layer_key(node, [torch.ones(1, 4, 6, 6)], ["triton", "reference"], dict(env)))
    variants = [
        layer_key(node, [torch.zeros(2, 4, 6, 6)], ["reference", "triton"], env),
        layer_key(node, [x.half()], ["reference", "triton"], env),
        layer_key(node, [x.contiguous(memory_format=torch.channels_last)], ["reference", "triton"], env),
        layer_key(node, [x], ["reference"], env),
        layer_key(node, [x], ["reference", "triton"], {**env, "device": "gpu-b"}),
        layer_key(node, [x], ["reference", "triton"], {**env, "tensorkiln": "0.2.0"}),
        layer_key(node, [x], ["reference", "triton"], {**env, "torch": "2.13"}),
        layer_key(dataclasses.replace(node, attrs={"axis": 2}), [x], ["reference", "triton"], env),
        layer_key(dataclasses.replace(node, op_type="LogSoftmax"), [x], ["reference", "triton"], env),
    ]
    digests = {key_digest(k) for k in variants}
    assert base not in digests and len(digests) == len(variants)


def test_timing_environment_names_device_and_versions():
    env = timing_environment(torch.device("cpu"), "9.9.9", tf32=True)
    assert env["device"] == "cpu" and env["tensorkiln"] == "9.9.9" and env["torch"] == torch.__version__
    assert env["tf32"] is True and env["threads"] == torch.get_num_threads()


@pytest.mark.parametrize("content, why", [
    ("{not json", "is not valid JSON"),
    ('{"format": "something-else", "version": 1, "entries": {}}', "is not a tensorkiln timing cache"),
    ('{"format": "tensorkiln-timing-cache", "version": 99, "entries": {}}', "version 99"),
    ('{"format": "tensorkiln-timing-cache", "version": 1, "entries": {"k": {"tactic": 3}}}', "malformed entry 'k'"),
])
def test_corrupt_cache_file_is_a_config_error_naming_it(tmp_path, content, why):
    path = tmp_path / "broken.cache"
    path.write_text(content)
    with pytest.raises(ConfigError, match=why) as err:
        TimingCache.load(path)
    assert str(path) in str(err.value) and "--noBuilderCache" in str(err.value)
    with pytest.raises(ConfigError, match="broken.cache"):
        _build(RELU, timing_cache_file=str(path))
    assert path.read_text() == content  # left as it was
    _build(RELU, timing_cache_file=str(path), builder_cache=False)  # no cache: builds


def test_cache_counts_a_layer_whose_second_key_is_tried_once():
    cache = TimingCache()
    cache.store({"k": 1}, CacheEntry("a", {"a": 1.0}))
    assert cache.lookup({"k": 2}) is None and cache.lookup({"k": 3}, retry=True) is None
    assert (cache.hits, cache.misses) == (0, 1)
    assert cache.lookup({"k": 2}) is None and cache.lookup({"k": 1}, retry=True) is not None
    assert (cache.hits, cache.misses) == (1, 1)


def test_cache_save_is_atomic_and_merges_with_other_writers(tmp_path):
    path = tmp_path / "sub" / "t.cache"
    a, b = TimingCache.load(path), TimingCache.load(path)
    a.store({"op": "A"}, CacheEntry("x", {"x": 1.0}))
    a.save()
    b.store({"op": "B"}, CacheEntry("y", {"y": 2.0, "z": 3.0}, {"w": "failed"}))
    b.save()
    merged = TimingCache.load(path)
    assert len(merged) == 2
    assert merged.lookup({"op": "B"}) == CacheEntry("y", {"y": 2.0, "z": 3.0}, {"w": "failed"})
    assert merged.lookup({"op": "C"}) is None and (merged.hits, merged.misses) == (1, 1)
    assert [p.name for p in path.parent.iterdir()] == ["t.cache"]  # no temporary file left


# ---- tactic sources and workspace -----------------------------------------------------------------

def test_parse_tactic_sources():
    assert parse_tactic_sources("-CUDNN,+CUBLAS,-TRITON,-CUBLAS_LT") == ("cublaslt", "cudnn", "triton")
    assert parse_tactic_sources("-CUDNN,+CUDNN") == ()
    assert parse_tactic_sources("-EDGE_MASK_CONVOLUTIONS,-JIT_CONVOLUTIONS") == (
        "edgemaskconvolutions", "jitconvolutions")
    with pytest.raises(ConfigError, match="unknown tactic source 'FOO'"):
        parse_tactic_sources("-FOO")
    with pytest.raises(ConfigError, match="must be \\+NAME or -NAME"):
        parse_tactic_sources("CUDNN")


def test_registered_sources_are_known(registry):
    registry(Tactic("mine", "Relu", "cpu", _relu, source="my_lib"))
    assert parse_tactic_sources("-MY_LIB") == ("mylib",)


def test_disabled_tactic_source_filters_candidates(registry, timer_calls):
    _relu_tactics(registry, source="triton")
    plan = _build(RELU, disabled_tactic_sources=("TRITON",))
    node = plan.graph.nodes[0]
    assert set(node.meta["tactic_times_ms"]) == {"reference", "slow"}
    assert "TRITON is disabled" in node.meta["tactic_rejected"]["fast"]
    assert list(plan.build_config["disabled_tactic_sources"]) == ["triton"]


def test_reference_is_never_filtered_by_sources(registry, timer_calls):
    registry(Tactic("fast", "Relu", "cpu", _relu, source="torch"))
    plan = _build(RELU, disabled_tactic_sources=("torch",))
    assert plan.graph.nodes[0].meta["tactic"] == "reference" and timer_calls == []


@dataclasses.dataclass(frozen=True)
class _WorkspaceTactic(Tactic):
    workspace_bytes: Any = 0


def test_workspace_limit_excludes_a_tactic(registry):
    registry(_WorkspaceTactic("big", "Relu", "cpu", _relu, workspace_bytes=64 << 20))
    registry(_WorkspaceTactic("sized", "Relu", "cpu", _relu,
                              workspace_bytes=lambda node, inputs: inputs[0].numel() * 4))  # 512 bytes here
    plan = _build(RELU, workspace_bytes=1 << 20)
    node = plan.graph.nodes[0]
    assert set(node.meta["tactic_times_ms"]) == {"reference", "sized"}
    assert "needs 67108864 bytes of workspace; the limit is 1048576" in node.meta["tactic_rejected"]["big"]
    assert set(_build(RELU).graph.nodes[0].meta["tactic_times_ms"]) == {"reference", "sized", "big"}
    small = _build(RELU, workspace_bytes=100).graph.nodes[0]
    assert set(small.meta["tactic_times_ms"]) == {"reference"}


def test_mem_pool_size_flag():
    log = Log(io.StringIO())
    assert parse_mem_pool_size(["workspace:1024"], "--memPoolSize", log) == 1024 << 20
    assert parse_mem_pool_size(["workspace:1G"], "--memPoolSize", log) == 1 << 30
    assert parse_mem_pool_size(["workspace:512K"], "--memPoolSize", log) == 512 << 10
    assert parse_mem_pool_size(["workspace:0.5M,dlaSRAM:1"], "--memPoolSize", log) == 1 << 19
    assert parse_mem_pool_size(None, "--memPoolSize", log) is None
    with pytest.raises(UsageError, match="unknown memory pool 'gpu'"):
        parse_mem_pool_size(["gpu:1"], "--memPoolSize", log)
    with pytest.raises(UsageError, match="unknown suffix"):
        parse_mem_pool_size(["workspace:1T"], "--memPoolSize", log)
    with pytest.raises(UsageError, match="not a number"):
        parse_mem_pool_size(["workspace:lots"], "--memPoolSize", log)


# ---- command line ---------------------------------------------------------------------------------

def _kiln(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(map(str, argv)), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def _onnx_file(tmp_path, text: str = RELU):
    path = tmp_path / "m.onnx"
    onnx.save(onnx.parser.parse_model(text), str(path))
    return path


def test_kiln_build_tuning_flags(registry, tmp_path):
    _relu_tactics(registry, source="triton")
    model, cache = _onnx_file(tmp_path), tmp_path / "t.cache"
    code, out, err = _kiln("build", model, "-o", tmp_path / "m.plan", "--timing-cache", cache, "--avg-timing", "1",
                           "--tactic-sources=-TRITON", "--mem-pool-size", "workspace:64M")
    assert code == 0, err
    assert cache.exists() and "1 timed" in out and "Timing cache" in out
    from tensorkiln.engine import load_plan
    plan = load_plan(str(tmp_path / "m.plan"))
    assert plan.build_config["workspace_bytes"] == 64 << 20 and plan.build_config["avg_timing"] == 1
    assert "fast" not in plan.graph.nodes[0].meta["tactic_times_ms"]
    code, out, err = _kiln("build", model, "-o", tmp_path / "m.plan", "--tactic-sources=-NOPE")
    assert code != 0 and "unknown tactic source 'NOPE'" in err + out
    code, out, err = _kiln("build", model, "-o", tmp_path / "m.plan", "--avg-timing", "0")
    assert code != 0 and "--avg-timing must be >= 1" in err + out


def test_kiln_exec_trtexec_tuning_flags(registry, tmp_path):
    _relu_tactics(registry)
    model, cache = _onnx_file(tmp_path), tmp_path / "t.cache"
    args = ("exec", f"--onnx={model}", "--buildOnly", "--backend=cpu", "--avgTiming=1", "--minTiming=2",
            f"--timingCacheFile={cache}", "--tacticSources=-CUDNN,+CUBLAS", "--memPoolSize=workspace:1024")
    code, out, err = _kiln(*args)
    assert code == 0, err
    assert cache.exists() and "1 timed" in out
    code, out, err = _kiln(*args)
    assert code == 0 and "1 from the timing cache" in out and "1 hit(s)" in out
    code, out, err = _kiln("exec", f"--onnx={model}", "--buildOnly", "--backend=cpu", "--noBuilderCache",
                           f"--timingCacheFile={cache}")
    assert code == 0 and "neither read nor written" in out + err


# ---- GPU ------------------------------------------------------------------------------------------

@pytest.mark.cuda
def test_cuda_tuning_picks_among_real_candidates_and_stays_accurate(tmp_path):
    from tensorkiln.testing import zoo
    from tensorkiln.testing.tolerances import assert_close

    model = zoo.build("resnet50", small=True)
    feeds = zoo.example_inputs(model, batch=2)
    graph = parse_onnx(model)
    shapes = {k: v.shape for k, v in feeds.items()}
    cache = tmp_path / "cuda.cache"
    config = BuilderConfig(device="cuda", profiles=(OptimizationProfile.fixed(shapes),),
                           timing_cache_file=str(cache))
    plan = Builder(config).build(graph)
    info = plan.build_info["tactics"]
    assert info["layers_with_choice"] > 0 and info["timed_layers"] > 0 and info["stopped"] is None
    assert info["timing"] == "cuda_graph"
    tuned = [n for n in plan.graph.nodes if "tactic_times_ms" in n.meta]
    assert all(len(n.meta["tactic_times_ms"]) >= 2 for n in tuned)
    got = Runtime("cuda").load(plan).create_execution_context().execute(feeds)
    reference = Builder(config.with_changes(device="cpu", timing_cache_file=None)).build(graph)
    expected = Runtime("cpu").load(reference).create_execution_context().execute(feeds)
    for name in expected:
        assert_close(got[name], expected[name], "tf32", what=name)
    again = Builder(config).build(graph).build_info["tactics"]
    assert again["timed_layers"] == 0 and again["cached_layers"] == info["timed_layers"] + info["cached_layers"]


MATMUL_FP32 = """<ir_version: 8, opset_import: ["" : 17]>
g (float[256,512] x) => (float[256,512] y) <float[512,512] w> { y = MatMul (x, w) }"""


def _matmul_fp32():
    model = onnx.parser.parse_model(MATMUL_FP32)
    w = np.random.default_rng(0).standard_normal((512, 512)).astype(np.float32)
    model.graph.initializer.append(numpy_helper.from_array(w, "w"))
    return parse_onnx(model)


@pytest.mark.cuda
@pytest.mark.parametrize("tf32", [True, False])
def test_cuda_candidates_are_timed_in_the_engines_tf32_math(monkeypatch, tf32):
    """TF32 and full-FP32 GEMMs are different kernels: the build times them under the engine's
    setting, whatever the process's torch flags say, and puts those flags back after."""
    from tensorkiln.tactics.tf32 import tf32_state

    seen = []
    real = autotune.measure

    def recording(*args, **kwargs):
        seen.append(tf32_state())
        return real(*args, **kwargs)

    monkeypatch.setattr(autotune, "measure", recording)
    torch.backends.cuda.matmul.allow_tf32 = not tf32
    torch.backends.cudnn.allow_tf32 = not tf32
    try:
        plan = Builder(BuilderConfig(device="cuda", tf32=tf32, optimization_level=0)).build(_matmul_fp32())
        assert tf32_state() == (not tf32, not tf32)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = True
    assert plan.build_info["tactics"]["timed_layers"] == 1
    assert seen and set(seen) == {(tf32, tf32)}, seen


@pytest.mark.cuda
def test_a_layer_that_cannot_be_captured_is_timed_eagerly_and_cached_as_eager(registry, monkeypatch, tmp_path):
    """The first candidate that cannot be captured turns graph timing off (the engine will run
    eagerly): the layer's candidates timed in graphs before it are timed again eagerly, and the
    cache keeps these times under an eager key, apart from graph-replay times."""
    def host_sync(ctx, inputs, attrs):
        float(inputs[0].sum().item())  # a device-to-host read: not allowed while capturing
        return torch.relu(inputs[0])

    registry(Tactic("host_sync", "Relu", "cuda", host_sync))
    modes = []
    real = autotune.measure

    def recording(call, device, avg_timing, measurements, graphs=False):
        modes.append(graphs)
        return real(call, device, avg_timing, measurements, graphs=graphs)

    monkeypatch.setattr(autotune, "measure", recording)
    cache = tmp_path / "cuda.cache"
    plan = _build(TWO_RELUS, device="cuda", timing_cache_file=str(cache))
    info = plan.build_info["tactics"]
    assert info["timing"].startswith("eager"), info["timing"]
    first_eager = modes.index(False)
    graph_timed = modes[:first_eager]
    # The reference (at least) timed in a graph, then host_sync's failed capture.
    assert len(graph_timed) >= 2 and all(graph_timed) and not any(modes[first_eager:])
    # Each candidate timed in a graph is timed again eagerly, and the second layer only eagerly.
    assert len(modes) - first_eager >= len(graph_timed) + 2, modes
    entries = json.loads(cache.read_text())["entries"].values()
    assert sorted(e["key"]["environment"]["timing"] for e in entries) == sorted([autotune.CAPTURE_FAILED, "eager"])
    # A warm rebuild times nothing: the eager entry says graph timing ends at the first layer.
    modes.clear()
    again = _build(TWO_RELUS, device="cuda", timing_cache_file=str(cache)).build_info["tactics"]
    assert again["timed_layers"] == 0 and again["cached_layers"] == 2 and modes == []
    assert again["timing_cache"]["hits"] == 2 and again["timing_cache"]["misses"] == 0
    assert again["timing"].startswith("eager") and "timing cache" in again["timing"]


@pytest.mark.cuda
def test_graph_timing_measures_kernels_and_refuses_uncapturable_calls():
    device = torch.device("cuda")
    x = torch.randn(4096, 4096, device=device)
    eager = autotune.measure(lambda: x @ x, device, avg_timing=4, measurements=3)
    graphed = autotune.measure(lambda: x @ x, device, avg_timing=4, measurements=3, graphs=True)
    # A 4096^3 matmul takes far longer than its launch: both timings see the same kernel.
    assert 0.5 < graphed / eager < 2.0
    with pytest.raises(autotune.CaptureFailed):
        autotune.measure(lambda: float(x[0, 0].item()), device, avg_timing=2, measurements=3, graphs=True)
    # The device is usable after the failed capture, and the caller's stream is current again.
    assert torch.cuda.current_stream() == torch.cuda.default_stream()
    assert torch.isfinite((x @ x).sum()).item()
    # torch leaves the device's random generator in capture mode after a failed capture (random
    # ops then raise "Offset increment outside graph capture"): the tuner puts it right.
    assert torch.randn(8, device=device).shape == (8,)
    assert torch.rand(8, device=device, generator=None).max() < 1


@pytest.mark.cuda
def test_graph_timing_of_a_call_that_launches_nothing_is_quiet_and_near_zero():
    # A view tactic captures an empty graph: no "The CUDA Graph is empty" warning in a user's build.
    device = torch.device("cuda")
    x = torch.randn(64, 64, device=device)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ms = autotune.measure(lambda: x.view(-1), device, avg_timing=4, measurements=3, graphs=True)
    assert 0.0 <= ms < 0.05


def test_cold_constant_copies_copy_only_the_weights_until_they_fill_twice_the_l2():
    m = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[4, 256] x) => (float[4, 512] y) { y = MatMul (x, w) }""")
    m.graph.initializer.append(numpy_helper.from_array(np.ones((256, 512), np.float32), "w"))
    node = parse_onnx(m).nodes[0]
    args = [torch.randn(4, 256), torch.ones(256, 512)]
    weight = 256 * 512 * 4
    sets = autotune.cold_constant_copies(node, args, l2_bytes=3 * weight)
    assert len(sets) == 6  # 6 copies of the weight: twice the "L2"
    assert all(s[0] is args[0] for s in sets)  # the activation is shared: as warm as in the engine
    pointers = {s[1].data_ptr() for s in sets}
    assert len(pointers) == 6 and args[1].data_ptr() not in pointers
    assert all(torch.equal(s[1], args[1]) for s in sets)
    # Weights too small for MAX_CONSTANT_COPIES copies to fill it, no L2, or no constant: timed as they are.
    assert autotune.cold_constant_copies(node, args, l2_bytes=autotune.MAX_CONSTANT_COPIES * weight) == []
    assert autotune.cold_constant_copies(node, args, l2_bytes=0) == []
    node.inputs[1].const = None
    assert autotune.cold_constant_copies(node, args, l2_bytes=3 * weight) == []


def test_measure_takes_several_calls_in_turn():
    seen: list[int] = []
    ms = autotune.measure([lambda: seen.append(0), lambda: seen.append(1), lambda: seen.append(2)],
                          torch.device("cpu"), avg_timing=2, measurements=3)
    assert ms >= 0
    # One warm-up call each, then max(avg_timing, 3) calls per measurement, in turn.
    assert seen == [0, 1, 2] + [0, 1, 2] * 3


def test_measure_on_the_cpu_takes_fewer_calls_when_one_is_long(monkeypatch):
    monkeypatch.setattr(autotune, "CPU_MEASUREMENT_MS", 20.0)
    slow: list[int] = []

    def sleep_8ms() -> None:
        slow.append(0)
        time.sleep(0.008)

    assert autotune.measure(sleep_8ms, torch.device("cpu"), avg_timing=8, measurements=3) >= 8.0
    # One warm-up call, then 3 measurements of ceil(20 / 8+) = 3 calls at most (not 8).
    assert 1 + 3 * 2 <= len(slow) <= 1 + 3 * 3
    fast: list[int] = []
    autotune.measure(lambda: fast.append(0), torch.device("cpu"), avg_timing=8, measurements=3)
    assert len(fast) == 1 + 3 * 8
