"""The activation arena at run time: layers whose tactics take their outputs from RunContext.output
write them into one block of memory per execution context, at the builder's offsets.

On the CPU (no CPU tactic writes into the arena yet) the tests register their own: Relu and Neg
that write where the runtime says, chosen by the tuner through a synthetic timer.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx.parser
import pytest
import torch

from tensorkiln import Builder, BuilderConfig, OptimizationProfile, Runtime
from tensorkiln.errors import ConfigError, EngineFormatError
from tensorkiln.frontends.onnx import parse_onnx
from tensorkiln.tactics import Tactic, autotune, register_tactic
from tensorkiln.tactics import registry as tactic_registry
from tensorkiln.runtime import arena as arena_runtime

CHAIN = """<ir_version: 8, opset_import: ["" : 17]>
chain (float[N,64] x) => (float[N,64] y) {
    a = Relu(x)
    b = Neg(a)
    c = Relu(b)
    d = Neg(c)
    y = Relu(d)
}"""


@pytest.fixture
def arena_tactics(monkeypatch):
    """Relu and Neg tactics writing into ctx.output (recording where each output went), which the
    tuner is made to prefer; registered in a private copy of the registry."""
    monkeypatch.setattr(tactic_registry, "_EXTRA", {k: list(v) for k, v in tactic_registry._EXTRA.items()})
    written: list[tuple[str, int]] = []  # (op, where its output went); the timer prefers what appends here

    def into(op: str, fn: Any) -> Any:
        def run(ctx, inputs, attrs):
            x = inputs[0]
            out = ctx.output(0, x.shape, x.dtype)
            written.append((op, out.data_ptr()))
            return fn(x, out=out)
        return run

    register_tactic(Tactic("into_arena", "Relu", "cpu", into("Relu", lambda x, out: torch.clamp(x, min=0, out=out)),
                           arena_outputs=True))
    register_tactic(Tactic("into_arena", "Neg", "cpu", into("Neg", torch.neg), arena_outputs=True))

    def prefer_arena_tactics(call, device, avg_timing, measurements, graphs=False):
        before = len(written)
        (call[0] if isinstance(call, (list, tuple)) else call)()
        return 0.1 if len(written) > before else 1.0

    monkeypatch.setattr(autotune, "measure", prefer_arena_tactics)
    return written


def _build(text: str, **config: Any):
    config.setdefault("optimization_level", 0)
    return Builder(BuilderConfig(**config)).build(parse_onnx(onnx.parser.parse_model(text)))


def _in(ptr: int, memory: torch.Tensor) -> bool:
    return memory.data_ptr() <= ptr < memory.data_ptr() + memory.numel()


PROFILE = (OptimizationProfile({"x": ((1, 64), (4, 64), (8, 64))}),)


def test_activations_are_written_into_the_context_arena(arena_tactics):
    plan = _build(CHAIN, profiles=PROFILE)
    assert all(n.meta["tactic"] == "into_arena" for n in plan.graph.nodes)
    # a..d in a chain: two places at the max shape (8 x 64 floats) serve all four.
    assert plan.memory["device_memory_size"] == 2 * 8 * 64 * 4
    for engine in (Runtime().load(plan), Runtime().load(plan.serialize())):
        assert engine.device_memory_size == 2 * 8 * 64 * 4
        ctx = engine.create_execution_context()
        memory = ctx.device_memory
        assert memory is not None and memory.numel() == engine.device_memory_size
        for rows in (8, 1, 3):  # every shape of the profile fits the places planned at its max
            arena_tactics.clear()
            x = torch.randn(rows, 64, generator=torch.Generator().manual_seed(rows))
            y = ctx.execute({"x": x})["y"]
            assert torch.equal(y, torch.relu(-torch.relu(-torch.relu(x))))
            # a..d went into the arena; y (the output, the caller's to keep) did not.
            inside = [_in(ptr, memory) for _, ptr in arena_tactics]
            assert inside == [True, True, True, True, False]
            assert not _in(y.data_ptr(), memory)


def test_the_caller_may_give_the_context_its_memory(arena_tactics):
    engine = Runtime().load(_build(CHAIN, profiles=PROFILE))
    size = engine.device_memory_size
    shared = torch.zeros(size + 100, dtype=torch.uint8)
    first = engine.create_execution_context(device_memory=shared)
    second = engine.create_execution_context(device_memory=shared.view(torch.float32) if size % 4 == 0 else shared)
    x = torch.randn(8, 64, generator=torch.Generator().manual_seed(0))
    want = torch.relu(-torch.relu(-torch.relu(x)))
    for ctx in (first, second, first):
        arena_tactics.clear()
        assert torch.equal(ctx.execute({"x": x})["y"], want)
        assert all(_in(ptr, shared) for _, ptr in arena_tactics[:4])
    with pytest.raises(ConfigError, match=f"holds {size - 1} bytes; the engine's activations need {size}"):
        engine.create_execution_context(device_memory=torch.zeros(size - 1, dtype=torch.uint8))
    with pytest.raises(ConfigError, match="must be a torch tensor"):
        engine.create_execution_context(device_memory=np.zeros(size, dtype=np.uint8))
    with pytest.raises(ConfigError, match="contiguous"):
        engine.create_execution_context(device_memory=torch.zeros(2, size, dtype=torch.uint8).t())


TRANSPOSED = """<ir_version: 8, opset_import: ["" : 17]>
g (float[32,32] x) => (float[32,32] y) {
    a = Relu(x)
    t = Transpose<perm = [1, 0]>(a)
    c = Neg(t)
    y = Relu(c)
}"""


def _places(plan) -> dict[str, int]:
    return {name: offset for offset, _, names in plan.memory["arena"]["buffers"] for name in names}


def _counting_settle(monkeypatch) -> list[int]:
    copies = []
    real = arena_runtime.BoundArena.settle

    def settle(self, index, outputs):
        fixed = real(self, index, outputs)
        copies.extend([index] if fixed is not None else [])
        return fixed

    monkeypatch.setattr(arena_runtime.BoundArena, "settle", settle)
    return copies


def test_inputs_of_layers_that_may_return_views_live_as_long_as_their_outputs(arena_tactics, monkeypatch):
    """Transpose's reference returns a view of its input: 'a' stays alive while 't' is, so 'c'
    does not take its place, and no output needs copying."""
    plan = _build(TRANSPOSED)
    places = _places(plan)
    assert set(places) == {"a", "c"} and places["a"] != places["c"]
    copies = _counting_settle(monkeypatch)
    ctx = Runtime().load(plan).create_execution_context()
    x = torch.randn(32, 32, generator=torch.Generator().manual_seed(1))
    for _ in range(2):
        assert torch.equal(ctx.execute({"x": x})["y"], torch.relu(-torch.relu(x).t()))
    assert copies == []
    # The debug path keeps every layer's output: none of them is in the arena.
    outputs, layers = ctx.execute_debug({"x": x})
    assert torch.equal(layers["a"], torch.relu(x)) and torch.equal(layers["c"], -torch.relu(x).t())
    assert not any(_in(t.data_ptr(), ctx.device_memory) for t in layers.values())


def test_a_view_the_plan_did_not_expect_is_copied_out_of_the_arena(arena_tactics, monkeypatch):
    """A tactic that promises fresh outputs but returns a view: the plan gives 'a's place to 'c'
    while 't' (a view of 'a') is still to be read; the runtime copies 't' out, and the result is right."""
    def claims_fresh(ctx, inputs, attrs):
        arena_tactics.append(("Transpose", 0))
        return inputs[0].t()

    register_tactic(Tactic("claims_fresh", "Transpose", "cpu", claims_fresh, fresh_outputs=True))
    plan = _build(TRANSPOSED)
    assert plan.graph.nodes[1].meta["tactic"] == "claims_fresh"
    places = _places(plan)
    assert places["a"] == places["c"]  # the overlap the copy guards against
    copies = _counting_settle(monkeypatch)
    ctx = Runtime().load(plan).create_execution_context()
    x = torch.randn(32, 32, generator=torch.Generator().manual_seed(1))
    for _ in range(2):
        assert torch.equal(ctx.execute({"x": x})["y"], torch.relu(-torch.relu(x).t()))
    assert copies == [1, 1]


def test_a_value_that_may_reach_an_output_stays_out_of_the_arena(arena_tactics, monkeypatch):
    # A no-op Cast returns its input in torch: 'a' would be handed to the caller, who keeps it.
    plan = _build("""<ir_version: 8, opset_import: ["" : 17]>
    g (float[16] x) => (float[16] y) {
        a = Relu(x)
        y = Cast<to = 1>(a)
    }""")
    assert _places(plan) == {} and plan.memory["arena_plan"]["elsewhere"] == 1
    copies = _counting_settle(monkeypatch)
    ctx = Runtime().load(plan).create_execution_context()
    first = ctx.execute({"x": torch.arange(16.0)})["y"]
    second = ctx.execute({"x": torch.arange(16.0) + 100})["y"]
    assert torch.equal(first, torch.arange(16.0)) and torch.equal(second, torch.arange(16.0) + 100)
    assert copies == []


def test_engine_without_arena_tactics_has_an_empty_arena():
    plan = _build(CHAIN, profiles=PROFILE)
    assert plan.memory["device_memory_size"] == 0 and plan.memory["arena"]["buffers"] == []
    assert plan.memory["activation_bytes_at_max"] == 2 * 8 * 64 * 4
    ctx = Runtime().load(plan).create_execution_context()
    assert ctx.device_memory is None
    x = torch.randn(2, 64)
    assert torch.equal(ctx.execute({"x": x})["y"], torch.relu(-torch.relu(-torch.relu(x))))


@pytest.mark.parametrize("layout, problem", [
    ({"size": 512, "buffers": [[100, 64, ["a"]]]}, "a buffer at 100 of 64 bytes"),
    ({"size": 512, "buffers": [[256, 512, ["a"]]]}, "a buffer at 256 of 512 bytes in 512"),
    ({"size": -1, "buffers": []}, "size -1"),
    ({"buffers": []}, "'size'"),
])
def test_malformed_arena_layout_is_refused(arena_tactics, layout, problem):
    plan = _build(CHAIN, profiles=PROFILE)
    plan.memory["arena"] = layout
    with pytest.raises(EngineFormatError, match="malformed activation arena layout: " + problem):
        Runtime().load(plan)


def test_plans_without_arena_still_run(arena_tactics):
    plan = _build(CHAIN, profiles=PROFILE)
    del plan.memory["arena"]
    engine = Runtime().load(plan)
    ctx = engine.create_execution_context()
    assert ctx.device_memory is None
    x = torch.randn(8, 64)
    assert torch.equal(ctx.execute({"x": x})["y"], torch.relu(-torch.relu(-torch.relu(x))))
    with pytest.raises(ConfigError, match="no activation arena"):
        engine.create_execution_context(device_memory=torch.zeros(64, dtype=torch.uint8))
