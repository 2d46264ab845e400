"""The peers tensorkiln is measured against: PyTorch eager and torch.compile.

Every system the benchmark times is a `System`: a name, a call that takes the same dict
of device tensors (name -> tensor) and returns the outputs as a tuple in one order, and
`prepare_seconds` (the time it took to get ready: torch.compile's compile warm-up, or
tensorkiln's engine load + first inference; 0 for eager). Calls run under
`torch.inference_mode()`, as a PyTorch user serving a model would.

torch.compile runs `dynamic=False` (one specialisation per workload, as tensorkiln's
engines are built per shape) after `torch._dynamo.reset()`, so each compile is timed on
its own. mode="reduce-overhead" replays CUDA graphs: the outputs of one call are
overwritten by the next, so `run_checked` clones them, and every call marks a new step
for cudagraph trees.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Sequence

import torch

Inputs = Mapping[str, torch.Tensor]
Outputs = tuple[torch.Tensor, ...]


@dataclass
class System:
    """One thing to time: `run(inputs) -> outputs`, ready to call."""

    name: str
    run: Callable[[Inputs], Outputs]
    prepare_seconds: float = 0.0
    # What `prepare_seconds` measured, e.g. "compile + 3 warm-up calls".
    prepare_what: str = ""
    # Inputs this system is fed (fp16 peers take fp16 images; tensorkiln takes the
    # ONNX model's fp32 inputs and casts inside the engine).
    input_dtype: Optional[torch.dtype] = None
    # A line on the system's state after the timed calls (tensorkiln: whether CUDA graphs
    # were replayed), or None.
    status: Optional[Callable[[], str]] = None
    # Lines describing where the time goes layer by layer (tensorkiln's eager layer
    # profile), or None for systems without one.
    layer_report: Optional[Callable[[Inputs], list[str]]] = None

    def run_checked(self, inputs: Inputs) -> Outputs:
        """Outputs safe to keep past the next call (CUDA-graph outputs are reused buffers)."""
        return tuple(t.detach().clone() for t in self.run(inputs))


def _ordered(names: Sequence[str]) -> Callable[[Inputs], tuple[torch.Tensor, ...]]:
    return lambda inputs: tuple(inputs[n] for n in names)


def eager_peer(module: torch.nn.Module, input_names: Sequence[str], label: str = "torch eager") -> System:
    args_of = _ordered(input_names)

    def run(inputs: Inputs) -> Outputs:
        with torch.inference_mode():
            return tuple(module(*args_of(inputs)))

    return System(label, run)


def compiled_peer(module: torch.nn.Module, input_names: Sequence[str], mode: str, example: Inputs,
                  warmup_calls: int = 3, label: Optional[str] = None) -> System:
    """torch.compile(module, mode=mode, dynamic=False), compiled and warmed up on `example`
    before it is returned; prepare_seconds is the wall time of that (compile included)."""
    import torch._dynamo

    torch._dynamo.reset()
    compiled = torch.compile(module, mode=mode, dynamic=False)
    args_of = _ordered(input_names)
    mark_step = getattr(torch.compiler, "cudagraph_mark_step_begin", None)
    uses_graphs = mode in ("reduce-overhead", "max-autotune")

    def run(inputs: Inputs) -> Outputs:
        if uses_graphs and mark_step is not None:
            mark_step()
        with torch.inference_mode():
            return tuple(compiled(*args_of(inputs)))

    started = time.perf_counter()
    for _ in range(warmup_calls):  # cudagraph trees: warm-up run, record, then replays
        out = run(example)
    if any(t.is_cuda for t in out):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    return System(label or f"torch.compile({mode})", run, seconds, f"compile + {warmup_calls} warm-up calls")
