"""trtexec-style shape specs (`input0:1x3x256x256,'in:1':1x3x128x128`) and what the CLI derives
from them: the optimization profile to build with and the concrete shapes to run at.

Default for dynamic inputs nobody gave a shape for (documented in `kiln exec --help`):
a dynamic *leading* dimension (the batch-like one) becomes 1 with trtexec's warning
"Dynamic dimensions required for input: x, but no shapes were provided. Automatically
overriding shape to: 1x4". Any other dynamic dimension is an error asking for --shapes:
trtexec would silently use 1 there too, but a 1x1 image or a length-1 sequence usually
makes the build fail later with a far less helpful message. A symbolic dimension that
another input already fixes (two inputs sharing `N`) takes that input's size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Protocol, Sequence

from ..builder import OptimizationProfile
from ..errors import ConfigError, ShapeError
from ..ir import DType, format_shape
from ..ir.shape import Dim
from .usage import UsageError

Dims = tuple[int, ...]
ShapeMap = dict[str, Dims]
# min, opt, max of one input
Range = tuple[Dims, Dims, Dims]


class TensorSpec(Protocol):
    """What the CLI needs of a network input or an engine input (ir.Value and engine.IOTensor both fit)."""

    name: str

    @property
    def dtype(self) -> Optional[DType]: ...

    @property
    def shape(self) -> Optional[tuple[Dim, ...]]: ...


# ---- parsing ----------------------------------------------------------------------------

def split_items(spec: str, flag: str) -> list[str]:
    """Split on commas that are not inside single quotes."""
    items, current, quoted = [], [], False
    for ch in spec:
        if ch == "'":
            quoted = not quoted
        if ch == "," and not quoted:
            items.append("".join(current))
            current = []
        else:
            current.append(ch)
    if quoted:
        raise UsageError(f"{flag}: unbalanced single quote in '{spec}'")
    items.append("".join(current))
    return [item.strip() for item in items if item.strip()]


def split_name_value(item: str, separator: str, flag: str, *, split_on_last: bool) -> tuple[str, str]:
    """`'a:b':1x3` -> ("a:b", "1x3"). Unquoted names split on the last (or first) separator,
    as trtexec does for ':' so that TensorFlow-style names like `input:0` still work."""
    if item.startswith("'"):
        end = item.find("'", 1)
        if end < 0 or not item[end + 1:].startswith(separator):
            raise UsageError(f"{flag}: expected '<name>'{separator}<value> in \"{item}\"")
        return item[1:end], item[end + 2:]
    index = item.rfind(separator) if split_on_last else item.find(separator)
    if index <= 0:
        raise UsageError(f"{flag}: expected <name>{separator}<value> in \"{item}\"")
    return item[:index], item[index + 1:]


def parse_dims(text: str, flag: str, name: str) -> Dims:
    text = text.strip()
    if text == "":
        return ()  # a scalar input
    dims = []
    for part in text.split("x"):
        try:
            value = int(part)
        except ValueError:
            raise UsageError(f"{flag}: dimensions of '{name}' must be positive integers joined by 'x' "
                             f"(like 1x3x224x224), got '{text}'") from None
        if value <= 0:
            raise UsageError(f"{flag}: dimensions of '{name}' must be positive, got '{text}'")
        dims.append(value)
    return tuple(dims)


def parse_shape_spec(specs: Optional[Sequence[str]], flag: str) -> ShapeMap:
    """Every occurrence of a shape flag, merged; a name given twice is an error."""
    shapes: ShapeMap = {}
    for spec in specs or ():
        for item in split_items(spec, flag):
            name, dims_text = split_name_value(item, ":", flag, split_on_last=True)
            if name in shapes:
                raise UsageError(f"{flag}: input '{name}' is given more than once")
            shapes[name] = parse_dims(dims_text, flag, name)
    return shapes


def format_dims(dims: Sequence[int]) -> str:
    return "x".join(str(d) for d in dims)


# ---- the flags of one command, checked together -----------------------------------------

@dataclass(frozen=True)
class ShapeFlags:
    """Parsed shape flags of one command, with the flag spellings that command uses (for messages)."""

    shapes: ShapeMap = field(default_factory=dict)
    min: ShapeMap = field(default_factory=dict)
    opt: ShapeMap = field(default_factory=dict)
    max: ShapeMap = field(default_factory=dict)
    names: tuple[str, str, str, str] = ("--shapes", "--minShapes", "--optShapes", "--maxShapes")

    @property
    def has_ranges(self) -> bool:
        return bool(self.min or self.opt or self.max)

    def check_ranges(self) -> dict[str, Range]:
        """Every input in one of min/opt/max is in all three, with equal ranks and min <= opt <= max."""
        _, min_flag, opt_flag, max_flag = self.names
        ranges: dict[str, Range] = {}
        for name in list(self.min) + [n for n in self.opt if n not in self.min] + \
                [n for n in self.max if n not in self.min and n not in self.opt]:
            missing = [flag for flag, shapes in ((min_flag, self.min), (opt_flag, self.opt), (max_flag, self.max))
                       if name not in shapes]
            if missing:
                raise UsageError(f"input '{name}' needs {min_flag}, {opt_flag} and {max_flag} together; "
                                 f"missing {' and '.join(missing)}")
            lo, opt, hi = self.min[name], self.opt[name], self.max[name]
            if not len(lo) == len(opt) == len(hi):
                raise UsageError(f"input '{name}': {min_flag}={format_dims(lo)}, {opt_flag}={format_dims(opt)} "
                                 f"and {max_flag}={format_dims(hi)} have different ranks")
            for axis, (a, b, c) in enumerate(zip(lo, opt, hi)):
                if not a <= b <= c:
                    raise UsageError(f"input '{name}' dimension {axis}: need min <= opt <= max, got "
                                     f"{a}, {b}, {c} ({min_flag}={format_dims(lo)}, {opt_flag}={format_dims(opt)}, "
                                     f"{max_flag}={format_dims(hi)})")
            ranges[name] = (lo, opt, hi)
        return ranges


def check_names(given: dict[str, object], inputs: Sequence[TensorSpec], flag: str, what: str = "network") -> None:
    known = [spec.name for spec in inputs]
    for name in given:
        if name not in known:
            raise ConfigError(f"{flag}: '{name}' is not an input of the {what} (inputs: "
                              f"{', '.join(repr(n) for n in known) or 'none'})")


def check_fits(spec: TensorSpec, dims: Dims, flag: str) -> None:
    """The given dims have the input's rank and agree with its fixed dimensions."""
    if spec.shape is None:
        return
    if len(dims) != len(spec.shape):
        raise ShapeError(f"{flag}: input '{spec.name}' has rank {len(spec.shape)} {format_shape(spec.shape)}, "
                         f"got {len(dims)} dimension(s) {format_dims(dims) or '(scalar)'}")
    for axis, (want, got) in enumerate(zip(spec.shape, dims)):
        if isinstance(want, int) and want != got:
            raise ShapeError(f"{flag}: input '{spec.name}' dimension {axis} is fixed to {want} "
                             f"{format_shape(spec.shape)}, got {format_dims(dims)}")


def is_dynamic(spec: TensorSpec) -> bool:
    return spec.shape is None or any(not isinstance(d, int) for d in spec.shape)


def _bind_symbols(spec: TensorSpec, dims: Sequence[object], symbols: dict[str, object]) -> None:
    if spec.shape is None:
        return
    for want, got in zip(spec.shape, dims):
        if isinstance(want, str):
            symbols.setdefault(want, got)


def _default_dims(spec: TensorSpec, symbols: dict[str, object], shapes_flag: str, warnings: list[str],
                  scalar: bool) -> list[object]:
    """Dims of an input nobody gave a shape for; see the module docstring for the rule."""
    if spec.shape is None:
        raise ShapeError(f"input '{spec.name}' has an unknown rank: pass its shape with "
                         f"{shapes_flag}={spec.name}:<dims>")
    dims: list[object] = []
    unresolved = []
    defaulted = False
    for axis, d in enumerate(spec.shape):
        if isinstance(d, int):
            dims.append(d if scalar else (d, d, d))
        elif isinstance(d, str) and d in symbols:
            dims.append(symbols[d])
        elif axis == 0:
            dims.append(1 if scalar else (1, 1, 1))
            defaulted = True
        else:
            unresolved.append(axis)
            dims.append(None)
    if unresolved:
        example = "x".join(str(d) if isinstance(d, int) else (d or "?") for d in spec.shape)
        raise ShapeError(f"dynamic input '{spec.name}' {format_shape(spec.shape)} has no shape for dimension(s) "
                         f"{', '.join(map(str, unresolved))}; only a leading batch dimension defaults to 1: pass "
                         f"{shapes_flag}={_quote(spec.name)}:{example} with sizes for the dynamic dimensions")
    if defaulted:
        shown = [d if scalar else d[1] for d in dims]
        warnings.append(f"Dynamic dimensions required for input: {spec.name}, but no shapes were provided. "
                        f"Automatically overriding shape to: {format_dims(shown)}")
    return dims


def _quote(name: str) -> str:
    return f"'{name}'" if ":" in name or "," in name else name


def build_profile(inputs: Sequence[TensorSpec], flags: ShapeFlags, warnings: list[str],
                  default_missing: bool = True) -> Optional[OptimizationProfile]:
    """The profile to build with: min/opt/max where given, --shapes as min=opt=max, and (when
    `default_missing`) the default rule for other dynamic inputs. None when nothing needs one."""
    shapes_flag = flags.names[0]
    ranges = flags.check_ranges()
    by_name = {spec.name: spec for spec in inputs}
    for flag, given in zip(flags.names, (flags.shapes, flags.min, flags.opt, flags.max)):
        check_names(given, inputs, flag)
    profile: dict[str, Range] = {}
    for name, (lo, opt, hi) in ranges.items():
        for flag, dims in zip(flags.names[1:], (lo, opt, hi)):
            check_fits(by_name[name], dims, flag)
        if name in flags.shapes:
            run = flags.shapes[name]
            check_fits(by_name[name], run, shapes_flag)
            if not all(a <= d <= c for a, d, c in zip(lo, run, hi)):
                raise ShapeError(f"{shapes_flag}: input '{name}' shape {format_dims(run)} is outside its profile "
                                 f"(min {format_dims(lo)}, max {format_dims(hi)})")
        profile[name] = (lo, opt, hi)
    for name, dims in flags.shapes.items():
        if name not in profile:
            check_fits(by_name[name], dims, shapes_flag)
            profile[name] = (dims, dims, dims)
    if not default_missing:
        return OptimizationProfile(profile) if profile else None
    # Per-dimension (min, opt, max) of each symbol, from the inputs that were given.
    symbols: dict[str, object] = {}
    for name, (lo, opt, hi) in profile.items():
        _bind_symbols(by_name[name], list(zip(lo, opt, hi)), symbols)
    for spec in inputs:
        if spec.name in profile or not is_dynamic(spec):
            continue
        dims = _default_dims(spec, symbols, shapes_flag, warnings, scalar=False)
        profile[spec.name] = (tuple(d[0] for d in dims), tuple(d[1] for d in dims), tuple(d[2] for d in dims))
        _bind_symbols(spec, dims, symbols)
    return OptimizationProfile(profile) if profile else None


def run_shapes(inputs: Sequence[TensorSpec], profiles_of: dict[str, tuple], given: ShapeMap, shapes_flag: str,
               warnings: list[str], what: str = "engine") -> ShapeMap:
    """Concrete shapes to run at: given ones (checked against the engine's profiles), else the first
    profile's opt shape, else the static shape, else the default rule.

    `profiles_of` maps an input name to its ProfileRange objects (one per profile holding it)."""
    check_names(given, inputs, shapes_flag, what)
    shapes: ShapeMap = {}
    symbols: dict[str, object] = {}
    for spec in inputs:
        if spec.name in given:
            dims = given[spec.name]
            check_fits(spec, dims, shapes_flag)
            ranges = profiles_of.get(spec.name, ())
            if ranges and not any(len(r.min) == len(dims) and all(a <= d <= c for a, d, c in zip(r.min, dims, r.max))
                                  for r in ranges):
                allowed = "; ".join(f"min {format_dims(r.min)}, max {format_dims(r.max)}" for r in ranges)
                raise ShapeError(f"{shapes_flag}: input '{spec.name}' shape {format_dims(dims)} is outside every "
                                 f"optimization profile of the {what} ({allowed})")
            shapes[spec.name] = dims
            _bind_symbols(spec, dims, symbols)
    for spec in inputs:
        if spec.name in shapes:
            continue
        ranges = profiles_of.get(spec.name, ())
        if ranges:
            dims = tuple(ranges[0].opt)
        elif not is_dynamic(spec):
            dims = tuple(spec.shape)  # type: ignore[arg-type]
        else:
            dims = tuple(_default_dims(spec, symbols, shapes_flag, warnings, scalar=True))  # type: ignore[arg-type]
        shapes[spec.name] = dims
        _bind_symbols(spec, dims, symbols)
    return shapes
