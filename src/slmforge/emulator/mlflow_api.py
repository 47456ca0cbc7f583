"""The workspace's MLflow tracking server: the MLflow REST API under `/mlflow/v2.0/<workspace>/api/2.0/mlflow/`.

What Azure ML answers at the workspace's `mlFlowTrackingUri` (over HTTPS, as azureml-mlflow or plain MLflow
with contract/aml_tracking.py call it). Each pipeline node's run is an MLflow run whose id is the node's run
id (as in Azure ML): the executor opens it and hands the node MLFLOW_TRACKING_URI, MLFLOW_TRACKING_TOKEN and
MLFLOW_RUN_ID; the step logs into it; `slmforge status`/`download` and MlflowClient read it back. The runs
live in the emulator's store (kind "mlflow-runs"), so they outlive a restart.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from slmforge.emulator.context import Emulator
from slmforge.emulator.routing import WS, Reply, Request, route

RUNS = "mlflow-runs"
EXPERIMENTS = "mlflow-experiments"
API = r"/mlflow/v[12]\.0" + WS + r"/api/[23]\.0/mlflow"


def _now_ms() -> int:
    return int(time.time() * 1000)


def experiment_id(emu: Emulator, name: str) -> str:
    """The id of the experiment `name` (created on first use, as a job's experiment is)."""
    with emu.lock:
        doc = emu.store.get(EXPERIMENTS, f"name/{name}")
        if doc is None:
            doc = {"experiment_id": uuid.uuid5(uuid.NAMESPACE_URL, name.lower()).hex, "name": name,
                   "artifact_location": "", "lifecycle_stage": "active", "tags": [],
                   "creation_time": _now_ms(), "last_update_time": _now_ms()}
            emu.store.put(EXPERIMENTS, f"name/{name}", doc)
            emu.store.put(EXPERIMENTS, f"id/{doc['experiment_id']}", doc)
    return doc["experiment_id"]


def open_run(emu: Emulator, run_id: str, *, experiment: str, name: str, tags: dict[str, str] | None = None) -> None:
    """The MLflow run of a job node (its id is the node's run id); kept as it is when it exists (a resume)."""
    exp = experiment_id(emu, experiment)
    with emu.lock:
        if emu.store.get(RUNS, run_id) is None:
            emu.store.put(RUNS, run_id, _new_run(run_id, exp, name, tags or {}))


def close_run(emu: Emulator, run_id: str, status: str) -> None:
    """A node ended: its run's status and end time (what Azure ML sets when the job's process exits)."""
    with emu.lock:
        doc = emu.store.get(RUNS, run_id)
        if doc is not None:
            doc["info"].update(status=status, end_time=_now_ms())
            emu.store.put(RUNS, run_id, doc)


def _new_run(run_id: str, exp: str, name: str, tags: dict[str, str]) -> dict[str, Any]:
    return {"info": {"run_id": run_id, "run_uuid": run_id, "experiment_id": exp, "run_name": name,
                     "user_id": "emulator user", "status": "RUNNING", "start_time": _now_ms(),
                     "artifact_uri": f"azureml://experiments/{exp}/runs/{run_id}/artifacts",
                     "lifecycle_stage": "active"},
            "metrics": [], "params": {}, "tags": {"mlflow.runName": name, **tags}}


def run_body(doc: dict[str, Any]) -> dict[str, Any]:
    """A stored run as MLflow's Run message: the latest value of each metric, params and tags as lists."""
    latest: dict[str, dict] = {}
    for m in doc["metrics"]:
        if m["key"] not in latest or (m["step"], m["timestamp"]) >= (latest[m["key"]]["step"], latest[m["key"]]["timestamp"]):
            latest[m["key"]] = m
    return {"info": doc["info"], "data": {
        "metrics": [latest[k] for k in sorted(latest)],
        "params": [{"key": k, "value": v} for k, v in sorted(doc["params"].items())],
        "tags": [{"key": k, "value": v} for k, v in sorted(doc["tags"].items())]}, "inputs": {}}


def stored_run(emu: Emulator, run_id: str) -> dict[str, Any] | None:
    return emu.store.get(RUNS, run_id)


def error(status: int, code: str, message: str) -> Reply:
    """An MLflow-shaped error (MLflow's client reads `error_code`, e.g. to answer None for a missing experiment)."""
    return Reply(status, {"error_code": code, "message": message})


def _missing(run_id: str) -> Reply:
    return error(404, "RESOURCE_DOES_NOT_EXIST", f"Run '{run_id}' not found")


def _update(emu: Emulator, run_id: str, change) -> Reply:
    with emu.lock:
        doc = emu.store.get(RUNS, run_id or "")
        if doc is None:
            return _missing(run_id)
        answer = change(doc)
        emu.store.put(RUNS, run_id, doc)
    return Reply(200, answer if answer is not None else {})


def _metric(m: dict[str, Any]) -> dict[str, Any]:
    return {"key": str(m["key"]), "value": float(m["value"]), "timestamp": int(m.get("timestamp") or _now_ms()),
            "step": int(m.get("step") or 0)}


@route("GET", API + r"/runs/get")
def get_run(emu: Emulator, req: Request, sub, rg, ws) -> Reply:
    doc = stored_run(emu, req.query.get("run_id") or req.query.get("run_uuid") or "")
    return Reply(200, {"run": run_body(doc)}) if doc else _missing(req.query.get("run_id", ""))


@route("POST", API + r"/runs/create")
def create_run(emu: Emulator, req: Request, sub, rg, ws) -> Reply:
    body = req.json
    run_id = uuid.uuid4().hex
    tags = {t["key"]: t["value"] for t in body.get("tags") or []}
    doc = _new_run(run_id, str(body.get("experiment_id") or experiment_id(emu, "Default")),
                   body.get("run_name") or tags.get("mlflow.runName") or run_id, tags)
    if body.get("start_time"):
        doc["info"]["start_time"] = int(body["start_time"])
    emu.store.put(RUNS, run_id, doc)
    return Reply(200, {"run": run_body(doc)})


@route("POST", API + r"/runs/update")
def update_run(emu: Emulator, req: Request, sub, rg, ws) -> Reply:
    body = req.json

    def change(doc):
        info = doc["info"]
        for key in ("status", "end_time", "run_name"):
            if body.get(key) is not None:
                info[key] = body[key]
        if body.get("run_name"):
            doc["tags"]["mlflow.runName"] = body["run_name"]
        return {"run_info": info}
    return _update(emu, body.get("run_id") or body.get("run_uuid"), change)


@route("POST", API + r"/runs/log-metric")
def log_metric(emu: Emulator, req: Request, sub, rg, ws) -> Reply:
    body = req.json
    return _update(emu, body.get("run_id") or body.get("run_uuid"), lambda doc: doc["metrics"].append(_metric(body)))


@route("POST", API + r"/runs/log-parameter")
def log_param(emu: Emulator, req: Request, sub, rg, ws) -> Reply:
    body = req.json
    return _update(emu, body.get("run_id") or body.get("run_uuid"),
                   lambda doc: doc["params"].__setitem__(body["key"], str(body.get("value", ""))))


@route("POST", API + r"/runs/set-tag")
def set_tag(emu: Emulator, req: Request, sub, rg, ws) -> Reply:
    body = req.json
    return _update(emu, body.get("run_id") or body.get("run_uuid"),
                   lambda doc: doc["tags"].__setitem__(body["key"], str(body.get("value", ""))))


@route("POST", API + r"/runs/log-batch")
def log_batch(emu: Emulator, req: Request, sub, rg, ws) -> Reply:
    body = req.json

    def change(doc):
        doc["metrics"] += [_metric(m) for m in body.get("metrics") or []]
        doc["params"].update({p["key"]: str(p.get("value", "")) for p in body.get("params") or []})
        doc["tags"].update({t["key"]: str(t.get("value", "")) for t in body.get("tags") or []})
    return _update(emu, body.get("run_id"), change)


@route("GET", API + r"/metrics/get-history")
def metric_history(emu: Emulator, req: Request, sub, rg, ws) -> Reply:
    run_id = req.query.get("run_id") or req.query.get("run_uuid") or ""
    doc = stored_run(emu, run_id)
    if doc is None:
        return _missing(run_id)
    key = req.query.get("metric_key", "")
    return Reply(200, {"metrics": [m for m in doc["metrics"] if m["key"] == key]})


@route("GET", API + r"/experiments/get")
def get_experiment(emu: Emulator, req: Request, sub, rg, ws) -> Reply:
    doc = emu.store.get(EXPERIMENTS, f"id/{req.query.get('experiment_id', '')}")
    if doc is None:
        return error(404, "RESOURCE_DOES_NOT_EXIST", f"No Experiment with id={req.query.get('experiment_id')} exists")
    return Reply(200, {"experiment": doc})


@route("GET", API + r"/experiments/get-by-name")
def get_experiment_by_name(emu: Emulator, req: Request, sub, rg, ws) -> Reply:
    doc = emu.store.get(EXPERIMENTS, f"name/{req.query.get('experiment_name', '')}")
    if doc is None:
        return error(404, "RESOURCE_DOES_NOT_EXIST",
                     f"Could not find experiment with name '{req.query.get('experiment_name')}'")
    return Reply(200, {"experiment": doc})


@route("POST", API + r"/experiments/create")
def create_experiment(emu: Emulator, req: Request, sub, rg, ws) -> Reply:
    return Reply(200, {"experiment_id": experiment_id(emu, str(req.json.get("name") or "Default"))})
