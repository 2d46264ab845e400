"""The hand-written network API, in the spirit of TensorRT's INetworkDefinition.

Layers are added one by one and produce the same IR the ONNX importer produces:

    net = NetworkDefinition()
    x = net.add_input("x", DType.FLOAT32, ("N", 3, 32, 32))
    y = net.add_convolution(x, weights, bias, strides=(1, 1), pads=(1, 1, 1, 1))
    y = net.add_activation(y, "relu")
    net.mark_output(y, "y")
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import numpy as np

from .errors import GraphError, UnsupportedOpError
from .ir import DType, Graph, NameScope, Node, TensorType, Value, verify
from .ir.shape import Dim
from .ops import get_op
from .ops.infer import infer_node

# Default opset of the ONNX domain that layer semantics follow.
NETWORK_OPSET = 21

ArrayLike = Union[np.ndarray, Sequence[float], float, int]

_ACTIVATIONS = {
    "relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "leaky_relu": "LeakyRelu", "elu": "Elu",
    "selu": "Selu", "softsign": "Softsign", "softplus": "Softplus", "clip": "Clip", "hard_sigmoid": "HardSigmoid",
    "hard_swish": "HardSwish", "gelu": "Gelu", "thresholded_relu": "ThresholdedRelu", "mish": "Mish",
    "celu": "Celu", "erf": "Erf", "abs": "Abs", "exp": "Exp", "log": "Log", "sqrt": "Sqrt", "neg": "Neg",
}
_ELEMENTWISE = {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "pow": "Pow", "max": "Max", "min": "Min",
                "equal": "Equal", "less": "Less", "greater": "Greater", "and": "And", "or": "Or", "xor": "Xor"}
_POOLING = {"max": "MaxPool", "average": "AveragePool"}
_REDUCE = {"sum": "ReduceSum", "mean": "ReduceMean", "max": "ReduceMax", "min": "ReduceMin", "prod": "ReduceProd"}


class NetworkDefinition:
    def __init__(self, name: str = "network", opset: int = NETWORK_OPSET):
        self.graph = Graph(name=name, opsets={"": opset})
        self.opset = opset
        self._names = NameScope()
        self._count = 0

    # -- tensors ------------------------------------------------------------------------
    def _name(self, base: str) -> str:
        return self._names.unique(base)

    def add_input(self, name: str, dtype: Union[DType, str], shape: Sequence[Dim]) -> Value:
        if name in self._names:
            raise GraphError(f"network already has a tensor named '{name}'")
        dtype = DType.parse(dtype) if isinstance(dtype, str) else dtype
        v = Value(self._name(name), TensorType(dtype, tuple(shape)))
        self.graph.inputs.append(v)
        return v

    def add_constant(self, value: ArrayLike, name: Optional[str] = None, dtype: Optional[Union[DType, str]] = None) -> Value:
        array = np.asarray(value)
        if dtype is not None:
            array = array.astype((DType.parse(dtype) if isinstance(dtype, str) else dtype).numpy)
        elif array.dtype == np.float64:
            array = array.astype(np.float32)
        v = Value(self._name(name or f"const_{len(self.graph.initializers)}"), const=array)
        self.graph.initializers.append(v)
        return v

    def mark_output(self, tensor: Value, name: Optional[str] = None) -> Value:
        if name and name != tensor.name:
            tensor = self.add_layer("Identity", [tensor], output_names=[name])[0]
        self.graph.outputs.append(tensor)
        return tensor

    # -- the one generic way to add a layer ------------------------------------------------
    def add_layer(self, op_type: str, inputs: Sequence[Optional[Union[Value, ArrayLike]]], attrs: Optional[dict[str, Any]] = None,
                  num_outputs: int = 1, name: Optional[str] = None, output_names: Optional[Sequence[str]] = None,
                  domain: str = "") -> list[Value]:
        op = get_op(op_type, domain)
        node_name = self._name(name or f"{op_type}_{self._count}")
        self._count += 1
        if op is None:
            raise UnsupportedOpError([(node_name, op_type, f"{domain or 'ai.onnx'} opset {self.opset}",
                                       "no implementation of this op")])
        values = [None if x is None else x if isinstance(x, Value) else self.add_constant(x) for x in inputs]
        try:
            normalized = op.normalize(dict(attrs or {}), self.opset)
        except (ValueError, TypeError) as exc:
            raise GraphError(f"layer '{node_name}' ({op_type}): {exc}") from exc
        outs = [Value(self._name(output_names[i] if output_names else f"{node_name}:{i}")) for i in range(num_outputs)]
        node = Node(op_type, values, outs, normalized, name=node_name, domain=domain, opset=self.opset)
        reason = op.check(node)
        if reason:
            raise UnsupportedOpError([(node_name, op_type, f"opset {self.opset}", reason)])
        infer_node(node, strict=True)
        self.graph.nodes.append(node)
        return outs

    def _one(self, op_type: str, inputs: Sequence[Any], **attrs: Any) -> Value:
        return self.add_layer(op_type, inputs, {k: v for k, v in attrs.items() if v is not None})[0]

    # -- convenience layers ----------------------------------------------------------------
    def add_convolution(self, x: Value, weights: ArrayLike, bias: Optional[ArrayLike] = None, *, strides=None,
                        pads=None, dilations=None, group: int = 1) -> Value:
        return self._one("Conv", [x, weights, bias], strides=_ints(strides), pads=_ints(pads),
                         dilations=_ints(dilations), group=group)

    def add_deconvolution(self, x: Value, weights: ArrayLike, bias: Optional[ArrayLike] = None, *, strides=None,
                          pads=None, dilations=None, group: int = 1) -> Value:
        return self._one("ConvTranspose", [x, weights, bias], strides=_ints(strides), pads=_ints(pads),
                         dilations=_ints(dilations), group=group)

    def add_matmul(self, a: Value, b: Union[Value, ArrayLike]) -> Value:
        return self._one("MatMul", [a, b])

    def add_gemm(self, a: Value, b: Union[Value, ArrayLike], c: Optional[ArrayLike] = None, *, alpha: float = 1.0,
                 beta: float = 1.0, trans_a: bool = False, trans_b: bool = False) -> Value:
        return self._one("Gemm", [a, b, c], alpha=alpha, beta=beta, transA=int(trans_a), transB=int(trans_b))

    def add_activation(self, x: Value, kind: str, **params: Any) -> Value:
        op = _lookup(_ACTIVATIONS, kind, "activation")
        if op == "Clip":
            return self._one("Clip", [x, params.get("min"), params.get("max")])
        return self._one(op, [x], **params)

    def add_elementwise(self, a: Union[Value, ArrayLike], b: Union[Value, ArrayLike], kind: str) -> Value:
        return self._one(_lookup(_ELEMENTWISE, kind, "elementwise operation"), [a, b])

    def add_pooling(self, x: Value, kind: str, kernel_shape: Sequence[int], *, strides=None, pads=None) -> Value:
        return self._one(_lookup(_POOLING, kind, "pooling"), [x], kernel_shape=list(kernel_shape),
                         strides=_ints(strides), pads=_ints(pads))

    def add_softmax(self, x: Value, axis: int = -1) -> Value:
        return self._one("Softmax", [x], axis=axis)

    def add_reduce(self, x: Value, kind: str, axes: Sequence[int], keepdims: bool = True) -> Value:
        return self._one(_lookup(_REDUCE, kind, "reduction"), [x, np.array(list(axes), dtype=np.int64)],
                         keepdims=int(keepdims))

    def add_shuffle(self, x: Value, shape: Optional[Sequence[int]] = None, perm: Optional[Sequence[int]] = None) -> Value:
        """Transpose (perm) and/or reshape (shape, 0 keeps a dimension, -1 infers one)."""
        if perm is not None:
            x = self._one("Transpose", [x], perm=list(perm))
        if shape is not None:
            x = self._one("Reshape", [x, np.array(list(shape), dtype=np.int64)])
        return x

    def add_concatenation(self, inputs: Sequence[Value], axis: int) -> Value:
        return self._one("Concat", list(inputs), axis=axis)

    def add_normalization(self, x: Value, scale: ArrayLike, bias: ArrayLike, axis: int = -1,
                          epsilon: float = 1e-5) -> Value:
        return self._one("LayerNormalization", [x, scale, bias], axis=axis, epsilon=epsilon)

    def add_cast(self, x: Value, dtype: Union[DType, str]) -> Value:
        dtype = DType.parse(dtype) if isinstance(dtype, str) else dtype
        return self._one("Cast", [x], to=dtype.value)

    def validate(self) -> Graph:
        if not self.graph.outputs:
            raise GraphError(f"network '{self.graph.name}' has no outputs: call mark_output")
        verify(self.graph)
        return self.graph


def _ints(x: Optional[Sequence[int]]) -> Optional[list[int]]:
    return None if x is None else [int(v) for v in x]


def _lookup(table: dict[str, str], kind: str, what: str) -> str:
    try:
        return table[kind.lower()]
    except KeyError:
        raise GraphError(f"unknown {what} '{kind}': choose one of {sorted(table)}") from None
