"""Precision: which layers run in fp32, fp16 or bf16, and the Casts between them."""

from .assign import (CONSTRAINTS, PRECISIONS, PrecisionReport, assign_precisions, check_layer_precisions,
                     low_precision_blocker, parse_precision, precision_name)
from .policy import SENSITIVE_OPS, SUM_REDUCTIONS, sensitivity_reason

__all__ = ["CONSTRAINTS", "PRECISIONS", "PrecisionReport", "SENSITIVE_OPS", "SUM_REDUCTIONS", "assign_precisions",
           "check_layer_precisions", "low_precision_blocker", "parse_precision", "precision_name",
           "sensitivity_reason"]
