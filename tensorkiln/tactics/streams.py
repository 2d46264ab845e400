"""Running layers on auxiliary CUDA streams: the streams of one run and the events between them.

planner/streams.py decides which layers run where (a StreamSchedule: per layer, its stream, the
layers it waits for, whether it signals, the inputs it reads from another stream). This class
carries it out, for the runtime's executor and for the build's timing of a whole network alike:
`begin` before the first layer, `enter`/`leave` around each layer with a LayerSync, `end` after
the last. The auxiliary streams fork from the caller's stream at `begin` and join it at `end`, so
to the caller the run is one stream's work, and a CUDA graph captured from the caller's stream
holds the auxiliary streams' kernels as parallel branches. Each execution context owns its own:
two contexts running at once never wait on each other's events.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch


class AuxStreams:
    def __init__(self, device: torch.device, schedule: Any):
        """`schedule`: a planner.streams.StreamSchedule."""
        self.device = device
        self._streams: list[Optional[torch.cuda.Stream]] = [None] + [
            torch.cuda.Stream(device) for _ in range(schedule.aux_streams)]
        self._events = {i: torch.cuda.Event() for i, sync in enumerate(schedule.layers)
                        if sync is not None and sync.signal}
        self._last_on_aux = schedule.last_on_aux
        self._caller: Any = None

    def begin(self) -> None:
        self._caller = torch.cuda.current_stream(self.device)
        for stream in self._streams[1:]:
            stream.wait_stream(self._caller)

    def _stream(self, sync: Any) -> Any:
        return self._streams[sync.stream] if sync.stream else self._caller

    def enter(self, sync: Any) -> None:
        """Before a layer (its LayerSync): wait for what it needs, and make its stream current."""
        stream = self._stream(sync)
        for layer in sync.waits:
            stream.wait_event(self._events[layer])
        if sync.stream:
            torch.cuda.set_stream(stream)

    def leave(self, sync: Any, index: int, args: Sequence[Any]) -> None:
        """After a layer's kernels are enqueued (or it raised): keep inputs from another stream
        from reuse until this stream is done with them, signal, and give the caller its stream back."""
        stream = self._stream(sync)
        for pos in sync.foreign:
            value = args[pos]
            if isinstance(value, torch.Tensor) and value.is_cuda:
                value.record_stream(stream)
        if sync.signal:
            self._events[index].record(stream)
        if sync.stream:
            torch.cuda.set_stream(self._caller)

    def end(self) -> None:
        for layer in self._last_on_aux:
            self._caller.wait_event(self._events[layer])
