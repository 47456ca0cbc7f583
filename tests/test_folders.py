"""The folder contract in code (contract/folders.py): each folder the steps exchange has one reader, and a
folder missing a file or holding a bad line is refused in one line naming the file (and the line), by
every step that reads it; the training template is one manifest key, read by one function."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slmforge.contract import folders, manifest
from slmforge.errors import InvalidInput
from slmforge.models.eval_data import read_dataset_folder
from slmforge.steps import evaluate, register
from slmforge.training.data import read_dataset

TEMPLATE = "Q: {q}\nA: {a}"
SEQUENCE = {"input_ids": [5, 6, 7], "labels": [-100, 6, 7], "attention_mask": [1, 1, 1]}


def _dataset(folder: Path, *, train=(SEQUENCE, SEQUENCE), eval_=(SEQUENCE,), rows=({"q": "x", "a": "y"},),
             template: str | None = TEMPLATE) -> Path:
    folder.mkdir(parents=True)
    folders.write_dataset(folder, {"train": train, "eval": eval_}, rows)
    manifest.write_manifest(folder, step=folders.DATASET_STEP, params=folders.template_param(template),
                            extra={"tokenizer": {"pad_token_id": 0, "eos_token_id": 2}})
    return folder


def _one_line(e: pytest.ExceptionInfo) -> str:
    message = str(e.value)
    assert "\n" not in message, message
    return message


def test_a_dataset_written_by_the_contract_reads_back_for_training_and_evaluation(tmp_path):
    folder = _dataset(tmp_path / "ds")
    assert (folder / "train.jsonl").read_text().splitlines()[0] == json.dumps(SEQUENCE, separators=(",", ":"))
    data = read_dataset(folder)
    assert data.train == [([5, 6, 7], [-100, 6, 7])] * 2 and data.eval == [([5, 6, 7], [-100, 6, 7])]
    assert data.pad_token_id == 0
    rows, examples, template = read_dataset_folder(folder, 10)
    assert rows == [{"q": "x", "a": "y"}] and examples == [([5, 6, 7], [-100, 6, 7])] and template.text == TEMPLATE


@pytest.mark.parametrize("missing", ["train.jsonl", "eval.jsonl"])
def test_training_names_a_missing_sequence_file(missing, tmp_path):
    folder = _dataset(tmp_path / "ds")
    (folder / missing).unlink()
    with pytest.raises(InvalidInput) as e:
        read_dataset(folder)
    assert _one_line(e) == f"{folder}: {missing} is missing"


@pytest.mark.parametrize("line,expected", [
    ("{not json", "line 2 is not JSON: "),
    ("[1, 2]", "line 2 is not a JSON object"),
    ('{"input_ids": [1, 2], "labels": [1]}', "line 2 needs input_ids and labels of equal length"),
    ('{"labels": [1]}', "line 2 needs input_ids and labels of equal length"),
])
def test_a_bad_sequence_line_is_one_line_naming_file_and_line_for_training_and_evaluation(line, expected, tmp_path):
    """Training read train.jsonl with a bare json.loads (a traceback; a short labels list went on
    silently); both readers now refuse the line the same way."""
    for name, read in (("train.jsonl", read_dataset), ("eval.jsonl", lambda f: read_dataset_folder(f, 10))):
        folder = _dataset(tmp_path / name.split(".")[0], train=(SEQUENCE,))
        with open(folder / name, "a", encoding="utf-8") as f:
            f.write(line + "\n")
        with pytest.raises(InvalidInput) as e:
            read(folder)
        assert _one_line(e).startswith(f"{folder / name}: {expected}"), e.value


def test_evaluation_names_a_missing_or_empty_held_out_file_and_a_missing_template(tmp_path):
    folder = _dataset(tmp_path / "ds")
    (folder / "eval_rows.jsonl").unlink()
    with pytest.raises(InvalidInput) as e:
        read_dataset_folder(folder, 10)
    assert _one_line(e) == f"{folder}: eval_rows.jsonl is missing"

    empty = _dataset(tmp_path / "empty", rows=())
    with pytest.raises(InvalidInput) as e:
        read_dataset_folder(empty, 10)
    assert _one_line(e) == f"{empty / 'eval_rows.jsonl'}: no held-out rows to evaluate on"

    untemplated = _dataset(tmp_path / "pre-processed", template=None)
    with pytest.raises(InvalidInput) as e:
        read_dataset_folder(untemplated, 10)
    assert _one_line(e) == f"{untemplated / 'slmforge.json'}: params.text_template is missing"


def test_both_readers_refuse_a_folder_load_data_did_not_write(tmp_path):
    """Evaluation took any folder with a manifest; both now ask for load_data's, with one message."""
    other = tmp_path / "adapter"
    other.mkdir()
    manifest.write_manifest(other, step="finetune", params=folders.template_param(TEMPLATE))
    for read in (read_dataset, lambda f: read_dataset_folder(f, 10)):
        with pytest.raises(InvalidInput) as e:
            read(other)
        assert _one_line(e) == f"{other}: not a load_data dataset folder (no slmforge.json from load_data)"


def _folder(path: Path, step: str, params: dict | None = None, **extra) -> Path:
    path.mkdir(parents=True)
    manifest.write_manifest(path, step=step, params=params or {}, extra=extra or None)
    return path


def test_the_template_is_one_key_read_by_one_function(tmp_path):
    dataset = _dataset(tmp_path / "ds")
    adapter = _folder(tmp_path / "adapter", "finetune",
                      inputs={"dataset": {"path": str(dataset), "digest": "d"}})
    merged = _folder(tmp_path / "merged", "merge", folders.template_param("T: {t}"))
    assert folders.carried_template(merged) == "T: {t}"
    assert folders.carried_template(adapter) == TEMPLATE  # followed to the dataset it was trained on
    assert folders.carried_template(tmp_path / "nothing") is None
    # An adapter from before the key was one kept it at the top level: still read (the cache reuses it).
    legacy = _folder(tmp_path / "legacy", "finetune", text_template="L: {l}")
    assert folders.carried_template(legacy) == "L: {l}"
    # ... but only there: another step's top-level key is not the template.
    assert folders.carried_template(_folder(tmp_path / "other", "merge", text_template="L: {l}")) is None


def test_metrics_readers_name_a_missing_or_broken_metrics_file(tmp_path, monkeypatch):
    """register read metrics.json with a bare json.loads (a traceback on a broken file)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'never.db'}")
    model = _folder(tmp_path / "model", "merge")
    missing = tmp_path / "no-metrics"
    missing.mkdir()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "metrics.json").write_text("{\"accuracy\": 0.5,", encoding="utf-8")
    listed = tmp_path / "listed"
    listed.mkdir()
    (listed / "metrics.json").write_text("[0.5]", encoding="utf-8")
    for folder, expected in ((missing, f"{missing}: no metrics.json (expected the output of an evaluate step)"),
                             (broken, f"{broken / 'metrics.json'}: not valid JSON"),
                             (listed, f"{listed / 'metrics.json'}: not a JSON object")):
        with pytest.raises(InvalidInput) as e:
            register.run(model=str(model), metrics=str(folder), name="m", registration=str(tmp_path / "reg"),
                         tracking_uri=f"sqlite:///{tmp_path / 'r.db'}")
        assert _one_line(e).startswith(expected), e.value
    assert not (tmp_path / "reg").exists() and folders.find_evaluation(broken) is None


def test_metrics_written_by_the_contract_read_back_with_the_dataset_they_evaluated(tmp_path):
    dataset = _dataset(tmp_path / "ds")
    out = tmp_path / "metrics"
    with manifest.atomic_output(out) as tmp:
        folders.write_metrics(tmp, {"accuracy": 0.5, "n": 2})
        manifest.write_manifest(tmp, step=evaluate.STEP, params={}, inputs={"dataset": dataset})
    assert folders.read_metrics(out) == {"accuracy": 0.5, "n": 2}
    found = folders.find_evaluation(out)
    assert found.metrics["n"] == 2 and found.dataset_digest == manifest.digest_path(dataset)


def test_an_evaluation_stands_for_a_dataset_with_the_same_eval_part_only(tmp_path):
    """Issue 25 #2: the local cache reuses an evaluation when only the training rows changed, so the check that
    an evaluation is of this dataset (build_onnx's --reference) compares the eval part (folders.eval_digest)."""
    from slmforge.models.onnx_check import read_reference

    def evaluation(out: Path, dataset: Path, recorded: bool) -> Path:
        with manifest.atomic_output(out) as tmp:
            folders.write_metrics(tmp, {"predictions": ["y"], "first_answer_tokens": [1], "max_new_tokens": 4})
            extra = {folders.DATASET_EVAL_DIGEST: folders.open_dataset(dataset).eval_digest()} if recorded else None
            manifest.write_manifest(tmp, step=evaluate.STEP, params={}, inputs={"dataset": dataset}, extra=extra)
        return out

    dataset = _dataset(tmp_path / "ds")
    new_training = _dataset(tmp_path / "train-edited", train=(SEQUENCE,))
    variants = {"eval row": _dataset(tmp_path / "row-edited", rows=({"q": "x", "a": "z"},)),
                "eval sequence": _dataset(tmp_path / "seq-edited", eval_=({**SEQUENCE, "input_ids": [5, 6, 8]},)),
                "template": _dataset(tmp_path / "template-edited", template="Q: {q}\nAnswer: {a}")}
    reference = evaluation(tmp_path / "metrics", dataset, recorded=True)
    found = folders.find_evaluation(reference)
    assert found.evaluated(folders.open_dataset(dataset)) and found.evaluated(folders.open_dataset(new_training))
    for what, other in variants.items():
        assert not found.evaluated(folders.open_dataset(other)), what
    eval_data = read_dataset_folder(new_training, 1)
    assert read_reference(str(reference), str(new_training), eval_data, 4)["predictions"] == ["y"]
    with pytest.raises(InvalidInput, match="it evaluated another dataset"):
        read_reference(str(reference), str(variants["eval row"]), read_dataset_folder(variants["eval row"], 1), 4)
    # one by an older slmforge (no eval digest recorded): only the very same dataset folder
    older = folders.find_evaluation(evaluation(tmp_path / "older", dataset, recorded=False))
    assert older.evaluated(folders.open_dataset(dataset)) and not older.evaluated(folders.open_dataset(new_training))
