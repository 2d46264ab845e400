"""The auto-tuner on the GPU: what it picks among the CUDA tactics, how long tuning takes,
what a warm timing cache saves, and what the choices are worth end to end.

For each zoo model (full size): build on CUDA with a fresh timing cache file (tuning at the
fixed shapes), rebuild with the now warm cache, then time the tuned engine against the same
plan with every layer forced to the reference tactic (median of CUDA-synchronized runs)
and compare their outputs. Prints the tactic chosen per op type and the layers where the
choice mattered most (candidate times side by side).

    PYTHONPATH=. python3 bench/autotune_check.py [--models resnet50,bert_encoder] [--batch 8]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import torch

from tensorkiln import Builder, BuilderConfig, OptimizationProfile, Runtime
from tensorkiln.engine import EnginePlan
from tensorkiln.frontends.onnx import parse_onnx
from tensorkiln.testing import zoo


def _latency_ms(plan: EnginePlan, feeds: dict[str, np.ndarray], runs: int) -> tuple[float, dict]:
    context = Runtime("cuda").load(plan).create_execution_context()
    device_feeds = {k: torch.from_numpy(v).cuda() for k, v in feeds.items()}
    for _ in range(3):
        outputs = context.execute(device_feeds)
    torch.cuda.synchronize()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        outputs = context.execute(device_feeds)
        torch.cuda.synchronize()
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples), {k: v.float().cpu().numpy() for k, v in outputs.items()}


def _all_reference(plan: EnginePlan) -> EnginePlan:
    graph = copy.deepcopy(plan.graph)
    for node in graph.walk():
        node.meta["tactic"] = "reference"
    return dataclasses.replace(plan, graph=graph)


def check(name: str, batch: int, seq: int, runs: int, cache_dir: Path) -> None:
    model = zoo.build(name)
    feeds = zoo.example_inputs(model, batch=batch, seq=seq)
    graph = parse_onnx(model)
    cache = cache_dir / f"{name}.cache"
    config = BuilderConfig(device="cuda", profiles=(OptimizationProfile.fixed({k: v.shape for k, v in feeds.items()}),),
                           timing_cache_file=str(cache))
    started = time.perf_counter()
    plan = Builder(config).build(graph)
    cold = time.perf_counter() - started
    started = time.perf_counter()
    warm_plan = Builder(config).build(graph)
    warm = time.perf_counter() - started
    info, warm_info = plan.build_info["tactics"], warm_plan.build_info["tactics"]
    print(f"\n=== {name} (batch {batch}{f', seq {seq}' if name.startswith('bert') else ''}) on "
          f"{torch.cuda.get_device_name()} ===")
    print(f"layers {info['layers']}, with a choice {info['layers_with_choice']}; cold build {cold:.2f} s "
          f"(tuning {info['seconds']:.2f} s: {info['timed_layers']} layers timed, {info['cached_layers']} answered by "
          f"identical layers, {info['candidates_timed']} candidate timings); warm-cache build {warm:.2f} s "
          f"(tuning {warm_info['seconds']:.2f} s, {warm_info['timed_layers']} timed, "
          f"{warm_info['cached_layers']} from the cache); stopped: {info['stopped']}; skipped: {info['skipped']}")
    per_op: dict[str, Counter] = defaultdict(Counter)
    gains = []
    for node in plan.graph.nodes:
        times = node.meta.get("tactic_times_ms")
        if not times:
            continue
        per_op[node.op_type][node.meta["tactic"]] += 1
        ref = times.get("reference")
        if ref is not None:
            gains.append((ref - node.meta["tactic_time_ms"], node))
        for tactic, reason in node.meta.get("tactic_rejected", {}).items():
            print(f"  rejected on {node.name}: {tactic}: {reason[:160]}")
    for op, counts in sorted(per_op.items()):
        print(f"  {op:28s} " + ", ".join(f"{t} x{n}" for t, n in counts.most_common()))
    print("  layers where the choice mattered most (ms per candidate):")
    for gain, node in sorted(gains, key=lambda g: -g[0])[:8]:
        ranked = sorted(node.meta["tactic_times_ms"].items(), key=lambda kv: kv[1])
        listed = ", ".join(f"{t} {ms:.4f}" for t, ms in ranked)
        print(f"    {node.name[:48]:48s} {node.op_type:18s} {listed}")
    tuned_ms, tuned_out = _latency_ms(plan, feeds, runs)
    ref_ms, ref_out = _latency_ms(_all_reference(plan), feeds, runs)
    diff = max(float(np.max(np.abs(tuned_out[k] - ref_out[k]))) for k in ref_out)
    print(f"  end to end (median of {runs}): tuned {tuned_ms:.3f} ms, all-reference {ref_ms:.3f} ms "
          f"({ref_ms / tuned_ms:.2f}x); max |tuned - reference| = {diff:.3g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="resnet50,bert_encoder")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("autotune_check needs a CUDA GPU")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            check(name, args.batch, args.seq, args.runs, Path(tmp))


if __name__ == "__main__":
    main()
