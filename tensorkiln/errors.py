"""User-facing errors. Every error a user can cause is a TensorkilnError subclass whose
message names the node, input or file at fault; the CLI prints it without a traceback."""

from __future__ import annotations


class TensorkilnError(Exception):
    """Base of every error tensorkiln raises on purpose."""


class GraphError(TensorkilnError):
    """The graph is malformed (dangling value, cycle, bad node)."""


class ShapeError(TensorkilnError):
    """A shape or dtype does not fit what an op or the engine expects."""


class UnsupportedOpError(TensorkilnError):
    """One or more nodes use an op, opset or attribute tensorkiln does not implement."""

    def __init__(self, problems: list[tuple[str, str, str, str]]):
        # problems: (node name, op type, opset/domain, reason)
        self.problems = problems
        lines = [f"{len(problems)} unsupported node(s):"]
        for name, op_type, opset, reason in problems:
            lines.append(f"  - node '{name}' ({op_type}, {opset}): {reason}")
        super().__init__("\n".join(lines))


class ModelLoadError(TensorkilnError):
    """A model file is missing, truncated or not a valid model."""


class EngineFormatError(TensorkilnError):
    """An engine file is corrupt, truncated, or from an incompatible version or device."""


class BuildError(TensorkilnError):
    """The builder could not produce an engine (no tactic, bad config)."""


class ConfigError(TensorkilnError):
    """A builder option, profile or command-line flag is invalid."""


class ExecutionError(TensorkilnError):
    """Running an engine failed (a node's tactic raised on the given inputs)."""
