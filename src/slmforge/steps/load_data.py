"""load_data step: read rows, render the template, tokenize, split off an eval set, write a dataset folder.

    python -m slmforge.steps.load_data --data FILE --spec SPEC.json --tokenizer DIR --dataset OUT [...]

The work is data/'s: the spec (spec.py), where rows come from (sources.py: a data file, Hugging Face Hub
datasets named by `--hub_data`, hub.py, or a user_script), the held-out split (split.py), tokenizing
(tokens.py: prompt and completion apart, then EOS, so `loss_on: completion` masks exactly the prompt) and
packing (packing.py). A spec of `{"chat": true}` reads chat rows (`{"messages": [...]}`, chat_rows.py).

Output (see CONTRIBUTING.md): train.jsonl / eval.jsonl with {"input_ids", "labels"[, "attention_mask"]}
per line, eval_rows.jsonl with the raw held-out rows, and the manifest.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from slmforge.contract import folders, manifest
from slmforge.contract.params import StepParams, make, param
from slmforge.contract.step import StepSpec
from slmforge.data import chat_rows
from slmforge.data.hub import read_hub_spec
from slmforge.data.packing import STRATEGIES, Sequences, count, cut_rows, pack
from slmforge.data.sources import check_sources, read_train_eval, read_user_examples
from slmforge.data.spec import read_spec
from slmforge.data.split import split_eval
from slmforge.data.template import Template
from slmforge.data.tokens import LOSS_ON, pad_token_id, tokenize, tokenizer_digest
from slmforge.errors import InvalidInput
from slmforge.steps._cli import run_step


@dataclass(kw_only=True)
class Params(StepParams):
    """Load and tokenize data

    Read json/jsonl/csv/parquet rows (a file or a Hugging Face Hub dataset), render the text template,
    tokenize, split off an eval set and write a tokenized dataset folder with a manifest.
    """

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
    strategy: str = param("join", choices=STRATEGIES, help="pack examples into blocks, or one per line")
    max_seq_len: int = param(1024, ge=2, help="tokens per sequence")
    pad_to_max_len: bool = param(False, help="pad every sequence to max_seq_len")
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


SPEC = StepSpec("load_data", Params, version="2")


def run(**given) -> dict:
    """Write the tokenized dataset folder (`given`: Params' names); return its manifest. Nothing is
    written on error."""
    started = time.perf_counter()
    p = make(Params, given)
    strategy, max_seq_len, loss_on = p.strategy, p.max_seq_len, p.loss_on
    text_cols, template, user = read_spec(Path(p.spec))  # template None: chat rows or a user pre-process
    if user and not p.user_script:
        raise InvalidInput(f"{p.spec}: names user_script functions ({', '.join(user)}) but no --user_script is given")
    chat = template is None and "pre_process_data" not in user
    tok, tok_name = load_tokenizer(p.tokenizer, p.model_id)
    if tok.eos_token_id is None:
        raise InvalidInput(f"tokenizer {tok_name} has no EOS token to end each example with")
    if chat:  # evaluation reads a conversation as a plain row: prompt, then the last assistant turn
        template, text_cols = Template(chat_rows.eval_template(tok)), ["prompt", "answer"]
    hub = read_hub_spec(p.hub_data) if p.hub_data else {}
    check_sources(p.data, p.eval_data, hub, user, p.eval_dataset_size)
    if "pre_process_data" in user:
        return _user_pre_processed(p, user, tok, tok_name, started)
    read = dict(text_cols=text_cols, max_samples=p.max_samples, chat=chat)
    train, held_out, records = read_train_eval(p.data, p.eval_data, hub, user, (p.user_script, p.script_dir),
                                               p.data_format, p.split, read)
    inputs = {**_input_digests(p), **records}
    if held_out is not None:
        train_rows, eval_rows = train.rows, held_out.rows
    else:
        prompt_of = (lambda r: chat_rows.eval_row(tok, r[chat_rows.COLUMN])["prompt"]) if chat else template.prompt
        train_rows, eval_rows = split_eval(train.rows, prompt_of, p.eval_dataset_size, p.data_seed)

    pad_id = pad_token_id(tok)
    seqs, lengths = {}, []
    for name, rows in (("train", train_rows), ("eval", eval_rows)):
        examples = tokenize(tok, template, rows, loss_on, chat)
        lengths += [len(ids) for ids, _ in examples]
        seqs[name] = pack(examples, strategy, max_seq_len, pad_id if p.pad_to_max_len else None)
    cut_note = cut_rows(lengths, max_seq_len) if strategy == "line-by-line" else None  # past 10 %: refused
    if cut_note:
        print(f"load_data: {cut_note}", file=sys.stderr)
    if not seqs["train"].records:
        raise InvalidInput(f"{p.data or hub['train'].label}: no training example is left with a token to learn from "
                           f"(max_seq_len {max_seq_len} cuts every completion off)")

    if chat:
        eval_rows = [chat_rows.eval_row(tok, r[chat_rows.COLUMN]) for r in eval_rows]
    metrics = {"rows_read": train.read, "empty_rows": train.empty, "rows": len(train.rows),
               "train_rows": len(train_rows), "eval_rows": len(eval_rows),
               "eval_empty_rows": held_out.empty if held_out else 0, "longest_row_tokens": max(lengths, default=0),
               "cut_rows": sum(1 for n in lengths if n > max_seq_len) if strategy == "line-by-line" else 0,
               "tokenized_rows": len(lengths), "max_seq_len": max_seq_len}
    params = {folders.TEMPLATE: template.text, "text_cols": text_cols, "chat": chat, "loss_on": loss_on,
              "strategy": strategy, "max_seq_len": max_seq_len,
              "pad_to_max_len": p.pad_to_max_len, "use_attention_mask": p.use_attention_mask,
              "data_format": p.data_format, "split": p.split, "eval_dataset_size": p.eval_dataset_size,
              "data_seed": p.data_seed, "max_samples": p.max_samples}
    return _write_folder(p, seqs, eval_rows, metrics, params, inputs, (tok, tok_name, pad_id), started)


def _write_folder(p: Params, seqs: dict, eval_rows: list, metrics: dict, params: dict, inputs: dict, tokenizer,
                  started: float) -> dict:
    tok, tok_name, pad_id = tokenizer
    with manifest.atomic_output(p.dataset) as out:
        folders.write_dataset(out, {name: (_record(r, p.use_attention_mask) for r in s.records)
                                    for name, s in seqs.items()}, eval_rows)
        for name, s in seqs.items():
            metrics.update({f"{name}_examples": len(s.records), f"{name}_tokens": s.tokens,
                            f"{name}_label_tokens": s.label_tokens, f"{name}_pad_tokens": s.pad_tokens,
                            f"{name}_truncated": s.truncated, f"{name}_dropped": s.dropped})
        tokenizer_info = {"name": tok_name, "digest": tokenizer_digest(tok), "eos_token_id": tok.eos_token_id,
                          "pad_token_id": pad_id, "bos_token_id": tok.bos_token_id}
        return manifest.write_manifest(
            out, step=folders.DATASET_STEP, params=params, metrics=metrics, seconds=time.perf_counter() - started,
            libraries=("transformers", "tokenizers"),
            extra={"inputs": inputs, "tokenizer": tokenizer_info,
                   "source_digest": inputs["data" if "data" in inputs else "user_script"]["digest"],
                   folders.EVAL_DIGEST: folders.eval_digest(out, params.get(folders.TEMPLATE))})


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
    model_name = str(Path(p.tokenizer).resolve()) if p.tokenizer else p.model_id
    examples, records = read_user_examples(p.data, user, (p.user_script, p.script_dir), model_name, p.data_format,
                                           p.split)
    inputs = {**_input_digests(p), **records}
    records = [{"input_ids": ids, "labels": labels, **({"attention_mask": m} if m is not None else {})}
               for ids, labels, m in examples]
    train, held = split_eval(records, lambda r: json.dumps(r["input_ids"]), p.eval_dataset_size, p.data_seed)
    seqs = {"train": count(Sequences(train)), "eval": count(Sequences(held))}
    metrics = {"rows": len(records), "train_rows": len(train), "eval_rows": 0, "empty_rows": 0}
    params = {"pre_process_data": user["pre_process_data"]["type"], "eval_dataset_size": p.eval_dataset_size,
              "data_seed": p.data_seed, "use_attention_mask": p.use_attention_mask}
    return _write_folder(p, seqs, [], metrics, params, inputs, (tok, tok_name, pad_token_id(tok)), started)


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


def _record(r: dict, use_attention_mask: bool) -> dict:
    if use_attention_mask:
        return {"input_ids": r["input_ids"], "labels": r["labels"],
                "attention_mask": r.get("attention_mask") or [1] * len(r["input_ids"])}
    return {"input_ids": r["input_ids"], "labels": r["labels"]}


def main(argv: list[str] | None = None) -> int:
    def work(values: dict) -> None:
        c = run(**values)["metrics"]
        print(f"load_data: {c['train_examples']} train / {c['eval_examples']} eval sequences, "
              f"{c['train_tokens']} train tokens, {c['empty_rows']} empty rows skipped -> {values['dataset']}",
              file=sys.stderr)

    return run_step("load_data", Params, argv, work, __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
