"""MLflow in an Azure ML job, without azureml-mlflow: the workspace's tracking URI as plain MLflow REST.

Azure ML gives a job MLFLOW_TRACKING_URI (`azureml://<region>.api.azureml.ms/mlflow/v1.0/subscriptions/...
/workspaces/<ws>`), MLFLOW_TRACKING_TOKEN, MLFLOW_RUN_ID (the step's own run) and MLFLOW_EXPERIMENT_ID.
The `azureml://` scheme needs the azureml-mlflow plugin, which pins mlflow-skinny <= 3.15 and
azure-storage-blob <= 12.27 (ours: 3.17, 12.31). What the plugin does is small: the same host over HTTPS,
the MLflow REST API under `/mlflow/v2.0/<workspace scope>` (its AzureMLRestStore), the job's token as a
bearer. `use_job_tracking` points plain MLflow there, so `mlflow.log_metric` and MlflowClient write into
the step's run history, which studio charts; the emulator answers the same paths (emulator/mlflow_api.py).
`rest_tracking_uri` is also how `slmforge status` reads the metrics back (backends/aml/run_metrics.py).
"""

from __future__ import annotations

import os
import re
from typing import Any, MutableMapping

AZUREML_SCHEME = "azureml://"
_MLFLOW_PATH = re.compile(r"^/mlflow/v\d+\.\d+(?=/)", re.IGNORECASE)
REST_VERSION = "/mlflow/v2.0"  # azureml-mlflow's for MLflow 2 and 3


def rest_tracking_uri(uri: str) -> str:
    """`azureml://HOST/mlflow/v1.0/SCOPE` -> `https://HOST/mlflow/v2.0/SCOPE` (any other URI unchanged)."""
    if not uri.lower().startswith(AZUREML_SCHEME):
        return uri
    rest = uri[len(AZUREML_SCHEME):]
    host, slash, path = rest.partition("/")
    path = _MLFLOW_PATH.sub(REST_VERSION, slash + path)
    if not path.lower().startswith(REST_VERSION):
        path = REST_VERSION + path
    return f"https://{host}{path.rstrip('/')}"


def use_job_tracking(environ: MutableMapping[str, str] | None = None) -> bool:
    """Inside a job whose MLFLOW_TRACKING_URI is `azureml://` and without azureml-mlflow installed: rewrite it
    to the REST URI plain MLflow speaks (the job's MLFLOW_TRACKING_TOKEN is then its bearer). True if rewritten."""
    environ = os.environ if environ is None else environ
    uri = environ.get("MLFLOW_TRACKING_URI", "")
    if not uri.lower().startswith(AZUREML_SCHEME) or _plugin_installed():
        return False
    environ["MLFLOW_TRACKING_URI"] = rest_tracking_uri(uri)
    return True


def log_job_metrics(metrics: dict[str, Any], params: dict[str, Any]) -> str | None:
    """Inside a tracked job (MLFLOW_TRACKING_URI and MLFLOW_RUN_ID set, as Azure ML sets them): a step's plain
    numbers and `params` into its run; returns the run id (None outside a tracked job: nothing is imported).

    One `runs/log-batch` call: over HTTP(S) with the job's bearer token it is posted directly (importing
    mlflow costs a light step such as an ONNX evaluation ~1.7 s); any other store goes through MlflowClient."""
    run_id = os.environ.get("MLFLOW_RUN_ID")
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if not (uri and run_id):
        return None
    import time

    now = int(time.time() * 1000)
    numbers = [{"key": k, "value": float(v), "timestamp": now, "step": 0} for k, v in sorted(metrics.items())
               if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v][:1000]
    texts = [{"key": k, "value": str(v)[:500]} for k, v in sorted(params.items()) if v is not None]
    if uri.lower().startswith(("https://", "http://")) and not any(os.environ.get(k) for k in _OTHER_AUTH):
        _post_batch(uri, {"run_id": run_id, "metrics": numbers, "params": texts})
        return run_id
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    MlflowClient().log_batch(run_id, metrics=[Metric(**m) for m in numbers], params=[Param(**t) for t in texts])
    return run_id


# MLflow's other ways to authenticate to a tracking server: where one is set, MlflowClient does the talking.
_OTHER_AUTH = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_CLIENT_CERT_PATH", "MLFLOW_TRACKING_AUTH")


def _post_batch(uri: str, body: dict[str, Any]) -> None:
    """POST runs/log-batch as MLflow's REST client does (bearer MLFLOW_TRACKING_TOKEN, its TLS settings)."""
    import requests

    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    verify: bool | str = os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or \
        os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() != "true"
    answer = requests.post(f"{uri.rstrip('/')}/api/2.0/mlflow/runs/log-batch", json=body, verify=verify, timeout=60,
                           headers={"Authorization": f"Bearer {token}"} if token else {})
    if answer.status_code != 200:
        from slmforge.errors import StepFailed

        raise StepFailed(f"logging metrics to {uri} failed: {answer.status_code} {' '.join(answer.text.split())[:200]}")


def _plugin_installed() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("azureml.mlflow") is not None
    except ModuleNotFoundError:  # no `azureml` package at all
        return False
