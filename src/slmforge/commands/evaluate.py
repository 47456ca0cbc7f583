"""`slmforge evaluate --model DIR --data FILE [--json]`: evaluate a model folder on a data file.

`--data` is a raw data file (JSON lines, a JSON array, CSV or parquet) whose rows have the template's
columns, or a load_data output folder. The template comes from the model folder's manifest
(carried from training) unless `--template` is given. An onnxruntime-genai folder is evaluated
without importing torch.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model folder: onnxruntime-genai or Hugging Face")
    parser.add_argument("--data", required=True, help="data file (.json/.jsonl/.csv/.parquet) or a load_data output folder")
    parser.add_argument("--template", help="text template, e.g. '### Text: {phrase}\\n### The tone is:\\n{tone}' "
                                           "(default: the one in the model folder's slmforge.json)")
    parser.add_argument("--label", help="name shown in the output (default: the folder name)")
    from slmforge.recipe.schema import EvaluateConfig

    defaults = EvaluateConfig()  # the evaluate step's (a recipe's `evaluate` block left out)
    parser.add_argument("--max_samples", type=int, default=defaults.max_samples,
                        help=f"rows to evaluate (default {defaults.max_samples})")
    parser.add_argument("--max_new_tokens", type=int, default=defaults.max_new_tokens,
                        help=f"tokens generated per row (default {defaults.max_new_tokens})")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    from slmforge.data.template import Template
    from slmforge.errors import InvalidInput
    from slmforge.contract.folders import carried_template, is_onnx_folder
    from slmforge.contract.manifest import MANIFEST
    from slmforge.models.answers import examples_from_rows
    from slmforge.models.backend import load_backend
    from slmforge.models.eval_data import read_dataset_folder
    from slmforge.models.evaluation import evaluate
    from slmforge.models.metrics_table import format_table
    from slmforge.models.model_folder import resolve_hf_folder

    model, data = Path(args.model), Path(args.data)
    if not model.is_dir():
        raise InvalidInput(f"--model {model}: no such folder")
    if not is_onnx_folder(model):
        resolve_hf_folder(model)  # not a model folder at all: said before anything about its template
    if args.max_samples < 1 or args.max_new_tokens < 1:
        raise InvalidInput("--max_samples and --max_new_tokens must be at least 1")
    label = args.label or model.name
    if data.is_dir():
        rows, examples, template = read_dataset_folder(data, args.max_samples)
        if args.template:
            template = Template(args.template)
        backend = load_backend(model, None)
    else:
        text = args.template or carried_template(model)
        if not text:
            carried = "carries no text_template" if (model / MANIFEST).is_file() else f"has no {MANIFEST}"
            raise InvalidInput(f"{model}: the folder {carried} to take the text template from; pass --template")
        template = Template(text)
        rows = read_rows(data, template, args.max_samples)
        backend = load_backend(model, None)
        examples = examples_from_rows(backend, rows, template)
    metrics = evaluate(backend, rows, template, examples=examples, max_new_tokens=args.max_new_tokens,
                                  label=label, model_dir=model)
    print(json.dumps(metrics, sort_keys=True) if args.json else format_table(metrics))
    return 0


def read_rows(path: Path, template, limit: int) -> list[dict]:
    """The first `limit` rows of a JSON / JSON lines / CSV / parquet file, with the template's columns."""
    from slmforge.data.readers import read_rows as read_data_file

    data_format = {".csv": "csv", ".parquet": "parquet"}.get(path.suffix.lower(), "json")
    return read_data_file(path, data_format, list(dict.fromkeys(template.fields)), max_samples=limit).rows
