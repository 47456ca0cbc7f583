"""Runs submitted pipeline jobs in the background, one node at a time in dependency order.

Each node: its component's code snapshot from Azurite, inputs fetched to local paths, the command
rendered with contract.render and run with this Python (cwd and PYTHONPATH = the snapshot) once a
slmforge step's environment is found to declare what the step imports (emulator.environments), the log
kept per node, outputs uploaded to azureml/<child run>/<output>/ in the datastore.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from slmforge.emulator import azurite, jobstate, mlflow_api
from slmforge.emulator.context import Emulator, now_iso
from slmforge.emulator.environments import environment_problem
from slmforge.emulator.materialize import code_snapshot, fetch, upload_output
from slmforge.errors import SlmforgeError
from slmforge.secrets import KEYVAULT_ENV

log = logging.getLogger("slmforge.emulator.executor")
_BINDING = re.compile(r"^\$\{\{\s*parent\.(inputs|jobs)\.([A-Za-z0-9_]+)(?:\.outputs\.([A-Za-z0-9_]+))?\s*\}\}$")
# Never handed to a step: secrets of the user who started the emulator.
_SCRUBBED_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PASSWORD",
                 "MSI_SECRET", "IDENTITY_HEADER", "REQUESTS_CA_BUNDLE")
LOG_UPLOAD_S = 3.0


class Canceled(Exception):
    pass


def node_order(nodes: dict[str, dict]) -> list[str]:
    """Topological order of the pipeline's nodes by their ${{parent.jobs.X.outputs.y}} bindings."""
    deps = {name: set() for name in nodes}
    for name, node in nodes.items():
        for spec in (node.get("inputs") or {}).values():
            m = _BINDING.match(str(spec.get("value", "")))
            if m and m.group(1) == "jobs":
                deps[name].add(m.group(2))
    order: list[str] = []
    while deps:
        ready = sorted(n for n, d in deps.items() if not d - set(order))
        if not ready:
            raise SlmforgeError(f"pipeline nodes depend on each other in a cycle: {sorted(deps)}")
        order += ready
        for n in ready:
            del deps[n]
    return order


class Executor:
    def __init__(self, emu: Emulator):
        self.emu = emu
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._canceled: set[str] = set()
        self._current: tuple[str, subprocess.Popen] | None = None
        self._lock = threading.Lock()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="emulator-executor", daemon=True)
        self._thread.start()

    # --- control ----------------------------------------------------------------------------
    def submit(self, name: str) -> None:
        jobstate.update_job(self.emu, name, status="Queued")
        self._queue.put(name)

    def resume(self) -> None:
        """Requeue jobs a previous run of the emulator left unfinished."""
        for doc in self.emu.store.list(jobstate.JOBS):
            if doc["properties"]["status"] not in jobstate.TERMINAL:
                self.submit(doc["name"])

    def cancel(self, name: str) -> bool:
        with self._lock:
            self._canceled.add(name)
            current = self._current
        if current and current[0] == name:
            _kill(current[1])
        return True

    def shutdown(self) -> None:
        self._stopping = True
        with self._lock:
            current = self._current
        if current:
            _kill(current[1])
        self._queue.put(None)
        self._thread.join(timeout=10)

    # --- the loop -------------------------------------------------------------------------------
    def _loop(self) -> None:
        while (name := self._queue.get()) is not None:
            try:
                self._run_job(name)
            except Exception:  # keep the executor alive for the next job
                log.exception("job %s: executor error", name)
                if not self._stopping:
                    jobstate.update_job(self.emu, name, status="Failed")

    def _run_job(self, name: str) -> None:
        emu = self.emu
        doc = jobstate.get_job(emu, name)
        if doc is None or doc["properties"]["status"] in jobstate.TERMINAL:
            return
        if name in self._canceled:
            jobstate.update_job(emu, name, status="Canceled")
            return
        props = doc["properties"]
        nodes = props.get("jobs") or {}
        order = node_order(nodes)
        for node in order:
            if (state := jobstate.put_node(emu, name, node))["status"] != "Completed":
                _stop_leftover(state)
                jobstate.put_node(emu, name, node, status="NotStarted", error=None, pid=None)
        jobstate.update_job(emu, name, status="Running")
        workdir = emu.dir / "runs" / name
        local_outputs: dict[tuple[str, str], Path] = {}
        failed: str | None = None
        for node in order:
            state = jobstate.put_node(emu, name, node)
            if failed or self._stopping or name in self._canceled:
                if self._stopping:
                    return  # left Running: resumed at the next start
                jobstate.put_node(emu, name, node, status="Canceled")
                continue
            try:
                self._run_node(name, node, nodes[node], props, workdir, local_outputs, done=state)
            except Canceled:
                if self._stopping:
                    jobstate.put_node(emu, name, node, status="NotStarted")
                    return
                jobstate.put_node(emu, name, node, status="Canceled", endTimeUtc=now_iso())
            except Exception as e:
                message = e.args[0] if isinstance(e, SlmforgeError) and e.args else f"{type(e).__name__}: {e}"
                log.info("job %s node %s failed: %s", name, node, message)
                jobstate.put_node(emu, name, node, status="Failed", error=message, endTimeUtc=now_iso())
                failed = node
                props_update = dict(props.get("properties") or {})
                props_update.update({"azureml.failedNode": node, "azureml.failureReason": message[:500]})
                jobstate.update_job(emu, name, properties=props_update)
        status = "Canceled" if name in self._canceled else "Failed" if failed else "Completed"
        jobstate.update_job(emu, name, status=status)
        shutil.rmtree(workdir / "data", ignore_errors=True)

    # --- one node ---------------------------------------------------------------------------------
    def _run_node(self, job: str, node: str, spec: dict, props: dict, workdir: Path,
                  local_outputs: dict[tuple[str, str], Path], done: dict) -> None:
        from slmforge.contract.render import render_command, step_module

        emu = self.emu
        run_id = jobstate.child_run_id(job, node)
        component = self._component(spec["componentId"])
        comp_spec = component["properties"]["componentSpec"]
        ndir = workdir / "data" / node
        values: dict[str, Any] = {}
        out_uris: dict[str, str] = {}
        for out_name, decl in (comp_spec.get("outputs") or {}).items():
            local = ndir / "outputs" / out_name
            local.mkdir(parents=True, exist_ok=True)
            is_file = decl.get("type") == "uri_file"
            values[f"outputs.{out_name}"] = str(local / out_name) if is_file else str(local)
            local_outputs[(node, out_name)] = Path(values[f"outputs.{out_name}"])
            out_uris[out_name] = self._output_path(spec, props, out_name, run_id)
        if done.get("status") == "Completed":  # finished before a restart: reuse its uploaded outputs
            for out_name, path in out_uris.items():
                fetch(emu, emu.datastore_uri(path), ndir / "outputs" / out_name, is_file=False)
            return  # and keep its stored state (status, times, outputs) as it was
        jobstate.put_node(emu, job, node, status="Queued", compute=_compute_name(spec, props))
        log_path = workdir / "logs" / f"{node}.txt"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        # A workspace builds the image first: a slmforge step whose environment lacks its requirements fails here.
        if step_module(str(comp_spec["command"]).split()) and \
                (problem := environment_problem(emu, comp_spec.get("environment"))):
            log_path.write_text(f"slmforge emulator: node '{node}' not started: {problem}\n")
            self._upload_log(run_id, log_path)
            jobstate.put_node(emu, job, node, startTimeUtc=now_iso())  # so its log is listed, like a build log
            raise SlmforgeError(f"node '{node}': {problem}")
        for input_name, decl in (comp_spec.get("inputs") or {}).items():
            values[f"inputs.{input_name}"] = self._input_value(
                job, spec, props, input_name, decl, ndir / "inputs" / input_name, local_outputs)
        code = code_snapshot(emu, comp_spec["code"]) if comp_spec.get("code") else ndir
        argv = render_command(" ".join(str(comp_spec["command"]).split()), values)
        if argv and Path(argv[0]).name in ("python", "python3"):
            argv[0] = sys.executable
        env = self._environment(job, spec, comp_spec, code, run_id)
        env.update(self._tracking(job, run_id, node, props))
        jobstate.put_node(emu, job, node, status="Running", startTimeUtc=now_iso())
        try:
            with open(log_path, "wb") as log_file:
                with self._lock:  # shutdown() reads _current under this lock: no step starts unseen
                    if self._stopping:
                        raise Canceled()
                    proc = subprocess.Popen(argv, cwd=str(code), env=env, stdout=log_file,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)
                    self._current = (job, proc)
                jobstate.put_node(emu, job, node, pid=proc.pid)  # a killed emulator's next start stops it
                while True:  # the log goes up every few seconds, so `jobs.stream` can follow it
                    try:
                        rc = proc.wait(timeout=LOG_UPLOAD_S)
                        break
                    except subprocess.TimeoutExpired:
                        self._upload_log(run_id, log_path)
        finally:
            with self._lock:
                self._current = None
            emu.revoke_msi(run_id)
            self._upload_log(run_id, log_path)
        mlflow_api.close_run(emu, run_id, "FINISHED" if rc == 0 else "KILLED" if rc < 0 else "FAILED")
        if job in self._canceled or self._stopping:
            raise Canceled()
        if rc != 0:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or [""]
            raise SlmforgeError(f"node '{node}' exited with code {rc}: {tail[0][:300]}")
        uploaded = {}
        for out_name, path in out_uris.items():
            src = local_outputs[(node, out_name)]
            uploaded[out_name] = upload_output(emu, src, path)
            self._bind_pipeline_output(job, spec, out_name, uploaded[out_name])
        jobstate.put_node(emu, job, node, status="Completed", endTimeUtc=now_iso(), outputs=uploaded)

    def _tracking(self, job: str, run_id: str, node: str, props: dict) -> dict[str, str]:
        """What Azure ML gives a job for MLflow: the workspace's tracking URI, a token, the node's own run (its
        id is the node's run id) and experiment; plus, here only, the emulator's certificate for plain MLflow."""
        experiment = props.get("experimentName") or "Default"
        mlflow_api.open_run(self.emu, run_id, experiment=experiment, name=node,
                            tags={"azureml.pipelinerunid": job, "azureml.nodeid": node})
        return {"MLFLOW_TRACKING_URI": self.emu.mlflow_tracking_uri,
                "MLFLOW_TRACKING_TOKEN": secrets.token_urlsafe(24), "MLFLOW_RUN_ID": run_id,
                "MLFLOW_EXPERIMENT_ID": mlflow_api.experiment_id(self.emu, experiment),
                "MLFLOW_EXPERIMENT_NAME": experiment,
                "MLFLOW_TRACKING_SERVER_CERT_PATH": str(self.emu.ca_file)}

    def _upload_log(self, run_id: str, log_path: Path) -> None:
        if log_path.is_file():
            with open(log_path, "rb") as f:
                self.emu.blob.get_container_client(azurite.DATASTORE_CONTAINER).upload_blob(
                    jobstate.log_blob(run_id), f, overwrite=True)

    def _component(self, component_id: str) -> dict:
        m = re.search(r"/components/([^/]+)/versions/([^/]+)$", component_id)
        doc = self.emu.store.get("components", f"{m.group(1)}/{m.group(2)}") if m else None
        if doc is None:
            raise SlmforgeError(f"component {component_id} is not in the workspace")
        return doc

    def _input_value(self, job, spec, props, name, decl, dest: Path, local_outputs) -> Any:
        given = (spec.get("inputs") or {}).get(name)
        if given is None:
            return decl.get("default")
        value = given.get("value")
        uri = given.get("uri")
        if isinstance(value, str) and (m := _BINDING.match(value)):
            if m.group(1) == "jobs":
                return str(local_outputs[(m.group(2), m.group(3))])
            top = (props.get("inputs") or {}).get(m.group(2))
            if top is None:
                return decl.get("default")
            value, uri = top.get("value"), top.get("uri")
        if uri is None:
            return _literal(value, decl.get("type"))
        return str(fetch(self.emu, uri, dest, is_file=decl.get("type") == "uri_file"))

    def _output_path(self, spec: dict, props: dict, out_name: str, run_id: str) -> str:
        """Datastore path of a node output: the bound pipeline output's own path if it has one."""
        out = (spec.get("outputs") or {}).get(out_name) or {}
        target = out
        m = _BINDING.match(str(out.get("value", "")))
        if m and m.group(1) == "outputs":
            target = (props.get("outputs") or {}).get(m.group(2)) or {}
        uri = target.get("uri") or out.get("uri")
        if uri:
            from slmforge.emulator.materialize import _DATASTORE

            if md := _DATASTORE.match(uri.replace("${{name}}", run_id)):
                return md.group(2).rstrip("/") + "/"
        return jobstate.output_path(run_id, out_name)

    def _bind_pipeline_output(self, job: str, spec: dict, out_name: str, uri: str) -> None:
        out = (spec.get("outputs") or {}).get(out_name) or {}
        m = re.match(r"^\$\{\{\s*parent\.outputs\.([A-Za-z0-9_]+)\s*\}\}$", str(out.get("value", "")))
        if not m:
            return
        from slmforge.emulator.runhistory import OUTPUTS

        with self.emu.lock:
            resolved = self.emu.store.get(OUTPUTS, job) or {}
            resolved[m.group(1)] = uri
            self.emu.store.put(OUTPUTS, job, resolved)
        doc = jobstate.get_job(self.emu, job)
        outputs = dict(doc["properties"].get("outputs") or {})
        outputs[m.group(1)] = dict(outputs.get(m.group(1)) or {"jobOutputType": "uri_folder"}, uri=uri)
        jobstate.update_job(self.emu, job, outputs=outputs)

    def _environment(self, job: str, spec: dict, comp_spec: dict, code: Path, run_id: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
        env.update({str(k): str(v) for k, v in (spec.get("environment_variables") or {}).items()})
        env.update({"PYTHONPATH": str(code), "AZUREML_RUN_ID": run_id, "AZUREML_ROOT_RUN_ID": job,
                    "PYTHONUNBUFFERED": "1"})
        if env.get(KEYVAULT_ENV):
            # Only the vault's address and this run's identity; the step reads the secret itself.
            env[KEYVAULT_ENV] = self.emu.vault_url()
            env["MSI_ENDPOINT"] = f"{self.emu.base_url}/msi/token"
            env["MSI_SECRET"] = self.emu.issue_msi(run_id)
            env["REQUESTS_CA_BUNDLE"] = str(self.emu.ca_file)
        return env


def _literal(value: Any, kind: str | None) -> Any:
    if value is None or not isinstance(value, str):
        return value
    if kind == "boolean":
        return value.strip().lower() == "true"
    if kind == "integer":
        return int(value)
    if kind == "number":
        return float(value)
    return value


def _compute_name(spec: dict, props: dict) -> str | None:
    compute = spec.get("computeId") or (props.get("settings") or {}).get("default_compute")
    return compute.rsplit("/", 1)[-1] if compute else None


def _stop_leftover(node: dict) -> None:
    """Kill the step a killed emulator left running (its process group, found by the pid and run id
    it stored), so a rerun never shares its output folder with an orphan of the previous run."""
    pid = node.get("pid")
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if pid else []
    except OSError:  # gone already (or not ours to read)
        return
    if f"AZUREML_RUN_ID={node['runId']}".encode() not in environ:
        return  # the pid was reused by something else
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return
    for _ in range(100):
        try:  # gone, or a zombie its new parent has yet to reap
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return
        except OSError:
            return
        time.sleep(0.05)


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        pass
