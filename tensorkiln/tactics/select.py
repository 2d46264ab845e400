"""A layer's default tactic choice and the candidates considered for it.

`select_tactic` lists every tactic of the node's op on the backend with the reason it
does not apply (None when it does) and picks the default: the first applicable one, the
reference. The auto-tuner (autotune.py) times the applicable candidates on the device
and replaces the default with the fastest; layers it does not tune (a single candidate,
no shapes to tune at, subgraph layers) keep the default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from ..ir import Node
from .registry import candidates, find_tactic


@dataclass(frozen=True)
class TacticChoice:
    tactic: str
    # Each candidate's name and why it was rejected (None for applicable ones).
    considered: tuple[tuple[str, Optional[str]], ...]

    @property
    def applicable(self) -> list[str]:
        return [name for name, reason in self.considered if reason is None]


def select_tactic(node: Node, backend: str) -> Optional[TacticChoice]:
    cands = candidates(node, backend)
    if not cands:
        return None
    usable = [t for t, reason in cands if reason is None]
    chosen = usable[0]
    return TacticChoice(chosen.name, tuple((t.name, reason) for t, reason in cands))


def profile_tactic(node: Node, profile: int) -> Any:
    """The tactic name the tuner chose for this layer at the optimization profile of this
    position: its own where profiles were tuned to different ones (meta "profile_tactics"),
    else the layer's one tactic. As stored (an engine file may hold anything): the caller
    checks it names a tactic."""
    per_profile = node.meta.get("profile_tactics")
    return node.meta.get("tactic") if per_profile is None else per_profile[profile]


def _chosen(node: Node, backend: str) -> list[Any]:
    names = node.meta.get("profile_tactics") or [node.meta.get("tactic")]
    return [find_tactic(backend, node.op_type, node.domain, name) if isinstance(name, str) else None
            for name in names]


def writes_arena(node: Node, backend: str) -> bool:
    """Whether every tactic chosen for the layer (at every profile) takes its outputs from the
    runtime's activation arena (Tactic.arena_outputs), so the builder may plan them there."""
    return all(t is not None and t.arena_outputs for t in _chosen(node, backend))


def may_alias_inputs(node: Node, backend: str) -> bool:
    """Whether an output of the layer may be (a view of) one of its inputs: some tactic chosen for
    it does not promise fresh outputs (Tactic.fresh_outputs), as torch's reference ops do not."""
    return not all(t is not None and (t.fresh_outputs or t.arena_outputs) for t in _chosen(node, backend))
