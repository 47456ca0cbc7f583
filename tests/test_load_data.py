"""load_data: formats, exact completion masking, join packing, the eval split, and every bad-data error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slmforge.data.template import Template
from slmforge.steps import load_data

TEMPLATE = "### Text: {phrase}\n### The tone is:\n{tone}"
IGNORE = -100


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir, local_files_only=True)


@pytest.fixture()
def spec(tmp_path) -> Path:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({"text_cols": ["phrase", "tone"], "text_template": TEMPLATE}))
    return path


def rows_of(path: Path, n: int | None = None) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows[:n] if n else rows


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def build(tmp_path, spec, tiny_model_dir, data, name="ds", **kw) -> tuple[Path, dict]:
    out = tmp_path / name
    m = load_data.run(data=str(data), spec=spec, tokenizer=tiny_model_dir, dataset=out, **kw)
    return out, m


def test_completion_masks_exactly_the_prompt(tmp_path, spec, tiny_model_dir, seed_data, tokenizer):
    out, m = build(tmp_path, spec, tiny_model_dir, seed_data, strategy="line-by-line",
                   loss_on="completion", max_samples=200)
    template = Template(TEMPLATE)
    records = read_jsonl(out / "train.jsonl")
    assert len(records) == 200 and m["metrics"]["train_rows"] == 200
    for row, rec in zip(rows_of(seed_data, 200), records):
        prompt = tokenizer(template.prompt(row))["input_ids"]
        answer = tokenizer(template.completion(row), add_special_tokens=False)["input_ids"]
        assert rec["input_ids"] == prompt + answer + [tokenizer.eos_token_id]
        assert rec["labels"] == [IGNORE] * len(prompt) + answer + [tokenizer.eos_token_id]
        learned = [t for t in rec["labels"] if t != IGNORE]
        assert tokenizer.decode(learned) == row["tone"] + "</s>"
    assert m["params"]["text_template"] == TEMPLATE and m["params"]["loss_on"] == "completion"
    assert m["tokenizer"]["digest"] and m["source_digest"] == m["inputs"]["data"]["digest"]


def test_loss_on_all_keeps_every_label(tmp_path, spec, tiny_model_dir, demo_data):
    out, _ = build(tmp_path, spec, tiny_model_dir, demo_data, strategy="line-by-line", loss_on="all")
    for rec in read_jsonl(out / "train.jsonl"):
        assert rec["labels"] == rec["input_ids"] and rec["attention_mask"] == [1] * len(rec["input_ids"])


def test_join_packs_without_padding_and_keeps_labels_aligned(tmp_path, spec, tiny_model_dir, demo_data):
    by_line, _ = build(tmp_path, spec, tiny_model_dir, demo_data, "lines", strategy="line-by-line",
                       loss_on="completion", max_seq_len=4096, use_attention_mask=False)
    joined, m = build(tmp_path, spec, tiny_model_dir, demo_data, "joined", strategy="join",
                      loss_on="completion", max_seq_len=128, use_attention_mask=False)
    lines, blocks = read_jsonl(by_line / "train.jsonl"), read_jsonl(joined / "train.jsonl")
    assert all(len(b["input_ids"]) == 128 for b in blocks[:-1]) and 0 < len(blocks[-1]["input_ids"]) <= 128
    assert all(set(b) == {"input_ids", "labels"} for b in blocks)
    # the blocks are the examples' token stream cut up: nothing added (no pad), nothing lost, labels in step
    assert [t for b in blocks for t in b["input_ids"]] == [t for r in lines for t in r["input_ids"]]
    assert [t for b in blocks for t in b["labels"]] == [t for r in lines for t in r["labels"]]
    assert m["metrics"]["train_pad_tokens"] == 0
    assert m["metrics"]["train_tokens"] == sum(len(r["input_ids"]) for r in lines)


def test_line_by_line_truncates_and_pads_when_asked(tmp_path, spec, tiny_model_dir, demo_data):
    out, m = build(tmp_path, spec, tiny_model_dir, demo_data, strategy="line-by-line",
                   max_seq_len=40, pad_to_max_len=True)  # a few rows longer (at 32: a quarter, refused)
    records = read_jsonl(out / "train.jsonl")
    assert all(len(r["input_ids"]) == len(r["labels"]) == len(r["attention_mask"]) == 40 for r in records)
    assert m["metrics"]["train_truncated"] > 0 and m["metrics"]["train_pad_tokens"] > 0
    assert 0 < m["metrics"]["cut_rows"] <= 0.1 * m["metrics"]["tokenized_rows"] == 25.6  # said, not refused
    pads = [r for r in records if 0 in r["attention_mask"]]
    assert pads and all(r["labels"][r["attention_mask"].index(0):] == [IGNORE] * r["attention_mask"].count(0)
                        for r in pads)


def test_json_array_csv_and_parquet_read_like_jsonl(tmp_path, spec, tiny_model_dir, demo_data):
    import csv

    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = rows_of(demo_data, 39) + [{"phrase": "a raw line separator \u2028 and a, comma \"quoted\"",
                                      "tone": "joy"}]
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    array = tmp_path / "rows.json"
    array.write_text(json.dumps(rows, indent=2))
    with open(tmp_path / "rows.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["phrase", "tone"])
        writer.writeheader()
        writer.writerows(rows)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "rows.parquet")
    want = None
    for name, fmt in (("rows.jsonl", "json"), ("rows.json", "json"), ("rows.csv", "csv"), ("rows.parquet", "parquet")):
        out, m = build(tmp_path, spec, tiny_model_dir, tmp_path / name, name=f"ds-{name}", data_format=fmt,
                       eval_dataset_size=5)
        got = ((out / "train.jsonl").read_text(), (out / "eval_rows.jsonl").read_text())
        assert m["metrics"]["rows"] == 40, name
        want = want or got
        assert got == want, name


def test_eval_split_is_seeded_and_keeps_prompts_apart(tmp_path, spec, tiny_model_dir, seed_data):
    def split(name, size, seed):
        out, m = build(tmp_path, spec, tiny_model_dir, seed_data, name, strategy="line-by-line",
                       eval_dataset_size=size, data_seed=seed)
        return read_jsonl(out / "eval_rows.jsonl"), m

    held, m = split("a", 0.2, 1)
    assert len(held) == round(1464 * 0.2) == m["metrics"]["eval_rows"] == m["metrics"]["eval_examples"]
    assert m["metrics"]["train_rows"] == 1464 - len(held)
    assert all(set(r) == {"phrase", "tone"} for r in held)
    train_phrases = {r["phrase"] for r in rows_of(seed_data)} - {r["phrase"] for r in held}
    seen_in_train = [r for r in rows_of(seed_data) if r["phrase"] in {h["phrase"] for h in held}]
    assert len(seen_in_train) == len(held)  # every copy of a held-out phrase is held out
    assert train_phrases.isdisjoint({r["phrase"] for r in held})
    assert split("b", 0.2, 1)[0] == held and split("c", 0.2, 2)[0] != held
    assert len(split("d", 100, 1)[0]) == 100


def test_separate_eval_file_and_empty_rows(tmp_path, spec, tiny_model_dir, demo_data):
    rows = rows_of(demo_data, 30)
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows[:20]) + "\n   \n{}\n"
                    + json.dumps({"phrase": "", "tone": " "}) + "\n")
    held = tmp_path / "held.jsonl"
    held.write_text("".join(json.dumps(r) + "\n" for r in rows[20:]))
    out = tmp_path / "ds"
    m = load_data.run(data=str(data), eval_data=str(held), spec=spec, tokenizer=tiny_model_dir, dataset=out)
    assert m["metrics"]["empty_rows"] == 4 and m["metrics"]["rows_read"] == 24 and m["metrics"]["rows"] == 20
    assert read_jsonl(out / "eval_rows.jsonl") == rows[20:]
    assert "eval_data" in m["inputs"]


BAD_DATA = {
    "broken-json-line": ("json", '{"phrase": "a", "tone": "joy"}\n{"phrase": "b", "tone": "joy"}\n{"phrase": "c",\n',
                         ["bad.json: line 3: not valid JSON"]),
    "broken-json-array": ("json", '[\n {"phrase": "a", "tone": "joy"},\n {"phrase": "b" "tone": "x"}\n]\n',
                          ["bad.json: line 3: not valid JSON"]),
    "missing-column": ("json", '{"phrase": "a", "tone": "joy"}\n\n{"phrase": "b", "label": "joy"}\n',
                       ["bad.json: row 2 (line 3): missing column 'tone'"]),
    "non-string-column": ("json", '{"phrase": "a", "tone": "joy"}\n{"phrase": "b", "tone": 7}\n',
                          ["bad.json: row 2 (line 2): column 'tone' is a number (7), expected a string"]),
    "null-column": ("json", '{"phrase": "a", "tone": null}\n', ["row 1 (line 1): column 'tone' is null"]),
    "not-an-object": ("json", '["a", "joy"]\n{"phrase": "b", "tone": "joy"}\n',
                      ["bad.json: row 1 (line 1): expected an object with columns phrase, tone, got a list"]),
    "csv-missing-column": ("csv", "phrase,label\na,joy\n", ["bad.csv: line 1: the header has no column 'tone'"]),
    "csv-ragged-row": ("csv", "phrase,tone\na,joy\nb,joy,extra\n", ["bad.csv: row 2 (line 3): 3 fields"]),
    "no-rows": ("json", "\n\n", ["bad.json: no usable rows (2 read, 2 empty)"]),
}


@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_bad_data_gives_its_precise_error_and_no_folder(case, tmp_path, spec, tiny_model_dir, capsys):
    fmt, text, expected = BAD_DATA[case]
    data = tmp_path / ("bad.csv" if fmt == "csv" else "bad.json")
    data.write_text(text)
    out = tmp_path / "out" / "dataset"
    rc = load_data.main(["--data", str(data), "--spec", str(spec), "--tokenizer", str(tiny_model_dir),
                         "--data_format", fmt, "--dataset", str(out)])
    err = capsys.readouterr().err
    assert rc == 2, err
    for text in expected:
        assert text in err
    assert err.startswith("slmforge load_data: error: ")
    assert not (tmp_path / "out").exists()  # nothing written, not even a partial folder


def test_parquet_non_string_column(tmp_path, spec, tiny_model_dir, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = tmp_path / "bad.parquet"
    pq.write_table(pa.Table.from_pylist([{"phrase": "a", "tone": "joy"}, {"phrase": "b", "tone": None},
                                         {"phrase": "c", "tone": "joy"}]), data)
    rc = load_data.main(["--data", str(data), "--spec", str(spec), "--tokenizer", str(tiny_model_dir),
                         "--data_format", "parquet", "--dataset", str(tmp_path / "ds")])
    assert rc == 2 and "bad.parquet: row 2: column 'tone' is null, expected a string" in capsys.readouterr().err
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize("problem,expected", [
    ("template", "text_template placeholder '{tone}' is not in text_cols"),
    ("missing-file", "data file not found"),
    ("split", "split 'validation': a data file has only the split 'train'"),
    ("eval-size", "eval_dataset_size 5000.0 leaves no training rows"),
    ("datastore", "SLMFORGE_DATASTORE_ACCOUNT_URL, SLMFORGE_DATASTORE_CONTAINER, SLMFORGE_DATASTORE_SAS"),
])
def test_bad_arguments(problem, expected, tmp_path, spec, tiny_model_dir, demo_data, capsys, monkeypatch):
    for var in ("SLMFORGE_DATASTORE_ACCOUNT_URL", "SLMFORGE_DATASTORE_CONTAINER", "SLMFORGE_DATASTORE_SAS"):
        monkeypatch.delenv(var, raising=False)
    argv = {"--data": str(demo_data), "--spec": str(spec), "--tokenizer": str(tiny_model_dir),
            "--dataset": str(tmp_path / "ds")}
    if problem == "template":
        spec.write_text(json.dumps({"text_cols": ["phrase"], "text_template": TEMPLATE}))
    elif problem == "missing-file":
        argv["--data"] = str(tmp_path / "nowhere.jsonl")
    elif problem == "split":
        argv["--split"] = "validation"
    elif problem == "eval-size":
        argv["--eval_dataset_size"] = "5000"
    elif problem == "datastore":
        argv["--data"] = "azureml://datastores/workspaceblobstore/paths/data/tones.jsonl"
    rc = load_data.main([x for kv in argv.items() for x in kv])
    err = capsys.readouterr().err
    assert rc == 2 and expected in err, err
    assert not (tmp_path / "ds").exists()
