"""`slmforge submit/status/cancel` against the emulated workspace (real azure-ai-ml SDK, loopback HTTPS, Azurite)."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from pathlib import Path

import pytest

from slmforge.cli import main as cli
from slmforge.recipe.graph import build_graph
from slmforge.recipe.loader import load_recipe

REPO = Path(__file__).resolve().parents[1]
COOKBOOK_AML = REPO / "tests" / "recipes" / "cookbook-aml.json"


@pytest.fixture(scope="module")
def ml_client(emulator):
    from slmforge.backends.aml.workspace import ml_client_from_workspace_file

    return ml_client_from_workspace_file(emulator[1])


def submit_detached(workspace: str, capsys, *extra: str) -> str:
    assert cli(["submit", str(COOKBOOK_AML), "--workspace", workspace, "--detach", *extra]) == 0
    out = capsys.readouterr().out
    match = re.search(r"^submitted (\S+)$", out, re.M)
    assert match, out
    assert re.search(r"^studio: https://127\.0\.0\.1:\d+/", out, re.M), out
    return match.group(1)


def counters(folder: Path) -> dict:
    from slmforge.emulator import control

    return control.admin(folder, "GET", "counters")


def test_submit_sends_the_compiled_pipeline(emulator, ml_client, capsys):
    name = submit_detached(str(emulator[1]), capsys)
    job = ml_client.jobs.get(name)
    digest = build_graph(load_recipe(COOKBOOK_AML)).recipe_digest
    assert job.outputs["model"].name == "cookbook-aml"  # the recipe file's name (issue 24)
    assert job.outputs["model"].version == digest[:12]
    assert job.tags["slmforge.recipe_digest"] == digest
    assert job.experiment_name == "cookbook-aml"
    assert job.tags["slmforge.recipe"] == COOKBOOK_AML.name
    assert set(job.jobs) == {"load_data", "finetune", "merge", "evaluate_merged", "build_onnx", "evaluate_onnx"}


def test_resubmission_reuses_the_code_snapshot(emulator, capsys):
    submit_detached(str(emulator[1]), capsys)
    before = counters(emulator[0]).get("start_pending_upload", 0)
    submit_detached(str(emulator[1]), capsys)
    assert counters(emulator[0]).get("start_pending_upload", 0) == before


def test_cancel_then_status_exits_1(emulator, capsys, monkeypatch):
    monkeypatch.setenv("SLMFORGE_POLL_SECONDS", "0.5")
    name = submit_detached(str(emulator[1]), capsys)
    code = cli(["cancel", name, "--workspace", str(emulator[1])])
    captured = capsys.readouterr()
    # load_data may fail (no registry model offline) before the cancel lands: then cancel says so, exit 2
    assert (code, f"{name}: cancel requested" in captured.out) == (0, True) or (
        code == 2 and f"{name}: already finished (Failed)" in captured.err), (code, captured)
    assert cli(["status", name, "--workspace", str(emulator[1]), "--wait"]) == 1
    err = capsys.readouterr().err
    # the emulator may have failed load_data (no registry model offline) before the cancel landed
    assert f"job {name} canceled" in err or f"job {name} failed at step load_data" in err, err


def test_wait_follows_step_by_step_and_names_the_failed_step(emulator, capsys, monkeypatch):
    """The cookbook's registry model is not in the emulator, so load_data fails: exit 1 naming it."""
    monkeypatch.setenv("SLMFORGE_POLL_SECONDS", "0.5")
    assert cli(["submit", str(COOKBOOK_AML), "--workspace", str(emulator[1]), "--wait"]) == 1
    captured = capsys.readouterr()
    assert re.search(r"^  load_data +Failed$", captured.out, re.M), captured.out
    assert re.search(r"^\S+: Failed$", captured.out, re.M), captured.out
    assert re.search(r"job \S+ failed at step load_data: .+; see `slmforge logs \S+ --step load_data`", captured.err)
    assert "registered model" not in captured.out


def test_unknown_job_is_invalid_input(emulator, capsys):
    assert cli(["status", "no_such_job_here", "--workspace", str(emulator[1])]) == 2
    assert "no job named 'no_such_job_here'" in capsys.readouterr().err


def test_transient_faults_are_ridden_through(emulator, capsys):
    from slmforge.emulator import control

    control.admin(emulator[0], "PUT", "faults", {"rate": 0.25, "kinds": ["429", "503", "drop"], "seed": 3,
                                                 "retry_after": 0})
    try:
        name = submit_detached(str(emulator[1]), capsys)
        rc = cli(["status", name, "--workspace", str(emulator[1])])
        captured = capsys.readouterr()
        assert re.search(rf"^{name}: \w+$", captured.out, re.M), captured
        # the job itself fails quickly (no registry model offline): a status call may already see it
        assert rc == 0 or f"job {name} failed at step load_data" in captured.err, captured
        injected = control.admin(emulator[0], "GET", "faults")["injected"]
    finally:
        control.admin(emulator[0], "PUT", "faults", {"rate": 0.0})
    assert sum(injected.values()) > 0, injected


# --- an unreachable workspace: one line naming the endpoint, exit 1, within the retry budget -----------


def _workspace_on_port(emulator_ws: Path, port: int, out: Path) -> Path:
    """A copy of the emulator's workspace file pointing at another loopback port."""
    data = json.loads(emulator_ws.read_text())
    old = data["endpoint"].rsplit(":", 1)[1]
    text = json.dumps(data).replace(f"127.0.0.1:{old}", f"127.0.0.1:{port}")
    out.write_text(text.replace(f"SlmforgeEmulator-{old}", f"SlmforgeEmulator-{port}"))  # a cloud name per port
    return out


def test_stopped_emulator_is_one_line_at_once(emulator, tmp_path, capsys):
    from slmforge.emulator.control import free_port

    port = free_port()  # nothing listens there
    ws = _workspace_on_port(emulator[1], port, tmp_path / "workspace.json")
    assert cli(["submit", str(COOKBOOK_AML), "--workspace", str(ws), "--detach"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert f"cannot reach the Azure ML workspace at https://127.0.0.1:{port}: connection refused" in err[0]
    assert "is the emulator running?" in err[0]
    assert re.search(r"\(one connection attempt, \d+\.\d s of a 3 s timeout", err[0]), err[0]  # how long it was tried


@pytest.fixture
def dropping_server():
    """A loopback port that accepts connections and closes them at once: every request fails."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    server.settimeout(0.2)  # so the loop sees `stop` (closing a socket does not wake accept)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    server.close()
    thread.join(timeout=5)


def test_unanswering_workspace_gives_up_after_the_retry_budget(emulator, dropping_server, tmp_path, capsys,
                                                               monkeypatch):
    monkeypatch.setenv("SLMFORGE_RETRY_SECONDS", "2")
    ws = _workspace_on_port(emulator[1], dropping_server, tmp_path / "workspace.json")
    started = time.monotonic()
    assert cli(["status", "some_job", "--workspace", str(ws)]) == 1
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    found = re.fullmatch(rf"slmforge: error: cannot reach the Azure ML workspace at https://127\.0\.0\.1:{dropping_server}: "
                         r".+ \(gave up after ([\d.]+) s and (\d+) attempts of a 2 s retry budget; "
                         r"SLMFORGE_RETRY_SECONDS sets how long\)", err[0])
    assert found, err[0]
    said, attempts = float(found.group(1)), int(found.group(2))
    # the line tells the time really spent retrying: most of the budget, never more than the command took
    assert 1.5 <= said <= min(elapsed, 2.0) + 0.1, (said, elapsed)
    assert attempts > 2, attempts  # dropped connections really are retried, not given up on at once


def test_dropped_connections_under_posts_are_retried(tmp_path, capsys):
    """A fresh workspace, so the submission uploads its code: a POST (startPendingUpload) whose connection
    drops is retried like a GET, and submit --detach succeeds twice out of twice (issue 11 #9)."""
    from slmforge.emulator import control

    folder = tmp_path / "emu"
    info = control.start(folder, faults={"rate": 0.5, "kinds": ["drop"], "methods": ["POST"], "seed": 1})
    try:
        submit_detached(info["workspace_file"], capsys)
        submit_detached(info["workspace_file"], capsys)
        injected = control.admin(folder, "GET", "faults")["injected"]
        uploads = counters(folder).get("start_pending_upload", 0)
    finally:
        control.stop(folder)
    assert uploads >= 1 and injected["drop"] >= 1, (uploads, injected)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("follow", [False, True])
def test_retry_after_beyond_the_budget_gives_up_at_once(emulator, capsys, follow):
    """azure-core sleeps any Retry-After; a 429 asking for 100000 s must end in one line, not a hang (#8),
    and `status --wait` does not poll through it either."""
    folder, ws = emulator
    assert cli(["emulator", "faults", "--dir", str(folder), "--faults", "1:429", "--retry-after", "100000"]) == 0
    capsys.readouterr()
    try:
        started = time.monotonic()
        rc = cli(["status", "some_job", "--workspace", str(ws), *(["--wait"] if follow else [])])
        elapsed = time.monotonic() - started
    finally:
        control_admin_reset(folder)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1, err
    assert re.search(r"answered 429 and asked to retry after 100000 s, more than the [\d.]+ s left of the 15 s "
                     r"retry budget; gave up after [\d.]+ s \(SLMFORGE_RETRY_SECONDS sets the budget\)$", err[0]), err[0]
    assert elapsed < 15, elapsed  # never sleeps past the budget


def control_admin_reset(folder: Path) -> None:
    from slmforge.emulator import control

    control.admin(folder, "PUT", "faults", {"rate": 0.0})


def test_retry_budget_must_be_a_positive_number(emulator, monkeypatch, capsys):
    monkeypatch.setenv("SLMFORGE_RETRY_SECONDS", "soon")
    assert cli(["status", "some_job", "--workspace", str(emulator[1])]) == 2
    assert "SLMFORGE_RETRY_SECONDS='soon': give a number of seconds greater than 0" in capsys.readouterr().err


# --- a wrong ca_bundle in the workspace file: named as a certificate problem, exit 2 (issue 11 #21) ----


def _workspace_with_ca(emulator_ws: Path, ca_bundle: Path, out: Path) -> Path:
    data = json.loads(emulator_ws.read_text())
    out.write_text(json.dumps({**data, "ca_bundle": str(ca_bundle)}))
    return out


@pytest.mark.parametrize("kind", ["not_a_certificate", "another_emulators_ca", "missing"])
def test_wrong_ca_bundle_is_one_certificate_line(emulator, tmp_path, capsys, monkeypatch, kind):
    from slmforge.emulator.tls import make_certificate

    monkeypatch.setenv("SLMFORGE_RETRY_SECONDS", "2")  # before the fix: retried, then "no usable answer"
    if kind == "not_a_certificate":
        ca = tmp_path / "ca.pem"
        ca.write_text("this is not a certificate\n")
        expected = r"not a PEM certificate \(NO_CERTIFICATE_OR_CRL_FOUND\)$"
    elif kind == "another_emulators_ca":
        ca, _ = make_certificate(tmp_path / "other-tls")
        expected = (r"the emulator at https://127\.0\.0\.1:\d+ presents a certificate this bundle does not verify "
                    r"\(.+\); is it that emulator's tls/cert\.pem\?$")
    else:
        ca = tmp_path / "gone.pem"
        expected = r"no such file \(the emulator's certificate is DIR/tls/cert\.pem\)$"
    ws = _workspace_with_ca(emulator[1], ca, tmp_path / "workspace.json")
    assert cli(["status", "some_job", "--workspace", str(ws)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"slmforge: error: {ws}: ca_bundle {ca}: "), err[0]
    assert re.search(expected, err[0]), err[0]


def test_local_recipe_submits_with_workspace_and_compute_flags(emulator, ml_client, capsys, tmp_path):
    """A LocalSystem host is no refusal when the flags say where to run: --compute, slmforge's environments."""
    import yaml

    raw = json.loads(COOKBOOK_AML.read_text())
    raw["systems"] = {"here": {"type": "LocalSystem", "accelerators": ["cpu"]}}
    raw["engine"]["host"] = raw["engine"]["target"] = "here"
    recipe = tmp_path / "local.json"
    recipe.write_text(json.dumps(raw))
    assert cli(["submit", str(recipe), "--workspace", str(emulator[1]), "--compute", "cpu-cluster", "--detach"]) == 0
    name = re.search(r"^submitted (\S+)$", capsys.readouterr().out, re.M).group(1)
    job = ml_client.jobs.get(name)
    assert job.settings.default_compute.rsplit("/", 1)[-1] == "cpu-cluster"
    cpu_image = yaml.safe_load((REPO / "environments" / "cpu.yml").read_text())["image"]
    for node in job.jobs.values():
        component = ml_client.components.get(*node.component.split(":"))  # azureml_anonymous:<version>
        env = ml_client.environments.get(*component.environment.rsplit("/environments/", 1)[1].split("/versions/"))
        assert env.image == cpu_image
    ml_client.jobs.begin_cancel(name).result()  # free the emulator's executor for the next test


def test_moved_compiled_folder_submits_and_its_code_is_the_uploaded_snapshot(emulator, ml_client, capsys, tmp_path):
    """`compile -o`, move the folder, submit it as `az ml job create -f` does (load_job + create_or_update):
    the code snapshot holds exactly what a direct submission uploads, so nothing is uploaded again."""
    import shutil

    from azure.ai.ml import load_job

    submit_detached(str(emulator[1]), capsys)  # the code from src/ is in the workspace now
    assert cli(["compile", str(COOKBOOK_AML), "-o", str(tmp_path / "out")]) == 0
    moved = tmp_path / "moved"
    shutil.move(tmp_path / "out", moved)
    before = counters(emulator[0]).get("start_pending_upload", 0)
    job = ml_client.jobs.create_or_update(load_job(moved / "pipeline.yml"))
    assert set(ml_client.jobs.get(job.name).jobs) == {"load_data", "finetune", "merge", "evaluate_merged",
                                                      "build_onnx", "evaluate_onnx"}
    uploads = counters(emulator[0]).get("start_pending_upload", 0) - before
    assert uploads == 0  # the snapshot (and spec.json) were found by content hash: same files as src/


def _failure_reason(ml_client, name: str) -> str:
    deadline = time.monotonic() + 60
    while (job := ml_client.jobs.get(name)).status not in ("Completed", "Failed", "Canceled"):
        assert time.monotonic() < deadline, f"job {name} still {job.status}"
        time.sleep(0.3)
    return job.properties.get("azureml.failureReason", "")


def test_step_in_an_environment_without_slmforge_requirements_fails_naming_them(emulator, ml_client, capsys,
                                                                                tmp_path, monkeypatch):
    from azure.ai.ml.entities import Environment

    monkeypatch.setenv("SLMFORGE_POLL_SECONDS", "0.5")
    ml_client.environments.create_or_update(Environment(
        name="bare-python", version="1", image="mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04",
        conda_file={"name": "bare", "dependencies": ["python=3.11", "pip", {"pip": ["numpy==2.4.6"]}]}))
    raw = json.loads(COOKBOOK_AML.read_text())
    del raw["systems"]["aml"]["config"]["aml_docker_config"]
    raw["systems"]["aml"]["config"]["aml_environment_config"] = {"name": "bare-python", "version": "1"}
    recipe = tmp_path / "bare.json"
    recipe.write_text(json.dumps(raw))
    assert cli(["submit", str(recipe), "--workspace", str(emulator[1]), "--wait"]) == 1
    captured = capsys.readouterr()
    name = re.search(r"^submitted (\S+)$", captured.out, re.M).group(1)
    assert f"job {name} failed at step load_data" in captured.err
    reason = _failure_reason(ml_client, name)
    assert "environment bare-python:1 lacks slmforge's runtime requirements" in reason, reason
    assert "torch, transformers" in reason and "numpy" not in reason.split("declare")[1]
    assert cli(["logs", name, "--step", "load_data", "--workspace", str(emulator[1])]) == 0
    assert "node 'load_data' not started: environment bare-python:1 lacks" in capsys.readouterr().out


def test_recipe_conda_file_merged_at_compile_passes_the_environment_check(emulator, ml_client, capsys):
    """tests/recipes/conda.yaml declares only `slmforge`; compiled, it carries the requirements: load_data
    gets past the environment and fails on what it really lacks offline (its datastore file)."""
    name = submit_detached(str(emulator[1]), capsys)
    reason = _failure_reason(ml_client, name)
    assert reason == ("input 'azureml://datastores/workspaceblobstore/paths/"
                      "data/train_data.json': nothing stored there"), reason
