"""load_data step: read rows, render the template, tokenize, split off an eval set, write a dataset folder.

    python -m slmforge.steps.load_data --data FILE --spec SPEC.json --tokenizer DIR --dataset OUT [...]

Each row is tokenized as two pieces, prompt (with the tokenizer's special tokens, e.g. `<s>`) and
completion (the template's last placeholder and what follows it), then EOS. Tokenizing the pieces
apart makes the prompt/answer boundary exact (`loss_on: completion` masks exactly the prompt tokens)
and matches what the model sees at inference, where it is given the prompt alone.

A spec of `{"chat": true}` reads chat rows instead (`{"messages": [...]}`, see chat_rows.py): rendered
with the tokenizer's chat template, learned on the assistant turns (with loss_on `completion`), held
out as plain prompt/answer rows with a template derived from the chat template.

Output (see CONTRIBUTING.md): train.jsonl / eval.jsonl with {"input_ids", "labels"[, "attention_mask"]}
per line, eval_rows.jsonl with the raw held-out rows, and the manifest.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from slmforge import chat_rows, manifest
from slmforge.datasets_io import read_rows
from slmforge.datastore import fetch_datastore_file, is_datastore_uri
from slmforge.errors import InvalidInput
from slmforge.steps._cli import StepArgumentParser, parse_bool, run_main
from slmforge.template import Template

IGNORE = -100  # label of a token the loss skips (PyTorch's cross-entropy ignore_index)


@dataclass
class Sequences:
    """Tokenized training sequences and their counts."""

    records: list[dict[str, list[int]]]
    tokens: int = 0  # non-pad tokens
    label_tokens: int = 0  # tokens the loss is computed on
    pad_tokens: int = 0
    truncated: int = 0  # line-by-line examples cut to source_max_len
    dropped: int = 0  # examples left with no label token after truncation


def run(*, data: str, spec: str | Path, dataset: str | Path, tokenizer: str | Path | None = None,
        model_id: str | None = None, eval_data: str | None = None, data_format: str = "json",
        split: str = "train", corpus_strategy: str = "join", source_max_len: int = 1024,
        pad_to_max_len: bool = False, use_attention_mask: bool = True, loss_on: str = "all",
        eval_dataset_size: float | None = None, data_seed: int = 42, max_samples: int | None = None) -> dict:
    """Write the tokenized dataset folder `dataset`; return its manifest. Nothing is written on error."""
    started = time.perf_counter()
    _check_params(corpus_strategy, loss_on, source_max_len, eval_dataset_size, eval_data)
    text_cols, template = _read_spec(Path(spec))  # template None: chat rows
    chat = template is None
    tok, tok_name = load_tokenizer(tokenizer, model_id)
    if tok.eos_token_id is None:
        raise InvalidInput(f"tokenizer {tok_name} has no EOS token to end each example with")
    if chat:  # evaluation reads a conversation as a plain row: prompt, then the last assistant turn
        template, text_cols = Template(chat_rows.eval_template(tok)), ["prompt", "answer"]
    with tempfile.TemporaryDirectory(prefix="slmforge-data-") as scratch:
        data_file = _local_file(data, Path(scratch) / "data")
        eval_file = _local_file(eval_data, Path(scratch) / "eval") if eval_data else None
        train = read_rows(data_file, data_format, text_cols, split=split, max_samples=max_samples, chat=chat)
        if eval_file is not None:
            held_out = read_rows(eval_file, data_format, text_cols, max_samples=max_samples, chat=chat)
            train_rows, eval_rows = train.rows, held_out.rows
        else:
            held_out = None
            prompt_of = (lambda r: chat_rows.eval_row(tok, r[chat_rows.COLUMN])["prompt"]) if chat else template.prompt
            train_rows, eval_rows = split_eval(train.rows, prompt_of, eval_dataset_size, data_seed)
        inputs = {"data": {"path": data, "digest": manifest.digest_path(data_file)},
                  "spec": {"path": str(spec), "digest": manifest.digest_path(spec)}}
        if eval_file is not None:
            inputs["eval_data"] = {"path": eval_data, "digest": manifest.digest_path(eval_file)}

    build = _join if corpus_strategy == "join" else _line_by_line
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    seqs = {}
    for name, rows in (("train", train_rows), ("eval", eval_rows)):
        if chat:
            examples = [chat_rows.tokenize_conversation(tok, r[chat_rows.COLUMN], IGNORE, loss_on_all=loss_on == "all")
                        for r in rows]
        else:
            examples = tokenize_rows(tok, template, rows, loss_on)
        seqs[name] = build(examples, source_max_len)
        if pad_to_max_len:
            _pad(seqs[name], source_max_len, pad_id)
    if not seqs["train"].records:
        raise InvalidInput(f"{data}: no training example is left with a token to learn from "
                           f"(source_max_len {source_max_len} cuts every completion off)")

    with manifest.atomic_output(dataset) as out:
        for name, s in seqs.items():
            _write_jsonl(out / f"{name}.jsonl", (_record(r, use_attention_mask) for r in s.records))
        if chat:
            eval_rows = [chat_rows.eval_row(tok, r[chat_rows.COLUMN]) for r in eval_rows]
        _write_jsonl(out / "eval_rows.jsonl", eval_rows)
        metrics = {
            "rows_read": train.read, "empty_rows": train.empty, "rows": len(train.rows),
            "train_rows": len(train_rows), "eval_rows": len(eval_rows),
            "eval_empty_rows": held_out.empty if held_out else 0,
        }
        for name, s in seqs.items():
            metrics.update({f"{name}_examples": len(s.records), f"{name}_tokens": s.tokens,
                            f"{name}_label_tokens": s.label_tokens, f"{name}_pad_tokens": s.pad_tokens,
                            f"{name}_truncated": s.truncated, f"{name}_dropped": s.dropped})
        params = {"text_template": template.text, "text_cols": text_cols, "chat": chat, "loss_on": loss_on,
                  "corpus_strategy": corpus_strategy, "source_max_len": source_max_len,
                  "pad_to_max_len": pad_to_max_len, "use_attention_mask": use_attention_mask,
                  "data_format": data_format, "split": split, "eval_dataset_size": eval_dataset_size,
                  "data_seed": data_seed, "max_samples": max_samples}
        tokenizer_info = {"name": tok_name, "digest": tokenizer_digest(tok), "eos_token_id": tok.eos_token_id,
                          "pad_token_id": pad_id, "bos_token_id": tok.bos_token_id}
        return manifest.write_manifest(
            out, step="load_data", params=params, metrics=metrics, seconds=time.perf_counter() - started,
            libraries=("transformers", "tokenizers"),
            extra={"inputs": inputs, "tokenizer": tokenizer_info, "source_digest": inputs["data"]["digest"]},
        )


def _check_params(corpus_strategy: str, loss_on: str, source_max_len: int,
                  eval_dataset_size: float | None, eval_data: str | None) -> None:
    if corpus_strategy not in ("join", "line-by-line"):
        raise InvalidInput(f"corpus_strategy '{corpus_strategy}' is not one of join, line-by-line")
    if loss_on not in ("all", "completion"):
        raise InvalidInput(f"loss_on '{loss_on}' is not one of all, completion")
    if source_max_len < 2:
        raise InvalidInput(f"source_max_len must be at least 2, got {source_max_len}")
    if eval_dataset_size is not None:
        if eval_dataset_size <= 0 or (eval_dataset_size >= 1 and eval_dataset_size != int(eval_dataset_size)):
            raise InvalidInput(f"eval_dataset_size must be a fraction below 1 or a whole row count, "
                               f"got {eval_dataset_size}")
        if eval_data:
            raise InvalidInput("give either eval_data or eval_dataset_size, not both")


def _read_spec(path: Path) -> tuple[list[str], Template | None]:
    """(text_cols, template) of a template spec; ([messages], None) of `{"chat": true}` (chat rows)."""
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidInput(f"spec file not found: {path}") from None
    except json.JSONDecodeError as e:
        raise InvalidInput(f"{path}: line {e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(spec, dict):
        raise InvalidInput(f"{path}: expected a JSON object with text_cols and text_template")
    if spec.get("chat") is True:
        if spec.get("text_template"):
            raise InvalidInput(f"{path}: chat rows are rendered with the tokenizer's chat template; "
                               "give chat or text_template, not both")
        return [chat_rows.COLUMN], None
    cols, text = spec.get("text_cols"), spec.get("text_template")
    if not (isinstance(cols, list) and cols and all(isinstance(c, str) for c in cols)):
        raise InvalidInput(f"{path}: text_cols must be a non-empty list of column names")
    if not isinstance(text, str) or not text:
        raise InvalidInput(f"{path}: text_template must be a non-empty string")
    template = Template(text)
    unknown = [f for f in template.fields if f not in cols]
    if unknown:
        raise InvalidInput(f"{path}: text_template placeholder '{{{unknown[0]}}}' is not in text_cols {cols}")
    template.answer_field  # noqa: B018 - raises when the template has no placeholder
    return cols, template


def _local_file(source: str, scratch: Path) -> Path:
    """A local path as is; an azureml://datastores/ URI (outside a job) downloaded into `scratch`."""
    if is_datastore_uri(source):
        return fetch_datastore_file(source, scratch / Path(source).name)
    return Path(source)


def split_eval(rows: list[dict], prompt_of, size: float | None, seed: int) -> tuple[list, list]:
    """(train, eval) rows. Rows sharing a prompt (`prompt_of(row)`) stay on one side, so no eval prompt is
    seen in training.

    `size` below 1 is a fraction of the rows, 1 or more a row count; groups are drawn in an order
    shuffled with `seed` and skipped when they would overshoot the count.
    """
    if not size:
        return rows, []
    want = round(len(rows) * size) if size < 1 else int(size)
    want = max(want, 1)
    if want >= len(rows):
        raise InvalidInput(f"eval_dataset_size {size} leaves no training rows (there are {len(rows)} rows)")
    groups: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(prompt_of(row), []).append(i)
    order = list(groups.values())
    random.Random(seed).shuffle(order)
    held: set[int] = set()
    for members in order:
        if len(held) + len(members) <= want:
            held.update(members)
        if len(held) == want:
            break
    train = [r for i, r in enumerate(rows) if i not in held]
    return train, [rows[i] for i in sorted(held)]


def load_tokenizer(folder: str | Path | None, model_id: str | None):
    """(tokenizer, name): from a local folder (never a hub lookup) or from a hub id."""
    from transformers import AutoTokenizer

    from slmforge.model_folder import resolve_tokenizer_folder
    from slmforge.secrets import hf_token

    if folder:
        folder = Path(folder)
        if not folder.is_dir():
            raise InvalidInput(f"tokenizer folder not found: {folder}")
        try:
            return AutoTokenizer.from_pretrained(resolve_tokenizer_folder(folder), local_files_only=True), folder.name
        except (OSError, ValueError) as e:
            raise InvalidInput(f"{folder}: no tokenizer could be loaded ({str(e).splitlines()[0]})") from None
    if not model_id:
        raise InvalidInput("give --tokenizer (a model folder) or --model_id")
    try:
        return AutoTokenizer.from_pretrained(model_id, token=hf_token()), model_id
    except (OSError, ValueError) as e:
        raise InvalidInput(f"model_id '{model_id}': no tokenizer could be loaded ({str(e).splitlines()[0]})") from None


def tokenizer_digest(tok) -> str:
    """Content digest of the tokenizer itself (vocabulary, merges, special tokens), not of its path."""
    backend = getattr(tok, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(tok.get_vocab(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def tokenize_rows(tok, template: Template, rows: list[dict], loss_on: str) -> list[tuple[list[int], list[int]]]:
    """(input_ids, labels) per row: prompt + completion + EOS; with `completion` the prompt is masked."""
    if not rows:
        return []
    prompts = tok([template.prompt(r) for r in rows], add_special_tokens=True)["input_ids"]
    answers = tok([template.completion(r) for r in rows], add_special_tokens=False)["input_ids"]
    eos = tok.eos_token_id
    out = []
    for p, a in zip(prompts, answers):
        ids = list(p) + list(a) + [eos]
        labels = ([IGNORE] * len(p) if loss_on == "completion" else list(p)) + list(a) + [eos]
        out.append((ids, labels))
    return out


def _join(examples: list[tuple[list[int], list[int]]], block: int) -> Sequences:
    """Concatenate every example and cut the stream into `block`-token sequences: no padding.

    Labels travel with their tokens, so completion masking survives packing. The last, shorter
    block is kept rather than padded or dropped.
    """
    ids = [t for e in examples for t in e[0]]
    labels = [t for e in examples for t in e[1]]
    s = Sequences([])
    for i in range(0, len(ids), block):
        r = {"input_ids": ids[i:i + block], "labels": labels[i:i + block]}
        if any(x != IGNORE for x in r["labels"][1:]):
            s.records.append(r)
        else:
            s.dropped += 1  # a block of prompt tokens only: nothing to learn
    return _count(s)


def _line_by_line(examples: list[tuple[list[int], list[int]]], max_len: int) -> Sequences:
    """One sequence per example, cut to `max_len`; one left with nothing to learn is dropped."""
    s = Sequences([])
    for ids, labels in examples:
        if len(ids) > max_len:
            s.truncated += 1
            ids, labels = ids[:max_len], labels[:max_len]
        if all(x == IGNORE for x in labels[1:]):
            s.dropped += 1
            continue
        s.records.append({"input_ids": ids, "labels": labels})
    return _count(s)


def _pad(s: Sequences, length: int, pad_id: int) -> None:
    """`pad_to_max_len`: pad every sequence to `length` (masked out of attention and loss)."""
    for r in s.records:
        n = length - len(r["input_ids"])
        r["attention_mask"] = [1] * len(r["input_ids"]) + [0] * n
        r["input_ids"] = r["input_ids"] + [pad_id] * n
        r["labels"] = r["labels"] + [IGNORE] * n
        s.pad_tokens += n


def _count(s: Sequences) -> Sequences:
    s.tokens = sum(len(r["input_ids"]) for r in s.records)
    s.label_tokens = sum(sum(1 for x in r["labels"][1:] if x != IGNORE) for r in s.records)
    return s


def _record(r: dict, use_attention_mask: bool) -> dict:
    if use_attention_mask:
        return {"input_ids": r["input_ids"], "labels": r["labels"],
                "attention_mask": r.get("attention_mask") or [1] * len(r["input_ids"])}
    return {"input_ids": r["input_ids"], "labels": r["labels"]}


def _write_jsonl(path: Path, records) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = StepArgumentParser(prog="python -m slmforge.steps.load_data", description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--eval_data")
    p.add_argument("--spec", required=True)
    p.add_argument("--tokenizer")
    p.add_argument("--model_id")
    p.add_argument("--data_format", default="json", choices=["json", "csv", "parquet"])
    p.add_argument("--split", default="train")
    p.add_argument("--corpus_strategy", default="join", choices=["join", "line-by-line"])
    p.add_argument("--source_max_len", type=int, default=1024)
    p.add_argument("--pad_to_max_len", type=parse_bool, default=False)
    p.add_argument("--use_attention_mask", type=parse_bool, default=True)
    p.add_argument("--loss_on", default="all", choices=["all", "completion"])
    p.add_argument("--eval_dataset_size", type=float)
    p.add_argument("--data_seed", type=int, default=42)
    p.add_argument("--max_samples", type=int)
    p.add_argument("--dataset", required=True)

    def body() -> None:
        args = p.parse_args(argv)
        m = run(**vars(args))
        c = m["metrics"]
        print(f"load_data: {c['train_examples']} train / {c['eval_examples']} eval sequences, "
              f"{c['train_tokens']} train tokens, {c['empty_rows']} empty rows skipped -> {args.dataset}",
              file=sys.stderr)

    return run_main("load_data", body)


if __name__ == "__main__":
    sys.exit(main())
