"""How the local runner runs one step's command: in this process with its output sent to the
step's log, or as a child that cannot outlive the run; and the one line that says why it failed.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import re
import signal
import subprocess
import sys
import traceback
from pathlib import Path

from slmforge.backends.local.cache import Held
from slmforge.contract import progress, render


def run_in_process(module: str, argv: list[str], log_file) -> int:
    """Call `module.main(argv)` with this process's stdout/stderr (fd level) sent to the log."""
    with redirect_fds(log_file), restore_logging():
        try:
            rc = importlib.import_module(module).main(argv)
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException as e:  # noqa: BLE001 - the log gets the traceback, the run one line
            if isinstance(e, KeyboardInterrupt):
                raise
            traceback.print_exc()
            rc = 1
    return int(rc or 0)


def run_subprocess(argv: list[str], log_file, *, lock: Held | None = None) -> int:
    """Run a step as a child that cannot outlive this run (an orphan would write beside a rerun): its own process
    group (killed whole when we stop), the kernel kills it when we die (even by SIGKILL), and it
    inherits the entry's lock, so no second run can start on the entry while it still lives."""
    command = [sys.executable if render.step_module(argv) or Path(argv[0]).name.startswith("python") else argv[0],
               *argv[1:]]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                            pass_fds=(lock.fd,) if lock is not None else (),
                            preexec_fn=functools.partial(_die_with_parent, os.getpid()))
    try:
        return proc.wait()
    finally:
        if proc.poll() is None:  # interrupted: stop the step and anything it started
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _die_with_parent(parent: int) -> None:
    """In the child, before exec: a process group of its own, and SIGKILL when the parent dies."""
    os.setpgid(0, 0)
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


@contextlib.contextmanager
def restore_logging():
    """A step may configure logging (basicConfig, levels); that must not outlive the step."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in root.handlers:
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)


@contextlib.contextmanager
def redirect_fds(log_file):
    """Point fds 1 and 2 at the log (catches C-level output too); the display keeps its own fd."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    os.dup2(log_file.fileno(), 1)
    os.dup2(log_file.fileno(), 2)
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


_ERROR_LINE = re.compile(r"(error|exception|failed|traceback)", re.IGNORECASE)
_STEP_ERROR_LINE = re.compile(r"^slmforge [\w.-]+: error: ")  # what steps._cli.run_main prints
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b.*")


def last_error_line(log: Path) -> str | None:
    """The cause of a failure as one line: the last exception or error line of the log."""
    try:
        lines = [ln.strip() for ln in log.read_text(encoding="utf-8", errors="replace").splitlines()]
    except OSError:
        return None
    lines = [ln for ln in lines[1:] if ln and not ln.startswith(progress.PREFIX)]
    own = [ln for ln in lines if _STEP_ERROR_LINE.match(ln)]
    if own:  # the step's own report: its first problem is the one to fix first (a data file's first bad row)
        return own[0] + (f" (and {len(own) - 1} more in the log)" if len(own) > 1 else "")
    for line in reversed(lines):
        if _EXCEPTION_LINE.match(line) or "error:" in line.lower():
            return line
    for line in reversed(lines):
        if _ERROR_LINE.search(line) and not line.lower().startswith("traceback"):
            return line
    return lines[-1] if lines else None
