"""Experiment tracking: the one place metrics are written to MLflow (and TensorBoard).

Two callers, one vocabulary of metric names:
- the fine-tune loop (steps/finetune.py), where MLflow is pointed at: Azure ML gives a job
  MLFLOW_TRACKING_URI and MLFLOW_RUN_ID, and `JobLogger` writes each logged step's `loss`,
  `learning_rate` and `tokens_per_second` into that run as it trains, then the eval loss and the summary;
- the local runner (backends/local/tracking.py), after a run: `log_run_tree` writes one parent run
  (the recipe as params, its digest, the loss curves, the evaluation table, report.md / loss.png /
  run.json) and one nested run per step (tag `mlflow.parentRunId`; a cached step tagged `cached`), into
  slmforge's own MLflow store (the registry's, registry/mlflow_store.py).

`report_to` (the recipe's training_args, Hugging Face's name) picks the targets: REPORT_TO.
mlflow is imported only when something is tracked.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# What slmforge honours; Hugging Face's other integrations (wandb, comet_ml, ...) are refused by name.
REPORT_TO = ("mlflow", "tensorboard", "azure_ml", "none", "all")
REPORT_TO_HELP = ("where the run's metrics go: mlflow (the default: slmforge's MLflow store, `mlflow ui` shows it), "
                  "azure_ml (an Azure ML job's MLflow run history; locally the same as mlflow), tensorboard "
                  "(event files in output_dir/logs/tensorboard; needs the tensorboard package), all (each of "
                  "them), none; a name or a list of names")
DEFAULT_ENV = "SLMFORGE_REPORT_TO"  # the report_to of a recipe that gives none (default mlflow), e.g. "none" in CI
TENSORBOARD_DIR = "tensorboard"
_MAX_PARAM = 500  # MLflow < 2.x took 500 characters; stores still vary: keep params short
_BATCH = {"params": 100, "metrics": 1000, "tags": 100}  # MLflow's log_batch limits


def report_names(value: str | list[str] | None) -> list[str]:
    """A report_to value (a name, or a list as Hugging Face writes it) as names; ValueError naming the
    allowed ones for any other name."""
    names = [value] if isinstance(value, str) else list(value or [])
    unknown = [n for n in names if n not in REPORT_TO]
    if unknown:
        raise ValueError(f"report_to {unknown[0]!r} is not one slmforge honours; expected one of "
                         f"{', '.join(REPORT_TO)} (or a list of them)")
    return names


def report_targets(value: str | list[str] | None) -> set[str]:
    """The targets a report_to value asks for: {"mlflow", "tensorboard"} at most (azure_ml is MLflow);
    nothing given: SLMFORGE_REPORT_TO, else mlflow."""
    names = report_names(value) or report_names(os.environ.get(DEFAULT_ENV) or "mlflow")
    if "all" in names:
        return {"mlflow", "tensorboard"}
    return {"mlflow" if n == "azure_ml" else n for n in names} - {"none"}


def history_points(loss_history: list[dict], eval_history: list[dict]) -> list[tuple[str, float, int]]:
    """(name, value, step) for the loss curves a finetune records: `loss`, `learning_rate`, `eval_loss`."""
    points = [("loss", e["loss"], e["step"]) for e in loss_history]
    points += [("learning_rate", e["learning_rate"], e["step"]) for e in loss_history if "learning_rate" in e]
    points += [("eval_loss", e["loss"], e["step"]) for e in eval_history]
    return [(k, float(v), int(s)) for k, v, s in points if v is not None]


def scalars(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The plain numbers of a metrics dict (booleans, lists and texts left out), names prefixed."""
    return {f"{prefix}{k}": float(v) for k, v in sorted(metrics.items())
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v}


def flatten(data: Any, prefix: str = "") -> dict[str, str]:
    """A nested recipe as MLflow params (`passes.lora.r` -> "8"); None left out, secrets never (a key
    naming a token, secret, password or key with a text value, a URL carrying a SAS signature)."""
    out: dict[str, str] = {}
    if isinstance(data, dict):
        for k, v in data.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    if isinstance(data, list) and not all(isinstance(v, (str, int, float, bool)) or v is None for v in data):
        for i, v in enumerate(data):
            out.update(flatten(v, f"{prefix}{i}."))
        return out
    key = re.sub(r"[^\w.\- /:]", "_", prefix.rstrip("."))  # the characters MLflow takes in a key
    if data is None or _secret(key, data):
        return out
    out[key] = str(data)[:_MAX_PARAM]
    return out


def _secret(key: str, value: Any) -> bool:
    last = key.rsplit(".", 1)[-1].lower()
    text = isinstance(value, str)
    return (text and any(w in last for w in ("token", "secret", "password", "credential", "key")) and value != "") \
        or (text and "sig=" in value)


# ---------------------------------------------------------------------------------- the local run's tree


@dataclass
class StepRun:
    """A step as the runner tracks it: ran or cached, its params and metrics, its loss curves if any."""

    name: str
    status: str
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    points: list[tuple[str, float, int]] = field(default_factory=list)
    seconds: float | None = None


def log_run_tree(uri: str, experiment: str, *, name: str, params: dict[str, str], tags: dict[str, str],
                 metrics: dict[str, float], points: list[tuple[str, float, int]], steps: list[StepRun],
                 artifacts: list[Path], status: str = "FINISHED") -> str:
    """One parent run with its nested step runs; returns the parent's run id."""
    from slmforge.registry.mlflow_store import client_for, experiment_id, registry_errors

    with registry_errors(uri):
        client = client_for(uri)
        exp = experiment_id(client, uri, experiment)
        parent = client.create_run(exp, tags={"mlflow.runName": name, **tags}).info.run_id
        _log(client, parent, params, metrics, points)
        for step in steps:
            child = client.create_run(exp, tags={
                "mlflow.runName": step.name, "mlflow.parentRunId": parent, "slmforge.step": step.name,
                "slmforge.status": step.status, "cached": str(step.status == "cached").lower()}).info.run_id
            _log(client, child, flatten(step.params), {**step.metrics, **({"seconds": step.seconds}
                                                                          if step.seconds is not None else {})},
                 step.points)
            client.set_terminated(child, "FINISHED" if step.status in ("ran", "cached") else "FAILED")
        for path in artifacts:
            if path.is_file():
                client.log_artifact(parent, str(path))
        client.set_terminated(parent, status)
        return parent


def _log(client, run_id: str, params: dict[str, str], metrics: dict[str, float],
         points: list[tuple[str, float, int]]) -> None:
    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    ps = [Param(k, v) for k, v in sorted(params.items())]
    ms = [Metric(k, v, now, 0) for k, v in sorted(metrics.items())] + [Metric(k, v, now, s) for k, v, s in points]
    for i in range(0, len(ps), _BATCH["params"]):
        client.log_batch(run_id, params=ps[i:i + _BATCH["params"]])
    for i in range(0, len(ms), _BATCH["metrics"]):
        client.log_batch(run_id, metrics=ms[i:i + _BATCH["metrics"]])


def write_tensorboard(folder: Path, points: list[tuple[str, float, int]], metrics: dict[str, float]) -> Path:
    """The loss curves and the final figures as TensorBoard event files in `folder`."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(folder))
    try:
        for name, value, step in points:
            writer.add_scalar(f"train/{name}" if name != "eval_loss" else "eval/loss", value, step)
        for name, value in sorted(metrics.items()):
            writer.add_scalar(name, value, 0)
    finally:
        writer.close()
    return folder


def tensorboard_missing() -> str | None:
    """Why report_to tensorboard cannot be honoured here (None: it can)."""
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        return "report_to tensorboard needs the tensorboard package (pip install tensorboard)"
    return None


# ---------------------------------------------------------------------------------- inside a tracked job


class JobLogger:
    """When MLflow is pointed at (MLFLOW_TRACKING_URI): each logged step's loss, learning rate and tokens/s
    go into the run MLFLOW_RUN_ID names (an Azure ML job's own run: Azure ML sets both), else into a new
    run `finetune` (a step run by hand), while it trains."""

    def __init__(self) -> None:
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
        self.run_id, self.owned = os.environ.get("MLFLOW_RUN_ID"), False
        if not self.run_id:
            run = self.client.create_run(_experiment(self.client), tags={"mlflow.runName": "finetune"})
            self.run_id = run.info.run_id
            self.owned = True

    @staticmethod
    def wanted() -> bool:
        return bool(os.environ.get("MLFLOW_TRACKING_URI"))

    def step(self, step: int, loss: float, learning_rate: float | None, tokens_per_second: float) -> None:
        facts = {"loss": loss, "learning_rate": learning_rate, "tokens_per_second": tokens_per_second}
        _log(self.client, self.run_id, {}, {}, [(k, float(v), step) for k, v in facts.items() if v is not None])

    def finish(self, params: dict[str, Any], metrics: dict[str, Any], eval_history: list[dict]) -> str:
        """The step's params, its eval loss curve and its summary figures; returns the run id."""
        _log(self.client, self.run_id, flatten(params), scalars(metrics), history_points([], eval_history))
        if self.owned:
            self.client.set_terminated(self.run_id, "FINISHED")
        return self.run_id


def _experiment(client) -> str:
    """MLflow's own environment variables name the experiment; else its default one."""
    if os.environ.get("MLFLOW_EXPERIMENT_ID"):
        return os.environ["MLFLOW_EXPERIMENT_ID"]
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME")
    found = client.get_experiment_by_name(name) if name else None
    return found.experiment_id if found is not None else (client.create_experiment(name) if name else "0")
