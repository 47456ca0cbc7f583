"""The emulated Azure ML workspace, driven by the real azure-ai-ml SDK (Azurite for storage).

One emulator per session (tmp dir, free loopback ports); tests share it and run in file order:
the restart test comes late on purpose. (No `from __future__ import annotations` here: the DSL
reads the pipeline function's annotations as types.)
"""


import hashlib
import json
import secrets
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from slmforge.emulator import control

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="session")
def ml(emulator):
    from slmforge.emulator.client import ml_client

    return ml_client(emulator[1])


@pytest.fixture(scope="session")
def code_dir(tmp_path_factory) -> Path:
    code = tmp_path_factory.mktemp("code")
    (code / "write.py").write_text(
        "import pathlib, sys\n"
        "out = pathlib.Path(sys.argv[2]); out.mkdir(parents=True, exist_ok=True)\n"
        "text = sys.argv[1]\n"
        "if len(sys.argv) > 3:\n"
        "    text += '|' + pathlib.Path(sys.argv[3]).joinpath('result.txt').read_text()\n"
        "(out / 'result.txt').write_text(text)\n"
        "print('wrote', out)\n"
    )
    (code / "fail.py").write_text("import sys\nprint('about to fail')\nsys.exit('boom: bad input row 7')\n")
    (code / "secret_step.py").write_text(
        "import hashlib, os, pathlib, sys\n"
        "from slmforge.secrets import hf_token\n"
        "token = hf_token()\n"
        "out = pathlib.Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)\n"
        "in_env = any(token in v for v in os.environ.values())\n"
        "(out / 'digest.txt').write_text(hashlib.sha256(token.encode()).hexdigest())\n"
        "(out / 'env.txt').write_text('token in env' if in_env else 'env clean')\n"
        "print('read the secret, length', len(token))\n"
    )
    return code


def _component(code: Path, command: str, inputs=None, outputs=("out",), name=None, version=None):
    from azure.ai.ml import Input, Output
    from azure.ai.ml.entities import CommandComponent, Environment

    return CommandComponent(
        name=name, version=version, code=str(code), command=command,
        environment=Environment(image="python:3.11-slim"),
        inputs={k: Input(type=v) for k, v in (inputs or {"msg": "string"}).items()},
        outputs={o: Output(type="uri_folder") for o in outputs},
    )


def _pipeline(first, second=None, compute="cpu-cluster", env_vars=None):
    from azure.ai.ml import dsl

    @dsl.pipeline(default_compute=compute)
    def pipe(msg: str):
        a = first(msg=msg)
        if env_vars:
            a.environment_variables = env_vars
        if second is None:
            return {"result": a.outputs.out}
        b = second(msg=msg, prev=a.outputs.out)
        return {"result": b.outputs.out}

    return pipe(msg="hello")


def _wait(ml, name: str, timeout: float = 90.0):
    """Poll like a follower does: a transient 429/503 that outlasted the SDK's own retries is skipped."""
    from azure.core.exceptions import HttpResponseError

    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        try:
            job = ml.jobs.get(name)
        except HttpResponseError as e:
            if e.status_code not in (429, 503):
                raise
            continue
        status = job.status
        if status in ("Completed", "Failed", "Canceled"):
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {name} still {status} after {timeout}s")


def _counters(folder: Path) -> dict:
    return control.admin(folder, "GET", "counters")


# --- basic resources ------------------------------------------------------------------------------

def test_workspace_compute_and_datastore(ml):
    ws = ml.workspaces.get()
    assert ws.name == "emulated-workspace"
    assert ml.compute.get("gpu-cluster").size == "STANDARD_NC6S_V3"
    assert {c.name for c in ml.compute.list()} == {"cpu-cluster", "gpu-cluster"}
    store = ml.datastores.get("workspaceblobstore")
    assert store.account_name == "devstoreaccount1"
    assert ml.datastores.get_default().name == "workspaceblobstore"
    from azure.core.exceptions import ResourceNotFoundError

    with pytest.raises(ResourceNotFoundError, match="known: cpu-cluster, gpu-cluster"):
        ml.compute.get("no-such-cluster")


def test_unknown_route_answers_404_with_a_clear_body(emulator):
    folder, ws_file = emulator
    info = json.loads(ws_file.read_text())
    ctx = ssl.create_default_context(cafile=info["ca_bundle"])
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{info['endpoint']}/no/such/thing?x=1", context=ctx, timeout=5)
    assert err.value.code == 404
    body = json.loads(err.value.read())
    assert "does not implement GET /no/such/thing" in body["error"]["message"]


def test_another_workspace_is_not_found_on_any_workspace_route(emulator):
    """The server checks the workspace scope once, before every workspace-scoped handler."""
    folder, ws_file = emulator
    info = json.loads(ws_file.read_text())
    ctx = ssl.create_default_context(cafile=info["ca_bundle"])
    base = (f"{info['endpoint']}/subscriptions/{info['subscription_id']}/resourceGroups/{info['resource_group']}"
            "/providers/Microsoft.MachineLearningServices/workspaces")
    for route in ("", "/computes/cpu-cluster", "/datastores/workspaceblobstore", "/jobs"):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{base}/not-this-one{route}?api-version=2024-04-01", context=ctx, timeout=5)
        assert err.value.code == 404
        assert "not-this-one does not exist; this emulator serves" in json.loads(err.value.read())["error"]["message"]


def test_component_create_and_code_upload_is_reused(ml, emulator, code_dir):
    folder, _ = emulator
    comp = _component(code_dir, "python write.py ${{inputs.msg}} ${{outputs.out}}", name="writer", version="1")
    before = _counters(folder).get("start_pending_upload", 0)
    created = ml.components.create_or_update(comp)
    assert (created.name, created.version) == ("writer", "1")
    assert _counters(folder).get("start_pending_upload", 0) == before + 1
    got = ml.components.get("writer", "1")
    assert "write.py" in got.command and "/codes/" in got.code
    # The code went to Azurite: the snapshot is there, under the datastore container.
    code_id = got.code.split("/codes/")[1].split("/")[0]
    code_asset = ml._code.get(code_id, "1")
    assert "127.0.0.1" in code_asset.path and "LocalUpload" in code_asset.path
    # Same code again (another component): found by hash, no second upload.
    comp2 = _component(code_dir, "python write.py ${{inputs.msg}}-2 ${{outputs.out}}", name="writer2", version="1")
    ml.components.create_or_update(comp2)
    assert _counters(folder).get("start_pending_upload", 0) == before + 1


def test_model_from_local_folder_registers_lists_and_downloads(ml, tmp_path):
    from azure.ai.ml.entities import Model

    src = tmp_path / "model"
    src.mkdir()
    (src / "weights.bin").write_bytes(b"\x00\x01" * 100)
    (src / "config.json").write_text('{"a": 1}')
    m1 = ml.models.create_or_update(Model(name="local-model", path=str(src), type="custom_model"))
    m2 = ml.models.create_or_update(Model(name="local-model", path=str(src), type="custom_model",
                                          tags={"k": "v"}))
    assert (m1.version, m2.version) == ("1", "2")
    assert [m.version for m in ml.models.list(name="local-model")] == ["2", "1"] or \
        sorted(m.version for m in ml.models.list(name="local-model")) == ["1", "2"]
    assert "local-model" in {m.name for m in ml.models.list()}
    assert ml.models.get("local-model", "2").tags == {"k": "v"}
    out = tmp_path / "down"
    ml.models.download("local-model", "2", download_path=str(out))
    files = {p.name for p in out.rglob("*") if p.is_file()}
    assert files == {"weights.bin", "config.json"}


# --- pipeline jobs -------------------------------------------------------------------------------

def test_pipeline_job_completes_and_its_output_downloads_and_registers(ml, emulator, code_dir, tmp_path):
    from azure.ai.ml.entities import Model

    first = _component(code_dir, "python write.py ${{inputs.msg}} ${{outputs.out}}")
    second = _component(code_dir, "python write.py ${{inputs.msg}}-b ${{outputs.out}} ${{inputs.prev}}",
                        inputs={"msg": "string", "prev": "uri_folder"})
    job = ml.jobs.create_or_update(_pipeline(first, second), experiment_name="emulator-tests")
    assert job.status in ("NotStarted", "Queued", "Running")
    done = _wait(ml, job.name)
    assert done.status == "Completed"
    children = {c.display_name: c.status for c in ml.jobs.list(parent_job_name=job.name)}
    assert children == {"a": "Completed", "b": "Completed"}
    ml.jobs.download(job.name, download_path=str(tmp_path), output_name="result")
    result = tmp_path / "named-outputs" / "result" / "result.txt"
    assert result.read_text() == "hello-b|hello"
    model = ml.models.create_or_update(
        Model(name="from-job", path=f"azureml://jobs/{job.name}/outputs/result", type="custom_model"))
    assert "datastores/workspaceblobstore" in model.path
    ml.models.download("from-job", model.version, download_path=str(tmp_path / "m"))
    assert [p.read_text() for p in (tmp_path / "m").rglob("result.txt")] == ["hello-b|hello"]
    assert job.name in {j.name for j in ml.jobs.list()}


def test_failing_node_fails_the_job_and_names_the_node(ml, code_dir):
    ok = _component(code_dir, "python write.py ${{inputs.msg}} ${{outputs.out}}")
    bad = _component(code_dir, "python fail.py ${{inputs.msg}} ${{outputs.out}} ${{inputs.prev}}",
                     inputs={"msg": "string", "prev": "uri_folder"})
    job = ml.jobs.create_or_update(_pipeline(ok, bad))
    done = _wait(ml, job.name)
    assert done.status == "Failed"
    assert done.properties["azureml.failedNode"] == "b"
    assert "boom: bad input row 7" in done.properties["azureml.failureReason"]
    children = {c.display_name: c.status for c in ml.jobs.list(parent_job_name=job.name)}
    assert children == {"a": "Completed", "b": "Failed"}


def test_cancel_stops_a_running_job(ml, code_dir):
    slow = _component(code_dir, "python -c \"import time; time.sleep(60)\" ${{inputs.msg}} ${{outputs.out}}")
    job = ml.jobs.create_or_update(_pipeline(slow))
    deadline = time.monotonic() + 30
    while ml.jobs.get(job.name).status != "Running" and time.monotonic() < deadline:
        time.sleep(0.2)
    ml.jobs.begin_cancel(job.name).result()
    assert _wait(ml, job.name, timeout=20).status == "Canceled"


def test_secret_reaches_the_step_and_nothing_else(ml, emulator, code_dir, tmp_path):
    from slmforge.emulator.client import secret_client

    folder, _ = emulator
    token = "hf_" + secrets.token_hex(16)
    secret_client(emulator[1]).set_secret("hf-token", token)
    step = _component(code_dir, "python secret_step.py ${{outputs.out}} ${{inputs.msg}}")
    job = ml.jobs.create_or_update(_pipeline(step, env_vars={"SLMFORGE_KEYVAULT": "kv-emulator"}))
    done = _wait(ml, job.name)
    assert done.status == "Completed", done.properties
    ml.jobs.download(job.name, download_path=str(tmp_path), output_name="result")
    out = tmp_path / "named-outputs" / "result"
    assert (out / "digest.txt").read_text() == hashlib.sha256(token.encode()).hexdigest()
    assert (out / "env.txt").read_text() == "env clean"
    # Nowhere at rest but the vault: not in logs, run folders, job bodies or Azurite's files.
    leaks = [p for p in folder.rglob("*") if p.is_file() and p.name != "secrets.json"
             and token.encode() in p.read_bytes()]
    assert leaks == []
    assert token not in json.dumps(ml.jobs.get(job.name)._to_dict(), default=str)


def test_secret_needs_a_token(emulator):
    info = json.loads(emulator[1].read_text())
    ctx = ssl.create_default_context(cafile=info["ca_bundle"])
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{info['keyvault_url']}/secrets/hf-token?api-version=7.5", context=ctx, timeout=5)
    assert err.value.code == 401
    assert 'resource="https://vault.azure.net"' in err.value.headers["WWW-Authenticate"]


def test_registry_model_registers_downloads_and_feeds_a_pipeline(ml, emulator, code_dir, tmp_path):
    from azure.ai.ml import Input, dsl
    from azure.ai.ml.entities import Model

    from slmforge.emulator.client import ml_client

    src = tmp_path / "base-model"
    src.mkdir()
    (src / "config.json").write_text('{"model_type": "phi3"}')
    registry = ml_client(emulator[1], registry_name="emulated-registry")
    model = registry.models.create_or_update(Model(name="phi3-tiny", version="1", path=str(src),
                                                   type="custom_model"))
    assert model.id == "azureml://registries/emulated-registry/models/phi3-tiny/versions/1"
    assert [m.version for m in registry.models.list(name="phi3-tiny")] == ["1"]
    registry.models.download("phi3-tiny", "1", download_path=str(tmp_path / "down"))
    assert [p.name for p in (tmp_path / "down").rglob("*.json")] == ["config.json"]

    reader = _component(code_dir, "python write.py ${{inputs.msg}} ${{outputs.out}} ${{inputs.model}}",
                        inputs={"msg": "string", "model": "custom_model"})
    (code_dir / "result.txt").unlink(missing_ok=True)

    @dsl.pipeline(default_compute="cpu-cluster")
    def pipe(base):
        node = reader(msg="read", model=base)
        return {"result": node.outputs.out}

    # write.py appends <input folder>/result.txt: give the model one through a second version.
    (src / "result.txt").write_text("weights")
    registry.models.create_or_update(Model(name="phi3-tiny", version="2", path=str(src), type="custom_model"))
    job = ml.jobs.create_or_update(pipe(base=Input(
        type="custom_model", path="azureml://registries/emulated-registry/models/phi3-tiny/versions/2")))
    assert _wait(ml, job.name).status == "Completed"
    ml.jobs.download(job.name, download_path=str(tmp_path / "out"), output_name="result")
    assert (tmp_path / "out" / "named-outputs" / "result" / "result.txt").read_text() == "read|weights"


# --- faults and restarts ---------------------------------------------------------------------------

def test_injected_429_and_503_are_ridden_through(ml, emulator, code_dir, tmp_path):
    folder, _ = emulator
    control.admin(folder, "PUT", "faults", {"rate": 0.3, "kinds": ["429", "503"], "retry_after_ms": 50, "seed": 7})
    try:
        comp = _component(code_dir, "python write.py ${{inputs.msg}}-faulty ${{outputs.out}}")
        job = ml.jobs.create_or_update(_pipeline(comp))
        assert _wait(ml, job.name).status == "Completed"
        ml.jobs.download(job.name, download_path=str(tmp_path), output_name="result")
        assert (tmp_path / "named-outputs" / "result" / "result.txt").read_text() == "hello-faulty"
        injected = control.admin(folder, "GET", "faults")["injected"]
    finally:
        control.admin(folder, "PUT", "faults", {"rate": 0.0})
    assert injected["429"] + injected["503"] >= 3


def test_dropped_connections_on_reads_are_ridden_through(ml, emulator):
    folder, _ = emulator
    control.admin(folder, "PUT", "faults", {"rate": 0.4, "kinds": ["drop"], "methods": ["GET"], "seed": 3})
    try:
        names = [ml.compute.get("cpu-cluster").name for _ in range(8)]
        injected = control.admin(folder, "GET", "faults")["injected"]
    finally:
        control.admin(folder, "PUT", "faults", {"rate": 0.0})
    assert names == ["cpu-cluster"] * 8
    assert injected["drop"] >= 1


def test_restart_keeps_jobs_and_models(emulator):
    from slmforge.emulator.client import ml_client

    folder, ws_file = emulator
    before = ml_client(ws_file)
    jobs = {j.name: j.status for j in before.jobs.list()}
    models = {(m.name, m.version) for m in before.models.list(name="local-model")}
    assert control.stop(folder)
    assert control.status(folder)["running"] is False
    started = time.monotonic()
    control.start(folder)
    restart_s = time.monotonic() - started
    after = ml_client(ws_file)
    assert {j.name: j.status for j in after.jobs.list()} == jobs
    assert {(m.name, m.version) for m in after.models.list(name="local-model")} == models
    assert restart_s < 15  # generous: the figure itself is reported, not asserted tight


def test_restart_mid_job_keeps_finished_nodes_and_reruns_the_interrupted_one(emulator, tmp_path):
    """Stop while node b runs: after the start, a is still Completed (not rerun), b runs again to the end."""
    from slmforge.emulator.client import ml_client

    folder, ws_file = emulator
    code, runs = tmp_path / "code", tmp_path / "runs.txt"
    code.mkdir()
    (code / "step.py").write_text(
        "import pathlib, sys, time\n"
        "name, seconds, out = sys.argv[1], float(sys.argv[2]), pathlib.Path(sys.argv[3])\n"
        f"with open({str(runs)!r}, 'a') as f: f.write(name + '\\n')\n"
        "time.sleep(seconds)\n"
        "out.mkdir(parents=True, exist_ok=True); (out / 'result.txt').write_text(name)\n")
    first = _component(code, "python step.py a 0 ${{outputs.out}} ${{inputs.msg}}")
    second = _component(code, "python step.py b 4 ${{outputs.out}} ${{inputs.msg}} ${{inputs.prev}}",
                        inputs={"msg": "string", "prev": "uri_folder"})
    ml = ml_client(ws_file)
    job = ml.jobs.create_or_update(_pipeline(first, second))
    deadline = time.monotonic() + 60
    while "b" not in (runs.read_text().split() if runs.is_file() else []):
        assert time.monotonic() < deadline, "node b never started"
        time.sleep(0.2)
    assert control.stop(folder)
    control.start(folder)
    ml = ml_client(ws_file)
    assert _wait(ml, job.name).status == "Completed"
    children = {c.display_name: c.status for c in ml.jobs.list(parent_job_name=job.name)}
    assert children == {"a": "Completed", "b": "Completed"}
    assert runs.read_text().split() == ["a", "b", "b"]  # a ran once; the interrupted b ran again


def test_killed_emulator_stops_the_orphaned_step_before_rerunning_it(emulator, tmp_path):
    """SIGKILL the emulator while a step runs: its process survives (own session). The next start kills
    it before running the node again, so exactly one run of the step finishes and the job completes."""
    import os
    import signal

    from slmforge.emulator.client import ml_client

    folder, ws_file = emulator
    code, runs = tmp_path / "code", tmp_path / "runs.txt"
    code.mkdir()
    (code / "step.py").write_text(
        "import pathlib, sys, time\n"
        f"log = lambda text: open({str(runs)!r}, 'a').write(text + '\\n')\n"
        "log('start'); time.sleep(6)\n"
        "out = pathlib.Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True); (out / 'r.txt').write_text('x')\n"
        "log('end')\n")
    ml = ml_client(ws_file)
    job = ml.jobs.create_or_update(_pipeline(_component(code, "python step.py ${{outputs.out}} ${{inputs.msg}}")))
    deadline = time.monotonic() + 60
    while not runs.is_file():
        assert time.monotonic() < deadline, "the step never started"
        time.sleep(0.2)
    pid = int((folder / "emulator.pid").read_text().split()[0])
    os.kill(pid, signal.SIGKILL)
    try:
        os.waitpid(pid, 0)  # the session fixture started it: reap it, so its pid is gone
    except ChildProcessError:
        pass
    control.start(folder)
    ml = ml_client(ws_file)
    assert _wait(ml, job.name).status == "Completed"
    time.sleep(1)  # an orphan that outlived the restart would have ended by now (it started first)
    assert runs.read_text().split() == ["start", "start", "end"]
