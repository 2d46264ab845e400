"""Memory planning: value liveness and the activation arena layout."""

from .arena import ALIGNMENT, ArenaPlan, Buffer, memory_summary, overlapping_pairs, plan_arena
from .liveness import Liveness, compute_liveness

__all__ = ["ALIGNMENT", "ArenaPlan", "Buffer", "Liveness", "compute_liveness", "memory_summary",
           "overlapping_pairs", "plan_arena"]
