"""Job and node documents: what GET jobs/{name} and the run-history endpoints answer from.

A pipeline job's nodes are child runs named "<job>_<node>"; a node's outputs live in the datastore
at azureml/<child run>/<output>/ and its log at azureml/ExperimentRun/dcid.<child run>/user_logs/.
"""

from __future__ import annotations

from typing import Any

from slmforge.emulator.context import Emulator, now_iso

JOBS, NODES = "jobs", "job-nodes"
TERMINAL = ("Completed", "Failed", "Canceled")


def child_run_id(job: str, node: str) -> str:
    return f"{job}_{node}"


def output_path(run_id: str, output: str) -> str:
    return f"azureml/{run_id}/{output}/"


def log_blob(run_id: str) -> str:
    return f"azureml/ExperimentRun/dcid.{run_id}/user_logs/std_log.txt"


def get_job(emu: Emulator, name: str) -> dict | None:
    return emu.store.get(JOBS, name)


def update_job(emu: Emulator, name: str, **props: Any) -> dict:
    """Set top-level `properties` fields of a stored job (status, outputs, ...) atomically."""
    with emu.lock:
        doc = emu.store.get(JOBS, name)
        if doc is None:
            raise KeyError(name)
        doc["properties"].update(props)
        doc["systemData"]["lastModifiedAt"] = now_iso()
        times = doc.setdefault("runTimes", {})  # run history's start and end (not part of the ARM body)
        if props.get("status") == "Running":
            times.setdefault("startTimeUtc", now_iso())
        elif props.get("status") in TERMINAL:
            times["endTimeUtc"] = now_iso()
        emu.store.put(JOBS, name, doc)
        return doc


def nodes_of(emu: Emulator, job: str) -> list[dict]:
    return emu.store.list(NODES, f"{job}/")


def put_node(emu: Emulator, job: str, node: str, **fields: Any) -> dict:
    with emu.lock:
        doc = emu.store.get(NODES, f"{job}/{node}") or {
            "job": job, "node": node, "runId": child_run_id(job, node), "status": "NotStarted",
            "createdUtc": now_iso(), "outputs": {}}
        doc.update(fields)
        emu.store.put(NODES, f"{job}/{node}", doc)
        return doc


def find_node(emu: Emulator, run_id: str) -> dict | None:
    """The node whose child run id is `run_id` ("<job>_<node>": both may hold underscores)."""
    for cut in (i for i, c in enumerate(run_id) if c == "_"):
        for doc in emu.store.list(NODES, run_id[:cut] + "/"):
            if doc["runId"].lower() == run_id.lower():
                return doc
    return None
