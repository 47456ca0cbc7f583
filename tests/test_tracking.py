"""Runs tracked in MLflow (one run per slmforge run, a nested run per step, report_to honoured; a cached
rerun: test_local_run's rerun test) and a
console that shows the training (progress lines with loss, tokens/s and ETA without a terminal; progress
events as text in `slmforge logs`). The MLflow checks read the session's warm pipeline run (tracked)."""

from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path

import pytest

from slmforge.backends.local import display as display_module
from slmforge.backends.local.display import Display
from slmforge.contract.progress import PREFIX, render
from slmforge.training.tracking import flatten, tensorboard_missing

from local_pipeline import tracked_run, warm_pipeline, write_recipe

STEPS = ["load_data", "evaluate_base", "finetune", "merge", "evaluate_merged", "build_onnx", "evaluate_onnx",
         "register"]


@pytest.fixture(scope="module")
def warm(tmp_path_factory, tiny_model_dir, demo_data):
    return warm_pipeline(tmp_path_factory, tiny_model_dir, demo_data)


def _client(home):
    from slmforge.registry.mlflow_store import client_for

    return client_for(f"sqlite:///{home / 'registry.db'}")


@pytest.mark.slow
def test_a_run_is_one_mlflow_run_with_params_loss_history_evaluation_and_step_runs(warm):
    record = warm.cold.record
    assert f"mlflow ui --backend-store-uri sqlite:///{warm.home / 'registry.db'}" in warm.cold.stdout
    client, run, steps = tracked_run(warm.home, warm.cold.stdout)
    assert run.info.status == "FINISHED" and run.data.tags["slmforge.run_id"] == record["run_id"]
    params = run.data.params
    assert params["recipe_digest"] == record["recipe_digest"] and params["passes.lora.r"] == "8"
    assert params["passes.lora.training_args.learning_rate"] == "0.003"
    loss = client.get_metric_history(run.info.run_id, "loss")
    assert len(loss) == 8 and [m.step for m in loss] == list(range(5, 41, 5))  # logging_steps 5 of 40
    assert len(client.get_metric_history(run.info.run_id, "learning_rate")) == 8
    for label, m in record["evaluation"].items():
        assert run.data.metrics[f"{label}.accuracy"] == pytest.approx(m["accuracy"])
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"report.md", "loss.png", "run.json"}

    assert sorted(steps) == sorted(STEPS)
    assert {s.data.tags["cached"] for s in steps.values()} == {"false"}
    finetune = steps["finetune"]
    assert len(client.get_metric_history(finetune.info.run_id, "loss")) == 8
    assert finetune.data.params["r"] == "8" and finetune.data.metrics["tokens_per_second"] > 0


def test_report_to_none_tracks_nothing(tmp_path, tiny_model_dir, demo_data, monkeypatch):
    """What `slmforge run` calls once the run is done, on a recipe saying none (a list, as HF writes it)."""
    from slmforge.backends.local.tracking import preflight, targets, track
    from slmforge.errors import InvalidInput
    from slmforge.recipe.graph import build_graph
    from slmforge.recipe.loader import load_recipe

    monkeypatch.setenv("SLMFORGE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SLMFORGE_REPORT_TO", raising=False)
    recipe = write_recipe(tmp_path, tiny_model_dir, demo_data, edit=lambda r: r["passes"]["lora"]["config"][
        "training_args"].update(report_to=["none"]))
    loaded = load_recipe(recipe)
    assert targets(loaded) == set()
    assert track(loaded, build_graph(loaded), [], {"status": "succeeded", "evaluation": {}}, tmp_path) is None
    assert not (tmp_path / "home").exists()  # no store made, nothing written
    recipe = write_recipe(tmp_path, tiny_model_dir, demo_data, edit=lambda r: r["passes"]["lora"]["config"][
        "training_args"].update(report_to=["azure_ml", "tensorboard"]))
    loaded = load_recipe(recipe)
    assert targets(loaded) == {"mlflow", "tensorboard"}  # azure_ml: MLflow (the job's, in a job)
    if tensorboard_missing():  # refused before any work where it cannot be written
        with pytest.raises(InvalidInput, match=r"report_to tensorboard needs the tensorboard package"):
            preflight(loaded)


@pytest.mark.slow
def test_without_a_terminal_the_run_prints_progress_lines(warm):
    lines = [ln for ln in warm.cold.stdout.splitlines() if ln.startswith("[slmforge] finetune ")]
    assert any(re.search(r"\d+/\d+ (steps|eval sequences) \(\d+%\)", ln) for ln in lines), lines
    log = Path(next(s["log"] for s in warm.cold.record["steps"] if s["name"] == "finetune"))  # the cold run's own
    events = [json.loads(ln[len(PREFIX):]) for ln in log.read_text().splitlines()
              if ln.startswith(PREFIX) and '"steps"' in ln]
    assert len(events) == 8 and all({"loss", "tokens_per_second", "eta_seconds"} <= set(e) for e in events)


def test_plain_progress_lines_carry_loss_and_eta_each_tenth_and_at_the_end(tmp_path, monkeypatch):
    monkeypatch.setattr(display_module, "POLL_S", 0.01)
    log = tmp_path / "finetune.log"
    log.write_text("")
    out = io.StringIO()

    def event(done: int) -> None:
        with open(log, "a") as f:
            f.write(PREFIX + json.dumps({"done": done, "total": 20, "unit": "steps", "loss": 5.0 / done,
                                         "tokens_per_second": 1234.0, "eta_seconds": 3 * (20 - done)}) + "\n")
        time.sleep(0.3)

    with Display(["finetune"], out=out, live=False) as display:
        display.update("finetune", "running", log=log)
        for done in (2, 3, 10, 11):  # 10 %, the same tenth, 50 %, then the step ends at 55 %
            event(done)
        display.update("finetune", "done", seconds=1.5)
    progress = [ln for ln in out.getvalue().splitlines() if "steps" in ln]
    assert progress == ["[slmforge] finetune         2/20 steps (10%)  loss 2.5000  1,234 tokens/s  ETA 0:54",
                        "[slmforge] finetune         10/20 steps (50%)  loss 0.5000  1,234 tokens/s  ETA 0:30",
                        "[slmforge] finetune         11/20 steps (55%)  loss 0.4545  1,234 tokens/s  ETA 0:27"]
    assert out.getvalue().splitlines()[-1] == "[slmforge] finetune         done in 1.5s"


def test_logs_show_progress_events_as_text():
    text = ("finetune: loading\n"
            + PREFIX + '{"done":10,"total":40,"unit":"steps","loss":1.25,"tokens_per_second":4321.5,"eta_seconds":75}\n'
            + PREFIX + '{"done":3,"total":64,"unit":"eval sequences"}\n'
            + PREFIX + '{"done": 11, "tot\n')
    assert render(text).splitlines() == [
        "finetune: loading", "progress: 10/40 steps (25%)  loss 1.2500  4,322 tokens/s  ETA 1:15",
        "progress: 3/64 eval sequences (4%)", PREFIX + '{"done": 11, "tot']  # a line cut by a crash stays as it is


def test_recipe_params_never_carry_a_secret():
    params = flatten({"input_model": {"model_path": "m", "hf_token": True},
                      "data": {"token": "hf_abc", "url": "https://a.blob.core.windows.net/c/x?sv=1&sig=SECRET"},
                      "passes": {"lora": {"r": 8, "target_modules": ["q_proj", "v_proj"]}}})
    assert params == {"input_model.model_path": "m", "input_model.hf_token": "True", "passes.lora.r": "8",
                      "passes.lora.target_modules": "['q_proj', 'v_proj']"}


@pytest.mark.slow
def test_inside_a_tracked_job_the_finetune_logs_into_the_run_it_is_given(warm, monkeypatch):
    """Azure ML gives a job MLFLOW_TRACKING_URI and MLFLOW_RUN_ID: the loop's logger writes each logged step there."""
    from slmforge.training.tracking import JobLogger

    client = _client(warm.home)
    job_run = client.create_run(client.get_experiment_by_name("recipe").experiment_id).info.run_id
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{warm.home / 'registry.db'}")
    monkeypatch.setenv("MLFLOW_RUN_ID", job_run)
    assert JobLogger.wanted()
    job = JobLogger()
    for step, loss in ((5, 2.0), (10, 1.5)):
        job.step(step, loss, 1e-3, 900.0)
    assert job.finish({"r": 8, "hf_token": "x"}, {"eval_loss": 1.4, "loss_history": []}, [{"step": 10, "loss": 1.4}]) \
        == job_run
    run = client.get_run(job_run)
    assert [(m.step, m.value) for m in client.get_metric_history(job_run, "loss")] == [(5, 2.0), (10, 1.5)]
    assert run.data.params == {"r": "8"} and run.data.metrics["eval_loss"] == 1.4
    assert len(client.get_metric_history(job_run, "tokens_per_second")) == 2
