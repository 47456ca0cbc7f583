"""Step `evaluate`: accuracy, confusion, perplexity, tokens/s and size of a PyTorch or ONNX model.

Reads a load_data folder: eval_rows.jsonl (raw held-out rows; accuracy by greedy generation of
the template's answer), eval.jsonl (tokenized; perplexity over its labelled tokens) and the
template from its manifest. Writes metrics.json (the agreed shape: label, accuracy, n, confusion,
perplexity, tokens_per_second, size_bytes, model_kind; with --evaluator also `evaluator`, the
recipe's Olive metrics with their sub-types and goals: models/olive_metrics.py) and slmforge.json.
With `--adapter` (an export_adapter output: a folder holding one `.onnx_adapter`) the model is the base
it was made for, answering with the adapter active; metrics.json's `adapter` says which (name, file
sha256 and size, method, rank, base digest).
A build_onnx output whose answer gates answered these very rows (same dataset, rows and max_new_tokens;
models/gate_answers.py) lends its answers instead of answering again: the same metrics, `answers_from` says so.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from slmforge.contract import folders, manifest
from slmforge.contract.aml_tracking import log_job_metrics
from slmforge.contract.files import read_json_object
from slmforge.contract.params import StepParams, make, param
from slmforge.contract.step import StepSpec
from slmforge.steps._cli import run_step

STEP = "evaluate"


@dataclass(kw_only=True)
class Params(StepParams):
    """Evaluate

    Accuracy by greedy generation (with a per-class confusion table), perplexity on the eval split,
    generation tokens/s and size on disk, for a PyTorch or an onnxruntime-genai model folder.
    """

    model: str | None = param(None, asset="uri_folder", help="model folder: Hugging Face or onnxruntime-genai")
    model_id: str | None = param(None, help="hub id of the model, when no folder is given")
    adapter: str | None = param(None, asset="uri_folder", help="a separate adapter to evaluate on the model (a base "
                                "built with adapter slots): the export_adapter output, a folder holding one "
                                ".onnx_adapter")
    dataset: str = param(asset="uri_folder", help="output of load_data (its manifest carries the template)")
    label: str = param("model", help="name shown in the report (base, merged, onnx)")
    max_samples: int = param(200, ge=1, help="eval rows to answer")
    max_new_tokens: int = param(8, ge=1, help="tokens generated per answer")
    evaluator: str | None = param(None, asset="uri_file", help="JSON: the recipe's evaluator (Olive's metrics "
                                  "with sub_types and goals), computed besides the built-in figures")
    baseline: str | None = param(None, asset="uri_folder", help="the input model's metrics folder, which "
                                 "relative goals are measured from")
    metrics: str = param(asset="uri_folder", output=True, help="metrics folder to write")


SPEC = StepSpec("evaluate", Params, version="2", record="evaluation", eval_inputs=("dataset",))


def run(**given) -> dict:
    """Evaluate and write the metrics folder (`given`: Params' names); return the metrics."""
    p = make(Params, given)
    dataset, metrics, model, model_id, label = p.dataset, p.metrics, p.model, p.model_id, p.label
    max_samples, max_new_tokens = p.max_samples, p.max_new_tokens
    from slmforge.models import gate_answers
    from slmforge.models.backend import load_backend
    from slmforge.models.eval_data import read_dataset_folder
    from slmforge.models.evaluation import adapter_record, evaluate
    from slmforge.models.metrics_table import format_table

    started = time.perf_counter()
    spec = base = None
    if p.evaluator:  # checked before any work
        from slmforge.models import olive_metrics

        spec = read_json_object(Path(p.evaluator))
        olive_metrics.check_spec(spec, p.evaluator)
        base = folders.read_metrics(p.baseline).get("evaluator") if p.baseline else None
    adapter = None
    if p.adapter:
        from slmforge.models import onnx_adapter
        from slmforge.models.backend import require_adapter_base

        require_adapter_base(model)
        adapter = onnx_adapter.open_file(p.adapter)
    rows, examples_raw, template = read_dataset_folder(dataset, max_samples)
    backend = load_backend(model, model_id, [adapter.path] if adapter else [])
    # An ONNX folder's build gates may have answered these very rows already (gate_answers.py).
    recorded = None if adapter else gate_answers.read(model, dataset, max_new_tokens)
    result = evaluate(backend, rows, template, examples=examples_raw, max_new_tokens=max_new_tokens,
                      label=label, model_dir=model, recorded=recorded)
    if adapter is not None:
        result["adapter"] = adapter_record(adapter)
    if spec is not None:
        result["evaluator"] = olive_metrics.run_spec(spec, backend, rows, template, result,
                                                     max_new_tokens=max_new_tokens, baseline=base)
    with manifest.atomic_output(metrics) as tmp:
        folders.write_metrics(tmp, result)
        libraries = (("onnxruntime-genai", "onnxruntime") if model and folders.is_onnx_folder(model)
                     else ("torch", "transformers"))
        manifest.write_manifest(
            tmp, step=STEP,
            params={"label": label, "max_samples": max_samples, "max_new_tokens": max_new_tokens,
                    "model_id": model_id, **({"adapter": adapter.name} if adapter else {}),
                    **folders.template_param(template.text)},
            inputs={"model": model, "adapter": p.adapter, "dataset": dataset, "evaluator": p.evaluator,
                    "baseline": p.baseline},
            metrics=result, seconds=time.perf_counter() - started, libraries=libraries,
            extra={folders.DATASET_EVAL_DIGEST: folders.open_dataset(dataset).eval_digest()},
        )
    print(format_table(result))
    # Inside a tracked job (Azure ML): the figures into the step's MLflow run, so studio and `status` show them.
    # (Plain MlflowClient for now; the fine-tune's tracking.JobLogger could take this over.)
    log_job_metrics(result, {"label": label, "model_kind": result.get("model_kind")})
    return result


def main(argv: list[str] | None = None) -> int:
    return run_step(STEP, Params, argv, lambda values: run(**values), __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
