"""tensorkiln: deep-learning inference optimizer and runtime.

    import tensorkiln
    model = tensorkiln.compile("model.onnx")
    outputs = model.predict({"input": array})
"""

from .api import CompiledModel, compile
from .builder import Builder, BuilderConfig, OptimizationProfile
from .engine import EnginePlan
from .errors import (BuildError, ConfigError, EngineFormatError, ExecutionError, GraphError, ModelLoadError,
                     ShapeError, TensorkilnError, UnsupportedOpError)
from .ir import DType, Graph
from .network import NetworkDefinition
from .runtime import Engine, ExecutionContext, Runtime
from .version import __version__

__all__ = ["BuildError", "Builder", "BuilderConfig", "CompiledModel", "ConfigError", "DType", "Engine",
           "EngineFormatError", "EnginePlan", "ExecutionContext", "ExecutionError", "Graph", "GraphError",
           "ModelLoadError", "NetworkDefinition", "OptimizationProfile", "Runtime", "ShapeError",
           "TensorkilnError", "UnsupportedOpError", "__version__", "compile"]
