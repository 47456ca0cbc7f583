"""`slmforge submit/status/cancel` against the emulated workspace (real azure-ai-ml SDK, loopback HTTPS, Azurite)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from slmforge.cli import main as cli
from slmforge.recipe.graph import build_graph
from slmforge.recipe.loader import load_recipe

REPO = Path(__file__).resolve().parents[1]
COOKBOOK_AML = REPO / "tests" / "recipes" / "cookbook-aml.json"


@pytest.fixture(scope="module")
def ml_client(emulator):
    from slmforge.backends.aml_workspace import ml_client_from_workspace_file

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
    assert job.outputs["model"].name == "phi3-finetuned"
    assert job.outputs["model"].version == digest[:12]
    assert job.tags["slmforge.recipe_digest"] == digest
    assert job.experiment_name == "phi3-finetuned"
    assert set(job.jobs) == {"load_data", "finetune", "merge", "evaluate_merged", "build_onnx", "evaluate_onnx"}


def test_resubmission_reuses_the_code_snapshot(emulator, capsys):
    submit_detached(str(emulator[1]), capsys)
    before = counters(emulator[0]).get("start_pending_upload", 0)
    submit_detached(str(emulator[1]), capsys)
    assert counters(emulator[0]).get("start_pending_upload", 0) == before


def test_cancel_then_status_exits_1(emulator, capsys):
    name = submit_detached(str(emulator[1]), capsys)
    assert cli(["cancel", name, "--workspace", str(emulator[1])]) == 0
    assert f"{name}: cancel requested" in capsys.readouterr().out
    assert cli(["status", name, "--workspace", str(emulator[1]), "--wait"]) == 1
    err = capsys.readouterr().err
    # the emulator may have failed load_data (no registry model offline) before the cancel landed
    assert f"job {name} canceled" in err or f"job {name} failed at step load_data;" in err, err


def test_wait_follows_step_by_step_and_names_the_failed_step(emulator, capsys, monkeypatch):
    """The cookbook's registry model is not in the emulator, so load_data fails: exit 1 naming it."""
    monkeypatch.setenv("SLMFORGE_POLL_SECONDS", "0.5")
    assert cli(["submit", str(COOKBOOK_AML), "--workspace", str(emulator[1]), "--wait"]) == 1
    captured = capsys.readouterr()
    assert re.search(r"^  load_data +Failed$", captured.out, re.M), captured.out
    assert re.search(r"^\S+: Failed$", captured.out, re.M), captured.out
    assert re.search(r"job \S+ failed at step load_data; see `slmforge logs \S+ --step load_data`", captured.err)
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
        assert cli(["status", name, "--workspace", str(emulator[1])]) == 0
        injected = control.admin(emulator[0], "GET", "faults")["injected"]
    finally:
        control.admin(emulator[0], "PUT", "faults", {"rate": 0.0})
    assert sum(injected.values()) > 0, injected
