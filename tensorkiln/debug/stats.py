"""Error statistics between an actual tensor and an expected one.

Definitions (those of Polygraphy's comparator, so numbers read the same):
- absolute error |a - e| per element; relative error |a - e| / |e|, where an element
  whose expected value is 0 has relative error 0 when it matches exactly and +inf
  otherwise.
- NaN and Inf: an element where both sides hold the same non-finite value (both NaN,
  or the same infinity) counts as equal; any other non-finite element on either side
  has an absolute (and relative) error of +inf, so it can never pass a tolerance.
- cosine similarity and SNR (dB) are computed over the elements finite on both sides;
  the NaN/Inf counts of each side say what they leave out.
- an element is outside the tolerance when its absolute error > atol AND its relative
  error > rtol: it passes when either tolerance holds (Polygraphy's "elemwise" check).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

ERROR_STATS = ("elemwise", "max", "mean", "median", "quantile")
DEFAULT_ERROR_QUANTILE = 0.99


@dataclass(frozen=True)
class ErrorStats:
    """Error statistics of one tensor pair of the same shape."""

    count: int
    max_abs: float
    mean_abs: float
    median_abs: float
    quantile_abs: float
    max_rel: float
    mean_rel: float
    median_rel: float
    quantile_rel: float
    quantile: float  # the q of quantile_abs / quantile_rel
    mse: float  # mean squared error over the elements finite on both sides
    cosine: float  # nan when no element is finite on both sides
    snr_db: float  # +inf for identical tensors
    nan_actual: int
    inf_actual: int
    nan_expected: int
    inf_expected: int
    # Where the absolute error is largest (a multi-index), and the two values there.
    worst_index: tuple[int, ...] = ()
    worst_actual: float = math.nan
    worst_expected: float = math.nan

    def stat(self, which: str, relative: bool) -> float:
        """The 'max' | 'mean' | 'median' | 'quantile' statistic of the absolute or relative error."""
        if which not in ERROR_STATS[1:]:
            raise ValueError(f"unknown error statistic '{which}' (one of {', '.join(ERROR_STATS[1:])})")
        return getattr(self, f"{which}_{'rel' if relative else 'abs'}")

    def to_json(self) -> dict[str, object]:
        return {field: getattr(self, field) if field != "worst_index" else list(self.worst_index)
                for field in self.__dataclass_fields__}


def as_float64(array: np.ndarray) -> np.ndarray:
    """Any numeric array (bool, ints, float16/bfloat16/fp8 through ml_dtypes) as float64."""
    array = np.asarray(array)
    if array.dtype == np.bool_:
        return array.astype(np.int64).astype(np.float64)
    if array.dtype.kind == "c":
        raise TypeError("complex tensors have no ordering: compare their real and imaginary parts")
    return array.astype(np.float64)


def elementwise_errors(actual: np.ndarray, expected: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Absolute and relative error per element (float64), with the NaN/Inf rules of the module."""
    a = as_float64(actual)
    e = as_float64(expected)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        absolute = np.abs(a - e)
        same_nonfinite = (np.isnan(a) & np.isnan(e)) | (np.isinf(a) & (a == e))
        absolute = np.where(same_nonfinite, 0.0, absolute)
        absolute = np.where(np.isnan(absolute), np.inf, absolute)  # NaN on one side only
        magnitude = np.abs(e)
        relative = np.where(absolute == 0.0, 0.0,
                            np.divide(absolute, magnitude, out=np.full_like(absolute, np.inf),
                                      where=magnitude > 0))
        relative = np.where(np.isnan(relative), np.inf, relative)  # inf / inf
    return absolute, relative


def outside_tolerance(absolute: np.ndarray, relative: np.ndarray, atol: float, rtol: float) -> np.ndarray:
    """The elements outside the tolerance: absolute error > atol and relative error > rtol."""
    return (absolute > atol) & (relative > rtol)


def error_stats(actual: np.ndarray, expected: np.ndarray,
                quantile: float = DEFAULT_ERROR_QUANTILE) -> ErrorStats:
    """Statistics of `actual` against `expected`; the shapes must be equal."""
    return error_stats_and_errors(actual, expected, quantile)[0]


def error_stats_and_errors(actual: np.ndarray, expected: np.ndarray, quantile: float = DEFAULT_ERROR_QUANTILE
                           ) -> tuple[ErrorStats, np.ndarray, np.ndarray]:
    """`error_stats`, and the per-element absolute and relative errors it was computed from."""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    if actual.shape != expected.shape:
        raise ValueError(f"shape {actual.shape} != expected {expected.shape}")
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"error quantile must be in [0, 1], got {quantile}")
    absolute, relative = elementwise_errors(actual, expected)
    a = as_float64(actual)
    e = as_float64(expected)
    counts = dict(nan_actual=int(np.isnan(a).sum()), inf_actual=int(np.isinf(a).sum()),
                  nan_expected=int(np.isnan(e).sum()), inf_expected=int(np.isinf(e).sum()))
    if absolute.size == 0:
        return ErrorStats(count=0, max_abs=0.0, mean_abs=0.0, median_abs=0.0, quantile_abs=0.0, max_rel=0.0,
                          mean_rel=0.0, median_rel=0.0, quantile_rel=0.0, quantile=quantile, mse=0.0, cosine=1.0,
                          snr_db=math.inf, **counts), absolute, relative
    flat_abs = absolute.reshape(-1)
    flat_rel = relative.reshape(-1)
    worst = int(np.argmax(flat_abs))
    finite = np.isfinite(a) & np.isfinite(e)
    fa, fe = a[finite], e[finite]
    stats = ErrorStats(
        count=int(absolute.size),
        max_abs=float(flat_abs[worst]), mean_abs=_mean(flat_abs), median_abs=_quantile(flat_abs, 0.5),
        quantile_abs=_quantile(flat_abs, quantile),
        max_rel=float(flat_rel.max()), mean_rel=_mean(flat_rel), median_rel=_quantile(flat_rel, 0.5),
        quantile_rel=_quantile(flat_rel, quantile), quantile=quantile,
        mse=float(np.mean((fa - fe) ** 2)) if fa.size else math.nan,
        cosine=cosine_similarity(fa, fe) if fa.size else math.nan,
        snr_db=snr_db(fa, fe) if fa.size else math.nan,
        worst_index=tuple(int(i) for i in np.unravel_index(worst, absolute.shape)),
        worst_actual=float(a.reshape(-1)[worst]), worst_expected=float(e.reshape(-1)[worst]),
        **counts)
    return stats, absolute, relative


def _quantile(values: np.ndarray, q: float) -> float:
    # Linear interpolation (numpy's default, Polygraphy's too), except that it makes NaN of
    # inf - inf when both neighbours are infinite: the quantile is then the upper one (+inf).
    with np.errstate(invalid="ignore"):
        value = float(np.quantile(values, q))
    return float(np.quantile(values, q, method="higher")) if np.isnan(value) else value


def _mean(values: np.ndarray) -> float:
    # np.mean of an array holding +inf is +inf (what we want), without a warning.
    with np.errstate(invalid="ignore", over="ignore"):
        return float(np.mean(values))


def cosine_similarity(actual: np.ndarray, expected: np.ndarray) -> float:
    """cos(a, e); two all-zero tensors are identical (1.0), one all-zero tensor is orthogonal (0.0)."""
    a = np.asarray(actual, dtype=np.float64).reshape(-1)
    e = np.asarray(expected, dtype=np.float64).reshape(-1)
    norm = float(np.linalg.norm(a) * np.linalg.norm(e))
    if norm == 0.0:
        return 1.0 if np.array_equal(a, e) else 0.0
    return float(np.dot(a, e) / norm)


def snr_db(actual: np.ndarray, expected: np.ndarray) -> float:
    """10 log10(signal power / noise power), the signal being `expected`; +inf when equal."""
    e = np.asarray(expected, dtype=np.float64)
    noise = float(np.sum((np.asarray(actual, dtype=np.float64) - e) ** 2))
    signal = float(np.sum(e ** 2))
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def format_value(value: float) -> str:
    """A tensor element: nine significant digits, enough to tell float32 neighbours apart."""
    return f"{value:.9g}" if math.isfinite(value) else format_number(value)


def format_number(value: Optional[float]) -> str:
    """Four significant digits; nan/inf spelled out."""
    if value is None:
        return "-"
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.4g}"


__all__ = ["DEFAULT_ERROR_QUANTILE", "ERROR_STATS", "ErrorStats", "as_float64", "cosine_similarity",
           "elementwise_errors", "error_stats", "error_stats_and_errors", "format_number", "format_value",
           "outside_tolerance", "snr_db"]
