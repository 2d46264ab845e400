"""`kiln exec --loadRefOutputs`: check the inference run's outputs against reference outputs.

trtexec 11's accuracy flags, same spellings:
  --loadRefOutputs=SPEC      reference outputs, in --loadInputs' form: name:file.npy, name:file.bin (raw
                             bytes of the output's dtype at its run shape), name:file.npz, a bare
                             file.npz whose array names are output names, or (tensorkiln's addition) a
                             bare file.json in --exportOutput's layout, so `--exportOutput` of one run
                             is the reference of the next.
  --accuracyAlgorithm=ALG    l0: fraction of elements outside atol/rtol (default); l1: mean absolute
                             error; l2: mean squared error; lInf: max absolute error; cos: 1 - cosine
                             similarity.
  --atol, --rtol             tolerances of l0 (default 1e-5 each). An element is outside when its
                             absolute error > atol and its relative error > rtol (Polygraphy's rule,
                             the one `kiln compare` uses).
  --accuracyThreshold=X      the largest accuracy loss that passes. trtexec requires it with
                             --loadRefOutputs; here it defaults to 0, so by default any mismatching
                             element fails the run.
Each reference tensor prints one result line; any failure makes the run fail (exit code 1 and
"&&&& FAILED"). Engine outputs without a reference are not checked (and say so).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from ..debug.compare import as_array
from ..debug.data_files import load_tensors
from ..debug.stats import error_stats, error_stats_and_errors, format_number, outside_tolerance
from ..errors import ConfigError
from .report import Log, fmt
from .shapes import format_dims, split_items, split_name_value
from .tensors import InputFileError
from .usage import KilnArgumentParser, UsageError

ALGORITHMS = ("l0", "l1", "l2", "lInf", "cos")
DEFAULT_TOLERANCE = "1e-5"
FLAG = "--loadRefOutputs"


def add_reference_flags(parser: KilnArgumentParser) -> None:
    """Add trtexec's accuracy-check flags to `kiln exec`'s parser."""
    group = parser.add_argument_group("Accuracy Options")
    group.add_argument("--loadRefOutputs", action="append", metavar="SPEC",
                       help="reference outputs to check the run against: name:file.npy|.bin|.npz, or a bare "
                            "file.npz|file.json (comma separated, repeatable)")
    group.add_argument("--accuracyAlgorithm", default="l0", metavar="ALG",
                       help="l0 (fraction of elements outside atol/rtol, default), l1 (mean abs error), l2 (mean "
                            "squared error), lInf (max abs error), cos (1 - cosine similarity)")
    group.add_argument("--atol", default=DEFAULT_TOLERANCE, metavar="X",
                       help=f"absolute tolerance of the l0 check (default = {DEFAULT_TOLERANCE})")
    group.add_argument("--rtol", default=DEFAULT_TOLERANCE, metavar="X",
                       help=f"relative tolerance of the l0 check (default = {DEFAULT_TOLERANCE})")
    group.add_argument("--accuracyThreshold", default="0", metavar="X",
                       help="largest accuracy loss that passes (default = 0: any mismatch fails)")


def _number(value: str, flag: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise UsageError(f"{flag} takes a number, got '{value}'") from None
    if not number >= 0 or math.isinf(number):
        raise UsageError(f"{flag} must be a finite number >= 0, got '{value}'")
    return number


def _algorithm(value: str) -> str:
    for name in ALGORITHMS:
        if value.lower() == name.lower():
            return name
    raise UsageError(f"--accuracyAlgorithm must be one of {', '.join(ALGORITHMS)}, got '{value}'")


def _specs(args: argparse.Namespace) -> list[tuple[Optional[str], Path]]:
    pairs: list[tuple[Optional[str], Path]] = []
    for text in args.loadRefOutputs or ():
        for item in split_items(text, FLAG):
            bare = item.replace("'", "")
            if item.lower().endswith((".npz", ".json")) and ":" not in bare:
                pairs.append((None, Path(item)))
                continue
            name, file = split_name_value(item, ":", FLAG, split_on_last=True)
            pairs.append((name, Path(file)))
    return pairs


def validate_reference_flags(args: argparse.Namespace) -> None:
    """Check the accuracy flags and that the reference files exist, before any (slow) build or run.
    (`check_reference_outputs` checks them again; calling this first only fails sooner.)"""
    _number(args.atol, "--atol")
    _number(args.rtol, "--rtol")
    _number(args.accuracyThreshold, "--accuracyThreshold")
    _algorithm(args.accuracyAlgorithm)
    if args.loadRefOutputs and (getattr(args, "buildOnly", False) or getattr(args, "skipInference", False)):
        raise UsageError(f"{FLAG} checks the outputs of the inference run; it cannot be combined with "
                         f"--buildOnly/--skipInference")
    for _, path in _specs(args):
        if not path.is_file():
            raise InputFileError(f"{FLAG}: reference file '{path}' does not exist" if not path.exists()
                                 else f"{FLAG}: '{path}' is not a file")


def _read_raw(path: Path, like: np.ndarray) -> np.ndarray:
    """trtexec's raw .bin: the output's dtype at its run shape, nothing else."""
    data = path.read_bytes()
    if len(data) != like.nbytes:
        raise InputFileError(f"{FLAG}: raw file '{path}' has {len(data)} bytes; the output "
                             f"{like.dtype}[{format_dims(like.shape)}] has {like.nbytes}")
    return np.frombuffer(data, dtype=like.dtype).reshape(like.shape).copy()


def load_reference_outputs(args: argparse.Namespace, outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The reference tensors named by --loadRefOutputs, checked to be outputs of the engine."""
    references: dict[str, np.ndarray] = {}
    dtypes = {name: array.dtype for name, array in outputs.items()}
    for name, path in _specs(args):
        if not path.is_file():
            raise InputFileError(f"{FLAG}: reference file '{path}' does not exist" if not path.exists()
                                 else f"{FLAG}: '{path}' is not a file")
        suffix = path.suffix.lower()
        if suffix in (".npy", ".npz", ".json"):
            loaded = load_tensors(path, dtypes=dtypes, npy_name=name)
            if name is not None and suffix != ".npy":
                if name in loaded:
                    loaded = {name: loaded[name]}
                elif len(loaded) == 1:
                    loaded = {name: next(iter(loaded.values()))}
                else:
                    raise InputFileError(f"{FLAG}: '{path}' has no tensor '{name}' (it has "
                                         f"{', '.join(repr(n) for n in loaded) or 'none'})")
        else:
            if name not in outputs:
                raise ConfigError(f"{FLAG}: '{name}' is not an output of the engine (outputs: "
                                  f"{', '.join(repr(n) for n in outputs)})")
            loaded = {name: _read_raw(path, outputs[name])}
        if not loaded:
            raise InputFileError(f"{FLAG}: '{path}' holds no tensors")
        for key, array in loaded.items():
            if key not in outputs:
                raise ConfigError(f"{FLAG}: '{key}' (from '{path}') is not an output of the engine (outputs: "
                                  f"{', '.join(repr(n) for n in outputs)})")
            if key in references:
                raise ConfigError(f"{FLAG}: output '{key}' is given more than once")
            references[key] = array
    return references


def accuracy_loss(actual: np.ndarray, reference: np.ndarray, algorithm: str, atol: float, rtol: float) -> float:
    """trtexec's accuracy loss of one tensor (see the module docstring). A NaN or infinity that
    the reference does not have makes every algorithm's loss +inf (or, for l0, counts as outside)."""
    stats, absolute, relative = error_stats_and_errors(actual, reference)
    if absolute.size == 0:
        return 0.0
    if algorithm == "l0":
        return float(outside_tolerance(absolute, relative, atol, rtol).mean())
    if np.isinf(absolute).any():
        return math.inf
    if algorithm == "l1":
        return stats.mean_abs
    if algorithm == "l2":
        return stats.mse
    if algorithm == "lInf":
        return stats.max_abs
    return 1.0 - stats.cosine


def check_reference_outputs(args: argparse.Namespace, outputs: Mapping[str, Any], log: Log) -> bool:
    """Compare the run's outputs with --loadRefOutputs; print one line per tensor. True when every
    reference tensor is within --accuracyThreshold (or no reference was given)."""
    if not args.loadRefOutputs:
        return True
    atol = _number(args.atol, "--atol")
    rtol = _number(args.rtol, "--rtol")
    threshold = _number(args.accuracyThreshold, "--accuracyThreshold")
    algorithm = _algorithm(args.accuracyAlgorithm)
    arrays = {name: as_array(value) for name, value in outputs.items()}
    references = load_reference_outputs(args, arrays)
    log.info("=== Accuracy check ===")
    log.info(f"Algorithm: {algorithm}, threshold {fmt(threshold)}"
             + (f", atol {fmt(atol)}, rtol {fmt(rtol)}" if algorithm == "l0" else ""))
    failed = 0
    for name, actual in arrays.items():
        reference = references.get(name)
        if reference is None:
            log.info(f"Output '{name}': no reference given, not checked")
            continue
        if actual.shape != reference.shape:
            log.raw(f"[E] Accuracy check for output '{name}' FAILED: shape {format_dims(actual.shape) or '(scalar)'} "
                    f"differs from the reference's {format_dims(reference.shape) or '(scalar)'}")
            failed += 1
            continue
        loss = accuracy_loss(actual, reference, algorithm, atol, rtol)
        ok = loss <= threshold
        detail = ""
        if actual.size:
            stats = error_stats(actual, reference)
            detail = (f" (max abs error {format_number(stats.max_abs)}, max rel error {format_number(stats.max_rel)}, "
                      f"NaN/Inf {stats.nan_actual}/{stats.inf_actual} vs reference's "
                      f"{stats.nan_expected}/{stats.inf_expected})")
        line = f"Accuracy check for output '{name}': {algorithm} loss = {fmt(loss)}{detail}"
        if ok:
            log.info(f"{line}: PASSED")
        else:
            log.raw(f"[E] {line} > threshold {fmt(threshold)}: FAILED")
            failed += 1
    if failed:
        log.raw(f"[E] Accuracy check FAILED: {failed} of {len(references)} output(s) differ from the reference")
    else:
        log.info(f"Accuracy check PASSED: {len(references)} output(s) match the reference")
    return failed == 0


__all__ = ["ALGORITHMS", "accuracy_loss", "add_reference_flags", "check_reference_outputs",
           "load_reference_outputs", "validate_reference_flags"]
