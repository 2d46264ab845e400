import dataclasses
import json
import struct
import subprocess
import sys

import numpy as np
import pytest

import tensorkiln
from tensorkiln.engine import DeviceInfo, deserialize_plan, load_plan
from tensorkiln.engine.format import HEADER_SIZE, MAGIC
from tensorkiln.errors import EngineFormatError
from tensorkiln.frontends.onnx import parse_onnx
from tensorkiln.ir import DType, Graph, Node, TensorType, Value
from tensorkiln.version import ENGINE_FORMAT_VERSION, __version__

from models import elementwise_expected, elementwise_model


@pytest.fixture
def plan():
    # Level 0 keeps the three layers as written; these tests are about the file, not the optimizer.
    return tensorkiln.Builder(tensorkiln.BuilderConfig(optimization_level=0)).build(parse_onnx(elementwise_model()))


@pytest.fixture
def feeds(rng):
    return {"x": rng.standard_normal((3, 4)).astype(np.float32), "y": rng.standard_normal((3, 4)).astype(np.float32)}


def test_roundtrip_bytes_same_outputs(plan, feeds):
    direct = tensorkiln.Runtime().load(plan).create_execution_context().execute(feeds)
    again = tensorkiln.Runtime().load(plan.serialize()).create_execution_context().execute(feeds)
    np.testing.assert_array_equal(direct["z"], again["z"])
    np.testing.assert_allclose(direct["z"], elementwise_expected(feeds["x"], feeds["y"], elementwise_model()),
                               rtol=1e-6)


def test_saved_engine_reloaded_in_new_process_gives_same_outputs(plan, feeds, tmp_path):
    path = tmp_path / "model.plan"
    plan.save(str(path))
    np.savez(tmp_path / "in.npz", **feeds)
    expected = tensorkiln.Runtime().load(plan).create_execution_context().execute(feeds)["z"]
    script = (
        "import sys, numpy as np, tensorkiln\n"
        "engine = tensorkiln.Runtime().load(sys.argv[1])\n"
        "feeds = dict(np.load(sys.argv[2]))\n"
        "np.save(sys.argv[3], engine.create_execution_context().execute(feeds)['z'])\n")
    subprocess.run([sys.executable, "-c", script, str(path), str(tmp_path / "in.npz"), str(tmp_path / "out.npy")],
                   check=True)
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), expected)


def test_manifest_is_plain_json_with_io_signature(plan):
    data = plan.serialize()
    assert data[:8] == MAGIC
    _, version, _, mlen, wlen, _ = struct.unpack("<8sII QQ32s", data[:HEADER_SIZE])
    manifest = json.loads(data[HEADER_SIZE:HEADER_SIZE + mlen])
    assert version == ENGINE_FORMAT_VERSION and manifest["tensorkiln_version"] == __version__
    assert manifest["io"]["inputs"][0] == {"name": "x", "dtype": "float32", "shape": ["N", 4]}
    assert manifest["device"]["backend"] == "cpu"
    assert [layer["meta"]["tactic"] for layer in manifest["graph"]["nodes"]] == ["reference"] * 3


def test_truncated_file_refused(plan, tmp_path):
    data = plan.serialize()
    for cut in (len(data) - 7, HEADER_SIZE + 3, 40):
        path = tmp_path / f"cut{cut}.plan"
        path.write_bytes(data[:cut])
        with pytest.raises(EngineFormatError, match="truncated"):
            load_plan(path)


def test_corrupted_weights_refused(plan, tmp_path):
    data = bytearray(plan.serialize())
    data[-5] ^= 0xFF
    with pytest.raises(EngineFormatError, match="corrupt: checksum mismatch"):
        deserialize_plan(bytes(data))


def test_corrupted_manifest_refused(plan):
    data = bytearray(plan.serialize())
    data[HEADER_SIZE + 10] ^= 0x01
    with pytest.raises(EngineFormatError, match="checksum mismatch"):
        deserialize_plan(bytes(data))


def test_not_an_engine_refused(tmp_path):
    path = tmp_path / "model.plan"
    path.write_bytes(b"\x08\x07garbage" * 20)
    with pytest.raises(EngineFormatError, match="not a tensorkiln engine plan"):
        load_plan(path)
    path.write_bytes(b"")
    with pytest.raises(EngineFormatError, match="not a tensorkiln engine plan"):
        load_plan(path)


def test_missing_and_directory_paths_refused(tmp_path):
    with pytest.raises(EngineFormatError, match="does not exist"):
        load_plan(tmp_path / "nope.plan")
    with pytest.raises(EngineFormatError, match="is a directory"):
        load_plan(tmp_path)


def test_other_format_version_refused_with_rebuild_message(plan):
    data = bytearray(plan.serialize())
    data[8:12] = struct.pack("<I", ENGINE_FORMAT_VERSION + 1)
    with pytest.raises(EngineFormatError) as err:
        deserialize_plan(bytes(data))
    assert str(err.value) == (
        f"engine plan: engine plan was built by tensorkiln {__version__} (format {ENGINE_FORMAT_VERSION + 1}); "
        f"this is {__version__} (format {ENGINE_FORMAT_VERSION}): rebuild it")


def test_plan_for_other_device_refused(plan):
    foreign = dataclasses.replace(plan, device=DeviceInfo("cuda", "NVIDIA H100 80GB HBM3", (9, 0)))
    with pytest.raises(EngineFormatError,
                       match=r"built for cuda device 'NVIDIA H100 80GB HBM3' \(sm_90\); this runtime is cpu "
                             r"device 'cpu': rebuild it"):
        tensorkiln.Runtime("cpu").load(foreign.serialize())


def test_unknown_tactic_refused_naming_layer(plan):
    plan.graph.nodes[1].meta["tactic"] = "warp_speed"
    with pytest.raises(EngineFormatError, match="layer 'Mul_1' uses tactic 'warp_speed' for Mul"):
        tensorkiln.Runtime().load(plan.serialize())


def test_failed_save_leaves_existing_file_intact(plan, tmp_path, monkeypatch):
    path = tmp_path / "model.plan"
    plan.save(str(path))
    before = path.read_bytes()
    import tensorkiln.engine.format as fmt

    def boom(_):
        raise RuntimeError("disk on fire")
    monkeypatch.setattr(fmt, "serialize_plan", boom)
    with pytest.raises(RuntimeError):
        plan.save(str(path))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.plan"]


@pytest.mark.parametrize("dtype", [DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16, DType.INT64, DType.BOOL,
                                   DType.UINT32, DType.FLOAT8E4M3FN, DType.FLOAT8E4M3FNUZ, DType.INT4,
                                   DType.COMPLEX64])
def test_weights_of_every_dtype_roundtrip(dtype):
    values = np.arange(-4, 4).reshape(2, 4)
    if dtype == DType.BOOL:
        values = values > 0
    if dtype == DType.UINT32:
        values = values + 4
    const = np.asarray(values).astype(dtype.numpy)
    out = Value("out", TensorType(dtype, (2, 4)))
    c = Value("c", const=const)
    graph = Graph("g", [], [out], [Node("Identity", [c], [out], name="id", opset=17, meta={"tactic": "reference"})],
                  [c])
    plan = tensorkiln.EnginePlan(graph=graph, device=DeviceInfo("cpu", "cpu"))
    back = deserialize_plan(plan.serialize()).graph.initializers[0].const
    assert back.dtype == const.dtype and back.shape == const.shape and back.tobytes() == const.tobytes()
