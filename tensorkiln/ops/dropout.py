"""Dropout: identity in inference (mask of ones); random zeroing with rescale in training mode."""

from __future__ import annotations

from typing import Optional

import torch

from ..ir import DType, TensorType
from .registry import InferContext, Op, register


@register
class Dropout(Op):
    name = "Dropout"
    # Random in training mode; inference-mode Dropout is removed by `remove_noops` instead.
    deterministic = False
    attrs = {"ratio": 0.5, "seed": None, "is_test": 0, "consumed_inputs": None}

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        t = ctx.type(0)
        if t is None:
            return [None] * ctx.num_outputs
        out = [t]
        if ctx.num_outputs > 1:
            # The mask is bool from opset 10; earlier it has the data's type.
            out.append(TensorType(DType.BOOL if ctx.opset >= 10 else t.dtype, t.shape))
        return out

    def normalize(self, attrs, opset):
        out = super().normalize(attrs, opset)
        out["_mask_bool"] = opset >= 10
        out["_train_from_input"] = opset >= 12
        return out

    def reference(self, ctx, inputs, attrs):
        x = inputs[0]
        training = False
        ratio = float(attrs["ratio"])
        if attrs["_train_from_input"]:
            if len(inputs) > 1 and inputs[1] is not None:
                ratio = float(inputs[1].reshape(-1)[0])
            if len(inputs) > 2 and inputs[2] is not None:
                training = bool(inputs[2].reshape(-1)[0])
        mask_dtype = torch.bool if attrs["_mask_bool"] else x.dtype
        if not training or ratio == 0.0:
            return [x, torch.ones(x.shape, dtype=mask_dtype, device=x.device)]
        gen = None
        if attrs.get("seed") is not None:
            gen = torch.Generator(device=x.device)
            gen.manual_seed(int(attrs["seed"]))
        keep = torch.rand(x.shape, generator=gen, device=x.device) >= ratio
        y = torch.where(keep, x / (1.0 - ratio), torch.zeros((), dtype=x.dtype, device=x.device)).to(x.dtype)
        return [y, keep.to(mask_dtype)]
