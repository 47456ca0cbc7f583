"""Submit a compiled pipeline and follow it: status, step by step; logs; download; cancel.

Each service call rides through transient faults in azure-core's RetryPolicy (retry.py); while
following a long job, a poll that still failed is skipped, so an outage shorter than
SLMFORGE_FOLLOW_PATIENCE_SECONDS does not end the follow.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from slmforge.backends.aml.pipeline import (
    ADAPTER_METRICS_OUTPUT,
    ADAPTER_OUTPUT,
    FINAL_OUTPUT,
    METRICS_OUTPUT,
    RECIPE_JOB_TAG,
    compile_pipeline,
    validate_pipeline,
)
from slmforge.backends.aml.retry import is_transient
from slmforge.backends.aml.run_metrics import evaluations as logged_evaluations
from slmforge.backends.aml.run_metrics import step_runs
from slmforge.backends.aml.workspace import as_step_failed
from slmforge.contract import folders
from slmforge.contract.files import write_atomic
from slmforge.contract.run_record import RUN_JSON, aml_run_status, aml_step_status, evaluation_entry, run_record
from slmforge.errors import InvalidInput, StepFailed
from slmforge.registry.rules import RECIPE_DIGEST_TAG

if TYPE_CHECKING:
    from azure.ai.ml import MLClient
    from azure.ai.ml.entities import Job

    from slmforge.recipe.loaded import LoadedRecipe

TERMINAL = {"Completed", "Failed", "Canceled", "NotResponding"}
FAILED = {"Failed", "Canceled", "NotResponding"}


@dataclass
class JobState:
    name: str
    status: str
    steps: dict[str, str] = field(default_factory=dict)  # node name -> status
    studio_url: str | None = None
    runs: dict[str, str] = field(default_factory=dict)  # node name -> its run id (its MLflow run)

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    def failed_steps(self) -> list[str]:
        """Steps that failed; when none did (a cancel), those that were stopped."""
        failed = [s for s, st in self.steps.items() if st == "Failed"]
        return failed or [s for s, st in self.steps.items() if st in FAILED]


def poll_seconds() -> float:
    return float(os.environ.get("SLMFORGE_POLL_SECONDS", "10"))


def follow_patience() -> float:
    """While following a long job, how long the workspace may stay unreachable before we give up."""
    return float(os.environ.get("SLMFORGE_FOLLOW_PATIENCE_SECONDS", "300"))


def submit(ml_client: "MLClient", loaded: "LoadedRecipe", *, compute: str | None = None,
           experiment: str | None = None, version: str | None = None) -> "Job":
    """Compile, validate locally, then create the pipeline job (uploads code and local inputs)."""
    with tempfile.TemporaryDirectory(prefix="slmforge-aml-") as files:
        compiled = compile_pipeline(loaded, Path(files), compute=compute, version=version, experiment=experiment)
        validate_pipeline(compiled.job)
        # The SDK prints colour codes to stderr after every upload; keep them off non-terminals.
        noise = contextlib.nullcontext() if sys.stderr.isatty() else contextlib.redirect_stderr(io.StringIO())
        try:
            with noise:
                return ml_client.jobs.create_or_update(compiled.job, experiment_name=compiled.job.experiment_name)
        except Exception as e:  # noqa: BLE001 - reported as one line
            raise as_step_failed(e, "submitting the pipeline failed") from None


def studio_url(job: "Job") -> str | None:
    url = getattr(job, "studio_url", None)
    if url:
        return url
    services = getattr(job, "services", None) or {}
    studio = services.get("Studio")
    return getattr(studio, "endpoint", None)


def get_job(ml_client: "MLClient", name: str) -> "Job":
    from azure.core.exceptions import ResourceNotFoundError

    try:
        return ml_client.jobs.get(name)
    except ResourceNotFoundError:
        raise InvalidInput(f"no job named '{name}' in the workspace") from None


def child_jobs(ml_client: "MLClient", name: str) -> list["Job"]:
    return list(ml_client.jobs.list(parent_job_name=name))


def node_name(child: "Job") -> str:
    """A pipeline child job's node name (the service keeps it as display name)."""
    return child.display_name or child.name


def status_text(status: Any) -> str:
    """The SDK answers a JobStatus enum for some calls and a plain string for others."""
    return str(getattr(status, "value", status) or "Unknown")


def state(ml_client: "MLClient", name: str) -> JobState:
    job = get_job(ml_client, name)
    children = child_jobs(ml_client, name)
    steps = {node_name(c): status_text(c.status) for c in children}
    return JobState(name=job.name, status=status_text(job.status), steps=steps, studio_url=studio_url(job),
                    runs={node_name(c): c.name for c in children})


def follow(ml_client: "MLClient", name: str, *, echo: Callable[[str], None] = print,
           interval: float | None = None) -> JobState:
    """Poll until the job is terminal, printing each step's status as it changes."""
    interval = poll_seconds() if interval is None else interval
    seen: dict[str, str] = {}
    last_status = None
    last_answer = time.monotonic()
    while True:
        try:
            current = state(ml_client, name)
        except Exception as e:  # noqa: BLE001 - a transient fault that outlasted one call's retries
            if not is_transient(e) or time.monotonic() - last_answer > follow_patience():
                raise
            time.sleep(interval)
            continue
        last_answer = time.monotonic()
        for step, status in current.steps.items():
            if seen.get(step) != status:
                echo(f"  {step:<16} {status}")
                seen[step] = status
        if current.status != last_status:
            echo(f"{name}: {current.status}")
            last_status = current.status
        if current.done:
            return current
        time.sleep(interval)


def raise_if_failed(current: JobState, cause: str | None = None) -> None:
    """StepFailed naming the failed steps and, when known, the cause (the first error line of its log)."""
    if current.status == "Completed":
        return
    failed = current.failed_steps()
    where = f" at step {', '.join(failed)}" if failed else ""
    where += f": {cause}" if cause else ""
    hint = f"; see `slmforge logs {current.name} --step {failed[0]}`" if failed else ""
    raise StepFailed(f"job {current.name} {current.status.lower()}{where}{hint}")


def find_step(ml_client: "MLClient", name: str, step: str) -> "Job":
    children = child_jobs(ml_client, name)
    for child in children:
        if node_name(child) == step:
            return child
    known = ", ".join(sorted(node_name(c) for c in children)) or "none yet"
    raise InvalidInput(f"job {name} has no step '{step}' (steps: {known})")


def job_record(ml_client: "MLClient", job: "Job", *, model_dir: Path | None = None,
               adapter_dir: Path | None = None) -> dict[str, Any]:
    """run.json for a job (contract/run_record.py): its steps, the final model's evaluation and where it went
    (with a separate adapter: where the adapter went, and the evaluation of base + adapter)."""
    tags = dict(job.tags or {})
    output = (job.outputs or {}).get(FINAL_OUTPUT)
    completed = status_text(job.status) == "Completed"
    metrics = job_metrics(ml_client, job) if completed else None
    evaluation = {metrics.get("label", "final"): evaluation_entry(metrics)} if metrics else {}
    adapter_output = (job.outputs or {}).get(ADAPTER_OUTPUT)
    extra: dict[str, Any] = {}
    if adapter_output is not None:
        adapter_metrics = job_metrics(ml_client, job, ADAPTER_METRICS_OUTPUT) if completed else None
        if adapter_metrics:
            evaluation[adapter_metrics.get("label", "adapter")] = evaluation_entry(adapter_metrics)
        extra["adapter"] = {"path": str(adapter_dir) if adapter_dir else None, "output": ADAPTER_OUTPUT,
                            "name": getattr(adapter_output, "name", None),
                            "version": getattr(adapter_output, "version", None)}
    children = child_jobs(ml_client, job.name)
    logged = step_runs(ml_client, {node_name(c): c.name for c in children})
    steps = [{"name": node_name(c), "status": aml_step_status(status_text(c.status)), "job_status": status_text(c.status),
              "seconds": run_seconds(ml_client, c.name), "run_id": c.name,
              "metrics": logged[node_name(c)].metrics if node_name(c) in logged else {}} for c in children]
    # every evaluation the steps logged (base, merged, ...); the final model's from its metrics.json wins
    evaluation = {**{label: evaluation_entry(m) for label, m in logged_evaluations(logged).items()}, **evaluation}
    return run_record(
        status=aml_run_status(status_text(job.status)), recipe=tags.get(RECIPE_JOB_TAG),
        recipe_digest=tags.get(RECIPE_DIGEST_TAG), seconds=run_seconds(ml_client, job.name),
        steps=steps, evaluation=evaluation,
        model={"path": str(model_dir) if model_dir else None, "step": tags.get("slmforge.final_step"),
               "output": FINAL_OUTPUT, "kind": (metrics or {}).get("model_kind"),
               "name": getattr(output, "name", None), "version": getattr(output, "version", None)},
        job={"name": job.name, "status": status_text(job.status), "experiment": job.experiment_name,
             "display_name": job.display_name, "studio_url": studio_url(job), "tags": tags}, **extra)


def run_seconds(ml_client: "MLClient", run_id: str) -> float | None:
    """How long a run (the pipeline job, or one step) ran, from run history's start and end times."""
    details = ml_client.jobs._runs_operations.get_run_details(run_id)  # private, as logs.py reads log files
    start, end = getattr(details, "start_time_utc", None), getattr(details, "end_time_utc", None)
    return (end - start).total_seconds() if start and end else None


def job_metrics(ml_client: "MLClient", job: "Job", output: str = METRICS_OUTPUT) -> dict[str, Any] | None:
    """metrics.json of the evaluation of the job's final model (or of the evaluation another `output`
    holds), or None when the pipeline has none."""
    if output not in (job.outputs or {}):
        return None
    with tempfile.TemporaryDirectory(prefix="slmforge-metrics-") as tmp:
        ml_client.jobs.download(job.name, download_path=tmp, output_name=output)
        folder = downloaded_output(Path(tmp), output)
        if not (folder / folders.METRICS).is_file():
            raise StepFailed(f"job {job.name}: its '{output}' output has no {folders.METRICS}")
        return folders.read_metrics(folder)


def download(ml_client: "MLClient", name: str, out_dir: Path) -> Path:
    """Download the final model into out_dir/model (a separate adapter into out_dir/adapters, as a local run
    leaves it) and write out_dir/run.json."""
    job = get_job(ml_client, name)
    status = status_text(job.status)
    if status != "Completed":
        raise StepFailed(f"job {name} is {status}; only a completed job has a model to download")
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = {FINAL_OUTPUT: out_dir / "model"}
    if ADAPTER_OUTPUT in (job.outputs or {}):
        outputs[ADAPTER_OUTPUT] = out_dir / "adapters"
    for target in outputs.values():
        if target.exists():
            raise InvalidInput(f"{target} already exists; choose an empty -o folder")
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".download-") as tmp:
        fetched = {}
        for output in outputs:
            ml_client.jobs.download(name, download_path=str(Path(tmp) / output), output_name=output)
            fetched[output] = downloaded_output(Path(tmp) / output, output)
        record = job_record(ml_client, job, model_dir=outputs[FINAL_OUTPUT], adapter_dir=outputs.get(ADAPTER_OUTPUT))
        for output, folder in fetched.items():
            folder.rename(outputs[output])
        target = outputs[FINAL_OUTPUT]
    write_atomic(out_dir / RUN_JSON, json.dumps(record, indent=2) + "\n")
    return target


def downloaded_output(root: Path, output: str) -> Path:
    """The SDK puts a named output under named-outputs/<name>/ (older versions: under <name>/)."""
    for candidate in (root / "named-outputs" / output, root / output):
        if candidate.is_dir():
            return candidate
    found = sorted(str(p.relative_to(root)) for p in root.rglob("*"))[:10]
    raise StepFailed(f"the downloaded job output has no '{output}' folder (found: {found})")


def cancel(ml_client: "MLClient", name: str) -> None:
    """Ask the service to stop a running job; a job that already ended is InvalidInput with its status."""
    status = status_text(get_job(ml_client, name).status)
    if status in TERMINAL:
        raise InvalidInput(f"{name}: already finished ({status}); nothing to cancel")
    ml_client.jobs.begin_cancel(name).result()
