"""Argument parsing that reports problems as one-line errors instead of exiting.

argparse normally prints its usage block and calls `sys.exit(2)` from deep inside
`parse_args`; the CLI needs the problem as an exception so `main` can print one line,
print trtexec's "&&&& FAILED" line for `kiln exec`, and return the exit code itself.
"""

from __future__ import annotations

import argparse
from typing import NoReturn, Optional, Sequence

from ..errors import TensorkilnError

USAGE_EXIT_CODE = 2


class UsageError(TensorkilnError):
    """The command line itself is wrong (unknown flag, missing or malformed value)."""


class HelpShown(Exception):
    """--help or --version printed its text; the command is done with exit code 0."""


class KilnArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser that raises UsageError, never abbreviates flags, and names unknown flags."""

    def __init__(self, *args, **kwargs) -> None:
        # Abbreviations would let `--iter` silently mean `--iterations`; trtexec has none.
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")

    def exit(self, status: int = 0, message: Optional[str] = None) -> NoReturn:
        # Reached after --help / --version have printed their text.
        if status == 0:
            raise HelpShown()
        raise UsageError((message or "").strip())

    def parse_strict(self, argv: Sequence[str]) -> argparse.Namespace:
        """parse_args, but an unknown flag is named on its own instead of argparse's list."""
        args, unknown = self.parse_known_args(list(argv))
        if unknown:
            first = unknown[0]
            flag = first.split("=", 1)[0]
            if flag.startswith("-"):
                raise UsageError(f"unknown flag '{flag}' (see '{self.prog} --help')")
            raise UsageError(f"unexpected argument '{first}' (see '{self.prog} --help')")
        return args
