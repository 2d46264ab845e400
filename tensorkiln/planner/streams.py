"""Stream assignment: which layers run on auxiliary CUDA streams, beside the caller's stream.

Where a network branches (ResNet's downsample shortcut beside its block's three convolutions,
the towers of an Inception block), the two sides are independent until they join. When one
side's kernels leave most of the GPU idle (small batches), running the other side on a second
stream overlaps them. Whether it is faster is measured at build (tactics/stream_timing.py), as
TensorRT's builder decides its auxiliary streams: this module finds the candidate branches,
gives the kept ones streams, and derives the waits and signals the executor needs.

Streams are numbered: 0 is the stream the caller runs the engine on, 1.. the auxiliary ones.
Every auxiliary stream forks from the caller's stream at the start of a run (so it sees the
inputs' copies and joins a CUDA graph capture) and the caller's stream waits for each at the end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from ..ir import Graph

@dataclass(frozen=True)
class Branch:
    """A chain of layers that may run on an auxiliary stream while the rest of its region runs
    on the main one. Indices are layer positions in the graph's (topological) order."""

    side: tuple[int, ...]
    # Every layer from the first after the fork to the join (the first layer that reads the
    # side's results), the join included: what is timed one way and the other.
    region: tuple[int, ...]

    @property
    def join(self) -> int:
        return self.region[-1]


@dataclass(frozen=True)
class LayerSync:
    """What one layer does about streams, around its kernels."""

    stream: int
    # Layers whose completion this layer's stream waits for first.
    waits: tuple[int, ...]
    # Record this layer's completion event: a layer on another stream waits for it.
    signal: bool
    # Input positions produced on another stream: their memory must not be reused before
    # this layer's stream is done with them (torch's record_stream).
    foreign: tuple[int, ...]


@dataclass(frozen=True)
class StreamSchedule:
    layers: tuple[Optional[LayerSync], ...]  # None: on the main stream with nothing to do
    aux_streams: int
    # Each auxiliary stream's last layer: the main stream waits for them before the run returns.
    last_on_aux: tuple[int, ...]


def _producers(graph: Graph) -> tuple[dict[str, int], list[list[int]], list[list[int]]]:
    """Value name -> producing layer; each layer's producing predecessors and consumers."""
    producer = {v.name: i for i, n in enumerate(graph.nodes) for v in n.outputs}
    preds: list[list[int]] = []
    succs: list[list[int]] = [[] for _ in graph.nodes]
    for i, node in enumerate(graph.nodes):
        mine = sorted({producer[v.name] for v in node.inputs if v is not None and v.name in producer})
        preds.append(mine)
        for p in mine:
            succs[p].append(i)
    return producer, preds, succs


def find_branches(graph: Graph) -> list[Branch]:
    """The side chains that could run beside the rest of their region, in graph order.

    The layers are split into chains: each layer continues the chain of one of its producers
    that no other layer continued yet (the oldest chain first, so the main line stays one
    chain), or starts a new one. A chain whose results other chains read, that produces no graph
    output and ends before its first reader outside it, is a branch; its region starts after the
    last layer it reads from outside and ends at that first reader. A region with no other layer
    than the side and the join offers nothing to overlap and is left out.
    Graphs with control flow (layers with subgraphs) have none: their layers run on the host's
    schedule."""
    nodes = graph.nodes
    if any(True for n in nodes for _ in n.subgraphs()):
        return []
    _, preds, succs = _producers(graph)
    outputs = {v.name for v in graph.outputs}
    chain_of: list[int] = []
    chains: list[list[int]] = []
    open_tails: set[int] = set()
    for i in range(len(nodes)):
        continuable = [p for p in preds[i] if p in open_tails]
        if continuable:
            p = min(continuable, key=lambda q: (chain_of[q], -q))
            open_tails.discard(p)
            chain_of.append(chain_of[p])
            chains[chain_of[p]].append(i)
        else:
            chain_of.append(len(chains))
            chains.append([i])
        open_tails.add(i)
    branches = []
    for chain in chains:
        members = set(chain)
        if any(v.name in outputs for i in chain for v in nodes[i].outputs):
            continue
        readers = [s for i in chain for s in succs[i] if s not in members]
        if not readers:
            continue
        join = min(readers)
        if chain[-1] > join:
            continue
        start = max((p + 1 for i in chain for p in preds[i] if p not in members), default=0)
        region = tuple(range(start, join + 1))
        if len(region) <= len(chain) + 1:
            continue
        branches.append(Branch(side=tuple(chain), region=region))
    return sorted(branches, key=lambda b: (b.region[0], b.side))


def assign_streams(graph: Graph, branches: Sequence[Branch], max_aux_streams: int) -> tuple[list[int], list[int]]:
    """(stream of each layer, stream given to each branch: 0 where none was left). Branches whose
    regions overlap get different auxiliary streams, at most `max_aux_streams` of them; a branch
    that would need one more stays on the main stream."""
    stream_of = [0] * len(graph.nodes)
    given = []
    busy_until: list[int] = []  # per auxiliary stream: the join of its last branch
    for branch in branches:
        stream = next((k for k, end in enumerate(busy_until) if end < branch.region[0]), None)
        if stream is None and len(busy_until) < max_aux_streams:
            busy_until.append(-1)
            stream = len(busy_until) - 1
        if stream is None:
            given.append(0)
            continue
        busy_until[stream] = branch.join
        for i in branch.side:
            stream_of[i] = stream + 1
        given.append(stream + 1)
    return stream_of, given


def stream_schedule(graph: Graph, stream_of: Sequence[int]) -> Optional[StreamSchedule]:
    """The waits, signals and cross-stream reads of each layer for this assignment (None when
    every layer is on the main stream).

    A layer waits for the producer of each input made on another stream, unless its stream has
    already waited for that stream at or past that producer (stream order gives the rest).
    Constants are never released, so reading them across streams needs nothing; graph inputs
    count as made on the main stream before the run (which the fork at the start orders)."""
    if not any(stream_of):
        return None
    producer, _, _ = _producers(graph)
    constants = {v.name for v in graph.initializers}
    seen: dict[tuple[int, int], int] = {}  # (waiting stream, other stream) -> last layer waited for
    signals: set[int] = set()
    plans: list[tuple[int, list[int], list[int]]] = []
    last: dict[int, int] = {}
    for i, node in enumerate(graph.nodes):
        s = stream_of[i]
        waits: list[int] = []
        foreign: list[int] = []
        for pos, v in enumerate(node.inputs):
            if v is None or v.name in constants:
                continue
            p = producer.get(v.name)
            t = 0 if p is None else stream_of[p]
            if t == s:
                continue
            foreign.append(pos)
            if p is not None and seen.get((s, t), -2) < p:
                waits.append(p)
                seen[(s, t)] = p
                signals.add(p)
        if s:
            last[s] = i
        plans.append((s, waits, foreign))
    signals.update(last.values())
    layers = tuple(LayerSync(s, tuple(w), i in signals, tuple(f)) if (s or w or f or i in signals) else None
                   for i, (s, w, f) in enumerate(plans))
    return StreamSchedule(layers=layers, aux_streams=max(stream_of), last_on_aux=tuple(sorted(last.values())))
