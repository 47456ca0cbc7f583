"""Step `export_adapter`: a peft LoRA adapter as an `.onnx_adapter` for a base built with adapter slots.

Output: `<name>.onnx_adapter`, its sidecar `<name>.onnx_adapter.json` (the base's digest, method, rank,
template: models/onnx_adapter.py) and slmforge.json. The base stays as build_onnx wrote it (its cache
entry shared by every adapter of that model); this step is what one fine-tune adds. It checks the
adapter served on its base against the PyTorch model with the adapter (the merged model's function)
with the gates of a baked-in build (onnx_check.py): logits on fixed prompts at every position, and with
`--dataset` the answers to the eval rows. A failed check leaves no output folder.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from slmforge.contract import folders, manifest
from slmforge.contract.params import StepParams, default, make, param
from slmforge.contract.step import StepSpec
from slmforge.errors import InvalidInput
from slmforge.models.eval_data import read_dataset_folder
from slmforge.steps._cli import run_step
from slmforge.steps.build_onnx import Params as Build
from slmforge.training.methods import separate_adapter_refusal

STEP = "export_adapter"
LIBRARIES = ("onnxruntime-genai", "onnxruntime", "torch", "transformers", "peft")


@dataclass(kw_only=True)
class Params(StepParams):
    """Export adapter (onnxruntime-genai)

    Write a LoRA adapter as an .onnx_adapter for a base model built with adapter slots, and check it on
    that base against PyTorch (logits on fixed prompts; answers on the eval rows).
    """

    model: str = param(asset="custom_model", help="the base: a build_onnx output built with adapter_slots")
    adapter: str = param(asset="uri_folder", help="PEFT adapter folder (LoRA or QLoRA), e.g. the finetune output")
    source: str | None = param(None, asset="uri_folder",
                               help="the base's Hugging Face model folder: the PyTorch reference of the check")
    source_id: str | None = param(None, help="hub id of the base, when no folder is given")
    name: str = param("adapter", help="the adapter's name: its file is <name>.onnx_adapter")
    dataset: str | None = param(None, asset="uri_folder",
                                help="load_data output folder: gate the adapter on its eval rows' answers")
    reference: str | None = param(None, asset="uri_folder", help=(
        "evaluate output of the merged model on the same dataset; its answers are the gates' reference "
        "(else computed here)"))
    check_max_samples: int = param(default(Build, "check_max_samples"), ge=1, help="eval rows the answer gates use")
    check_max_new_tokens: int = param(default(Build, "check_max_new_tokens"), ge=1,
                                      help="tokens each answer of the gates may take")
    max_accuracy_drop: float | None = param(None, ge=0, le=1, help=(
        "largest accuracy loss against the merged model the adapter may show (default per precision)"))
    output: str = param(asset="uri_folder", output="adapter", help="folder to write the .onnx_adapter to")


SPEC = StepSpec("export_adapter", Params, version="1", model_kind="onnx_adapter")


def run(**given) -> dict:
    """Convert, check and write the adapter folder (`given`: Params' names); return the check."""
    p = make(Params, given)
    from slmforge.models import adapter_slots, onnx_adapter, onnx_check, torch_model

    started = time.perf_counter()
    adapter_path = folders.open_adapter(p.adapter)
    refusal = separate_adapter_refusal(torch_model.adapter_method(adapter_path))
    if refusal:
        raise InvalidInput(f"{adapter_path}: {refusal}")
    base = adapter_slots.require_slots(p.model)
    source = torch_model.base_source(p.source, p.source_id)
    built = (manifest.read_manifest(Path(p.model)) or {}).get("params") or {}  # how build_onnx built the base
    precision, provider = str(built.get("precision", "int4")), str(built.get("execution_provider", "cpu"))
    eval_data = read_dataset_folder(p.dataset, p.check_max_samples) if p.dataset else None
    if p.reference and not p.dataset:
        raise InvalidInput("--reference needs --dataset: the reference's answers are to that dataset's eval rows")
    reference_answers = (onnx_check.read_reference(p.reference, p.dataset, eval_data, p.check_max_new_tokens)
                         if p.reference else None)
    template = folders.carried_template(adapter_path)

    with manifest.atomic_output(p.output) as tmp:
        file = onnx_adapter.convert(adapter_path, base.folder, tmp / f"{p.name}{onnx_adapter.SUFFIX}", name=p.name,
                                    template=template)
        check = onnx_check.check_against_pytorch(
            base.folder, source, adapter_path, precision, provider, eval_data=eval_data,
            reference_answers=reference_answers, max_accuracy_drop=p.max_accuracy_drop,
            max_new_tokens=p.check_max_new_tokens, onnx_adapter=file.path)
        manifest.write_manifest(
            tmp, step=STEP,
            params={"name": p.name, "source_id": p.source_id, "precision": precision,
                    "check_max_samples": p.check_max_samples, "check_max_new_tokens": p.check_max_new_tokens,
                    "max_accuracy_drop": p.max_accuracy_drop, "base_digest": base.digest,
                    **folders.template_param(template)},
            inputs={"model": p.model, "adapter": adapter_path, "source": p.source, "dataset": p.dataset,
                    "reference": p.reference},
            metrics={"check": check, "size_bytes": file.path.stat().st_size, "tensors": file.meta["tensors"],
                     "rank": file.meta["rank"]},
            seconds=time.perf_counter() - started, libraries=LIBRARIES,
        )
    summary = onnx_check.summary(check, precision)
    print(f"exported adapter {p.name} for the {precision} base {base.digest[:12]} -> {p.output}; {summary}")
    return check


def main(argv: list[str] | None = None) -> int:
    return run_step(STEP, Params, argv, lambda values: run(**values), __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
