"""load_data step: read rows, render the template, tokenize, split off an eval set, write a dataset folder.

    python -m slmforge.steps.load_data --data FILE --spec SPEC.json --tokenizer DIR --dataset OUT [...]

Each row is tokenized as two pieces, prompt (with the tokenizer's special tokens, e.g. `<s>`) and
completion (the template's last placeholder and what follows it), then EOS. Tokenizing the pieces
apart makes the prompt/answer boundary exact (`loss_on: completion` masks exactly the prompt tokens)
and matches what the model sees at inference, where it is given the prompt alone.

Rows come from a data file (`--data`) or from Hugging Face Hub datasets (`--hub_data`, a JSON file naming
the dataset, subset, split and the commit to read; data/hub.py).

A spec of `{"chat": true}` reads chat rows instead (`{"messages": [...]}`, see chat_rows.py): rendered
with the tokenizer's chat template, learned on the assistant turns (with loss_on `completion`), held
out as plain prompt/answer rows with a template derived from the chat template.

Output (see CONTRIBUTING.md): train.jsonl / eval.jsonl with {"input_ids", "labels"[, "attention_mask"]}
per line, eval_rows.jsonl with the raw held-out rows, and the manifest.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from slmforge.contract import manifest
from slmforge.contract.files import read_json_object
from slmforge.contract.params import StepParams, make, param
from slmforge.contract.step import StepSpec
from slmforge.data import IGNORE, chat_rows, user_script
from slmforge.data.datastore import fetch_datastore_file, is_datastore_uri
from slmforge.data.hub import HubSource, input_record, locate, read_hub_rows, read_hub_spec
from slmforge.data.packing import Sequences, count, cut_rows, join, line_by_line, pad
from slmforge.data.readers import Rows, read_rows
from slmforge.data.split import split_eval
from slmforge.data.template import Template
from slmforge.errors import InvalidInput
from slmforge.steps._cli import run_step

STRATEGIES = ("join", "line-by-line")
LOSS_ON = ("all", "completion")


@dataclass(kw_only=True)
class Params(StepParams):
    """The load_data step's parameters: `components/load_data.yml`'s inputs and outputs."""

    data: str | None = param(None, asset="uri_file",
                             help="data file (local upload or azureml://datastores/<name>/paths/<path>); or hub_data")
    eval_data: str | None = param(None, asset="uri_file", help="separate eval file (else eval_dataset_size is split off)")
    hub_data: str | None = param(None, asset="uri_file", help="JSON: Hugging Face Hub datasets read instead of data "
                                 "and eval_data ({train: {name, split, subset, revision, col_filters}, eval: ...})")
    spec: str = param(asset="uri_file", help="JSON: {text_cols, text_template} or {chat: true}")
    user_script: str | None = param(None, asset="uri_file", help="Python file with the data functions the spec names")
    script_dir: str | None = param(None, asset="uri_folder", help="folder put first on sys.path for user_script")
    tokenizer: str | None = param(None, asset="uri_folder", help="model folder whose tokenizer is used")
    model_id: str | None = param(None, help="hub id of the model, when no tokenizer folder is given")
    data_format: str = param("json", choices=("json", "csv", "parquet"), help="format of the data files")
    split: str = param("train", help="split of the data file to read")
    corpus_strategy: str = param("join", choices=STRATEGIES, help="pack examples into blocks, or one per line")
    source_max_len: int = param(1024, ge=2, help="tokens per sequence")
    pad_to_max_len: bool = param(False, help="pad every sequence to source_max_len")
    use_attention_mask: bool = param(True, help="write an attention_mask per sequence")
    loss_on: str = param("all", choices=LOSS_ON, help="learn every token, or only the answer")
    eval_dataset_size: float | None = param(None, gt=0, help="rows held out: a fraction below 1 or a row count")
    data_seed: int = param(42, help="seed of the held-out split")
    max_samples: int | None = param(None, ge=1, help="read at most this many rows")
    dataset: str = param(asset="uri_folder", output=True, help="tokenized dataset folder to write")

    def check(self) -> None:
        size = self.eval_dataset_size
        if size is not None and size >= 1 and size != int(size):
            raise InvalidInput(f"eval_dataset_size must be a fraction below 1 or a whole row count, got {size}")
        if size is not None and self.eval_data:
            raise InvalidInput("give either eval_data or eval_dataset_size, not both")


SPEC = StepSpec(
    name="load_data", params=Params, display_name="Load and tokenize data",
    version="1",
    description=(
        "Read json/jsonl/csv/parquet rows (a file or a Hugging Face Hub dataset), render the text "
        "template, tokenize, split off an eval set and write a tokenized dataset folder with a manifest."),
)


def run(**given) -> dict:
    """Write the tokenized dataset folder (`given`: Params' names); return its manifest. Nothing is
    written on error."""
    started = time.perf_counter()
    p = make(Params, given)
    data, spec, eval_data, data_format, split = p.data, p.spec, p.eval_data, p.data_format, p.split
    corpus_strategy, source_max_len, loss_on, max_samples = p.corpus_strategy, p.source_max_len, p.loss_on, p.max_samples
    text_cols, template, user = _read_spec(Path(spec))  # template None: chat rows or a user pre-process
    if user and not p.user_script:
        raise InvalidInput(f"{spec}: names user_script functions ({', '.join(user)}) but no --user_script is given")
    chat = template is None and "pre_process_data" not in user
    tok, tok_name = load_tokenizer(p.tokenizer, p.model_id)
    if tok.eos_token_id is None:
        raise InvalidInput(f"tokenizer {tok_name} has no EOS token to end each example with")
    if chat:  # evaluation reads a conversation as a plain row: prompt, then the last assistant turn
        template, text_cols = Template(chat_rows.eval_template(tok)), ["prompt", "answer"]
    hub = read_hub_spec(p.hub_data) if p.hub_data else {}
    if "load_dataset" in user:
        if data is not None or "train" in hub:
            raise InvalidInput("the spec's load_dataset function gives the training rows: give no --data or "
                               "hub_data 'train' beside it")
    elif (data is not None) == ("train" in hub):
        raise InvalidInput("give the training rows as --data (a file) or as hub_data's 'train' (a hub dataset)")
    if eval_data and "eval" in hub:
        raise InvalidInput("give the eval rows as --eval_data or as hub_data's 'eval', not both")
    if p.eval_dataset_size is not None and "eval" in hub:
        raise InvalidInput("give either hub_data's 'eval' or eval_dataset_size, not both")
    if "pre_process_data" in user:
        return _user_pre_processed(p, user, tok, tok_name, started)
    read = dict(text_cols=text_cols, max_samples=max_samples, chat=chat)
    with tempfile.TemporaryDirectory(prefix="slmforge-data-") as scratch:
        inputs = _input_digests(p)
        if "load_dataset" in user:
            with user_script.loaded(p.user_script, p.script_dir) as script:
                train = user_script.read_user_rows(script, user, **read)
        else:
            train, inputs["data"] = _read("data", data, hub.get("train"), Path(scratch), data_format, split, read)
        held_out = None
        if eval_data or "eval" in hub:
            held_out, inputs["eval_data"] = _read("eval", eval_data, hub.get("eval"), Path(scratch), data_format,
                                                  "train", read)
            train_rows, eval_rows = train.rows, held_out.rows
        else:
            prompt_of = (lambda r: chat_rows.eval_row(tok, r[chat_rows.COLUMN])["prompt"]) if chat else template.prompt
            train_rows, eval_rows = split_eval(train.rows, prompt_of, p.eval_dataset_size, p.data_seed)

    build = join if corpus_strategy == "join" else line_by_line
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    seqs, lengths = {}, []
    for name, rows in (("train", train_rows), ("eval", eval_rows)):
        if chat:
            examples = [chat_rows.tokenize_conversation(tok, r[chat_rows.COLUMN], IGNORE, loss_on_all=loss_on == "all")
                        for r in rows]
        else:
            examples = tokenize_rows(tok, template, rows, loss_on)
        lengths += [len(ids) for ids, _ in examples]
        seqs[name] = build(examples, source_max_len)
        if p.pad_to_max_len:
            pad(seqs[name], source_max_len, pad_id)
    cut_note = cut_rows(lengths, source_max_len) if corpus_strategy == "line-by-line" else None  # past 10 %: refused
    if cut_note:
        print(f"load_data: {cut_note}", file=sys.stderr)
    if not seqs["train"].records:
        raise InvalidInput(f"{data or hub['train'].label}: no training example is left with a token to learn from "
                           f"(source_max_len {source_max_len} cuts every completion off)")

    if chat:
        eval_rows = [chat_rows.eval_row(tok, r[chat_rows.COLUMN]) for r in eval_rows]
    metrics = {"rows_read": train.read, "empty_rows": train.empty, "rows": len(train.rows),
               "train_rows": len(train_rows), "eval_rows": len(eval_rows),
               "eval_empty_rows": held_out.empty if held_out else 0, "longest_row_tokens": max(lengths, default=0),
               "cut_rows": sum(1 for n in lengths if n > source_max_len) if corpus_strategy == "line-by-line" else 0,
               "tokenized_rows": len(lengths), "max_seq_len": source_max_len}
    params = {"text_template": template.text, "text_cols": text_cols, "chat": chat, "loss_on": loss_on,
              "corpus_strategy": corpus_strategy, "source_max_len": source_max_len,
              "pad_to_max_len": p.pad_to_max_len, "use_attention_mask": p.use_attention_mask,
              "data_format": data_format, "split": split, "eval_dataset_size": p.eval_dataset_size,
              "data_seed": p.data_seed, "max_samples": max_samples}
    return _write_folder(p, seqs, eval_rows, metrics, params, inputs, (tok, tok_name, pad_id), started)


def _write_folder(p: Params, seqs: dict, eval_rows: list, metrics: dict, params: dict, inputs: dict, tokenizer,
                  started: float) -> dict:
    tok, tok_name, pad_id = tokenizer
    with manifest.atomic_output(p.dataset) as out:
        for name, s in seqs.items():
            _write_jsonl(out / f"{name}.jsonl", (_record(r, p.use_attention_mask) for r in s.records))
        _write_jsonl(out / "eval_rows.jsonl", eval_rows)
        for name, s in seqs.items():
            metrics.update({f"{name}_examples": len(s.records), f"{name}_tokens": s.tokens,
                            f"{name}_label_tokens": s.label_tokens, f"{name}_pad_tokens": s.pad_tokens,
                            f"{name}_truncated": s.truncated, f"{name}_dropped": s.dropped})
        tokenizer_info = {"name": tok_name, "digest": tokenizer_digest(tok), "eos_token_id": tok.eos_token_id,
                          "pad_token_id": pad_id, "bos_token_id": tok.bos_token_id}
        return manifest.write_manifest(
            out, step="load_data", params=params, metrics=metrics, seconds=time.perf_counter() - started,
            libraries=("transformers", "tokenizers"),
            extra={"inputs": inputs, "tokenizer": tokenizer_info,
                   "source_digest": inputs["data" if "data" in inputs else "user_script"]["digest"]})


def _input_digests(p: Params) -> dict:
    """The manifest's records of the spec and the user script (the data's are made where it is read)."""
    return {name: {"path": str(path), "digest": manifest.digest_path(path)}
            for name, path in (("spec", p.spec), ("user_script", p.user_script)) if path}


def _user_pre_processed(p: Params, user: dict, tok, tok_name: str, started: float) -> dict:
    """The dataset folder from the user's pre_process function: its token ids as they are (Olive trains on
    them so), eval_dataset_size of them held out; no rows to answer, so eval_rows.jsonl stays empty."""
    if p.hub_data:
        raise InvalidInput("a user_script pre_process_data over a hub dataset is not supported by slmforge yet; "
                           "load it in a load_dataset function of the script")
    inputs = _input_digests(p)
    with tempfile.TemporaryDirectory(prefix="slmforge-data-") as scratch:
        data_file = _local_file(p.data, Path(scratch) / "data") if p.data else None
        if data_file is not None:
            inputs["data"] = {"path": p.data, "digest": manifest.digest_path(data_file)}
        model_name = str(Path(p.tokenizer).resolve()) if p.tokenizer else p.model_id
        with user_script.loaded(p.user_script, p.script_dir) as script:
            examples = user_script.user_examples(script, user, model_name, data_file, p.data_format, p.split)
    records = [{"input_ids": ids, "labels": labels, **({"attention_mask": m} if m is not None else {})}
               for ids, labels, m in examples]
    train, held = split_eval(records, lambda r: json.dumps(r["input_ids"]), p.eval_dataset_size, p.data_seed)
    seqs = {"train": count(Sequences(train)), "eval": count(Sequences(held))}
    metrics = {"rows": len(records), "train_rows": len(train), "eval_rows": 0, "empty_rows": 0}
    params = {"pre_process_data": user["pre_process_data"]["type"], "eval_dataset_size": p.eval_dataset_size,
              "data_seed": p.data_seed, "use_attention_mask": p.use_attention_mask}
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    return _write_folder(p, seqs, [], metrics, params, inputs, (tok, tok_name, pad_id), started)


def _read_spec(path: Path) -> tuple[list[str], Template | None, dict]:
    """(text_cols, template, user functions) of a template spec; ([messages], None, {}) of `{"chat": true}`
    (chat rows); ([], None, {...}) of a spec naming a user pre_process function."""
    spec = read_json_object(path, "a JSON object with text_cols and text_template")
    user = {k: spec.pop(k) for k in user_script.KINDS if k in spec}
    for kind, comp in user.items():
        if not (isinstance(comp, dict) and isinstance(comp.get("type"), str) and isinstance(comp.get("params"), dict)):
            raise InvalidInput(f"{path}: '{kind}' must be {{\"type\": NAME, \"params\": {{...}}}}")
    if "pre_process_data" in user:
        return [], None, user
    if spec.get("chat") is True:
        if spec.get("text_template"):
            raise InvalidInput(f"{path}: chat rows are rendered with the tokenizer's chat template; "
                               "give chat or text_template, not both")
        return [chat_rows.COLUMN], None, user
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
    return cols, template, user


def _read(role: str, path: str | None, hub: HubSource | None, scratch: Path, data_format: str, split: str,
          read: dict) -> tuple[Rows, dict]:
    """(rows, the manifest's input record) of a data file or a hub dataset."""
    if hub is not None:
        located = locate(hub, download=True)
        return read_hub_rows(located, **read), input_record(located)
    local = _local_file(path, scratch / role)
    return read_rows(local, data_format, split=split, **read), {"path": path, "digest": manifest.digest_path(local)}


def _local_file(source: str, scratch: Path) -> Path:
    """A local path as is; an azureml://datastores/ URI (outside a job) downloaded into `scratch`."""
    if is_datastore_uri(source):
        return fetch_datastore_file(source, scratch / Path(source).name)
    return Path(source)


def load_tokenizer(folder: str | Path | None, model_id: str | None):
    """(tokenizer, name): from a local folder (never a hub lookup) or from a hub id."""
    from transformers import AutoTokenizer

    from slmforge.models.model_folder import resolve_tokenizer_folder
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
        raise InvalidInput(f"model_id '{model_id}' (read as a Hugging Face hub id, not a local folder): no tokenizer "
                           f"could be loaded ({str(e).splitlines()[0]})") from None


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
    def work(values: dict) -> None:
        c = run(**values)["metrics"]
        print(f"load_data: {c['train_examples']} train / {c['eval_examples']} eval sequences, "
              f"{c['train_tokens']} train tokens, {c['empty_rows']} empty rows skipped -> {values['dataset']}",
              file=sys.stderr)

    return run_step("load_data", Params, argv, work, __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
