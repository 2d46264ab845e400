"""BuilderConfig and optimization profiles: the one frozen object that steers a build."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Optional, Sequence

from ..errors import ConfigError
from ..ir import Graph, format_shape
from ..precision import check_layer_precisions
from ..precision.io_formats import io_format_dtype


@dataclass(frozen=True)
class OptimizationProfile:
    """min/opt/max shape per dynamic input, as in TensorRT. Tactics are tuned at `opt`."""

    shapes: Mapping[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)

    @staticmethod
    def fixed(shapes: Mapping[str, Sequence[int]]) -> "OptimizationProfile":
        return OptimizationProfile({k: (tuple(v), tuple(v), tuple(v)) for k, v in shapes.items()})

    def validate(self, graph: Graph) -> None:
        inputs = {v.name: v for v in graph.inputs}
        for name, (lo, opt, hi) in self.shapes.items():
            v = inputs.get(name)
            if v is None:
                raise ConfigError(f"optimization profile names input '{name}', which the network does not have "
                                  f"(inputs: {sorted(inputs)})")
            if not (len(lo) == len(opt) == len(hi)):
                raise ConfigError(f"profile for input '{name}': min/opt/max have different ranks")
            if v.shape is not None and len(lo) != len(v.shape):
                raise ConfigError(f"profile for input '{name}' has rank {len(lo)}, but the input is "
                                  f"{format_shape(v.shape)} (rank {len(v.shape)})")
            for axis, (a, b, c) in enumerate(zip(lo, opt, hi)):
                if min(a, b, c) < 0:
                    raise ConfigError(f"profile for input '{name}' dimension {axis} is negative")
                if not a <= b <= c:
                    raise ConfigError(f"profile for input '{name}' dimension {axis}: need min <= opt <= max, "
                                      f"got {a}, {b}, {c}")
                fixed = None if v.shape is None else v.shape[axis]
                if isinstance(fixed, int) and not a == b == c == fixed:
                    raise ConfigError(f"profile for input '{name}' dimension {axis} is {a}..{c}, but the "
                                      f"network fixes it to {fixed}")


DEFAULT_MAX_AUX_STREAMS = 4


@dataclass(frozen=True)
class BuilderConfig:
    """How to build. Precision flags *allow* a precision; the builder picks per layer."""

    device: str = "cpu"
    tf32: bool = True
    fp16: bool = False
    bf16: bool = False
    profiles: tuple[OptimizationProfile, ...] = ()
    # Graph optimization: 0 runs only the required passes; >= 1 folds, eliminates and
    # fuses (trtexec's --builderOptimizationLevel, 0..5, default 3).
    optimization_level: int = 3
    # Verify the graph after every pass.
    debug: bool = False
    # Per-layer compute precision, as trtexec's --layerPrecisions: layer name (as `kiln
    # inspect` shows it, after optimization; one '*' wildcard allowed) -> "fp32" | "fp16" |
    # "bf16". Later entries override earlier ones. Applied only with precision_constraints
    # "prefer" (where the layer can run so; the FP32 policy for sensitive layers stays) or
    # "obey" (always, over the policy; an impossible request fails the build). A requested
    # precision is allowed for its layer even when fp16/bf16 are off.
    layer_precisions: Mapping[str, str] = field(default_factory=dict)
    # "none" | "prefer" | "obey" (trtexec's --precisionConstraints).
    precision_constraints: str = "none"
    # Tactic timing (tactics/autotune.py): each measurement averages `avg_timing` runs
    # (trtexec's --avgTiming, default 8); at least `min_timing` measurements are taken, and
    # never fewer than 3 (--minTiming, default 1); a candidate's time is their median.
    avg_timing: int = 8
    min_timing: int = 1
    # Tactic sources left out (trtexec's --tacticSources, e.g. ("cudnn", "triton")); lower case.
    disabled_tactic_sources: tuple[str, ...] = ()
    # The timing cache file to read and update (trtexec's --timingCacheFile). Without one,
    # a build still reuses timings between identical layers in memory.
    timing_cache_file: Optional[str] = None
    # False: no timing cache at all, not even a given file (trtexec's --noBuilderCache).
    builder_cache: bool = True
    # Workspace (scratch memory) a tactic may use, in bytes; None: no limit (trtexec's
    # --memPoolSize=workspace:N). Candidates declaring more are left out.
    workspace_bytes: Optional[int] = None
    # Progress bar while tuning, on stderr: None = when stderr is a terminal.
    tuning_progress: Optional[bool] = None
    # Most auxiliary CUDA streams an inference may use to run independent branches beside each
    # other (trtexec's --maxAuxStreams); a branch gets one only where that was timed faster.
    # None: as many as the kept branches need, up to DEFAULT_MAX_AUX_STREAMS; 0: none.
    max_aux_streams: Optional[int] = None
    # I/O formats (trtexec's --inputIOFormats / --outputIOFormats): tensor name -> the dtype the
    # engine takes that input in or gives that output in ("fp16", "bf16", or the declared type).
    # A float32 tensor may cross as fp16 or bf16; precision/io_formats.py has the rules.
    input_formats: Mapping[str, str] = field(default_factory=dict)
    output_formats: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.profiles, tuple):
            object.__setattr__(self, "profiles", tuple(self.profiles))
        sources = self.disabled_tactic_sources
        sources = sources.split(",") if isinstance(sources, str) else sources
        object.__setattr__(self, "disabled_tactic_sources",
                           tuple(sorted({s.strip().lower().replace("_", "") for s in sources if s.strip()})))
        if self.avg_timing < 1:
            raise ConfigError(f"avg_timing (--avgTiming) must be >= 1, got {self.avg_timing}")
        if self.min_timing < 1:
            raise ConfigError(f"min_timing (--minTiming) must be >= 1, got {self.min_timing}")
        if self.max_aux_streams is not None and self.max_aux_streams < 0:
            raise ConfigError(f"max_aux_streams (--maxAuxStreams) must be >= 0, got {self.max_aux_streams}")
        if self.workspace_bytes is not None and self.workspace_bytes < 0:
            raise ConfigError(f"workspace_bytes (--memPoolSize=workspace:N) must be >= 0, got {self.workspace_bytes}")
        object.__setattr__(self, "layer_precisions", dict(self.layer_precisions))
        for side in ("input_formats", "output_formats"):
            formats = dict(getattr(self, side))
            for name, text in formats.items():
                io_format_dtype(text, f"{side} of '{name}'")
            object.__setattr__(self, side, formats)
        check_layer_precisions(self.layer_precisions, self.precision_constraints)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["profiles"] = [{k: [list(x) for x in v] for k, v in p.shapes.items()} for p in self.profiles]
        return d

    def with_changes(self, **changes: Any) -> "BuilderConfig":
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d.update(changes)
        return BuilderConfig(**d)


def profile_from_optional(shapes: Optional[Mapping[str, Sequence[int]]]) -> tuple[OptimizationProfile, ...]:
    return (OptimizationProfile.fixed(shapes),) if shapes else ()
