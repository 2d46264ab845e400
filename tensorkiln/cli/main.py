"""`kiln`: dispatch to one command module, and turn errors into one line and an exit code.

Exit codes: 0 success, 1 a user error (bad model, corrupt engine, missing file, invalid
shapes), 2 a usage error (unknown flag, malformed value), 130 interrupted. Tracebacks
appear only with --debug (or --verbose for `kiln exec`).
"""

from __future__ import annotations

import importlib
import shlex
import sys
import traceback
from types import ModuleType
from typing import Optional, Sequence, TextIO

from ..errors import TensorkilnError
from ..version import __version__
from .report import print_error
from .usage import USAGE_EXIT_CODE, HelpShown, KilnArgumentParser, UsageError

# command -> (module under tensorkiln.cli, one-line help). Modules are imported on use, so
# `kiln run` does not pay for the ONNX frontend or the conformance suite it never touches.
COMMANDS: dict[str, tuple[str, str]] = {
    "exec": ("exec_cmd", "trtexec's flags: build or load an engine and benchmark it"),
    "build": ("build", "build an engine plan from an ONNX model and save it"),
    "run": ("run", "run an engine plan once (or N times) and show its outputs"),
    "inspect": ("inspect", "show what is in an engine plan or an ONNX model"),
    "conformance": ("conformance", "run the ONNX node tests and report the pass rate"),
    "compare": ("compare", "compare tensorkiln's outputs (or every layer's) with onnxruntime's"),
    "debug": ("debug", "debugging tools: 'kiln debug precision' finds the layers that must stay FP32"),
}

EXEC_PROGRAM = "TensorKiln.kiln_exec"

USER_ERROR_EXIT_CODE = 1
INTERRUPTED_EXIT_CODE = 130


def make_parser() -> KilnArgumentParser:
    epilog = "commands:\n" + "\n".join(f"  {name:<12} {text}" for name, (_, text) in COMMANDS.items())
    epilog += "\n\nRun 'kiln COMMAND --help' for a command's flags."
    p = KilnArgumentParser(prog="kiln", description="tensorkiln: ONNX model -> optimized engine plan -> fast runtime.",
                           epilog=epilog, usage="kiln [--version] [--help] COMMAND [ARGS]")
    p.add_argument("--version", action="version", version=f"kiln (tensorkiln) {__version__}")
    p.add_argument("command", nargs="?", metavar="COMMAND", help="one of: " + ", ".join(COMMANDS))
    return p


def main(argv: Optional[Sequence[str]] = None, out: Optional[TextIO] = None, err: Optional[TextIO] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    out = out or sys.stdout
    err = err or sys.stderr
    if not argv or argv[0] not in COMMANDS:
        return _top_level(argv, out, err)
    name, rest = argv[0], argv[1:]
    is_exec = name == "exec"
    args = None
    try:
        module = _command_module(name)
        parser = module.make_parser()
        _redirect_help(parser, out)
        args = parser.parse_strict(rest)
        if is_exec:
            out.write(f"&&&& RUNNING {EXEC_PROGRAM} [tensorkiln v{__version__}] # {_exec_command_line(rest)}\n")
        code = module.run(args, out, err)
    except HelpShown:
        return 0
    except UsageError as exc:
        code = _fail(err, f"kiln {name}", exc, USAGE_EXIT_CODE, show_traceback=False)
    except TensorkilnError as exc:
        code = _fail(err, "kiln", exc, USER_ERROR_EXIT_CODE, _wants_traceback(args))
    except FileNotFoundError as exc:
        code = _fail(err, "kiln", f"file '{exc.filename}' does not exist", USER_ERROR_EXIT_CODE,
                     _wants_traceback(args), cause=exc)
    except OSError as exc:
        where = f"'{exc.filename}': " if getattr(exc, "filename", None) else ""
        code = _fail(err, "kiln", f"{where}{exc.strerror or exc}", USER_ERROR_EXIT_CODE, _wants_traceback(args),
                     cause=exc)
    except KeyboardInterrupt:
        err.write("kiln: interrupted\n")
        code = INTERRUPTED_EXIT_CODE
    except Exception as exc:  # noqa: BLE001 - a bug still gets one line, and the traceback on request
        code = _fail(err, "kiln", f"internal error: {type(exc).__name__}: {exc} (a bug in tensorkiln; rerun "
                     f"with --debug{' or --verbose' if is_exec else ''} for the traceback)",
                     USER_ERROR_EXIT_CODE, _wants_traceback(args), cause=exc)
    if is_exec:
        status = "PASSED" if code == 0 else "FAILED"
        out.write(f"&&&& {status} {EXEC_PROGRAM} [tensorkiln v{__version__}] # {_exec_command_line(rest)}\n")
        out.flush()
    return code


def _command_module(name: str) -> ModuleType:
    return importlib.import_module(f"{__package__}.{COMMANDS[name][0]}")


def _exec_command_line(argv: list[str]) -> str:
    """The command as trtexec echoes it in its "&&&& RUNNING/PASSED/FAILED" lines."""
    return " ".join(["kiln", "exec", *(shlex.quote(a) for a in argv)])


def _top_level(argv: list[str], out: TextIO, err: TextIO) -> int:
    parser = make_parser()
    _redirect_help(parser, out)
    try:
        args = parser.parse_strict(argv)
    except HelpShown:
        return 0
    except UsageError as exc:
        return _fail(err, "kiln", exc, USAGE_EXIT_CODE, show_traceback=False)
    if args.command is None:
        parser.print_help(out)
        return USAGE_EXIT_CODE
    return _fail(err, "kiln", f"unknown command '{args.command}' (commands: {', '.join(COMMANDS)})",
                 USAGE_EXIT_CODE, show_traceback=False)


def _redirect_help(parser: KilnArgumentParser, out: TextIO) -> None:
    # argparse prints --help/--version to sys.stdout; send it where the caller asked.
    parser.print_help = lambda file=None: KilnArgumentParser.print_help(parser, out)  # type: ignore[method-assign]
    parser._print_message = lambda message, file=None: out.write(message) if message else None  # type: ignore


def _wants_traceback(args: object) -> bool:
    return bool(getattr(args, "debug", False) or getattr(args, "verbose", False))


def _fail(err: TextIO, prog: str, error: object, code: int, show_traceback: bool,
          cause: Optional[BaseException] = None) -> int:
    if show_traceback:
        exc = cause if cause is not None else error
        if isinstance(exc, BaseException):
            traceback.print_exception(type(exc), exc, exc.__traceback__, file=err)
    print_error(err, prog, str(error))
    err.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["COMMANDS", "main", "make_parser"]
