"""TreeEnsemble (ai.onnx.ml opset 5): a forest of decision trees, evaluated batch-wide.

Nodes are columns of the `nodes_*` attributes; a node sends a sample to its true or
false child, which is either another node or (when `nodes_trueleafs`/`nodes_falseleafs`
says so) an entry of the `leaf_*` attributes. All samples of all trees step down one
level at a time with tensor ops. Leaf weights are combined per target by
`aggregate_function`, then `post_transform` is applied.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np
import torch

from ..ir import DType, Node, TensorType
from .registry import REQUIRED, InferContext, Op, register

_AVERAGE, _SUM, _MIN, _MAX = 0, 1, 2, 3
_NONE, _SOFTMAX, _LOGISTIC, _SOFTMAX_ZERO, _PROBIT = 0, 1, 2, 3, 4
_MEMBER = 6
_FLOATS = {DType.FLOAT32, DType.FLOAT64, DType.FLOAT16}
_NODE_LISTS = ("nodes_falseleafs", "nodes_falsenodeids", "nodes_featureids", "nodes_modes", "nodes_splits",
               "nodes_trueleafs", "nodes_truenodeids")


def _flat(value: Any) -> np.ndarray:
    return np.asarray(value).reshape(-1)


def member_table(modes: np.ndarray, membership_values: Optional[Any]) -> np.ndarray:
    """[nodes, max_members] float64, NaN-padded: the set of each BRANCH_MEMBER node.

    `membership_values` lists the sets in node order, each ended by a NaN.
    """
    member_nodes = [i for i, m in enumerate(modes) if m == _MEMBER]
    sets: list[list[float]] = []
    if member_nodes:
        current: list[float] = []
        for v in _flat(membership_values).astype(np.float64):
            if math.isnan(v):
                sets.append(current)
                current = []
            else:
                current.append(float(v))
    width = max([1] + [len(s) for s in sets])
    table = np.full((len(modes), width), np.nan)
    for node, members in zip(member_nodes, sets):
        table[node, :len(members)] = members
    return table


def post_transform(scores: torch.Tensor, kind: int) -> torch.Tensor:
    if kind == _SOFTMAX:
        return torch.softmax(scores, dim=1)
    if kind == _LOGISTIC:
        return torch.sigmoid(scores)
    if kind == _SOFTMAX_ZERO:
        # Softmax over the non-zero scores only; zeros stay (near) zero; all-zero rows give 0.5.
        row_max = scores.max(dim=1, keepdim=True).values
        nonzero = scores.abs() > 1e-7
        e = torch.where(nonzero, torch.exp(scores - row_max), scores * torch.exp(-row_max))
        total = e.sum(dim=1, keepdim=True)
        return torch.where(total == 0, torch.full_like(e, 0.5), e / total)
    if kind == _PROBIT:
        return math.sqrt(2) * torch.erfinv(2 * scores - 1)
    return scores


@register
class TreeEnsemble(Op):
    name = "TreeEnsemble"
    domain = "ai.onnx.ml"
    since_opset = 5
    attrs = {"aggregate_function": _SUM, "leaf_targetids": REQUIRED, "leaf_weights": REQUIRED,
             "membership_values": None, "n_targets": REQUIRED, "nodes_falseleafs": REQUIRED,
             "nodes_falsenodeids": REQUIRED, "nodes_featureids": REQUIRED, "nodes_hitrates": None,
             "nodes_missing_value_tracks_true": None, "nodes_modes": REQUIRED, "nodes_splits": REQUIRED,
             "nodes_trueleafs": REQUIRED, "nodes_truenodeids": REQUIRED, "post_transform": _NONE,
             "tree_roots": REQUIRED}

    def check(self, node: Node) -> Optional[str]:
        a = node.attrs
        n_nodes = len(_flat(a["nodes_modes"]))
        for key in _NODE_LISTS:
            if len(_flat(a[key])) != n_nodes:
                return f"{key} has {len(_flat(a[key]))} entries, nodes_modes has {n_nodes}"
        tracks = a["nodes_missing_value_tracks_true"]
        if tracks is not None and len(_flat(tracks)) != n_nodes:
            return f"nodes_missing_value_tracks_true has {len(_flat(tracks))} entries, expected {n_nodes}"
        n_leaves = len(_flat(a["leaf_weights"]))
        if len(_flat(a["leaf_targetids"])) != n_leaves:
            return f"leaf_targetids has {len(_flat(a['leaf_targetids']))} entries, leaf_weights has {n_leaves}"
        modes = _flat(a["nodes_modes"]).astype(np.int64)
        if ((modes < 0) | (modes > _MEMBER)).any():
            return f"nodes_modes holds values outside 0..6: {sorted(set(modes.tolist()))}"
        n_sets = int((modes == _MEMBER).sum())
        if n_sets:
            values = a["membership_values"]
            if values is None or int(np.isnan(_flat(values).astype(np.float64)).sum()) != n_sets:
                return f"membership_values must hold {n_sets} NaN-terminated sets (one per BRANCH_MEMBER node)"
        if a["aggregate_function"] not in (_AVERAGE, _SUM, _MIN, _MAX):
            return f"aggregate_function {a['aggregate_function']} is not one of 0..3"
        if a["post_transform"] not in (_NONE, _SOFTMAX, _LOGISTIC, _SOFTMAX_ZERO, _PROBIT):
            return f"post_transform {a['post_transform']} is not one of 0..4"
        targets = _flat(a["leaf_targetids"])
        if len(targets) and (targets.min() < 0 or targets.max() >= a["n_targets"]):
            return f"leaf_targetids must lie in [0, n_targets={a['n_targets']})"
        x = node.inputs[0]
        if x is not None and x.dtype is not None and x.dtype not in _FLOATS:
            return f"input dtype {x.dtype.short} is not float, double or float16"
        return None

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        x = ctx.type(0)
        if x is None:
            return [None]
        batch = x.shape[0] if x.shape else None
        return [TensorType(x.dtype, (batch, ctx.attrs["n_targets"]))]

    def reference(self, ctx, inputs, attrs):
        x = inputs[0]
        device = x.device
        if x.dim() == 1:
            x = x.unsqueeze(0)
        xs = x.to(torch.float64)
        batch = xs.shape[0]

        def table(key: str, dtype: torch.dtype) -> torch.Tensor:
            return torch.as_tensor(_flat(attrs[key]).astype(np.float64), dtype=torch.float64).to(device, dtype)

        modes_np = _flat(attrs["nodes_modes"]).astype(np.int64)
        modes = torch.as_tensor(modes_np, device=device)
        splits = table("nodes_splits", torch.float64)
        features = table("nodes_featureids", torch.int64)
        true_ids, false_ids = table("nodes_truenodeids", torch.int64), table("nodes_falsenodeids", torch.int64)
        true_leaf = table("nodes_trueleafs", torch.int64).bool()
        false_leaf = table("nodes_falseleafs", torch.int64).bool()
        tracks = (table("nodes_missing_value_tracks_true", torch.int64).bool()
                  if attrs["nodes_missing_value_tracks_true"] is not None
                  else torch.zeros_like(modes, dtype=torch.bool))
        members = torch.as_tensor(member_table(modes_np, attrs["membership_values"]), device=device)
        roots = table("tree_roots", torch.int64)
        n_trees = roots.numel()

        node = roots.unsqueeze(0).expand(batch, n_trees).clone()
        at_leaf = torch.zeros_like(node, dtype=torch.bool)
        for _ in range(len(modes_np) + 1):  # a path visits each node at most once
            active = ~at_leaf
            if not bool(active.any()):
                break
            idx = torch.where(active, node, torch.zeros_like(node))
            value = torch.gather(xs, 1, features[idx])
            split, mode = splits[idx], modes[idx]
            outcomes = torch.stack([value <= split, value < split, value >= split, value > split, value == split,
                                    value != split, (value.unsqueeze(-1) == members[idx]).any(-1)], dim=-1)
            go_true = torch.gather(outcomes, -1, mode.unsqueeze(-1)).squeeze(-1) | (tracks[idx] & value.isnan())
            node = torch.where(active, torch.where(go_true, true_ids[idx], false_ids[idx]), node)
            at_leaf = torch.where(active, torch.where(go_true, true_leaf[idx], false_leaf[idx]), at_leaf)
        else:
            raise ValueError("TreeEnsemble: a tree has a cycle (no leaf reached)")

        weights = table("leaf_weights", torch.float64)[node]
        targets = table("leaf_targetids", torch.int64)[node]
        n_targets = int(attrs["n_targets"])
        aggregate = attrs["aggregate_function"]
        if aggregate in (_SUM, _AVERAGE):
            scores = torch.zeros(batch, n_targets, dtype=torch.float64, device=device).scatter_add_(1, targets, weights)
            if aggregate == _AVERAGE:
                scores = scores / n_trees
        else:
            info = torch.finfo(x.dtype)
            start = info.max if aggregate == _MIN else info.min
            scores = torch.full((batch, n_targets), start, dtype=torch.float64, device=device)
            scores = scores.scatter_reduce(1, targets, weights, reduce="amin" if aggregate == _MIN else "amax")
        return post_transform(scores, attrs["post_transform"]).to(x.dtype)
