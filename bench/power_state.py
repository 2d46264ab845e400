"""How much a workload's latency depends on the GPU's power state: tensorkiln and torch.compile timed from an idle
GPU (as cuda_bench.py times every call), right after a low-power sleep kernel, and right after a power-hungry GEMM.

A GPU held at its power cap lowers its clocks; after a stretch of low power it has headroom and runs the next
inference faster. The same engine then gives different latencies depending on what ran before it, and so does the
peer: this script shows by how much, both systems in one process, the conditions taking turns round by round.

    python3 bench/power_state.py                                   # BERT-base s128 b64 fp16
    python3 bench/power_state.py --workload resnet50-b128 --rounds 3 --out /tmp/power
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import models as bench_models  # noqa: E402
import peers  # noqa: E402
from models import WORKLOADS  # noqa: E402

from tensorkiln.builder import Builder, BuilderConfig  # noqa: E402
from tensorkiln.builder.config import OptimizationProfile  # noqa: E402
from tensorkiln.frontends.onnx import parse_onnx  # noqa: E402
from tensorkiln.runtime import Runtime  # noqa: E402

Call = Callable[[], object]


def sleep_cycles_for(milliseconds: float) -> int:
    """torch.cuda._sleep's cycle count that spins about `milliseconds` on this GPU (measured, not assumed)."""
    probe = 1_000_000
    torch.cuda._sleep(probe)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    torch.cuda._sleep(probe)
    end.record()
    end.synchronize()
    return max(1, int(probe * milliseconds / start.elapsed_time(end)))


def timed_after(before: Call, call: Call) -> float:
    """Microseconds of `call` on the GPU, started on an idle device after `before` was queued."""
    torch.cuda.synchronize()
    start, middle, end = (torch.cuda.Event(enable_timing=True) for _ in range(3))
    start.record()
    before()
    middle.record()
    call()
    end.record()
    end.synchronize()
    return middle.elapsed_time(end) * 1e3


def conditions(device: torch.device, sleep_ms: float, gemm_size: int) -> dict[str, Call]:
    long_sleep, short_sleep = sleep_cycles_for(sleep_ms), sleep_cycles_for(0.05)
    square = torch.randn(gemm_size, gemm_size, device=device, dtype=torch.float16)
    gemm_ms = statistics.median(timed_after(lambda: None, lambda: torch.mm(square, square)) for _ in range(5)) / 1e3
    return {"from idle": lambda: None,
            f"after a {sleep_ms:g} ms sleep kernel": lambda: torch.cuda._sleep(long_sleep),
            "after a 0.05 ms sleep kernel": lambda: torch.cuda._sleep(short_sleep),
            f"after a {gemm_ms:.1f} ms fp16 GEMM": lambda: torch.mm(square, square)}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workload", default="bert_base-s128-b64", choices=[w.name for w in WORKLOADS])
    p.add_argument("--rounds", type=int, default=2, help="rounds over every condition and system")
    p.add_argument("--calls", type=int, default=40, help="timed calls per condition per round (median taken)")
    p.add_argument("--sleep-ms", type=float, default=2.0, help="the low-power kernel's length")
    p.add_argument("--gemm-size", type=int, default=8192, help="the square fp16 GEMM's size (the high-power work)")
    p.add_argument("--no-compile", action="store_true", help="time tensorkiln alone")
    p.add_argument("--out", type=Path, default=None, help="write power_state.json and power_state.md here")
    args = p.parse_args(argv)
    for flag, value in (("--rounds", args.rounds), ("--calls", args.calls), ("--sleep-ms", args.sleep_ms),
                        ("--gemm-size", args.gemm_size)):
        if value <= 0:
            p.error(f"{flag} must be > 0, got {value}")
    if not torch.cuda.is_available():
        print("power_state: no CUDA GPU here", file=sys.stderr)
        return 2
    device = torch.device("cuda", torch.cuda.current_device())
    workload = next(w for w in WORKLOADS if w.name == args.workload)
    bundle = bench_models.build_bundle(workload.model, 0, device)
    inputs = bundle.make_inputs(workload.batch, workload.seq, 1, device)

    profile = OptimizationProfile.fixed({k: tuple(v.shape) for k, v in inputs.items()})
    plan = Builder(BuilderConfig(device=str(device), fp16=True, profiles=(profile,))).build(
        parse_onnx(bundle.onnx_model))
    engine = Runtime(str(device)).load(plan)
    context = engine.create_execution_context()
    dtypes = {spec.name: spec.dtype.torch for spec in engine.inputs}
    feeds = {k: v.to(dtypes.get(k, v.dtype)) for k, v in inputs.items()}
    systems: dict[str, Call] = {"tensorkiln": lambda: context.execute(feeds)}
    if not args.no_compile:
        peer_inputs = bench_models.cast_inputs(inputs, torch.float16)
        peer = peers.compiled_peer(bench_models.half_copy(bundle.module), bundle.input_names, "reduce-overhead",
                                   peer_inputs)
        systems[peer.name] = lambda: peer.run(peer_inputs)

    before = conditions(device, args.sleep_ms, args.gemm_size)
    for call in systems.values():
        for _ in range(10):
            timed_after(lambda: None, call)
    medians: dict[str, dict[str, list[float]]] = {s: {c: [] for c in before} for s in systems}
    for _ in range(args.rounds):
        for system, call in systems.items():
            for condition, work in before.items():
                medians[system][condition].append(
                    statistics.median(timed_after(work, call) for _ in range(args.calls)))

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{workload.name} fp16 on {torch.cuda.get_device_name(device)}: median us per call, "
                        f"each round's median")
    table.add_column("system")
    for condition in before:
        table.add_column(condition, justify="right")
    lines = ["| system | " + " | ".join(before) + " |", "|---" * (len(before) + 1) + "|"]
    for system, by_condition in medians.items():
        cells = [", ".join(f"{m:.0f}" for m in values) for values in by_condition.values()]
        table.add_row(system, *cells)
        lines.append(f"| {system} | " + " | ".join(cells) + " |")
    Console().print(table)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        meta = {"date": stamp, "device": torch.cuda.get_device_name(device), "workload": workload.name,
                "torch": torch.__version__, "argv": sys.argv[1:]}
        (args.out / "power_state.json").write_text(json.dumps({"meta": meta, "median_us": medians}, indent=1))
        (args.out / "power_state.md").write_text(f"{workload.name} fp16, {meta['device']}, {stamp}\n\n"
                                                 + "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
