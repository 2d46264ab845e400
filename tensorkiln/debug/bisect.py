"""Precision bisect: the fewest layers that must stay FP32 for a low-precision engine to pass.

Build the engine with fp16 (or bf16) allowed; if its outputs are not within tolerance of
the expected ones, search over the layers that ran in the lower precision for a smallest
set that, kept in FP32 (`layer_precisions={name: "fp32"}` with constraints "obey"), makes
the engine pass. The search bisects over the layers in graph order: the shortest prefix
of layers that, kept in FP32, makes the engine pass ends at a layer that is needed; keep
it, and search the layers before it the same way, until the kept layers pass alone (see
`minimal_passing_set`). The result is 1-minimal: every layer in it is needed, assuming
that keeping more layers in FP32 never makes the outputs worse. It takes about
k·(log2(n) + 1) builds for k needed layers out of n.

The result is given as the builder flags that reproduce it
(`--layerPrecisions=a:fp32,b:fp32 --precisionConstraints=obey`), and `verify` builds the
engine from exactly that spec to show it passes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from ..builder import Builder, BuilderConfig
from ..engine import EnginePlan
from ..errors import ConfigError
from ..ir import Graph
from ..runtime import Runtime
from .compare import ComparisonReport, Thresholds, compare_outputs
from .stats import format_number

LOW_PRECISIONS = ("fp16", "bf16")


@dataclass(frozen=True)
class Trial:
    """One engine built and judged."""

    fp32_layers: tuple[str, ...]  # the layers forced to FP32, in graph order
    passed: bool
    detail: str  # a short line on the worst output (report has the full verdicts)
    report: ComparisonReport = field(compare=False, repr=False)


@dataclass(frozen=True)
class BisectStep:
    number: int
    stage: str  # what this step tried ("all fp16", "part 1 of 2 of 8 layers", ...)
    trial: Trial
    repeat_of: Optional[int] = None  # the earlier step that built the same engine (not rebuilt)


@dataclass(frozen=True)
class BisectResult:
    precision: str  # "fp16" | "bf16"
    candidates: tuple[str, ...]  # layers that ran in the lower precision in the all-low engine
    steps: tuple[BisectStep, ...]
    all_low_passed: bool
    # The smallest set found that makes the engine pass; None when even keeping every
    # candidate in FP32 fails (the problem is not the lower precision).
    fp32_layers: Optional[tuple[str, ...]]
    # Layer name -> op type, for every layer of the all-low engine.
    layer_ops: Mapping[str, str] = field(default_factory=dict)

    @property
    def found(self) -> bool:
        return self.fp32_layers is not None

    def layer_precisions(self) -> dict[str, str]:
        return {name: "fp32" for name in self.fp32_layers or ()}

    def layer_precisions_spec(self) -> str:
        return format_layer_precisions(self.layer_precisions())


def format_layer_precisions(layer_precisions: Mapping[str, str]) -> str:
    """{name: precision} as trtexec's spec `a:fp32,b:fp32`; names holding ':' or ',' are
    single-quoted, as the --layerPrecisions parser reads them."""
    def quoted(name: str) -> str:
        return f"'{name}'" if ":" in name or "," in name else name
    return ",".join(f"{quoted(name)}:{precision}" for name, precision in layer_precisions.items())


def minimal_passing_set(candidates: Sequence[str], passes: Callable[[list[str], str], bool], *,
                        empty_fails: bool = False) -> list[str]:
    """A 1-minimal subset S of `candidates` with passes(S, stage), given passes(candidates).

    Bisection over the candidates in graph order: with the layers found so far, binary-search
    the shortest prefix of the remaining candidates that still passes; its last layer is
    needed, so it is added, and the search repeats on the layers before it until the found
    layers pass alone. Each found layer costs about log2(n) + 1 tries. Under monotonicity
    (keeping more layers in FP32 never hurts) no layer of the result can be dropped: without
    layer c the set is within one that was seen to fail. `stage` describes each try;
    `empty_fails` says passes([]) is already known to be False (it is not tried)."""
    found: list[str] = []
    remaining = list(candidates)
    while remaining:
        # passes(found + remaining[:high]) is known to hold, and passes(found + remaining[:k]) fails for k < low.
        low, high = (1 if empty_fails and not found else 0), len(remaining)
        while low < high:
            mid = (low + high) // 2
            kept = found + remaining[:mid]
            if not found:
                label = f"first {mid} of {len(remaining)} layers"
            elif mid == 0:
                label = f"the {len(found)} layer(s) found, alone"
            else:
                label = f"{len(found)} found + first {mid} of the {len(remaining)} before them"
            if passes(kept, label):
                high = mid
            else:
                low = mid + 1
        if high == 0:
            break
        found.append(remaining[high - 1])
        remaining = remaining[:high - 1]
    order = {name: i for i, name in enumerate(candidates)}
    return sorted(found, key=order.__getitem__)


class PrecisionBisector:
    """Builds and judges engines of one network with some layers forced to FP32."""

    def __init__(self, graph: Graph, feeds: Mapping[str, np.ndarray], expected: Mapping[str, Any], *,
                 precision: str = "fp16", thresholds: Thresholds, config: Optional[BuilderConfig] = None,
                 on_step: Optional[Callable[[BisectStep], None]] = None):
        if precision not in LOW_PRECISIONS:
            raise ConfigError(f"precision bisect needs fp16 or bf16, got '{precision}'")
        self.graph = graph
        self.feeds = dict(feeds)
        self.expected = dict(expected)
        self.precision = precision
        self.thresholds = thresholds
        base = config or BuilderConfig()
        # Only the lower precision being debugged is allowed, so each layer's choice is binary.
        self.config = base.with_changes(fp16=precision == "fp16", bf16=precision == "bf16", layer_precisions={},
                                        precision_constraints="none")
        self.on_step = on_step
        self.steps: list[BisectStep] = []
        # layer precisions tried -> (their trial, the step that built it)
        self._cache: dict[frozenset[tuple[str, str]], tuple[Trial, int]] = {}
        self._order: dict[str, int] = {}

    # ---- building and judging --------------------------------------------------------------
    def build(self, layer_precisions: Mapping[str, str]) -> EnginePlan:
        config = self.config.with_changes(layer_precisions=dict(layer_precisions),
                                          precision_constraints="obey" if layer_precisions else "none")
        return Builder(config).build(self.graph)

    def judge(self, plan: EnginePlan) -> ComparisonReport:
        engine = Runtime(self.config.device).load(plan)
        outputs = engine.create_execution_context().execute(self.feeds)
        return compare_outputs(outputs, self.expected, self.thresholds)

    def trial(self, layer_precisions: Mapping[str, str], stage: str, *, fresh: bool = False) -> Trial:
        """Build with `layer_precisions` (obeyed), run, compare, and record the step. A set
        tried before is not rebuilt unless `fresh` (builds are deterministic)."""
        fp32 = tuple(sorted((n for n, p in layer_precisions.items() if p == "fp32"),
                            key=lambda n: self._order.get(n, len(self._order))))
        key = frozenset(layer_precisions.items())
        number = len(self.steps) + 1
        cached = None if fresh else self._cache.get(key)
        if cached is None:
            report = self.judge(self.build(layer_precisions))
            trial = Trial(fp32, report.passed, _worst(report), report)
            self._cache[key] = (trial, number)
            step = BisectStep(number, stage, trial)
        else:
            step = BisectStep(number, stage, cached[0], repeat_of=cached[1])
        self.steps.append(step)
        if self.on_step is not None:
            self.on_step(step)
        return step.trial

    def keep_fp32(self, layers: Sequence[str], stage: str) -> bool:
        return self.trial({name: "fp32" for name in layers}, stage).passed

    # ---- the search ---------------------------------------------------------------------------
    def run(self) -> BisectResult:
        plan = self.build({})
        candidates = tuple(n.name for n in plan.graph.nodes
                           if n.meta.get("precision") == self.precision and not n.meta.get("reformat"))
        self._order = {name: i for i, name in enumerate(n.name for n in plan.graph.nodes)}
        ops = {n.name: n.op_type for n in plan.graph.nodes}
        report = self.judge(plan)
        first = Trial((), report.passed, _worst(report), report)
        self._cache[frozenset()] = (first, 1)
        self.steps.append(BisectStep(1, f"all {self.precision} ({len(candidates)} layer(s) in {self.precision})", first))
        if self.on_step is not None:
            self.on_step(self.steps[-1])
        if first.passed:
            return BisectResult(self.precision, candidates, tuple(self.steps), True, (), ops)
        if not candidates or not self.keep_fp32(candidates, f"all {len(candidates)} candidate layer(s) in fp32"):
            return BisectResult(self.precision, candidates, tuple(self.steps), False, None, ops)
        found = minimal_passing_set(candidates, self.keep_fp32, empty_fails=True)
        return BisectResult(self.precision, candidates, tuple(self.steps), False, tuple(found), ops)


def bisect_precision(graph: Graph, feeds: Mapping[str, np.ndarray], expected: Mapping[str, Any], *,
                     precision: str = "fp16", thresholds: Thresholds, config: Optional[BuilderConfig] = None,
                     on_step: Optional[Callable[[BisectStep], None]] = None) -> BisectResult:
    """Find the fewest layers that must stay FP32 for the `precision` engine of `graph` to match
    `expected` on `feeds` within `thresholds`. See the module docstring."""
    return PrecisionBisector(graph, feeds, expected, precision=precision, thresholds=thresholds, config=config,
                             on_step=on_step).run()


def _worst(report: ComparisonReport) -> str:
    """A short line on the worst output: the first failure, else the one with the largest error."""
    if report.missing:
        return f"output '{report.missing[0]}' missing"
    if not report.tensors:
        return "nothing compared"
    with_stats = [t for t in report.tensors if t.stats is not None]
    worst = report.failures[0] if report.failures else (
        max(with_stats, key=lambda t: t.stats.max_abs) if with_stats else report.tensors[0])
    s = worst.stats
    if s is None:
        return worst.summary()
    text = f"'{worst.name}': max abs {format_number(s.max_abs)}, max rel {format_number(s.max_rel)}"
    if worst.mismatches > 0:
        text += f", {worst.mismatches} of {s.count} outside tolerance"
    if s.nan_actual or s.inf_actual:
        text += f", {s.nan_actual} NaN / {s.inf_actual} Inf"
    return text
