"""Input tensors for a run (random, or read from .npy/.npz/raw .bin files) and written outputs."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from ..engine import write_bytes_atomic
from ..errors import ConfigError, ShapeError
from ..ir import DType
from .shapes import ShapeMap, TensorSpec, format_dims, split_items, split_name_value

# Fixed so that two runs of the same command see the same inputs (and outputs can be compared).
RANDOM_SEED = 0


class InputFileError(ConfigError):
    """An input file named on the command line is missing or does not fit the engine input."""


def random_inputs(inputs: Sequence[TensorSpec], shapes: ShapeMap, seed: int = RANDOM_SEED) -> dict[str, np.ndarray]:
    """Floats uniform in [-1, 1) like trtexec; integers in [0, 8) so index-like inputs stay in range."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for spec in inputs:
        dims = shapes[spec.name]
        dtype = spec.dtype or DType.FLOAT32
        if dtype == DType.BOOL:
            arrays[spec.name] = rng.integers(0, 2, size=dims).astype(np.bool_)
        elif dtype.is_integer:
            arrays[spec.name] = rng.integers(0, 8, size=dims).astype(dtype.numpy)
        elif dtype.is_float:
            arrays[spec.name] = rng.uniform(-1.0, 1.0, size=dims).astype(np.float32).astype(dtype.numpy)
        else:
            raise ShapeError(f"input '{spec.name}' is {dtype.short}: random values of that dtype are not "
                             f"supported; give the input from a file")
    return arrays


def parse_input_files(specs: Optional[Sequence[str]], flag: str, separator: str) -> list[tuple[Optional[str], Path]]:
    """`name:file.npy,other:file.bin` (or `name=file` for `kiln run`); a bare `file.npz` names no input."""
    pairs: list[tuple[Optional[str], Path]] = []
    for spec in specs or ():
        for item in split_items(spec, flag):
            if item.lower().endswith(".npz") and separator not in item.replace("'", ""):
                pairs.append((None, Path(item)))
                continue
            # File paths may contain ':' (drive letters) far more rarely than tensor names do,
            # so ':' splits on the last one, as trtexec does; '=' splits on the first.
            name, file = split_name_value(item, separator, flag, split_on_last=separator == ":")
            pairs.append((name, Path(file)))
    return pairs


def read_input_files(pairs: Sequence[tuple[Optional[str], Path]], inputs: Sequence[TensorSpec],
                     shapes: ShapeMap, flag: str) -> dict[str, np.ndarray]:
    """Arrays for the named inputs. .npy/.npz carry their shape; raw files take the run shape."""
    by_name = {spec.name: spec for spec in inputs}
    arrays: dict[str, np.ndarray] = {}

    def add(name: str, array: np.ndarray, source: Path) -> None:
        if name not in by_name:
            raise InputFileError(f"{flag}: '{name}' (from '{source}') is not an input of the engine (inputs: "
                                 f"{', '.join(repr(n) for n in by_name)})")
        if name in arrays:
            raise InputFileError(f"{flag}: input '{name}' is given more than once")
        want = by_name[name].dtype
        if want is not None and array.dtype != want.numpy:
            raise InputFileError(f"{flag}: input '{name}' from '{source}' is {array.dtype}, but the engine input "
                                 f"is {want.short}: save it as {want.short}")
        arrays[name] = array

    for name, path in pairs:
        if not path.is_file():
            raise InputFileError(f"{flag}: input file '{path}' does not exist" if not path.exists()
                                 else f"{flag}: '{path}' is not a file")
        suffix = path.suffix.lower()
        try:
            if suffix == ".npz":
                with np.load(path, allow_pickle=False) as archive:
                    contents = {key: archive[key] for key in archive.files}
                if name is None:
                    for key, array in contents.items():
                        add(key, array, path)
                elif name in contents:
                    add(name, contents[name], path)
                elif len(contents) == 1:
                    add(name, next(iter(contents.values())), path)
                else:
                    raise InputFileError(f"{flag}: '{path}' has no array named '{name}' (it has "
                                         f"{', '.join(contents) or 'none'})")
            elif suffix == ".npy":
                add(name or "", np.load(path, allow_pickle=False), path)
            else:
                add(name or "", _read_raw(path, by_name.get(name or ""), shapes, flag), path)
        except (ValueError, OSError, EOFError) as exc:
            raise InputFileError(f"{flag}: cannot read '{path}': {exc}") from exc
    return arrays


def _read_raw(path: Path, spec: Optional[TensorSpec], shapes: ShapeMap, flag: str) -> np.ndarray:
    """A raw binary file (trtexec's .bin): the input's dtype at its run shape, nothing else."""
    if spec is None:
        return np.zeros(0)  # `add` reports the unknown name
    dtype = (spec.dtype or DType.FLOAT32).numpy
    dims = shapes.get(spec.name)
    if dims is None:
        raise InputFileError(f"{flag}: raw file '{path}' has no shape of its own: give input '{spec.name}' "
                             f"a shape with --shapes, or use .npy")
    data = path.read_bytes()
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise InputFileError(f"{flag}: raw file '{path}' has {len(data)} bytes; input '{spec.name}' "
                             f"{dtype}[{format_dims(dims)}] needs {expected}")
    return np.frombuffer(data, dtype=dtype).reshape(dims).copy()


def is_raw(path: Path) -> bool:
    return path.suffix.lower() not in (".npy", ".npz")


def shapes_of(arrays: Mapping[str, np.ndarray]) -> ShapeMap:
    return {name: tuple(int(d) for d in a.shape) for name, a in arrays.items()}


def merge_file_shapes(given: ShapeMap, from_files: ShapeMap, shapes_flag: str) -> ShapeMap:
    """Shapes of loaded arrays count as given shapes; a contradiction with the flag is an error."""
    merged = dict(given)
    for name, dims in from_files.items():
        if name in merged and merged[name] != dims:
            raise ShapeError(f"input '{name}': {shapes_flag} says {format_dims(merged[name])}, but its input file "
                             f"holds {format_dims(dims)}")
        merged[name] = dims
    return merged


def to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach"):
        from ..ir import torch_to_numpy
        return torch_to_numpy(value.detach().cpu())
    return np.asarray(value)


def _json_values(array: np.ndarray) -> list:
    if array.dtype.kind in "biuf" and array.dtype.itemsize <= 8 and array.dtype.kind != "V":
        return array.reshape(-1).tolist()
    return array.astype(np.float64).reshape(-1).tolist()


def outputs_as_json(outputs: Mapping[str, Any]) -> list[dict[str, Any]]:
    """trtexec's --exportOutput layout: [{"name", "dimensions": "1x1000", "values": [...]}]."""
    rows = []
    for name, value in outputs.items():
        array = to_numpy(value)
        if array.dtype.kind not in "biuf":
            array = array.astype(np.float64)  # bfloat16/fp8 (ml_dtypes) have no JSON number form
        rows.append({"name": name, "dimensions": format_dims(array.shape), "values": _json_values(array)})
    return rows


def write_json(path: Path, data: Any) -> None:
    write_bytes_atomic(Path(path), (json.dumps(data, indent=1) + "\n").encode())


def safe_file_name(name: str) -> str:
    """A tensor name as a file name: path separators and odd characters become '_'."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".")
    return cleaned or "output"


def save_outputs_npz(path: Path, outputs: Mapping[str, Any]) -> None:
    import io
    buffer = io.BytesIO()
    np.savez(buffer, **{name: to_numpy(v) for name, v in outputs.items()})
    write_bytes_atomic(Path(path), buffer.getvalue())


def save_outputs_dir(directory: Path, outputs: Mapping[str, Any]) -> list[Path]:
    import io
    written = []
    used: set[str] = set()
    for name, value in outputs.items():
        base = safe_file_name(name)
        stem, i = base, 1
        while stem in used:
            stem, i = f"{base}_{i}", i + 1
        used.add(stem)
        buffer = io.BytesIO()
        np.save(buffer, to_numpy(value), allow_pickle=False)
        path = Path(directory) / f"{stem}.npy"
        write_bytes_atomic(path, buffer.getvalue())
        written.append(path)
    return written


__all__ = ["InputFileError", "RANDOM_SEED", "merge_file_shapes", "outputs_as_json", "parse_input_files",
           "is_raw", "random_inputs", "read_input_files", "save_outputs_dir", "save_outputs_npz", "shapes_of", "to_numpy",
           "write_json"]
