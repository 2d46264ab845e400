"""Folding per-output-channel scales and shifts into the weights and bias of the layer before them.

A linear layer (Conv, ConvTranspose, Gemm, MatMul) followed by y * s + t, with s and t constant per
output channel, is the same layer with weights W * s (along the output-channel axis) and bias
b * s + t. BatchNormalization in inference form is exactly such an affine map:
s = gamma / sqrt(var + eps), t = beta - mean * s. The folded weights are computed in float64 and
cast back to the weight dtype; the original weights are never modified (they may be shared).

The output-channel axis is 1 for convolutions (weights [Cout, Cin/group, k...], and
[Cin, Cout/group, k...] for ConvTranspose) and the last axis for Gemm / MatMul (B is [K, N], or
[N, K] with transB). A MatMul has no bias input, so a shift after one stays an Add, which the
epilogue pass then fuses (into Gemm or FusedMatMul).

BatchNormalization that does not follow a foldable layer stays as it is: one layer that already
computes x * s + t, which splitting into Mul + Add would only make two.
"""

from __future__ import annotations

from typing import Optional, Union

import numpy as np

from ....ir import DType, Node, Value
from ..rule import Const, Match, Pat, Rewriter, Rule, Var

FOLDABLE = ("Conv", "ConvTranspose", "Gemm", "MatMul")
_FLOAT_DTYPES = (DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16, DType.FLOAT64)


# ---- the layer being folded into ------------------------------------------------------------

def _describe(node: Node) -> str:
    return f"{node.op_type} '{node.name}'"


def check_layer(layer: Node) -> Optional[str]:
    """Why a scale/shift cannot be folded into this layer's weights, or None."""
    w = layer.inputs[1] if len(layer.inputs) > 1 else None
    if w is None or w.const is None:
        return f"weights of {_describe(layer)} are not constant"
    if DType.from_numpy(w.const.dtype) not in _FLOAT_DTYPES:
        return f"weights of {_describe(layer)} are {w.const.dtype}, not floating point"
    bias = layer.inputs[2] if len(layer.inputs) > 2 else None
    if bias is not None and bias.const is None:
        return f"bias of {_describe(layer)} is not constant"
    if layer.op_type == "MatMul":
        if w.const.ndim < 2:
            return f"weights of {_describe(layer)} are 1-D (the product has no output-channel axis)"
        if layer.outputs[0].shape is None:
            return f"output rank of {_describe(layer)} is unknown"
    if layer.op_type in ("Conv", "ConvTranspose") and w.const.ndim < 3:
        return f"weights of {_describe(layer)} have rank {w.const.ndim}"
    return None


def output_rank(layer: Node) -> int:
    if layer.op_type in ("Conv", "ConvTranspose"):
        return layer.inputs[1].const.ndim
    if layer.op_type == "Gemm":
        return 2
    return len(layer.outputs[0].shape)


def channel_axis(layer: Node) -> int:
    """The output axis that indexes the layer's output channels."""
    return 1 if layer.op_type in ("Conv", "ConvTranspose") else output_rank(layer) - 1


def out_channels(layer: Node) -> int:
    w = layer.inputs[1].const
    if layer.op_type == "Conv":
        return int(w.shape[0])
    if layer.op_type == "ConvTranspose":
        return int(w.shape[1]) * int(layer.attrs.get("group") or 1)
    if layer.op_type == "Gemm":
        return int(w.shape[0] if layer.attrs.get("transB") else w.shape[1])
    return int(w.shape[-1])


def per_channel(c: np.ndarray, layer: Node, what: str) -> Union[np.ndarray, str]:
    """`c` as a float64 vector over the layer's output channels, or the reason it is not one
    (it must broadcast along the output-channel axis only, without growing the output)."""
    rank, axis, channels = output_rank(layer), channel_axis(layer), out_channels(layer)
    if c.ndim > rank:
        return f"{what} of shape {list(c.shape)} has a higher rank than the {rank}-D output of {_describe(layer)}"
    padded = (1,) * (rank - c.ndim) + tuple(c.shape)
    if any(d != 1 for i, d in enumerate(padded) if i != axis) or padded[axis] not in (1, channels):
        return (f"{what} is not per-output-channel: shape {list(c.shape)} against the {channels} channels on "
                f"axis {axis} of the {rank}-D output of {_describe(layer)}")
    return np.broadcast_to(np.asarray(c, dtype=np.float64).reshape(-1), (channels,)).copy()


def _scaled_weight(layer: Node, scale: np.ndarray) -> np.ndarray:
    w = layer.inputs[1].const
    w64 = w.astype(np.float64)
    if layer.op_type == "Conv":
        out = w64 * scale.reshape((-1,) + (1,) * (w.ndim - 1))
    elif layer.op_type == "ConvTranspose":
        # [Cin, Cout/g, k...]: output channel g * Cout/g + j lives in group g's rows, column j.
        group = int(layer.attrs.get("group") or 1)
        cin, cout_g = w.shape[0], w.shape[1]
        grouped = w64.reshape((group, cin // group, cout_g) + w.shape[2:])
        out = (grouped * scale.reshape((group, 1, cout_g) + (1,) * (w.ndim - 2))).reshape(w.shape)
    elif layer.op_type == "Gemm" and layer.attrs.get("transB"):
        out = w64 * scale.reshape(-1, 1)
    else:  # Gemm [K, N] or MatMul [..., K, N]
        out = w64 * scale
    return out.astype(w.dtype)


def fold_into_layer(m: Match, rw: Rewriter, scale: np.ndarray, shift: np.ndarray) -> list[Node]:
    """The layer computing layer(x) * scale + shift (per output channel), producing the root's outputs."""
    layer, root = m.node("layer"), m.root
    name = f"{layer.name}+{root.name}"
    inputs = list(layer.inputs)
    if not np.all(scale == 1.0):
        inputs[1] = rw.const(_scaled_weight(layer, scale), f"{layer.inputs[1].name}_folded")
    attrs = dict(layer.attrs)
    w_dtype = layer.inputs[1].const.dtype
    shifted = bool(np.any(shift != 0.0))
    bias = layer.inputs[2] if len(layer.inputs) > 2 else None
    if layer.op_type in ("Conv", "ConvTranspose"):
        if bias is not None or shifted:
            old = np.zeros(len(scale)) if bias is None else bias.const.astype(np.float64).reshape(-1)
            dtype = w_dtype if bias is None else bias.const.dtype
            inputs = inputs[:2] + [rw.const((old * scale + shift).astype(dtype), f"{layer.name}_bias_folded")]
        nodes = [_node(rw, layer, inputs, root.outputs, attrs, name, m)]
    elif layer.op_type == "Gemm":
        beta = float(attrs.get("beta", 1.0))
        if (bias is not None and beta != 0.0) or shifted:
            old = (np.zeros(1) if bias is None or beta == 0.0 else bias.const.astype(np.float64) * beta)
            dtype = w_dtype if bias is None else bias.const.dtype
            inputs = inputs[:2] + [rw.const((old * scale + shift).astype(dtype), f"{layer.name}_bias_folded")]
            attrs["beta"] = 1.0
        else:
            inputs = inputs[:2]
        nodes = [_node(rw, layer, inputs, root.outputs, attrs, name, m)]
    else:  # MatMul: the shift stays an Add (fused later into Gemm / FusedMatMul)
        if not shifted:
            nodes = [_node(rw, layer, inputs, root.outputs, attrs, name, m)]
        else:
            product = rw.value(f"{layer.outputs[0].name}_scaled", layer.outputs[0].type)
            shift_value = rw.const(shift.astype(w_dtype), f"{layer.name}_shift_folded")
            nodes = [_node(rw, layer, inputs, [product], attrs, name, m),
                     rw.node("Add", [product, shift_value], root.outputs, {}, name=f"{root.name}_shift",
                             like=root)]
    return nodes


def fused_from(m: Match) -> list[str]:
    """Names of the original layers a replacement stands for (kept in node.meta for inspection)."""
    names: list[str] = []
    for n in m.matched:
        names.extend(n.meta.get("fused_from", [n.name]))
    return names


def _node(rw: Rewriter, layer: Node, inputs: list[Optional[Value]], outputs: list[Value], attrs: dict,
          name: str, m: Match) -> Node:
    node = rw.node(layer.op_type, inputs, outputs, attrs, name=name, domain=layer.domain, like=layer)
    node.meta["fused_from"] = fused_from(m)
    return node


def _const_operand(m: Match, name: str, what: str) -> Union[np.ndarray, str]:
    v = m.value(name)
    if v.const is None:
        return f"{what} '{v.name}' is not constant"
    if DType.from_numpy(v.const.dtype) not in _FLOAT_DTYPES:
        return f"{what} '{v.name}' is {v.const.dtype}, not floating point"
    return v.const


# ---- Mul / Div / Add / Sub by a per-channel constant ----------------------------------------

def _channel_operand(m: Match, what: str) -> Union[np.ndarray, str]:
    """The per-output-channel constant operand of the root, or the reason there is none."""
    layer = m.node("layer")
    reason = check_layer(layer)
    if reason:
        return reason
    c = _const_operand(m, "c", what)
    return c if isinstance(c, str) else per_channel(c, layer, what)


def _scale_of(m: Match) -> Union[np.ndarray, str]:
    """The per-channel factor of a Mul or Div root, or the reason there is none."""
    vec = _channel_operand(m, "scale")
    if isinstance(vec, str) or m.root.op_type == "Mul":
        return vec
    if np.any(vec == 0.0):
        return "divisor has zeros"
    return 1.0 / vec


def _shift_of(m: Match) -> Union[np.ndarray, str]:
    vec = _channel_operand(m, "shift")
    if isinstance(vec, str) or m.root.op_type == "Add":
        return vec
    return -vec


def _check_scale(m: Match) -> Optional[str]:
    s = _scale_of(m)
    return s if isinstance(s, str) else None


def _check_shift(m: Match) -> Optional[str]:
    t = _shift_of(m)
    return t if isinstance(t, str) else None


def _rewrite_scale(m: Match, rw: Rewriter) -> list[Node]:
    scale = _scale_of(m)
    assert not isinstance(scale, str)
    return fold_into_layer(m, rw, scale, np.zeros_like(scale))


def _rewrite_shift(m: Match, rw: Rewriter) -> list[Node]:
    shift = _shift_of(m)
    assert not isinstance(shift, str)
    return fold_into_layer(m, rw, np.ones_like(shift), shift)


# ---- BatchNormalization ---------------------------------------------------------------------

def _batchnorm_affine(m: Match) -> Union[tuple[np.ndarray, np.ndarray], str]:
    """(scale, shift) of an inference BatchNormalization after a foldable layer, or the reason not."""
    bn, layer = m.root, m.node("layer")
    if bn.attrs.get("training_mode"):
        return "BatchNormalization in training mode normalizes with batch statistics"
    if len(bn.outputs) > 1:
        return "BatchNormalization's running-statistics outputs are read"
    reason = check_layer(layer)
    if reason:
        return reason
    if layer.op_type == "MatMul" and output_rank(layer) != 2:
        return (f"BatchNormalization normalizes axis 1 of the {output_rank(layer)}-D output of {_describe(layer)}, "
                f"whose channels are on the last axis")
    stats = []
    for name in ("scale", "bias", "mean", "var"):
        c = _const_operand(m, name, f"BatchNormalization {name}")
        if isinstance(c, str):
            return c
        if c.size != out_channels(layer):
            return (f"BatchNormalization {name} has {c.size} values for the {out_channels(layer)} output channels "
                    f"of {_describe(layer)}")
        stats.append(c.astype(np.float64).reshape(-1))
    gamma, beta, mean, var = stats
    scale = gamma / np.sqrt(var + float(bn.attrs.get("epsilon", 1e-5)))
    return scale, beta - mean * scale


def _check_batchnorm(m: Match) -> Optional[str]:
    r = _batchnorm_affine(m)
    return r if isinstance(r, str) else None


def _rewrite_batchnorm(m: Match, rw: Rewriter) -> list[Node]:
    affine = _batchnorm_affine(m)
    assert not isinstance(affine, str)
    return fold_into_layer(m, rw, *affine)


_LAYER = Pat(FOLDABLE, name="layer")
# MatMul has no bias input: its shifts become Gemm / FusedMatMul in the epilogue pass.
_BIASED_LAYER = Pat(("Conv", "ConvTranspose", "Gemm"), name="layer")

FOLD_RULES: list[Rule] = [
    # BatchNormalization(Layer(x, W, b)) -> Layer(x, W * s, b * s + t), s = gamma / sqrt(var + eps), t = beta - mean * s
    Rule("fold_batchnorm", Pat("BatchNormalization", [_LAYER, Var("scale"), Var("bias"), Var("mean"), Var("var")]),
         _rewrite_batchnorm, _check_batchnorm),
    # Mul(Layer(x, W, b), s) -> Layer(x, W * s, b * s)
    Rule("fold_mul", Pat("Mul", [_LAYER, Var("c")], commutative=True), _rewrite_scale, _check_scale),
    # Div(Layer(x, W, b), s) -> Layer(x, W / s, b / s)
    Rule("fold_div", Pat("Div", [_LAYER, Var("c")]), _rewrite_scale, _check_scale),
    # Add(Layer(x, W, b), t) -> Layer(x, W, b + t); a non-constant addend is a residual (epilogue pass)
    Rule("fold_add", Pat("Add", [_BIASED_LAYER, Const("c")], commutative=True), _rewrite_shift, _check_shift),
    # Sub(Layer(x, W, b), t) -> Layer(x, W, b - t)
    Rule("fold_sub", Pat("Sub", [_BIASED_LAYER, Const("c")]), _rewrite_shift, _check_shift),
]
