"""An execution context's activation arena: one block of device memory, laid out by the builder.

The engine plan holds the arena's layout (planner/arena.py): an offset and a size in bytes for
each activation buffer whose layer writes into memory the runtime hands it (a tactic with
`arena_outputs`). A context allocates the block once (TensorRT's device memory: its own, or one
the caller gives it), and before each layer runs, RunContext.places points the layer's outputs
at their places in it (`ArenaMemory.bind`), so activations take no allocation per call, and
values dead by then share memory by the plan.

A layer that may return a view of its input (a Transpose, a Split or a no-op Cast in torch's
reference) hands on its input's memory: the plan keeps that input alive as long as the view
(planner/arena.py), so the view may point there. `BoundArena.settle` copies out any output
pointing into the arena anywhere else (a tactic that returns a view it did not declare), so
correctness never depends on those declarations.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional, Sequence

import torch

from ..errors import ConfigError, EngineFormatError, ExecutionError

Place = tuple[int, int]  # (offset, bytes)
_raw_stream = getattr(torch._C, "_cuda_getCurrentRawStream", None)
_VIEWS_PER_PLACE = 16
PlaceFn = Callable[[tuple, torch.dtype, torch.memory_format], Optional[torch.Tensor]]


class ArenaLayout:
    """The arena's size and its buffers, from an engine plan's `memory` entry."""

    def __init__(self, size: int, buffers: Sequence[tuple[int, int, tuple[str, ...]]]):
        self.size = size
        self.buffers = buffers  # (offset, bytes, the values sharing it: a base and its views)
        self.buffer_of = {name: i for i, b in enumerate(buffers) for name in b[2]}

    @classmethod
    def from_plan(cls, memory: dict[str, Any]) -> Optional["ArenaLayout"]:
        """None for a plan without an arena (older engines: every activation is allocated as made)."""
        layout = memory.get("arena")
        if layout is None:
            return None
        try:
            size = layout["size"]
            if type(size) is not int or size < 0:
                raise ValueError(f"size {size!r}")
            buffers = []
            for offset, nbytes, names in layout["buffers"]:
                if (type(offset) is not int or type(nbytes) is not int or offset < 0 or nbytes < 0
                        or offset + nbytes > size or offset % 256):
                    raise ValueError(f"a buffer at {offset!r} of {nbytes!r} bytes in {size!r}")
                buffers.append((offset, nbytes, tuple(str(n) for n in names)))
        except (KeyError, TypeError, ValueError) as exc:
            raise EngineFormatError(f"engine plan has a malformed activation arena layout: {exc}") from exc
        return cls(size, buffers)

    def places(self, outputs_of_layers: Sequence[Sequence[str]], kept_out: set[str]) -> list[list[Optional[Place]]]:
        """Per layer, per output value: its place, or None where it has none or its buffer holds a
        value of `kept_out` (outputs the caller keeps past the call, values made on the host)."""
        dropped = {self.buffer_of[n] for n in kept_out if n in self.buffer_of}
        result = []
        for names in outputs_of_layers:
            row: list[Optional[Place]] = []
            for name in names:
                i = self.buffer_of.get(name)
                row.append(None if i is None or i in dropped else self.buffers[i][:2])
            result.append(row)
        return result


class ArenaMemory:
    """The block of memory one execution context runs its activations in."""

    def __init__(self, size: int, device: torch.device, memory: Optional[torch.Tensor] = None):
        if memory is None:
            try:
                memory = torch.empty(size, dtype=torch.uint8, device=device)
            except torch.OutOfMemoryError as exc:
                raise ExecutionError(f"cannot allocate the engine's {size} bytes of activation memory "
                                     f"on {device}: {exc}") from exc
        else:
            memory = _user_memory(memory, size, device)
        self.memory = memory
        self.size = size
        self.base = memory.data_ptr()
        self._typed: dict[torch.dtype, torch.Tensor] = {}

    def typed(self, dtype: torch.dtype) -> torch.Tensor:
        flat = self._typed.get(dtype)
        if flat is None:
            flat = self._typed[dtype] = self.memory[:self.size - self.size % dtype.itemsize].view(dtype)
        return flat

    def place(self, offset: int, nbytes: int) -> PlaceFn:
        # The view for each (shape, dtype, layout) asked, made once: the same tensor object serves every
        # call (tactics write into it through out= forms, which keep its shape), at a dict lookup's cost.
        views: dict[tuple, Optional[torch.Tensor]] = {}

        def tensor_at(shape: tuple, dtype: torch.dtype, memory_format: torch.memory_format) -> Optional[torch.Tensor]:
            key = (shape, dtype, memory_format)
            view = views.get(key, False)
            if view is False:
                if len(views) >= _VIEWS_PER_PLACE:
                    views.clear()  # shapes of a dynamic profile: keep the recent ones
                view = views[key] = self._view(offset, nbytes, shape, dtype, memory_format)
            return view
        return tensor_at

    def _view(self, offset: int, nbytes: int, shape: tuple, dtype: torch.dtype,
              memory_format: torch.memory_format) -> Optional[torch.Tensor]:
        itemsize = dtype.itemsize
        if math.prod(shape) * itemsize > nbytes or offset % itemsize:
            return None  # larger than planned (a shape outside the plan's assumptions): allocated instead
        try:  # torch's strides for the layout, from a tensor without storage
            strides = torch.empty(shape, dtype=dtype, device="meta", memory_format=memory_format).stride()
        except RuntimeError:
            return None  # a layout this rank does not have
        return self.typed(dtype).as_strided(shape, strides, offset // itemsize)

    def bind(self, places: Sequence[Sequence[Optional[Place]]],
             regions: Sequence[Sequence[tuple[Place, ...]]]) -> "BoundArena":
        """This memory with an executor's places and regions (GraphExecutor.arena_places)."""
        fns = [None if all(p is None for p in step) else tuple(None if p is None else self.place(*p) for p in step)
               for step in places]
        return BoundArena(self, fns, regions)


def _user_memory(memory: Any, size: int, device: torch.device) -> torch.Tensor:
    if not isinstance(memory, torch.Tensor):
        raise ConfigError(f"device_memory must be a torch tensor, not {type(memory).__name__}")
    if memory.device != device:
        raise ConfigError(f"device_memory is on {memory.device}; the engine runs on {device}")
    if not memory.is_contiguous():
        raise ConfigError("device_memory must be a contiguous tensor")
    if device.type == "cuda" and memory.data_ptr() % 256:
        # The places are 256-byte aligned within the block, as fresh allocations are: kernels tuned
        # on aligned outputs (cuBLASLt's algorithms, TMA) are the ones that run.
        raise ConfigError(f"device_memory must start at a 256-byte aligned address (it starts at "
                          f"{memory.data_ptr():#x})")
    nbytes = memory.numel() * memory.element_size()
    if nbytes < size:
        raise ConfigError(f"device_memory holds {nbytes} bytes; the engine's activations need "
                          f"{size} (engine.device_memory_size)")
    return memory.reshape(-1).view(torch.uint8)


class BoundArena:
    """An arena's places for the layers of one executor."""

    __slots__ = ("arena", "places", "regions")

    def __init__(self, arena: ArenaMemory, places: list[Optional[tuple[Optional[PlaceFn], ...]]],
                 regions: Sequence[Sequence[tuple[Place, ...]]]):
        self.arena = arena
        # Per layer: RunContext.places for it (None: no output of it is in the arena).
        self.places = places
        # Per layer, per output: the places in the arena its value may point into.
        self.regions = regions

    def settle(self, index: int, outputs: Sequence[Any]) -> Optional[list[Any]]:
        """The layer's outputs with copies in place of those pointing into the arena outside the
        places the plan lets them (views of inputs whose memory it reuses); None when none do."""
        arena, fixed = self.arena, None
        for k, out in enumerate(outputs):
            if type(out) is not torch.Tensor:
                continue
            # Host and device addresses share one space (CUDA's unified addressing): no device check needed.
            at = out.data_ptr() - arena.base
            if 0 <= at < arena.size and out.numel():
                regions = self.regions[index]
                allowed = regions[k] if k < len(regions) else ()
                if not any(offset <= at < offset + nbytes for offset, nbytes in allowed):
                    fixed = list(outputs) if fixed is None else fixed
                    fixed[k] = out.clone()
        return fixed


class CallOrder:
    """Orders a context's calls across streams: memory the context reuses from call to call (the
    arena, a CUDA graph's buffers) may be written by a call on one stream only after the previous
    call, on another stream, is done with it."""

    def __init__(self, device: torch.device):
        self.device = device
        self._index = device.index if device.index is not None else torch.cuda.current_device()
        # The stream (as its raw handle: cheaper to read than a Stream object, which matters on the
        # replay path) and the event after the previous call's last use of the memory.
        self._last_stream: Optional[int] = None
        self._done: Optional[torch.cuda.Event] = None

    def wait_for_previous(self) -> None:
        """Before a call: make the current stream wait for the previous call if that ran elsewhere."""
        if self._last_stream is not None and self._last_stream != self._current_stream():
            torch.cuda.current_stream(self.device).wait_event(self._done)

    def finished(self) -> None:
        """After a call: mark the end of its use of the memory on the current stream."""
        if self._done is None:
            self._done = torch.cuda.Event()
        self._done.record(torch.cuda.current_stream(self.device))
        self._last_stream = self._current_stream()

    def _current_stream(self) -> Any:
        if _raw_stream is not None:
            return _raw_stream(self._index)
        return torch.cuda.current_stream(self.device).cuda_stream
