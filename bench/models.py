"""The benchmark's models: ONE model per workload, built once and handed to every system.

Preferred route (what `cuda_bench.py` uses on the GPU machine): the peers' own PyTorch
modules, seeded (`torchvision.models.resnet50(weights=None)`, `transformers.BertModel(
BertConfig())`, eval mode), exported to ONNX with `torch.onnx.export` (the TorchScript
exporter first, `dynamo=False`, then the torch.export-based one, `dynamo=True`; opset 17;
dynamic batch). tensorkiln builds that ONNX file; PyTorch eager and torch.compile run the
module it was exported from, so all systems compute the same function with the same
weights (the benchmark checks that before it times anything).

Fallback, only where the export (or torchvision/transformers) is missing: the zoo model
(`tensorkiln.testing.zoo`, the same architecture written node by node) for tensorkiln,
and for the peers `OnnxAsTorch`, a torch module that runs that same ONNX graph node by
node with plain torch ops (F.conv2d, torch.matmul, ...) on the same weights. Each bundle
says in `source` which route it took and why.

Nothing here times anything; nothing here needs a GPU (the CPU fallback path is what the
CPU-only machine can exercise).
"""

from __future__ import annotations

import copy
import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np
import onnx
import torch
from onnx import numpy_helper

OPSET = 17
VOCAB_FALLBACK = 30522  # BertConfig().vocab_size; read from the model where there is one


@dataclass(frozen=True)
class Workload:
    """One row group of the table: a model at one batch (and sequence) size."""

    name: str
    model: str  # "resnet50" | "bert_base"
    batch: int
    seq: int = 0  # sequence length (BERT only)

    @property
    def unit(self) -> str:
        return "img/s" if self.model == "resnet50" else "seq/s"


WORKLOADS: tuple[Workload, ...] = (
    Workload("resnet50-b1", "resnet50", 1),
    Workload("resnet50-b128", "resnet50", 128),
    Workload("bert_base-s128-b1", "bert_base", 1, 128),
    Workload("bert_base-s128-b64", "bert_base", 64, 128),
)


@dataclass
class ModelBundle:
    """The model of one architecture, as each system takes it."""

    model: str
    module: torch.nn.Module  # fp32, eval mode, on the benchmark device; returns a tuple of tensors
    onnx_model: onnx.ModelProto  # what tensorkiln builds; same weights as `module`
    input_names: list[str]
    output_names: list[str]  # ONNX output names, in the order `module` returns them
    source: str  # one line: which route built this bundle
    notes: list[str] = field(default_factory=list)  # failed attempts, with their errors
    export_seconds: float = 0.0

    def make_inputs(self, batch: int, seq: int, seed: int, device: torch.device) -> dict[str, torch.Tensor]:
        """Seeded inputs (fp32 images; int64 ids/mask/types), created on the device."""
        gen = torch.Generator(device="cpu").manual_seed(seed)
        if self.model == "resnet50":
            x = torch.randn((batch, 3, _image_size(self.onnx_model), _image_size(self.onnx_model)), generator=gen)
            return {self.input_names[0]: x.to(device)}
        vocab, types = _embedding_rows(self.onnx_model)
        feeds: dict[str, torch.Tensor] = {}
        for name in self.input_names:
            if name == "input_ids":
                feeds[name] = torch.randint(0, vocab, (batch, seq), generator=gen, dtype=torch.int64)
            elif name == "token_type_ids":
                feeds[name] = torch.randint(0, types, (batch, seq), generator=gen, dtype=torch.int64)
            elif name == "attention_mask":
                # The last quarter of every sequence is padding, as in the zoo's examples:
                # a mask of all ones would let implementations skip masking work.
                mask = torch.ones((batch, seq), dtype=torch.int64)
                mask[:, seq - seq // 4:] = 0
                feeds[name] = mask
            else:
                raise ValueError(f"no input generator for BERT input '{name}'")
        return {k: v.to(device) for k, v in feeds.items()}


def _image_size(model: onnx.ModelProto) -> int:
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return dims[-1].dim_value if dims[-1].HasField("dim_value") else 224


def _embedding_rows(model: onnx.ModelProto) -> tuple[int, int]:
    """(vocabulary size, token-type count) read from the embedding tables of the ONNX model."""
    vocab, types = VOCAB_FALLBACK, 2
    for t in model.graph.initializer:
        if t.name.endswith("word_embeddings.weight"):
            vocab = t.dims[0]
        elif t.name.endswith("token_type_embeddings.weight"):
            types = t.dims[0]
    return vocab, types


# ---------------------------------------------------------------------------------------
# The preferred route: the peers' modules, exported.
# ---------------------------------------------------------------------------------------

class _BertOutputs(torch.nn.Module):
    """BertModel returning (last_hidden_state, pooler_output) as a plain tuple."""

    def __init__(self, bert: torch.nn.Module):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                        return_dict=True)
        return out.last_hidden_state, out.pooler_output


class _Tupled(torch.nn.Module):
    """A module returning one tensor, made to return a 1-tuple (all peers return tuples)."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.inner(x),)


def torch_resnet50(seed: int) -> torch.nn.Module:
    import torchvision  # on the GPU machine only; the CPU machine has no torchvision

    torch.manual_seed(seed)
    return _Tupled(torchvision.models.resnet50(weights=None)).eval()


def torch_bert_base(seed: int, attn_implementation: str) -> torch.nn.Module:
    import transformers

    torch.manual_seed(seed)
    config = transformers.BertConfig()
    config._attn_implementation = attn_implementation  # noqa: SLF001 - the documented way to pick it
    bert = transformers.BertModel(config, add_pooling_layer=True)
    bert.config._attn_implementation = attn_implementation  # noqa: SLF001
    return _BertOutputs(bert).eval()


def export_onnx(module: torch.nn.Module, example: dict[str, torch.Tensor], output_names: list[str],
                dynamic: dict[str, dict[int, str]], dynamo: bool) -> onnx.ModelProto:
    """torch.onnx.export at opset 17 with the given dynamic axes, loaded back as a ModelProto
    (weights inline). `dynamo` picks the exporter."""
    names = list(example)
    args = tuple(example[n] for n in names)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        kwargs: dict[str, Any] = dict(input_names=names, output_names=output_names, opset_version=OPSET,
                                      dynamic_axes={k: v for k, v in dynamic.items()})
        if dynamo:
            kwargs["dynamo"] = True
            kwargs["external_data"] = False
        else:
            kwargs["dynamo"] = False
            kwargs["do_constant_folding"] = True
        with torch.no_grad():
            torch.onnx.export(module, args, path, **kwargs)
        model = onnx.load(path, load_external_data=True)
    onnx.checker.check_model(model)
    return model


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text[:300] + ("..." if len(text) > 300 else "")


def _exported_bundle(model: str, seed: int, device: torch.device, exporters: Sequence[bool],
                     notes: list[str]) -> Optional[ModelBundle]:
    """Build the torch module and export it; None (with the reasons in `notes`) when it fails."""
    if model == "resnet50":
        variants: list[tuple[str, Callable[[], torch.nn.Module]]] = [("torchvision", lambda: torch_resnet50(seed))]
        example = {"input": torch.randn(2, 3, 224, 224)}
        outputs = ["logits"]
        dynamic = {"input": {0: "batch"}, "logits": {0: "batch"}}
        described = "torchvision.models.resnet50(weights=None), torch.manual_seed({seed})"
    else:
        # SDPA attention first (the fastest a PyTorch user gets); the exporters may only
        # manage the eager attention, which computes the same function.
        variants = [(f"transformers BertModel(BertConfig()), attn={impl}",
                     (lambda impl=impl: torch_bert_base(seed, impl))) for impl in ("sdpa", "eager")]
        gen = torch.Generator().manual_seed(seed)
        mask = torch.ones(2, 16, dtype=torch.int64)
        mask[:, 12:] = 0
        example = {"input_ids": torch.randint(0, VOCAB_FALLBACK, (2, 16), generator=gen),
                   "attention_mask": mask,
                   "token_type_ids": torch.randint(0, 2, (2, 16), generator=gen)}
        outputs = ["last_hidden_state", "pooler_output"]
        dynamic = {n: {0: "batch", 1: "seq"} for n in example}
        dynamic.update({"last_hidden_state": {0: "batch", 1: "seq"}, "pooler_output": {0: "batch"}})
        described = "transformers.BertModel(BertConfig()), eval, torch.manual_seed({seed})"
    for label, make in variants:
        try:
            module = make()
        except Exception as exc:  # noqa: BLE001 - a missing package is a reason to fall back, reported
            notes.append(f"{label}: could not build the module: {_short(exc)}")
            continue
        for dynamo in exporters:
            exporter = "torch.onnx.export(dynamo=True)" if dynamo else "torch.onnx.export(dynamo=False, TorchScript)"
            started = time.perf_counter()
            try:
                proto = export_onnx(module, example, outputs, dynamic, dynamo)
            except Exception as exc:  # noqa: BLE001 - each exporter's failure is reported, then the next tried
                notes.append(f"{label} via {exporter} failed: {_short(exc)}")
                continue
            seconds = time.perf_counter() - started
            module = module.to(device)
            return ModelBundle(model, module, proto, list(example), outputs,
                               f"{described.format(seed=seed)} [{label}] exported by {exporter}, opset {OPSET}",
                               notes, seconds)
    return None


# ---------------------------------------------------------------------------------------
# The fallback: zoo ONNX models, run by torch op by op for the peers.
# ---------------------------------------------------------------------------------------

class OnnxAsTorch(torch.nn.Module):
    """A torch module that computes an ONNX graph node by node with torch ops.

    Weights and Constant-node values are buffers (so `.half()` and `.to()` convert them,
    as they would a hand-written module's parameters). It covers the ops of the zoo's
    ResNet-50 and BERT encoder; anything else raises at construction with the op named.
    torch.compile traces through `forward` (the node loop unrolls into one graph).
    """

    OPS = ("Add", "BatchNormalization", "Cast", "Concat", "Constant", "Conv", "Div", "Erf", "Flatten", "Gather",
           "Gemm", "GlobalAveragePool", "Identity", "MatMul", "MaxPool", "Mul", "Pow", "ReduceMean", "Relu",
           "Reshape", "Shape", "Slice", "Softmax", "Sqrt", "Sub", "Tanh", "Transpose", "Unsqueeze")

    def __init__(self, model: onnx.ModelProto):
        super().__init__()
        graph = model.graph
        self.input_names = [v.name for v in graph.input if v.name not in {t.name for t in graph.initializer}]
        self.output_names = [v.name for v in graph.output]
        self._buffer_of: dict[str, str] = {}
        # Small integer constants (axes, shapes, indices) stay Python values, and Shape
        # gives a tuple of ints, so shape arithmetic never reads a tensor back from the
        # device (torch.compile would break its graph at every such read).
        self._python_consts: dict[str, Any] = {}
        for i, t in enumerate(graph.initializer):
            self._add_const(t.name, numpy_helper.to_array(t), i)
        self.nodes: list[tuple[str, list[str], list[str], dict[str, Any]]] = []
        unknown = sorted({n.op_type for n in graph.node} - set(self.OPS))
        if unknown:
            raise NotImplementedError(f"OnnxAsTorch has no torch version of {unknown}")
        for k, n in enumerate(graph.node):
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
            if n.op_type == "Constant":
                self._add_const(n.output[0], numpy_helper.to_array(attrs["value"]), f"c{k}")
                continue
            self.nodes.append((n.op_type, list(n.input), list(n.output), attrs))

    def _add_const(self, name: str, array: np.ndarray, key: Any) -> None:
        if array.dtype.kind in "iu" and array.size <= 16 and array.ndim <= 1:
            self._python_consts[name] = int(array) if array.ndim == 0 else _Dims(int(v) for v in array)
            return
        buffer = f"w{key}"
        self.register_buffer(buffer, torch.from_numpy(np.array(array)), persistent=False)
        self._buffer_of[name] = buffer

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        env: dict[str, Any] = dict(self._python_consts)
        env.update({name: getattr(self, b) for name, b in self._buffer_of.items()})
        env.update(zip(self.input_names, inputs))
        float_dtype = next((t.dtype for t in self.buffers() if t.is_floating_point()), torch.float32)
        for op, ins, outs, attrs in self.nodes:
            args = [env[i] if i else None for i in ins]
            result = _run_op(op, args, attrs, float_dtype)
            if isinstance(result, tuple) and not isinstance(result, _Dims):
                env.update(zip(outs, result))
            else:
                env[outs[0]] = result
        return tuple(env[n] for n in self.output_names)


class _Dims(tuple):
    """A 1-D integer tensor held as Python ints (a shape, or a small constant)."""


def _is_python(x: Any) -> bool:
    return isinstance(x, (int, _Dims))


def _ints(t: Any) -> list[int]:
    if isinstance(t, int):
        return [t]
    return [int(v) for v in (t.tolist() if isinstance(t, torch.Tensor) else t)]


def _run_op(op: str, a: list[Any], attrs: dict[str, Any], float_dtype: torch.dtype) -> Any:
    import torch.nn.functional as F

    if op == "Add":
        return a[0] + a[1]
    if op == "Sub":
        return a[0] - a[1]
    if op == "Mul":
        return a[0] * a[1]
    if op == "Div":
        return a[0] / a[1]
    if op == "Pow":
        return torch.pow(a[0], a[1])
    if op == "Sqrt":
        return torch.sqrt(a[0])
    if op == "Erf":
        return torch.erf(a[0])
    if op == "Tanh":
        return torch.tanh(a[0])
    if op == "Relu":
        return torch.relu(a[0])
    if op == "Identity":
        return a[0]
    if op == "MatMul":
        return torch.matmul(a[0], a[1])
    if op == "Softmax":
        return torch.softmax(a[0], dim=attrs.get("axis", -1))
    if op == "ReduceMean":
        axes = attrs.get("axes") if len(a) < 2 or a[1] is None else _ints(a[1])
        return a[0].mean(dim=tuple(axes), keepdim=bool(attrs.get("keepdims", 1)))
    if op == "Transpose":
        return a[0].permute(*attrs["perm"])
    if op == "Reshape":
        shape = _ints(a[1])
        shape = [a[0].shape[i] if d == 0 else d for i, d in enumerate(shape)]
        return a[0].reshape(shape)
    if op == "Unsqueeze":
        if isinstance(a[0], int):
            return _Dims([a[0]])
        x = a[0]
        for axis in sorted(_ints(a[1])):
            x = x.unsqueeze(axis)
        return x
    if op == "Shape":
        return _Dims(int(d) for d in a[0].shape)
    if op == "Gather":
        axis = attrs.get("axis", 0)
        idx = a[1]
        if isinstance(a[0], _Dims):
            return a[0][idx] if isinstance(idx, int) else _Dims(a[0][i] for i in _ints(idx))
        if isinstance(idx, int):
            return a[0].select(axis, idx)
        if isinstance(idx, _Dims):
            idx = torch.tensor(idx, dtype=torch.int64, device=a[0].device)
        return torch.index_select(a[0], axis, idx.reshape(-1)).reshape(
            (*a[0].shape[:axis], *idx.shape, *a[0].shape[axis + 1:]))
    if op == "Concat":
        if any(_is_python(x) for x in a):
            return _Dims(d for x in a for d in _ints(x))
        return torch.cat(a, dim=attrs["axis"])
    if op == "Slice":
        starts, ends = _ints(a[1]), _ints(a[2])
        axes = _ints(a[3]) if len(a) > 3 and a[3] is not None else list(range(len(starts)))
        steps = _ints(a[4]) if len(a) > 4 and a[4] is not None else [1] * len(starts)
        if isinstance(a[0], _Dims):
            return _Dims(a[0][slice(starts[0], ends[0], steps[0])])
        index = [slice(None)] * a[0].dim()
        for s, e, ax, st in zip(starts, ends, axes, steps):
            n = a[0].shape[ax]
            index[ax] = slice(max(-n, min(s, n)), max(-n - 1, min(e, n)), st)
        return a[0][tuple(index)]
    if op == "Cast":
        if _is_python(a[0]):
            return a[0]
        to = attrs["to"]
        dtype = {onnx.TensorProto.FLOAT: float_dtype, onnx.TensorProto.FLOAT16: torch.float16,
                 onnx.TensorProto.INT64: torch.int64, onnx.TensorProto.INT32: torch.int32,
                 onnx.TensorProto.BOOL: torch.bool}[to]
        return a[0].to(dtype)
    if op == "Flatten":
        return torch.flatten(a[0], start_dim=attrs.get("axis", 1))
    if op == "Gemm":
        x = a[0].t() if attrs.get("transA", 0) else a[0]
        w = a[1].t() if attrs.get("transB", 0) else a[1]
        y = attrs.get("alpha", 1.0) * (x @ w)
        if len(a) > 2 and a[2] is not None:
            y = y + attrs.get("beta", 1.0) * a[2]
        return y
    if op == "Conv":
        pads = attrs.get("pads", [0, 0, 0, 0])
        if pads[:2] != pads[2:]:
            raise NotImplementedError("asymmetric Conv padding")
        return F.conv2d(a[0], a[1], a[2] if len(a) > 2 else None, stride=attrs.get("strides", 1),
                        padding=pads[:2], dilation=attrs.get("dilations", 1), groups=attrs.get("group", 1))
    if op == "BatchNormalization":
        return F.batch_norm(a[0], a[3], a[4], a[1], a[2], training=False, eps=attrs.get("epsilon", 1e-5))
    if op == "MaxPool":
        pads = attrs.get("pads", [0, 0, 0, 0])
        return F.max_pool2d(a[0], attrs["kernel_shape"], stride=attrs.get("strides", 1), padding=pads[:2],
                            ceil_mode=bool(attrs.get("ceil_mode", 0)))
    if op == "GlobalAveragePool":
        return a[0].mean(dim=(2, 3), keepdim=True)
    raise NotImplementedError(op)


def _zoo_bundle(model: str, seed: int, device: torch.device, small: bool, notes: list[str]) -> ModelBundle:
    from tensorkiln.testing import zoo

    zoo_name = "resnet50" if model == "resnet50" else "bert_encoder"
    proto = zoo.build(zoo_name, small=small, seed=seed)
    module = OnnxAsTorch(proto).eval().to(device)
    return ModelBundle(model, module, proto, module.input_names, module.output_names,
                       f"FALLBACK: tensorkiln.testing.zoo.{zoo_name}(seed={seed}{', small' if small else ''}); peers "
                       "run the same ONNX graph op by op in torch (bench/models.py OnnxAsTorch)", notes)


def build_bundle(model: str, seed: int, device: torch.device, *, route: str = "auto",
                 exporters: Sequence[bool] = (False, True), small_fallback: bool = False) -> ModelBundle:
    """The model for every system. route: "auto" (export, else the zoo fallback), "export"
    (fail when exporting fails), "zoo" (the fallback only)."""
    notes: list[str] = []
    if route in ("auto", "export"):
        bundle = _exported_bundle(model, seed, device, exporters, notes)
        if bundle is not None:
            return bundle
        if route == "export":
            raise RuntimeError(f"exporting {model} failed: " + " | ".join(notes))
    return _zoo_bundle(model, seed, device, small_fallback, notes)


def half_copy(module: torch.nn.Module) -> torch.nn.Module:
    """An fp16 copy (model.half(), as a PyTorch user would), leaving the fp32 module intact."""
    return copy.deepcopy(module).half()


def cast_inputs(inputs: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Floating inputs in `dtype`; integer inputs (ids, masks) unchanged."""
    return {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in inputs.items()}


__all__ = ["ModelBundle", "OnnxAsTorch", "WORKLOADS", "Workload", "build_bundle", "cast_inputs", "export_onnx",
           "half_copy"]
