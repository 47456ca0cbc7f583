"""What every step's `main(argv)` shares: argument types and one-line error reporting.

A step's argv is rendered from its component's `command:` — by Azure ML in a job, by the local
backend here — so its option names are the component's input and output names.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from slmforge.errors import InvalidInput, report


def parse_bool(text: str) -> bool:
    """Azure ML renders booleans as True/False; accept the usual spellings."""
    value = text.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


class StepArgumentParser(argparse.ArgumentParser):
    """Argument errors are invalid input: one line and exit 2, via InvalidInput."""

    def error(self, message: str):  # noqa: D401 - argparse API
        raise InvalidInput(f"{self.prog}: {message}")


def run_main(step: str, body: Callable[[], None]) -> int:
    """Run a step body; report a failure as one line naming the step, and return the exit code."""
    try:
        body()
    except Exception as e:  # noqa: BLE001 - errors.report translates or names it on one line
        return report(e, prefix=f"slmforge {step}")
    return 0
