"""Pattern rules (data) and the engine that applies them."""

from .engine import apply_rules
from .rule import Const, Match, Pat, Rewriter, Rule, Var

__all__ = ["Const", "Match", "Pat", "Rewriter", "Rule", "Var", "apply_rules"]
