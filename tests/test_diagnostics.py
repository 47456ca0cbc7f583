"""Issue 20 (Medium 7, 8, 9, 13 and the Low list): each bad input is ONE line naming the file or the
cause, exit 2, through the real CLI in a subprocess; the eval loss is capped and shows progress."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SLMFORGE = [sys.executable, "-m", "slmforge"]
TEMPLATE = "### Text: {phrase}\n### The tone is:\n{tone}"


def cli(*args: str, cwd: Path | None = None, stdin: str = "") -> tuple[int, list[str], str]:
    """(exit code, the stderr lines, stdout) of `slmforge ARGS`."""
    done = subprocess.run([*SLMFORGE, *map(str, args)], capture_output=True, text=True, cwd=cwd, input=stdin,
                          timeout=300)
    return done.returncode, [ln for ln in done.stderr.splitlines() if ln.strip()], done.stdout


def one_error(*args: str, cwd: Path | None = None, code: int = 2) -> str:
    """The one error line of a command that must fail with `code`."""
    rc, lines, _ = cli(*args, cwd=cwd)
    assert (rc, len(lines)) == (code, 1), (rc, lines)
    assert lines[0].startswith("slmforge: error: ") and "internal error" not in lines[0], lines
    return lines[0]


@pytest.fixture()
def data_file(tmp_path) -> Path:
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"phrase": f"p {i}", "tone": "joy"}) + "\n" for i in range(3)))
    return path


def model_copy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(tiny_model_dir, copy)
    return copy


# --- 7: a corrupt model folder names its file -------------------------------------------------------

@pytest.mark.parametrize("damage, named, cause", [
    ("garbage", "model.safetensors", "not a safetensors file"),
    ("truncate", "model.safetensors", "truncated"),
    ("model_type", "config.json", "model_type 'nosuch'"),
    ("config_json", "config.json", "not valid JSON"),
    ("tokenizer_json", "tokenizer.json", "not valid JSON"),
])
def test_a_corrupt_model_folder_is_one_line_naming_the_file(tmp_path, tiny_model_dir, data_file, damage, named,
                                                          cause):
    model = model_copy(tiny_model_dir, tmp_path)
    weights, config = model / "model.safetensors", model / "config.json"
    if damage == "garbage":
        weights.write_bytes(b"\xff" * 1000)
    elif damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:-100])
    elif damage == "model_type":
        config.write_text(config.read_text().replace('"model_type": "phi3"', '"model_type": "nosuch"'))
    elif damage == "config_json":
        config.write_text("{broken")
    else:
        (model / "tokenizer.json").write_text("{broken")
    line = one_error("evaluate", "--model", model, "--data", data_file, "--template", TEMPLATE)
    assert f"{model / named}:" in line and cause in line, line


def test_merge_and_finetune_name_a_truncated_weights_file(tmp_path, tiny_model_dir):
    """The steps that load models (merge via torch_model, finetune via training.model) say the same."""
    from slmforge.errors import InvalidInput
    from slmforge.models.torch_model import load_causal_lm
    from slmforge.training.methods import AdapterSpec
    from slmforge.training.model import load_model

    model = model_copy(tiny_model_dir, tmp_path)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    with pytest.raises(InvalidInput, match="model.safetensors: truncated"):
        load_causal_lm(str(model))
    with pytest.raises(InvalidInput, match="model.safetensors: truncated"):
        load_model(str(model), None, AdapterSpec(
            method="lora", r=4, alpha=8, dropout=0.0, target_modules=None, gradient_checkpointing=False,
            torch_dtype="float32"), "cpu", 0)


# --- 8: a broken onnxruntime-genai folder names its file --------------------------------------------

@pytest.mark.parametrize("command", ["predict", "chat"])
def test_a_junk_genai_config_is_one_line_naming_it(tmp_path, command):
    folder = tmp_path / "onnx"
    folder.mkdir()
    (folder / "genai_config.json").write_text("{junk")
    args = ["--model", folder] + (["hello"] if command == "predict" else [])
    line = one_error(command, *args)
    assert f"{folder / 'genai_config.json'}: not valid JSON" in line, line


def test_an_onnx_folder_without_its_tokenizer_is_one_line_naming_it(tmp_path):
    folder = tmp_path / "onnx"
    folder.mkdir()
    (folder / "genai_config.json").write_text(json.dumps({"model": {"decoder": {}, "context_length": 64}}))
    line = one_error("predict", "--model", folder, "hello")
    assert f"{folder}: no tokenizer.json" in line, line


# --- 9: evaluate on a folder that is not a model says so first ---------------------------------------

@pytest.mark.parametrize("content", [None, "model-q4.gguf"])
def test_evaluate_on_a_folder_that_is_not_a_model_says_so_first(tmp_path, data_file, content):
    folder = tmp_path / "folder"
    folder.mkdir()
    if content:
        (folder / content).write_bytes(b"GGUF")
    line = one_error("evaluate", "--model", folder, "--data", data_file)
    assert "not a Hugging Face model folder" in line and "text_template" not in line, line


def test_evaluate_without_a_manifest_does_not_blame_one(tmp_path, tiny_model_dir, data_file):
    line = one_error("evaluate", "--model", tiny_model_dir, "--data", data_file)
    assert "has no slmforge.json" in line and "--template" in line, line


# --- 13: the eval loss is capped, stated, and shows progress ------------------------------------------

def test_the_eval_loss_is_capped_and_reports_progress(tmp_path, tiny_model_dir, seed_data, capsys, monkeypatch):
    from lora_adapter import tone_dataset

    from slmforge.contract.progress import PREFIX
    from slmforge.steps import finetune

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    dataset = tone_dataset(tmp_path, tiny_model_dir, seed_data, max_samples=100, max_seq_len=64)
    capsys.readouterr()
    m = finetune.run(model=tiny_model_dir, dataset=dataset, adapter=tmp_path / "adapter", r=4, alpha=8,
                     per_device_train_batch_size=4, per_device_eval_batch_size=2, max_steps=2, max_eval_samples=3,
                     progress=False)
    err = capsys.readouterr().err
    events = [json.loads(ln[len(PREFIX):]) for ln in err.splitlines() if ln.startswith(PREFIX)]
    evals = [e for e in events if e["unit"] == "eval sequences"]
    assert [(e["done"], e["total"]) for e in evals] == [(2, 3), (3, 3)], events
    assert "eval loss is computed over the first 3 of 10 held-out sequences (max_eval_samples 3)" in err, err
    assert (m["metrics"]["eval_sequences"], m["metrics"]["eval_sequences_held_out"]) == (3, 10)
    assert m["params"]["max_eval_samples"] == 3


# --- predict: an empty input ------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["", "   "])
def test_predict_refuses_an_empty_text(tmp_path, text):
    line = one_error("predict", "--model", tmp_path / "nowhere", text)
    assert "TEXT is empty" in line, line


# --- Low: recipes -------------------------------------------------------------------------------------

def recipe(tmp_path: Path, model: Path | str, edit=None, *, rows: str | None = None) -> Path:
    """The shortest recipe (test_cli_errors'), its data file written beside it; `edit` changes it."""
    import copy

    from test_cli_errors import RECIPE, ROWS, jsonl

    r = copy.deepcopy(RECIPE)
    r["input_model"]["config"]["hf_config"]["model_name"] = str(model)
    if edit:
        edit(r)
    (tmp_path / "tones.jsonl").write_text(rows if rows is not None else jsonl(ROWS), encoding="utf-8")
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(r), encoding="utf-8")
    return path


def load_config(r: dict) -> dict:
    return r["data_configs"][0]["load_dataset_config"]


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_a_recipe_nested_too_deep_says_so(tmp_path, suffix):
    path = tmp_path / f"deep{suffix}"
    path.write_text(("a: " if suffix == ".yaml" else "") + "[" * 100_000 + "]" * 100_000)
    line = one_error("validate", path)
    assert f"{path}: nested too deep" in line and "YAML" not in line, line


def test_csv_on_a_json_lines_file_is_one_line(tmp_path, tiny_model_dir):
    path = recipe(tmp_path, tiny_model_dir, lambda r: load_config(r).update(data_name="csv"))
    line = one_error("validate", path)
    assert "tones.jsonl does not look like CSV" in line and "data_name: json" in line, line


@pytest.mark.parametrize("target, state", [("folder", "is a folder"), ("/dev/urandom", "is not a regular file")])
def test_data_files_that_is_not_a_file_says_what_it_is(tmp_path, tiny_model_dir, target, state):
    (tmp_path / "folder").mkdir()
    path = recipe(tmp_path, tiny_model_dir, lambda r: load_config(r).update(data_files=target))
    line = one_error("validate", path)
    assert f"data file '{target}' {state}" in line and "not found" not in line, line


def test_a_missing_model_and_missing_data_are_reported_together(tmp_path):
    path = recipe(tmp_path, tmp_path / "no-model", lambda r: load_config(r).update(data_files="no-data.jsonl"))
    rc, lines, _ = cli("validate", path)
    assert rc == 2 and len(lines) == 2, lines
    assert "no-model' not found" in lines[0] and "no-data.jsonl' not found" in lines[1], lines


def test_the_answer_placeholder_twice_is_refused(tmp_path, tiny_model_dir):
    def twice(r):
        r["data_configs"][0]["pre_process_data_config"]["text_template"] = "{tone}: {phrase}\n### The tone is:\n{tone}"

    line = one_error("validate", recipe(tmp_path, tiny_model_dir, twice))
    assert "text_template: the answer placeholder '{tone}' appears 2 times" in line, line


# --- Low: commands --------------------------------------------------------------------------------------

def test_cache_commands_on_what_is_not_a_cache(tmp_path):
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    assert "not an slmforge cache" in one_error("cache", "ls", "--cache-dir", user)
    line = one_error("cache", "clean", "--all", "--cache-dir", tmp_path / "missing")
    assert f"{tmp_path / 'missing'}: no slmforge cache there" in line, line
    line = one_error("cache", "clean", "--all", "--cache-dir", user / "notes.txt")
    assert f"{user / 'notes.txt'}: a file, not an slmforge cache folder" in line, line
    assert (user / "notes.txt").read_text() == "mine"


def test_compile_refuses_an_experiment_name_azure_ml_refuses(tmp_path):
    cookbook = Path(__file__).parent / "recipes" / "cookbook-aml.json"
    line = one_error("compile", cookbook, "-o", tmp_path / "out", "--experiment", "a\nb")
    assert "--experiment 'a\\nb'" in line, line
    assert not (tmp_path / "out" / "pipeline.yml").exists()
    rc, lines, _ = cli("compile", cookbook, "-o", tmp_path / "good", "--experiment", "tones_2-a")
    assert rc == 0 and "experiment_name: tones_2-a" in (tmp_path / "good" / "pipeline.yml").read_text(), lines


def test_evaluate_names_a_missing_column_once_with_a_count(tmp_path, tiny_model_dir):
    data = tmp_path / "rows.jsonl"
    data.write_text('{"a": "x", "b": "y"}\n' * 30)
    line = one_error("evaluate", "--model", tiny_model_dir, "--data", data, "--template", "{nocol}")
    assert "row 1 (line 1): missing column 'nocol'" in line and "(and 29 more rows alike)" in line, line


def test_migrate_refuses_a_symlink_as_its_output(tmp_path, tiny_model_dir):
    path = recipe(tmp_path, tiny_model_dir)
    link = tmp_path / "out.json"
    link.symlink_to(tmp_path / "target.json")
    line = one_error("migrate", path, "-o", link)
    assert f"{link}: a symbolic link" in line, line
    assert not (tmp_path / "target.json").exists()


def test_cancel_of_a_finished_job_says_it_finished(emulator, capsys, monkeypatch):
    """The emulator fails the cookbook job at load_data (its registry model is not there offline)."""
    import re

    from slmforge.cli import main

    monkeypatch.setenv("SLMFORGE_POLL_SECONDS", "0.5")
    recipe_file = Path(__file__).parent / "recipes" / "cookbook-aml.json"
    assert main(["submit", str(recipe_file), "--workspace", str(emulator[1]), "--wait"]) == 1
    name = re.search(r"^(\S+): Failed$", capsys.readouterr().out, re.M).group(1)
    assert main(["cancel", name, "--workspace", str(emulator[1])]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == f"slmforge: error: {name}: already finished (Failed); nothing to cancel"
    assert "cancel requested" not in captured.out


def test_a_failed_job_names_the_cause_from_its_log(emulator, capsys, monkeypatch):
    """The cookbook job fails at load_data in the emulator: the line says why, from the step's log."""
    from slmforge.cli import main

    monkeypatch.setenv("SLMFORGE_POLL_SECONDS", "0.5")
    recipe_file = Path(__file__).parent / "recipes" / "cookbook-aml.json"
    assert main(["submit", str(recipe_file), "--workspace", str(emulator[1]), "--wait"]) == 1
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("slmforge: error:")]
    assert len(err) == 1 and " failed at step load_data: " in err[0] and "slmforge logs" in err[0], err
    print(err[0])
