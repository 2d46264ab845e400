"""Resize: nearest / linear / cubic interpolation over any subset of axes, every ONNX coordinate
transformation and nearest-rounding mode, antialiasing, tf_crop_and_resize with roi and
extrapolation, keep_aspect_ratio_policy; the opset 10 form (scales only, asymmetric) too.

Interpolation is separable, so each resized axis is done in turn as a gather of n neighbours and
a weighted sum. Neighbour indices and weights follow ONNX's reference definition exactly; they are
computed in float64 on the host (they depend on sizes only) and applied on the data's device; on a
GPU they are kept there (_axis_tables) so that a CUDA graph can capture the layer.
"""

from __future__ import annotations

import math
import threading
from typing import Any, Optional, Sequence

import numpy as np
import torch

from ..ir import Node, TensorType
from .registry import InferContext, Op, register

COORD_MODES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
               "tf_crop_and_resize", "tf_half_pixel_for_nn")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil", "simple")
MODES = ("nearest", "linear", "cubic")
POLICIES = ("stretch", "not_larger", "not_smaller")


def _source_coords(mode: str, out_len: int, in_len: int, scale: float, roi: Optional[tuple[float, float]]
                   ) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Input coordinate of each output index along one axis, and (tf_crop_and_resize only) which of
    them fall outside the input."""
    y = np.arange(out_len, dtype=np.float64)
    out_width = scale * in_len  # the real-valued output length, as ONNX defines the transforms
    outside = None
    if mode == "align_corners":
        x = np.zeros(out_len) if out_width == 1 else y * (in_len - 1) / (out_width - 1)
    elif mode == "asymmetric":
        x = y / scale
    elif mode == "tf_crop_and_resize":
        # roi is float32 data; its difference and the start offset are float32 products (as in ONNX's
        # reference and onnxruntime), which decides ties of nearest rounding.
        start, end = (np.float32(v) for v in (roi if roi is not None else (0.0, 1.0)))
        extent = float(end - start)
        if out_width == 1:
            x = np.full(out_len, extent * (in_len - 1) / 2)
        else:
            x = y * extent * (in_len - 1) / (out_width - 1)
        x = x + float(start * np.float32(in_len - 1))
        outside = (x < 0) | (x > in_len - 1)
    elif mode == "pytorch_half_pixel":
        x = np.full(out_len, -0.5) if out_width == 1 else (y + 0.5) / scale - 0.5
    elif mode == "half_pixel":
        x = (y + 0.5) / scale - 0.5
    elif mode == "half_pixel_symmetric":
        offset = in_len / 2 * (1 - out_len / out_width)
        x = offset + (y + 0.5) / scale - 0.5
    elif mode == "tf_half_pixel_for_nn":
        x = (y + 0.5) / scale
    else:
        raise ValueError(f"unknown coordinate_transformation_mode '{mode}'")
    return x, outside


def _cubic(ratio: np.ndarray, a: float) -> np.ndarray:
    r = ratio[:, None]
    s = 1 - r
    return np.concatenate([
        ((a * (r + 1) - 5 * a) * (r + 1) + 8 * a) * (r + 1) - 4 * a,
        ((a + 2) * r - (a + 3)) * r * r + 1,
        ((a + 2) * s - (a + 3)) * s * s + 1,
        ((a * (s + 1) - 5 * a) * (s + 1) + 8 * a) * (s + 1) - 4 * a,
    ], axis=1)


def _cubic_kernel(x: np.ndarray, a: float) -> np.ndarray:
    x = np.abs(x)
    near = (a + 2) * x ** 3 - (a + 3) * x ** 2 + 1
    far = a * x ** 3 - 5 * a * x ** 2 + 8 * a * x - 4 * a
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def _weights(mode: str, ratio: np.ndarray, scale: float, antialias: bool, nearest_mode: str, cubic_a: float,
             downsampling: bool) -> np.ndarray:
    """Weights of the n neighbours of each output position; ratio is in (0, 1] (1 when exact)."""
    exact = ratio == 1.0
    if mode == "nearest":
        if nearest_mode == "round_prefer_floor":
            right = ratio > 0.5
        elif nearest_mode == "round_prefer_ceil":
            right = ratio >= 0.5
        elif nearest_mode == "floor":
            right = np.zeros_like(exact)
        elif nearest_mode == "ceil":
            right = np.ones_like(exact)
        else:  # "simple" (opset < 11 and Upsample): ceil when downsampling, else floor, as onnxruntime
            right = np.full_like(exact, downsampling)
        right = right | exact
        return np.stack([~right, right], axis=1).astype(np.float64)
    if mode == "linear" and not antialias:
        return np.stack([1 - ratio, ratio], axis=1)
    if mode == "cubic" and not antialias:
        return _cubic(ratio, cubic_a)
    s = min(scale, 1.0)
    if mode == "linear":
        start = int(math.floor(-1 / s) + 1)
        taps = np.arange(start, 2 - start, dtype=np.float64)
        w = np.clip(1 - np.abs((taps[None, :] - ratio[:, None]) * s), 0, 1)
    else:
        start = int(math.floor(-2 / s) + 1)
        taps = np.arange(start, 2 - start, dtype=np.float64)
        w = _cubic_kernel(s * (taps[None, :] - ratio[:, None]), cubic_a)
    return w / w.sum(axis=1, keepdims=True)


def _axis_plan(out_len: int, in_len: int, scale: float, attrs: dict[str, Any], roi: Optional[tuple[float, float]]
               ) -> tuple[np.ndarray, Optional[np.ndarray], Optional[np.ndarray]]:
    """(indices [out, n] clamped into the input, weights [out, n] or None for nearest, outside mask)."""
    mode = attrs["mode"]
    x, outside = _source_coords(attrs["coordinate_transformation_mode"], out_len, in_len, scale, roi)
    x_floor = np.floor(x)
    ratio = np.where(x == x_floor, 1.0, x - x_floor)
    w = _weights(mode, ratio, scale, bool(attrs.get("antialias")), attrs.get("nearest_mode", "round_prefer_floor"),
                 float(attrs.get("cubic_coeff_a", -0.75)), scale < 1)
    n = w.shape[1]
    # The n nearest neighbours of x, ties to the smaller index (ONNX's _get_neighbor on an
    # edge-padded axis; edge padding is the clamp below).
    pad = int(math.ceil(n / 2))
    xp = x + pad
    p = np.floor(xp).astype(np.int64)
    frac = xp - p
    if n % 2 == 0:
        offset = np.where(frac == 0, -(n // 2), -(n // 2) + 1)
    else:
        base = -((n - 1) // 2)
        offset = np.where(frac <= 0.5, base, base + 1)
    idx = (p + offset)[:, None] + np.arange(n)[None, :] - pad
    if attrs.get("exclude_outside") and mode != "nearest":
        w = np.where((idx < 0) | (idx >= in_len), 0.0, w)
        total = w.sum(axis=1, keepdims=True)
        w = w / np.where(total == 0, 1.0, total)
    idx = np.clip(idx, 0, in_len - 1)
    if mode == "nearest":
        pick = np.argmax(w, axis=1)
        return idx[np.arange(out_len), pick][:, None], None, outside
    return idx, w, outside


# The attributes the axis tables depend on, besides sizes, scale and roi.
_TABLE_ATTRS = ("mode", "coordinate_transformation_mode", "antialias", "nearest_mode", "cubic_coeff_a",
                "exclude_outside")
AxisTables = tuple[torch.Tensor, int, Optional[torch.Tensor], Optional[torch.Tensor]]
# The tables on each accelerator, by everything they depend on. Copying them on every call is a
# pageable host-to-device copy, which CUDA stream capture refuses: an engine with a Resize would
# never replay a graph. A captured graph reads these tensors, so none is ever evicted; each is a
# few kilobytes, one per distinct (axis length, scale, mode) a process resizes with on a GPU
# (CUDA graphs are per input shape too). On the CPU the tables are views of the numpy arrays,
# made per call and not kept, so varying input sizes cost no memory.
_DEVICE_TABLES: dict[tuple, AxisTables] = {}
_DEVICE_TABLES_LOCK = threading.Lock()


def _axis_tables(out_len: int, in_len: int, scale: float, attrs: dict[str, Any],
                 roi: Optional[tuple[float, float]], device: torch.device, work_dtype: torch.dtype) -> AxisTables:
    """(flat indices, neighbours per output, weights [out, n] or None, outside mask or None) on `device`."""
    if device.type == "cpu":
        return _tables_on(device, work_dtype, *_axis_plan(out_len, in_len, scale, attrs, roi))
    key = (out_len, in_len, scale, roi, str(device), work_dtype) + tuple(attrs.get(k) for k in _TABLE_ATTRS)
    with _DEVICE_TABLES_LOCK:
        tables = _DEVICE_TABLES.get(key)
    if tables is None:
        tables = _tables_on(device, work_dtype, *_axis_plan(out_len, in_len, scale, attrs, roi))
        with _DEVICE_TABLES_LOCK:
            tables = _DEVICE_TABLES.setdefault(key, tables)
    return tables


def _tables_on(device: torch.device, work_dtype: torch.dtype, idx: np.ndarray, w: Optional[np.ndarray],
               outside: Optional[np.ndarray]) -> AxisTables:
    return (torch.from_numpy(idx.reshape(-1)).to(device), idx.shape[1],
            None if w is None else torch.from_numpy(w).to(device=device, dtype=work_dtype),
            torch.from_numpy(outside).to(device) if outside is not None and outside.any() else None)


def resize_tensor(x: torch.Tensor, out_sizes: Sequence[int], scales: Sequence[float], attrs: dict[str, Any],
                  roi: Optional[Sequence[float]] = None) -> torch.Tensor:
    """Resize every axis of x whose (size, scale, roi) is not the identity.

    `scales` is the per-axis factor the coordinate transforms use (given, or out/in for sizes);
    `roi` is [starts..., ends...] over all axes, or None."""
    rank = x.dim()
    integer = not x.is_floating_point()
    work_dtype = torch.float64 if integer or x.dtype == torch.float64 else torch.float32
    y = x
    outside_mask: Optional[torch.Tensor] = None
    crop = attrs["coordinate_transformation_mode"] == "tf_crop_and_resize"
    for axis in range(rank):
        in_len, out_len, scale = x.shape[axis], int(out_sizes[axis]), float(scales[axis])
        axis_roi = (float(roi[axis]), float(roi[rank + axis])) if roi is not None else None
        trivial_roi = axis_roi is None or (math.isclose(axis_roi[0], 0.0) and math.isclose(axis_roi[1], 1.0))
        if math.isclose(scale, 1.0) and out_len == in_len and (trivial_roi or not crop):
            continue
        if out_len == 0 or in_len == 0:
            shape = list(y.shape)
            shape[axis] = out_len
            y = torch.zeros(shape, dtype=y.dtype, device=y.device)
            continue
        t_idx, n, t_w, t_outside = _axis_tables(out_len, in_len, scale, attrs, axis_roi if crop else None,
                                                y.device, work_dtype)
        gathered = y.index_select(axis, t_idx)
        if t_w is None:
            y = gathered
        else:
            shape = list(y.shape)
            shape[axis:axis + 1] = [out_len, n]
            gathered = gathered.to(work_dtype).reshape(shape)
            w_shape = [1] * (rank + 1)
            w_shape[axis], w_shape[axis + 1] = out_len, n
            y = (gathered * t_w.reshape(w_shape)).sum(dim=axis + 1)
        if t_outside is not None:
            m_shape = [1] * rank
            m_shape[axis] = out_len
            m = t_outside.reshape(m_shape)
            outside_mask = m if outside_mask is None else (outside_mask | m)
    if outside_mask is not None:
        # Positions whose source lies outside the input along any axis take extrapolation_value.
        if outside_mask.dim() and outside_mask.shape != y.shape:
            outside_mask = outside_mask.expand(y.shape)
        # torch.full, not torch.tensor: a fill kernel, where torch.tensor would copy from the host.
        y = torch.where(outside_mask, torch.full((), float(attrs.get("extrapolation_value", 0.0)), dtype=y.dtype
                                                 if y.is_floating_point() else work_dtype, device=y.device), y)
    if y.dtype != x.dtype:
        if integer:
            info = torch.iinfo(x.dtype)
            y = torch.round(y.to(torch.float64)).clamp(info.min, info.max)
        y = y.to(x.dtype)
    return y


def output_plan(in_shape: Sequence[int], attrs: dict[str, Any], scales: Optional[Sequence[float]],
                sizes: Optional[Sequence[int]]) -> tuple[list[int], list[float]]:
    """(output sizes, per-axis scales for the coordinate transforms) over all axes."""
    rank = len(in_shape)
    axes = attrs.get("axes")
    axes = list(range(rank)) if not axes else [a + rank if a < 0 else a for a in axes]
    out = list(in_shape)
    factor = [1.0] * rank
    if sizes is not None:
        if len(sizes) != len(axes):
            raise ValueError(f"sizes has {len(sizes)} values for {len(axes)} axes")
        for a, s in zip(axes, sizes):
            out[a] = int(s)
            factor[a] = int(s) / in_shape[a]
        policy = attrs.get("keep_aspect_ratio_policy", "stretch")
        if policy != "stretch":
            common = min(factor[a] for a in axes) if policy == "not_larger" else max(factor[a] for a in axes)
            for a in axes:
                factor[a] = common
                out[a] = int(common * in_shape[a] + 0.5)
    elif scales is not None:
        if len(scales) != len(axes):
            raise ValueError(f"scales has {len(scales)} values for {len(axes)} axes")
        for a, s in zip(axes, scales):
            factor[a] = float(s)
            out[a] = int(math.floor(float(s) * in_shape[a]))
    else:
        raise ValueError("Resize needs scales or sizes")
    return out, factor


def full_roi(roi: Optional[Sequence[float]], rank: int, axes: Optional[Sequence[int]]) -> Optional[list[float]]:
    if roi is None or len(roi) == 0:
        return None
    if not axes:
        return [float(v) for v in roi]
    full = [0.0] * rank + [1.0] * rank
    for i, a in enumerate(axes):
        a = a + rank if a < 0 else a
        full[a] = float(roi[i])
        full[rank + a] = float(roi[len(axes) + i])
    return full


def _values(t: Optional[torch.Tensor]) -> Optional[list]:
    if t is None or t.numel() == 0:
        return None
    return t.reshape(-1).tolist()


@register
class Resize(Op):
    host_inputs = (1, 2, 3)
    name = "Resize"
    since_opset = 10
    attrs = {"antialias": 0, "axes": None, "coordinate_transformation_mode": "half_pixel", "cubic_coeff_a": -0.75,
             "exclude_outside": 0, "extrapolation_value": 0.0, "keep_aspect_ratio_policy": "stretch",
             "mode": "nearest", "nearest_mode": "round_prefer_floor"}

    def normalize(self, attrs, opset):
        out = super().normalize(attrs, opset)
        out["_scales_input"] = 1 if opset < 11 else 2  # opset 10: (X, scales); 11+: (X, roi, scales, sizes)
        if opset < 11:
            out["coordinate_transformation_mode"] = "asymmetric"
            out["nearest_mode"] = "simple"
        return out

    def check(self, node: Node) -> Optional[str]:
        a = node.attrs
        for key, allowed in (("mode", MODES), ("coordinate_transformation_mode", COORD_MODES),
                             ("nearest_mode", NEAREST_MODES), ("keep_aspect_ratio_policy", POLICIES)):
            if a.get(key) not in allowed:
                return f"{key} '{a.get(key)}' is not one of {', '.join(allowed)}"
        if a.get("antialias") and a.get("mode") == "nearest":
            return "antialias is not defined for mode 'nearest'"
        return None

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        t = ctx.type(0)
        if t is None:
            return [None]
        if t.shape is None:
            return [TensorType(t.dtype, None)]
        si = ctx.attrs["_scales_input"]
        scales = ctx.const(si) if ctx.has_input(si) else None
        sizes = ctx.const(3) if si == 2 and ctx.has_input(3) else None
        sizes_v = None if sizes is None or sizes.size == 0 else [int(v) for v in sizes.reshape(-1)]
        scales_v = None if scales is None or scales.size == 0 else [float(v) for v in scales.reshape(-1)]
        has_sizes = si == 2 and ctx.has_input(3) and (sizes is None or sizes.size > 0)
        if has_sizes and sizes_v is None or (not has_sizes and scales_v is None):
            return [TensorType(t.dtype, (None,) * len(t.shape))]
        axes = ctx.attrs.get("axes")
        rank = len(t.shape)
        resized = set(range(rank)) if not axes else {a + rank if a < 0 else a for a in axes}
        if any(not isinstance(t.shape[a], int) for a in resized):
            return [TensorType(t.dtype, tuple(d if i not in resized else None for i, d in enumerate(t.shape)))]
        probe = [d if isinstance(d, int) else 1 for d in t.shape]
        out, _ = output_plan(probe, ctx.attrs, None if has_sizes else scales_v, sizes_v if has_sizes else None)
        return [TensorType(t.dtype, tuple(out[i] if i in resized else t.shape[i] for i in range(rank)))]

    def reference(self, ctx, inputs, attrs):
        x = inputs[0]
        si = attrs["_scales_input"]
        scales = _values(inputs[si] if len(inputs) > si else None)
        sizes = _values(inputs[3]) if si == 2 and len(inputs) > 3 else None
        roi = _values(inputs[1]) if si == 2 and len(inputs) > 1 else None
        out, factor = output_plan(list(x.shape), attrs, None if sizes is not None else scales, sizes)
        return resize_tensor(x, out, factor, attrs, full_roi(roi, x.dim(), attrs.get("axes")))
