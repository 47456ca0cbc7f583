"""The studio link of a job: `<emulator>/runs/<job>?wsid=<workspace id>&tid=<tenant>`, shaped like Azure ML
studio's `https://ml.azure.com/runs/<job>?wsid=...&tid=...`, answering a page with the job's status, its
steps and each step's latest MLflow metrics (a pipeline node's run id works too)."""

from __future__ import annotations

import html
from urllib.parse import quote

from slmforge.emulator.context import Emulator
from slmforge.emulator.jobstate import find_node, get_job, nodes_of
from slmforge.emulator.mlflow_api import run_body, stored_run
from slmforge.emulator.routing import Reply, Request, route


def studio_url(emu: Emulator, job: str) -> str:
    """What the service answers as a job's Studio endpoint; the SDK appends `&tid=<tenant>` from the token
    (jobs.get), so it must already carry its `?` (without it the SDK's link was `.../<job>&tid=...`: a 404)."""
    return f"{emu.base_url}/runs/{quote(job)}?wsid={quote(emu.ws_id)}"


def _metrics_text(emu: Emulator, run_id: str) -> str:
    doc = stored_run(emu, run_id)
    if doc is None:
        return ""
    return ", ".join(f"{m['key']} {m['value']:.4g}" for m in run_body(doc)["data"]["metrics"])


@route("GET", r"/runs/(?P<name>[^/]+)")
def studio_page(emu: Emulator, req: Request, name) -> Reply:
    job = get_job(emu, name)
    if job is None and (node := find_node(emu, name)) is not None:
        job = get_job(emu, node["job"])
    if job is None:
        return Reply(404, f"no job or run named {name} in the emulated workspace\n")
    props = job["properties"]
    rows = "".join(
        f"<tr><td>{html.escape(n['node'])}</td><td>{html.escape(n['status'])}</td>"
        f"<td>{html.escape(_metrics_text(emu, n['runId']))}</td></tr>" for n in nodes_of(emu, job["name"]))
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(job['name'])}</title></head><body>"
            f"<h1>{html.escape(job['name'])}: {html.escape(props['status'])}</h1>"
            f"<p>experiment {html.escape(str(props.get('experimentName')))} in {html.escape(emu.ws_id)} "
            f"(slmforge emulator)</p><table><tr><th>step</th><th>status</th><th>metrics</th></tr>{rows}</table>"
            f"</body></html>")
    return Reply(200, page, headers={"Content-Type": "text/html; charset=utf-8"})
