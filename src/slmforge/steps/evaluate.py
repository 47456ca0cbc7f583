"""Step `evaluate`: accuracy, confusion, perplexity, tokens/s and size of a PyTorch or ONNX model.

Reads a load_data folder: eval_rows.jsonl (raw held-out rows; accuracy by greedy generation of
the template's answer), eval.jsonl (tokenized; perplexity over its labelled tokens) and the
template from its manifest. Writes metrics.json (the agreed shape: label, accuracy, n, confusion,
perplexity, tokens_per_second, size_bytes, model_kind) and slmforge.json.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from slmforge import manifest
from slmforge.errors import InvalidInput
from slmforge.params import make, param
from slmforge.steps._cli import run_step

STEP = "evaluate"
METRICS_FILE = "metrics.json"


@dataclass(kw_only=True)
class Params:
    """The evaluate step's parameters: `components/evaluate.yml`'s inputs and outputs."""

    model: str | None = param(None, asset="uri_folder", help="model folder: Hugging Face or onnxruntime-genai")
    model_id: str | None = param(None, help="hub id of the model, when no folder is given")
    dataset: str = param(asset="uri_folder", help="output of load_data (its manifest carries the template)")
    label: str = param("model", help="name shown in the report (base, merged, onnx)")
    max_samples: int = param(200, ge=1, help="eval rows to answer")
    max_new_tokens: int = param(8, ge=1, help="tokens generated per answer")
    metrics: str = param(asset="uri_folder", output=True, help="metrics folder to write")


def run(**given) -> dict:
    """Evaluate and write the metrics folder (`given`: Params' names); return the metrics."""
    p = make(Params, given)
    dataset, metrics, model, model_id, label = p.dataset, p.metrics, p.model, p.model_id, p.label
    max_samples, max_new_tokens = p.max_samples, p.max_new_tokens
    from slmforge import evaluation
    from slmforge.model_folder import is_onnx_folder

    started = time.perf_counter()
    rows, examples_raw, template = read_dataset_folder(dataset, max_samples)
    backend = evaluation.load_backend(model, model_id)
    result = evaluation.evaluate(backend, rows, template, examples=examples_raw, max_new_tokens=max_new_tokens,
                                 label=label, model_dir=model)
    with manifest.atomic_output(metrics) as tmp:
        (tmp / METRICS_FILE).write_text(json.dumps(result, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        libraries = ("onnxruntime-genai", "onnxruntime") if model and is_onnx_folder(model) else ("torch", "transformers")
        manifest.write_manifest(
            tmp, step=STEP,
            params={"label": label, "max_samples": max_samples, "max_new_tokens": max_new_tokens,
                    "model_id": model_id, "text_template": template.text},
            inputs={"model": model, "dataset": dataset},
            metrics=result, seconds=time.perf_counter() - started, libraries=libraries,
        )
    print(evaluation.format_table(result))
    return result


def read_dataset_folder(dataset: str | Path, max_samples: int):
    """(eval rows, perplexity examples, template) from a load_data output folder, first max_samples each."""
    from slmforge.evaluation import check_rows, read_jsonl
    from slmforge.template import Template

    folder = Path(dataset)
    data = manifest.read_manifest(folder)
    if data is None:
        raise InvalidInput(f"{folder}: not a load_data output folder (no readable {manifest.MANIFEST})")
    text = (data.get("params") or {}).get("text_template")
    if not text:
        raise InvalidInput(f"{folder / manifest.MANIFEST}: params.text_template is missing")
    template = Template(text)
    if max_samples < 1:
        raise InvalidInput(f"--max_samples {max_samples}: must be at least 1")
    for name in ("eval_rows.jsonl", "eval.jsonl"):
        if not (folder / name).is_file():
            raise InvalidInput(f"{folder}: {name} is missing")
    rows = read_jsonl(folder / "eval_rows.jsonl", max_samples)
    if not rows:
        raise InvalidInput(f"{folder / 'eval_rows.jsonl'}: no held-out rows to evaluate on")
    check_rows(rows, template, str(folder / "eval_rows.jsonl"))
    examples = []
    for i, row in enumerate(read_jsonl(folder / "eval.jsonl", max_samples), 1):
        ids, labels = row.get("input_ids"), row.get("labels")
        if not isinstance(ids, list) or not isinstance(labels, list) or len(ids) != len(labels):
            raise InvalidInput(f"{folder / 'eval.jsonl'}: line {i} needs input_ids and labels of equal length")
        examples.append((ids, labels))
    return rows, examples, template


def main(argv: list[str] | None = None) -> int:
    return run_step(STEP, Params, argv, lambda values: run(**values), __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
