"""The folders the steps exchange, in code: file names, JSON shapes, manifest keys, one reader and one
writer each (CONTRIBUTING.md's table of folders points here).

    folder    made by            holds (besides slmforge.json)                       read by
    dataset   load_data          train.jsonl, eval.jsonl (sequences), eval_rows.jsonl  finetune, evaluate, build_onnx
    adapter   finetune           a PEFT folder (adapter_config.json, weights)          merge, build_onnx
    model     merge, build_onnx  a Hugging Face / onnxruntime-genai folder             evaluate, build_onnx, register
    metrics   evaluate           metrics.json                                          build_onnx, register, evaluate

A sequence line is {"input_ids": [...], "labels": [...] (-100 where masked)[, "attention_mask": [...]]};
a held-out row is the raw row (the template's columns). The training text template is one manifest key,
`params.text_template`: written by load_data (where it starts) and by every step that carries it forward
(`template_param`), read by one function (`carried_template`).

Stdlib only and below models/training/data: what needs a tokenizer or a Template (the checks of a row's
columns, padding, perplexity) stays where it is and reads the folder through these.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from slmforge.contract import manifest
from slmforge.errors import InvalidInput

DATASET_STEP = "load_data"
TRAIN, EVAL, EVAL_ROWS = "train.jsonl", "eval.jsonl", "eval_rows.jsonl"
ADAPTER_CONFIG = "adapter_config.json"
GENAI_CONFIG = "genai_config.json"
METRICS = "metrics.json"
TEMPLATE = "text_template"  # under the manifest's params
# The dataset manifest's digest of its eval part (`eval_digest`); an evaluation's manifest records the one it read.
EVAL_DIGEST, DATASET_EVAL_DIGEST = "eval_digest", "dataset_eval_digest"
_MAX_DEPTH = 4  # adapter -> dataset is 1 hop; merged/onnx -> adapter -> dataset is 2


# ---------------------------------------------------------------- JSON lines

def read_jsonl(path: str | Path, limit: int | None = None) -> list[dict]:
    """JSON objects, one a line (blank lines skipped), at most `limit`; a bad line is one error naming it."""
    path, rows = Path(path), []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise InvalidInput(f"{path}: line {number} is not JSON: {e.msg}") from None
            if not isinstance(row, dict):
                raise InvalidInput(f"{path}: line {number} is not a JSON object")
            rows.append(row)
            if limit is not None and len(rows) >= limit:
                break
    return rows


def write_jsonl(path: str | Path, records: Iterable[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n")


# ---------------------------------------------------------------- dataset (load_data)

@dataclass(frozen=True)
class Dataset:
    """A load_data output folder, its manifest read; files are read on demand."""

    path: Path
    manifest: dict[str, Any]

    @property
    def params(self) -> dict[str, Any]:
        return self.manifest.get("params") or {}

    @property
    def template(self) -> str:
        """The text template the rows were rendered with (not there after a user pre_process function)."""
        text = self.params.get(TEMPLATE)
        if not isinstance(text, str) or not text:
            raise InvalidInput(f"{self.path / manifest.MANIFEST}: params.{TEMPLATE} is missing")
        return text

    @property
    def pad_token_id(self) -> int:
        tok = self.manifest.get("tokenizer") or {}
        pad = tok.get("pad_token_id")
        return tok.get("eos_token_id", 0) if pad is None else pad

    def file(self, name: str) -> Path:
        path = self.path / name
        if not path.is_file():
            raise InvalidInput(f"{self.path}: {name} is missing")
        return path

    def sequences(self, name: str, limit: int | None = None) -> list[dict]:
        """The sequence lines of train.jsonl or eval.jsonl (first `limit`), each checked for its shape."""
        path = self.file(name)
        records = read_jsonl(path, limit)
        for number, r in enumerate(records, 1):
            ids, labels = r.get("input_ids"), r.get("labels")
            if not isinstance(ids, list) or not isinstance(labels, list) or len(ids) != len(labels):
                raise InvalidInput(f"{path}: line {number} needs input_ids and labels of equal length")
        return records

    def eval_digest(self) -> str:
        """The digest of its eval part as the files are now (`eval_digest`), whatever the manifest says."""
        return eval_digest(self.path, self.params.get(TEMPLATE))

    def held_out_rows(self, limit: int | None = None) -> list[dict]:
        """The raw held-out rows (eval_rows.jsonl), first `limit`; none is an error."""
        path = self.file(EVAL_ROWS)
        rows = read_jsonl(path, limit)
        if not rows:
            raise InvalidInput(f"{path}: no held-out rows to evaluate on")
        return rows


def eval_digest(folder: str | Path, template: str | None) -> str:
    """The digest of exactly what a reader of a dataset's eval part reads (models/eval_data.py
    `read_dataset_folder`: evaluate, build_onnx's gates): eval_rows.jsonl, eval.jsonl (tokenized, so the
    tokenizer, max_seq_len and packing count) and the text template; not train.jsonl. load_data records it
    in its manifest (EVAL_DIGEST); the local cache keys such a reader's dataset input by it
    (StepSpec.eval_inputs), so editing only the training rows does not rerun an evaluation."""
    folder, h = Path(folder), hashlib.sha256()
    for name in (EVAL_ROWS, EVAL):
        path = folder / name
        h.update(name.encode() + b"\0" + (manifest.digest_file(path) if path.is_file() else "-").encode() + b"\n")
    h.update(TEMPLATE.encode() + b"\0" + (template or "").encode())
    return h.hexdigest()


def open_dataset(folder: str | Path) -> Dataset:
    folder = Path(folder)
    found = manifest.read_manifest(folder)
    if found is None or found.get("step") != DATASET_STEP:
        raise InvalidInput(f"{folder}: not a load_data dataset folder (no slmforge.json from load_data)")
    return Dataset(folder, found)


def write_dataset(out: str | Path, sequences: dict[str, Iterable[dict]], eval_rows: Iterable[dict]) -> None:
    """train.jsonl / eval.jsonl (`sequences` by "train" / "eval") and eval_rows.jsonl; the manifest follows."""
    out = Path(out)
    for name, records in sequences.items():
        write_jsonl(out / {"train": TRAIN, "eval": EVAL}[name], records)
    write_jsonl(out / EVAL_ROWS, eval_rows)


# ---------------------------------------------------------------- adapter (finetune) and model folders

def open_adapter(folder: str | Path) -> Path:
    path = Path(folder)
    if not (path / ADAPTER_CONFIG).is_file():
        raise InvalidInput(f"{path}: not a PEFT adapter folder (no {ADAPTER_CONFIG})")
    return path


def is_onnx_folder(folder: str | Path) -> bool:
    """An onnxruntime-genai folder (the build_onnx output) rather than a Hugging Face one."""
    return (Path(folder) / GENAI_CONFIG).is_file()


# ---------------------------------------------------------------- the training template

def template_param(text: str | None) -> dict[str, str]:
    """The manifest params entry that carries the template forward (none when there is none)."""
    return {TEMPLATE: text} if text else {}


def carried_template(folder: str | Path) -> str | None:
    """The text template the model in `folder` was trained with: its manifest's `params.text_template`,
    else that of its inputs (adapter -> dataset) while they still exist on this machine.

    An adapter written before the key was one (slmforge <= e08be62) kept it at the manifest's top level.
    The local cache keys an entry by the component's version, command, params and inputs, not by
    slmforge's code, so such an adapter is still handed to merge and build_onnx: it is read too."""
    return _template(Path(folder), _MAX_DEPTH)


def _template(folder: Path, depth: int) -> str | None:
    data = manifest.read_manifest(folder)
    if data is None:
        return None
    legacy = data.get(TEMPLATE) if data.get("step") == "finetune" else None
    for value in ((data.get("params") or {}).get(TEMPLATE), legacy):
        if isinstance(value, str) and value:
            return value
    if depth <= 0:
        return None
    for entry in (data.get("inputs") or {}).values():
        path = Path(entry.get("path", "")) if isinstance(entry, dict) else None
        if path is not None and path.is_dir():
            found = _template(path, depth - 1)
            if found:
                return found
    return None


# ---------------------------------------------------------------- metrics (evaluate)

@dataclass(frozen=True)
class Evaluation:
    """An evaluate output folder: metrics.json and the manifest."""

    path: Path
    metrics: dict[str, Any]
    manifest: dict[str, Any]

    @property
    def dataset_digest(self) -> str | None:
        """The digest of the dataset folder it evaluated."""
        return ((self.manifest.get("inputs") or {}).get("dataset") or {}).get("digest")

    def evaluated(self, dataset: Dataset) -> bool:
        """Whether it evaluated the eval part of `dataset` as it is now: the same eval rows, sequences and
        template (an evaluation the local cache reused after only the training rows changed counts).
        One by an older slmforge, which recorded no eval digest: the same dataset folder, by digest."""
        recorded = self.manifest.get(DATASET_EVAL_DIGEST)
        if recorded is not None:
            return recorded == dataset.eval_digest()
        return self.dataset_digest == manifest.digest_path(dataset.path)


def write_metrics(out: str | Path, metrics: dict[str, Any]) -> None:
    (Path(out) / METRICS).write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def read_metrics(folder: str | Path) -> dict[str, Any]:
    """metrics.json of an evaluate output; a missing or broken one is one line naming it."""
    folder = Path(folder)
    found = _metrics(folder)
    if found is None:
        raise InvalidInput(f"{folder}: no {METRICS} (expected the output of an evaluate step)")
    return found


def find_evaluation(folder: str | Path) -> Evaluation | None:
    """The evaluate output in `folder`, or None when it is not one (no manifest, no readable metrics.json)."""
    folder = Path(folder)
    found, metrics = manifest.read_manifest(folder), _metrics(folder, strict=False)
    return Evaluation(folder, metrics, found) if found is not None and metrics is not None else None


def _metrics(folder: Path, strict: bool = True) -> dict[str, Any] | None:
    path = folder / METRICS
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        if not strict:
            return None
        raise InvalidInput(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        if not strict:
            return None
        raise InvalidInput(f"{path}: not a JSON object")
    return data
