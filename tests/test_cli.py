"""The `kiln` command line: exec (trtexec flags), build, run, inspect, conformance, and its error handling.

Commands run in-process through `main(argv)` (a subprocess costs seconds of imports);
one test checks `python -m tensorkiln.cli.main` itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnx.parser
import pytest
import torch

import tensorkiln
from tensorkiln.cli.main import main
from tensorkiln.cli.report import percentile
from tensorkiln.cli.shapes import parse_shape_spec
from tensorkiln.cli.usage import UsageError

# z = Relu((x + y) * w): dynamic batch N shared by both inputs; w seeded.
MODEL_TEXT = """<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 4] x, float[N, 4] y) => (float[N, 4] z) {
  a = Add(x, y)
  b = Mul(a, w)
  z = Relu(b)
}"""

# Every dimension dynamic: only the leading one may default to 1.
IMAGE_MODEL_TEXT = """<ir_version: 8, opset_import: ["" : 17]>
g (float[N, C, H, W] x) => (float[N, C, H, W] z) {
  z = Sigmoid(x)
}"""

# --backend=cpu keeps the output identical on GPU machines; the cuda-marked test covers the GPU path.
FAST = ["--warmUp=0", "--duration=0", "--iterations=3", "--backend=cpu"]


def _save(text: str, path: Path, weights: bool = False) -> Path:
    model = onnx.parser.parse_model(text)
    if weights:
        w = np.random.default_rng(0).standard_normal(4).astype(np.float32)
        model.graph.initializer.append(onnx.numpy_helper.from_array(w, "w"))
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def model_path(workdir) -> Path:
    return _save(MODEL_TEXT, workdir / "model.onnx", weights=True)


@pytest.fixture(scope="module")
def image_model_path(workdir) -> Path:
    return _save(IMAGE_MODEL_TEXT, workdir / "image.onnx")


@pytest.fixture(scope="module")
def plan_path(workdir, model_path) -> Path:
    """An engine with a batch range 1..8 (opt 2)."""
    path = workdir / "model.plan"
    code = main(["build", str(model_path), "-o", str(path), "--min-shapes", "x:1x4,y:1x4",
                 "--opt-shapes", "x:2x4,y:2x4", "--max-shapes", "x:8x4,y:8x4"])
    assert code == 0
    return path


def _expected(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    w = np.random.default_rng(0).standard_normal(4).astype(np.float32)
    return np.maximum((x + y) * w, 0)


def _one_error_line(err: str) -> str:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


# ---- kiln / --help / --version ---------------------------------------------------------

def test_version_and_help(capsys):
    assert main(["--version"]) == 0
    assert tensorkiln.__version__ in capsys.readouterr().out
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("exec", "build", "run", "inspect", "conformance"):
        assert command in out


@pytest.mark.parametrize("command", ["exec", "build", "run", "inspect", "conformance"])
def test_subcommand_help(capsys, command):
    assert main([command, "--help"]) == 0
    assert f"kiln {command}" in capsys.readouterr().out


def test_module_entry_point_runs():
    done = subprocess.run([sys.executable, "-m", "tensorkiln.cli.main", "--version"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "tensorkiln" in done.stdout


def test_unknown_command_and_flag(capsys):
    assert main(["frobnicate"]) == 2
    assert "frobnicate" in _one_error_line(capsys.readouterr().err)
    assert main(["exec", "--onnx=m.onnx", "--workspace=64"]) == 2
    captured = capsys.readouterr()
    assert "unknown flag '--workspace'" in _one_error_line(captured.err)
    assert "&&&& FAILED" in captured.out


def test_abbreviated_flags_are_not_guessed(capsys):
    assert main(["exec", "--onnx=m.onnx", "--iter=5"]) == 2
    assert "'--iter'" in capsys.readouterr().err


# ---- kiln exec -------------------------------------------------------------------------

def test_exec_builds_saves_and_runs(capsys, workdir, model_path):
    engine = workdir / "exec.plan"
    code = main(["exec", f"--onnx={model_path}", "--saveEngine", str(engine), "--shapes=x:2x4,y:2x4",
                 "--percentile=50,99", "--verbose", "--avgRuns=2", *FAST])
    out = capsys.readouterr().out
    assert code == 0
    assert engine.is_file()
    assert out.splitlines()[0].startswith("&&&& RUNNING TensorKiln.kiln_exec")
    assert out.splitlines()[-1].startswith("&&&& PASSED TensorKiln.kiln_exec")
    for text in ("=== Build summary ===", "Layers: 1 (ElementwiseChain: 1)", "=== Performance summary ===", "Throughput: ",
                 "Latency: min = ", "median = ", "percentile(50%) = ", "percentile(99%) = ", "Enqueue Time: ",
                 "Compute Time: ", "Total Host Walltime: ", "Total Compute Time: ", "Average on 2 runs - ",
                 "Set shape of input tensor x to: 2x4"):
        assert text in out, text


def test_exec_default_shape_and_shared_symbol(capsys, model_path):
    # x and y share N: the leading dim defaults to 1 with trtexec's warning, y follows x.
    assert main(["exec", f"--onnx={model_path}", *FAST]) == 0
    out = capsys.readouterr().out
    assert "Automatically overriding shape to: 1x4" in out
    assert "Set shape of input tensor y to: 1x4" in out
    # y follows a given x.
    assert main(["exec", f"--onnx={model_path}", "--shapes=x:3x4", *FAST]) == 0
    assert "Set shape of input tensor y to: 3x4" in capsys.readouterr().out


def test_exec_load_engine_roundtrip(capsys, workdir, plan_path):
    assert main(["exec", "--loadEngine", str(plan_path), "--shapes=x:5x4,y:5x4", *FAST]) == 0
    out = capsys.readouterr().out
    assert "Set shape of input tensor x to: 5x4" in out and "&&&& PASSED" in out
    # Without --shapes a loaded engine runs at its profile's opt shapes.
    assert main(["exec", "--loadEngine", str(plan_path), *FAST]) == 0
    assert "Set shape of input tensor x to: 2x4" in capsys.readouterr().out


def test_exec_build_only_needs_no_inference(capsys, model_path):
    assert main(["exec", f"--onnx={model_path}", "--buildOnly"]) == 0
    out = capsys.readouterr().out
    assert "=== Build summary ===" in out and "Performance summary" not in out


@pytest.mark.parametrize("flags, code, message", [
    (["--minShapes=x:1x4", "--optShapes=x:2x4"], 2, "missing --maxShapes"),
    (["--optShapes=x:2x4", "--maxShapes=x:4x4"], 2, "missing --minShapes"),
    (["--minShapes=x:2x4", "--optShapes=x:1x4", "--maxShapes=x:4x4"], 2, "min <= opt <= max"),
    (["--minShapes=x:1x4", "--optShapes=x:2x4x1", "--maxShapes=x:4x4"], 2, "different ranks"),
    (["--shapes=q:1x4"], 1, "'q' is not an input of the network"),
    (["--shapes=x:0x4"], 2, "must be positive"),
    (["--shapes=x:1xfour"], 2, "positive integers"),
    (["--shapes=x:2x5"], 1, "dimension 1 is fixed to 4"),
    (["--minShapes=x:1x4", "--optShapes=x:2x4", "--maxShapes=x:4x4", "--shapes=x:8x4"], 1, "outside its profile"),
    (["--percentile=101"], 2, "[0, 100]"),
    (["--iterations=0"], 2, "--iterations must be >= 1"),
    (["--warmUp=-5"], 2, "--warmUp"),
])
def test_exec_shape_and_flag_validation(capsys, model_path, flags, code, message):
    assert main(["exec", f"--onnx={model_path}", *FAST, *flags]) == code
    captured = capsys.readouterr()
    assert message in _one_error_line(captured.err)
    assert captured.out.splitlines()[-1].startswith("&&&& FAILED")


def test_exec_dynamic_non_batch_dims_need_shapes(capsys, image_model_path):
    assert main(["exec", f"--onnx={image_model_path}", *FAST]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert "pass --shapes=x:" in line
    assert main(["exec", f"--onnx={image_model_path}", "--shapes=x:1x3x4x4", *FAST]) == 0


def test_exec_shapes_checked_against_engine_profiles(capsys, plan_path):
    assert main(["exec", "--loadEngine", str(plan_path), "--shapes=x:9x4,y:9x4", *FAST]) == 1
    assert "outside every optimization profile" in _one_error_line(capsys.readouterr().err)


def test_exec_corrupt_and_truncated_engine(capsys, workdir, plan_path):
    data = plan_path.read_bytes()
    truncated = workdir / "truncated.plan"
    truncated.write_bytes(data[:len(data) // 2])
    assert main(["exec", f"--loadEngine={truncated}"]) == 1
    captured = capsys.readouterr()
    assert _one_error_line(captured.err).startswith(f"kiln: error: engine file '{truncated}' is truncated")
    assert "&&&& FAILED" in captured.out
    corrupt = workdir / "corrupt.plan"
    flipped = bytearray(data)
    flipped[-3] ^= 0xFF
    corrupt.write_bytes(bytes(flipped))
    assert main(["exec", f"--loadEngine={corrupt}"]) == 1
    assert _one_error_line(capsys.readouterr().err) == \
        f"kiln: error: engine file '{corrupt}' is corrupt: checksum mismatch"


def test_exec_missing_files(capsys, workdir):
    assert main(["exec", f"--onnx={workdir / 'absent.onnx'}"]) == 1
    assert "does not exist" in _one_error_line(capsys.readouterr().err)
    assert main(["exec", f"--loadEngine={workdir / 'absent.plan'}"]) == 1
    assert "does not exist" in _one_error_line(capsys.readouterr().err)
    assert main(["exec"]) == 2
    assert "--onnx" in _one_error_line(capsys.readouterr().err)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_exec_device_without_gpu(capsys, model_path):
    assert main(["exec", f"--onnx={model_path}", "--device=0", *FAST[:-1]]) == 1
    assert "no CUDA GPU is available" in _one_error_line(capsys.readouterr().err)


def test_export_output_matches_direct_run(capsys, workdir, plan_path):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 4)).astype(np.float32)
    y = rng.standard_normal((3, 4)).astype(np.float32)
    np.save(workdir / "x.npy", x)
    (workdir / "y.bin").write_bytes(y.tobytes())  # raw, as trtexec reads; takes its shape from --shapes
    exported, times = workdir / "out.json", workdir / "times.json"
    code = main(["exec", f"--loadEngine={plan_path}", f"--loadInputs=x:{workdir / 'x.npy'},y:{workdir / 'y.bin'}",
                 "--shapes=y:3x4", f"--exportOutput={exported}", f"--exportTimes={times}", *FAST])
    assert code == 0, capsys.readouterr().err
    rows = json.loads(exported.read_text())
    direct = tensorkiln.Runtime("cpu").load(str(plan_path)).create_execution_context().execute({"x": x, "y": y})
    assert [r["name"] for r in rows] == ["z"]
    assert rows[0]["dimensions"] == "3x4"
    np.testing.assert_array_equal(np.array(rows[0]["values"], dtype=np.float32), direct["z"].reshape(-1))
    np.testing.assert_allclose(direct["z"], _expected(x, y), rtol=1e-6)
    trace = json.loads(times.read_text())
    assert len(trace) == 3
    assert {"startMs", "endMs", "latencyMs", "startH2DMs", "endD2HMs", "computeMs"} <= set(trace[0])


def test_load_inputs_wrong_dtype_is_clear(capsys, workdir, plan_path):
    np.save(workdir / "x64.npy", np.ones((2, 4)))
    assert main(["exec", f"--loadEngine={plan_path}", f"--loadInputs=x:{workdir / 'x64.npy'}", *FAST]) == 1
    assert "is float64, but the engine input is float32" in _one_error_line(capsys.readouterr().err)


@pytest.mark.cuda
def test_exec_on_gpu(capsys, workdir, model_path):
    engine = workdir / "gpu.plan"
    common = ["--warmUp=0", "--duration=0", "--iterations=3", "--shapes=x:2x4,y:2x4"]
    assert main(["exec", f"--onnx={model_path}", "--device=0", f"--saveEngine={engine}", *common]) == 0
    out = capsys.readouterr().out
    for text in ("H2D Latency: ", "GPU Compute Time: ", "D2H Latency: ", "Total GPU Compute Time: "):
        assert text in out, text
    assert main(["exec", f"--loadEngine={engine}", "--noDataTransfers", "--useCudaGraph", *common]) == 0
    out = capsys.readouterr().out
    assert "GPU Compute Time: " in out and "H2D Latency" not in out
    # A CUDA engine on the CPU backend is refused with a clear message.
    assert main(["exec", f"--loadEngine={engine}", "--backend=cpu", *common]) == 1
    assert "rebuild it" in _one_error_line(capsys.readouterr().err)
    # kiln run replays a CUDA graph by default; --noCudaGraph runs the layers one by one, to the same outputs.
    x = np.random.default_rng(5).standard_normal((2, 4)).astype(np.float32)
    np.save(workdir / "gx.npy", x)
    np.save(workdir / "gy.npy", -x)
    saved = {}
    for flags in ([], ["--noCudaGraph"]):
        path = workdir / f"gpu_out{len(flags)}.npz"
        assert main(["run", str(engine), "--input", f"x={workdir / 'gx.npy'}", "--input", f"y={workdir / 'gy.npy'}",
                     "--iterations", "3", "--save-outputs", str(path), *flags]) == 0
        assert "--noCudaGraph takes effect" not in capsys.readouterr().out
        with np.load(path) as outputs:
            saved[len(flags)] = outputs["z"]
    np.testing.assert_array_equal(saved[0], saved[1])
    np.testing.assert_allclose(saved[0], _expected(x, -x), rtol=1e-6)


# ---- kiln build ------------------------------------------------------------------------

def test_build_failure_leaves_existing_file_intact(capsys, workdir, model_path, image_model_path):
    target = workdir / "keep.plan"
    assert main(["build", str(model_path), "-o", str(target)]) == 0
    before = target.read_bytes()
    broken = workdir / "broken.onnx"
    broken.write_bytes(b"not an onnx model")
    assert main(["build", str(broken), "-o", str(target)]) == 1
    assert "not a valid ONNX model" in _one_error_line(capsys.readouterr().err)
    assert main(["build", str(model_path), "-o", str(target), "--shapes", "x:1x5"]) == 1
    capsys.readouterr()
    assert target.read_bytes() == before
    assert not [p for p in workdir.iterdir() if p.name.startswith(".keep.plan")]  # no temp file left behind


def test_build_usage_errors(capsys, model_path, workdir):
    assert main(["build", str(model_path)]) == 2  # -o is required
    assert "-o" in _one_error_line(capsys.readouterr().err)
    assert main(["build", str(model_path), "-o", str(workdir / "a.plan"), "--min-shapes", "x:1x4"]) == 2
    assert "missing --opt-shapes and --max-shapes" in _one_error_line(capsys.readouterr().err)


# ---- kiln run --------------------------------------------------------------------------

def test_run_with_inputs_and_saved_outputs(capsys, workdir, plan_path):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 4)).astype(np.float32)
    y = rng.standard_normal((4, 4)).astype(np.float32)
    np.save(workdir / "rx.npy", x)
    np.savez(workdir / "ry.npz", y=y)
    saved = workdir / "outputs.npz"
    code = main(["run", str(plan_path), "--input", f"x={workdir / 'rx.npy'}", "--input", f"y={workdir / 'ry.npz'}",
                 "--save-outputs", str(saved), "--iterations", "3"])
    out = capsys.readouterr().out
    assert code == 0
    assert "z" in out and "4x4" in out and "float32" in out and "Latency over 3 runs" in out
    with np.load(saved) as outputs:
        np.testing.assert_allclose(outputs["z"], _expected(x, y), rtol=1e-6)


def test_run_random_inputs_and_output_dir(capsys, workdir, plan_path):
    out_dir = workdir / "outs"
    assert main(["run", str(plan_path), "--output-dir", str(out_dir)]) == 0
    assert np.load(out_dir / "z.npy").shape == (2, 4)  # the profile's opt shape
    capsys.readouterr()


def test_run_no_cuda_graph_on_the_cpu_warns(capsys, plan_path):
    assert main(["run", str(plan_path), "--noCudaGraph"]) == 0
    assert "--noCudaGraph takes effect with the CUDA backend; ignored on the CPU" in capsys.readouterr().out


def test_run_errors(capsys, workdir, plan_path):
    assert main(["run", str(workdir / "none.plan")]) == 1
    assert "does not exist" in _one_error_line(capsys.readouterr().err)
    assert main(["run", str(plan_path), "--input", f"q={workdir / 'rx.npy'}"]) == 1
    assert "'q'" in _one_error_line(capsys.readouterr().err)
    assert main(["run", str(plan_path), "--input", f"x={workdir / 'missing.npy'}"]) == 1
    assert "does not exist" in _one_error_line(capsys.readouterr().err)


# ---- kiln inspect ----------------------------------------------------------------------

def test_inspect_engine(capsys, plan_path):
    assert main(["inspect", str(plan_path), "--graph"]) == 0
    out = capsys.readouterr().out
    for text in ("Engine plan", "[N,4]", "1x4 / 2x4 / 8x4", "Relu", "reference", "float32", "Memory plan",
                 "graph "):
        assert text in out, text
    assert main(["inspect", str(plan_path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "engine"
    assert info["inputs"][0] == {"name": "x", "dtype": "float32", "shape": ["N", 4],
                                 "profiles": [{"min": [1, 4], "opt": [2, 4], "max": [8, 4]}]}
    assert [layer["op"] for layer in info["layers"]] == ["ElementwiseChain"]  # Add, Mul, Relu fused by the optimizer
    assert all(layer["tactic"] for layer in info["layers"])
    assert info["device"]["backend"] == "cpu"


def test_inspect_marks_the_layers_a_gpu_runs_on_the_host(capsys, workdir):
    # A GPU engine's shape arithmetic runs on the host (runtime/host_values.py). The plan is built
    # on the CPU and labelled a CUDA one: inspect only reads it.
    import dataclasses

    from tensorkiln import Builder, BuilderConfig
    from tensorkiln.builder.config import OptimizationProfile
    from tensorkiln.frontends.onnx import parse_onnx
    model = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
g (float[N, M] x) => (float[N, M] y) <int64 zero = {0}, int64[1] axis0 = {0}, int64[1] minus1 = {-1}> {
  s = Shape(x)
  n = Gather<axis = 0>(s, zero)
  n1 = Unsqueeze(n, axis0)
  t = Concat<axis = 0>(n1, minus1)
  r = Reshape(x, t)
  e = Exp(r)
  y = Reshape(e, s)
}""")
    profile = OptimizationProfile({"x": ((1, 1), (2, 3), (4, 5))})
    plan = Builder(BuilderConfig(profiles=(profile,), optimization_level=0)).build(parse_onnx(model))
    plan = dataclasses.replace(plan, device=dataclasses.replace(plan.device, backend="cuda", name="NVIDIA H200",
                                                                 compute_capability=(9, 0)))
    path = workdir / "host_layers.plan"
    plan.save(str(path))
    assert main(["inspect", str(path), "--json"]) == 0
    placed = {layer["op"]: layer["runs_on"] for layer in json.loads(capsys.readouterr().out)["layers"]}
    assert placed == {"Shape": "host", "Gather": "host", "Unsqueeze": "host", "Concat": "host",
                      "Reshape": "device", "Exp": "device"}
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "runs on" in out and "4 layer(s) of shape arithmetic run on the host" in out


def test_inspect_onnx_reports_unsupported_ops_without_failing(capsys, workdir, model_path):
    assert main(["inspect", str(model_path)]) == 0
    out = capsys.readouterr().out
    assert "ONNX model" in out and "Import: ok (3 layers)" in out
    odd = workdir / "odd.onnx"
    _save("""<ir_version: 8, opset_import: ["" : 17]>
g (float[2] x) => (float[2] z) {
  a = Relu(x)
  z = NoSuchOp(a)
}""", odd)
    assert main(["inspect", str(odd), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    support = {row["op"]: row["supported"] for row in info["ops"]}
    assert support == {"Relu": True, "NoSuchOp": False}
    assert info["import"]["ok"] is False and "NoSuchOp" in info["import"]["error"]
    assert info["opsets"] == {"ai.onnx": 17}


def test_inspect_bad_files(capsys, workdir):
    junk = workdir / "junk.bin"
    junk.write_bytes(b"\x00\x01garbage")
    assert main(["inspect", str(junk)]) == 1
    assert "neither a tensorkiln engine plan" in _one_error_line(capsys.readouterr().err)
    assert main(["inspect", str(workdir / "nothing.onnx")]) == 1
    assert "does not exist" in _one_error_line(capsys.readouterr().err)


# ---- kiln conformance ------------------------------------------------------------------

def test_conformance_summary(capsys):
    assert main(["conformance", "--filter", r"^test_relu$", "--failures"]) == 0
    out = capsys.readouterr().out
    assert "Pass rate: 100.0% (1/1)" in out
    assert main(["conformance", "--filter", "("]) == 2
    assert "not a valid regular expression" in _one_error_line(capsys.readouterr().err)


# ---- parsing helpers -------------------------------------------------------------------

def test_shape_spec_parsing():
    assert parse_shape_spec(["input0:1x3x256x256,input1:1x3x128x128"], "--shapes") == \
        {"input0": (1, 3, 256, 256), "input1": (1, 3, 128, 128)}
    # trtexec splits an unquoted name on the last ':'; quotes allow ':' and ',' in names.
    assert parse_shape_spec(["input:0:1x3"], "--shapes") == {"input:0": (1, 3)}
    assert parse_shape_spec(["'in:0,a':2x2,b:4"], "--shapes") == {"in:0,a": (2, 2), "b": (4,)}
    assert parse_shape_spec(["a:1", "b:2"], "--shapes") == {"a": (1,), "b": (2,)}  # repeated flags merge
    for bad in ("a", "a:1x", "a:1,a:2", "'a:1"):
        with pytest.raises(UsageError):
            parse_shape_spec([bad], "--shapes")


def test_percentile_matches_trtexec():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 90) == 90.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([5.0], 50) == 5.0


def test_exec_dump_and_export_profile(capsys, workdir, plan_path):
    exported = workdir / "profile.json"
    code = main(["exec", f"--loadEngine={plan_path}", "--dumpProfile", "--separateProfileRun",
                 f"--exportProfile={exported}", *FAST])
    out = capsys.readouterr().out
    assert code == 0
    layers = tensorkiln.Runtime("cpu").load(str(plan_path)).layers
    assert "=== Profile (3 iterations" in out
    # "[I] total avg median percent  name  op / tactic"
    rows = [line.split()[5:] for line in out.splitlines() if line.count(" / ") == 1]
    assert rows[1:] == [[layer["name"], layer["op"], "/", layer["tactic"]] for layer in layers]
    records = json.loads(exported.read_text())
    assert records[0] == {"count": 3}
    assert [r["name"] for r in records[1:]] == [layer["name"] for layer in layers]
    assert all(r["averageMs"] > 0 for r in records[1:])
