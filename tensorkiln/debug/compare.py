"""The comparison engine: tensorkiln's tensors against a reference's, with a pass/fail verdict.

- `compare_outputs(actual, expected, thresholds)` -> ComparisonReport: one verdict per tensor
  and one for the whole set (Polygraphy's `--atol/--rtol/--check-error-stat`).
- `compare_layers(engine_tensors, reference_tensors, thresholds)` -> LayerComparisonReport:
  every tensor both sides have, in the engine's layer order, so the first one that diverges
  names the layer that broke the numbers (later layers only inherit the damage).
- `run_reference(model, feeds, "ort" | "ref", intermediates=True)`: onnxruntime or the ONNX
  reference evaluator, optionally exposing every node output of the model.

Used by `kiln compare`, `kiln exec --loadRefOutputs` and the precision bisect.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np

from ..errors import ConfigError, TensorkilnError
from ..ir import Graph
from ..testing.tolerances import tolerance_for
from .stats import (DEFAULT_ERROR_QUANTILE, ERROR_STATS, ErrorStats, error_stats_and_errors, format_number,
                    format_value, outside_tolerance)

REFERENCES = ("ort", "ref")


class ReferenceError(TensorkilnError):
    """The reference (onnxruntime or the ONNX reference evaluator) could not run the model."""


# ---- thresholds -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Thresholds:
    """Tolerances: a default, and per tensor name overrides (Polygraphy's `--atol 1e-3 out:1e-4`).

    `check_error_stat` is "elemwise" (every element must be within atol or rtol) or one of
    "max" | "mean" | "median" | "quantile": the statistic of the absolute error must be <= atol
    or that of the relative error <= rtol."""

    # Defaults: the fp32 row of the tolerance table.
    atol: float = tolerance_for("fp32").atol
    rtol: float = tolerance_for("fp32").rtol
    per_tensor_atol: Mapping[str, float] = field(default_factory=dict)
    per_tensor_rtol: Mapping[str, float] = field(default_factory=dict)
    check_error_stat: str = "elemwise"
    error_quantile: float = DEFAULT_ERROR_QUANTILE

    def __post_init__(self) -> None:
        if self.check_error_stat not in ERROR_STATS:
            raise ConfigError(f"check_error_stat must be one of {', '.join(ERROR_STATS)}, got "
                              f"'{self.check_error_stat}'")
        if not 0.0 <= self.error_quantile <= 1.0:
            raise ConfigError(f"error quantile must be in [0, 1], got {self.error_quantile}")
        for what, value in [("atol", self.atol), ("rtol", self.rtol), *(("atol", v) for v in
                            self.per_tensor_atol.values()), *(("rtol", v) for v in self.per_tensor_rtol.values())]:
            if not (value >= 0.0):  # also refuses NaN
                raise ConfigError(f"{what} must be a number >= 0, got {value}")

    @staticmethod
    def for_precision(precision: str, **changes: Any) -> "Thresholds":
        """The tolerance table's atol/rtol for a precision ("fp32", "tf32", "fp16", "bf16", ...)."""
        tolerance = tolerance_for(precision)
        return Thresholds(atol=tolerance.atol, rtol=tolerance.rtol, **changes)

    def atol_for(self, name: str) -> float:
        return self.per_tensor_atol.get(name, self.atol)

    def rtol_for(self, name: str) -> float:
        return self.per_tensor_rtol.get(name, self.rtol)

    def describe(self) -> str:
        text = f"atol={format_number(self.atol)}, rtol={format_number(self.rtol)}"
        overrides = sorted(set(self.per_tensor_atol) | set(self.per_tensor_rtol))
        for name in overrides:
            text += f"; '{name}': atol={format_number(self.atol_for(name))}, rtol={format_number(self.rtol_for(name))}"
        check = self.check_error_stat
        if check == "quantile":
            check = f"quantile {self.error_quantile:g}"
        return f"{text} ({'every element' if check == 'elemwise' else check + ' error'})"


# ---- one tensor -------------------------------------------------------------------------------

@dataclass(frozen=True)
class TensorComparison:
    """The verdict on one tensor."""

    name: str
    passed: bool
    reason: str  # why it failed ("" when it passed)
    stats: Optional[ErrorStats]  # None when the tensors could not be compared numerically
    atol: float
    rtol: float
    check_error_stat: str
    mismatches: int  # elements outside atol/rtol (every check counts them; "elemwise" fails on any)
    shape: tuple[int, ...]
    expected_shape: tuple[int, ...]
    dtype: str
    expected_dtype: str

    def summary(self) -> str:
        """One line: the verdict, the reason, and the headline numbers."""
        if self.passed:
            head = f"'{self.name}' PASSED"
        else:
            head = f"'{self.name}' FAILED: {self.reason}"
        s = self.stats
        if s is None:
            return head
        return (f"{head} (max abs {format_number(s.max_abs)}, max rel {format_number(s.max_rel)}, cosine "
                f"{format_number(s.cosine)}, SNR {format_number(s.snr_db)} dB)")

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "reason": self.reason, "atol": self.atol,
                "rtol": self.rtol, "check_error_stat": self.check_error_stat, "mismatches": self.mismatches,
                "shape": list(self.shape), "expected_shape": list(self.expected_shape), "dtype": self.dtype,
                "expected_dtype": self.expected_dtype, "stats": None if self.stats is None else self.stats.to_json()}


def _dtype_name(array: np.ndarray) -> str:
    return str(array.dtype)


def as_array(value: Any) -> np.ndarray:
    """A numpy array of a numpy value or a torch tensor (on any device)."""
    if hasattr(value, "detach"):
        from ..ir import torch_to_numpy
        return torch_to_numpy(value.detach().cpu())
    return np.asarray(value)


def is_tensor(value: Any) -> bool:
    """A numpy array/scalar or a torch tensor (not a sequence or an empty optional)."""
    return isinstance(value, (np.ndarray, np.generic)) or hasattr(value, "detach")


def compare_tensor(name: str, actual: Any, expected: Any, thresholds: Thresholds = Thresholds()) -> TensorComparison:
    """One tensor against its expected value. Values are compared as float64 whatever their dtypes
    (a float16 engine output against a float32 reference is a normal case, not an error)."""
    a = as_array(actual)
    e = as_array(expected)
    atol, rtol = thresholds.atol_for(name), thresholds.rtol_for(name)
    check = thresholds.check_error_stat
    base = dict(name=name, atol=atol, rtol=rtol, check_error_stat=check, shape=tuple(a.shape),
                expected_shape=tuple(e.shape), dtype=_dtype_name(a), expected_dtype=_dtype_name(e))
    if a.shape != e.shape:
        return TensorComparison(passed=False, reason=f"shape {list(a.shape)} differs from the expected "
                                f"{list(e.shape)}", stats=None, mismatches=-1, **base)
    numeric = "biufc"
    if a.dtype.kind not in numeric and not _is_ml_float(a) or e.dtype.kind not in numeric and not _is_ml_float(e):
        same = bool(np.array_equal(a, e))
        differ = 0 if same else int(np.sum(a != e)) if a.dtype == e.dtype else int(a.size)
        return TensorComparison(passed=same, reason="" if same else f"{differ} of {a.size} values differ "
                                f"({a.dtype} vs {e.dtype}, compared exactly)", stats=None, mismatches=differ, **base)
    if a.dtype.kind == "c" or e.dtype.kind == "c":
        # Complex values: compared as (real, imaginary) pairs.
        a = np.stack((a.real, a.imag), axis=-1)
        e = np.stack((e.real, e.imag), axis=-1)
    stats, absolute, relative = error_stats_and_errors(a, e, thresholds.error_quantile)
    outside = int(outside_tolerance(absolute, relative, atol, rtol).sum())
    if check == "elemwise":
        passed = outside == 0
        reason = "" if passed else (
            f"{outside} of {stats.count} elements ({100.0 * outside / stats.count:.3g}%) exceed atol="
            f"{format_number(atol)} and rtol={format_number(rtol)}; worst at {list(stats.worst_index)}: "
            f"{format_value(stats.worst_actual)} vs expected {format_value(stats.worst_expected)}")
    else:
        abs_stat, rel_stat = stats.stat(check, relative=False), stats.stat(check, relative=True)
        passed = abs_stat <= atol or rel_stat <= rtol
        label = f"{stats.quantile:g}-quantile" if check == "quantile" else check
        reason = "" if passed else (
            f"{label} abs error {format_number(abs_stat)} > atol={format_number(atol)} and {label} rel error "
            f"{format_number(rel_stat)} > rtol={format_number(rtol)}")
    if not passed and (stats.nan_actual or stats.inf_actual) and not (stats.nan_expected or stats.inf_expected):
        reason += f" ({stats.nan_actual} NaN, {stats.inf_actual} Inf in tensorkiln's tensor, none expected)"
    return TensorComparison(passed=passed, reason=reason, stats=stats, mismatches=outside, **base)


def _is_ml_float(array: np.ndarray) -> bool:
    # bfloat16 / fp8 from ml_dtypes have dtype kind 'V'.
    return array.dtype.type.__module__.startswith("ml_dtypes")


# ---- a set of outputs ------------------------------------------------------------------------

@dataclass(frozen=True)
class ComparisonReport:
    tensors: tuple[TensorComparison, ...]
    # Expected tensors the actual side did not produce (each one a failure).
    missing: tuple[str, ...] = ()
    # Actual tensors with no expected value (not compared, not a failure).
    not_compared: tuple[str, ...] = ()
    # (name, why) for tensors on both sides that are not arrays (sequences, empty optionals).
    skipped: tuple[tuple[str, str], ...] = ()

    @property
    def passed(self) -> bool:
        return bool(self.tensors) and not self.missing and all(t.passed for t in self.tensors)

    @property
    def failures(self) -> tuple[TensorComparison, ...]:
        return tuple(t for t in self.tensors if not t.passed)

    def by_name(self, name: str) -> TensorComparison:
        for t in self.tensors:
            if t.name == name:
                return t
        raise KeyError(name)

    def summary(self) -> str:
        if not self.tensors and not self.missing:
            return "FAILED: no tensor in common to compare"
        lines = [t.summary() for t in self.tensors]
        lines += [f"'{name}' FAILED: the reference has it, tensorkiln produced no such output" for name in self.missing]
        verdict = "PASSED" if self.passed else (f"FAILED ({len(self.failures) + len(self.missing)} of "
                                                f"{len(self.tensors) + len(self.missing)} tensors)")
        return "\n".join([*lines, verdict])

    def to_json(self) -> dict[str, Any]:
        return {"passed": self.passed, "tensors": [t.to_json() for t in self.tensors], "missing": list(self.missing),
                "not_compared": list(self.not_compared), "skipped": [list(s) for s in self.skipped]}


def compare_outputs(actual: Mapping[str, Any], expected: Mapping[str, Any], thresholds: Thresholds = Thresholds(),
                    names: Optional[Iterable[str]] = None) -> ComparisonReport:
    """Compare every expected tensor (or those in `names`) with the actual one of the same name."""
    wanted = list(names) if names is not None else list(expected)
    unknown = [n for n in wanted if n not in expected]
    if unknown:
        raise ConfigError(f"no expected value for {', '.join(repr(n) for n in unknown)} (expected values: "
                          f"{', '.join(repr(n) for n in expected) or 'none'})")
    results, skipped = [], []
    for name in wanted:
        if name not in actual:
            continue
        reason = _not_comparable(actual[name], expected[name])
        if reason:
            skipped.append((name, reason))
        else:
            results.append(compare_tensor(name, actual[name], expected[name], thresholds))
    return ComparisonReport(tensors=tuple(results), missing=tuple(n for n in wanted if n not in actual),
                            not_compared=tuple(n for n in actual if n not in wanted), skipped=tuple(skipped))


def _not_comparable(actual: Any, expected: Any) -> str:
    if is_tensor(actual) and is_tensor(expected):
        return ""
    return f"not a tensor on both sides ({type(actual).__name__} vs {type(expected).__name__})"


# ---- every layer ------------------------------------------------------------------------------

@dataclass(frozen=True)
class LayerComparisonReport:
    """Per-tensor verdicts in the engine's layer order, and what could not be compared."""

    compared: tuple[TensorComparison, ...]
    # Tensors the engine recorded that the reference does not expose (renamed by a rewrite,
    # or values onnxruntime cannot return).
    engine_only: tuple[str, ...] = ()
    # Reference tensors with no engine layer output of that name (fused away or folded).
    reference_only: tuple[str, ...] = ()
    # (name, why) for tensors present on both sides that are not arrays (sequences, empty optionals).
    skipped: tuple[tuple[str, str], ...] = ()

    @property
    def first_divergence(self) -> Optional[TensorComparison]:
        return next((t for t in self.compared if not t.passed), None)

    @property
    def passed(self) -> bool:
        return bool(self.compared) and all(t.passed for t in self.compared)

    @property
    def failures(self) -> tuple[TensorComparison, ...]:
        return tuple(t for t in self.compared if not t.passed)

    def to_json(self) -> dict[str, Any]:
        first = self.first_divergence
        return {"passed": self.passed, "first_divergence": first.name if first else None,
                "compared": [t.to_json() for t in self.compared], "engine_only": list(self.engine_only),
                "reference_only": list(self.reference_only), "skipped": [list(s) for s in self.skipped]}


def compare_layers(engine_tensors: Mapping[str, Any], reference_tensors: Mapping[str, Any],
                   thresholds: Thresholds = Thresholds()) -> LayerComparisonReport:
    """Compare every tensor both sides have, in the order of `engine_tensors` (the engine's
    layer order, as `ExecutionContext.execute_debug` records it)."""
    compared = []
    skipped = []
    for name, value in engine_tensors.items():
        if name not in reference_tensors:
            continue
        reference = reference_tensors[name]
        reason = _not_comparable(value, reference)
        if reason:
            skipped.append((name, reason))
            continue
        compared.append(compare_tensor(name, value, reference, thresholds))
    return LayerComparisonReport(compared=tuple(compared),
                                 engine_only=tuple(n for n in engine_tensors if n not in reference_tensors),
                                 reference_only=tuple(n for n in reference_tensors if n not in engine_tensors),
                                 skipped=tuple(skipped))


@dataclass(frozen=True)
class LayerInfo:
    """The engine layer that produces a tensor."""

    index: int  # position in the engine's layer order
    name: str
    op_type: str
    tactic: str
    precision: str

    def describe(self) -> str:
        return (f"layer #{self.index} '{self.name}' ({self.op_type}, tactic '{self.tactic}', "
                f"precision {self.precision})")


def layers_by_output(graph: Graph) -> dict[str, LayerInfo]:
    """Tensor name -> the top-level engine layer that writes it."""
    found: dict[str, LayerInfo] = {}
    for index, node in enumerate(graph.nodes):
        info = LayerInfo(index, node.name, node.op_type, str(node.meta.get("tactic", "?")),
                         str(node.meta.get("precision", "?")))
        for value in node.outputs:
            if value.name:
                found[value.name] = info
    return found


# ---- the reference side --------------------------------------------------------------------------

@dataclass(frozen=True)
class ReferenceRun:
    outputs: dict[str, np.ndarray]
    # Node outputs that are not graph outputs, in the model's node order (only when asked for).
    intermediates: dict[str, np.ndarray] = field(default_factory=dict)
    # Node outputs the reference could not expose, with the reason.
    unavailable: dict[str, str] = field(default_factory=dict)

    def all_tensors(self) -> dict[str, np.ndarray]:
        return {**self.intermediates, **self.outputs}


def node_output_names(model: Any) -> list[str]:
    """Every named output of the model's top-level nodes, in node order, without duplicates."""
    names: list[str] = []
    seen: set[str] = set()
    for node in model.graph.node:
        for name in node.output:
            if name and name not in seen:
                seen.add(name)
                names.append(name)
    return names


def run_reference(model: Any, feeds: Mapping[str, np.ndarray], reference: str = "ort", *,
                  intermediates: bool = False, known_dtypes: Optional[Mapping[str, int]] = None) -> ReferenceRun:
    """Run the ONNX model (a ModelProto) with onnxruntime ("ort") or the ONNX reference evaluator
    ("ref"). With `intermediates`, also return every node output onnxruntime can expose;
    `known_dtypes` (tensor name -> ONNX elem type, e.g. tensorkiln's inferred types) types the
    values ONNX shape inference leaves untyped."""
    if reference not in REFERENCES:
        raise ConfigError(f"unknown reference '{reference}' (one of {', '.join(REFERENCES)})")
    output_names = [o.name for o in model.graph.output]
    wanted = [n for n in node_output_names(model) if n not in set(output_names)] if intermediates else []
    if reference == "ref":
        return _run_reference_evaluator(model, feeds, output_names, wanted)
    return _run_onnxruntime(model, feeds, output_names, wanted, dict(known_dtypes or {}))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def _run_reference_evaluator(model: Any, feeds: Mapping[str, np.ndarray], output_names: Sequence[str],
                             wanted: Sequence[str]) -> ReferenceRun:
    from onnx.reference import ReferenceEvaluator
    try:
        evaluator = ReferenceEvaluator(model)
        results = evaluator.run(None, dict(feeds), intermediate=True)
    except Exception as exc:  # noqa: BLE001 - any evaluator failure is the reference's, named as such
        raise ReferenceError(f"the ONNX reference evaluator cannot run the model: {_first_line(exc)}") from exc
    outputs = {n: results[n] for n in output_names}
    inter, unavailable = {}, {}
    for name in wanted:
        if name in results and is_tensor(results[name]):
            inter[name] = np.asarray(results[name])
        else:
            unavailable[name] = "the reference evaluator returned no tensor for it"
    return ReferenceRun(outputs, inter, unavailable)


def _ort_model(model: Any) -> Any:
    import onnx
    from ..testing.oracles import ORT_IR_VERSION
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    copy.ir_version = min(copy.ir_version, ORT_IR_VERSION)
    return copy


def _value_types(model: Any) -> dict[str, Any]:
    """Tensor name -> TypeProto, from the model and from ONNX shape inference where it works."""
    import onnx
    types: dict[str, Any] = {}
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # noqa: BLE001 - inference is a best effort (big or unusual models)
        inferred = model
    for graph in (model.graph, inferred.graph):
        for info in [*graph.value_info, *graph.input, *graph.output]:
            if info.name and info.type.WhichOneof("value") is not None:
                types.setdefault(info.name, info.type)
    return types


def _run_onnxruntime(model: Any, feeds: Mapping[str, np.ndarray], output_names: Sequence[str],
                     wanted: Sequence[str], known_dtypes: dict[str, int]) -> ReferenceRun:
    import onnx
    import onnxruntime as ort

    base = _ort_model(model)
    unavailable: dict[str, str] = {}
    extra: list[Any] = []  # ValueInfoProtos of the intermediates to expose
    if wanted:
        types = _value_types(base)
        for name in wanted:
            t = types.get(name)
            if t is not None and t.WhichOneof("value") != "tensor_type":
                unavailable[name] = f"not a tensor ({t.WhichOneof('value')})"
                continue
            if t is not None and t.tensor_type.elem_type != 0:
                extra.append(onnx.helper.make_tensor_value_info(name, t.tensor_type.elem_type, None))
            elif name in known_dtypes:
                extra.append(onnx.helper.make_tensor_value_info(name, known_dtypes[name], None))
            else:
                unavailable[name] = "its type is unknown to ONNX shape inference and to tensorkiln"

    def session_run(infos: Sequence[Any]) -> dict[str, np.ndarray]:
        m = onnx.ModelProto()
        m.CopyFrom(base)
        m.graph.output.extend(infos)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(m.SerializeToString(), options, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, dict(feeds))))

    try:
        results = session_run(extra)
    except Exception as exc:  # noqa: BLE001
        if not extra:
            raise ReferenceError(f"onnxruntime cannot run the model: {_first_line(exc)} (try --reference ref)") \
                from exc
        try:
            results = session_run([])
        except Exception as base_exc:  # noqa: BLE001
            raise ReferenceError(f"onnxruntime cannot run the model: {_first_line(base_exc)} "
                                 f"(try --reference ref)") from base_exc
        middle = len(extra) // 2
        results.update(_expose_in_parts(session_run, extra[:middle], unavailable))
        results.update(_expose_in_parts(session_run, extra[middle:], unavailable))
    outputs = {n: results[n] for n in output_names}
    inter = {info.name: results[info.name] for info in extra if info.name in results}
    ordered = {n: inter[n] for n in wanted if n in inter}
    return ReferenceRun(outputs, ordered, unavailable)


def _expose_in_parts(session_run: Any, infos: Sequence[Any], unavailable: dict[str, str]) -> dict[str, np.ndarray]:
    """Expose `infos`; where onnxruntime refuses the set, split it until the culprits are alone,
    so one value it cannot return costs only itself (about 2 log2(n) extra sessions each)."""
    if not infos:
        return {}
    try:
        return session_run(infos)
    except Exception as exc:  # noqa: BLE001
        if len(infos) == 1:
            unavailable[infos[0].name] = f"onnxruntime cannot return it: {_first_line(exc)}"
            return {}
    middle = len(infos) // 2
    return {**_expose_in_parts(session_run, infos[:middle], unavailable),
            **_expose_in_parts(session_run, infos[middle:], unavailable)}


def default_precision(fp16: bool, bf16: bool, tf32: bool, device: str) -> str:
    """The tolerance-table row for what a build allows: the loosest precision it may run in."""
    if bf16:
        return "bf16"
    if fp16:
        return "fp16"
    if tf32 and device.startswith("cuda"):
        return "tf32"
    return "fp32"


__all__ = ["REFERENCES", "ComparisonReport", "LayerComparisonReport", "LayerInfo", "ReferenceError", "ReferenceRun",
           "TensorComparison", "Thresholds", "compare_layers", "compare_outputs", "compare_tensor",
           "default_precision", "layers_by_output", "node_output_names", "run_reference"]
