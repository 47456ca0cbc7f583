"""Olive's `evaluators` / `evaluator`: validated strictly, run by the evaluate steps, reported in
run.json, report.md and the registry tags."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest

from slmforge.errors import InvalidInput
from slmforge.recipe.graph import build_graph
from slmforge.recipe.loader import load_recipe
from slmforge.registry.rules import version_tags

from local_pipeline import cli, run_slmforge, write_recipe

EVALUATOR = {"metrics": [
    {"name": "acc", "type": "accuracy", "data_config": "tones", "sub_types": [
        {"name": "accuracy_score", "priority": 1, "goal": {"type": "threshold", "value": 0.0}},
        {"name": "f1_score"},
        {"name": "precision", "metric_config": {"average": "micro"}},
        {"name": "recall"},
        {"name": "perplexity", "goal": {"type": "percent-max-degradation", "value": 50}},
    ]},
    {"name": "latency", "type": "latency", "sub_types": [
        {"name": "avg", "priority": 2, "metric_config": {"warmup_num": 1, "repeat_test_num": 5}},
        {"name": "p90"}, {"name": "max"}, {"name": "min"}]},
    {"name": "speed", "type": "throughput", "sub_types": [{"name": "avg"}, {"name": "p50"}]},
]}


def _with_evaluator(recipe: dict) -> None:
    """LoRA (a few steps) -> merge, the evaluator named in the engine, nothing registered."""
    lora = recipe["passes"]["lora"]["config"]
    lora["training_args"].update(max_steps=4, save_steps=4, logging_steps=2)
    recipe["passes"] = {"lora": recipe["passes"]["lora"], "merge": {"type": "MergeAdapterWeights"}}
    recipe["engine"]["evaluate_input_model"] = False  # the relative perplexity goal asks for the base itself
    recipe["engine"]["evaluator"] = "common_evaluator"
    recipe["evaluators"] = {"common_evaluator": copy.deepcopy(EVALUATOR)}
    recipe["evaluate"] = {"max_samples": 8, "max_new_tokens": 3}
    recipe["register"] = {"enabled": False}


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, phi3_stand_in_dir, demo_data):
    folder = tmp_path_factory.mktemp("evaluators")
    recipe = write_recipe(folder, phi3_stand_in_dir, demo_data, edit=_with_evaluator)
    outcome = run_slmforge(recipe, folder / "home")
    assert outcome.rc == 0, outcome.stdout + outcome.stderr
    return outcome


def _metric(evaluation: dict, name: str) -> dict:
    return next(m for m in evaluation["evaluator"]["metrics"] if m["name"] == name)


def _sub(metric: dict, name: str) -> dict:
    return next(s for s in metric["sub_types"] if s["name"] == name)


def test_each_metric_lands_in_run_json_with_its_sub_types(evaluated):
    record = evaluated.record
    # A goal relative to the input model makes the base evaluated too, as Olive does.
    assert [s["name"] for s in record["steps"]] == ["load_data", "evaluate_base", "finetune", "merge",
                                                    "evaluate_merged"]
    for label in ("base", "merged"):
        evaluation = record["evaluation"][label]
        ev = evaluation["evaluator"]
        assert ev["name"] == "common_evaluator"
        assert [m["name"] for m in ev["metrics"]] == ["acc", "latency", "speed"]
        for metric, spec in zip(ev["metrics"], EVALUATOR["metrics"]):
            assert [s["name"] for s in metric["sub_types"]] == [s["name"] for s in spec["sub_types"]]
            assert all(isinstance(s["value"], float) for s in metric["sub_types"]), metric
        acc = _metric(evaluation, "acc")
        assert _sub(acc, "accuracy_score")["value"] == evaluation["accuracy"]
        assert _sub(acc, "perplexity")["value"] == evaluation["perplexity"]
        assert _sub(acc, "perplexity")["higher_is_better"] is False
        # macro recall and F1 from the confusion table, computed here independently
        confusion = evaluation["confusion"]
        recalls, f1s = [], []
        for cls, row in confusion.items():
            tp, rows = row.get(cls, 0), sum(row.values())
            predicted = sum(r.get(cls, 0) for r in confusion.values())
            p, r = (tp / predicted if predicted else 0.0), tp / rows
            recalls.append(r)
            f1s.append(2 * p * r / (p + r) if p + r else 0.0)
        assert _sub(acc, "recall")["value"] == pytest.approx(sum(recalls) / len(recalls), abs=1e-6)
        assert _sub(acc, "f1_score")["value"] == pytest.approx(sum(f1s) / len(f1s), abs=1e-6)
        latency = {s["name"]: s for s in _metric(evaluation, "latency")["sub_types"]}
        assert _metric(evaluation, "latency")["requests"] == 5  # repeat_test_num, after one warm-up
        assert all(s["unit"] == "ms" and s["higher_is_better"] is False for s in latency.values())
        assert 0 < latency["min"]["value"] <= latency["avg"]["value"] <= latency["max"]["value"]
        assert latency["p90"]["value"] <= latency["max"]["value"]
        speed = _metric(evaluation, "speed")["sub_types"]
        assert all(s["unit"] == "tokens/s" and s["value"] > 0 for s in speed)
        threshold = _sub(acc, "accuracy_score")["goal"]
        assert threshold["type"] == "threshold" and threshold["met"] is True
    base, merged = (record["evaluation"][k] for k in ("base", "merged"))
    relative = _sub(_metric(merged, "acc"), "perplexity")["goal"]
    assert relative["baseline"] == base["perplexity"]
    assert relative["target"] == pytest.approx(base["perplexity"] * 1.5, rel=1e-5)
    assert relative["met"] is (merged["perplexity"] <= relative["target"])
    assert _sub(_metric(base, "acc"), "perplexity")["goal"]["met"] is None  # nothing to measure the base from


def test_the_report_tables_each_sub_type_with_its_goal(evaluated):
    report = (evaluated.out_dir / "report.md").read_text(encoding="utf-8")
    assert "### Evaluator `common_evaluator`" in report
    assert "| merged | latency (latency) | p90 |" in report
    assert "| merged | acc (accuracy) | accuracy_score |" in report
    assert "threshold 0: met" in report


def test_the_evaluator_s_values_become_registry_tags(evaluated):
    step = next(s for s in evaluated.record["steps"] if s["name"] == "evaluate_merged")
    metrics = json.loads((Path(step["outputs"]["metrics"]) / "metrics.json").read_text(encoding="utf-8"))
    tags = version_tags(metrics, recipe_digest="d")
    assert tags["metrics.acc-accuracy_score"] == str(metrics["accuracy"])
    assert float(tags["metrics.latency-p90"]) > 0
    assert {"metrics.speed-avg", "metrics.acc-perplexity", "metrics.accuracy"} <= set(tags)


# ---------------------------------------------------------------------- validation


def _recipe(tmp_path: Path, model_dir: Path, **top) -> Path:
    """A flat (Olive 0.7+) recipe with two data configs and the given top-level keys."""
    if not (tmp_path / "model").exists():
        shutil.copytree(model_dir, tmp_path / "model")
    for name in ("a.jsonl", "b.jsonl"):
        (tmp_path / name).write_text('{"phrase": "hi", "tone": "joy"}\n', encoding="utf-8")
    pre = {"text_template": "### Text: {phrase}\n### The tone is:\n{tone}"}
    recipe = {
        "input_model": {"type": "HfModel", "model_path": "model"},
        "data_configs": [{"name": n, "load_dataset_config": {"data_files": f"{n}.jsonl"},
                          "pre_process_data_config": pre} for n in ("a", "b")],
        "passes": {"lora": {"type": "LoRA", "train_data_config": "a"}, "m": {"type": "MergeAdapterWeights"}},
        "evaluators": {"common_evaluator": {"metrics": [
            {"name": "acc", "type": "accuracy", "data_config": "b", "sub_types": [{"name": "accuracy_score"}]}]}},
        "evaluator": "common_evaluator",
    }
    recipe.update(top)
    recipe = {k: v for k, v in recipe.items() if v is not None}
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(recipe), encoding="utf-8")
    return path


def _problems(path: Path) -> list[str]:
    with pytest.raises(InvalidInput) as e:
        load_recipe(path, check_files=False)
    return [p.split(": ", 1)[1] for p in e.value.problems]


def test_a_metric_s_data_config_selects_the_rows_evaluated(tmp_path, phi3_stand_in_dir):
    graph = build_graph(load_recipe(_recipe(tmp_path, phi3_stand_in_dir)))
    load = graph.step("load_data")
    assert load.inputs["eval_data"].value == str(tmp_path / "b.jsonl")  # the metric's, not a split of 'a'
    spec = json.loads(graph.step("evaluate_merged").inputs["evaluator"].value)
    assert spec["metrics"][0]["sub_types"][0]["higher_is_better"] is True


def test_a_dangling_evaluator_name_is_an_error_with_a_hint(tmp_path, phi3_stand_in_dir):
    assert _problems(_recipe(tmp_path, phi3_stand_in_dir, evaluator="common_evaluatr")) == [
        "evaluator: no evaluator named 'common_evaluatr'; did you mean 'common_evaluator'?"]


def test_an_unknown_sub_type_and_a_dangling_data_config_are_errors_with_hints(tmp_path, phi3_stand_in_dir):
    path = _recipe(tmp_path, phi3_stand_in_dir, evaluators={"e": {"metrics": [
        {"name": "acc", "type": "accuracy", "data_config": "bb", "sub_types": [{"name": "f1_scor"}]},
        {"name": "lat", "type": "latency", "sub_types": [{"name": "p95"}, {"name": "p9999"}]}]}}, evaluator="e")
    assert _problems(path) == [
        "evaluators.e.metrics[0].sub_types[0].name: unknown sub_type 'f1_scor' for metric type 'accuracy'; "
        "did you mean 'f1_score'? (one of accuracy_score, f1_score, precision, recall, perplexity)",
        "evaluators.e.metrics[0].data_config: no data config named 'bb'; did you mean 'b'?",
        "evaluators.e.metrics[1].sub_types[1].name: unknown sub_type 'p9999' for metric type 'latency'; "
        "did you mean 'p999'? (one of avg, max, min, p50, p75, p90, p95, p99, p999)"]


def test_what_cannot_run_here_is_refused_by_name_with_the_reason(tmp_path, phi3_stand_in_dir):
    lm = {"type": "LMEvaluator", "tasks": ["hellaswag"], "batch_size": 1, "limit": 4, "max_length": 128}
    assert _problems(_recipe(tmp_path, phi3_stand_in_dir, evaluators={"evaluator": lm}, evaluator="evaluator")) == [
        "evaluators.evaluator: evaluator type 'LMEvaluator' is not supported by slmforge yet (lm-eval-harness "
        "tasks read their data from the Hugging Face hub, which slmforge cannot serve here, and lm_eval is not "
        "installed; use an evaluator with accuracy/perplexity metrics on a data config)"]
    custom = {"name": "c", "type": "custom", "sub_types": [{"name": "x"}], "user_config": {"evaluate_func": "f"}}
    auroc = {"name": "a", "type": "accuracy", "sub_types": [{"name": "auroc"}]}
    old = {"name": "l", "type": "latency", "sub_types": [{"name": "avg"}],
           "user_config": {"user_script": "user_script.py", "dataloader_func": "f", "batch_size": 2}}
    for metric, expected in ((custom, "metrics[0]: metric type 'custom' is not supported by slmforge yet "
                                      "(custom metrics from user_script: not yet)"),
                             (auroc, "metrics[0].sub_types[0].name: sub_type 'auroc' is not supported by slmforge "
                                     "yet (AUROC needs class scores; slmforge's accuracy is over generated answers)"),
                             (old, "metrics[0].user_config: user_config.user_script is not supported by slmforge "
                                   "yet (custom metrics from user_script: not yet; give the metric a data_config)")):
        path = _recipe(tmp_path, phi3_stand_in_dir, evaluators={"e": {"metrics": [metric]}}, evaluator="e")
        assert _problems(path) == [f"evaluators.e.{expected}"]


def test_the_lm_evaluator_refusal_is_one_line_from_the_cli(tmp_path, phi3_stand_in_dir):
    lm = {"type": "LMEvaluator", "tasks": ["hellaswag"], "batch_size": 1}
    done = cli(tmp_path / "home", "validate", str(_recipe(tmp_path, phi3_stand_in_dir, evaluator=lm)))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "evaluator type 'LMEvaluator' is not supported" in done.stderr
    assert "Traceback" not in done.stderr


def test_published_shapes_are_read_as_olive_reads_them(tmp_path, phi3_stand_in_dir):
    """Olive 0.9's phi3 template (a latency metric with io_bind and a percent goal, the evaluator named
    in the engine) and a metric whose user_config keys are written on the metric itself."""
    latency = {"name": "latency", "type": "latency", "data_config": "b", "user_config": {"io_bind": True},
               "sub_types": [{"name": "avg", "priority": 1, "goal": {"type": "percent-min-improvement", "value": 20}},
                             {"name": "max"}, {"name": "min"}]}
    path = _recipe(tmp_path, phi3_stand_in_dir, evaluators={"common_evaluator": {"metrics": [latency]}}, evaluator=None,
                   engine={"evaluator": "common_evaluator", "evaluate_input_model": False})
    graph = build_graph(load_recipe(path))
    assert "evaluate_base" in graph.names()  # the relative goal needs the input model's latency
    assert graph.step("evaluate_merged").inputs["baseline"].value == "evaluate_base"
    inline = {"name": "inline_eval", "metrics": [dict(latency, data_config="a")]}
    spec = build_graph(load_recipe(_recipe(tmp_path, phi3_stand_in_dir, evaluator=inline))).step("evaluate_merged").inputs["evaluator"]
    assert json.loads(spec.value)["name"] == "inline_eval"
    flat = dict(latency, io_bind=True)
    del flat["user_config"]
    loaded = load_recipe(_recipe(tmp_path, phi3_stand_in_dir, evaluators={"e": {"metrics": [flat]}}, evaluator="e"))
    assert loaded.recipe.evaluators["e"].metrics[0].user_config.io_bind is True
    bad_goal = copy.deepcopy(latency)
    bad_goal["sub_types"][0]["goal"]["value"] = 120  # a latency cannot fall by 120 %
    assert _problems(_recipe(tmp_path, phi3_stand_in_dir, evaluators={"e": {"metrics": [bad_goal]}}, evaluator="e")) == [
        "evaluators.e.metrics[0]: sub_types[0].goal: a percent-min-improvement goal on a lower-is-better value "
        "must be between 0 and 100 (got 120)"]


def test_classification_sub_types_follow_the_confusion_table():
    """3 classes, one answer outside them: per-class precision/recall by hand, then macro, micro, weighted."""
    from slmforge.models.olive_metrics import score

    confusion = {"joy": {"joy": 3, "fear": 1}, "fear": {"fear": 1, "(other)": 1}, "sad": {"joy": 1, "sad": 1}}
    result = {"accuracy": 5 / 8, "perplexity": 3.5, "confusion": confusion}
    subs = [{"name": n, "priority": -1, "higher_is_better": True, "metric_config": c} for n, c in (
        ("accuracy_score", None), ("accuracy_score", {"task": "multiclass"}), ("f1_score", None),
        ("precision", None), ("recall", {"average": "weighted"}), ("precision", {"average": "micro"}))]
    values = [s["value"] for s in score({"name": "e", "metrics": [
        {"name": "a", "type": "accuracy", "sub_types": subs}]}, result, None)["metrics"][0]["sub_types"]]
    # joy: tp 3, predicted 4, rows 4; fear: tp 1, predicted 2, rows 2; sad: tp 1, predicted 1, rows 2
    precision, recall = (3 / 4, 1 / 2, 1.0), (3 / 4, 1 / 2, 1 / 2)
    f1 = [2 * p * r / (p + r) for p, r in zip(precision, recall)]
    assert values == pytest.approx([5 / 8, sum(recall) / 3, sum(f1) / 3, sum(precision) / 3,
                                    (3 / 4 * 4 + 1 / 2 * 2 + 1 / 2 * 2) / 8, 5 / 7], abs=1e-6)


def test_the_step_refuses_a_broken_evaluator_file_in_one_line_before_any_work(tmp_path, capsys):
    from slmforge.steps import evaluate

    spec = tmp_path / "evaluator.json"
    spec.write_text(json.dumps({"name": "e", "metrics": [{"name": "l", "type": "latency", "sub_types": []}]}))
    code = evaluate.main(["--dataset", str(tmp_path / "no-such-folder"), "--metrics", str(tmp_path / "m"),
                          "--evaluator", str(spec)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert f"{spec}: metrics[0].latency needs warmup_num, repeat_test_num, sleep_num" in err
