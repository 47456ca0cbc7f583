"""The two kinds of failure the CLI knows, their exit codes, and how OS and library errors become them."""

from __future__ import annotations

import errno

EXIT_OK = 0
EXIT_STEP_FAILED = 1
EXIT_INVALID_INPUT = 2
TRACEBACK_ENV = "SLMFORGE_TRACEBACK"  # set: a bug shows its traceback instead of one line


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


# errno values that say the user's path is wrong (exit 2); other OS errors (a full disk, an I/O
# error) are the environment failing under a valid request (exit 1).
_USER_PATH_ERRNOS = {errno.ENOENT, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR, errno.EEXIST,
                     errno.ENAMETOOLONG, errno.EROFS, errno.ELOOP, errno.ENOTEMPTY}
_FULL_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


def as_user_error(error: BaseException) -> SlmforgeError | None:
    """A library or OS exception as one line naming its path or service, or None when it is a bug.

    The one translation behind every error boundary (the CLI's and each step's `main`)."""
    if isinstance(error, SlmforgeError):
        return error
    if isinstance(error, OSError) and error.filename is not None:
        where = str(error.filename)
        if error.filename2 is not None:  # a copy or rename: a full disk is the destination's
            where = str(error.filename2) if error.errno in _FULL_ERRNOS else f"{where} -> {error.filename2}"
        reason = (error.strerror or type(error).__name__).lower()
        kind = InvalidInput if error.errno in _USER_PATH_ERRNOS else StepFailed
        return kind(f"{where}: {reason}")
    if isinstance(error, OSError) and error.errno in _FULL_ERRNOS:
        return StepFailed(f"writing failed: {(error.strerror or str(error)).lower()}")
    if isinstance(error, UnicodeError):
        return InvalidInput(f"text that is not UTF-8 ({error})")
    if isinstance(error, ValueError) and "null byte" in str(error):
        return InvalidInput(f"a path holds a NUL byte ({error})")
    service = _service_of(error)
    if service is not None:
        first = next((ln.strip() for ln in str(error).splitlines() if ln.strip()), type(error).__name__)
        return StepFailed(f"{service} failed: {first[:300]}")
    return None


# Library error base classes -> the service they speak for; looked up only in modules already
# imported, so the translation never imports azure or mlflow itself.
_SERVICES = (("azure.core.exceptions", "AzureError", "the Azure ML service"),
             ("mlflow.exceptions", "MlflowException", "the MLflow model registry"),
             ("sqlalchemy.exc", "SQLAlchemyError", "the MLflow model registry's database"),
             ("sqlite3", "Error", "an SQLite database"))


def _service_of(error: BaseException) -> str | None:
    import sys

    for module, name, service in _SERVICES:
        base = getattr(sys.modules.get(module), name, None)
        if base is not None and isinstance(error, base):
            return service
    return None


def report(error: Exception, prefix: str = "slmforge") -> int:
    """Print an error as one line (InvalidInput: one line per problem) and return its exit code.

    A bug (an exception no translation knows) is one line too; SLMFORGE_TRACEBACK=1 shows where."""
    import os
    import sys

    known = as_user_error(error)
    if known is None:
        if os.environ.get(TRACEBACK_ENV):
            raise error
        known = SlmforgeError(f"internal error: {type(error).__name__}: {error} (set {TRACEBACK_ENV}=1 for the "
                              "traceback)")
    for line in known.problems if isinstance(known, InvalidInput) else [str(known)]:
        print(f"{prefix}: error: {line}", file=sys.stderr)
    return known.exit_code

