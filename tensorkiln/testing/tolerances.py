"""The one tolerance table. Never loosened to make a test pass."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    rtol: float
    atol: float
    # For quantized precisions: minimum cosine similarity and signal-to-noise ratio (dB).
    min_cosine: Optional[float] = None
    min_snr_db: Optional[float] = None


TOLERANCES: dict[str, Tolerance] = {
    # fp32 kernels differ from numpy oracles by summation order only.
    "fp32": Tolerance(rtol=1e-4, atol=1e-5),
    "fp64": Tolerance(rtol=1e-10, atol=1e-12),
    "tf32": Tolerance(rtol=5e-3, atol=5e-3),
    "fp16": Tolerance(rtol=1e-2, atol=1e-2),
    "bf16": Tolerance(rtol=5e-2, atol=5e-2),
    "int8": Tolerance(rtol=0.0, atol=0.0, min_cosine=0.99, min_snr_db=20.0),
    "fp8": Tolerance(rtol=0.0, atol=0.0, min_cosine=0.98, min_snr_db=15.0),
    "exact": Tolerance(rtol=0.0, atol=0.0),
}


def tolerance_for(precision: str) -> Tolerance:
    try:
        return TOLERANCES[precision]
    except KeyError:
        raise KeyError(f"no tolerance for precision '{precision}': known {sorted(TOLERANCES)}") from None


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64).ravel()
    b = b.astype(np.float64).ravel()
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    if denom == 0:
        return 1.0 if np.array_equal(a, b) else 0.0
    return float(np.dot(a, b) / denom)


def snr_db(actual: np.ndarray, expected: np.ndarray) -> float:
    expected = expected.astype(np.float64)
    noise = np.sum((actual.astype(np.float64) - expected) ** 2)
    signal = np.sum(expected ** 2)
    if noise == 0:
        return float("inf")
    return float(10 * np.log10(signal / noise)) if signal > 0 else float("-inf")


def assert_close(actual: np.ndarray, expected: np.ndarray, precision: str = "fp32", what: str = "output") -> None:
    """Raise AssertionError when `actual` is not within the precision's tolerance of `expected`."""
    tol = tolerance_for(precision)
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    if actual.shape != expected.shape:
        raise AssertionError(f"{what}: shape {actual.shape} != expected {expected.shape}")
    if tol.min_cosine is not None:
        c, s = cosine(actual, expected), snr_db(actual, expected)
        if c < tol.min_cosine or s < tol.min_snr_db:
            raise AssertionError(f"{what}: cosine {c:.5f} (min {tol.min_cosine}), SNR {s:.1f} dB "
                                 f"(min {tol.min_snr_db}) at {precision}")
        return
    if expected.dtype.kind in "fc":
        np.testing.assert_allclose(actual.astype(np.float64), expected.astype(np.float64), rtol=tol.rtol,
                                   atol=tol.atol, err_msg=f"{what} at {precision}")
    else:
        np.testing.assert_array_equal(actual, expected, err_msg=what)
