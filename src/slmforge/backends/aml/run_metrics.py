"""An Azure ML job's step metrics, read back from its MLflow run history.

Each step of a pipeline job is a run whose MLflow run id is the step's run id; what the step logged
(the fine-tune's loss, learning rate and tokens/s per step, an evaluation's figures) is there, as
studio's charts show it. They are read over the MLflow REST API at the workspace's tracking URI
(contract/aml_tracking.py: what azureml-mlflow does, without it), through the SDK's own request
pipeline and credential, so the emulator and a real workspace are read the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from slmforge.contract.aml_tracking import rest_tracking_uri

if TYPE_CHECKING:
    from azure.ai.ml import MLClient

HEADLINE = ("loss", "train_loss", "eval_loss", "final_loss", "learning_rate", "tokens_per_second", "accuracy",
            "perplexity", "majority_baseline", "n", "size_bytes")


def tracking_base(ml_client: "MLClient") -> str | None:
    """The workspace's MLflow REST base (None: the workspace names no tracking URI)."""
    workspace = ml_client.workspaces.get(ml_client.workspace_name)
    uri = getattr(workspace, "mlflow_tracking_uri", None)
    return rest_tracking_uri(uri) if uri else None


def _get(ml_client: "MLClient", url: str) -> Any | None:
    """GET an MLflow REST answer as JSON; None when the run is not there (a step that never started)."""
    from azure.ai.ml._azure_environments import _get_base_url_from_metadata, _resource_to_scopes
    from azure.core.exceptions import HttpResponseError

    # What azureml-mlflow asks for: a token for the cloud's resource manager.
    token = ml_client._credential.get_token(*_resource_to_scopes(_get_base_url_from_metadata(ml_client._cloud)))
    response = ml_client.jobs._requests_pipeline.get(url, headers={"Authorization": f"Bearer {token.token}"})
    if response.status_code == 404:
        return None
    if response.status_code != 200:
        raise HttpResponseError(message=f"{url.split('?')[0]} answered {response.status_code}: "
                                        f"{response.text()[:200]}", response=response)
    return response.json()


@dataclass
class LoggedRun:
    """What a step logged into its MLflow run: the latest value of each metric, and its params."""

    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)


def logged_run(ml_client: "MLClient", base: str, run_id: str) -> LoggedRun:
    """A run's metrics and params (empty when it logged none, or never started)."""
    answer = _get(ml_client, f"{base}/api/2.0/mlflow/runs/get?{urlencode({'run_id': run_id})}")
    data = ((answer or {}).get("run") or {}).get("data") or {}
    return LoggedRun({m["key"]: m["value"] for m in data.get("metrics") or []},
                     {p["key"]: p["value"] for p in data.get("params") or []})


def metric_history(ml_client: "MLClient", base: str, run_id: str, key: str) -> list[dict[str, Any]]:
    """Every logged point of one metric of a run: {step, value, timestamp}, in step order."""
    query = urlencode({"run_id": run_id, "metric_key": key})
    points = (_get(ml_client, f"{base}/api/2.0/mlflow/metrics/get-history?{query}") or {}).get("metrics") or []
    return sorted(({"step": int(p.get("step") or 0), "value": p["value"], "timestamp": p.get("timestamp")}
                   for p in points), key=lambda p: (p["step"], p["timestamp"] or 0))


def step_runs(ml_client: "MLClient", runs: dict[str, str]) -> dict[str, LoggedRun]:
    """node name -> what it logged, for the steps (node name -> run id) that logged metrics."""
    base = tracking_base(ml_client) if runs else None
    if base is None:
        return {}
    found = {step: logged_run(ml_client, base, run_id) for step, run_id in runs.items()}
    return {step: run for step, run in found.items() if run.metrics}


def evaluations(runs: dict[str, LoggedRun]) -> dict[str, dict[str, Any]]:
    """label -> figures, of the steps that logged an evaluation (a `label` param and an accuracy or perplexity)."""
    found = {}
    for run in runs.values():
        label = run.params.get("label")
        if label and ("accuracy" in run.metrics or "perplexity" in run.metrics):
            found[label] = {**run.metrics, "label": label, "model_kind": run.params.get("model_kind")}
    return found


def metrics_text(metrics: dict[str, float], limit: int = 6) -> str:
    """A step's headline figures on one line: `loss 1.23, tokens_per_second 2.1e+04, ...`."""
    keys = [k for k in HEADLINE if k in metrics] or sorted(metrics)
    return ", ".join(f"{k} {_fmt(metrics[k])}" for k in keys[:limit])


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e9 else f"{value:.4g}"
