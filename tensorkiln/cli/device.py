"""Which device a command runs on: trtexec's `--device=N`, our `--backend`, and the defaults."""

from __future__ import annotations

from typing import Optional

import torch

from ..errors import ConfigError
from .usage import UsageError


ENGINE_NEEDS_GPU = ("the engine was built for a CUDA GPU, and there is none here: rebuild it for the CPU "
                    "(kiln build MODEL.onnx -o PLAN --device cpu)")


def gpu_available() -> bool:
    return torch.cuda.is_available()


def resolve_exec_device(device_index: Optional[str], backend: Optional[str], engine_backend: Optional[str]) -> str:
    """'cpu' or 'cuda:N'. Default: the loaded engine's backend, else the GPU when there is one, else the CPU."""
    index: Optional[int] = None
    if device_index is not None:
        try:
            index = int(device_index)
        except ValueError:
            raise UsageError(f"--device takes a GPU index (like --device=0), got '{device_index}'; "
                             f"use --backend=cpu|cuda to choose the backend") from None
        if index < 0:
            raise UsageError(f"--device must be a GPU index >= 0, got {index}")
        if backend == "cpu":
            raise UsageError("--device selects a GPU, but --backend=cpu was asked for")
        if not gpu_available():
            raise ConfigError(f"--device={index} asks for GPU {index}, but no CUDA GPU is available here; leave "
                              f"out --device (or pass --backend=cpu) to run on the CPU")
        if index >= torch.cuda.device_count():
            raise ConfigError(f"--device={index}: there is no GPU {index} ({torch.cuda.device_count()} CUDA "
                              f"device(s) here)")
        return f"cuda:{index}"
    chosen = backend or engine_backend or ("cuda" if gpu_available() else "cpu")
    if chosen == "cuda" and not gpu_available():
        if backend is None:
            raise ConfigError(ENGINE_NEEDS_GPU)
        raise ConfigError("--backend=cuda: no CUDA GPU is available here; use --backend=cpu")
    return "cuda:0" if chosen == "cuda" else "cpu"


def resolve_device(device: Optional[str], default: Optional[str] = None) -> str:
    """For build/run/conformance `--device cpu|cuda|cuda:N`: default is `default` (the engine's
    backend, for run), else the CPU."""
    chosen = device or default or "cpu"
    if chosen.startswith("cuda") and not gpu_available():
        if device is None:
            raise ConfigError(ENGINE_NEEDS_GPU)
        raise ConfigError(f"--device {chosen}: no CUDA GPU is available here; use --device cpu")
    return chosen
