"""Which device a runtime runs on, and how that compares with a plan's device."""

from __future__ import annotations

import torch

from ..errors import ConfigError


def parse_device(spec: str | torch.device | None) -> torch.device:
    if spec is None:
        return torch.device("cpu")
    try:
        dev = torch.device(spec)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"unknown device '{spec}': use 'cpu', 'cuda' or 'cuda:N'") from exc
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"device '{spec}' is not supported: use 'cpu', 'cuda' or 'cuda:N'")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device '{spec}' was asked for, but no CUDA GPU is available here")
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device '{spec}' does not exist: {torch.cuda.device_count()} CUDA device(s) here")
        dev = torch.device("cuda", index)
    return dev


def describe_device(dev: torch.device) -> tuple[str, str, tuple[int, int] | None]:
    """(backend, device name, compute capability) as recorded in engine plans."""
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        return "cuda", props.name, (props.major, props.minor)
    return "cpu", "cpu", None
