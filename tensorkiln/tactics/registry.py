"""Tactics: the implementations the builder may choose for a layer on a backend.

Every op has a "reference" tactic on every backend: the op's torch reference, which runs
on CPU and CUDA tensors alike. Faster tactics register beside it with a `supports()`
that returns the reason it does not apply to a node (or None when it does).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

import torch

from ..ir import Node
from ..ops import Op, RunContext, all_ops, get_op

BACKENDS = ("cpu", "cuda")
REFERENCE = "reference"

RunFn = Callable[[RunContext, list[Optional[torch.Tensor]], dict[str, Any]], Any]


def _always(node: Node) -> Optional[str]:
    return None


@dataclass(frozen=True)
class Tactic:
    """One implementation of an op on a backend.

    `source` names the library the tactic's kernels come from ("torch", "cudnn", "cublas",
    "cublaslt", "triton", ...), lower case: trtexec's --tacticSources=-CUDNN,+CUBLAS enables and
    disables tactics by it. The reference tactic is never filtered out (every layer keeps an
    implementation).
    """

    name: str
    op_type: str
    backend: str
    run: RunFn
    domain: str = ""
    supports: Callable[[Node], Optional[str]] = field(default=_always, compare=False)
    source: str = "torch"
    # Scratch memory the tactic needs beyond its output: bytes, or a function of (node,
    # inputs); --memPoolSize=workspace:N excludes tactics that need more.
    workspace_bytes: Optional[Union[int, Callable[[Node, list], int]]] = field(default=None, compare=False)
    # True when the tactic writes every output into the tensor RunContext.output gives it (rather
    # than allocating its own): the builder then plans those outputs into the activation arena.
    arena_outputs: bool = field(default=False, compare=False)
    # True when no output is ever (a view of) an input: the arena plan need not keep a layer's
    # inputs alive for as long as its outputs (arena_outputs implies it). Torch's reference ops
    # often return views (Transpose, Split, Slice, a no-op Cast).
    fresh_outputs: bool = field(default=False, compare=False)

    @property
    def key(self) -> str:
        return f"{self.backend}:{self.domain + '::' if self.domain else ''}{self.op_type}:{self.name}"


_EXTRA: dict[tuple[str, str, str], list[Tactic]] = {}


def register_tactic(tactic: Tactic) -> Tactic:
    if tactic.backend not in BACKENDS:
        raise ValueError(f"unknown backend '{tactic.backend}'")
    if tactic.name == REFERENCE:
        raise ValueError("the reference tactic comes from the op definition; register others by their own name")
    _EXTRA.setdefault((tactic.backend, tactic.domain, tactic.op_type), []).append(tactic)
    return tactic


def reference_tactic(op: Op, backend: str) -> Tactic:
    return Tactic(REFERENCE, op.name, backend, op.reference, op.domain)


def candidates(node: Node, backend: str) -> list[tuple[Tactic, Optional[str]]]:
    """Every tactic for the node's op on the backend with the reason it does not apply (None if it does)."""
    op = get_op(node.op_type, node.domain)
    if op is None:
        return []
    out = [(reference_tactic(op, backend), None)]
    for t in _EXTRA.get((backend, op.domain, op.name), []):
        out.append((t, t.supports(node)))
    return out


def find_tactic(backend: str, op_type: str, domain: str, name: str) -> Optional[Tactic]:
    op = get_op(op_type, domain)
    if op is None:
        return None
    if name == REFERENCE:
        return reference_tactic(op, backend)
    for t in _EXTRA.get((backend, op.domain, op.name), []):
        if t.name == name:
            return t
    return None


def ops_without_tactic(backend: str) -> list[str]:
    """Registered ops lacking any tactic on a backend (a test keeps this empty)."""
    missing = []
    for op in all_ops():
        if type(op).reference is Op.reference:
            missing.append(op.name)
    return missing
