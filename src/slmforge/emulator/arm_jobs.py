"""Jobs: PUT (stores and queues a pipeline job), GET, list, cancel."""

from __future__ import annotations

import re

from slmforge.emulator.arm_assets import system_data
from slmforge.emulator.context import Emulator, now_iso
from slmforge.emulator.jobstate import JOBS, TERMINAL, find_node, get_job, update_job
from slmforge.emulator.routing import WS, Reply, Request, error, not_found, route
from slmforge.emulator.studio import studio_url

JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,254}$")


def job_reply(emu: Emulator, doc: dict) -> dict:
    body = dict(doc)
    body.pop("runTimes", None)
    props = dict(body["properties"])
    props["services"] = {"Studio": {"jobServiceType": "Studio", "status": None,
                                    "endpoint": studio_url(emu, doc["name"])}}
    body["properties"] = props
    return body


@route("PUT", WS + r"/jobs/(?P<name>[^/]+)")
def put_job(emu: Emulator, req: Request, sub, rg, ws, name) -> Reply:
    if not JOB_NAME.match(name):
        return error(400, "UserError", f"invalid job name '{name}'")
    props = req.json.get("properties")
    if not isinstance(props, dict) or props.get("jobType") != "Pipeline":
        return error(400, "UserError", "the emulator runs pipeline jobs only (properties.jobType 'Pipeline')")
    existing = get_job(emu, name)
    if existing is not None:
        return error(409, "UserError", f"job '{name}' already exists (status {existing['properties']['status']})")
    props = dict(props)
    props.setdefault("experimentName", "Default")
    props.setdefault("displayName", name)
    props.setdefault("properties", {})
    props.setdefault("tags", {})
    props["status"] = "NotStarted"
    props["isArchived"] = False
    doc = {"id": f"{emu.ws_id}/jobs/{name}", "name": name,
           "type": "Microsoft.MachineLearningServices/workspaces/jobs",
           "systemData": system_data(now_iso()), "properties": props}
    emu.store.put(JOBS, name, doc)
    if emu.executor is not None:
        emu.executor.submit(name)
    return Reply(201, job_reply(emu, doc))


@route("GET", WS + r"/jobs/(?P<name>[^/]+)")
def get_job_route(emu: Emulator, req: Request, sub, rg, ws, name) -> Reply:
    doc = get_job(emu, name)
    if doc is None and (node := find_node(emu, name)) is not None:
        doc = child_job(emu, node)
    return Reply(200, job_reply(emu, doc)) if doc else not_found(f"job '{name}'")


def child_job(emu: Emulator, node: dict) -> dict | None:
    """A pipeline node as the command job it ran as (what `jobs.get` / `jobs.stream` of a step read)."""
    parent = get_job(emu, node["job"])
    spec = ((parent or {}).get("properties", {}).get("jobs") or {}).get(node["node"])
    if spec is None:
        return None
    match = re.search(r"/components/([^/]+)/versions/([^/]+)$", spec.get("componentId", ""))
    component = emu.store.get("components", f"{match.group(1)}/{match.group(2)}") if match else None
    comp_spec = (component or {}).get("properties", {}).get("componentSpec", {})
    props = parent["properties"]
    return {"id": f"{emu.ws_id}/jobs/{node['runId']}", "name": node["runId"],
            "type": "Microsoft.MachineLearningServices/workspaces/jobs",
            "systemData": system_data(node["createdUtc"]),
            "properties": {
                "jobType": "Command", "status": node["status"], "displayName": node["node"],
                "experimentName": props.get("experimentName"), "command": comp_spec.get("command", ""),
                "environmentId": comp_spec.get("environment", "").removeprefix("azureml:"),
                "codeId": comp_spec.get("code", "").removeprefix("azureml:") or None,
                "computeId": spec.get("computeId") or (props.get("settings") or {}).get("default_compute"),
                "environmentVariables": spec.get("environment_variables") or {},
                "inputs": {}, "outputs": {}, "tags": {}, "isArchived": False,
                "properties": {"azureml.nodeid": node["node"], "azureml.pipelinerunid": node["job"]},
                "parentJobName": node["job"]}}


@route("GET", WS + r"/jobs")
def list_jobs(emu: Emulator, req: Request, sub, rg, ws) -> Reply:
    docs = list(reversed(emu.store.list(JOBS)))
    if tag := req.query.get("tag"):
        docs = [d for d in docs if tag in d["properties"].get("tags", {})]
    if job_type := req.query.get("jobtype"):
        docs = [d for d in docs if d["properties"].get("jobType", "").lower() == job_type.lower()]
    return Reply(200, {"value": [job_reply(emu, d) for d in docs], "nextLink": None})


@route("POST", WS + r"/jobs/(?P<name>[^/]+)/cancel")
def cancel_job(emu: Emulator, req: Request, sub, rg, ws, name) -> Reply:
    doc = get_job(emu, name)
    if doc is None:
        return not_found(f"job '{name}'")
    if doc["properties"]["status"] not in TERMINAL:
        if emu.executor is not None and emu.executor.cancel(name):
            pass  # the executor moves it to Canceled when its running node has stopped
        else:
            update_job(emu, name, status="Canceled")
    return Reply(200, None)
