"""Accuracy debugging: error statistics, `kiln compare` (outputs and --mark-all), tensor files,
and `kiln exec --loadRefOutputs` (tensorkiln.cli.ref_outputs).

Planted faults: a Relu tactic that is deliberately wrong (registered here, forced into the
engine) must fail the comparison, and --mark-all must name exactly its layer as the first
divergence; a Mul whose output overflows float16 must fail with Inf counts and be named.
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np
import onnx
import onnx.parser
import pytest
import torch
from onnx import numpy_helper

from tensorkiln.builder import Builder, BuilderConfig
from tensorkiln.cli.compare import parse_tolerances
from tensorkiln.cli.main import main
from tensorkiln.cli.ref_outputs import (accuracy_loss, add_reference_flags, check_reference_outputs,
                                        validate_reference_flags)
from tensorkiln.cli.report import Log
from tensorkiln.cli.usage import KilnArgumentParser, UsageError
from tensorkiln.debug import (DataFileError, Thresholds, compare_layers, compare_outputs, compare_tensor,
                              error_stats, layers_by_output, load_tensors, run_reference, save_tensors)
from tensorkiln.debug import compare as compare_module
from tensorkiln.errors import ConfigError
from tensorkiln.frontends.onnx import parse_onnx
from tensorkiln.runtime import Runtime
from tensorkiln.tactics import Tactic, register_tactic
from tensorkiln.tactics import registry as tactic_registry
from tensorkiln.tactics.select import TacticChoice

# z = Tanh(Relu((x + y) * w)), and the Relu's output is a second graph output.
CHAIN_TEXT = """<ir_version: 8, opset_import: ["" : 17]>
chain (float[2, 50] x, float[2, 50] y) => (float[2, 50] z, float[2, 50] r) {
  a = Add(x, y)
  b = Mul(a, w)
  r = Relu(b)
  z = Tanh(r)
}"""

# Relu(x) * 1000 overflows float16 (max 65504) for x > 65.5; * 0.001 brings it back.
OVERFLOW_TEXT = """<ir_version: 8, opset_import: ["" : 17]>
overflow (float[2, 4] x) => (float[2, 4] z) {
  a = Relu(x)
  b = Mul(a, big)
  z = Mul(b, small)
}"""

WRONG_TACTIC = "test_wrong_relu_plus_one"
SPOT_TACTIC = "test_wrong_relu_one_element"
SMALL_TACTIC = "test_wrong_relu_plus_1e-3"
LEVEL0 = ["--optimization-level", "0"]  # no fusion: the Relu stays a layer of its own


def _chain_model() -> onnx.ModelProto:
    model = onnx.parser.parse_model(CHAIN_TEXT)
    w = np.random.default_rng(0).standard_normal(50).astype(np.float32)
    model.graph.initializer.append(numpy_helper.from_array(w, "w"))
    return model


def _overflow_model() -> onnx.ModelProto:
    model = onnx.parser.parse_model(OVERFLOW_TEXT)
    model.graph.initializer.append(numpy_helper.from_array(np.array(1000.0, np.float32), "big"))
    model.graph.initializer.append(numpy_helper.from_array(np.array(0.001, np.float32), "small"))
    return model


def _chain_feeds(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.uniform(-1, 1, (2, 50)).astype(np.float32), "y": rng.uniform(-1, 1, (2, 50)).astype(np.float32)}


def _overflow_input() -> np.ndarray:
    # Integers are exact in float16, so Relu's output is exact and only the Mul overflows.
    return np.array([[1, 20, 70, 99], [2, 66, 3, 80]], np.float32)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("compare")


@pytest.fixture(scope="module")
def chain_path(workdir) -> Path:
    path = workdir / "chain.onnx"
    onnx.save(_chain_model(), str(path))
    return path


@pytest.fixture(scope="module")
def overflow_path(workdir) -> Path:
    path = workdir / "overflow.onnx"
    onnx.save(_overflow_model(), str(path))
    return path


def _relu_plus_one(ctx, inputs, attrs):
    return torch.relu(inputs[0]) + 1.0


def _relu_one_element_off(ctx, inputs, attrs):
    out = torch.relu(inputs[0])  # a new tensor: changing it leaves the input alone
    out.view(-1)[0] += 1.0
    return out


def _relu_plus_small(ctx, inputs, attrs):
    return torch.relu(inputs[0]) + 1e-3


@pytest.fixture
def wrong_tactics(monkeypatch):
    """Register the wrong Relu tactics in a copy of the registry (gone after the test). Their
    supports() declines every node, so nothing selects them unless a test forces it."""
    monkeypatch.setattr(tactic_registry, "_EXTRA", {k: list(v) for k, v in tactic_registry._EXTRA.items()})
    for name, fn in ((WRONG_TACTIC, _relu_plus_one), (SPOT_TACTIC, _relu_one_element_off),
                     (SMALL_TACTIC, _relu_plus_small)):
        register_tactic(Tactic(name, "Relu", "cpu", fn, supports=lambda node: "test-only: forced by the test"))


@pytest.fixture
def force_relu_tactic(monkeypatch, wrong_tactics):
    """Make the builder choose a given (wrong) tactic for every Relu."""
    import tensorkiln.builder.builder as builder_module
    chosen = {}
    original = builder_module.select_tactic

    def select(node, backend):
        if node.op_type == "Relu" and "name" in chosen:
            return TacticChoice(chosen["name"], ((chosen["name"], None),))
        return original(node, backend)

    monkeypatch.setattr(builder_module, "select_tactic", select)
    return lambda name: chosen.update(name=name)


def _kiln(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(map(str, argv)), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


# ---- statistics ------------------------------------------------------------------------------------

def test_error_stats_definitions():
    actual = np.array([1.0, 2.0, 0.0, 5.0], np.float32)
    expected = np.array([1.0, 2.5, 0.0, 4.0], np.float32)
    s = error_stats(actual, expected, quantile=0.5)
    assert s.count == 4
    assert s.max_abs == 1.0 and s.mean_abs == pytest.approx(0.375) and s.median_abs == pytest.approx(0.25)
    assert s.max_rel == pytest.approx(0.25) and s.median_rel == pytest.approx(0.1)  # rel of [0, .2, 0, .25]
    assert s.worst_index == (3,) and s.worst_actual == 5.0 and s.worst_expected == 4.0
    cos = float(np.dot(actual, expected) / np.linalg.norm(actual) / np.linalg.norm(expected))
    assert s.cosine == pytest.approx(cos)
    assert s.snr_db == pytest.approx(10 * np.log10(np.sum(expected.astype(np.float64) ** 2) / 1.25))
    identical = error_stats(expected, expected)
    assert identical.max_abs == 0.0 and identical.cosine == 1.0 and identical.snr_db == float("inf")


def test_non_finite_values_match_only_themselves():
    actual = np.array([np.nan, np.inf, 1.0, np.inf, np.nan], np.float32)
    expected = np.array([np.nan, np.inf, 1.0, 7.0e4, 3.0], np.float32)
    s = error_stats(actual, expected)
    assert (s.nan_actual, s.inf_actual, s.nan_expected, s.inf_expected) == (2, 2, 1, 1)
    assert s.max_abs == float("inf") and s.median_abs == 0.0
    verdict = compare_tensor("t", actual, expected, Thresholds(atol=1.0, rtol=1.0))
    assert not verdict.passed and verdict.mismatches == 2  # the inf vs 7e4 and the NaN vs 3
    assert "2 NaN, 2 Inf in tensorkiln's tensor" not in verdict.reason  # the reference has some too
    assert compare_tensor("t", actual[:3], expected[:3], Thresholds(atol=0, rtol=0)).passed


def test_shape_mismatch_and_missing_outputs_fail():
    report = compare_outputs({"a": np.zeros((2, 3))}, {"a": np.zeros((3, 2)), "b": np.zeros(1)})
    assert not report.passed
    assert "shape [2, 3] differs" in report.by_name("a").reason
    assert report.missing == ("b",)
    assert not compare_outputs({"a": np.zeros(2)}, {}).passed  # nothing compared is not a pass


# ---- thresholds -----------------------------------------------------------------------------------

def test_per_output_atol_api():
    expected = {"probs": np.full(10, 0.5, np.float32), "logits": np.full(10, 10.0, np.float32)}
    actual = {"probs": expected["probs"] + 1e-3, "logits": expected["logits"] + 1e-3}
    strict = Thresholds(atol=1e-5, rtol=0.0)
    assert not compare_outputs(actual, expected, strict).passed
    loose_probs = Thresholds(atol=1e-5, rtol=0.0, per_tensor_atol={"probs": 1e-2, "logits": 1e-2})
    assert compare_outputs(actual, expected, loose_probs).passed
    only_probs = Thresholds(atol=1e-5, rtol=0.0, per_tensor_atol={"probs": 1e-2})
    report = compare_outputs(actual, expected, only_probs)
    assert report.by_name("probs").passed and not report.by_name("logits").passed
    # rtol per output: 1e-3 / 10 = 1e-4 relative error on logits.
    assert compare_outputs(actual, expected, Thresholds(atol=0.0, rtol=0.0, per_tensor_rtol={
        "probs": 3e-3, "logits": 2e-4})).passed


def test_parse_tolerances():
    assert parse_tolerances(["1e-3", "probs:1e-4"], "--atol") == (1e-3, {"probs": 1e-4})
    assert parse_tolerances(["'in:0':0.5,out:2"], "--atol") == (None, {"in:0": 0.5, "out": 2.0})
    assert parse_tolerances(None, "--atol") == (None, {})
    with pytest.raises(UsageError, match="given twice"):
        parse_tolerances(["1e-3", "1e-4"], "--atol")
    with pytest.raises(UsageError, match="not a number"):
        parse_tolerances(["model.onnx"], "--atol")
    with pytest.raises(UsageError, match=">= 0"):
        parse_tolerances(["x:-1"], "--rtol")


def test_quantile_and_other_error_stats():
    expected = np.linspace(1.0, 2.0, 100, dtype=np.float32)
    actual = expected.copy()
    actual[7] += 1.0  # one element in a hundred is far off
    def passes(check, q=0.99):
        return compare_tensor("t", actual, expected, Thresholds(atol=1e-5, rtol=1e-5, check_error_stat=check,
                                                                error_quantile=q)).passed
    assert not passes("elemwise")
    assert not passes("max")
    assert not passes("mean")  # the mean absolute error is 0.01
    assert passes("median")
    assert passes("quantile", 0.98)
    assert not passes("quantile", 0.995)


# ---- planted fault: a wrong tactic -------------------------------------------------------------------

def _plan_with_wrong_relu(tactic: str):
    plan = Builder(BuilderConfig(optimization_level=0)).build(parse_onnx(_chain_model()))
    relus = [n for n in plan.graph.nodes if n.op_type == "Relu"]
    assert len(relus) == 1
    relus[0].meta["tactic"] = tactic
    return plan, relus[0]


def test_wrong_tactic_is_the_first_divergence_api(wrong_tactics):
    plan, relu = _plan_with_wrong_relu(WRONG_TACTIC)
    feeds = _chain_feeds()
    outputs, layers = Runtime("cpu").load(plan).create_execution_context().execute_debug(feeds)
    reference = run_reference(_chain_model(), feeds, "ort", intermediates=True)
    assert set(reference.intermediates) == {"a", "b"}
    outputs_report = compare_outputs(outputs, reference.outputs)
    assert not outputs_report.passed
    assert {t.name for t in outputs_report.failures} == {"z", "r"}
    report = compare_layers(layers, reference.all_tensors())
    first = report.first_divergence
    assert first is not None and first.name == "r"
    producers = layers_by_output(plan.graph)
    assert producers["r"].name == relu.name and producers["r"].tactic == WRONG_TACTIC
    k = [t.name for t in report.compared].index("r")
    assert [t.name for t in report.compared[:k]] == ["a", "b"]
    assert all(t.passed for t in report.compared[:k])
    # The reference evaluator finds the same layer.
    ref_eval = run_reference(_chain_model(), feeds, "ref", intermediates=True)
    assert compare_layers(layers, ref_eval.all_tensors()).first_divergence.name == "r"


def test_wrong_tactic_in_a_saved_engine_cli(wrong_tactics, chain_path, workdir):
    plan, relu = _plan_with_wrong_relu(WRONG_TACTIC)
    plan_path = workdir / "wrong.plan"
    plan.save(str(plan_path))
    code, out, _ = _kiln("compare", chain_path, "--engine", plan_path)
    assert code == 1
    assert "FAILED" in out and "FIRST DIVERGENCE" not in out
    code, out, _ = _kiln("compare", chain_path, "--engine", plan_path, "--mark-all")
    assert code == 1
    lines = [line for line in out.splitlines() if line.startswith("FIRST DIVERGENCE")]
    assert len(lines) == 1
    assert lines[0].startswith(f"FIRST DIVERGENCE: layer #2 '{relu.name}' (Relu, tactic '{WRONG_TACTIC}'")
    assert "tensor 'r'" in lines[0]


def test_wrong_tactic_chosen_by_the_builder_cli(force_relu_tactic, chain_path):
    force_relu_tactic(WRONG_TACTIC)
    code, out, _ = _kiln("compare", chain_path, "--mark-all", *LEVEL0)
    assert code == 1
    first = next(line for line in out.splitlines() if line.startswith("FIRST DIVERGENCE"))
    assert "'Relu_2' (Relu" in first and "'Add_0'" not in first and "'Mul_1'" not in first
    assert "[E] FAILED: tensorkiln does not match onnxruntime" in out


def test_passing_model_exits_zero(chain_path):
    code, out, err = _kiln("compare", chain_path, *LEVEL0)
    assert code == 0, out + err
    assert "PASSED: tensorkiln matches onnxruntime" in out
    code, out, err = _kiln("compare", chain_path, "--mark-all", "--reference", "ref")
    assert code == 0, out + err
    assert "FIRST DIVERGENCE" not in out and "Every compared layer output is within tolerance" in out


def test_per_output_atol_cli(force_relu_tactic, chain_path):
    force_relu_tactic(SMALL_TACTIC)  # 'r' is off by 1e-3, and Tanh carries it into 'z'
    code, out, _ = _kiln("compare", chain_path, *LEVEL0, "--atol", "1e-5", "--rtol", "0")
    assert code == 1 and "Output 'r' FAILED" in out and "Output 'z' FAILED" in out
    code, out, _ = _kiln("compare", chain_path, *LEVEL0, "--atol", "1e-5", "r:2e-3", "--rtol", "0")
    assert code == 1 and "Output 'r' FAILED" not in out and "Output 'z' FAILED" in out
    code, out, _ = _kiln("compare", chain_path, *LEVEL0, "--atol", "1e-5", "r:2e-3", "z:2e-3", "--rtol", "0")
    assert code == 0 and "PASSED" in out


def test_quantile_check_cli(force_relu_tactic, chain_path):
    force_relu_tactic(SPOT_TACTIC)  # one element of 100 in 'r' is off by 1 (and in 'z' too)
    code, out, _ = _kiln("compare", chain_path, *LEVEL0)
    assert code == 1 and "1 of 100 elements (1%)" in out
    code, _, _ = _kiln("compare", chain_path, *LEVEL0, "--check-error-stat", "max")
    assert code == 1
    code, out, _ = _kiln("compare", chain_path, *LEVEL0, "--check-error-stat", "quantile", "--error-quantile", "0.9")
    assert code == 0, out
    assert "q0.9 abs" in out
    code, _, _ = _kiln("compare", chain_path, *LEVEL0, "--check-error-stat", "quantile", "--error-quantile",
                       "0.999")
    assert code == 1


# ---- planted fault: float16 overflow ---------------------------------------------------------------

def test_fp16_overflow_through_the_compare_api():
    """An engine running every layer in float16, imitated by casting the reference's tensors:
    the Mul whose output exceeds 65504 is the first divergence, with its Inf count."""
    feeds = {"x": _overflow_input()}
    reference = run_reference(_overflow_model(), feeds, "ort", intermediates=True)
    assert float(reference.intermediates["b"].max()) > 65504
    fp16_layers = {}
    value = feeds["x"].astype(np.float16)
    value = np.maximum(value, np.float16(0))
    fp16_layers["a"] = value
    with np.errstate(over="ignore"):
        fp16_layers["b"] = value * np.float16(1000)
    fp16_layers["z"] = fp16_layers["b"] * np.float16(0.001)
    thresholds = Thresholds.for_precision("fp16")
    report = compare_layers(fp16_layers, reference.all_tensors(), thresholds)
    assert [t.name for t in report.compared] == ["a", "b", "z"]
    assert report.compared[0].passed
    first = report.first_divergence
    assert first.name == "b"
    assert first.stats.inf_actual == 4 and first.stats.inf_expected == 0
    assert "4 Inf in tensorkiln's tensor, none expected" in first.reason
    outputs = compare_outputs({"z": fp16_layers["z"]}, reference.outputs, thresholds)
    assert not outputs.passed and outputs.by_name("z").stats.inf_actual == 4


def test_fp16_overflow_in_an_fp16_engine(overflow_path, workdir):
    # Unfused (level 0): each Mul writes its float16 output, as a layer of its own.
    plan = Builder(BuilderConfig(fp16=True, optimization_level=0)).build(parse_onnx(str(overflow_path)))
    if not any(layer["precision"] == "fp16" for layer in plan.layers):
        pytest.skip("the builder runs no layer in fp16 yet")
    inputs = workdir / "overflow_x.npy"
    np.save(inputs, _overflow_input())
    code, out, _ = _kiln("compare", overflow_path, *LEVEL0, "--fp16", "--load-inputs", inputs)
    assert code == 1 and "0/4, 0/0" in out  # NaN/Inf counts: 4 Inf in tensorkiln's output, none in the reference
    code, out, _ = _kiln("compare", overflow_path, *LEVEL0, "--fp16", "--load-inputs", inputs, "--mark-all")
    assert code == 1
    first = next(line for line in out.splitlines() if line.startswith("FIRST DIVERGENCE"))
    mul = next(layer for layer in plan.layers if layer["outputs"] == ["b"])
    assert f"'{mul['name']}' (Mul" in first and "tensor 'b'" in first and "4 Inf" in first
    code, out, _ = _kiln("compare", overflow_path, *LEVEL0, "--load-inputs", inputs, "--mark-all")
    assert code == 0, out  # in fp32 nothing overflows


# ---- which tensors are compared ------------------------------------------------------------------

def test_tensors_on_one_side_are_counted_not_compared():
    engine = {"a": np.ones(2), "fused_cd": np.ones(2), "e": np.ones(2)}
    reference = {"a": np.ones(2), "b": np.ones(2), "c": np.ones(2), "e": np.ones(2)}
    report = compare_layers(engine, reference)
    assert [t.name for t in report.compared] == ["a", "e"] and report.passed
    assert report.engine_only == ("fused_cd",) and report.reference_only == ("b", "c")


def test_values_onnxruntime_cannot_expose_are_skipped(monkeypatch):
    """A value whose type only tensorkiln knows, and wrongly: onnxruntime refuses it; the other
    intermediates are still exposed and the refused one is reported."""
    real_types = compare_module._value_types
    monkeypatch.setattr(compare_module, "_value_types",
                        lambda model: {k: v for k, v in real_types(model).items() if k != "b"})
    feeds = _chain_feeds()
    run = run_reference(_chain_model(), feeds, "ort", intermediates=True,
                        known_dtypes={"b": onnx.TensorProto.INT64})
    assert set(run.intermediates) == {"a"} and set(run.unavailable) == {"b"}
    assert "onnxruntime cannot return it" in run.unavailable["b"]
    np.testing.assert_allclose(run.intermediates["a"], feeds["x"] + feeds["y"], rtol=1e-6)
    untyped = run_reference(_chain_model(), feeds, "ort", intermediates=True)
    assert set(untyped.unavailable) == {"b"} and "type is unknown" in untyped.unavailable["b"]


# ---- saving and loading -----------------------------------------------------------------------------

def test_tensor_files_roundtrip(workdir):
    import ml_dtypes
    tensors = {"file": np.arange(6, dtype=np.int64).reshape(2, 3), "a/b:0": np.ones(3, ml_dtypes.bfloat16),
               "scalar": np.float32(3.5), "odd": np.array([np.nan, np.inf, -np.inf, 1.5], np.float32),
               "mask": np.array([True, False]), "empty": np.zeros((0, 4), np.float16)}
    for suffix in ("npz", "json"):
        path = save_tensors(workdir / f"roundtrip.{suffix}", tensors)
        loaded = load_tensors(path)
        assert list(loaded) == list(tensors)
        for name, want in tensors.items():
            got = loaded[name]
            assert got.dtype == np.asarray(want).dtype and got.shape == np.asarray(want).shape, (suffix, name)
            np.testing.assert_array_equal(got.astype(np.float64), np.asarray(want).astype(np.float64))
    np.save(workdir / "one.npy", tensors["file"])
    assert np.array_equal(load_tensors(workdir / "one.npy", npy_name="t")["t"], tensors["file"])
    with pytest.raises(DataFileError, match="say which tensor"):
        load_tensors(workdir / "one.npy")
    with pytest.raises(DataFileError, match=".npz, .npy or .json"):
        save_tensors(workdir / "x.txt", tensors)


def test_trtexec_export_output_json_is_readable(workdir):
    path = workdir / "exported.json"
    path.write_text(json.dumps([{"name": "prob", "dimensions": "2x2", "values": [0.1, 0.2, 0.3, 0.4]},
                                {"name": "idx", "dimensions": "2", "values": [3, 1]}]))
    loaded = load_tensors(path, dtypes={"idx": np.int64})
    assert loaded["prob"].dtype == np.float32 and loaded["prob"].shape == (2, 2)
    assert loaded["idx"].dtype == np.int64 and loaded["idx"].tolist() == [3, 1]
    path.write_text(json.dumps({"prob": [[1, 2], [3, 4]]}))
    assert load_tensors(path)["prob"].shape == (2, 2)
    path.write_text(json.dumps([{"name": "prob", "dimensions": "3", "values": [1, 2]}]))
    with pytest.raises(DataFileError, match="shape 3"):
        load_tensors(path)


@pytest.mark.parametrize("suffix", ["npz", "json"])
def test_save_and_load_inputs_and_outputs_cli(chain_path, workdir, suffix):
    inputs, outputs = workdir / f"in.{suffix}", workdir / f"ref.{suffix}"
    code, out, err = _kiln("compare", chain_path, *LEVEL0, "--seed", "7", "--mark-all", "--save-inputs", inputs,
                           "--save-outputs", outputs)
    assert code == 0, out + err
    saved_inputs, saved_outputs = load_tensors(inputs), load_tensors(outputs)
    assert sorted(saved_inputs) == ["x", "y"] and sorted(saved_outputs) == ["a", "b", "r", "z"]
    expected = run_reference(_chain_model(), saved_inputs, "ort", intermediates=True).all_tensors()
    for name, array in expected.items():
        np.testing.assert_array_equal(saved_outputs[name], array)
    # "Another machine": the saved engine, the inputs and the reference outputs, no model and no onnxruntime run.
    plan_path = workdir / f"chain_{suffix}.plan"
    Builder(BuilderConfig(optimization_level=0)).build(parse_onnx(str(chain_path))).save(str(plan_path))
    code, out, err = _kiln("compare", "--engine", plan_path, "--load-inputs", inputs, "--load-outputs", outputs,
                           "--mark-all")
    assert code == 0, out + err
    assert "Compared 4 tensors" in out and "Running the reference" not in out
    # Different inputs no longer match the saved outputs.
    code, out, _ = _kiln("compare", "--engine", plan_path, "--load-outputs", outputs)
    assert code == 1
    # A tampered reference fails on exactly the tampered tensor.
    tampered = dict(saved_outputs)
    tampered["z"] = tampered["z"] + np.float32(0.5)
    save_tensors(outputs, tampered)
    code, out, _ = _kiln("compare", "--engine", plan_path, "--load-inputs", inputs, "--load-outputs", outputs)
    assert code == 1 and "Output 'z' FAILED" in out and "Output 'r' FAILED" not in out


def test_load_inputs_errors(chain_path, workdir):
    bad = workdir / "bad_inputs.npz"
    save_tensors(bad, {"x": np.zeros((2, 50), np.float64)})
    code, _, err = _kiln("compare", chain_path, "--load-inputs", bad)
    assert code == 1 and "is float64, but the model input is float32" in err
    save_tensors(bad, {"nope": np.zeros((2, 50), np.float32)})
    code, _, err = _kiln("compare", chain_path, "--load-inputs", bad)
    assert code == 1 and "'nope'" in err and "not an input" in err
    code, _, err = _kiln("compare", "--engine", "x.plan")
    assert code == 2 and "give MODEL.onnx" in err


# ---- kiln exec --loadRefOutputs -------------------------------------------------------------------------

def _exec_args(*argv: str) -> argparse.Namespace:
    parser = KilnArgumentParser(prog="kiln exec")
    add_reference_flags(parser)
    return parser.parse_strict(list(argv))


def _check(outputs, *argv: str) -> tuple[bool, str]:
    stream = io.StringIO()
    args = _exec_args(*argv)
    validate_reference_flags(args)
    return check_reference_outputs(args, outputs, Log(stream)), stream.getvalue()


def test_load_ref_outputs_pass_and_fail(workdir):
    outputs = {"y": np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4), "idx": np.array([3, 1], np.int64)}
    npz = save_tensors(workdir / "ref_ok.npz", outputs)
    ok, log = _check(outputs, f"--loadRefOutputs={npz}")
    assert ok and "Accuracy check for output 'y': l0 loss = 0" in log and "PASSED: 2 output(s) match" in log
    json_file = save_tensors(workdir / "ref_ok.json", outputs)
    assert _check(outputs, f"--loadRefOutputs={json_file}")[0]
    np.save(workdir / "y.npy", outputs["y"])
    outputs["y"].tofile(workdir / "y.bin")
    ok, log = _check(outputs, f"--loadRefOutputs=y:{workdir / 'y.npy'},idx:{npz}")
    assert ok
    ok, log = _check(outputs, f"--loadRefOutputs=y:{workdir / 'y.bin'}")
    assert ok and "'idx': no reference given, not checked" in log

    off = {"y": outputs["y"].copy(), "idx": outputs["idx"]}
    off["y"][0, 0] += 0.1  # one element of 8
    ok, log = _check(off, f"--loadRefOutputs={npz}")
    assert not ok and "[E] Accuracy check for output 'y': l0 loss = 0.125" in log
    assert "[E] Accuracy check FAILED: 1 of 2 output(s) differ" in log
    assert "Accuracy check for output 'idx': l0 loss = 0" in log
    assert _check(off, f"--loadRefOutputs={npz}", "--atol=0.2")[0]
    assert _check(off, f"--loadRefOutputs={npz}", "--accuracyThreshold=0.125")[0]
    assert not _check(off, f"--loadRefOutputs={npz}", "--accuracyThreshold=0.1")[0]
    assert _check(off, f"--loadRefOutputs={npz}", "--accuracyAlgorithm=lInf", "--accuracyThreshold=0.11")[0]
    assert not _check(off, f"--loadRefOutputs={npz}", "--accuracyAlgorithm=linf", "--accuracyThreshold=0.09")[0]


def test_load_ref_outputs_algorithms_and_errors(workdir):
    ref = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    act = np.array([1.0, 2.0, 3.0, 6.0], np.float32)
    assert accuracy_loss(act, ref, "l0", 1e-5, 1e-5) == 0.25
    assert accuracy_loss(act, ref, "l1", 0, 0) == pytest.approx(0.5)
    assert accuracy_loss(act, ref, "l2", 0, 0) == pytest.approx(1.0)
    assert accuracy_loss(act, ref, "lInf", 0, 0) == pytest.approx(2.0)
    a, r = act.astype(np.float64), ref.astype(np.float64)
    cos = np.dot(a, r) / np.linalg.norm(a) / np.linalg.norm(r)
    assert accuracy_loss(act, ref, "cos", 0, 0) == pytest.approx(1 - cos)
    overflowed = np.array([1.0, 2.0, 3.0, np.inf], np.float32)
    assert accuracy_loss(overflowed, ref, "l2", 0, 0) == float("inf")

    npz = save_tensors(workdir / "ref_other.npz", {"other": ref})
    with pytest.raises(ConfigError, match="'other'.*not an output"):
        _check({"y": ref}, f"--loadRefOutputs={npz}")
    with pytest.raises(UsageError, match="--accuracyAlgorithm"):
        _check({"y": ref}, f"--loadRefOutputs={npz}", "--accuracyAlgorithm=l3")
    with pytest.raises(UsageError, match="--atol"):
        _check({"y": ref}, f"--loadRefOutputs={npz}", "--atol=-1")
    with pytest.raises(ConfigError, match="does not exist"):
        _check({"y": ref}, f"--loadRefOutputs=y:{workdir / 'missing.npy'}")
    ok, log = _check({"y": ref}, f"--loadRefOutputs=y:{save_tensors(workdir / 'short.npz', {'y': ref[:2]})}")
    assert not ok and "shape 4 differs from the reference's 2" in log
    assert _check({"y": ref})[0]  # no reference: nothing to check
    parser = KilnArgumentParser(prog="kiln exec")
    parser.add_argument("--buildOnly", action="store_true")
    add_reference_flags(parser)
    with pytest.raises(UsageError, match="--buildOnly"):
        validate_reference_flags(parser.parse_strict([f"--loadRefOutputs={npz}", "--buildOnly"]))
