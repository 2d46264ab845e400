"""Reading an ONNX model from a path, bytes or proto, with clear errors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import onnx
from google.protobuf.message import DecodeError

from ...errors import ModelLoadError

ModelSource = Union[str, os.PathLike, bytes, onnx.ModelProto]


def load_model_proto(source: ModelSource) -> onnx.ModelProto:
    """Load a model, its external data included. Errors name the file."""
    if isinstance(source, onnx.ModelProto):
        return source
    if isinstance(source, (bytes, bytearray)):
        try:
            model = onnx.load_model_from_string(bytes(source))
        except (DecodeError, ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"the given bytes are not a valid ONNX model ({exc})") from exc
        _check_nonempty(model, "<bytes>")
        return model
    path = Path(source)
    if not path.exists():
        raise ModelLoadError(f"model file '{path}' does not exist")
    if path.is_dir():
        raise ModelLoadError(f"model path '{path}' is a directory, not an ONNX file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError) as exc:
        raise ModelLoadError(f"'{path}' is not a valid ONNX model (truncated or corrupt?): {exc}") from exc
    _check_nonempty(model, str(path))
    try:
        onnx.external_data_helper.load_external_data_for_model(model, str(path.parent))
    except (FileNotFoundError, OSError) as exc:
        raise ModelLoadError(f"'{path}': external data could not be read: {exc}") from exc
    except Exception as exc:  # onnx raises ValueError etc. for bad locations
        raise ModelLoadError(f"'{path}': external data is invalid: {exc}") from exc
    return model


def _check_nonempty(model: onnx.ModelProto, where: str) -> None:
    # Protobuf happily parses many byte strings (even empty ones) as an empty model.
    if not model.HasField("graph") or (len(model.graph.node) == 0 and len(model.graph.output) == 0):
        raise ModelLoadError(f"'{where}' is not a valid ONNX model: it has no graph (truncated or corrupt?)")
    if not model.opset_import:
        raise ModelLoadError(f"'{where}' is not a valid ONNX model: it declares no opset")
