"""The shipped `pipelines/demo-aml.json` submitted to the emulated workspace, end to end, as the README
shows it: `submit --wait` completes and registers the model; `download` + `predict` answer; `logs
--step` prints a finished step's stored log; `models --workspace` lists the model with its tags;
`register --registry` shares it into a registry; a resubmission uploads no code again.

One job (module fixture) serves every test; the recipe is the shipped one in a checkout-shaped tmp
tree, with fewer training steps to keep the run short.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import pytest

from slmforge.cli import main as cli
from slmforge.contract.progress import PREFIX, render
from slmforge.emulator import control

from aml_demo import demo_aml_tree

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
REGISTRY = "slmforge-demo-registry"
TRAIN_STEPS = 20


def _few_steps(raw: dict) -> None:
    raw["passes"]["lora"]["config"]["training_args"]["max_steps"] = TRAIN_STEPS


def _cli_out(*argv: str) -> tuple[int, str]:
    """Run the CLI in-process, capturing its stdout (module fixtures cannot use capsys)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = cli(list(argv))
    return rc, out.getvalue()


@pytest.fixture(scope="module")
def demo_job(emulator, tiny_model_dir, tmp_path_factory) -> dict:
    state, ws = emulator
    recipe = demo_aml_tree(tmp_path_factory.mktemp("demo-aml"), tiny_model_dir, edit=_few_steps)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SLMFORGE_POLL_SECONDS", "1")
        rc, out = _cli_out("submit", str(recipe), "--workspace", str(ws), "--wait")
    assert rc == 0, out
    job = re.search(r"^submitted (\S+)$", out, re.M).group(1)
    name, version = re.search(r"^registered model (\S+):(\S+)$", out, re.M).groups()
    assert re.search(rf"^{job}: Completed$", out, re.M), out
    return {"job": job, "name": name, "version": version, "recipe": recipe, "ws": str(ws), "state": state, "out": out}


def test_demo_model_downloads_and_predicts(demo_job, tmp_path, capsys):
    from slmforge.emulator.client import ml_client

    assert demo_job["name"] == "phi3-tiny-tones"  # the shipped recipe's register.name
    assert ml_client(demo_job["ws"]).models.get(demo_job["name"], demo_job["version"]).path.startswith("azureml://")
    assert cli(["download", demo_job["job"], "--workspace", demo_job["ws"], "-o", str(tmp_path / "dl")]) == 0
    model = tmp_path / "dl" / "model"
    assert (model / "genai_config.json").is_file() and (model / "model.onnx").is_file()
    record = json.loads((tmp_path / "dl" / "run.json").read_text())
    # the local runner's run.json shape (contract/run_record.py), with the job's own part under "job"
    assert {"status", "recipe", "recipe_digest", "created", "seconds", "steps", "evaluation", "model",
            "job"} <= set(record)
    assert record["status"] == "succeeded" and record["job"]["name"] == demo_job["job"]
    assert {s["name"]: s["status"] for s in record["steps"]} == {
        s: "ran" for s in ("load_data", "evaluate_base", "finetune", "merge", "evaluate_merged", "build_onnx",
                           "evaluate_onnx")}
    assert record["model"]["name"] == "phi3-tiny-tones" and record["model"]["path"] == str(model)
    assert 0.0 <= record["evaluation"]["onnx"]["accuracy"] <= 1.0 and record["model"]["kind"] == "onnx"
    # complete (issue 24): the recipe submitted, the job's and each step's wall time, every evaluation
    assert record["recipe"] == Path(demo_job["recipe"]).name and record["seconds"] > 0  # the submitted file, by name
    assert all(s["seconds"] > 0 for s in record["steps"]), record["steps"]
    assert set(record["evaluation"]) == {"base", "merged", "onnx"}
    assert "tokens_per_second" in next(s for s in record["steps"] if s["name"] == "finetune")["metrics"]
    capsys.readouterr()
    assert cli(["predict", "--model", str(model), "I can't believe how wonderful the fair was!"]) == 0
    assert capsys.readouterr().out.strip()


def test_logs_of_a_finished_step_print_its_stored_log(demo_job, capsys):
    job, ws = demo_job["job"], demo_job["ws"]
    assert cli(["logs", job, "--step", "finetune", "--workspace", ws]) == 0
    printed = capsys.readouterr().out
    # what the step wrote, as the emulator kept it on its side
    kept = (demo_job["state"] / "runs" / job / "logs" / "finetune.txt").read_text()
    # (progress bars use \r) its progress events as text, every other line as it is
    assert kept.strip() and printed.strip().splitlines() == render(kept).strip().splitlines()
    assert PREFIX in kept and PREFIX not in printed and re.search(r"^progress: \d+/\d+ steps .*loss \d", printed, re.M)

    assert cli(["logs", job, "--workspace", ws]) == 0  # the whole finished job: every step's log
    headers = re.findall(r"^===== (\S+) \((\w+)\) =====$", capsys.readouterr().out, re.M)
    assert dict(headers) == {s: "Completed" for s in ("load_data", "evaluate_base", "finetune", "merge",
                                                     "evaluate_merged", "build_onnx", "evaluate_onnx")}

    assert cli(["logs", job, "--step", "no_such_step", "--workspace", ws]) == 2
    assert f"job {job} has no step 'no_such_step'" in capsys.readouterr().err


def test_models_lists_the_registered_model_with_its_tags(demo_job, capsys):
    assert cli(["models", "--workspace", demo_job["ws"]]) == 0
    table = capsys.readouterr().out
    assert re.search(rf"^{demo_job['name']} +{demo_job['version']} +custom_model ", table, re.M), table
    assert cli(["models", "--workspace", demo_job["ws"], "--name", demo_job["name"], "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    row = next(r for r in rows if r["version"] == demo_job["version"])
    assert row["tags"]["slmforge.job"] == demo_job["job"]
    assert row["tags"]["metrics.model_kind"] == "onnx"
    assert 0.0 <= float(row["tags"]["metrics.accuracy"]) <= 1.0


def test_register_shares_into_a_registry_once(demo_job, capsys):
    job, ws = demo_job["job"], demo_job["ws"]
    assert cli(["register", job, "--workspace", ws, "--registry", REGISTRY]) == 0
    assert f"(shared into registry {REGISTRY})" in capsys.readouterr().out
    assert cli(["models", "--workspace", ws, "--registry", REGISTRY, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["version"]) for r in rows] == [(demo_job["name"], demo_job["version"])]
    assert cli(["register", job, "--workspace", ws, "--registry", REGISTRY]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already exists in registry" in err[0], err


def test_resubmission_uploads_no_code(demo_job, capsys):
    """Two submissions back to back (not against the first job: the checkout's sources may be edited
    meanwhile, and a changed code snapshot is rightly uploaded again)."""
    state, ws = demo_job["state"], demo_job["ws"]
    submitted = []
    for _ in range(2):
        uploads = control.admin(state, "GET", "counters").get("start_pending_upload", 0)
        assert cli(["submit", str(demo_job["recipe"]), "--workspace", ws, "--detach"]) == 0
        submitted.append(re.search(r"^submitted (\S+)$", capsys.readouterr().out, re.M).group(1))
    assert control.admin(state, "GET", "counters").get("start_pending_upload", 0) == uploads
    for job in submitted:
        assert cli(["cancel", job, "--workspace", ws]) == 0


def test_submit_wait_ends_with_the_local_runs_summary(demo_job):
    """The closing summary a local run prints (its renderer), after the registration line."""
    out = demo_job["out"]
    summary = out[out.index("registered model"):]
    assert re.search(r"^slmforge run succeeded in ", summary, re.M), out
    assert re.search(r"^ +accuracy: base \d\.\d{3} -> merged \d\.\d{3} -> onnx \d\.\d{3} on \d+ held-out rows",
                     summary, re.M), summary
    assert re.search(r"^  finetune +ran ", summary, re.M), summary


def test_status_shows_each_steps_metrics_from_its_mlflow_run(demo_job, capsys):
    job, ws = demo_job["job"], demo_job["ws"]
    assert cli(["status", job, "--workspace", ws]) == 0
    lines = {m.group(1): m.group(2) for m in re.finditer(r"^  (\w+) +Completed +(.*)$", capsys.readouterr().out, re.M)}
    assert "tokens_per_second" in lines["finetune"] and "accuracy" in lines["evaluate_onnx"], lines
    assert cli(["status", job, "--workspace", ws, "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)["metrics"]
    assert 0.0 <= metrics["evaluate_merged"]["accuracy"] <= 1.0 and metrics["finetune"]["tokens_per_second"] > 0


def test_step_metrics_are_readable_through_mlflow_and_the_studio_link_answers(demo_job, monkeypatch):
    """The workspace's tracking URI, as plain MLflow reads it (contract/aml_tracking.py): the fine-tune's
    loss curve is in its step's run; the job's studio link is studio-shaped and answers."""
    import requests
    from mlflow import MlflowClient

    from slmforge.backends.aml.jobs import find_step, get_job, studio_url
    from slmforge.contract.aml_tracking import rest_tracking_uri
    from slmforge.emulator.client import ml_client

    ml = ml_client(demo_job["ws"])
    uri = rest_tracking_uri(ml.workspaces.get(ml.workspace_name).mlflow_tracking_uri)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "any")  # the emulator takes any bearer
    monkeypatch.setenv("MLFLOW_TRACKING_SERVER_CERT_PATH", str(demo_job["state"] / "tls" / "cert.pem"))
    run_id = find_step(ml, demo_job["job"], "finetune").name
    client = MlflowClient(tracking_uri=uri)
    assert client.get_run(run_id).info.run_id == run_id
    loss = client.get_metric_history(run_id, "loss") or client.get_metric_history(run_id, "train_loss")
    assert len(loss) > 1 and len({p.step for p in loss}) == len(loss), loss

    url = studio_url(get_job(ml, demo_job["job"]))
    assert re.match(rf"^https://127\.0\.0\.1:\d+/runs/{demo_job['job']}\?wsid=/subscriptions/[^&]+"
                    rf"/workspaces/[^&]+&tid=[0-9a-f-]+$", url), url
    page = requests.get(url, verify=str(demo_job["state"] / "tls" / "cert.pem"), timeout=10)
    assert page.status_code == 200 and demo_job["job"] in page.text and "finetune" in page.text
