"""Layer fusion passes: fold per-channel scales and shifts into weights, then fuse epilogues.

Run `fold_scale_and_bias` before `fuse_epilogues`: folding BatchNormalization / Mul / Add into a
convolution's weights first leaves Conv -> activation chains that the epilogue rules then turn into
one FusedConv (Relu(BN(Conv(x))) -> Conv'(x) -> FusedConv(x, Relu)). Both leave the replaced
weights unreferenced; `eliminate_dead_nodes` afterwards drops them.

Besides the rules' own refusals, the rule engine reports matches that failed only because a value
inside the pattern is read elsewhere (fusing would remove a tensor someone else needs).
"""

from __future__ import annotations

from ..ir import Graph
from .context import PassContext
from .fusion import apply_rules
from .fusion.rules.epilogue import EPILOGUE_RULES
from .fusion.rules.fold_scale_bias import FOLD_RULES


def fold_scale_and_bias(graph: Graph, ctx: PassContext) -> Graph:
    """BatchNormalization, and Mul/Div/Add/Sub by per-channel constants, folded into the weights and
    bias of the Conv / ConvTranspose / Gemm / MatMul before them."""
    _drop_unread_batchnorm_outputs(graph, ctx)
    graph = apply_rules(graph, FOLD_RULES, ctx)
    return graph


def fuse_epilogues(graph: Graph, ctx: PassContext) -> Graph:
    """Conv / ConvTranspose / MatMul / Gemm with their bias, residual Add and activation fused into
    FusedConv / FusedMatMul (or MatMul + bias into Gemm)."""
    graph = apply_rules(graph, EPILOGUE_RULES, ctx)
    return graph


def _drop_unread_batchnorm_outputs(graph: Graph, ctx: PassContext) -> None:
    """Inference BatchNormalization may list running-statistics outputs nobody reads; without them it
    is the plain affine map the fold rule handles."""
    read = {v.name for n in graph.nodes for v in n.inputs if v is not None}
    read |= {name for n in graph.nodes for g in n.subgraphs() for name in g.free_names()}
    read |= {v.name for v in graph.outputs}
    for node in graph.nodes:
        if node.op_type != "BatchNormalization" or node.domain or len(node.outputs) < 2:
            continue
        if node.attrs.get("training_mode") or any(v.name in read for v in node.outputs[1:]):
            continue
        node.outputs = node.outputs[:1]
        ctx.rewrote("drop_unread_batchnorm_outputs", node.name)
