"""`slmforge run` end to end on the tiny model: outputs, report, rerun from cache, both execution modes."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from slmforge.backends.local.runner import LocalRunner
from slmforge.contract import manifest, render
from slmforge.recipe.graph import build_graph
from slmforge.recipe.loader import load_recipe

from local_pipeline import run_slmforge, tracked_run, warm_pipeline, write_recipe

STEPS = ["load_data", "evaluate_base", "finetune", "merge", "evaluate_merged", "build_onnx", "evaluate_onnx",
         "register"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def warm(tmp_path_factory, tiny_model_dir, demo_data):
    return warm_pipeline(tmp_path_factory, tiny_model_dir, demo_data)


def test_cold_run_runs_every_step_and_fills_the_output_folder(warm):
    record = warm.cold.record
    assert record["status"] == "succeeded"
    assert [s["name"] for s in record["steps"]] == STEPS
    assert all(s["status"] == "ran" for s in record["steps"]), record["steps"]
    for s in record["steps"]:
        assert len(s["cache_key"]) == 64 and s["seconds"] > 0 and Path(s["output"]).is_dir()
    model = warm.cold.out_dir / "model"
    assert (model / "genai_config.json").is_file() and manifest.is_finished(model)
    assert record["model"] == {"path": str(model), "step": "build_onnx", "output": "model", "kind": "onnx"}
    assert record["recipe_digest"] == build_graph(load_recipe(warm.recipe)).recipe_digest


def test_run_json_holds_the_evaluation_before_and_after(warm):
    evaluation = warm.cold.record["evaluation"]
    assert set(evaluation) == {"base", "merged", "onnx"}
    for label, m in evaluation.items():
        assert 0.0 <= m["accuracy"] <= 1.0 and m["n"] > 0 and m["size_bytes"] > 0, (label, m)
    assert evaluation["onnx"]["size_bytes"] < evaluation["merged"]["size_bytes"]  # int4 is smaller


def test_the_onnx_evaluation_takes_the_answers_of_the_build_gates(warm):
    """The graph gives build_onnx's gates the evaluation's rows and answer length, so evaluate_onnx takes
    their answers (models/gate_answers.py) rather than answering the same rows again."""
    steps = {s["name"]: s for s in warm.cold.record["steps"]}
    metrics = json.loads((Path(steps["evaluate_onnx"]["output"]) / "metrics.json").read_text())
    assert metrics["answers_from"] == "build_onnx gate" and metrics["n"] > 0


def test_report_has_steps_evaluation_and_loss_curve(warm):
    report = (warm.cold.out_dir / "report.md").read_text()
    for name in STEPS:
        assert f"| {name} | ran |" in report
    assert "| base |" in report and "| onnx |" in report
    assert "![training loss](loss.png)" in report
    assert (warm.cold.out_dir / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "slmforge predict --model" in report


def test_summary_is_printed_with_the_predict_line(warm):
    out = warm.cold.stdout
    assert "accuracy: base " in out and " -> merged " in out and " -> onnx " in out and "majority class" in out
    assert f"slmforge predict --model {warm.cold.out_dir / 'model'}" in out
    assert "[slmforge] finetune" in out and "done in" in out  # plain progress lines, not a TTY


def test_rerun_reuses_everything_and_shows_original_times(warm):
    again = run_slmforge(warm.recipe, warm.home, track=True)
    assert again.rc == 0, again.stderr
    assert set(again.statuses().values()) == {"cached"}
    # nothing ran: it names the MLflow run it repeats (the cold run's) instead of writing the same one again
    client, run, _ = tracked_run(warm.home, again.stdout)
    assert run.info.run_id == tracked_run(warm.home, warm.cold.stdout)[1].info.run_id
    assert "nothing ran: the run this one repeats" in again.stdout and again.record["tracking"]["repeated"] is True
    cold_seconds = {s["name"]: s["seconds"] for s in warm.cold.record["steps"]}
    for s in again.record["steps"]:
        assert s["seconds"] == pytest.approx(cold_seconds[s["name"]], abs=1e-3)
        assert f"[slmforge] {s['name']:<16} cached" in again.stdout
    assert again.record["model"]["path"] == warm.cold.record["model"]["path"]
    assert manifest.is_finished(again.out_dir / "model")


def test_isolated_subprocess_gives_the_same_argv_and_outputs(warm, tmp_path):
    recipe, cache = warm.fork(tmp_path)
    isolated = run_slmforge(recipe, warm.home, "--isolate", "--force", "load_data", track=True)
    assert isolated.rc == 0, isolated.stderr
    assert isolated.statuses()["load_data"] == "ran"
    # Same argv → same bytes → every later step is a cache hit.
    assert {k for k, v in isolated.statuses().items() if v == "ran"} == {"load_data"}
    # tracked as a run of its own, its cached steps there too, tagged so, the loss curve from the cached manifest
    client, run, steps = tracked_run(warm.home, isolated.stdout)
    assert {n: s.data.tags["cached"] for n, s in steps.items()} == {n: str(n != "load_data").lower() for n in STEPS}
    assert len(client.get_metric_history(run.info.run_id, "loss")) == 8
    cold_log = Path(next(s["log"] for s in warm.cold.record["steps"] if s["name"] == "load_data"))
    isolated_log = Path(next(s["log"] for s in isolated.record["steps"] if s["name"] == "load_data"))
    cold_argv = cold_log.read_text().splitlines()[0]
    isolated_argv = isolated_log.read_text().splitlines()[0]
    assert cold_argv.replace(str(warm.cache), "CACHE").replace(str(warm.folder), "DIR") == \
        isolated_argv.replace(str(cache), "CACHE").replace(str(tmp_path), "DIR")


def test_rendered_argv_is_the_component_command_in_both_modes(warm):
    """In-process gets argv[3:] of `python -m slmforge.steps.X ...`; the subprocess the whole argv."""
    loaded = load_recipe(warm.recipe)
    graph = build_graph(loaded)
    runner = LocalRunner(loaded, graph)
    prepared = runner.prepare(graph.step("load_data"))
    argv = prepared.argv
    assert argv[:3] == ["python", "-m", "slmforge.steps.load_data"]
    assert render.step_module(argv) == "slmforge.steps.load_data"
    assert argv[argv.index("--dataset") + 1] == str(prepared.entry.output("dataset"))
    assert argv[argv.index("--loss_on") + 1] == "completion"
    assert Path(argv[argv.index("--spec") + 1]).parent == prepared.entry.work
    assert prepared.entry.key == warm.cold.record["steps"][0]["cache_key"]


def test_invalid_recipe_exits_2_before_any_work(tmp_path, tiny_model_dir, demo_data):
    recipe = write_recipe(tmp_path, tiny_model_dir, demo_data,
                          edit=lambda r: r["passes"]["lora"]["config"].update(lora_rank=4))
    outcome = run_slmforge(recipe, tmp_path / "home")
    assert outcome.rc == 2
    assert "unknown key 'lora_rank'" in outcome.stderr
    assert not (tmp_path / "cache").exists() and not (tmp_path / "out").exists()


def test_azureml_data_is_refused_locally_with_one_clear_line(tmp_path, tiny_model_dir, demo_data):
    def to_datastore(r):
        r["data_configs"][0]["load_dataset_config"]["data_files"] = {
            "type": "azureml_datastore", "config": {"datastore_name": "workspaceblobstore", "relative_path": "x.json"}}
    recipe = write_recipe(tmp_path, tiny_model_dir, demo_data, edit=to_datastore)
    outcome = run_slmforge(recipe, tmp_path / "home")
    assert outcome.rc == 2
    assert outcome.stderr.strip().count("\n") == 0 and "Azure ML location" in outcome.stderr


def test_help_is_fast_and_does_not_import_heavy_modules():
    import subprocess

    code = ("import sys; from slmforge import cli; import slmforge.commands.run, slmforge.commands.cache, "
            "slmforge.commands.models; bad = [m for m in ('torch', 'transformers', 'mlflow', 'rich') "
            "if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out.replace("'", '"')) == []


def test_plain_progress_lines_and_progress_markers(tmp_path):
    import io

    from slmforge.backends.local.display import Display
    from slmforge.contract.progress import Progress, last_event
    from slmforge.steps.finetune import _progress_printer

    out = io.StringIO()
    with Display(["a", "b"], out=out, live=False) as display:
        display.update("a", "cached", seconds=3.0)
        display.update("b", "running")
        display.update("b", "failed", seconds=1.25)
    lines = out.getvalue().splitlines()
    assert lines == ["[slmforge] a                cached (3.0s originally)", "[slmforge] b                running",
                     "[slmforge] b                failed after 1.2s"]
    log = tmp_path / "step.log"
    log.write_text("finetune: step 10/200  loss 4.1\nnoise\n")
    assert last_event(log) is None  # a human line is never parsed: only events count
    import contextlib

    with open(log, "a") as f, contextlib.redirect_stderr(f):
        _progress_printer()(10, 200, 4.1, 900.0, 30.0)  # what the finetune step prints per logged step
    assert last_event(log) == Progress(10, 200, "steps")
    with open(log, "a") as f:
        f.write('##slmforge-progress {"done": 11, "tot')  # cut by a crash mid-line
    assert last_event(log) == Progress(10, 200, "steps")


def _refused(tmp_path, recipe, fragment):
    from local_pipeline import cli

    done = cli(tmp_path / "home", "run", str(recipe))
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], lines


def test_an_output_dir_that_overlaps_an_input_or_a_foreign_model_folder_is_refused(tiny_model_dir, demo_data, tmp_path):
    """Issue 11 #2: with the base model at ./model and output_dir ".", run 1 replaced the base model."""
    from local_pipeline import write_recipe

    folder = tmp_path / "project"
    shutil.copytree(tiny_model_dir, folder / "model")
    before = sorted((p.name, p.stat().st_size) for p in (folder / "model").iterdir())

    def same_folder(recipe):
        recipe["engine"]["output_dir"] = "."
    recipe = write_recipe(folder, folder / "model", demo_data, edit=same_folder)
    _refused(tmp_path, recipe, "overlaps the input")
    assert sorted((p.name, p.stat().st_size) for p in (folder / "model").iterdir()) == before

    def root(recipe):
        recipe["engine"]["output_dir"] = "/"
    _refused(tmp_path, write_recipe(tmp_path / "b", tiny_model_dir, demo_data, edit=root), "choose a folder of its own")

    foreign = tmp_path / "c" / "out" / "model"
    foreign.mkdir(parents=True)
    (foreign / "precious.txt").write_text("mine")
    _refused(tmp_path, write_recipe(tmp_path / "c", tiny_model_dir, demo_data), "was not written by slmforge")
    assert (foreign / "precious.txt").read_text() == "mine"
