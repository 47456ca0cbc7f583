"""Issue 20 #5, #6, #10, #11: bad data and model folders that are not models are found by `validate`
(and by `run`, which validates first) before any work: one line naming the cause, exit 2.

Before the fix each of these recipes was "valid" and failed later, at load_data or finetune, with exit 1.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from local_pipeline import REPO, cli, write_recipe

TONES = REPO / "src" / "slmforge" / "data" / "tones.jsonl"
GOOD_ROWS = TONES.read_text(encoding="utf-8")


def _validate(folder: Path, capsys, *, rows: str | None = GOOD_ROWS, model: Path | str | None = None,
              edit=None) -> tuple[int, list[str]]:
    """`slmforge validate` on a recipe in `folder` with `rows` as its data file: (exit code, error lines)."""
    from slmforge.cli import main

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tones.jsonl").write_text(rows, encoding="utf-8")

    def change(recipe: dict) -> None:
        if model is not None:
            recipe["input_model"]["config"]["hf_config"]["model_name"] = str(model)
        if edit is not None:
            edit(recipe)

    recipe = write_recipe(folder, Path("unused"), folder / "tones.jsonl", edit=change)
    capsys.readouterr()
    rc = main(["validate", str(recipe)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("slmforge: error:")]
    return rc, err


def _pre(**values):
    return lambda r: r["data_configs"][0]["pre_process_data_config"].update(values)


def _lora(**values):
    return lambda r: r["passes"]["lora"]["config"].update(values)


def _chat(recipe: dict) -> None:
    recipe["data_configs"][0]["pre_process_data_config"] = {"chat_template": True, "max_seq_len": 128}


CHAT_OK = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "joy"}]})
BAD_DATA = [  # (case, rows, recipe edit, what the one error line says)
    ("a broken JSON line", GOOD_ROWS + '{"phrase": "oops", "tone": \n', None, "line 257: not valid JSON"),
    ("an empty file", "", None, "no usable rows (0 read, 0 empty)"),
    ("blank lines only", "\n\n  \n", None, "no usable rows (3 read, 3 empty)"),
    ("mixed schemas", GOOD_ROWS + '{"text": "a row of another file", "label": "joy"}\n', None,
     "row 257 (line 257): missing column 'phrase' (columns: text, label)"),
    ("a null value", '{"phrase": null, "tone": "joy"}\n' + GOOD_ROWS, None,
     "row 1 (line 1): column 'phrase' is null, expected a string"),
    ("a bad chat turn", (CHAT_OK + "\n") * 30 + json.dumps({"messages": [{"role": "bot", "content": "x"}]}) + "\n",
     _chat, "row 31 (line 31): messages[0].role: 'bot' is not one of system, user, assistant, tool"),
    ("eval_dataset_size above the rows", GOOD_ROWS, _lora(eval_dataset_size=300),
     "passes.lora.config.eval_dataset_size: eval_dataset_size 300.0 leaves no training rows (there are 256 rows)"),
    ("200 identical rows", '{"phrase": "same", "tone": "joy"}\n' * 200, None,
     "passes.lora.config.eval_dataset_size: eval_dataset_size 0.25: too few distinct rows to hold out 50 of 200 "
     "rows: they have 1 distinct prompt"),
    ("target_modules the model lacks", GOOD_ROWS, _lora(target_modules=["q_proj", "v_proj"]),
     "passes.lora.config.target_modules: 'q_proj' names no module of the model"),
]


@pytest.mark.parametrize("case,rows,edit,expected", BAD_DATA, ids=[c[0] for c in BAD_DATA])
def test_bad_data_is_one_line_at_validate(case, rows, edit, expected, tiny_model_dir, tmp_path, capsys):
    rc, err = _validate(tmp_path / "r", capsys, rows=rows, model=tiny_model_dir, edit=edit)
    assert rc == 2, err
    assert len(err) == 1, err
    assert expected in err[0]


def test_a_data_file_with_many_bad_rows_is_still_one_line(tiny_model_dir, tmp_path, capsys):
    rows = GOOD_ROWS + '{"phrase": 1, "tone": "joy"}\n' * 5
    rc, err = _validate(tmp_path / "r", capsys, rows=rows, model=tiny_model_dir)
    assert rc == 2 and len(err) == 1, err
    assert "row 257 (line 257): column 'phrase' is a number (1), expected a string (and 4 more rows alike)" in err[0]


def test_the_rows_validate_reads_are_those_load_data_reads(tiny_model_dir, tmp_path, capsys):
    """max_samples cuts the rows before the split, as in load_data: 8 rows cannot give 10 held-out rows."""
    rc, err = _validate(tmp_path / "r", capsys, model=tiny_model_dir,
                        edit=lambda r: (_pre(max_samples=8)(r), _lora(eval_dataset_size=10)(r)))
    assert rc == 2 and len(err) == 1, err
    assert "eval_dataset_size 10.0 leaves no training rows (there are 8 rows)" in err[0]


def test_load_data_refuses_a_split_that_holds_out_nothing(tiny_model_dir, tmp_path, capsys):
    """#10: 200 identical rows left 0 held-out rows silently; evaluate_merged then failed naming a cache file."""
    from slmforge.steps import load_data

    data = tmp_path / "same.jsonl"
    data.write_text('{"phrase": "same", "tone": "joy"}\n' * 200, encoding="utf-8")
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"text_cols": ["phrase", "tone"], "text_template": "{phrase} {tone}"}))
    assert load_data.main(["--data", str(data), "--spec", str(spec), "--tokenizer", str(tiny_model_dir),
                           "--eval_dataset_size", "0.1", "--dataset", str(tmp_path / "ds")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ("eval_dataset_size 0.1: too few distinct rows to hold out 20 of 200 rows: they have "
                              "1 distinct prompt (the rarest in 200 rows)") in err[0], err
    assert not (tmp_path / "ds").exists()


# ---------------------------------------------------------------- #11: rows cut off by max_seq_len

CUT = ("66 of 256 rows (25.8 %) are longer than max_seq_len 32 tokens (the longest: 42 tokens), "
       "so their answers are cut off")


def test_validate_refuses_rows_cut_off_by_max_seq_len(tiny_model_dir, tmp_path, capsys):
    """A quarter of the demo rows do not fit in 32 tokens: refused at validate, with the setting to raise."""
    rc, err = _validate(tmp_path / "r", capsys, model=tiny_model_dir, edit=_pre(source_max_len=32))
    assert rc == 2 and len(err) == 1, err
    assert err[0].endswith(f"pre_process_data_config.source_max_len: {CUT}, more than 10% of the rows: "
                           "raise max_seq_len (source_max_len in older recipes) to 42 to keep every answer")


def test_load_data_refuses_rows_cut_off_by_max_seq_len(tiny_model_dir, tmp_path, capsys):
    """The step's own check (a recipe whose model is a hub id, or an Azure ML job, reaches it without validate)."""
    from slmforge.steps import load_data

    spec = tmp_path / "spec.json"
    template = "### Text: {phrase}\n### The tone is:\n{tone}"
    spec.write_text(json.dumps({"text_cols": ["phrase", "tone"], "text_template": template}))
    argv = ["--data", str(TONES), "--spec", str(spec), "--tokenizer", str(tiny_model_dir),
            "--strategy", "line-by-line", "--dataset", str(tmp_path / "ds")]
    assert load_data.main([*argv, "--max_seq_len", "32"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and CUT in err[0] and "raise max_seq_len" in err[0], err
    assert not (tmp_path / "ds").exists()
    assert load_data.main([*argv, "--max_seq_len", "40"]) == 0  # 3 rows (1.2 %): said, not refused
    err = capsys.readouterr().err
    assert ("load_data: 3 of 256 rows (1.2 %) are longer than max_seq_len 40 tokens (the longest: 42 tokens), "
            "so their answers are cut off") in err


def test_a_run_says_what_was_cut_off_on_the_console_and_in_report_md(tiny_model_dir, tmp_path):
    folder = tmp_path / "r"
    folder.mkdir()
    shutil.copyfile(TONES, folder / "tones.jsonl")

    def short(recipe: dict) -> None:
        _pre(source_max_len=40)(recipe)
        recipe["passes"] = {"lora": {"type": "LoRA", "config": {
            "r": 4, "train_data_config": "tones", "training_args": {"max_steps": 2, "per_device_train_batch_size": 4}}}}
        recipe["engine"]["evaluate_input_model"] = False

    recipe = write_recipe(folder, tiny_model_dir, folder / "tones.jsonl", edit=short)
    done = cli(tmp_path / "home", "run", str(recipe), "--plain")
    assert done.returncode == 0, done.stderr
    said = "3 of 256 rows (1.2 %) are longer than max_seq_len 40 tokens (the longest: 42 tokens)"
    assert f"data: {said}" in done.stdout
    assert f"- data: {said}" in (folder / "out" / "report.md").read_text(encoding="utf-8")


def _broken_model(tmp_path: Path, tiny_model_dir: Path, change) -> Path:
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    change(model)
    return model


def _gguf_only(model: Path) -> None:
    for f in model.iterdir():
        f.unlink()
    (model / "smollm2-135m.Q4_K_M.gguf").write_bytes(b"GGUF\x03\x00\x00\x00")


def _onnx(model: Path) -> None:
    for f in model.iterdir():
        f.unlink()
    (model / "genai_config.json").write_text("{}")
    (model / "model.onnx").write_bytes(b"")


BAD_MODELS = [  # (case, change to a copy of the tiny model, what the line says)
    ("no config.json", lambda m: (m / "config.json").unlink(), "not a Hugging Face model folder: no config.json"),
    ("no tokenizer", lambda m: (m / "tokenizer.json").unlink(), "no tokenizer (tokenizer.json or tokenizer.model)"),
    ("no weights", lambda m: (m / "model.safetensors").unlink(), "no weights (model.safetensors or pytorch_model.bin)"),
    ("a GGUF-only folder", _gguf_only, "holds a GGUF model (smollm2-135m.Q4_K_M.gguf) and no config.json"),
    ("an ONNX folder", _onnx, "is an ONNX model folder (genai_config.json)"),
]


@pytest.mark.parametrize("case,change,expected", BAD_MODELS, ids=[c[0] for c in BAD_MODELS])
def test_a_folder_that_is_not_a_model_is_one_line(case, change, expected, tiny_model_dir, tmp_path, capsys):
    model = _broken_model(tmp_path, tiny_model_dir, change)
    rc, err = _validate(tmp_path / "r", capsys, model=model)
    assert rc == 2 and len(err) == 1, err
    assert f"input_model.config.hf_config.model_name: '{model}' ({model}) {expected}" in err[0]


def test_an_empty_model_path_is_refused(tmp_path, capsys):
    """`model_path: ""` resolved to the recipe's own folder and passed."""
    rc, err = _validate(tmp_path / "r", capsys, model="")
    assert rc == 2 and len(err) == 1, err
    assert "input_model.config.hf_config.model_name: is empty; name a model folder" in err[0]


def test_a_missing_local_folder_is_not_a_hub_id(tmp_path, capsys):
    """A bare name that is no folder is a missing local folder, not a hub lookup of a model_id."""
    rc, err = _validate(tmp_path / "r", capsys, model="phi3-tiny")
    assert rc == 2 and len(err) == 1, err
    looked = tmp_path / "r" / "phi3-tiny"
    assert err[0].endswith(f"model_name: model folder 'phi3-tiny' not found (looked at {looked}); "
                           "a local path is never looked up on a hub (a hub id is written org/name)")


def test_a_hub_shaped_name_says_it_is_read_as_a_hub_id(tmp_path, capsys):
    """`org/name` with no such folder next to the recipe: valid, and validate says which of the two it took."""
    from slmforge.cli import main

    rc, err = _validate(tmp_path / "r", capsys, model="models/phi3-tiny")
    assert rc == 0, err
    recipe = tmp_path / "r" / "recipe.json"
    assert main(["validate", str(recipe)]) == 0
    out = capsys.readouterr().out
    assert (f"note: input_model.config.hf_config.model_name 'models/phi3-tiny' is no folder here "
            f"(looked at {tmp_path / 'r' / 'models' / 'phi3-tiny'}): read as a Hugging Face hub id") in out


def test_run_validates_the_rows_before_any_step(tiny_model_dir, tmp_path):
    """`slmforge run` as a process: the broken line is found before load_data, nothing is written."""
    folder = tmp_path / "r"
    folder.mkdir()
    (folder / "tones.jsonl").write_text(GOOD_ROWS + "{broken\n", encoding="utf-8")
    recipe = write_recipe(folder, tiny_model_dir, folder / "tones.jsonl")
    done = cli(tmp_path / "home", "run", str(recipe), "--plain")
    assert done.returncode == 2, done.stderr
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "line 257: not valid JSON" in lines[0], lines
    assert not (folder / "out").exists() and not (folder / "cache").exists()
