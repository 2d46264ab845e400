"""The activation arena: one block of device memory, an offset in it for every activation.

From liveness and the tensor sizes at given dimensions, each activation buffer gets an
offset so that no two buffers alive at the same time overlap (TensorRT's "device memory
size" is the size of this block). Placement is greedy by size, best fit: the largest
buffers are placed first, each in the smallest gap left between the already-placed
buffers whose lifetimes intersect its own, or above them all when no gap fits.

What is a buffer: a value produced by a top-level layer, merged with the values that are
views of it (Reshape, Flatten, Squeeze, Unsqueeze and Identity return views of their
data input in every tactic, so they add no memory; the view keeps its base alive). A
buffer that holds a graph input, a constant or a graph output is not an activation: the
caller or the engine owns that memory, so it is left out of the arena (and counted in
`io_bytes`). Memory used inside subgraphs (If/Loop bodies) and tactic workspaces is not
planned here.

Which activations the arena holds: those whose layer writes into memory the runtime hands it
(`include`: the builder passes the layers whose tactics take their outputs from
RunContext.output), as inductor's memory planning holds the buffers of its own kernels and
leaves extern kernels to allocate theirs. The others (`elsewhere`) come from torch's caching
allocator at run time; `elsewhere_peak_bytes` is the most of them alive at once.

Lifetimes: a value defined by layer i and last read by layer j is alive over [i, j]
inclusive: a layer's outputs are allocated while its inputs are still alive. A layer that may
return (a view of) an input (`may_alias`: torch's reference Transpose, Split, Slice, a no-op
Cast) keeps its inputs alive as long as its outputs, so the memory an output may point into is
not handed to another value meanwhile; inputs that may so reach a graph output stay out of the
arena (the caller keeps outputs past the call).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

from ..ir import Graph, Node, TensorType, free_names_of_subgraphs

ALIGNMENT = 256
# Ops whose output is a view of input 0: the output shares its input's buffer.
VIEW_OPS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"})


def is_view(node: Node) -> bool:
    """Whether the layer's output is a view of its input 0 (one of VIEW_OPS, default domain)."""
    return node.op_type in VIEW_OPS and not node.domain


@dataclass(frozen=True)
class Buffer:
    """One activation buffer: its values (the base first, then its views), lifetime and place."""

    values: tuple[str, ...]
    nbytes: int  # unaligned size of the base value
    first: int  # index of the layer that defines it
    last: int  # index of the last layer that reads it (or one of its views)
    offset: int

    @property
    def end(self) -> int:
        return self.offset + aligned(self.nbytes)

    def overlaps_in_time(self, other: "Buffer") -> bool:
        return self.first <= other.last and other.first <= self.last

    def overlaps_in_memory(self, other: "Buffer") -> bool:
        return self.offset < other.end and other.offset < self.end


@dataclass(frozen=True)
class ArenaPlan:
    size: int  # bytes of the arena (a multiple of ALIGNMENT)
    buffers: tuple[Buffer, ...]
    # Most bytes of activations alive at once (unaligned): the least any arena can be.
    peak_live_bytes: int
    # Bytes of graph inputs and outputs (not in the arena: the caller owns them).
    io_bytes: int
    # Activations whose size is unknown at these dimensions (data-dependent shapes):
    # they are allocated at run time, outside the arena.
    unplanned: tuple[str, ...] = ()
    offsets: dict[str, int] = field(default_factory=dict, compare=False)
    # Activations left out by `include` (their layers allocate them), and the most bytes of
    # them alive at once.
    elsewhere: tuple[str, ...] = ()
    elsewhere_peak_bytes: int = 0

    @property
    def complete(self) -> bool:
        return not self.unplanned

    def to_json(self) -> dict[str, Any]:
        return {"size": self.size, "alignment": ALIGNMENT, "buffers": len(self.buffers),
                "peak_live_bytes": self.peak_live_bytes, "io_bytes": self.io_bytes,
                "unplanned": len(self.unplanned), "unplanned_first": list(self.unplanned[:5]),
                "elsewhere": len(self.elsewhere), "elsewhere_peak_bytes": self.elsewhere_peak_bytes}

    def layout(self) -> dict[str, Any]:
        """The placement the runtime allocates: the size, and each buffer as [offset, nbytes, values]."""
        return {"size": self.size, "alignment": ALIGNMENT,
                "buffers": [[b.offset, b.nbytes, list(b.values)] for b in self.buffers]}


def aligned(nbytes: int) -> int:
    return (nbytes + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


def value_nbytes(value_type: Any, dims: Mapping[str, int]) -> Optional[int]:
    """Bytes of a tensor of this type with the symbolic dimensions resolved; None when unknown."""
    if not isinstance(value_type, TensorType) or value_type.shape is None:
        return None
    n = 1
    for d in value_type.shape:
        if isinstance(d, str):
            d = dims.get(d)
        if not isinstance(d, int):
            return None
        n *= d
    try:
        return n * value_type.dtype.itemsize
    except (TypeError, AttributeError):
        return None


def plan_arena(graph: Graph, dims: Mapping[str, int],
               nbytes_of: Optional[Mapping[str, int]] = None,
               include: Optional[Callable[[Node], bool]] = None,
               exclude: frozenset[str] = frozenset(),
               may_alias: Optional[Callable[[Node], bool]] = None) -> ArenaPlan:
    """Place the activations of `graph` (top level) in one arena at the given dimensions.

    `dims` maps symbolic dimension names to sizes; `nbytes_of` may give a value's size in
    bytes directly (e.g. from shapes inferred at concrete input shapes), overriding its type.
    `include(layer)`: whether the layer's outputs go in the arena (default: all); a buffer
    holding any value named in `exclude` stays out too. `may_alias(layer)`: whether the layer's
    outputs may alias its inputs (default: none does, beyond the view ops).
    """
    nbytes_of = nbytes_of or {}
    n_layers = len(graph.nodes)
    inputs = {v.name for v in graph.inputs}
    constants = {v.name for v in graph.initializers}
    outputs = {v.name for v in graph.outputs}

    # Each value's buffer root (views point at their base) and where it is defined.
    root: dict[str, str] = {}
    first: dict[str, int] = {}
    types: dict[str, Any] = {v.name: v.type for v in graph.inputs}
    for i, node in enumerate(graph.nodes):
        for k, v in enumerate(node.outputs):
            types[v.name] = v.type
            base = node.inputs[0] if node.inputs else None
            if k == 0 and is_view(node) and base is not None:
                root[v.name] = root.get(base.name, base.name)
            else:
                root[v.name] = v.name
                first[v.name] = i

    def root_of(name: str) -> str:
        return root.get(name, name)

    last: dict[str, int] = {}
    read_by: list[list[str]] = []
    for i, node in enumerate(graph.nodes):
        read_by.append([v.name for v in node.inputs if v is not None] + sorted(free_names_of_subgraphs(node)))
        for name in read_by[-1]:
            r = root_of(name)
            last[r] = max(last.get(r, -1), i)
    members: dict[str, list[str]] = {}
    for name, r in root.items():
        members.setdefault(r, []).append(name)
    escapes = n_layers  # "alive past the call": may reach a graph output
    if may_alias is not None:
        # Latest layers first: an output's own extended lifetime is known when its layer is reached.
        for i in range(n_layers - 1, -1, -1):
            node = graph.nodes[i]
            if is_view(node) or not may_alias(node):
                continue
            reach = i
            for v in node.outputs:
                r = root_of(v.name)
                reach = max(reach, escapes if any(m in outputs for m in members.get(r, ())) else last.get(r, i))
            for name in read_by[i]:
                r = root_of(name)
                last[r] = max(last.get(r, -1), reach)

    buffers: list[tuple[str, int]] = []  # (root, nbytes) of the activations to place
    unplanned: list[str] = []
    elsewhere: list[tuple[str, int]] = []
    io_bytes = 0
    for v in graph.inputs:
        io_bytes += value_nbytes(v.type, dims) or 0
    for r in first:  # every produced base, in layer order
        group = members[r]
        size = nbytes_of.get(r)
        if size is None:
            size = value_nbytes(types[r], dims)
        if any(name in outputs for name in group):
            io_bytes += size or 0
            continue
        if r in inputs or r in constants:
            continue
        if ((include is not None and not include(graph.nodes[first[r]])) or any(name in exclude for name in group)
                or last.get(r, -1) >= escapes):
            elsewhere.append((r, size or 0))
            continue
        if size is None:
            unplanned.append(r)
            continue
        buffers.append((r, size))

    def lifetime(r: str) -> tuple[int, int]:
        return first[r], min(max(first[r], last.get(r, first[r])), n_layers - 1)

    lifetimes = {r: lifetime(r) for r, _ in buffers}
    placed: list[Buffer] = []
    # Largest first; ties by definition order so the plan is deterministic.
    order = sorted(buffers, key=lambda b: (-aligned(b[1]), lifetimes[b[0]][0], b[0]))
    for r, size in order:
        lo, hi = lifetimes[r]
        need = aligned(size)
        busy = sorted((b.offset, b.end) for b in placed if b.first <= hi and lo <= b.last)
        best: Optional[tuple[int, int]] = None  # (gap size, offset)
        cursor = 0
        for start, end in busy:
            gap = start - cursor
            if gap >= need and (best is None or gap < best[0]):
                best = (gap, cursor)
            cursor = max(cursor, end)
        offset = best[1] if best is not None else cursor
        placed.append(Buffer(tuple(members[r]), size, lo, hi, offset))
    placed.sort(key=lambda b: (b.first, b.offset))
    size = max((b.end for b in placed), default=0)
    offsets = {name: b.offset for b in placed for name in b.values}
    outside = [(*lifetime(r), n) for r, n in elsewhere]
    return ArenaPlan(size, tuple(placed), _peak_live([(b.first, b.last, b.nbytes) for b in placed], n_layers),
                     io_bytes, tuple(unplanned), offsets, tuple(r for r, _ in elsewhere),
                     _peak_live(outside, n_layers))


def _peak_live(lifetimes: list[tuple[int, int, int]], n_layers: int) -> int:
    """The most bytes alive at once of buffers given as (first layer, last layer, bytes)."""
    delta = [0] * (n_layers + 1)
    for first, last, nbytes in lifetimes:
        delta[first] += nbytes
        delta[last + 1] -= nbytes
    peak = current = 0
    for d in delta:
        current += d
        peak = max(peak, current)
    return peak


def overlapping_pairs(plan: ArenaPlan) -> list[tuple[Buffer, Buffer]]:
    """Pairs of buffers alive at the same time that share memory (empty for a valid plan)."""
    bad = []
    bs = plan.buffers
    for i in range(len(bs)):
        for j in range(i + 1, len(bs)):
            if bs[i].overlaps_in_time(bs[j]) and bs[i].overlaps_in_memory(bs[j]):
                bad.append((bs[i], bs[j]))
    return bad


def memory_summary(graph: Graph, opt_dims: Mapping[str, int], max_dims: Mapping[str, int],
                   sizes_at: Optional[Callable[[Mapping[str, int]], Mapping[str, int]]] = None,
                   include: Optional[Callable[[Node], bool]] = None,
                   exclude: frozenset[str] = frozenset(),
                   may_alias: Optional[Callable[[Node], bool]] = None) -> dict[str, Any]:
    """The plan's `memory` entries: the arena the runtime allocates, and every activation's plan.

    `sizes_at(dims)`, when given, returns value sizes in bytes at those dimensions (e.g. from
    types re-inferred at concrete input shapes, which resolves dimensions the symbolic types
    leave open). The arena is planned at the max shapes, so its places hold any allowed input's
    values; `device_memory_size` is its size (what an execution context preallocates).
    `activations_at_opt`/`_at_max` plan every activation as if all were in the arena: the least
    memory they need together (None as device memory when some size is not known at build time).
    """
    max_sizes = sizes_at(max_dims) if sizes_at else None
    arena = plan_arena(graph, max_dims, max_sizes, include, exclude, may_alias)
    every_at_opt = plan_arena(graph, opt_dims, sizes_at(opt_dims) if sizes_at else None)
    every_at_max = plan_arena(graph, max_dims, max_sizes)
    return {"device_memory_size": arena.size, "arena": arena.layout(), "arena_plan": arena.to_json(),
            "activations_at_opt": every_at_opt.to_json(), "activations_at_max": every_at_max.to_json(),
            "activation_bytes_at_max": every_at_max.size if every_at_max.complete else None}
