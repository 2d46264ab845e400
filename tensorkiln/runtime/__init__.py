"""The runtime: load an engine plan and run it. Imports no frontend, pass or onnx."""

from .runtime import Engine, ExecutionContext, Runtime

__all__ = ["Engine", "ExecutionContext", "Runtime"]
