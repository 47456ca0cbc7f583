"""The Python API (`slmforge.run`, `validate`, `load_recipe`, `evaluate`), the model card written into the output's
model folder, and run.json's record of which rows were scored: on the session's warm tiny-model run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from slmforge.errors import InvalidInput

from local_pipeline import warm_pipeline, write_recipe

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def warm(tmp_path_factory, tiny_model_dir, demo_data):
    return warm_pipeline(tmp_path_factory, tiny_model_dir, demo_data)


def test_import_is_light_and_the_api_is_named():
    code = ("import sys, slmforge; before = sorted(m for m in sys.modules if m.startswith(('slmforge', 'pydantic')));"
            "names = dir(slmforge); slmforge.RunResult; print(before, names)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("['slmforge'] "), out  # nothing else imported until a name of the API is used
    for name in ("run", "validate", "load_recipe", "evaluate", "RunResult"):
        assert f"'{name}'" in out


def test_validate_and_load_recipe_raise_invalid_input(tmp_path, tiny_model_dir, demo_data):
    import slmforge

    recipe = write_recipe(tmp_path, tiny_model_dir, demo_data)
    loaded = slmforge.load_recipe(recipe, engine__output_dir="elsewhere", **{"evaluate.max_samples": 3})
    assert loaded.recipe.engine.output_dir == "elsewhere" and loaded.recipe.evaluate.max_samples == 3
    graph = slmforge.validate(recipe)
    assert graph["steps"][0]["name"] == "load_data" and graph["final"]["step"] == "build_onnx"
    with pytest.raises(InvalidInput, match="lora_rank"):  # a bad key is the project's error, not an exit
        slmforge.validate(recipe, passes__lora__lora_rank=4)
    with pytest.raises(InvalidInput, match="not found"):
        slmforge.load_recipe(tmp_path / "missing.json")


def test_run_from_python_returns_the_run(warm, tmp_path, monkeypatch):
    import slmforge

    monkeypatch.setenv("SLMFORGE_HOME", str(warm.home))  # the warm run's registry: its register step is cached too
    recipe, _ = warm.fork(tmp_path / "fork")
    # A copy of the warm cache, and an override outside the recipe's digest: every step is reused, in this process.
    result = slmforge.run(recipe, description="run from Python")
    assert isinstance(result, slmforge.RunResult) and result.record["status"] == "succeeded"
    assert {s["status"] for s in result.record["steps"]} == {"cached"}
    assert result.output_dir == tmp_path / "fork" / "out" and (result.model_dir / "model.onnx").is_file()
    assert result.report.is_file() and (result.model_dir / "README.md").is_file()
    assert result.metrics["onnx"]["accuracy"] == warm.cold.record["evaluation"]["onnx"]["accuracy"]
    assert result.registered["name"] == "tiny-tones" and str(result.registered["version"]) == "1"
    scored = slmforge.evaluate(result.model_dir, warm.data_file, max_samples=4, max_new_tokens=4)
    assert scored["n"] == 4 and 0.0 <= scored["accuracy"] <= 1.0


def test_the_report_says_which_rows_were_scored(warm):
    record = warm.cold.record
    n = record["evaluation"]["onnx"]["n"]
    # no evaluate.data_config: the rows held out of the training data config (eval_dataset_size 0.25), not trained on
    assert record["scored"] == {"data_config": "tones", "split": "train", "held_out": 0.25, "rows": n}
    report = (warm.cold.out_dir / "report.md").read_text()
    assert f"- scored: {n} rows of data config 'tones', split 'train' (a seeded 25% held out of training)" in report


def test_a_separate_eval_data_config_is_what_is_scored(tmp_path, tiny_model_dir, demo_data):
    from slmforge.recipe.graph import build_graph
    from slmforge.recipe.loader import load_recipe

    def separate(recipe):
        held = json.loads(json.dumps(recipe["data_configs"][0]))
        held["name"] = "heldout"
        recipe["data_configs"].append(held)
        recipe["evaluate"]["data_config"] = "heldout"
        del recipe["passes"]["lora"]["config"]["eval_dataset_size"]

    graph = build_graph(load_recipe(write_recipe(tmp_path, tiny_model_dir, demo_data, edit=separate)))
    assert graph.scored == {"data_config": "heldout", "split": "train", "separate": True}
    assert "eval_data" in graph.step("load_data").inputs


def test_model_card_in_the_model_folder(warm, tmp_path):
    record = warm.cold.record
    card = (warm.cold.out_dir / "model" / "README.md").read_text()
    assert card.startswith("# tiny-tones\n")
    assert f"- base model: `{warm.model_dir}`" in card
    data = json.loads((Path(record["steps"][0]["output"]) / "slmforge.json").read_text())["inputs"]["data"]
    assert f"(sha256 `{data['digest'][:16]}`)" in card
    for label, m in record["evaluation"].items():
        assert f"| {label} | {m['accuracy']:.3f} | {m['n']} |" in card
    assert '"train_data_config": "tones"' in card  # the recipe as written
    # the card's onnxruntime-genai snippet runs as it is
    snippet = card.split("```python\n", 1)[1].split("```", 1)[0]
    assert "### The tone is:" in snippet  # the prompt in the template the model was trained with
    done = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_card_does_not_make_a_rerun_copy_the_model_again(warm, tmp_path):
    import shutil

    from slmforge.backends.local.outputs import same_model

    source = Path(warm.cold.record["steps"][5]["output"])  # build_onnx's model in the cache
    dest = shutil.copytree(warm.cold.out_dir / "model", tmp_path / "model")  # the shared run stays untouched
    assert (dest / "README.md").is_file() and not (source / "README.md").exists()
    assert same_model(source, dest)
    (dest / "model.onnx.data").write_bytes(b"edited")  # an edited model is still told apart
    assert not same_model(source, dest)
