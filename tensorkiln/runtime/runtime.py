"""Runtime, Engine and ExecutionContext: load a plan and run it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch

from ..engine import DeviceInfo, EnginePlan, IOTensor, deserialize_plan, load_plan
from ..errors import EngineFormatError, ExecutionError, ShapeError
from ..ir import Node, OptionalType
from ..tactics import find_tactic
from ..tactics.device import describe_device, parse_device
from .executor import GraphExecutor, TacticFn
from .io import check_inputs, missing_or_extra, to_runtime_value, to_user_value

PlanSource = Union[str, os.PathLike, bytes, bytearray, EnginePlan]


class Runtime:
    """Loads engine plans for one device ("cpu", "cuda", "cuda:N")."""

    def __init__(self, device: Union[str, torch.device, None] = "cpu"):
        self.device = parse_device(device)
        self.device_info = DeviceInfo(*describe_device(self.device))

    def load(self, source: PlanSource, *, source_name: str = "") -> "Engine":
        """Load a plan (path, bytes or EnginePlan); `source_name` names it in errors when it is not a path."""
        if isinstance(source, EnginePlan):
            plan = source
        elif isinstance(source, (bytes, bytearray, memoryview)):
            plan = deserialize_plan(source)
        elif isinstance(source, (str, os.PathLike)):
            plan = load_plan(source)
        else:
            raise TypeError(f"cannot load an engine from {type(source).__name__}")
        self._check_device(plan.device, str(source) if isinstance(source, (str, os.PathLike)) else source_name)
        return Engine(plan, self.device)

    def _check_device(self, built_for: DeviceInfo, source: str) -> None:
        here = self.device_info
        where = f"engine file '{source}'" if source else "engine plan"
        if built_for.backend != here.backend:
            raise EngineFormatError(f"{where} was built for {built_for.describe()}; this runtime is "
                                    f"{here.describe()}: rebuild it for this device")
        if built_for.backend == "cuda" and (built_for.name, built_for.compute_capability) != (
                here.name, here.compute_capability):
            raise EngineFormatError(f"{where} was built for {built_for.describe()}; this GPU is "
                                    f"{here.describe()}: rebuild it on this GPU")


class Engine:
    """A loaded plan, ready to make execution contexts."""

    def __init__(self, plan: EnginePlan, device: torch.device):
        self.plan = plan
        self.device = device
        self._resolved: dict[int, TacticFn] = {}
        for node in plan.graph.walk():
            self._resolved[id(node)] = self._bind(node)
        self.executor = GraphExecutor(plan.graph, device, lambda n: self._resolved[id(n)])

    def _bind(self, node: Node) -> TacticFn:
        name = node.meta.get("tactic")
        if name is None:
            raise EngineFormatError(f"engine layer '{node.name}' ({node.op_type}) has no tactic recorded")
        tactic = find_tactic(self.device.type, node.op_type, node.domain, name)
        if tactic is None:
            raise EngineFormatError(f"engine layer '{node.name}' uses tactic '{name}' for {node.op_type}, "
                                    f"which this tensorkiln does not have: rebuild the engine")
        return tactic.run

    @property
    def inputs(self) -> list[IOTensor]:
        return self.plan.inputs

    @property
    def outputs(self) -> list[IOTensor]:
        return self.plan.outputs

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    @property
    def num_layers(self) -> int:
        return len(self.plan.graph.nodes)

    @property
    def layers(self) -> list[dict[str, Any]]:
        return self.plan.layers

    def create_execution_context(self) -> "ExecutionContext":
        return ExecutionContext(self)


class ExecutionContext:
    """Runs an engine. Numpy inputs give numpy outputs; torch tensors (any of them) give torch tensors."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._specs = engine.inputs
        self._ignored = frozenset(engine.plan.ignored_inputs)
        self._checked: set[tuple] = set()

    def execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        return self._execute(inputs, None)

    def execute_debug(self, inputs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Outputs, and every layer's output tensors by name in layer order (TensorRT's debug
        tensors). A fused layer's output keeps the name of the last tensor it replaced."""
        record: dict[str, Any] = {}
        outputs = self._execute(inputs, record)
        return outputs, record

    def _execute(self, inputs: Mapping[str, Any], record: Optional[dict[str, Any]]) -> dict[str, Any]:
        problem = missing_or_extra(self._specs, inputs, self._ignored)
        if problem:
            raise ShapeError(problem)
        device = self.engine.device
        values: dict[str, Any] = {}
        any_torch = False
        for spec in self._specs:
            values[spec.name], was_numpy = to_runtime_value(spec, inputs[spec.name], device)
            any_torch |= not was_numpy
        key = tuple((tuple(values[s.name].shape), str(values[s.name].dtype)) for s in self._specs if s.is_tensor)
        if key not in self._checked:
            check_inputs(self._specs, values)
            self._checked.add(key)
        outs = self.engine.executor.run([values[s.name] for s in self._specs], record=record)
        as_numpy = not any_torch
        if record is not None:
            for name in list(record):
                record[name] = to_user_value(record[name], as_numpy)
        result = {}
        for spec, value in zip(self.engine.outputs, outs):
            if value is None and not isinstance(spec.type, OptionalType):
                raise ExecutionError(f"output '{spec.name}' was not produced")
            result[spec.name] = to_user_value(value, as_numpy)
        return result

    __call__ = execute
