"""Run the ONNX node tests shipped in the onnx wheel and summarise the pass rate."""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

import numpy as np
from onnx.backend.test.loader import load_model_tests
from onnx.backend.test.runner import Runner

from ..errors import TensorkilnError
from .backend import TensorkilnBackend, as_array
from .exclusions import exclusion_reason


@dataclass(frozen=True)
class CaseResult:
    name: str
    status: str  # "pass", "fail", "excluded-pass" (an excluded case that passes), "excluded"
    message: str = ""


def node_tests(pattern: Optional[str] = None) -> list:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tests = load_model_tests(kind="node")
    if pattern:
        rx = re.compile(pattern)
        tests = [t for t in tests if rx.search(t.name)]
    return sorted(tests, key=lambda t: t.name)


def assert_same_outputs(expected: list, outputs: list, rtol: float, atol: float) -> None:
    """onnx's comparison, applied element-wise to sequence outputs (onnx's own comparer
    cannot take sequences of 0-d tensors) and to empty optionals."""
    if len(expected) != len(outputs):
        raise AssertionError(f"{len(outputs)} outputs, expected {len(expected)}")
    for want, got in zip(expected, outputs):
        want = as_array(want)
        if want is None or got is None:
            if not (want is None and got is None):
                raise AssertionError(f"optional output: got {type(got).__name__}, expected {type(want).__name__}")
        elif isinstance(want, list):
            if not isinstance(got, list) or len(got) != len(want):
                raise AssertionError(f"sequence output: got {type(got).__name__} of "
                                     f"{len(got) if isinstance(got, list) else '-'}, expected {len(want)} items")
            assert_same_outputs(want, got, rtol, atol)
        else:
            Runner.assert_similar_outputs([want], [got], rtol=rtol, atol=atol)


def run_case(test, device: str = "CPU") -> Optional[str]:
    """None if the case passes, else a one-line reason."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rep = TensorkilnBackend.prepare(test.model, device)
            for inputs, expected in test.data_sets:
                outputs = rep.run(inputs)
                assert_same_outputs(list(expected), list(outputs), test.rtol, test.atol)
    except TensorkilnError as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
    except AssertionError as exc:
        return "mismatch: " + " ".join(str(exc).split())[:300]
    except Exception as exc:  # noqa: BLE001 - a crash is a failure to report, not to hide
        return f"crash {type(exc).__name__}: {exc}"[:300]
    return None


def run_suite(tests: Iterable, device: str = "CPU", include_excluded: bool = True,
              progress: Optional[Callable[[str], None]] = None) -> list[CaseResult]:
    results = []
    for test in tests:
        if progress:
            progress(test.name)
        reason = exclusion_reason(test.name)
        if reason is not None and not include_excluded:
            results.append(CaseResult(test.name, "excluded", reason))
            continue
        failure = run_case(test, device)
        if reason is not None:
            results.append(CaseResult(test.name, "excluded-pass" if failure is None else "excluded", reason))
        else:
            results.append(CaseResult(test.name, "pass" if failure is None else "fail", failure or ""))
    return results


def pass_rate(results: list[CaseResult]) -> float:
    passed = sum(r.status in ("pass", "excluded-pass") for r in results)
    return passed / max(len(results), 1)


__all__ = ["CaseResult", "node_tests", "np", "pass_rate", "run_case", "run_suite"]
