"""The ordered list of passes, and running it with a per-pass report.

In debug mode the graph is verified after every pass, so a broken rewrite is caught at
the pass that made it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from ..errors import GraphError
from ..ir import Graph, verify
from .dead_code import eliminate_dead_nodes

Pass = Callable[[Graph], Graph]

DEFAULT_PIPELINE: tuple[Pass, ...] = (eliminate_dead_nodes,)


@dataclass(frozen=True)
class PassReport:
    name: str
    layers_before: int
    layers_after: int


def run_pipeline(graph: Graph, passes: Sequence[Pass] = DEFAULT_PIPELINE,
                 debug: bool = False) -> tuple[Graph, list[PassReport]]:
    reports = []
    for p in passes:
        before = len(graph.nodes)
        graph = p(graph)
        if debug:
            try:
                verify(graph)
            except GraphError as exc:
                raise GraphError(f"after pass '{p.__name__}': {exc}") from exc
        reports.append(PassReport(p.__name__, before, len(graph.nodes)))
    return graph, reports
