"""CUDA-graph capture that leaves the process as it found it when the capture fails.

The tuner (graph timing of candidates) and the runtime (a whole engine per input shape) both
capture work that may not be capturable: a layer that reads a value back to the host ends the
capture with an error. torch's `torch.cuda.graph` then leaves two things behind:

- its capture stream as the current stream;
- the device's default random generator in capture mode. torch ends that mode only when a
  capture succeeds, so after a failed one every random op on the device (`torch.randn(...,
  device="cuda")` in the user's own code) raises "Offset increment outside graph capture
  encountered unexpectedly".

`capture` puts both right before it re-raises. The generator leaves capture mode the one way
torch offers: a capture that succeeds, of nothing.

A capture of work that launches no kernel (a view) makes torch warn "The CUDA Graph is empty";
that is expected here (a candidate's empty graph costs the engine nothing) and is not shown.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Any, Iterator, Optional

import torch

EMPTY_GRAPH_WARNING = "The CUDA Graph is empty"


@contextmanager
def _quiet_about_empty_graphs() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=EMPTY_GRAPH_WARNING)
        yield


@contextmanager
def capture(graph: torch.cuda.CUDAGraph, stream: torch.cuda.Stream, pool: Optional[Any] = None,
            capture_error_mode: str = "global") -> Iterator[None]:
    """`torch.cuda.graph(graph, pool, stream, capture_error_mode)`; when the capture fails, the
    caller's stream is current again and the device's random generator usable, then the error
    propagates."""
    caller = torch.cuda.current_stream(stream.device)
    try:
        with _quiet_about_empty_graphs():
            with torch.cuda.graph(graph, pool=pool, stream=stream, capture_error_mode=capture_error_mode):
                yield
    except BaseException:
        _restore(caller)
        _end_generator_capture(stream, caller)
        raise


def _restore(caller: torch.cuda.Stream) -> None:
    if torch.cuda.current_stream(caller.device) != caller:
        torch.cuda.set_stream(caller)


def _end_generator_capture(stream: torch.cuda.Stream, caller: torch.cuda.Stream) -> None:
    try:
        with _quiet_about_empty_graphs():
            with torch.cuda.graph(torch.cuda.CUDAGraph(), stream=stream):
                pass
    except Exception:  # noqa: BLE001 - the device itself failed; the original error says why
        pass
    finally:
        _restore(caller)


__all__ = ["EMPTY_GRAPH_WARNING", "capture"]
