"""The model zoo: ONNX models written node by node the way exporters write them.

Each generator builds its graph with `onnx.helper`, in the shapes, op spellings and
names `torch.onnx.export` produces (opset 17, eval mode, BatchNormalization kept as
its own node, LayerNorm and GELU written as primitives), so the graph optimizer
meets the patterns it meets in real models. Weights are seeded random (numpy
`default_rng(seed)`), scaled so activations stay of order one through the whole
network: nothing is downloaded. Sizes are parameters: tests use small variants, the
optimizer report the full ones (ResNet-50 ~25.6M parameters, BERT-base ~110M).

Every generator returns a ModelProto that passed `onnx.checker`, at IR version 8 and
opset 17 so that onnxruntime accepts it.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

IR_VERSION = 8
OPSET = 17

Dim = Union[int, str]

# torchvision's MobileNetV2 inverted-residual table: expansion t, channels c, repeats n, stride s.
MOBILENETV2_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


class _Writer:
    """Collects nodes and weights under torch.onnx.export's names: node `/scope/Op` (then
    `Op_1`, `Op_2` in the same scope), its outputs `<node>_output_<i>`, weights by
    parameter name, folded weights as `onnx::<Op>_<k>`."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._node_counts: dict[str, int] = {}
        self._folded = 0

    # ---- weights ---------------------------------------------------------------------
    def weight(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def folded_weight(self, op: str, array: np.ndarray) -> str:
        """A weight the exporter computed (e.g. a Linear weight transposed for MatMul)."""
        self._folded += 1
        return self.weight(f"onnx::{op}_{self._folded}", array)

    def normal(self, shape: Sequence[int], std: float) -> np.ndarray:
        return (self.rng.standard_normal(tuple(shape)) * std).astype(np.float32)

    def uniform(self, shape: Sequence[int], low: float, high: float) -> np.ndarray:
        return self.rng.uniform(low, high, tuple(shape)).astype(np.float32)

    # ---- nodes -----------------------------------------------------------------------
    def node(self, op: str, inputs: Sequence[str], scope: str, output: Optional[str] = None,
             n_outputs: int = 1, **attrs: object) -> Union[str, list[str]]:
        """Append one node; returns its output name (a list when n_outputs > 1). `output`
        names the (single) output when it is a graph output, as the exporter renames those."""
        key = f"{scope}/{op}"
        count = self._node_counts.get(key, 0)
        self._node_counts[key] = count + 1
        name = key if count == 0 else f"{key}_{count}"
        outputs = [output] if output is not None else [f"{name}_output_{i}" for i in range(n_outputs)]
        self.nodes.append(helper.make_node(op, list(inputs), outputs, name=name, **attrs))
        return outputs[0] if n_outputs == 1 else outputs

    def constant(self, scope: str, value: Union[float, int, Sequence[int], Sequence[float]],
                 dtype: type = np.float32) -> str:
        """A Constant node, as the exporter writes scalars, shapes and axes."""
        array = np.array(value, dtype=dtype)
        return self.node("Constant", [], scope, value=numpy_helper.from_array(array, ""))

    # ---- the model -------------------------------------------------------------------
    def model(self, graph_name: str, inputs: Sequence[onnx.ValueInfoProto],
              outputs: Sequence[onnx.ValueInfoProto], doc: str) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, graph_name, list(inputs), list(outputs), self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="pytorch", producer_version="2.1.0", doc_string=doc)
        model.ir_version = IR_VERSION
        onnx.checker.check_model(model, full_check=True)
        return model


def parameter_count(model: onnx.ModelProto) -> int:
    """Number of weights (floating-point initializer elements) in a model."""
    return int(sum(np.prod(t.dims, dtype=np.int64) for t in model.graph.initializer
                   if t.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE)))


# ---- convolutional building blocks -----------------------------------------------------

def _conv(w: _Writer, x: str, scope: str, param: str, cin: int, cout: int, kernel: int, stride: int = 1,
          group: int = 1, bias: bool = False, std: Optional[float] = None, pad: Optional[int] = None) -> str:
    """A Conv as torch exports nn.Conv2d: every attribute written out. He-normal weights by
    default (std sqrt(2/fan_in)), which keep a ReLU network's activations of order one."""
    fan_in = cin // group * kernel * kernel
    weight = w.weight(f"{param}.weight", w.normal((cout, cin // group, kernel, kernel),
                                                   std if std is not None else math.sqrt(2.0 / fan_in)))
    inputs = [x, weight]
    if bias:
        inputs.append(w.weight(f"{param}.bias", w.normal((cout,), 0.1)))
    p = kernel // 2 if pad is None else pad
    return w.node("Conv", inputs, scope, dilations=[1, 1], group=group, kernel_shape=[kernel, kernel],
                  pads=[p, p, p, p], strides=[stride, stride])


def _batch_norm(w: _Writer, x: str, scope: str, param: str, channels: int, gamma: tuple[float, float] = (0.5, 1.5)
                ) -> str:
    """BatchNormalization in eval mode with running statistics, as exported without folding.
    The running variance roughly matches the He-initialized conv's output variance, as a
    trained network's would, so the normalized activations stay of order one."""
    scale = w.weight(f"{param}.weight", w.uniform((channels,), *gamma))
    shift = w.weight(f"{param}.bias", w.normal((channels,), 0.1))
    mean = w.weight(f"{param}.running_mean", w.normal((channels,), 0.1))
    var = w.weight(f"{param}.running_var", w.uniform((channels,), 1.0, 3.0))
    return w.node("BatchNormalization", [x, scale, shift, mean, var], scope, epsilon=1e-5, momentum=0.9,
                  training_mode=0)


def _relu6(w: _Writer, x: str, scope: str) -> str:
    """nn.ReLU6 exports as Clip with its bounds as Constant inputs (opset >= 11)."""
    low = w.constant(scope, 0.0)
    high = w.constant(scope, 6.0)
    return w.node("Clip", [x, low, high], scope)


def _silu(w: _Writer, x: str, scope: str) -> str:
    """nn.SiLU exports as x * Sigmoid(x)."""
    return w.node("Mul", [x, w.node("Sigmoid", [x], scope)], scope)


def _classifier(w: _Writer, x: str, features: int, num_classes: int, scope: str, param: str,
                output: Optional[str] = None) -> str:
    """nn.Linear on a 2-D input exports as Gemm(transB=1) with the weight as stored by torch."""
    weight = w.weight(f"{param}.weight", w.normal((num_classes, features), 1.0 / math.sqrt(features)))
    bias = w.weight(f"{param}.bias", w.normal((num_classes,), 0.1))
    return w.node("Gemm", [x, weight, bias], scope, output=output, alpha=1.0, beta=1.0, transB=1)


def _scaled(channels: int, width: float, minimum: int = 4) -> int:
    return max(minimum, int(round(channels * width)))


def _image_input(batch: Dim, image_size: int) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, image_size, image_size])


# ---- ResNet-50 ---------------------------------------------------------------------------

def resnet50(batch: Dim = "N", seed: int = 0, width: float = 1.0, depth: Sequence[int] = (3, 4, 6, 3),
             image_size: int = 224, num_classes: int = 1000) -> onnx.ModelProto:
    """torchvision's ResNet-50 (v1.5: stride on the 3x3 conv) as exported without BN folding:
    Conv+BatchNormalization+Relu, bottleneck blocks with a residual Add (and a 1x1 Conv+BN
    downsample on the first block of a stage), MaxPool, GlobalAveragePool, Flatten, Gemm.
    `width` scales every channel count, `depth` is the number of blocks per stage.
    Full size (the defaults): 25.6M parameters (with BN statistics), 175 ONNX nodes."""
    if len(depth) != 4 or min(depth) < 1:
        raise ValueError(f"resnet50 depth is four stage block counts >= 1, got {tuple(depth)}")
    w = _Writer(seed)
    stem = _scaled(64, width)
    x = _conv(w, "input", "/conv1", "conv1", 3, stem, 7, stride=2, pad=3)
    x = _batch_norm(w, x, "/bn1", "bn1", stem)
    x = w.node("Relu", [x], "/relu")
    x = w.node("MaxPool", [x], "/maxpool", ceil_mode=0, dilations=[1, 1], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
               strides=[2, 2])
    channels = stem
    for stage, blocks in enumerate(depth):
        planes = _scaled(64 * 2 ** stage, width)
        out_channels = planes * 4
        for block in range(blocks):
            stride = 2 if block == 0 and stage > 0 else 1
            param = f"layer{stage + 1}.{block}"
            scope = f"/layer{stage + 1}/layer{stage + 1}.{block}"
            identity = x
            y = _conv(w, x, f"{scope}/conv1", f"{param}.conv1", channels, planes, 1)
            y = w.node("Relu", [_batch_norm(w, y, f"{scope}/bn1", f"{param}.bn1", planes)], f"{scope}/relu")
            y = _conv(w, y, f"{scope}/conv2", f"{param}.conv2", planes, planes, 3, stride=stride)
            y = w.node("Relu", [_batch_norm(w, y, f"{scope}/bn2", f"{param}.bn2", planes)], f"{scope}/relu_1")
            y = _conv(w, y, f"{scope}/conv3", f"{param}.conv3", planes, out_channels, 1)
            # A small last gamma keeps the residual stream from growing block after block
            # (what zero-init-residual training converges near).
            y = _batch_norm(w, y, f"{scope}/bn3", f"{param}.bn3", out_channels, gamma=(0.1, 0.4))
            if block == 0:
                identity = _conv(w, x, f"{scope}/downsample/downsample.0", f"{param}.downsample.0", channels,
                                 out_channels, 1, stride=stride)
                identity = _batch_norm(w, identity, f"{scope}/downsample/downsample.1", f"{param}.downsample.1",
                                       out_channels)
            x = w.node("Relu", [w.node("Add", [y, identity], scope)], f"{scope}/relu_2")
            channels = out_channels
    x = w.node("GlobalAveragePool", [x], "/avgpool")
    x = w.node("Flatten", [x], "", axis=1)
    _classifier(w, x, channels, num_classes, "/fc", "fc", "output")
    return w.model("resnet50", [_image_input(batch, image_size)],
                   [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, num_classes])],
                   f"ResNet-50 (width {width}, depth {tuple(depth)}), seeded random weights (seed {seed})")


# ---- MobileNetV2 -------------------------------------------------------------------------

def _make_divisible(value: float, divisor: int = 8) -> int:
    """torchvision's channel rounding: to a multiple of 8, never more than 10% below."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def mobilenetv2(batch: Dim = "N", seed: int = 0, width: float = 1.0,
                settings: Sequence[tuple[int, int, int, int]] = MOBILENETV2_SETTINGS, image_size: int = 224,
                num_classes: int = 1000, last_channel: int = 1280) -> onnx.ModelProto:
    """torchvision's MobileNetV2 as exported without BN folding: Conv+BN+Clip(0, 6) (ReLU6),
    inverted residual blocks (1x1 expand, 3x3 depthwise, 1x1 linear projection with no
    activation) with a residual Add where stride is 1 and channels match, then
    GlobalAveragePool, Flatten, Gemm. `settings` is the (t, c, n, s) table.
    Full size: 3.5M parameters."""
    w = _Writer(seed)
    first = _make_divisible(32 * width)
    last = _make_divisible(last_channel * max(1.0, width))

    def conv_bn_relu6(x: str, index: str, cin: int, cout: int, kernel: int, stride: int = 1, group: int = 1) -> str:
        # torchvision's Conv2dNormActivation: a Sequential of conv (.0), bn (.1), ReLU6 (.2).
        scope = _sequential_scope(index)
        y = _conv(w, x, f"{scope}/{_last(index)}.0", f"{index}.0", cin, cout, kernel, stride=stride, group=group)
        y = _batch_norm(w, y, f"{scope}/{_last(index)}.1", f"{index}.1", cout)
        return _relu6(w, y, f"{scope}/{_last(index)}.2")

    x = conv_bn_relu6("input", "features.0", 3, first, 3, stride=2)
    channels = first
    feature = 1
    for expansion, c, repeats, first_stride in settings:
        out_channels = _make_divisible(c * width)
        for i in range(repeats):
            stride = first_stride if i == 0 else 1
            hidden = int(round(channels * expansion))
            block = f"features.{feature}"
            conv_scope = f"{_sequential_scope(block)}/{_last(block)}/conv"
            y = x
            layer = 0
            if expansion != 1:
                y = conv_bn_relu6(y, f"{block}.conv.{layer}", channels, hidden, 1)
                layer += 1
            y = conv_bn_relu6(y, f"{block}.conv.{layer}", hidden, hidden, 3, stride=stride, group=hidden)
            # The linear bottleneck: a 1x1 projection and BN with no activation.
            y = _conv(w, y, f"{conv_scope}/conv.{layer + 1}", f"{block}.conv.{layer + 1}", hidden, out_channels, 1)
            y = _batch_norm(w, y, f"{conv_scope}/conv.{layer + 2}", f"{block}.conv.{layer + 2}", out_channels,
                            gamma=(0.2, 0.6))
            if stride == 1 and channels == out_channels:
                y = w.node("Add", [x, y], f"{_sequential_scope(block)}/{_last(block)}")
            x = y
            channels = out_channels
            feature += 1
    x = conv_bn_relu6(x, f"features.{feature}", channels, last, 1)
    x = w.node("GlobalAveragePool", [x], "")
    x = w.node("Flatten", [x], "", axis=1)
    _classifier(w, x, last, num_classes, "/classifier/classifier.1", "classifier.1", "output")
    return w.model("mobilenetv2", [_image_input(batch, image_size)],
                   [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, num_classes])],
                   f"MobileNetV2 (width {width}), seeded random weights (seed {seed})")


def _sequential_scope(index: str) -> str:
    """torch's scope of a module inside nested Sequentials: `features.1.conv.0` ->
    `/features/features.1/conv/conv.0` (without the module's own last part)."""
    parts = index.split(".")
    labels: list[str] = []
    for part in parts:
        labels.append(f"{labels[-1]}.{part}" if part.isdigit() and labels else part)
    return "/" + "/".join(labels[:-1]) if len(labels) > 1 else ""


def _last(index: str) -> str:
    """The scope label of the module itself: `features.1.conv.0` -> `conv.0`."""
    parts = index.split(".")
    label = parts[0]
    for part in parts[1:]:
        label = f"{label}.{part}" if part.isdigit() else part
    return label


# ---- BERT encoder ------------------------------------------------------------------------

def bert_encoder(layers: int = 12, hidden: int = 768, heads: int = 12, seq: Dim = "S", batch: Dim = "B",
                 intermediate: int = 3072, vocab: int = 30522, max_position: int = 512, type_vocab: int = 2,
                 seed: int = 0, layer_norm_eps: float = 1e-12) -> onnx.ModelProto:
    """HuggingFace BertModel as torch.onnx.export writes it at opset < 17 semantics (no
    LayerNormalization op): Gather embeddings + Add; LayerNorm as ReduceMean/Sub/Pow/
    ReduceMean/Add/Sqrt/Div/Mul/Add; attention as MatMul/Add(bias)/Reshape/Transpose/
    MatMul/Div(sqrt(d))/Add(mask)/Softmax/MatMul/Transpose/Reshape, each Reshape's shape a
    Shape->Gather->Unsqueeze->Concat chain so batch and sequence stay dynamic; GELU as
    x*0.5*(1+Erf(x/sqrt2)); the attention mask turned into (1-mask)*-10000 through
    Unsqueeze/Cast. Inputs input_ids, attention_mask, token_type_ids (int64 [batch, seq]);
    outputs last_hidden_state [batch, seq, hidden] and pooler_output [batch, hidden].
    Full size (the defaults, BERT-base uncased): 109.5M parameters."""
    if hidden % heads:
        raise ValueError(f"bert_encoder: hidden size {hidden} is not a multiple of {heads} heads")
    if isinstance(seq, int) and seq > max_position:
        raise ValueError(f"bert_encoder: sequence length {seq} exceeds max_position {max_position}")
    w = _Writer(seed)
    head_size = hidden // heads

    def linear_3d(x: str, scope: str, param: str, fan_in: int, fan_out: int) -> str:
        # nn.Linear on a 3-D input: MatMul with the transposed weight (folded by the
        # exporter into an onnx::MatMul_k initializer), then Add(bias, product).
        weight = w.folded_weight("MatMul", w.normal((fan_in, fan_out), 1.0 / math.sqrt(fan_in)))
        bias = w.weight(f"{param}.bias", w.normal((fan_out,), 0.02))
        return w.node("Add", [bias, w.node("MatMul", [x, weight], scope)], scope)

    def layer_norm(x: str, scope: str, param: str, output: Optional[str] = None) -> str:
        mean = w.node("ReduceMean", [x], scope, axes=[-1], keepdims=1)
        centered = w.node("Sub", [x, mean], scope)
        squared = w.node("Pow", [centered, w.constant(scope, 2.0)], scope)
        variance = w.node("ReduceMean", [squared], scope, axes=[-1], keepdims=1)
        std = w.node("Sqrt", [w.node("Add", [variance, w.constant(scope, layer_norm_eps)], scope)], scope)
        normalized = w.node("Div", [centered, std], scope)
        gamma = w.weight(f"{param}.weight", w.uniform((hidden,), 0.8, 1.2))
        beta = w.weight(f"{param}.bias", w.normal((hidden,), 0.05))
        return w.node("Add", [w.node("Mul", [normalized, gamma], scope), beta], scope, output=output)

    def size(x: str, scope: str, axis: int) -> str:
        # x.size(axis) in a traced shape expression: Shape -> Gather(axis) -> Unsqueeze(0),
        # ready to Concat into a shape tensor.
        dim = w.node("Gather", [w.node("Shape", [x], scope), w.constant(scope, axis, np.int64)], scope, axis=0)
        return w.node("Unsqueeze", [dim, w.constant(scope, [0], np.int64)], scope)

    # Embeddings: word + token type + position, then LayerNorm.
    word_table = w.weight("embeddings.word_embeddings.weight", w.normal((vocab, hidden), 1.0))
    position_table = w.weight("embeddings.position_embeddings.weight", w.normal((max_position, hidden), 0.5))
    type_table = w.weight("embeddings.token_type_embeddings.weight", w.normal((type_vocab, hidden), 0.5))
    position_ids = w.weight("embeddings.position_ids", np.arange(max_position, dtype=np.int64)[None, :])
    seq_len = size("input_ids", "/embeddings", 1)
    positions = w.node("Slice", [position_ids, w.constant("/embeddings", [0], np.int64), seq_len,
                                 w.constant("/embeddings", [1], np.int64), w.constant("/embeddings", [1], np.int64)],
                       "/embeddings")
    words = w.node("Gather", [word_table, "input_ids"], "/embeddings/word_embeddings")
    types = w.node("Gather", [type_table, "token_type_ids"], "/embeddings/token_type_embeddings")
    embedded = w.node("Add", [words, types], "/embeddings")
    embedded = w.node("Add", [embedded, w.node("Gather", [position_table, positions],
                                                 "/embeddings/position_embeddings")], "/embeddings")
    x = layer_norm(embedded, "/embeddings/LayerNorm", "embeddings.LayerNorm")

    # The extended attention mask: mask[:, None, None, :], cast to float, (1 - m) * -10000.
    mask = w.node("Unsqueeze", ["attention_mask", w.constant("", [1], np.int64)], "")
    mask = w.node("Unsqueeze", [mask, w.constant("", [2], np.int64)], "")
    mask = w.node("Cast", [mask], "", to=TensorProto.FLOAT)
    mask = w.node("Sub", [w.constant("", 1.0), mask], "")
    mask = w.node("Mul", [mask, w.constant("", -10000.0)], "")

    for i in range(layers):
        scope = f"/encoder/layer.{i}"
        param = f"encoder.layer.{i}"
        attn = f"{scope}/attention/self"

        def split_heads(t: str) -> str:
            # transpose_for_scores: view(x.size()[:-1] + (heads, head_size)).permute(0, 2, 1, 3)
            shape = w.node("Concat", [size(t, attn, 0), size(t, attn, 1), w.constant(attn, [heads], np.int64),
                                      w.constant(attn, [head_size], np.int64)], attn, axis=0)
            return w.node("Reshape", [t, shape], attn)

        query = linear_3d(x, f"{attn}/query", f"{param}.attention.self.query", hidden, hidden)
        key = linear_3d(x, f"{attn}/key", f"{param}.attention.self.key", hidden, hidden)
        value = linear_3d(x, f"{attn}/value", f"{param}.attention.self.value", hidden, hidden)
        # The exporter merges key's permute(0,2,1,3) with transpose(-1,-2) into one Transpose.
        key_t = w.node("Transpose", [split_heads(key)], attn, perm=[0, 2, 3, 1])
        value_h = w.node("Transpose", [split_heads(value)], attn, perm=[0, 2, 1, 3])
        query_h = w.node("Transpose", [split_heads(query)], attn, perm=[0, 2, 1, 3])
        scores = w.node("MatMul", [query_h, key_t], attn)
        scores = w.node("Div", [scores, w.constant(attn, math.sqrt(head_size))], attn)
        scores = w.node("Add", [scores, mask], attn)
        probs = w.node("Softmax", [scores], attn, axis=-1)
        context = w.node("MatMul", [probs, value_h], attn)
        context = w.node("Transpose", [context], attn, perm=[0, 2, 1, 3])
        shape = w.node("Concat", [size(context, attn, 0), size(context, attn, 1),
                                  w.constant(attn, [hidden], np.int64)], attn, axis=0)
        context = w.node("Reshape", [context, shape], attn)

        out_scope = f"{scope}/attention/output"
        attended = linear_3d(context, f"{out_scope}/dense", f"{param}.attention.output.dense", hidden, hidden)
        x = layer_norm(w.node("Add", [attended, x], out_scope), f"{out_scope}/LayerNorm",
                       f"{param}.attention.output.LayerNorm")

        act_scope = f"{scope}/intermediate/intermediate_act_fn"
        h = linear_3d(x, f"{scope}/intermediate/dense", f"{param}.intermediate.dense", hidden, intermediate)
        erf = w.node("Erf", [w.node("Div", [h, w.constant(act_scope, math.sqrt(2.0))], act_scope)], act_scope)
        h = w.node("Mul", [h, w.node("Add", [erf, w.constant(act_scope, 1.0)], act_scope)], act_scope)
        h = w.node("Mul", [h, w.constant(act_scope, 0.5)], act_scope)
        ff_scope = f"{scope}/output"
        h = linear_3d(h, f"{ff_scope}/dense", f"{param}.output.dense", intermediate, hidden)
        last = i == layers - 1
        x = layer_norm(w.node("Add", [h, x], ff_scope), f"{ff_scope}/LayerNorm", f"{param}.output.LayerNorm",
                       output="last_hidden_state" if last else None)
    if layers == 0:
        x = w.node("Identity", [x], "", output="last_hidden_state")

    # Pooler: the first token's hidden state through Linear (a Gemm on 2-D) and Tanh.
    first = w.node("Gather", [x, w.constant("/pooler", 0, np.int64)], "/pooler", axis=1)
    pooled = _classifier(w, first, hidden, hidden, "/pooler/dense", "pooler.dense")
    w.node("Tanh", [pooled], "/pooler/activation", output="pooler_output")

    ids = [helper.make_tensor_value_info(name, TensorProto.INT64, [batch, seq])
           for name in ("input_ids", "attention_mask", "token_type_ids")]
    outputs = [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, [batch, seq, hidden]),
               helper.make_tensor_value_info("pooler_output", TensorProto.FLOAT, [batch, hidden])]
    return w.model("bert_encoder", ids, outputs,
                   f"BERT encoder ({layers} layers, hidden {hidden}, {heads} heads), seeded random weights "
                   f"(seed {seed})")


# ---- a small detector ----------------------------------------------------------------------

def detector(batch: Dim = "N", seed: int = 0, width: float = 1.0, image_size: int = 320, num_classes: int = 80,
             depth: int = 1) -> onnx.ModelProto:
    """A YOLO-style detector as exported from an ultralytics-like module tree: a backbone of
    Conv+BN+SiLU (x*Sigmoid(x)) blocks with residual bottlenecks, an FPN-style neck with
    Resize (nearest, x2) + Concat, and per-level heads whose 1x1 box and class convs read
    the same input and are concatenated along channels (a concat the optimizer can turn
    into one conv). Levels are flattened with a Shape-chain Reshape, concatenated, split
    into `boxes` [N, 4, anchors] and `scores` [N, num_classes, anchors] (after Sigmoid).
    `depth` is the number of residual bottlenecks per backbone stage."""
    if image_size % 32:
        raise ValueError(f"detector image_size must be a multiple of 32 (five stride-2 stages), got {image_size}")
    w = _Writer(seed)
    channels = [_scaled(c, width) for c in (16, 32, 64, 128, 256)]
    index = 0

    def conv_bn_silu(x: str, module: str, cin: int, cout: int, kernel: int, stride: int = 1) -> str:
        y = _conv(w, x, f"/{module}/conv", f"{module}.conv", cin, cout, kernel, stride=stride)
        y = _batch_norm(w, y, f"/{module}/bn", f"{module}.bn", cout)
        return _silu(w, y, f"/{module}/act")

    def next_module() -> str:
        nonlocal index
        module = f"model.{index}"
        index += 1
        return module

    x = conv_bn_silu("input", next_module(), 3, channels[0], 3, stride=2)
    features: list[str] = []
    for stage in range(1, 5):
        x = conv_bn_silu(x, next_module(), channels[stage - 1], channels[stage], 3, stride=2)
        module = next_module()
        for b in range(depth):
            y = conv_bn_silu(x, f"{module}.m.{b}.cv1", channels[stage], channels[stage], 3)
            y = conv_bn_silu(y, f"{module}.m.{b}.cv2", channels[stage], channels[stage], 3)
            x = w.node("Add", [x, y], f"/{module}/m.{b}")
        features.append(x)
    p3, p4, p5 = features[1], features[2], features[3]

    def upsample_concat(top: str, lateral: str) -> str:
        # nn.Upsample(scale_factor=2, mode="nearest") exports as Resize with constant scales.
        up_module = next_module()
        scales = w.constant(f"/{up_module}", [1.0, 1.0, 2.0, 2.0])
        up = w.node("Resize", [top, "", scales], f"/{up_module}", coordinate_transformation_mode="asymmetric",
                    cubic_coeff_a=-0.75, mode="nearest", nearest_mode="floor")
        return w.node("Concat", [up, lateral], f"/{next_module()}", axis=1)

    n4 = conv_bn_silu(upsample_concat(p5, p4), next_module(), channels[4] + channels[3], channels[3], 3)
    n3 = conv_bn_silu(upsample_concat(n4, p3), next_module(), channels[3] + channels[2], channels[2], 3)

    head = f"model.{index}"
    outputs_per_anchor = 4 + num_classes
    levels = []
    for level, (feature, cin) in enumerate(((n3, channels[2]), (n4, channels[3]), (p5, channels[4]))):
        stem = conv_bn_silu(feature, f"{head}.stem.{level}", cin, cin, 3)
        # Box and class 1x1 convs on the same input, concatenated along channels.
        box = _conv(w, stem, f"/{head}/box.{level}", f"{head}.box.{level}", cin, 4, 1, bias=True,
                    std=1.0 / math.sqrt(cin))
        cls = _conv(w, stem, f"/{head}/cls.{level}", f"{head}.cls.{level}", cin, num_classes, 1, bias=True,
                    std=1.0 / math.sqrt(cin))
        both = w.node("Concat", [box, cls], f"/{head}", axis=1)
        # x.view(x.shape[0], self.no, -1)
        dim = w.node("Gather", [w.node("Shape", [both], f"/{head}"), w.constant(f"/{head}", 0, np.int64)],
                     f"/{head}", axis=0)
        n = w.node("Unsqueeze", [dim, w.constant(f"/{head}", [0], np.int64)], f"/{head}")
        shape = w.node("Concat", [n, w.constant(f"/{head}", [outputs_per_anchor], np.int64),
                                  w.constant(f"/{head}", [-1], np.int64)], f"/{head}", axis=0)
        levels.append(w.node("Reshape", [both, shape], f"/{head}"))
    flat = w.node("Concat", levels, f"/{head}", axis=2)
    split = w.constant(f"/{head}", [4, num_classes], np.int64)
    boxes, logits = w.node("Split", [flat, split], f"/{head}", n_outputs=2, axis=1)
    w.node("Identity", [boxes], f"/{head}", output="boxes")
    w.node("Sigmoid", [logits], f"/{head}", output="scores")
    anchors = sum((image_size // s) ** 2 for s in (8, 16, 32))
    return w.model("detector", [_image_input(batch, image_size)],
                   [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [batch, 4, anchors]),
                    helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, num_classes, anchors])],
                   f"YOLO-style detector (width {width}, depth {depth}), seeded random weights (seed {seed})")


# ---- the zoo as a table ---------------------------------------------------------------------

ZOO = {
    "resnet50": resnet50,
    "mobilenetv2": mobilenetv2,
    "bert_encoder": bert_encoder,
    "detector": detector,
}

# Small variants (seconds to build and run on a CPU) for tests and `--small` reports.
SMALL = {
    "resnet50": dict(width=0.125, depth=(1, 1, 1, 1), image_size=32, num_classes=10),
    "mobilenetv2": dict(width=0.25, settings=((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 2, 2)), image_size=32,
                        num_classes=10, last_channel=64),
    "bert_encoder": dict(layers=2, hidden=32, heads=4, intermediate=64, vocab=100, max_position=64),
    "detector": dict(width=0.25, image_size=64, num_classes=3),
}


def example_inputs(model: onnx.ModelProto, batch: int = 1, seq: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs a zoo model can run on, seeded: images from a standard normal; token ids below
    the vocabulary size and token types below the type-vocabulary size (read from the
    embedding tables); an attention mask with the last quarter of each sequence padded.
    The leading dimension of every input is `batch`, any other symbolic one `seq`."""
    rng = np.random.default_rng(seed)
    tables = {t.name: tuple(t.dims) for t in model.graph.initializer}
    feeds: dict[str, np.ndarray] = {}
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        shape = tuple(batch if i == 0 and not d.HasField("dim_value") else
                      (d.dim_value if d.HasField("dim_value") else seq) for i, d in enumerate(dims))
        if value.name == "input_ids":
            feeds[value.name] = rng.integers(0, tables["embeddings.word_embeddings.weight"][0], shape, dtype=np.int64)
        elif value.name == "token_type_ids":
            feeds[value.name] = rng.integers(0, tables["embeddings.token_type_embeddings.weight"][0], shape,
                                             dtype=np.int64)
        elif value.name == "attention_mask":
            mask = np.ones(shape, dtype=np.int64)
            mask[..., shape[-1] - shape[-1] // 4:] = 0
            feeds[value.name] = mask
        elif value.type.tensor_type.elem_type == TensorProto.FLOAT:
            feeds[value.name] = rng.standard_normal(shape).astype(np.float32)
        else:
            raise ValueError(f"example_inputs: no generator for input '{value.name}' of a zoo model")
    return feeds


def build(name: str, small: bool = False, **overrides: object) -> onnx.ModelProto:
    """A zoo model by name, full size or the small variant, with any parameter overridden."""
    if name not in ZOO:
        raise KeyError(f"no zoo model '{name}': known {sorted(ZOO)}")
    params = dict(SMALL[name]) if small else {}
    params.update(overrides)
    return ZOO[name](**params)
