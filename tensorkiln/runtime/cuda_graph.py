"""CUDA graphs: capture a whole engine once per input-shape signature, then replay it.

Replaying a captured graph launches every kernel of the engine with one call, so the
per-layer Python and launch overhead disappears (it dominates small models at batch 1).

Life of a signature (the inputs' shapes and dtypes):
1. first call: runs eagerly. This is the warm-up: lazily built tactic state, cuBLAS
   handles and workspaces, cuDNN plans are set up outside any capture.
2. second call: allocate static input buffers, copy the inputs in, run once more on the
   capture stream (per-stream lazy state), then capture the engine into a
   torch.cuda.CUDAGraph and replay it for this call. torch's capture synchronizes the
   device once (here, once per signature, never on the replay path).
3. later calls: copy the inputs into the static buffers (skipped when the caller hands in
   the static buffers themselves, see `ExecutionContext.input_buffers`), replay, and copy
   the outputs out of the graph's static output tensors (fresh tensors, or the caller's
   preallocated ones). The graph leaves out the Cast layers that only convert a value into
   an output's dtype (GraphExecutor.deferring_output_casts): this copy converts instead.

A context keeps at most MAX_GRAPHS captured graphs. An engine serving many input shapes (a
dynamic batch and sequence length) would otherwise hold one graph and its static buffers per
shape it ever saw; past the cap, the least recently used graph is released, and its shape, if
it comes back, starts again at step 1.

All graphs of one context share one memory pool, and the context's activation arena
(runtime/arena.py: the captured kernels write at its addresses). That is safe because a
context runs one inference at a time: each replay's outputs are copied out on the replay's
stream right after the replay, before any other graph of the pool can run, and a call on a
stream other than the previous call's first waits for the previous call's work (the context's
arena.CallOrder).

A capture fails when a layer needs the host in the middle of the engine (data-dependent
output shapes such as NonZero, host-side control flow, values read back with .item()).
Then the context records a one-line warning, the engine remembers that it cannot be
captured, and every later call runs eagerly.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import torch

from ..ir import Graph, TensorType
from ..tactics.graph_capture import capture

Signature = tuple
RunFn = Callable[[Sequence[Any]], list[Any]]

# Captured graphs one context keeps (least recently used released first), and signatures it
# remembers in all (those seen once, warm-up only, included).
MAX_GRAPHS = 64
MAX_SIGNATURES = 4 * MAX_GRAPHS


def capture_blocker(graph: Graph) -> Optional[str]:
    """Why this graph cannot be captured at all (None when it may be): found without trying."""
    for v in list(graph.inputs) + list(graph.outputs):
        if not isinstance(v.type, TensorType):
            return f"'{v.name}' is a sequence/optional: CUDA graphs need tensor inputs and outputs"
    for node in graph.nodes:
        if any(True for _ in node.subgraphs()):
            return f"layer '{node.name}' ({node.op_type}) runs control flow on the host"
    return None


@dataclass
class _Entry:
    static_inputs: Optional[list[torch.Tensor]] = None
    eager_calls: int = 0
    graph: Optional[torch.cuda.CUDAGraph] = None
    static_outputs: list[Optional[torch.Tensor]] = field(default_factory=list)


def _static_like(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    return torch.empty(tuple(x.shape), dtype=x.dtype, device=device)


_HAS_FOREACH_COPY = hasattr(torch, "_foreach_copy_")
# Outputs up to this many bytes in all are copied out of the graph by one multi-tensor kernel; larger
# ones by a copy each (cudaMemcpy's bandwidth for BERT's 25 MB hidden states at batch 64).
_FOREACH_COPY_OUT_BYTES = 4 << 20


def signature(tensors: Sequence[Any], host: frozenset[int] = frozenset()) -> Signature:
    """The key of a call's graph: its inputs' shapes and dtypes, and the values of the inputs at
    positions `host` (inputs read on the host, whose values shape the captured work)."""
    if not host:
        return tuple((x.shape, x.dtype) for x in tensors)
    return tuple((x.shape, x.dtype, tuple(x.reshape(-1).tolist())) if i in host else (x.shape, x.dtype)
                 for i, x in enumerate(tensors))


def _copy_into(statics: Sequence[torch.Tensor], feeds: Sequence[torch.Tensor]) -> None:
    """Copy each feed into its static buffer (skipping feeds that are the buffer). Device feeds go
    in one multi-tensor kernel: a copy_ per input costs ~7 us of host time each (BERT's three
    inputs at batch 1: 20 us before the graph starts, on a 0.45 ms inference); feeds of another
    dtype or layout than the fast kernel takes are copied one by one inside the same call."""
    dsts: list[torch.Tensor] = []
    srcs: list[torch.Tensor] = []
    for x, static in zip(feeds, statics):
        if x.data_ptr() == static.data_ptr() and x.stride() == static.stride():
            continue  # the caller wrote into the graph's own buffer (same signature: same shape, dtype)
        if x.device == static.device and _HAS_FOREACH_COPY:
            dsts.append(static)
            srcs.append(x)
        else:
            static.copy_(x, non_blocking=True)
    if len(dsts) == 1:
        dsts[0].copy_(srcs[0], non_blocking=True)
    elif dsts:
        torch._foreach_copy_(dsts, srcs, non_blocking=True)


def copy_out(statics: Sequence[torch.Tensor], dtypes: Sequence[Optional[torch.dtype]]) -> list[torch.Tensor]:
    """Fresh copies of a replay's static outputs (the next replay overwrites them), each cast to
    its dtype on the way (None: kept) and dense in the declared (row-major) layout, whatever layout
    the last layer's tactic wrote (channels_last, a transposed view): small ones in one
    multi-tensor kernel (one launch, not one per output: at batch 1 each is a few microseconds
    after the graph), large ones by a copy each."""
    fresh = [torch.empty(t.shape, dtype=t.dtype if d is None else d, device=t.device) for t, d in zip(statics, dtypes)]
    if (len(statics) > 1 and _HAS_FOREACH_COPY
            and sum(t.numel() * t.element_size() for t in fresh) <= _FOREACH_COPY_OUT_BYTES):
        torch._foreach_copy_(fresh, list(statics), non_blocking=True)
    else:
        for dst, src in zip(fresh, statics):
            dst.copy_(src, non_blocking=True)
    return fresh


class CudaGraphs:
    """The captured graphs of one execution context, by input signature."""

    def __init__(self, device: torch.device, host_inputs: frozenset[int] = frozenset()):
        self.device = device
        # Positions of the inputs read on the host: their static buffers are host tensors.
        self._host_inputs = host_inputs
        self._entries: OrderedDict[Signature, _Entry] = OrderedDict()  # least recently used first
        self._pool: Any = None
        self._capture_stream: Optional[torch.cuda.Stream] = None

    @property
    def captured_signatures(self) -> list[Signature]:
        return [k for k, e in self._entries.items() if e.graph is not None]

    def static_inputs(self, key: Signature, like: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        entry = self._entries.setdefault(key, _Entry())
        if entry.static_inputs is None:
            cpu = torch.device("cpu")
            entry.static_inputs = [_static_like(x, cpu if i in self._host_inputs else self.device)
                                   for i, x in enumerate(like)]
        return entry.static_inputs

    def wants_eager(self, key: Signature) -> bool:
        """True for a signature's first call (the warm-up), which the caller runs eagerly."""
        entry = self._entries.setdefault(key, _Entry())
        self._entries.move_to_end(key)
        if entry.graph is None and entry.eager_calls == 0:
            entry.eager_calls += 1
            self._release_beyond_caps(key)
            return True
        return False

    def run(self, key: Signature, feeds: Sequence[torch.Tensor], run_eagerly: RunFn,
            in_tf32_scope: Callable[[], Any]) -> list[Optional[torch.Tensor]]:
        """Replay the graph of `key` with `feeds` (capturing it first if needed) on the current
        stream; returns the graph's static outputs, valid until the next call. Raises what the
        capture raised when it fails (the caller falls back to eager). The caller orders its calls
        across streams (arena.CallOrder): the static buffers are reused by each call."""
        entry = self._entries[key]
        statics = self.static_inputs(key, feeds)
        _copy_into(statics, feeds)
        if entry.graph is None:
            self._capture(entry, statics, run_eagerly, in_tf32_scope)
            self._release_beyond_caps(key)
        else:
            entry.graph.replay()
        return entry.static_outputs

    def _release_beyond_caps(self, current: Signature) -> None:
        """Forget the least recently used signatures beyond MAX_SIGNATURES, and release the least
        recently used graphs beyond MAX_GRAPHS (never `current`'s). Safe between calls: a call's
        outputs are copied out of its graph before the next call starts."""
        captured = [k for k, e in self._entries.items() if e.graph is not None]
        for key in captured[:max(0, len(captured) - MAX_GRAPHS)]:
            if key != current:
                self._forget(key)
        for key in list(self._entries)[:max(0, len(self._entries) - MAX_SIGNATURES)]:
            if key != current:
                self._forget(key)

    def _forget(self, key: Signature) -> None:
        entry = self._entries.pop(key)
        graph, entry.graph, entry.static_outputs, entry.static_inputs = entry.graph, None, [], None
        if graph is not None:
            graph.reset()  # its memory goes back to the context's pool

    def _capture(self, entry: _Entry, statics: list[torch.Tensor], run_eagerly: RunFn,
                 in_tf32_scope: Callable[[], Any]) -> None:
        caller = torch.cuda.current_stream(self.device)
        if self._capture_stream is None:
            self._capture_stream = torch.cuda.Stream(self.device)
            self._pool = torch.cuda.graph_pool_handle()
        side = self._capture_stream
        side.wait_stream(caller)
        graph = torch.cuda.CUDAGraph()
        try:
            with in_tf32_scope():
                with torch.cuda.stream(side):
                    run_eagerly(statics)  # per-stream lazy state (cuBLAS workspace) outside the capture
                # "thread_local": only this thread's unsafe calls (host syncs) end the capture;
                # other threads of the process keep working meanwhile. A failed capture leaves the
                # caller's stream current and the device's random generator usable.
                with capture(graph, side, pool=self._pool, capture_error_mode="thread_local"):
                    outs = run_eagerly(statics)
        finally:
            caller.wait_stream(side)
        for i, out in enumerate(outs):
            if out is not None and not isinstance(out, torch.Tensor):
                raise TypeError(f"output {i} is a {type(out).__name__}, not a tensor")
        entry.graph = graph
        entry.static_outputs = list(outs)
        # The capture recorded the kernels without running them: run them for this call.
        graph.replay()
