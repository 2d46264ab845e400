"""The engine file: header, JSON manifest, safetensors weights, checksum.

    offset  size  field
    0       8     magic b"TKILNPLN"
    8       4     format version (little-endian u32)
    12      4     reserved (0)
    16      8     manifest length in bytes (u64)
    24      8     weights length in bytes (u64)
    32      32    SHA-256 of manifest bytes + weights bytes
    64      M     manifest (UTF-8 JSON)
    64+M    W     weights (safetensors)

Nothing in the file is executed on load: no pickle.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Any, Union

import numpy as np
import safetensors.torch
import torch

from ..errors import EngineFormatError
from ..ir import DType, numpy_to_torch, torch_to_numpy
from ..version import ENGINE_FORMAT_VERSION, __version__
from .codec import GraphDecoder, GraphEncoder, type_to_json
from .plan import DeviceInfo, EnginePlan, ProfileRange

MAGIC = b"TKILNPLN"
_HEADER = struct.Struct("<8sII QQ32s")
HEADER_SIZE = _HEADER.size  # 64

# safetensors cannot hold every dtype; those are stored as raw bytes and reinterpreted.
_SAFETENSORS_NATIVE = {DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16, DType.FLOAT64, DType.INT8, DType.INT16,
                       DType.INT32, DType.INT64, DType.UINT8, DType.BOOL, DType.FLOAT8E4M3FN, DType.FLOAT8E5M2}


def _encode_weights(weights: dict[str, np.ndarray]) -> tuple[bytes, dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    raw: dict[str, Any] = {}
    for key, array in weights.items():
        dt = DType.from_numpy(array.dtype)
        if dt in _SAFETENSORS_NATIVE:
            tensors[key] = numpy_to_torch(array).contiguous()
        else:
            flat = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
            tensors[key] = torch.from_numpy(flat.copy())
            raw[key] = {"dtype": dt.short, "shape": list(array.shape)}
    return safetensors.torch.save(tensors), raw


def _decode_weights(data: bytes, raw: dict[str, Any]) -> dict[str, np.ndarray]:
    try:
        tensors = safetensors.torch.load(data)
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise EngineFormatError(f"engine plan weights are corrupt: {exc}") from exc
    out = {}
    for key, t in tensors.items():
        if key in raw:
            dt = DType.parse(raw[key]["dtype"])
            out[key] = t.numpy().view(dt.numpy).reshape(raw[key]["shape"])
        else:
            out[key] = torch_to_numpy(t)
    return out


def serialize_plan(plan: EnginePlan) -> bytes:
    enc = GraphEncoder()
    graph = enc.graph(plan.graph)
    weights, raw = _encode_weights(enc.weights)
    manifest = {
        "tensorkiln_version": plan.library_version,
        "format_version": plan.format_version,
        "device": {"backend": plan.device.backend, "name": plan.device.name,
                   "compute_capability": list(plan.device.compute_capability) if plan.device.compute_capability else None},
        "build_config": plan.build_config,
        "io": {"inputs": [{"name": v.name, **(type_to_json(v.type) or {})} for v in plan.graph.inputs],
               "outputs": [{"name": v.name, **(type_to_json(v.type) or {})} for v in plan.graph.outputs]},
        "profiles": [{name: {"min": list(r.min), "opt": list(r.opt), "max": list(r.max)} for name, r in p.items()}
                     for p in plan.profiles],
        "memory": plan.memory,
        "ignored_inputs": list(plan.ignored_inputs),
        "build_info": plan.build_info,
        "graph": graph,
        "raw_weights": raw,
    }
    mbytes = json.dumps(manifest, separators=(",", ":")).encode()
    digest = hashlib.sha256(mbytes + weights).digest()
    header = _HEADER.pack(MAGIC, plan.format_version, 0, len(mbytes), len(weights), digest)
    return header + mbytes + weights


def _where(source: str) -> str:
    return f"engine file '{source}'" if source else "engine plan"


def deserialize_plan(data: Union[bytes, bytearray, memoryview], source: str = "") -> EnginePlan:
    where = _where(source)
    data = memoryview(data)
    if len(data) < HEADER_SIZE:
        if bytes(data[:8]) != MAGIC[:len(data[:8])] or len(data) == 0:
            raise EngineFormatError(f"{where} is not a tensorkiln engine plan (too short, bad magic)")
        raise EngineFormatError(f"{where} is truncated: {len(data)} bytes, shorter than its header")
    magic, version, _, mlen, wlen, digest = _HEADER.unpack(bytes(data[:HEADER_SIZE]))
    if magic != MAGIC:
        raise EngineFormatError(f"{where} is not a tensorkiln engine plan (bad magic {magic!r})")
    if version != ENGINE_FORMAT_VERSION:
        built_by = _peek_version(data, mlen)
        raise EngineFormatError(
            f"{where}: engine plan was built by tensorkiln {built_by} (format {version}); "
            f"this is {__version__} (format {ENGINE_FORMAT_VERSION}): rebuild it")
    end = HEADER_SIZE + mlen + wlen
    if len(data) < end:
        raise EngineFormatError(f"{where} is truncated: {len(data)} bytes, expected {end}")
    if len(data) > end:
        raise EngineFormatError(f"{where} has {len(data) - end} unexpected trailing bytes (corrupt)")
    mbytes = data[HEADER_SIZE:HEADER_SIZE + mlen]
    wbytes = data[HEADER_SIZE + mlen:end]
    h = hashlib.sha256()
    h.update(mbytes)
    h.update(wbytes)
    if h.digest() != digest:
        raise EngineFormatError(f"{where} is corrupt: checksum mismatch")
    try:
        manifest = json.loads(bytes(mbytes))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EngineFormatError(f"{where} has an unreadable manifest: {exc}") from exc
    try:
        weights = _decode_weights(bytes(wbytes), manifest.get("raw_weights", {}))
        graph = GraphDecoder(weights).graph(manifest["graph"])
        dev = manifest["device"]
        device = DeviceInfo(dev["backend"], dev["name"],
                            tuple(dev["compute_capability"]) if dev.get("compute_capability") else None)
        profiles = tuple({name: ProfileRange(tuple(r["min"]), tuple(r["opt"]), tuple(r["max"])) for name, r in p.items()}
                         for p in manifest.get("profiles", []))
    except EngineFormatError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise EngineFormatError(f"{where} has a malformed manifest: {exc!r}") from exc
    return EnginePlan(graph=graph, device=device, build_config=manifest.get("build_config", {}),
                      profiles=profiles, memory=manifest.get("memory", {}),
                      build_info=manifest.get("build_info", {}),
                      ignored_inputs=tuple(manifest.get("ignored_inputs", [])),
                      library_version=manifest["tensorkiln_version"], format_version=version)


def _peek_version(data: memoryview, mlen: int) -> str:
    try:
        return str(json.loads(bytes(data[HEADER_SIZE:HEADER_SIZE + mlen]))["tensorkiln_version"])
    except Exception:  # noqa: BLE001 - a foreign format may not be JSON at all
        return "an unknown version"


def save_plan(plan: EnginePlan, path: Union[str, os.PathLike]) -> None:
    """Write atomically: a crash mid-write leaves any existing file untouched."""
    write_bytes_atomic(Path(path), serialize_plan(plan))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def load_plan(path: Union[str, os.PathLike]) -> EnginePlan:
    p = Path(path)
    if not p.exists():
        raise EngineFormatError(f"engine file '{p}' does not exist")
    if p.is_dir():
        raise EngineFormatError(f"engine path '{p}' is a directory")
    return deserialize_plan(p.read_bytes(), str(p))
