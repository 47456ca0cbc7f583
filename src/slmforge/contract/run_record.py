"""run.json: what a run records, in one shape wherever it ran.

Written by the local runner (backends/local/outputs.py) and by `slmforge download` for an Azure ML
job (backends/aml/jobs.py); read by the run report and the tests. An Azure ML job's statuses are
spelled in the local words, so one reader serves both.
"""

from __future__ import annotations

import time
from typing import Any

RUN_JSON = "run.json"
# run status: running | succeeded | failed | interrupted | canceled; step status: ran | cached | failed | skipped
AML_RUN_STATUS = {"Completed": "succeeded", "Failed": "failed", "Canceled": "canceled", "NotResponding": "failed"}
AML_STEP_STATUS = {"Completed": "ran", "Failed": "failed", "Canceled": "skipped", "NotResponding": "failed"}
EVALUATION_KEYS = ("label", "accuracy", "n", "majority_baseline", "perplexity", "tokens_per_second", "size_bytes",
                   "model_kind", "confusion", "evaluator", "example")


def run_record(*, status: str, recipe: str | None, recipe_digest: str | None, steps: list[dict[str, Any]],
               evaluation: dict[str, dict[str, Any]], model: dict[str, Any] | None, seconds: float | None = None,
               registered: dict[str, Any] | None = None, error: str | None = None,
               job: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """The record; `registered`, `error` and `job` (an Azure ML job's name, experiment, URL, tags) only when given."""
    record: dict[str, Any] = {
        "status": status,
        "recipe": recipe,
        "recipe_digest": recipe_digest,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(seconds, 3) if seconds is not None else None,
        "steps": steps,
        "evaluation": evaluation,
        "model": model,
        **extra,
    }
    for key, value in (("registered", registered), ("error", error), ("job", job)):
        if value is not None:
            record[key] = value
    return record


def evaluation_entry(metrics: dict[str, Any]) -> dict[str, Any]:
    """An evaluate step's metrics.json as run.json keeps it (per-row predictions left out)."""
    return {k: metrics[k] for k in EVALUATION_KEYS if k in metrics}


def aml_run_status(status: str) -> str:
    return AML_RUN_STATUS.get(status, status.lower())


def aml_step_status(status: str) -> str:
    return AML_STEP_STATUS.get(status, status.lower())
