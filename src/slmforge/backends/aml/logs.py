"""`slmforge logs JOB [--step NAME]`: a running job's or step's log as it grows; a finished one's stored log.

`jobs.stream` only prints log text while a run is in progress; for a finished run it prints the
run id and nothing else. So a finished step's log is read from run history: the run details list
its log files (`user_logs/std_log.txt` on the common runtime, `azureml-logs/*.txt` before it) as
SAS URLs, which the SDK's own request pipeline downloads. The emulator answers the same way.
Stored or followed, a step's progress events (`##slmforge-progress {...}`) are shown as text
(contract/progress.py `render`: step, loss, tokens/s, ETA).
"""

from __future__ import annotations

import contextlib
import re
import sys
from typing import TYPE_CHECKING, TextIO

from slmforge.backends.aml.jobs import TERMINAL, child_jobs, find_step, get_job, node_name, status_text
from slmforge.backends.aml.workspace import as_step_failed, one_line
from slmforge.contract.progress import render
from slmforge.errors import StepFailed

if TYPE_CHECKING:
    from azure.ai.ml import MLClient

# Log files worth showing, by preference: the common runtime's user logs, else the legacy ones.
USER_LOG_PATTERNS = (r"user_logs/std_log.*\.txt$", r"azureml-logs/.+\.txt$")
DOWNLOAD_TIMEOUT_S = 60
# A step's own error line (steps/_cli.py: "slmforge <step>: error: ..."), else a traceback's last line.
_STEP_ERROR = re.compile(r"^slmforge [\w-]+: error: (.+)$", re.M)
_EXCEPTION = re.compile(r"^(?:[\w.]+(?:Error|Exception)): .+$", re.M)


def print_logs(ml_client: "MLClient", name: str, step: str | None = None, out: TextIO | None = None) -> None:
    """A step's (or every step's) log: stored text when finished, else followed until it ends."""
    out = out or sys.stdout
    if step is not None:
        child = find_step(ml_client, name, step)
        if status_text(child.status) in TERMINAL:
            _write(out, stored_logs(ml_client, child.name))
        else:
            _stream(ml_client, child.name)
        return
    if status_text(get_job(ml_client, name).status) not in TERMINAL:
        _stream(ml_client, name)
        return
    for child in child_jobs(ml_client, name):
        out.write(f"===== {node_name(child)} ({status_text(child.status)}) =====\n")
        _write(out, stored_logs(ml_client, child.name))


def stored_logs(ml_client: "MLClient", run_id: str) -> dict[str, str]:
    """log file name -> text, for a run's user logs (empty when the run never started)."""
    from azure.ai.ml._utils.utils import create_requests_pipeline_with_retry, download_text_from_url

    # Private SDK members (azure-ai-ml 1.35): the same ones `jobs.stream` reads logs with.
    runs, requests_pipeline = ml_client.jobs._runs_operations, ml_client.jobs._requests_pipeline
    details = runs.get_run_details(run_id)
    files = details.log_files or {}
    names: list[str] = []
    for pattern in USER_LOG_PATTERNS:
        names = sorted(n for n in files if re.match(pattern, n))
        if names:
            break
    pipeline = create_requests_pipeline_with_retry(requests_pipeline=requests_pipeline)
    texts = {}
    for log_name in names:
        try:
            texts[log_name] = download_text_from_url(files[log_name], pipeline, timeout=DOWNLOAD_TIMEOUT_S)
        except Exception as e:  # noqa: BLE001 - one line for the user
            raise as_step_failed(e, f"downloading {log_name} of {run_id}") from None
    return texts


def failure_cause(ml_client: "MLClient", current) -> str | None:
    """The first error line in the log of a failed job's first failed step, None when there is none to
    read (the step never started, or its log cannot be fetched now: the message then points at `logs`)."""
    failed = current.failed_steps() if current.status != "Completed" else []
    if not failed:
        return None
    try:
        run_id = find_step(ml_client, current.name, failed[0]).name
        # The service's own error (e.g. an input it could not resolve, so the step never started) ...
        error = getattr(getattr(ml_client.jobs._runs_operations.get_run_details(run_id), "error", None), "error", None)
        if getattr(error, "message", None):
            return " ".join(str(error.message).split())[:300]
        texts = stored_logs(ml_client, run_id)  # ... else the step's log
    except Exception:  # noqa: BLE001 - the cause is a courtesy; the failure itself is still reported
        return None
    for pattern in (_STEP_ERROR, _EXCEPTION):
        for text in texts.values():
            match = pattern.search(text)
            if match:
                return (match.group(1) if match.groups() else match.group(0)).strip()[:300]
    return None


def _write(out: TextIO, texts: dict[str, str]) -> None:
    if not texts:
        out.write("(no log stored: the step did not start)\n")
        return
    for log_name, text in texts.items():
        if len(texts) > 1:
            out.write(f"--- {log_name}\n")
        text = render(text)
        out.write(text if text.endswith("\n") or not text else text + "\n")
    out.flush()


class _Rendered:
    """A stdout stand-in for the SDK's log streaming: whole lines go on rendered (progress events as text)."""

    def __init__(self, out: TextIO) -> None:
        self.out, self.pending = out, ""

    def write(self, text: str) -> int:
        self.pending += text
        whole, newline, self.pending = self.pending.rpartition("\n")
        if newline:
            self.out.write(render(whole + newline))
        return len(text)

    def flush(self) -> None:
        self.out.flush()

    def close(self) -> None:
        if self.pending:
            self.out.write(render(self.pending))
            self.pending = ""
        self.out.flush()


def _stream(ml_client: "MLClient", target: str) -> None:
    from azure.ai.ml.exceptions import JobException

    rendered = _Rendered(sys.stdout)
    try:
        with contextlib.redirect_stdout(rendered):  # the SDK writes the logs to sys.stdout
            ml_client.jobs.stream(target)
    except JobException as e:  # the SDK raises it when the job it followed failed
        raise StepFailed(f"job {target}: {one_line(e)}") from None
    except Exception as e:  # noqa: BLE001 - reported as one line
        raise as_step_failed(e, f"reading logs of {target}") from None
    finally:
        rendered.close()
