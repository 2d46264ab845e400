"""The ordered list of passes, and running it with a per-pass report.

Each pass is a function `(graph, ctx) -> graph` named for what it does. The builder hands
the pipeline a graph it owns (a copy of the user's), so passes may reuse and edit its
nodes. In debug mode the graph is verified after every pass, so a broken rewrite is
caught at the pass that made it, and each intermediate graph can be dumped as text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

from ..errors import GraphError
from ..ir import Graph, format_graph, verify
from ..ops import infer_graph_types
from .context import PassContext, PassReport
from .concat_elimination import eliminate_concats
from .cse import eliminate_common_subexpressions
from .dead_code import eliminate_dead_nodes
from .elementwise_chains import fuse_elementwise_chains
from .embed_layer_norm import fuse_embed_layer_norms
from .fold_constants import fold_constants
from .fuse_layers import fold_scale_and_bias, fuse_epilogues
from .index_gathers import index_gathers_as_views
from .noops import remove_noops
from .prune import prune_unused_inputs
from .attention_masks import narrow_attention_masks
from .recognize import recognize_attention, recognize_patterns
from .sibling_gemms import merge_sibling_gemms
from .skip_layer_norm import fuse_skip_layer_norms

Pass = Callable[[Graph, PassContext], Graph]

# Passes every build runs, whatever the optimization level.
REQUIRED_PIPELINE: tuple[Pass, ...] = (eliminate_dead_nodes,)

# The order matters (each pass's docstring says what it needs before it):
# cleanup first so patterns see folded shapes and no no-ops; primitive subgraphs become
# single layers (Softmax before attention, which matches on Softmax); BatchNorm and
# per-channel scales fold into weights before sibling layers merge under a Concat and
# before epilogues absorb bias/residual/activation; what elementwise ops remain are
# grouped last; dead nodes and weights replaced along the way go at the end.
OPTIMIZING_PIPELINE: tuple[Pass, ...] = (
    eliminate_dead_nodes,
    # Before folding: an input read only through its static shape stays an engine input.
    prune_unused_inputs,
    remove_noops,
    # Names the dims run-time shape arithmetic computes (symbolic_dims.py) as it folds.
    fold_constants,
    # After folding, so equal folded constants merge; then folded Reshape targets reveal
    # Reshapes to the same shape.
    eliminate_common_subexpressions,
    # On folded index arithmetic, before elementwise chains absorb it and before the embedding
    # norms take the position lookup as their dense term.
    index_gathers_as_views,
    remove_noops,
    recognize_patterns,
    recognize_attention,
    # On the attention layers, before elementwise chains absorb the Where/And that widen their masks.
    narrow_attention_masks,
    # Needs the LayerNormalization layers recognised; takes the residual Add before the epilogue
    # fusions can (they would fold it into the GEMM with the bias).
    fuse_skip_layer_norms,
    # On the fused norms: the embedding lookups and their sum join the norm after them.
    fuse_embed_layer_norms,
    fold_scale_and_bias,
    eliminate_concats,
    fuse_epilogues,
    # After epilogue fusion: siblings merge with their biases and activations inside.
    merge_sibling_gemms,
    fuse_elementwise_chains,
    eliminate_dead_nodes,
)


def default_pipeline(level: int = 3) -> tuple[Pass, ...]:
    """The passes for a builder optimization level (0: only the required ones)."""
    return REQUIRED_PIPELINE if level <= 0 else OPTIMIZING_PIPELINE


DEFAULT_PIPELINE = default_pipeline()


def run_pipeline(graph: Graph, passes: Sequence[Pass] = DEFAULT_PIPELINE, debug: bool = False,
                 dump_dir: Optional[Path] = None,
                 dim_bounds: Optional[Mapping[str, int]] = None) -> tuple[Graph, list[PassReport]]:
    """Run the passes in order. `dim_bounds`: the largest size of each symbolic input dim
    (from the optimization profiles), for the passes that reason about dims."""
    reports = []
    if dump_dir is not None:
        dump_dir.mkdir(parents=True, exist_ok=True)
        (dump_dir / "00_input.txt").write_text(format_graph(graph))
    for i, p in enumerate(passes, 1):
        before = len(graph.nodes)
        ctx = PassContext(dim_bounds=dict(dim_bounds or {}))
        graph = p(graph, ctx)
        infer_graph_types(graph)
        if debug:
            try:
                verify(graph)
            except GraphError as exc:
                raise GraphError(f"after pass '{p.__name__}': {exc}") from exc
        if dump_dir is not None:
            (dump_dir / f"{i:02d}_{p.__name__}.txt").write_text(format_graph(graph))
        reports.append(PassReport(p.__name__, before, len(graph.nodes), dict(ctx.rewrites), tuple(ctx.details),
                                  tuple(ctx.declines)))
    return graph, reports
