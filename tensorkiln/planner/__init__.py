"""Memory planning: value liveness (and, with the CUDA backend, the arena layout)."""

from .liveness import Liveness, compute_liveness

__all__ = ["Liveness", "compute_liveness"]
