"""Chat data (issue 12 #3): `{"messages": [...]}` rows rendered with the tokenizer's own chat template, the
loss on the assistant turns only (checked token by token against character offsets), bad rows named by
line, and the same rows trained and evaluated through the steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slmforge.contract import manifest
from slmforge.data import IGNORE, chat_rows
from slmforge.steps import evaluate, finetune, load_data, merge

TONES = ("joy", "sadness", "anger", "fear", "surprise", "neutral")
CONVERSATION = [
    {"role": "system", "content": "Answer with one word."},
    {"role": "user", "content": "Say hello."},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "The tone of: I won the lottery!"},
    {"role": "assistant", "content": "joy"},
]


def _tokenizer(folder: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder, local_files_only=True)


@pytest.fixture(params=["tiny", "smollm2"])
def tokenizer(request, tiny_model_dir):
    if request.param == "tiny":
        return _tokenizer(tiny_model_dir)
    return _tokenizer(request.getfixturevalue("smollm2_dir"))


def test_the_loss_is_on_the_assistant_turns_only_token_by_token(tokenizer):
    """Oracle: tokenize the whole rendered conversation with character offsets; a token must be learned
    exactly when it lies inside an assistant turn (its content and the template's end-of-turn text)."""
    text = tokenizer.apply_chat_template(CONVERSATION, tokenize=False)
    end = chat_rows.end_of_turn(tokenizer)
    spans, cursor = [], 0
    for message in CONVERSATION:
        if message["role"] == "assistant":
            start = text.index(message["content"] + end, cursor)
            cursor = start + len(message["content"] + end)
            spans.append((start, cursor))
    whole = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
    ids, labels = chat_rows.tokenize_conversation(tokenizer, CONVERSATION, IGNORE)
    assert ids == whole["input_ids"]  # segmenting at turn boundaries changes no token
    for token, label, (a, b) in zip(ids, labels, whole["offset_mapping"]):
        inside = b > a and any(s <= a and b <= e for s, e in spans)
        assert (label == token) if inside else (label == IGNORE), (tokenizer.decode([token]), a, b)
    learned = tokenizer.decode([t for t, label in zip(ids, labels) if label != IGNORE])
    assert learned == "Hello!" + end + "joy" + end


def _chat_file(path: Path, seed_data: Path, n: int) -> Path:
    rows = [json.loads(line) for line in seed_data.read_text(encoding="utf-8").splitlines() if line.strip()]
    with path.open("w", encoding="utf-8") as f:
        for row in rows[:n]:
            f.write(json.dumps({"messages": [
                {"role": "system", "content": f"Classify the tone as one of: {', '.join(TONES)}."},
                {"role": "user", "content": row["phrase"]},
                {"role": "assistant", "content": row["tone"]},
            ]}) + "\n")
    return path


def _spec(tmp_path: Path) -> Path:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"chat": True}))
    return spec


def test_chat_rows_train_and_evaluate_through_the_steps(tmp_path, tiny_model_dir, seed_data):
    data = _chat_file(tmp_path / "chat.jsonl", seed_data, 120)
    dataset = tmp_path / "dataset"
    m = load_data.run(data=str(data), spec=_spec(tmp_path), tokenizer=tiny_model_dir, dataset=dataset,
                      strategy="line-by-line", loss_on="completion", eval_dataset_size=0.2, max_seq_len=128)
    assert m["params"]["chat"] is True and m["metrics"]["eval_rows"] == 24
    tok = _tokenizer(tiny_model_dir)
    end = chat_rows.end_of_turn(tok)
    first = json.loads((dataset / "train.jsonl").read_text().splitlines()[0])
    learned = tok.decode([t for t, label in zip(first["input_ids"], first["labels"]) if label != IGNORE])
    assert learned.removesuffix(end) in TONES
    held_out = [json.loads(line) for line in (dataset / "eval_rows.jsonl").read_text().splitlines()]
    assert all(set(r) == {"prompt", "answer"} and r["answer"] in TONES for r in held_out)
    user = [{"role": "user", "content": "x"}]
    generation_prompt = tok.apply_chat_template(user, add_generation_prompt=True, tokenize=False).removeprefix(
        tok.apply_chat_template(user, tokenize=False))
    assert generation_prompt and held_out[0]["prompt"].endswith(generation_prompt)

    adapter = tmp_path / "adapter"
    finetune.run(model=tiny_model_dir, dataset=dataset, adapter=adapter, checkpoints=tmp_path / "ck", r=8,
                 alpha=16, learning_rate=3e-3, max_steps=6, per_device_train_batch_size=8, progress=False)
    merge.run(adapter=adapter, output=tmp_path / "merged", model=tiny_model_dir)
    metrics = evaluate.run(dataset=dataset, metrics=tmp_path / "metrics", model=tmp_path / "merged",
                           max_samples=8, max_new_tokens=4)
    assert metrics["n"] == 8 and 0 <= metrics["accuracy"] <= 1


BAD_ROWS = [
    ('{"messages": []}', "row 2 (line 2): 'messages' is an empty conversation"),
    ('{"messages": [{"role": "bot", "content": "hi"}]}', "row 2 (line 2): messages[0].role: 'bot' is not one of"),
    ('{"messages": [{"role": "user", "content": 3}]}', "row 2 (line 2): messages[0].content must be a string"),
    ('{"messages": [{"role": "user", "content": "hi"}]}', "row 2 (line 2): 'messages' has no assistant turn to learn from"),
    ('{"messages": "hi"}', "row 2 (line 2): 'messages' must be a list of {role, content} objects"),
    ('{"text": "hi"}', "row 2 (line 2): expected an object with 'messages' (a chat row)"),
    ('{"messages": [{"role": "assistant", "content": "hi"}]}', "row 2 (line 2): messages[0] is an assistant turn"),
]


@pytest.mark.parametrize("bad,expected", BAD_ROWS, ids=[e.split("): ", 1)[1][:30] for _, e in BAD_ROWS])
def test_a_bad_chat_row_is_named_by_its_line(tmp_path, tiny_model_dir, capsys, bad, expected):
    good = json.dumps({"messages": CONVERSATION})
    data = tmp_path / "chat.jsonl"
    data.write_text("\n".join([good, bad, good, bad]) + "\n")
    out = tmp_path / "dataset"
    rc = load_data.main(["--data", str(data), "--spec", str(_spec(tmp_path)), "--tokenizer", str(tiny_model_dir),
                         "--dataset", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    # The first bad row is named, and the other one like it counted on the same line.
    assert rc == 2 and len(err) == 1 and f"{data}: {expected}" in err[0] and "(and 1 more row alike)" in err[0], err
    assert not out.exists() and not manifest.read_manifest(out)
