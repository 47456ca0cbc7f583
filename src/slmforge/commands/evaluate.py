"""`slmforge evaluate --model DIR --data FILE [--json]`: evaluate a model folder on a data file.

`--data` is a raw data file (JSON lines, a JSON array, CSV or parquet) whose rows have the template's
columns, or a load_data output folder. The template comes from the model folder's manifest
(carried from training) unless `--template` is given. An onnxruntime-genai folder is evaluated
without importing torch.

`--adapter FILE` (repeatable) scores separate `.onnx_adapter` files on a base built with adapter slots: the
base is loaded once and each adapter answers the same rows in turn, one result each (labelled
LABEL+ADAPTER, with an `adapter` record: name, file digest, base; `--json`: one object per line). A raw
data file is then rendered with `--template`, else the adapter's own template, else the folder's.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Iterator


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model folder: onnxruntime-genai or Hugging Face; or a "
                                                       "registered one: models:/NAME/VERSION, models:/NAME@ALIAS")
    parser.add_argument("--data", required=True, help="data file (.json/.jsonl/.csv/.parquet) or a load_data output folder")
    parser.add_argument("--template", help="text template, e.g. '### Text: {phrase}\\n### The tone is:\\n{tone}' "
                                           "(default: the one in the model folder's slmforge.json)")
    parser.add_argument("--adapter", action="append", default=[], metavar="FILE",
                        help="an .onnx_adapter file (or a folder holding one) to evaluate on the base; repeat it to "
                             "score several adapters on the same rows, the base loaded once")
    parser.add_argument("--label", help="name shown in the output (default: the folder name; +ADAPTER with adapters)")
    from slmforge.recipe.schema import EvaluateConfig

    defaults = EvaluateConfig()  # the evaluate step's (a recipe's `evaluate` block left out)
    parser.add_argument("--max_samples", type=int, default=defaults.max_samples,
                        help=f"rows to evaluate (default {defaults.max_samples})")
    parser.add_argument("--max_new_tokens", type=int, default=defaults.max_new_tokens,
                        help=f"tokens generated per row (default {defaults.max_new_tokens})")
    parser.add_argument("--json", action="store_true", help="print one JSON object (with several --adapter: one per line)")


def run(args: argparse.Namespace) -> int:
    from slmforge.models.metrics_table import format_table

    for i, metrics in enumerate(evaluations(args)):  # each printed as soon as it is scored
        print(json.dumps(metrics, sort_keys=True) if args.json else ("\n" if i else "") + format_table(metrics))
    return 0


def evaluations(args: argparse.Namespace) -> Iterator[dict]:
    """The metrics of the model alone, or of each --adapter on it (`slmforge evaluate`, `slmforge.evaluate`)."""
    from slmforge.commands import model_argument
    from slmforge.contract.folders import is_onnx_folder
    from slmforge.errors import InvalidInput
    from slmforge.models.backend import load_backend, require_adapter_base
    from slmforge.models.model_folder import resolve_hf_folder

    folder, registered_adapter, registered_label = model_argument(args.model)
    model, data = Path(folder), Path(args.data)
    args.adapter = args.adapter or ([registered_adapter] if registered_adapter else [])
    if not model.is_dir():
        raise InvalidInput(f"--model {model}: no such folder")
    if not is_onnx_folder(model):
        resolve_hf_folder(model)  # not a model folder at all: said before anything about its template
    if args.max_samples < 1 or args.max_new_tokens < 1:
        raise InvalidInput("--max_samples and --max_new_tokens must be at least 1")
    adapters = []
    if args.adapter:
        from slmforge.models import onnx_adapter

        require_adapter_base(model)
        adapters = [onnx_adapter.open_file(path) for path in args.adapter]
        names = [a.name for a in adapters]
        twice = next((n for n in names if names.count(n) > 1), None)
        if twice is not None:
            raise InvalidInput(f"--adapter: two adapters are named {twice!r}; each result is named by its adapter")
    label = args.label or registered_label or model.name
    inputs = _Inputs(args, model, data)
    for adapter in adapters or [None]:
        inputs.rows(adapter)  # a missing template or a broken row is said before the model loads
    backend = load_backend(model, None, [a.path for a in adapters])
    for adapter in adapters or [None]:
        yield _evaluate_one(backend, inputs, adapter, label, args.max_new_tokens)


class _Inputs:
    """The rows, template and perplexity examples an evaluation answers: a load_data folder's own, or a raw
    data file's rows rendered with --template, the adapter's template or the model folder's (each read once)."""

    def __init__(self, args: argparse.Namespace, model: Path, data: Path):
        self.args, self.model, self.data = args, model, data
        self._read: dict[str, tuple] = {}  # template text -> (rows, template, examples or None)

    def _template_text(self, adapter) -> str:
        from slmforge.contract.folders import carried_template
        from slmforge.contract.manifest import MANIFEST
        from slmforge.errors import InvalidInput

        text = self.args.template or (adapter.template if adapter else None) or carried_template(self.model)
        if not text:
            carried = "carries no text_template" if (self.model / MANIFEST).is_file() else f"has no {MANIFEST}"
            whose = f"the adapter {adapter.path} carries none and " if adapter else ""
            raise InvalidInput(f"{self.model}: {whose}the folder {carried} to take the text template from; "
                               "pass --template")
        return text

    def rows(self, adapter) -> tuple[list[dict], object, str]:
        """(rows, template, key) for `adapter` (None: the base alone), read on first use."""
        from slmforge.data.template import Template

        if self.data.is_dir():  # the folder's own template, or --template; the adapter's is not used
            key = self.args.template or ""
            if key not in self._read:
                from slmforge.models.eval_data import read_dataset_folder

                rows, examples, template = read_dataset_folder(self.data, self.args.max_samples)
                self._read[key] = (rows, Template(key) if key else template, examples)
        else:
            key = self._template_text(adapter)
            if key not in self._read:
                template = Template(key)
                self._read[key] = (read_rows(self.data, template, self.args.max_samples), template, None)
        rows, template, _ = self._read[key]
        return rows, template, key

    def rows_and_examples(self, backend, adapter) -> tuple[list[dict], object, list]:
        from slmforge.models.answers import examples_from_rows

        rows, template, key = self.rows(adapter)
        examples = self._read[key][2]
        if examples is None:
            examples = examples_from_rows(backend, rows, template)
            self._read[key] = (rows, template, examples)
        return rows, template, examples


def _evaluate_one(backend, inputs: _Inputs, adapter, label: str, max_new_tokens: int) -> dict:
    """One evaluation: the base alone (`adapter` None) or the base with that adapter active."""
    from slmforge.models.evaluation import adapter_record, evaluate

    if adapter is not None:
        backend.use_adapter(adapter.name)
    rows, template, examples = inputs.rows_and_examples(backend, adapter)
    metrics = evaluate(backend, rows, template, examples=examples, max_new_tokens=max_new_tokens,
                       label=f"{label}+{adapter.name}" if adapter else label, model_dir=inputs.model)
    if adapter is not None:
        metrics["adapter"] = adapter_record(adapter)
    return metrics


def read_rows(path: Path, template, limit: int) -> list[dict]:
    """The first `limit` rows of a JSON / JSON lines / CSV / parquet file, with the template's columns."""
    from slmforge.data.readers import read_rows as read_data_file

    data_format = {".csv": "csv", ".parquet": "parquet"}.get(path.suffix.lower(), "json")
    return read_data_file(path, data_format, list(dict.fromkeys(template.fields)), max_samples=limit).rows
