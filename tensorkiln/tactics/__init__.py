"""Tactic registry and selection. Backend modules register their tactics on import."""

from . import cpu as _cpu  # noqa: F401  (registers CPU tactics)
from . import cuda as _cuda  # noqa: F401  (registers CUDA tactics)
from .registry import (BACKENDS, REFERENCE, Tactic, candidates, find_tactic, ops_without_tactic,
                       register_tactic)
from .select import TacticChoice, select_tactic

__all__ = ["BACKENDS", "REFERENCE", "Tactic", "TacticChoice", "candidates", "find_tactic",
           "ops_without_tactic", "register_tactic", "select_tactic"]
