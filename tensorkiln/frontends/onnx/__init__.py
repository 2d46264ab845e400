"""ONNX frontend."""

from .importer import import_model, load_model_proto, parse_onnx

__all__ = ["import_model", "load_model_proto", "parse_onnx"]
