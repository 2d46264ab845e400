"""`kiln conformance`: run the ONNX node tests through tensorkiln and summarise the pass rate."""

from __future__ import annotations

import argparse
import re
from collections import defaultdict
from typing import Optional, TextIO

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..conformance.runner import CaseResult, node_tests, pass_rate, run_suite
from .device import resolve_device
from .report import make_console
from .usage import KilnArgumentParser, UsageError

DESCRIPTION = """\
Run the ONNX backend node tests shipped in the onnx wheel through tensorkiln and print
passed / failed / excluded (excluded cases grouped by their reason) and the pass rate.
Excluded cases are still run: one that passes counts as passed. Exit code 0 whatever
the pass rate; the report is the result.
"""


def make_parser() -> KilnArgumentParser:
    p = KilnArgumentParser(prog="kiln conformance", description=DESCRIPTION)
    p.add_argument("--filter", metavar="REGEX", help="only tests whose name matches (re.search)")
    p.add_argument("--failures", action="store_true", help="list every failing case with its reason")
    p.add_argument("--device", metavar="cpu|cuda", choices=("cpu", "cuda"), help="device to test (default: cpu)")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return p


def run(args: argparse.Namespace, out: TextIO, err: Optional[TextIO] = None) -> int:
    if args.filter:
        try:
            re.compile(args.filter)
        except re.error as exc:
            raise UsageError(f"--filter '{args.filter}' is not a valid regular expression: {exc}") \
                from None
    device = resolve_device(args.device)
    console = make_console(out)
    tests = node_tests(args.filter)
    if not tests:
        console.print(f"No ONNX node tests match --filter {escape(repr(args.filter))}.")
        console.print("Pass rate: 0.0% (0/0)")
        return 0
    # The bar goes to stderr when stdout is redirected, so the report in stdout stays clean text.
    progress_console = make_console(err) if err is not None and not _is_tty(out) else console
    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TextColumn("{task.fields[case]}"), console=progress_console,
                  transient=True) as progress:
        task = progress.add_task("ONNX node tests", total=len(tests), case="")
        started = [False]

        def on_case(name: str) -> None:
            # Called before each case runs: the previous one has finished.
            if started[0]:
                progress.advance(task)
            started[0] = True
            progress.update(task, case=name)

        results = run_suite(tests, device="CUDA" if device.startswith("cuda") else "CPU", progress=on_case)
        progress.advance(task)
    print_summary(console, results, args.failures)
    return 0


def _is_tty(stream: TextIO) -> bool:
    return hasattr(stream, "isatty") and stream.isatty()


def print_summary(console, results: list[CaseResult], show_failures: bool) -> None:
    passed = [r for r in results if r.status in ("pass", "excluded-pass")]
    failed = [r for r in results if r.status == "fail"]
    excluded = [r for r in results if r.status == "excluded"]
    if show_failures and failed:
        table = Table(title=f"Failures ({len(failed)})")
        table.add_column("test", overflow="fold")
        table.add_column("reason", overflow="fold")
        for r in failed:
            table.add_row(escape(r.name), escape(r.message))
        console.print(table)
    if excluded:
        by_reason: dict[str, list[str]] = defaultdict(list)
        for r in excluded:
            by_reason[r.message].append(r.name)
        table = Table(title=f"Excluded ({len(excluded)}), by reason")
        table.add_column("cases", justify="right")
        table.add_column("reason", overflow="fold")
        table.add_column("examples", overflow="fold")
        for reason, names in sorted(by_reason.items(), key=lambda kv: -len(kv[1])):
            table.add_row(str(len(names)), escape(reason), escape(", ".join(names[:3]) + (", ..." if len(names) > 3
                                                                                      else "")))
        console.print(table)
    newly = [r.name for r in results if r.status == "excluded-pass"]
    if newly:
        console.print(f"{len(newly)} excluded case(s) now pass; remove their exclusions: "
                      f"{escape(', '.join(newly[:10]))}{' ...' if len(newly) > 10 else ''}")
    console.print(f"Passed: {len(passed)}")
    console.print(f"Failed: {len(failed)}" + ("" if show_failures or not failed else " (list them with --failures)"))
    console.print(f"Excluded: {len(excluded)}")
    console.print(f"Pass rate: {100.0 * pass_rate(results):.1f}% ({len(passed)}/{len(results)})")
