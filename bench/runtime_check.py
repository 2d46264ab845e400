"""GPU check of the CUDA runtime: eager vs CUDA-graph latency, host<->device staging, and
the memory plan against torch's caching allocator. Run on the GPU machine:

    PYTHONPATH=. python3 bench/runtime_check.py [--iters 200]

Latency is host wall time of one `execute` plus a synchronize (inputs already on the GPU),
median and p90 over `--iters` calls after a warm-up; throughput is `--iters` calls
enqueued back to back, then one synchronize. Eager and graph outputs are compared bitwise.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable

import numpy as np
import torch

from tensorkiln import Builder, BuilderConfig, OptimizationProfile, Runtime
from tensorkiln.frontends.onnx import parse_onnx
from tensorkiln.planner import memory_summary, plan_arena
from tensorkiln.testing import zoo


def _latency(fn: Callable[[], Any], iters: int) -> tuple[float, float]:
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    return statistics.median(times), times[int(0.9 * (len(times) - 1))]


def _throughput(fn: Callable[[], Any], iters: int) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1e3 / iters


def bench_model(label: str, model, config: BuilderConfig, feeds: dict[str, np.ndarray], iters: int) -> None:
    plan = Builder(config).build(parse_onnx(model))
    engine = Runtime("cuda").load(plan)
    dev = {k: torch.from_numpy(v).cuda() for k, v in feeds.items()}
    eager = engine.create_execution_context(cuda_graph=False)
    graph = engine.create_execution_context()
    start = time.perf_counter()
    graph.execute(dev)
    torch.cuda.synchronize()
    first_ms = (time.perf_counter() - start) * 1e3
    start = time.perf_counter()
    graph.execute(dev)
    torch.cuda.synchronize()
    capture_ms = (time.perf_counter() - start) * 1e3
    for _ in range(10):
        eager.execute(dev)
        graph.execute(dev)
    a, b = eager.execute(dev), graph.execute(dev)
    same = all(torch.equal(a[k], b[k]) for k in a)
    diff = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    e_med, e_p90 = _latency(lambda: eager.execute(dev), iters)
    g_med, g_p90 = _latency(lambda: graph.execute(dev), iters)
    e_thr = _throughput(lambda: eager.execute(dev), iters)
    g_thr = _throughput(lambda: graph.execute(dev), iters)
    out = {k: torch.empty_like(v) for k, v in b.items()}
    p_med, _ = _latency(lambda: graph.execute(dev, outputs=out), iters)
    n_med, _ = _latency(lambda: graph.execute(feeds), iters)  # numpy in, numpy out
    print(f"{label}: {engine.num_layers} layers; graph warnings {graph.warnings or 'none'}")
    print(f"  first call {first_ms:.2f} ms, capture call {capture_ms:.2f} ms; eager==graph bitwise: {same} "
          f"(max |diff| {diff:.3g})")
    print(f"  latency ms median/p90: eager {e_med:.3f}/{e_p90:.3f}  graph {g_med:.3f}/{g_p90:.3f}  "
          f"speedup {e_med / g_med:.2f}x")
    print(f"  back-to-back ms/inference: eager {e_thr:.3f}  graph {g_thr:.3f}  speedup {e_thr / g_thr:.2f}x")
    print(f"  graph with preallocated outputs {p_med:.3f} ms; graph numpy in/out {n_med:.3f} ms")


def bench_staging() -> None:
    print("host->device copy of a numpy array, ms median of 50 (pageable .to vs pinned staging):")
    for nbytes in (4 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20):
        a = np.random.default_rng(0).standard_normal(nbytes // 4).astype(np.float32)
        pageable = _latency(lambda: torch.from_numpy(a).to("cuda"), 50)[0]
        pinned = _latency(lambda: torch.from_numpy(a).pin_memory().to("cuda", non_blocking=True), 50)[0]
        print(f"  {nbytes >> 10:6d} KiB: pageable {pageable:.4f}  pinned {pinned:.4f}")


def check_memory(model, config: BuilderConfig, feeds: dict[str, np.ndarray], dims: dict[str, int]) -> None:
    plan = Builder(config).build(parse_onnx(model))
    engine = Runtime("cuda").load(plan)
    ctx = engine.create_execution_context(cuda_graph=False)
    dev = {k: torch.from_numpy(v).cuda() for k, v in feeds.items()}
    _, record = ctx.execute_debug(dev)
    sizes = {k: v.numel() * v.element_size() for k, v in record.items() if isinstance(v, torch.Tensor)}
    del record
    from_types = plan_arena(plan.graph, dims)
    real = plan_arena(plan.graph, dims, nbytes_of=sizes)
    summary = memory_summary(plan.graph, dims, dims)
    out_bytes = sum(sizes[v.name] for v in plan.graph.outputs)
    for _ in range(3):
        ctx.execute(dev)
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    outs = ctx.execute(dev)
    torch.cuda.synchronize()
    measured = torch.cuda.max_memory_allocated() - base
    del outs
    print(f"memory plan, resnet50 b1 fp16: arena from types {from_types.size} B (unplanned "
          f"{len(from_types.unplanned)}), with run sizes {real.size} B, peak live {real.peak_live_bytes} B, "
          f"outputs {out_bytes} B; device_memory_size {summary['device_memory_size']}")
    print(f"  caching-allocator peak during one eager run: {measured} B = "
          f"{measured / (real.size + out_bytes):.3f}x (arena + outputs)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iters", type=int, default=200)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
    small = zoo.build("resnet50", small=True)
    bench_model("resnet50-small b1 fp32(tf32)", small, BuilderConfig(device="cuda"),
                zoo.example_inputs(small, batch=1), args.iters)
    bert = zoo.build("bert_encoder", small=True)
    bench_model("bert-small b1 s16 fp32(tf32)", bert, BuilderConfig(device="cuda"),
                zoo.example_inputs(bert, batch=1, seq=16), args.iters)
    full = zoo.build("resnet50")
    config = BuilderConfig(device="cuda", fp16=True,
                           profiles=(OptimizationProfile.fixed({"input": (1, 3, 224, 224)}),))
    feeds = zoo.example_inputs(full, batch=1)
    bench_model("resnet50 b1 fp16", full, config, feeds, args.iters)
    bench_staging()
    check_memory(full, config, feeds, {"N": 1})


if __name__ == "__main__":
    main()
