"""The two kinds of failure the CLI knows, and their exit codes."""

from __future__ import annotations

EXIT_OK = 0
EXIT_STEP_FAILED = 1
EXIT_INVALID_INPUT = 2


class SlmforgeError(Exception):
    """Base class: an error whose message is meant for the user, printed on one line."""

    exit_code = EXIT_STEP_FAILED


class InvalidInput(SlmforgeError):
    """Bad input from the user: a wrong key, a missing file, a broken data row. Exit 2."""

    exit_code = EXIT_INVALID_INPUT

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = problems or [message]


class StepFailed(SlmforgeError):
    """A step ran and failed (a check did not pass, a library raised). Exit 1."""

    exit_code = EXIT_STEP_FAILED
