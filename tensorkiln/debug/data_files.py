"""Sets of named tensors (inputs, outputs, every layer's output) in files: .npz, .npy, JSON.

- .npz: one array per tensor, keyed by tensor name (any name: written entry by entry, so
  a tensor called "file" does not collide with numpy.savez's parameter). Dtypes numpy
  cannot store (bfloat16, fp8 from ml_dtypes) are written as float32, which holds them
  exactly, and a `__dtypes__` entry records what to cast them back to.
- .npy: one tensor; it takes its name from the caller (the model's only input, or
  `name:file.npy`).
- JSON: trtexec's --exportOutput layout, `[{"name", "dimensions": "1x1000", "values": [...]}]`,
  with a "dtype" key added when written here (files without it take the dtype the caller
  expects, else float32). Also read: `{"name": [[...]]}` and `{"name": {"dtype", "shape" or
  "dimensions", "values"}}`. NaN and infinities are written as JSON's NaN/Infinity tokens.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import numpy as np

from ..engine import write_bytes_atomic
from ..errors import ConfigError
from ..ir import DType

SUFFIXES = (".npz", ".npy", ".json")
DTYPES_ENTRY = "__dtypes__"

PathLike = Union[str, Path]


class DataFileError(ConfigError):
    """A tensor file is missing, unreadable, or holds something other than named tensors."""


def _as_array(value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach"):  # a torch tensor
        from ..ir import torch_to_numpy
        return torch_to_numpy(value.detach().cpu())
    return np.asarray(value)


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DataFileError(f"'{path}': tensor files are .npz, .npy or .json, not '{suffix or 'no extension'}'")
    return suffix


def _is_ml_dtype(dtype: np.dtype) -> bool:
    return dtype.type.__module__.startswith("ml_dtypes")


def _dtype_name(dtype: np.dtype) -> str:
    try:
        return DType.from_numpy(dtype).short
    except Exception:  # noqa: BLE001 - a dtype tensorkiln has no name for keeps numpy's
        return str(dtype)


def _parse_dtype(text: str, source: str) -> np.dtype:
    try:
        return DType.parse(text).numpy
    except (ValueError, TypeError):
        try:
            return np.dtype(text)
        except TypeError:
            raise DataFileError(f"{source}: unknown dtype '{text}'") from None


# ---- writing -------------------------------------------------------------------------------------

def save_tensors(path: PathLike, tensors: Mapping[str, Any]) -> Path:
    """Write the tensors (numpy arrays or torch tensors) to .npz, .json or (one tensor) .npy."""
    path = Path(path)
    suffix = _suffix(path)
    arrays = {name: _as_array(value) for name, value in tensors.items()}
    for name, array in arrays.items():
        if array.dtype == object or array.dtype.kind in "OUS":
            raise DataFileError(f"'{path}': tensor '{name}' holds {array.dtype} values, which cannot be saved "
                                f"without pickle")
    if suffix == ".npz":
        data = _npz_bytes(arrays, path)
    elif suffix == ".json":
        # One row per line: readable, and not one line per value for big tensors.
        rows = [json.dumps(row) for row in tensors_to_json(arrays)]
        data = ("[\n" + ",\n".join(rows) + "\n]\n").encode()
    else:
        if len(arrays) != 1:
            raise DataFileError(f"'{path}': a .npy file holds one tensor, not {len(arrays)}: use .npz or .json")
        buffer = io.BytesIO()
        np.save(buffer, _storable(next(iter(arrays.values()))), allow_pickle=False)
        data = buffer.getvalue()
    write_bytes_atomic(path, data)
    return path


def _storable(array: np.ndarray) -> np.ndarray:
    # float32 holds every bfloat16 / fp8 value exactly; numpy would write them as opaque bytes.
    return array.astype(np.float32) if _is_ml_dtype(array.dtype) else array


def _npz_bytes(arrays: Mapping[str, np.ndarray], path: Path) -> bytes:
    if DTYPES_ENTRY in arrays:
        raise DataFileError(f"'{path}': '{DTYPES_ENTRY}' is reserved in tensorkiln's .npz files")
    cast_back = {name: _dtype_name(a.dtype) for name, a in arrays.items() if _is_ml_dtype(a.dtype)}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        entries = [(name, _storable(a)) for name, a in arrays.items()]
        if cast_back:
            entries.append((DTYPES_ENTRY, np.array(json.dumps(cast_back))))
        for name, array in entries:
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                # (not np.ascontiguousarray: it turns 0-d arrays into 1-d ones)
                np.lib.format.write_array(member, array, allow_pickle=False)
    return buffer.getvalue()


def _json_values(array: np.ndarray) -> list:
    if array.dtype.kind == "c":
        raise DataFileError("complex tensors have no JSON form: use .npz")
    if _is_ml_dtype(array.dtype):
        array = array.astype(np.float64)
    return array.reshape(-1).tolist()


def tensors_to_json(tensors: Mapping[str, Any]) -> list[dict[str, Any]]:
    """trtexec's --exportOutput rows, each with the tensor's dtype added."""
    rows = []
    for name, value in tensors.items():
        array = _as_array(value)
        rows.append({"name": name, "dimensions": "x".join(str(d) for d in array.shape),
                     "dtype": _dtype_name(array.dtype), "values": _json_values(array)})
    return rows


# ---- reading -------------------------------------------------------------------------------------

def load_tensors(path: PathLike, *, dtypes: Optional[Mapping[str, Any]] = None,
                 npy_name: Optional[str] = None) -> dict[str, np.ndarray]:
    """Named tensors from a .npz, .json or .npy file, in file order.

    `dtypes` (name -> numpy dtype) types JSON values that carry no dtype of their own;
    `npy_name` names the one tensor of a .npy file (required for .npy)."""
    path = Path(path)
    suffix = _suffix(path)
    if not path.exists():
        raise DataFileError(f"tensor file '{path}' does not exist")
    if not path.is_file():
        raise DataFileError(f"'{path}' is not a file")
    try:
        if suffix == ".npz":
            return _load_npz(path)
        if suffix == ".npy":
            if npy_name is None:
                raise DataFileError(f"'{path}' holds one unnamed tensor: say which tensor it is (name:{path})")
            return {npy_name: np.load(path, allow_pickle=False)}
        data = json.loads(path.read_text())
    except DataFileError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataFileError(f"cannot read '{path}': {exc}") from exc
    return tensors_from_json(data, dtypes or {}, str(path))


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as archive:
        tensors = {key: archive[key] for key in archive.files}
    cast_back = tensors.pop(DTYPES_ENTRY, None)
    if cast_back is not None:
        for name, dtype in json.loads(str(cast_back)).items():
            if name in tensors:
                tensors[name] = tensors[name].astype(_parse_dtype(dtype, str(path)))
    return tensors


def _array_from(values: Any, dtype: np.dtype, dims: Optional[tuple[int, ...]], where: str) -> np.ndarray:
    try:
        array = np.array(values)
        if array.dtype == object:
            raise ValueError("ragged nested lists")
        if dims is not None:
            array = array.reshape(dims)
        return array.astype(dtype)
    except (ValueError, TypeError) as exc:
        raise DataFileError(f"{where}: cannot make a {dtype} tensor"
                            f"{' of shape ' + 'x'.join(map(str, dims)) if dims is not None else ''}: {exc}") from exc


def _dims(spec: Any, where: str) -> tuple[int, ...]:
    if isinstance(spec, str):
        text = spec.strip()
        try:
            return tuple(int(d) for d in text.split("x")) if text else ()
        except ValueError:
            raise DataFileError(f"{where}: dimensions must look like 1x3x224x224, got '{spec}'") from None
    if isinstance(spec, list) and all(isinstance(d, int) for d in spec):
        return tuple(spec)
    raise DataFileError(f"{where}: dimensions must be a string like '1x1000' or a list of integers, got {spec!r}")


def tensors_from_json(data: Any, dtypes: Mapping[str, Any], source: str) -> dict[str, np.ndarray]:
    """Tensors from one of the JSON layouts in the module docstring."""
    tensors: dict[str, np.ndarray] = {}

    def entry(name: Any, spec: Any, where: str) -> None:
        if not isinstance(name, str) or not name:
            raise DataFileError(f"{where}: a tensor needs a non-empty string name")
        if name in tensors:
            raise DataFileError(f"{source}: tensor '{name}' appears more than once")
        if isinstance(spec, dict):
            if "values" not in spec:
                raise DataFileError(f"{where}: tensor '{name}' has no \"values\"")
            dtype = _parse_dtype(spec["dtype"], where) if "dtype" in spec else np.dtype(dtypes.get(name, np.float32))
            shape_spec = spec.get("dimensions", spec.get("shape"))
            dims = _dims(shape_spec, where) if shape_spec is not None else None
            tensors[name] = _array_from(spec["values"], dtype, dims, f"{where}: tensor '{name}'")
        else:
            tensors[name] = _array_from(spec, np.dtype(dtypes.get(name, np.float32)), None,
                                        f"{where}: tensor '{name}'")

    if isinstance(data, list):
        for i, row in enumerate(data):
            if not isinstance(row, dict) or "name" not in row:
                raise DataFileError(f"{source}: entry {i} is not an object with a \"name\"")
            entry(row["name"], row, f"{source} entry {i}")
    elif isinstance(data, dict):
        for name, spec in data.items():
            entry(name, spec, source)
    else:
        raise DataFileError(f"{source}: expected a list of {{\"name\", \"dimensions\", \"values\"}} objects or an "
                            f"object of name -> values, got {type(data).__name__}")
    return tensors


__all__ = ["DataFileError", "SUFFIXES", "load_tensors", "save_tensors", "tensors_from_json", "tensors_to_json"]
