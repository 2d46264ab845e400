"""NonMaxSuppression: greedy per-(batch, class) box selection by score with IoU suppression."""

from __future__ import annotations

from typing import Optional

import torch

from ..ir import DType, Node, TensorType
from .registry import InferContext, Op, register


def _corners(boxes: torch.Tensor, center_point_box: int) -> tuple[torch.Tensor, ...]:
    """(x_min, y_min, x_max, y_max) of [y1, x1, y2, x2] boxes (any corner order) or [xc, yc, w, h] boxes."""
    if center_point_box:
        xc, yc, w, h = boxes.unbind(-1)
        return xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2
    y1, x1, y2, x2 = boxes.unbind(-1)
    return torch.minimum(x1, x2), torch.minimum(y1, y2), torch.maximum(x1, x2), torch.maximum(y1, y2)


def _suppresses(boxes: torch.Tensor, center_point_box: int, iou_threshold: float) -> torch.Tensor:
    """[n, n] bool: box i and box j overlap by IoU above the threshold (ONNX's degenerate cases: False)."""
    x0, y0, x1, y1 = _corners(boxes, center_point_box)
    ix = torch.minimum(x1[:, None], x1[None, :]) - torch.maximum(x0[:, None], x0[None, :])
    iy = torch.minimum(y1[:, None], y1[None, :]) - torch.maximum(y0[:, None], y0[None, :])
    inter = ix * iy
    area = (x1 - x0) * (y1 - y0)
    union = area[:, None] + area[None, :] - inter
    ok = (ix > 0) & (iy > 0) & (inter > 0) & (area[:, None] > 0) & (area[None, :] > 0) & (union > 0)
    iou = inter / torch.where(union > 0, union, torch.ones_like(union))
    return ok & (iou > iou_threshold)


@register
class NonMaxSuppression(Op):
    name = "NonMaxSuppression"
    attrs = {"center_point_box": 0}

    def check(self, node: Node) -> Optional[str]:
        if node.attrs.get("center_point_box") not in (0, 1):
            return f"center_point_box {node.attrs.get('center_point_box')} is not 0 or 1"
        return None

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        return [TensorType(DType.INT64, (None, 3))]

    def reference(self, ctx, inputs, attrs):
        boxes, scores = inputs[0], inputs[1]

        def scalar(i: int) -> Optional[float]:
            t = inputs[i] if len(inputs) > i else None
            return None if t is None or t.numel() == 0 else float(t.reshape(-1)[0])

        max_out = scalar(2)
        max_out = 0 if max_out is None else int(max_out)
        iou_threshold = scalar(3) or 0.0
        score_threshold = scalar(4)
        cpb = int(attrs["center_point_box"])
        # Greedy selection is sequential; it runs on the host, then the small result moves back.
        boxes_h = boxes.detach().to("cpu", torch.float64)
        scores_h = scores.detach().to("cpu", torch.float64)
        rows: list[list[int]] = []
        if max_out > 0:
            for b in range(boxes_h.shape[0]):
                overlap = _suppresses(boxes_h[b], cpb, float(iou_threshold)).tolist()
                for c in range(scores_h.shape[1]):
                    s = scores_h[b, c]
                    cand = torch.arange(s.shape[0])
                    if score_threshold is not None:
                        cand = cand[s > score_threshold]
                    # Descending score, ties to the lower box index (stable sort).
                    order = cand[torch.sort(-s[cand], stable=True).indices].tolist()
                    chosen: list[int] = []
                    for i in order:
                        if len(chosen) >= max_out:
                            break
                        if not any(overlap[i][j] for j in chosen):
                            chosen.append(i)
                            rows.append([b, c, i])
        out = torch.tensor(rows, dtype=torch.int64).reshape(-1, 3)
        return out.to(boxes.device)
