"""The engine's TF32 setting, applied around its tuning and around one execution.

torch's TF32 switches are process-global (cuBLAS matmuls; cuDNN convolutions and RNNs):
`tf32_scope(allow)` sets them to the engine's build setting for the duration of the
build's timing (so candidates are timed in the math they will run in), of one `execute`
(or one CUDA-graph capture, where the kernels are chosen once for all replays) and
restores exactly what was there before, so a user's own settings outside the engine
are untouched. Being global, they are also seen by other threads running torch work at
the same moment: two engines with different TF32 settings must not run concurrently in
one process.

torch >= 2.9 keeps two views of this state (the legacy `allow_tf32` booleans and the
`fp32_precision` strings) and raises when they disagree. Setting goes through the
legacy setters, which update both views together; restoring puts back both views as
read (each read that torch refuses is left alone), so a consistent state stays
consistent and an inconsistent one is not made worse.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Optional

import torch

_C = torch._C
_HAS_FP32_PRECISION = hasattr(_C, "_get_fp32_precision_getter") and hasattr(_C, "_set_fp32_precision_setter")
# The new-API keys, restored last (after the legacy values), broadest first.
_PRECISION_KEYS = (("generic", "all"), ("cuda", "all"), ("cuda", "matmul"), ("cuda", "conv"), ("cuda", "rnn"))


def _try(read: Any) -> Optional[Any]:
    try:
        return read()
    except RuntimeError:  # torch refuses to read a state it considers mixed
        return None


def tf32_state() -> tuple[Optional[bool], Optional[bool]]:
    """(cuBLAS matmuls allow TF32, cuDNN convolutions and RNNs allow TF32) as torch reports
    them now (None when unreadable)."""
    if _HAS_FP32_PRECISION:
        get = _C._get_fp32_precision_getter
        return get("cuda", "matmul") == "tf32", get("cuda", "conv") == "tf32" and get("cuda", "rnn") == "tf32"
    return _try(_C._get_cublas_allow_tf32), _try(_C._get_cudnn_allow_tf32)


def _snapshot() -> dict[str, Any]:
    snap: dict[str, Any] = {"matmul_precision": _try(_C._get_float32_matmul_precision),
                            "cublas": _try(_C._get_cublas_allow_tf32),
                            "cudnn": _try(_C._get_cudnn_allow_tf32)}
    if _HAS_FP32_PRECISION:
        snap["strings"] = [(key, _C._get_fp32_precision_getter(*key)) for key in _PRECISION_KEYS]
    return snap


def _restore(snap: dict[str, Any]) -> None:
    if snap["matmul_precision"] is not None:
        torch.set_float32_matmul_precision(snap["matmul_precision"])
    elif snap["cublas"] is not None:
        _C._set_cublas_allow_tf32(snap["cublas"])
    if snap["cudnn"] is not None:
        _C._set_cudnn_allow_tf32(snap["cudnn"])
    for key, value in snap.get("strings", ()):
        _C._set_fp32_precision_setter(key[0], key[1], value)


@contextmanager
def tf32_scope(allow: bool) -> Iterator[None]:
    """Within the block, cuBLAS and cuDNN may use TF32 iff `allow`; the previous state after.
    Changes nothing (and costs two reads) when the state already matches."""
    want = bool(allow)
    matmul, conv = tf32_state()
    if matmul is want and conv is want:
        yield
        return
    snap = _snapshot()
    _C._set_cublas_allow_tf32(want)
    _C._set_cudnn_allow_tf32(want)
    try:
        yield
    finally:
        _restore(snap)
