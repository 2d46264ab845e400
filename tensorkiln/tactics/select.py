"""Choosing a tactic for a node: the fastest applicable candidate.

With a single applicable candidate nothing is timed. Timing several candidates on the
device (the autotuner) lands with the CUDA backend's first non-reference tactic; until
then every op has exactly one candidate per backend, the reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..ir import Node
from .registry import candidates


@dataclass(frozen=True)
class TacticChoice:
    tactic: str
    # Each candidate's name and why it was rejected (None for applicable ones).
    considered: tuple[tuple[str, Optional[str]], ...]


def select_tactic(node: Node, backend: str) -> Optional[TacticChoice]:
    cands = candidates(node, backend)
    if not cands:
        return None
    usable = [t for t, reason in cands if reason is None]
    chosen = usable[0]
    return TacticChoice(chosen.name, tuple((t.name, reason) for t, reason in cands))
