"""Accuracy debugging: error statistics, comparison against a reference (whole outputs or
every layer), and the files that carry inputs and reference outputs between machines."""

from .compare import (REFERENCES, ComparisonReport, LayerComparisonReport, LayerInfo, ReferenceError, ReferenceRun,
                      TensorComparison, Thresholds, compare_layers, compare_outputs, compare_tensor,
                      default_precision, layers_by_output, node_output_names, run_reference)
from .data_files import DataFileError, load_tensors, save_tensors
from .stats import ERROR_STATS, ErrorStats, cosine_similarity, error_stats, snr_db

__all__ = ["ERROR_STATS", "REFERENCES", "ComparisonReport", "DataFileError", "ErrorStats", "LayerComparisonReport",
           "LayerInfo", "ReferenceError", "ReferenceRun", "TensorComparison", "Thresholds", "compare_layers",
           "compare_outputs", "compare_tensor", "cosine_similarity", "default_precision", "error_stats",
           "layers_by_output", "load_tensors", "node_output_names", "run_reference", "save_tensors", "snr_db"]
