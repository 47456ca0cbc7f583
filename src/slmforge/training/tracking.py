"""Log a finished fine-tune to MLflow — only when MLFLOW_TRACKING_URI is set (mlflow is imported then)."""

from __future__ import annotations

import os


def log_run(params: dict, metrics: dict, loss_history: list[dict], eval_history: list[dict]) -> str | None:
    """One MLflow run (nested under an active one) with the parameters, the loss curves and the summary."""
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        return None
    import time

    import mlflow
    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    with mlflow.start_run(run_name="finetune", nested=mlflow.active_run() is not None) as run:
        client = mlflow.MlflowClient()
        client.log_batch(run.info.run_id,
                         params=[Param(k, str(v)[:500]) for k, v in sorted(params.items()) if v is not None])
        points = ([Metric("train_loss", e["loss"], now, e["step"]) for e in loss_history]
                  + [Metric("learning_rate", e["learning_rate"], now, e["step"]) for e in loss_history]
                  + [Metric("eval_loss", e["loss"], now, e["step"]) for e in eval_history]
                  + [Metric(k, float(v), now, 0) for k, v in sorted(metrics.items())
                     if isinstance(v, (int, float)) and not isinstance(v, bool)])
        for i in range(0, len(points), 1000):  # MLflow takes at most 1000 metrics per batch
            client.log_batch(run.info.run_id, metrics=points[i:i + 1000])
        return run.info.run_id
