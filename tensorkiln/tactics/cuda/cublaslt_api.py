"""A ctypes binding of the few cuBLASLt calls the algorithm tactics (cublaslt.py) make.

torch calls cuBLASLt with the algorithm its heuristic ranks first and offers no way to pick
another. TensorRT asks the heuristic for several candidates and times them; so do we, which
needs the C API: descriptors, cublasLtMatmulAlgoGetHeuristic and cublasLtMatmul. The library
is the one torch itself loaded (found in the process's memory map), so its version always
matches torch's cuBLAS. Nothing here runs on a machine without CUDA: the library is looked up
on the first GEMM.

Row-major products map onto cuBLAS's column-major ones in the usual way: Y[M, N] = X[M, K] @ W
is computed as Y^T[N, M] = W^T[N, K] @ X^T[K, M], so cuBLAS's A is the weight, its B the
activations, and a bias along Y's columns is cuBLAS's per-row bias.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from dataclasses import dataclass
from typing import Optional

import torch

# cudaDataType_t
_DATA_TYPES = {torch.float16: 2, torch.bfloat16: 14, torch.float32: 0}
_CUDA_R_32F = 0
# cublasComputeType_t
COMPUTE_32F = 68
COMPUTE_32F_FAST_TF32 = 77
# cublasLtMatmulDescAttributes_t
_DESC_TRANSA, _DESC_TRANSB, _DESC_EPILOGUE, _DESC_BIAS_POINTER = 3, 4, 7, 8
# cublasLtEpilogue_t: bias adds its flag (4) to the activation's.
EPILOGUE_DEFAULT, EPILOGUE_RELU, EPILOGUE_GELU, EPILOGUE_BIAS_FLAG = 1, 2, 32, 4
# cublasLtMatmulPreferenceAttributes_t
_PREF_MAX_WORKSPACE, _PREF_REDUCTION_MASK = 1, 3
_PREF_MIN_ALIGNMENT = (5, 6, 7, 8)  # A, B, C, D
# cublasLtReductionScheme_t: split-K partials summed in the compute type (fp32), never in the
# output type, so a split product rounds once like an unsplit one.
_REDUCTION_COMPUTE_TYPE = 2

# Workspace the heuristic may plan for (torch gives cuBLASLt the same on Hopper).
MAX_WORKSPACE_BYTES = 32 << 20
# How many algorithms to ask the heuristic for at a time (cuBLAS 13 answers with at most 8), and the
# most a Plan holds: one list with the full workspace, one without.
ALGORITHMS_PER_QUERY = 8
MAX_ALGORITHMS = 2 * ALGORITHMS_PER_QUERY


class CublasLtError(RuntimeError):
    """A cuBLASLt call failed or the library could not be found."""


class _Algo(ctypes.Structure):
    _fields_ = [("data", ctypes.c_uint64 * 8)]


class _HeuristicResult(ctypes.Structure):
    _fields_ = [("algo", _Algo), ("workspace_size", ctypes.c_size_t), ("state", ctypes.c_int),
                ("waves", ctypes.c_float), ("reserved", ctypes.c_int * 4)]


_vp = ctypes.c_void_p
_lock = threading.Lock()
_lib: Optional[ctypes.CDLL] = None
_handles: dict[int, _vp] = {}


def loaded_library_path(name: str) -> Optional[str]:
    """The path of a shared library this process has loaded whose file name contains `name`
    (e.g. "libcublasLt.so": the one torch loaded), from the process's memory map (Linux)."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                if name in line:
                    return line.split(None, 5)[-1].strip()
    except OSError:
        pass
    return None


def library() -> ctypes.CDLL:
    """libcublasLt with the argument types of the calls used here (loaded once)."""
    global _lib
    with _lock:
        if _lib is not None:
            return _lib
        torch.cuda.current_blas_handle()  # makes torch load cuBLAS, which loads cuBLASLt
        loaded = loaded_library_path("libcublasLt.so")
        candidates = [p for p in (loaded, ctypes.util.find_library("cublasLt"), "libcublasLt.so.13",
                                  "libcublasLt.so.12") if p]
        errors = []
        for path in candidates:
            try:
                lib = ctypes.CDLL(path)
                break
            except OSError as exc:
                errors.append(f"{path}: {exc}")
        else:
            raise CublasLtError("cuBLASLt library not found (" + "; ".join(errors or ["no candidate path"]) + ")")
        p = ctypes.POINTER
        lib.cublasLtCreate.argtypes = [p(_vp)]
        lib.cublasLtMatrixLayoutCreate.argtypes = [p(_vp), ctypes.c_int, ctypes.c_uint64, ctypes.c_uint64,
                                                   ctypes.c_int64]
        lib.cublasLtMatrixLayoutDestroy.argtypes = [_vp]
        lib.cublasLtMatmulDescCreate.argtypes = [p(_vp), ctypes.c_int, ctypes.c_int]
        lib.cublasLtMatmulDescDestroy.argtypes = [_vp]
        lib.cublasLtMatmulDescSetAttribute.argtypes = [_vp, ctypes.c_int, _vp, ctypes.c_size_t]
        lib.cublasLtMatmulPreferenceCreate.argtypes = [p(_vp)]
        lib.cublasLtMatmulPreferenceDestroy.argtypes = [_vp]
        lib.cublasLtMatmulPreferenceSetAttribute.argtypes = [_vp, ctypes.c_int, _vp, ctypes.c_size_t]
        lib.cublasLtMatmulAlgoGetHeuristic.argtypes = [_vp, _vp, _vp, _vp, _vp, _vp, _vp, ctypes.c_int,
                                                       p(_HeuristicResult), p(ctypes.c_int)]
        lib.cublasLtMatmul.argtypes = [_vp, _vp, _vp, _vp, _vp, _vp, _vp, _vp, _vp, _vp, _vp, _vp, p(_Algo), _vp,
                                       ctypes.c_size_t, _vp]
        lib.cublasLtGetStatusName.restype = ctypes.c_char_p
        _lib = lib
        return lib


def _check(status: int, call: str) -> None:
    if status != 0:
        name = library().cublasLtGetStatusName(status)
        raise CublasLtError(f"{call} failed: {name.decode() if name else status}")


def _handle(device_index: int) -> _vp:
    with _lock:
        handle = _handles.get(device_index)
    if handle is None:
        handle = _vp()
        with torch.cuda.device(device_index):
            _check(library().cublasLtCreate(ctypes.byref(handle)), "cublasLtCreate")
        with _lock:
            handle = _handles.setdefault(device_index, handle)
    return handle


def _set(setter: ctypes._CFuncPtr, obj: _vp, attr: int, value: ctypes._SimpleCData, what: str) -> None:
    _check(setter(obj, attr, ctypes.cast(ctypes.byref(value), _vp), ctypes.sizeof(value)), what)


def alignment_of(*tensors: Optional[torch.Tensor]) -> int:
    """The largest power of two up to 256 dividing every tensor's address: the heuristic must only
    offer algorithms whose vector loads these pointers allow."""
    align = 256
    for t in tensors:
        if t is not None:
            address = t.data_ptr()
            while align > 1 and address % align:
                align //= 2
    return align


@dataclass(frozen=True)
class Problem:
    """One GEMM shape as cuBLASLt sees it: D[n, m] = op(A)[n, k] @ B[k, m] (+ C) with an epilogue.
    `weight_transposed`: the weight is stored [N, K] (torch.nn.Linear's layout) and read as op T."""

    m: int
    n: int
    k: int
    dtype: torch.dtype
    weight_transposed: bool
    weight_ld: int
    input_ld: int
    epilogue: int
    has_residual: bool
    compute_type: int
    alignment: int
    device_index: int


def _identity(result: _HeuristicResult) -> tuple[bytes, int]:
    """What makes two heuristic results run differently: the algorithm and the workspace it gets."""
    return bytes(result.algo.data), result.workspace_size


class Plan:
    """The descriptors of one Problem and the algorithms the heuristic offers for it, best-ranked first."""

    def __init__(self, problem: Problem, bias: Optional[torch.Tensor]) -> None:
        lib = library()
        self.problem = problem
        # The bias pointer lives in the shared descriptor: set and launch under one lock.
        self.launch_lock = threading.Lock()
        self.handle = _handle(problem.device_index)
        dtype = _DATA_TYPES[problem.dtype]
        self.desc = _vp()
        self.layouts: list[_vp] = []
        _check(lib.cublasLtMatmulDescCreate(ctypes.byref(self.desc), problem.compute_type, _CUDA_R_32F),
               "cublasLtMatmulDescCreate")
        try:
            _set(lib.cublasLtMatmulDescSetAttribute, self.desc, _DESC_TRANSA,
                 ctypes.c_int32(1 if problem.weight_transposed else 0), "TRANSA")
            _set(lib.cublasLtMatmulDescSetAttribute, self.desc, _DESC_TRANSB, ctypes.c_int32(0), "TRANSB")
            _set(lib.cublasLtMatmulDescSetAttribute, self.desc, _DESC_EPILOGUE, ctypes.c_uint32(problem.epilogue),
                 "EPILOGUE")
            if bias is not None:
                self.set_bias(bias)
            if problem.weight_transposed:
                self.a = self._layout(dtype, problem.k, problem.n, problem.weight_ld)
            else:
                self.a = self._layout(dtype, problem.n, problem.k, problem.weight_ld)
            self.b = self._layout(dtype, problem.k, problem.m, problem.input_ld)
            self.d = self._layout(dtype, problem.n, problem.m, problem.n)
            self.algorithms = self._heuristic(lib)
        except BaseException:
            self.close()
            raise

    def _layout(self, dtype: int, rows: int, cols: int, ld: int) -> _vp:
        layout = _vp()
        _check(library().cublasLtMatrixLayoutCreate(ctypes.byref(layout), dtype, rows, cols, ld),
               "cublasLtMatrixLayoutCreate")
        self.layouts.append(layout)
        return layout

    def _heuristic(self, lib: ctypes.CDLL) -> list[_HeuristicResult]:
        """The heuristic's ranking with the full workspace, then its ranking without any, each
        (algorithm, workspace) pair once. Without workspace an algorithm plans no split-K partials
        (no separate reduction kernel: at a few rows that launch costs more than the split saves)
        and no tile-scheduler counter: with one, cuBLASLt zeroes the counter by a memset before
        every launch, which in a CUDA graph is a memset node between two kernels. On an H200 that
        node cost BERT-base's batch-64 QKV and feed-forward GEMMs ~4 us each (46.1 against 43.8 us
        for the same algorithm after a small kernel), so both forms are candidates."""
        ranked = self._ask(lib, MAX_WORKSPACE_BYTES)
        seen = {_identity(r) for r in ranked}
        ranked += [r for r in self._ask(lib, 0) if _identity(r) not in seen]
        return ranked

    def _ask(self, lib: ctypes.CDLL, workspace_bytes: int) -> list[_HeuristicResult]:
        pref = _vp()
        _check(lib.cublasLtMatmulPreferenceCreate(ctypes.byref(pref)), "cublasLtMatmulPreferenceCreate")
        try:
            setter = lib.cublasLtMatmulPreferenceSetAttribute
            _set(setter, pref, _PREF_MAX_WORKSPACE, ctypes.c_uint64(workspace_bytes), "MAX_WORKSPACE_BYTES")
            _set(setter, pref, _PREF_REDUCTION_MASK, ctypes.c_uint32(_REDUCTION_COMPUTE_TYPE), "REDUCTION_SCHEME")
            for attr in _PREF_MIN_ALIGNMENT:
                _set(setter, pref, attr, ctypes.c_uint32(self.problem.alignment), "MIN_ALIGNMENT")
            results = (_HeuristicResult * ALGORITHMS_PER_QUERY)()
            count = ctypes.c_int(0)
            status = lib.cublasLtMatmulAlgoGetHeuristic(self.handle, self.desc, self.a, self.b, self.d, self.d, pref,
                                                        ALGORITHMS_PER_QUERY, results, ctypes.byref(count))
            if status == 15:  # CUBLAS_STATUS_NOT_SUPPORTED: no algorithm for this problem
                return []
            _check(status, "cublasLtMatmulAlgoGetHeuristic")
            return [results[i] for i in range(count.value) if results[i].state == 0]
        finally:
            lib.cublasLtMatmulPreferenceDestroy(pref)

    def set_bias(self, bias: torch.Tensor) -> None:
        _set(library().cublasLtMatmulDescSetAttribute, self.desc, _DESC_BIAS_POINTER, _vp(bias.data_ptr()),
             "BIAS_POINTER")

    def run(self, rank: int, out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
            residual: Optional[torch.Tensor], alpha: float) -> None:
        """out = epilogue(alpha * x @ weight + residual + bias) with the algorithm of this rank, on
        torch's current stream. The caller checks shapes, strides and dtypes against the Problem."""
        result = self.algorithms[rank]
        workspace = None
        if result.workspace_size:
            # From torch's caching allocator: stream-ordered, and in a CUDA graph capture the graph's own pool.
            workspace = torch.empty(result.workspace_size, dtype=torch.uint8, device=out.device)
        alpha_value = ctypes.c_float(alpha)
        beta_value = ctypes.c_float(1.0 if residual is not None else 0.0)
        c = residual if residual is not None else out
        with self.launch_lock:
            if bias is not None:
                self.set_bias(bias)
            self._launch(result, out, x, weight, c, alpha_value, beta_value, workspace)

    def _launch(self, result: _HeuristicResult, out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                c: torch.Tensor, alpha_value: ctypes.c_float, beta_value: ctypes.c_float,
                workspace: Optional[torch.Tensor]) -> None:
        _check(library().cublasLtMatmul(
            self.handle, self.desc, ctypes.cast(ctypes.byref(alpha_value), _vp), _vp(weight.data_ptr()), self.a,
            _vp(x.data_ptr()), self.b, ctypes.cast(ctypes.byref(beta_value), _vp), _vp(c.data_ptr()), self.d,
            _vp(out.data_ptr()), self.d, ctypes.byref(result.algo),
            _vp(workspace.data_ptr() if workspace is not None else 0), result.workspace_size,
            _vp(torch.cuda.current_stream(out.device).cuda_stream)), "cublasLtMatmul")

    def close(self) -> None:
        lib = _lib
        if lib is None:
            return
        for layout in self.layouts:
            lib.cublasLtMatrixLayoutDestroy(layout)
        self.layouts = []
        if self.desc:
            lib.cublasLtMatmulDescDestroy(self.desc)
            self.desc = _vp()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: the library may be gone already
            pass


__all__ = ["COMPUTE_32F", "COMPUTE_32F_FAST_TF32", "CublasLtError", "EPILOGUE_BIAS_FLAG", "EPILOGUE_DEFAULT",
           "EPILOGUE_GELU", "EPILOGUE_RELU", "MAX_ALGORITHMS", "MAX_WORKSPACE_BYTES", "Plan", "Problem",
           "alignment_of", "library", "loaded_library_path"]
