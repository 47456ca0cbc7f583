"""What every step's `main(argv)` shares: argument types and one-line error reporting.

A step's argv is rendered from its component's `command:` — by Azure ML in a job, by the local
backend here — so its option names are the component's input and output names.
"""

from __future__ import annotations

import argparse
from typing import Callable

from slmforge.errors import EXIT_INVALID_INPUT, report


def parse_bool(text: str) -> bool:
    """Azure ML renders booleans as True/False; accept the usual spellings."""
    value = text.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


class StepArgumentParser(argparse.ArgumentParser):
    """Argument errors are invalid input: one line and exit 2 (not usage + error, never a traceback:
    `main` parses its argv before `run_main` guards the body)."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(EXIT_INVALID_INPUT, f"{self.prog}: error: {message}\n")


def run_main(step: str, body: Callable[[], None]) -> int:
    """Run a step body; report a failure as one line naming the step, and return the exit code."""
    try:
        body()
    except Exception as e:  # noqa: BLE001 - errors.report translates or names it on one line
        return report(e, prefix=f"slmforge {step}")
    return 0
