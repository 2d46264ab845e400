"""The engine plan: everything the runtime needs to run a built network, as data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from ..ir import Graph, TensorType, ValueType
from ..ir.shape import Dim
from ..version import ENGINE_FORMAT_VERSION, __version__


@dataclass(frozen=True)
class DeviceInfo:
    backend: str  # "cpu" or "cuda"
    name: str  # e.g. "cpu", "NVIDIA H100 80GB HBM3"
    compute_capability: Optional[tuple[int, int]] = None

    def describe(self) -> str:
        if self.compute_capability:
            return f"{self.backend} device '{self.name}' (sm_{self.compute_capability[0]}{self.compute_capability[1]})"
        return f"{self.backend} device '{self.name}'"


@dataclass(frozen=True)
class ProfileRange:
    """min/opt/max shapes of one input in one optimization profile."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


@dataclass(frozen=True)
class IOTensor:
    """One engine input or output. `type` is a TensorType, or a SequenceType/OptionalType
    for the (rare) graphs whose I/O are ONNX sequences or optionals."""

    name: str
    type: Optional[ValueType]
    # One entry per optimization profile (empty when the engine has none).
    profiles: tuple[ProfileRange, ...] = ()

    @property
    def is_tensor(self) -> bool:
        return isinstance(self.type, TensorType)

    @property
    def dtype(self) -> Any:  # DType, or None for a sequence/optional
        return self.type.dtype if self.is_tensor else None

    @property
    def shape(self) -> Optional[tuple[Dim, ...]]:
        return self.type.shape if self.is_tensor else None

    def __str__(self) -> str:
        return f"{self.name}: {self.type}"


@dataclass(frozen=True)
class EnginePlan:
    graph: Graph
    device: DeviceInfo
    build_config: dict[str, Any] = field(default_factory=dict)
    # Per profile: input name -> ProfileRange.
    profiles: tuple[dict[str, ProfileRange], ...] = ()
    memory: dict[str, Any] = field(default_factory=dict)
    build_info: dict[str, Any] = field(default_factory=dict)
    # Network inputs the optimizer found unread (e.g. read only through a static Shape):
    # not engine inputs, but feeds for them are accepted and ignored so callers need not change.
    ignored_inputs: tuple[str, ...] = ()
    library_version: str = __version__
    format_version: int = ENGINE_FORMAT_VERSION

    @property
    def inputs(self) -> list[IOTensor]:
        return [IOTensor(v.name, v.type, tuple(p[v.name] for p in self.profiles if v.name in p))
                for v in self.graph.inputs]

    @property
    def outputs(self) -> list[IOTensor]:
        return [IOTensor(v.name, v.type) for v in self.graph.outputs]

    @property
    def layers(self) -> list[dict[str, Any]]:
        """One row per top-level layer: name, op, tactic (the first profile's), precision, stream
        (0: the caller's; as stored: the runtime refuses a value that is not a stream number
        when it loads the plan), and "profile_tactics" where the profiles' tactics differ."""
        return [{"name": n.name, "op": n.op_type, "tactic": n.meta.get("tactic", "?"),
                 "precision": n.meta.get("precision", "?"), "stream": n.meta.get("stream", 0),
                 "inputs": [None if v is None else v.name for v in n.inputs],
                 "outputs": [v.name for v in n.outputs],
                 **({"profile_tactics": n.meta["profile_tactics"]} if "profile_tactics" in n.meta else {})}
                for n in self.graph.nodes]

    def serialize(self) -> bytes:
        from .format import serialize_plan
        return serialize_plan(self)

    def save(self, path: str) -> None:
        from .format import save_plan
        save_plan(self, path)
