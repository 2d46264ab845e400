#!/usr/bin/env python3
"""Each CUDA tactic against the reference tactic on the layers that matter, one table.

Layers: ResNet-50's convolutions (with their fused bias + ReLU, residual where the network
has one) at batch 1 and 128, and BERT-base's GEMMs, attention, LayerNorm, softmax and an
elementwise chain at batch 1 and 64, sequence 128; FP16 unless a row says otherwise.

Each row: one layer, built as an IR node, run through `find_tactic(...).run` exactly as the
runtime calls it, on device-resident random inputs. Time per call = CUDA events around a
loop of back-to-back calls (after warm-up, which also compiles Triton kernels), median of
5 repeats: it includes each tactic's Python launch overhead, as an engine without CUDA
graphs pays it. "nhwc(nchw in)" feeds the NHWC tactic an NCHW input, so it pays the
conversion the auto-tuner would see after an NCHW producer; "nhwc" feeds it channels_last,
as after an NHWC producer. Before timing, each tactic's output is checked against the
reference at the precision's tolerance (a mismatch is printed in the row).

    PYTHONPATH=. python3 bench/tactic_check.py [--quick]

A benchmark, not a test; it needs a CUDA GPU.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from typing import Any, Callable, Optional

import torch

from tensorkiln.ir import DType, Node, TensorType, Value
from tensorkiln.ops import RunContext, get_op
from tensorkiln.ops.infer import infer_node
from tensorkiln.tactics import candidates, find_tactic
from tensorkiln.testing.tolerances import tolerance_for

F16 = DType.FLOAT16


def make_node(op_type: str, specs: list[tuple], attrs: dict, domain: str = "", opset: int = 17) -> Node:
    op = get_op(op_type, domain)
    values = [Value(f"in{i}", TensorType(dt, tuple(shape))) for i, (shape, dt) in enumerate(specs)]
    node = Node(op_type, values, [Value("out")], op.normalize(dict(attrs), opset), name=op_type, domain=domain,
                opset=opset)
    infer_node(node)
    return node


def timed(fn: Callable[[], Any], iters: int) -> float:
    """Median over 5 repeats of the mean time per call in microseconds (CUDA events)."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    samples = []
    for _ in range(5):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) * 1000.0 / iters)
    return statistics.median(samples)


def iterations_for(fn: Callable[[], Any], budget_s: float) -> int:
    torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    once = max(time.perf_counter() - t, 1e-6)
    return int(min(200, max(3, budget_s / 5 / once)))


def mismatch(actual: torch.Tensor, expected: torch.Tensor, precision: str) -> Optional[str]:
    tol = tolerance_for(precision)
    a, e = actual.float(), expected.float()
    if a.shape != e.shape:
        return f"shape {tuple(a.shape)} != {tuple(e.shape)}"
    bad = (a - e).abs() > tol.atol + tol.rtol * e.abs()
    if bool(bad.any()):
        return f"{int(bad.sum())} elements off (max abs err {float((a - e).abs().max()):.3g})"
    return None


class Table:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str]] = []

    def add(self, layer: str, name: str, us: str, note: str) -> None:
        self.rows.append((layer, name, us, note))
        print(f"{layer:<44} {name:<18} {us:>10}  {note}", flush=True)


def check_layer(table: Table, label: str, node: Node, inputs: list[torch.Tensor], budget_s: float,
                variants: Optional[dict[str, list[torch.Tensor]]] = None, precision: str = "fp16") -> None:
    ctx = RunContext(torch.device("cuda"), lambda g, xs: [])
    ref = find_tactic("cuda", node.op_type, node.domain, "reference")

    def first(out: Any) -> torch.Tensor:
        return out if isinstance(out, torch.Tensor) else out[0]

    expected = first(ref.run(ctx, inputs, node.attrs))
    runs: list[tuple[str, Callable[[], Any]]] = [("reference", lambda: ref.run(ctx, inputs, node.attrs))]
    for tactic, reason in candidates(node, "cuda"):
        if tactic.name == "reference":
            continue
        if reason is not None:
            table.add(label, tactic.name, "-", f"n/a: {reason}")
            continue
        for suffix, ins in ({"": inputs} | (variants or {}).get(tactic.name, {})).items():
            name = tactic.name + suffix
            try:
                out = first(tactic.run(ctx, ins, node.attrs))
                bad = mismatch(out, expected, precision)
                runs.append((name, (lambda t=tactic, i=ins: t.run(ctx, i, node.attrs))))
                if bad:
                    table.add(label, name, "", f"MISMATCH vs reference: {bad}")
            except Exception as exc:  # noqa: BLE001 - a failing tactic is a row of the table
                table.add(label, name, "-", f"FAILED: {type(exc).__name__}: {str(exc)[:120]}")
    iters = iterations_for(runs[0][1], budget_s)
    base = None
    for name, fn in runs:
        us = timed(fn, iters)
        base = us if base is None else base
        table.add(label, name, f"{us:.1f} us", "" if name == "reference" else f"x{base / us:.2f} vs reference")


def conv_rows(table: Table, batch: int, budget: float) -> None:
    # (name, cin, cout, k, stride, spatial in, residual)
    shapes = [("conv1 7x7/2 3->64", 3, 64, 7, 2, 224, False), ("res2 1x1 64->256", 64, 256, 1, 1, 56, True),
              ("res2 3x3 64->64", 64, 64, 3, 1, 56, False), ("res3 3x3 128->128", 128, 128, 3, 1, 28, False),
              ("res4 3x3 256->256", 256, 256, 3, 1, 14, False), ("res4 1x1 1024->256", 1024, 256, 1, 1, 14, False),
              ("res5 3x3 512->512", 512, 512, 3, 1, 7, False), ("res5 1x1 512->2048", 512, 2048, 1, 1, 7, True)]
    for name, cin, cout, k, s, hw, residual in shapes:
        out_hw = (hw + 2 * (k // 2) - k) // s + 1
        specs = [((batch, cin, hw, hw), F16), ((cout, cin, k, k), F16), ((cout,), F16)]
        if residual:
            specs.append(((batch, cout, out_hw, out_hw), F16))
        node = make_node("FusedConv", specs, {"pads": [k // 2] * 4, "strides": [s, s], "activation": "Relu"},
                         domain="tensorkiln", opset=1)
        x = torch.randn(batch, cin, hw, hw, device="cuda", dtype=torch.float16)
        w = torch.randn(cout, cin, k, k, device="cuda", dtype=torch.float16) / math.sqrt(cin * k * k)
        b = torch.randn(cout, device="cuda", dtype=torch.float16) * 0.1
        ins = [x, w, b] + ([torch.randn(batch, cout, out_hw, out_hw, device="cuda", dtype=torch.float16)]
                           if residual else [])
        x_cl = x.contiguous(memory_format=torch.channels_last)
        rest = ins[3:]
        rest_cl = [r.contiguous(memory_format=torch.channels_last) for r in rest]
        # The NHWC tactic fed what an NHWC producer gives (input and residual channels_last) and,
        # under its plain name, what an NCHW producer gives.
        variants = {"cudnn_nhwc": {"(nhwc in)": [x_cl, w, b] + rest_cl}}
        check_layer(table, f"b{batch} {name}", node, ins, budget, variants)


def bert_rows(table: Table, batch: int, budget: float) -> None:
    seq, hidden, heads, ffn = 128, 768, 12, 3072
    tokens = batch * seq

    def rand(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return torch.randn(*shape, device="cuda", dtype=torch.float16) * scale

    x = rand(batch, seq, hidden)
    for label, n, k, act, residual in (("QKV 768->2304", 3 * hidden, hidden, "", False),
                                       ("attn out 768->768 +res", hidden, hidden, "", True),
                                       ("FFN1 768->3072 +gelu(erf)", ffn, hidden, "Gelu", False),
                                       ("FFN1 768->3072 +gelu(tanh)", ffn, hidden, "GeluTanh", False),
                                       ("FFN2 3072->768 +res", hidden, ffn, "", True)):
        a = x if k == hidden else rand(batch, seq, ffn)
        specs = [((batch, seq, k), F16), ((k, n), F16), ((n,), F16)]
        ins = [a, rand(k, n, scale=1 / math.sqrt(k)), rand(n, scale=0.1)]
        if residual:
            specs.append(((batch, seq, n), F16))
            ins.append(rand(batch, seq, n))
        node = make_node("FusedMatMul", specs, {"activation": act}, domain="tensorkiln", opset=1)
        check_layer(table, f"b{batch} {label}", node, ins, budget)
    q = rand(batch, heads, seq, 64)
    k_ = rand(batch, heads, seq, 64)
    v = rand(batch, heads, seq, 64)
    mask = torch.where(torch.rand(batch, 1, 1, seq, device="cuda") > 0.1, 0.0, -10000.0).half()
    for label, specs, ins in (("attention (no mask)", [((batch, heads, seq, 64), F16)] * 3, [q, k_, v]),
                              ("attention + mask [B,1,1,S]", [((batch, heads, seq, 64), F16)] * 3
                               + [((batch, 1, 1, seq), F16)], [q, k_, v, mask])):
        node = make_node("ScaledDotProductAttention", specs, {"scale": 0.125}, domain="tensorkiln", opset=1)
        check_layer(table, f"b{batch} {label}", node, ins, budget)
    ln = make_node("LayerNormalization", [((batch, seq, hidden), F16), ((hidden,), F16), ((hidden,), F16)], {})
    check_layer(table, f"b{batch} LayerNorm 768", ln, [x + 3.0, rand(hidden), rand(hidden)], budget)
    scores = rand(batch, heads, seq, seq, scale=3.0)
    sm = make_node("Softmax", [((batch, heads, seq, seq), F16)], {"axis": -1}, opset=13)
    check_layer(table, f"b{batch} Softmax 128", sm, [scores], budget)
    program = [{"op": "Add", "domain": "", "opset": 17, "attrs": {}, "args": [{"input": 0}, {"input": 1}]},
               {"op": "Mul", "domain": "", "opset": 17, "attrs": {},
                "args": [{"prev": 1}, {"const": 0.5, "dtype": "float16", "shape": []}]},
               {"op": "Gelu", "domain": "", "opset": 20, "attrs": {"approximate": "none"}, "args": [{"prev": 1}]},
               {"op": "Add", "domain": "", "opset": 17, "attrs": {}, "args": [{"prev": 1}, {"input": 2}]}]
    chain = make_node("ElementwiseChain", [((batch, seq, ffn), F16), ((ffn,), F16), ((batch, seq, ffn), F16)],
                      {"program": program}, domain="tensorkiln", opset=1)
    check_layer(table, f"b{batch} chain Add,Mul,Gelu,Add [B,S,3072]", chain,
                [rand(batch, seq, ffn), rand(ffn), rand(batch, seq, ffn)], budget)


def nhwc_chain_row(table: Table, batch: int, budget: float) -> None:
    program = [{"op": "Add", "domain": "", "opset": 17, "attrs": {}, "args": [{"input": 0}, {"input": 1}]},
               {"op": "Relu", "domain": "", "opset": 17, "attrs": {}, "args": [{"prev": 1}]},
               {"op": "Add", "domain": "", "opset": 17, "attrs": {}, "args": [{"prev": 1}, {"input": 2}]}]
    shape = (batch, 256, 56, 56)
    node = make_node("ElementwiseChain", [(shape, F16), ((1, 256, 1, 1), F16), (shape, F16)], {"program": program},
                     domain="tensorkiln", opset=1)
    cl = torch.channels_last
    ins = [torch.randn(shape, device="cuda", dtype=torch.float16).contiguous(memory_format=cl),
           torch.randn(1, 256, 1, 1, device="cuda", dtype=torch.float16),
           torch.randn(shape, device="cuda", dtype=torch.float16).contiguous(memory_format=cl)]
    check_layer(table, f"b{batch} chain NHWC Add(ch),Relu,Add", node, ins, budget)


def sdpa_kernel_overhead(table: Table) -> None:
    """What selecting a backend with torch.nn.attention.sdpa_kernel costs per call (why the
    attention tactics call the aten operators directly)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    q = torch.randn(1, 12, 128, 64, device="cuda", dtype=torch.float16)
    plain = timed(lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q), 200)

    def with_context() -> torch.Tensor:
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            return torch.nn.functional.scaled_dot_product_attention(q, q, q)
    ctx_us = timed(with_context, 200)
    direct = timed(lambda: torch.ops.aten._scaled_dot_product_flash_attention(q, q, q, 0.0, False, False,
                                                                              scale=0.125)[0], 200)
    table.add("b1 attention: backend selection", "F.sdpa", f"{plain:.1f} us", "")
    table.add("b1 attention: backend selection", "sdpa_kernel+F.sdpa", f"{ctx_us:.1f} us", "")
    table.add("b1 attention: backend selection", "aten flash op", f"{direct:.1f} us", "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter timing loops")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("tactic_check needs a CUDA GPU", file=sys.stderr)
        return 2
    budget = 0.05 if args.quick else 0.2
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}  "
          f"cudnn.allow_tf32={torch.backends.cudnn.allow_tf32} matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32}")
    try:
        import triton
        print(f"triton {triton.__version__}")
    except ImportError:
        print("triton not installed")
    print(f"{'layer':<44} {'tactic':<18} {'time/call':>10}  note")
    table = Table()
    started = time.perf_counter()
    sections: list[tuple[str, Callable[[], None]]] = [
        ("resnet b1", lambda: conv_rows(table, 1, budget)),
        ("bert b1", lambda: bert_rows(table, 1, budget)),
        ("resnet b128", lambda: conv_rows(table, 128, budget)),
        ("bert b64", lambda: bert_rows(table, 64, budget)),
        ("nhwc chain", lambda: nhwc_chain_row(table, 32, budget)),
        ("sdpa_kernel", lambda: sdpa_kernel_overhead(table)),
    ]
    for name, section in sections:
        try:
            section()
        except Exception as exc:  # noqa: BLE001 - report and go on with the next section
            print(f"section {name} failed: {type(exc).__name__}: {exc}", flush=True)
    print(f"total {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
