"""What every step's `main(argv)` shares: argument types and one-line error reporting.

A step's argv is rendered from its component's `command:` — by Azure ML in a job, by the local
backend here — so its option names are the component's input and output names.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Callable

from slmforge.contract.params import optional, value_type
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
    """Argument errors are invalid input, raised into `run_main`'s boundary: one line, exit 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        raise InvalidInput(message)


def parser_for(params: type, step: str, description: str) -> StepArgumentParser:
    """The step's argparse, one `--name` per field of its Params. Allowed values and bounds are
    checked by `params.make` (one message for argv and for `run()` callers), not by argparse."""
    parser = StepArgumentParser(prog=f"python -m slmforge.steps.{step}", description=description)
    for f in dataclasses.fields(params):
        kind = value_type(params, f.name)
        text = f.metadata["help"]
        if f.metadata.get("choices"):
            text += f" (one of {', '.join(map(str, f.metadata['choices']))})"
        extra: dict[str, Any] = ({"required": True} if f.default is dataclasses.MISSING else
                                 {"default": None if optional(f) else f.default})
        parser.add_argument(f"--{f.name}", type=parse_bool if kind is bool else kind, help=text, **extra)
    return parser


def run_step(step: str, params: type, argv: list[str] | None, work: Callable[[dict[str, Any]], None],
             description: str) -> int:
    """Parse argv into Params values and run `work` on them, all inside the one error boundary."""
    return run_main(step, lambda: work(vars(parser_for(params, step, description).parse_args(argv))))


def run_main(step: str, body: Callable[[], None]) -> int:
    """Run a step body; report a failure as one line naming the step, and return the exit code."""
    from slmforge.contract.aml_tracking import use_job_tracking

    try:
        use_job_tracking()  # in an Azure ML job: its MLflow run history through plain MLflow
        body()
    except Exception as e:  # noqa: BLE001 - errors.report translates or names it on one line
        return report(e, prefix=f"slmforge {step}")
    return 0
