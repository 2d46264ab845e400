"""The model zoo: small variants of each model are valid ONNX, carry the exporter patterns
the optimizer is meant to meet, and build with tensorkiln (default optimization level)
into engines that match onnxruntime at fp32 tolerance at two batch sizes, with their
dynamic dimensions still symbolic."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import onnx
import pytest

import tensorkiln
from tensorkiln.builder import Builder, BuilderConfig
from tensorkiln.frontends.onnx import parse_onnx
from tensorkiln.runtime import Runtime
from tensorkiln.testing import zoo
from tensorkiln.testing.oracles import run_onnxruntime
from tensorkiln.testing.tolerances import assert_close

MODELS = sorted(zoo.ZOO)


@pytest.fixture(scope="module")
def built() -> dict[str, tuple[onnx.ModelProto, Any]]:
    """Each small model and its engine, built once at the default optimization level."""
    result = {}
    for name in MODELS:
        model = zoo.build(name, small=True)
        plan = Builder(BuilderConfig()).build(parse_onnx(model))
        result[name] = (model, Runtime("cpu").load(plan))
    return result


def _ops(model: onnx.ModelProto) -> Counter:
    return Counter(n.op_type for n in model.graph.node)


@pytest.mark.parametrize("name", MODELS)
def test_checker_accepts_and_versions_suit_onnxruntime(name: str) -> None:
    model = zoo.build(name, small=True)
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == 8
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("batch", [1, 3])
def test_matches_onnxruntime_at_two_batch_sizes(built: dict, name: str, batch: int) -> None:
    model, engine = built[name]
    feeds = zoo.example_inputs(model, batch=batch, seq=12, seed=batch)
    expected = run_onnxruntime(model, feeds)
    got = engine.create_execution_context().execute(feeds)
    assert sorted(got) == sorted(expected)
    for out, want in expected.items():
        assert got[out].shape[0] == batch
        assert_close(got[out], want, "fp32", what=f"{name} output '{out}' at batch {batch}")


@pytest.mark.parametrize("name", MODELS)
def test_dynamic_dims_stay_symbolic(built: dict, name: str) -> None:
    model, engine = built[name]
    declared = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
                for v in list(model.graph.input) + list(model.graph.output)}
    for spec in engine.inputs:
        assert list(spec.shape) == declared[spec.name], f"input '{spec.name}'"
    for spec in engine.outputs:
        want = declared[spec.name]
        assert len(spec.shape) == len(want), f"output '{spec.name}' rank"
        for axis, (dim, declared_dim) in enumerate(zip(spec.shape, want)):
            if isinstance(declared_dim, str):
                assert isinstance(dim, str), f"output '{spec.name}' axis {axis} became {dim!r}"
            else:
                assert dim == declared_dim, f"output '{spec.name}' axis {axis}"


def test_resnet50_is_written_as_conv_bn_relu_with_residual_adds() -> None:
    model = zoo.build("resnet50", small=True)
    ops = _ops(model)
    assert ops["Conv"] == ops["BatchNormalization"] == 1 + 4 * 3 + 4  # stem, 3 per block, 4 downsamples
    assert ops["Add"] == 4 and ops["MaxPool"] == 1 and ops["GlobalAveragePool"] == 1 and ops["Gemm"] == 1
    producer = {o: n for n in model.graph.node for o in n.output}
    for n in model.graph.node:
        if n.op_type == "BatchNormalization":
            assert producer[n.input[0]].op_type == "Conv"


def test_full_size_parameter_counts_match_the_originals() -> None:
    # torchvision's counts (25,557,032 and 3,504,872) plus the BN running statistics.
    assert zoo.parameter_count(zoo.resnet50()) == 25_557_032 + 53_120
    assert zoo.parameter_count(zoo.mobilenetv2()) == 3_504_872 + 34_112


def test_mobilenetv2_has_depthwise_relu6_and_linear_bottlenecks() -> None:
    model = zoo.build("mobilenetv2", small=True)
    inits = {t.name: t for t in model.graph.initializer}
    depthwise = [n for n in model.graph.node if n.op_type == "Conv"
                 and onnx.helper.get_node_attr_value(n, "group") > 1]
    assert len(depthwise) == 1 + 2 + 2  # one per inverted residual block
    for n in depthwise:
        assert onnx.helper.get_node_attr_value(n, "group") == inits[n.input[1]].dims[0]
    ops = _ops(model)
    assert ops["Relu"] == 0 and ops["Clip"] > 0 and ops["Add"] == 3
    # Residual Adds where stride is 1 and channels match: at width 0.25 the first block maps
    # 8 -> 8 channels, and the second block of each two-block stage repeats its channels.
    consts = {n.output[0]: onnx.numpy_helper.to_array(n.attribute[0].t) for n in model.graph.node
              if n.op_type == "Constant"}
    for n in model.graph.node:
        if n.op_type == "Clip":
            assert (float(consts[n.input[1]]), float(consts[n.input[2]])) == (0.0, 6.0)
    # Every BN but the projections' (the linear bottlenecks, one per block) feeds a Clip.
    clip_inputs = {n.input[0] for n in model.graph.node if n.op_type == "Clip"}
    linear = [n for n in model.graph.node if n.op_type == "BatchNormalization" and n.output[0] not in clip_inputs]
    assert len(linear) == len(depthwise)


def test_bert_is_written_in_exporter_primitives() -> None:
    model = zoo.build("bert_encoder", small=True)
    ops = _ops(model)
    layers = 2
    assert "LayerNormalization" not in ops and "Gelu" not in ops
    assert ops["Erf"] == layers and ops["Softmax"] == layers
    assert ops["ReduceMean"] == 2 * (1 + 2 * layers) and ops["Sqrt"] == 1 + 2 * layers
    assert ops["Reshape"] == 4 * layers and ops["Shape"] >= 8 * layers and ops["Cast"] == 1
    producer = {o: n for n in model.graph.node for o in n.output}
    for n in model.graph.node:
        if n.op_type == "Reshape":  # shapes come from Shape->Gather->Unsqueeze->Concat, never a constant
            shape = producer[n.input[1]]
            assert shape.op_type == "Concat"
            assert any(producer[i].op_type == "Unsqueeze" and producer[producer[i].input[0]].op_type == "Gather"
                       for i in shape.input)
    assert [i.name for i in model.graph.input] == ["input_ids", "attention_mask", "token_type_ids"]


def _bert_parameters(hidden: int, inter: int, layers: int, vocab: int, positions: int, types: int = 2) -> int:
    embeddings = (vocab + positions + types) * hidden + 2 * hidden
    per_layer = 4 * (hidden * hidden + hidden) + 2 * hidden * inter + inter + hidden + 2 * 2 * hidden
    return embeddings + layers * per_layer + hidden * hidden + hidden


def test_bert_parameters_follow_bert_base() -> None:
    # The formula gives bert-base-uncased's published 109,482,240 at full size; the generator
    # follows it at a small size (the full one takes ~10 s to write).
    assert _bert_parameters(768, 3072, 12, 30522, 512) == 109_482_240
    tiny = zoo.bert_encoder(layers=2, hidden=8, heads=2, intermediate=16, vocab=10, max_position=8)
    assert zoo.parameter_count(tiny) == _bert_parameters(8, 16, 2, 10, 8)


def test_detector_concatenates_two_convs_of_one_input() -> None:
    model = zoo.build("detector", small=True)
    producer = {o: n for n in model.graph.node for o in n.output}
    sibling_concats = [n for n in model.graph.node if n.op_type == "Concat" and len(n.input) == 2
                       and all(producer[i].op_type == "Conv" for i in n.input)
                       and producer[n.input[0]].input[0] == producer[n.input[1]].input[0]]
    assert len(sibling_concats) == 3  # one per detection level
    ops = _ops(model)
    assert ops["Resize"] == 2 and ops["Sigmoid"] == ops["BatchNormalization"] + 1  # SiLUs and the class sigmoid
    assert ops["Mul"] == ops["BatchNormalization"]


def test_same_seed_same_weights_other_seed_other_weights() -> None:
    a, b, c = (zoo.build("detector", small=True, seed=s) for s in (0, 0, 1))
    assert a.SerializeToString() == b.SerializeToString()
    wa = onnx.numpy_helper.to_array(a.graph.initializer[0])
    wc = onnx.numpy_helper.to_array(c.graph.initializer[0])
    assert wa.shape == wc.shape and not np.array_equal(wa, wc)


def test_compile_api_runs_a_zoo_model_unchanged() -> None:
    model = zoo.build("resnet50", small=True)
    feeds = zoo.example_inputs(model, batch=2)
    before = model.SerializeToString()
    got = tensorkiln.compile(model).predict(feeds)
    assert model.SerializeToString() == before
    assert_close(got["output"], run_onnxruntime(model, feeds)["output"], "fp32")
