"""TensorScatter (opset 24): write `update` into a copy of a KV cache along `axis`, each
batch entry starting at its `write_indices` position; `circular` mode wraps around."""

from __future__ import annotations

from typing import Optional

import torch

from ..ir import TensorType
from ._shape_common import movable
from .registry import InferContext, Op, normalize_axis, register, same_as_input


@register
class TensorScatter(Op):
    name = "TensorScatter"
    attrs = {"axis": -2, "mode": "linear"}

    def check(self, node):
        if node.attrs["mode"] not in ("linear", "circular"):
            return f"mode '{node.attrs['mode']}' is not supported"
        return None

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        return same_as_input(ctx)

    def reference(self, ctx, inputs, attrs):
        cache, update = inputs[0], inputs[1]
        write = inputs[2] if len(inputs) > 2 and inputs[2] is not None else None
        axis = normalize_axis(attrs["axis"], cache.dim())
        if axis == 0:
            raise ValueError("TensorScatter axis cannot be the batch axis 0")
        batch, steps, capacity = int(cache.shape[0]), int(update.shape[axis]), int(cache.shape[axis])
        if write is None:
            write = torch.zeros(batch, dtype=torch.int64, device=cache.device)
        view = [1] * cache.dim()
        view[0] = batch
        pos_view = [1] * cache.dim()
        pos_view[axis] = steps
        positions = write.to(torch.int64).reshape(view) + torch.arange(steps, device=cache.device).reshape(pos_view)
        if attrs["mode"] == "circular":
            positions = torch.remainder(positions, capacity)
        elif steps and int(positions.max()) >= capacity:
            raise ValueError(f"TensorScatter writes past the cache length {capacity} in linear mode")
        return movable(cache).scatter(axis, positions.expand(update.shape), movable(update)).view(cache.dtype)
