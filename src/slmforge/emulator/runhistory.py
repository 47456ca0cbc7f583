"""Run history and data-plane endpoints: child runs (pipeline nodes), run details with log files,
run data with the named outputs, and asset-id -> URI resolution (what `jobs.download` uses)."""

from __future__ import annotations

from slmforge.emulator import azurite
from slmforge.emulator.context import Emulator
from slmforge.emulator.jobstate import find_node, get_job, log_blob, nodes_of
from slmforge.emulator.routing import WS, Reply, Request, not_found, route

HISTORY = r"/history/v1\.0" + WS + r"(?:/experiments/[^/]+|/experimentids/[^/]+)?"
OUTPUTS = "job-outputs"


def asset_id(emu: Emulator, job: str, output: str) -> str:
    return f"azureml://locations/local/workspaces/{emu.config.workspace}/data/azureml_{job}_output_data_{output}/versions/1"


def node_run(emu: Emulator, doc: dict) -> dict:
    return {"runId": doc["runId"], "name": doc["runId"], "displayName": doc["node"],
            "parentRunId": doc["job"], "rootRunId": doc["job"], "experimentId": "Default",
            "status": doc["status"], "createdUtc": doc["createdUtc"], "startTimeUtc": doc.get("startTimeUtc"),
            "endTimeUtc": doc.get("endTimeUtc"), "runType": "azureml.StepRun", "target": doc.get("compute"),
            "properties": {"azureml.nodeid": doc["node"], "azureml.pipelinerunid": doc["job"]},
            "tags": {}, "error": ({"error": {"code": "UserError", "message": doc["error"]}}
                                  if doc.get("error") else None)}


def job_run(emu: Emulator, job: dict) -> dict:
    name = job["name"]
    outputs = emu.store.get(OUTPUTS, name) or {}
    return {"runId": name, "name": name, "displayName": job["properties"].get("displayName"),
            "status": job["properties"]["status"], "experimentId": job["properties"].get("experimentName"),
            "createdUtc": job["systemData"]["createdAt"], "runType": "azureml.PipelineRun",
            "properties": {}, "tags": {k: str(v) for k, v in job["properties"].get("tags", {}).items()},
            "outputs": {o: {"assetId": asset_id(emu, name, o), "type": "uri_folder"} for o in outputs}}


@route("POST", r"/history/v1\.0" + WS + r"/rundata")
def run_data(emu: Emulator, req: Request, sub, rg, ws) -> Reply:
    run_id = req.json.get("runId", "")
    job = get_job(emu, run_id)
    if job is None:
        return not_found(f"run '{run_id}'")
    return Reply(200, {"runMetadata": job_run(emu, job), "runDefinition": {}, "jobSpecification": {}})


@route("GET", HISTORY + r"/runs/(?P<run>[^/]+)/children")
def children(emu: Emulator, req: Request, sub, rg, ws, run) -> Reply:
    if get_job(emu, run) is None:
        return not_found(f"run '{run}'")
    return Reply(200, {"value": [node_run(emu, d) for d in nodes_of(emu, run)], "nextLink": None})


@route("GET", HISTORY + r"/runs/(?P<run>[^/]+)/details")
def details(emu: Emulator, req: Request, sub, rg, ws, run) -> Reply:
    node = find_node(emu, run)
    if node is None:
        job = get_job(emu, run)
        if job is None:
            return not_found(f"run '{run}'")
        return Reply(200, {"runId": run, "status": job["properties"]["status"], "logFiles": {},
                           **job.get("runTimes", {})})
    logs = {}
    if node.get("startTimeUtc"):
        sas = azurite.container_sas(azurite.DATASTORE_CONTAINER, write=False)
        url = f"{azurite.account_url(emu.config.azurite_port)}/{azurite.DATASTORE_CONTAINER}/{log_blob(run)}"
        logs["user_logs/std_log.txt"] = f"{url}?{sas}"
    body = node_run(emu, node)
    body["logFiles"] = logs
    return Reply(200, body)


@route("POST", r"/data/v1\.0" + WS + r"/dataversion/batchGetResolvedUris")
def resolve_uris(emu: Emulator, req: Request, sub, rg, ws) -> Reply:
    values = {}
    for aid in req.json.get("values", []):
        _, _, rest = aid.partition("/data/azureml_")
        job_and_output, _, _ = rest.partition("/versions/")
        job, sep, output = job_and_output.partition("_output_data_")
        uri = (emu.store.get(OUTPUTS, job) or {}).get(output) if sep else None
        if uri:
            values[aid] = {"uri": uri, "type": "uri_folder"}
    return Reply(200, {"values": values})
