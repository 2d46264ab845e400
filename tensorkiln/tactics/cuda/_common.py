"""What the CUDA tactics share: dtype checks on IR nodes, tensors derived once from weights,
and whether Triton can be imported (without importing it: CPU installs lack it)."""

from __future__ import annotations

import importlib.util
from typing import Any, Callable, Optional, Sequence

import torch

from ...ir import HALF_FLOATS, DType, Node
from ..derived import DerivedTensors
from ..registry import Tactic, register_tactic

# The dtypes cuDNN, cuBLAS and the Triton kernels here take; float64 stays on the reference.
FAST_FLOATS = (DType.FLOAT32,) + HALF_FLOATS


def input_dtype(node: Node, i: int) -> Optional[DType]:
    if i >= len(node.inputs) or node.inputs[i] is None:
        return None
    return node.inputs[i].dtype


def input_shape(node: Node, i: int) -> Optional[tuple]:
    if i >= len(node.inputs) or node.inputs[i] is None:
        return None
    shape = node.inputs[i].shape
    return None if shape is None else tuple(shape)


def dtype_reason(node: Node, allowed: tuple[DType, ...] = FAST_FLOATS, i: int = 0) -> Optional[str]:
    """Why input i's dtype rules the tactic out (None when it is allowed or not known yet)."""
    dt = input_dtype(node, i)
    if dt is not None and dt not in allowed:
        return f"{dt.short} input (this tactic takes {', '.join(d.short for d in allowed)})"
    return None


def inputs_dtype_reason(node: Node, allowed: tuple[DType, ...] = FAST_FLOATS) -> Optional[str]:
    """dtype_reason for every input, naming the first one ruled out."""
    for i in range(len(node.inputs)):
        reason = dtype_reason(node, allowed, i)
        if reason:
            return f"input {i}: {reason}"
    return None


def triton_missing() -> Optional[str]:
    """"triton is not installed" where it is not; looked up without importing triton."""
    return None if importlib.util.find_spec("triton") is not None else "triton is not installed"


def as_dtype(cache: DerivedTensors, t: Optional[torch.Tensor], dtype: torch.dtype) -> Optional[torch.Tensor]:
    """`t` in `dtype`, converted once per weight (the conversion is cached while `t` lives)."""
    if t is None or t.dtype == dtype:
        return t
    return cache.get(t, ("dtype", dtype), lambda s: s.to(dtype))


# The multiprocessor count assumed for tensors not on a GPU (the Triton interpreter); an H100/H200 has 132.
DEFAULT_MULTIPROCESSORS = 132
_MULTIPROCESSORS: dict[int, int] = {}


def tf32_allowed() -> bool:
    """Whether float32 products may run in TF32 now: the engine's setting, which the runtime puts
    in torch's flags for the call (runtime/tf32.py); read at run time, as torch's own calls do."""
    getter = getattr(torch._C, "_get_fp32_precision_getter", None)
    if getter is not None:
        try:
            return getter("cuda", "matmul") == "tf32"
        except RuntimeError:
            pass
    return bool(torch._C._get_cublas_allow_tf32())


def multiprocessor_count(device: torch.device) -> int:
    """The device's multiprocessor count (looked up once per GPU); DEFAULT_MULTIPROCESSORS off the GPU."""
    if device.type != "cuda":
        return DEFAULT_MULTIPROCESSORS
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _MULTIPROCESSORS:
        _MULTIPROCESSORS[index] = torch.cuda.get_device_properties(index).multi_processor_count
    return _MULTIPROCESSORS[index]


# The shared memory one block may opt in to, assumed without a GPU: an H100/H200's 227 KiB.
DEFAULT_SHARED_MEMORY_PER_BLOCK = 232448


def shared_memory_per_block() -> int:
    """The current GPU's opt-in shared memory per block (what one Triton program may use)."""
    if not torch.cuda.is_available():
        return DEFAULT_SHARED_MEMORY_PER_BLOCK
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    return int(getattr(props, "shared_memory_per_block_optin", DEFAULT_SHARED_MEMORY_PER_BLOCK))


def next_power_of_2(n: int) -> int:
    """The smallest power of two >= n (triton.next_power_of_2, without importing triton)."""
    return 1 << max(0, (int(n) - 1).bit_length())


def optional_input(inputs: list[Optional[Any]], i: int) -> Optional[Any]:
    return inputs[i] if i < len(inputs) else None


# Where a helper that works out the output's shape itself puts the layer's output 0: (shape, dtype) -> a
# row-major tensor.
OutputFn = Callable[[Sequence[int], torch.dtype], torch.Tensor]


def first_output(ctx: Any) -> OutputFn:
    """The layer's output 0 from `ctx` (RunContext.output: its place in the activation arena, if planned)."""
    return lambda shape, dtype: ctx.output(0, shape, dtype)


def fresh_output(device: torch.device) -> OutputFn:
    """A newly allocated tensor: for a temporary, or for a path that cannot write into the arena."""
    return lambda shape, dtype: torch.empty(tuple(shape), dtype=dtype, device=device)


def register(name: str, op_type: str, run: Any, supports: Callable[[Node], Optional[str]], domain: str = "",
             source: str = "torch", workspace_bytes: Optional[Callable[[Node, list], int]] = None,
             arena_outputs: bool = False, fresh_outputs: bool = False) -> Tactic:
    """Register a CUDA tactic; `source` names the library its kernels come from (cudnn, cublas, triton,
    torch), which trtexec-style --tacticSources filters on; `workspace_bytes` (node, inputs) -> bytes of
    scratch memory it needs, which --memPoolSize=workspace:N limits; `arena_outputs`: it writes its
    outputs into the tensors `ctx.output` gives (the activation arena); `fresh_outputs`: its outputs
    never alias its inputs (see registry.Tactic)."""
    return register_tactic(Tactic(name, op_type, "cuda", run, domain, supports, source=source,
                                  workspace_bytes=workspace_bytes, arena_outputs=arena_outputs,
                                  fresh_outputs=fresh_outputs or arena_outputs))
