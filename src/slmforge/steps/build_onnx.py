"""Step `build_onnx`: an onnxruntime-genai model folder from a Hugging Face model (+ adapter).

Output: genai_config.json, model.onnx, model.onnx.data, tokenizer files and slmforge.json (which
carries the training template forward). With `--adapter` the builder reads base + PEFT adapter
itself (its `adapter_path` option: LoRA stays a separate low-rank MatMul path), so no merge step
is needed. The step checks the model it wrote against PyTorch on fixed prompts, at every position,
through plain onnxruntime (logit_check.py has the bounds and why):
  fp32       max abs logit difference <= 1e-4 (catches the builder's silent LM-head mis-wiring)
  int4/int8  mean logit cosine and next-token argmax agreement, recorded, with lower bounds
  fp16       the same, with tighter bounds
plus: onnxruntime-genai loads the folder and its tokenizer gives the Hugging Face token ids.
With `--dataset`, the built model's answers to its eval rows are gated against the source model's;
`--reference` (the source model's evaluate output on that very dataset) supplies those instead of
answering every row again. A failed check leaves no output folder.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from slmforge.contract import folders, manifest
from slmforge.contract.files import folder_size
from slmforge.contract.params import StepParams, default, make, param
from slmforge.contract.step import StepSpec
from slmforge.errors import InvalidInput
from slmforge.models import adapter_slots, onnx_builder
from slmforge.models.eval_data import read_dataset_folder
from slmforge.steps._cli import run_step
from slmforge.steps.evaluate import Params as Evaluation
from slmforge.training.methods import METHODS

STEP = "build_onnx"
LIBRARIES = ("onnxruntime-genai", "onnxruntime", "onnx", "onnx-ir", "torch", "transformers", "peft")


@dataclass(kw_only=True)
class Params(StepParams):
    """Build ONNX (onnxruntime-genai)

    Build an onnxruntime-genai model folder with the onnxruntime-genai model builder and check it
    against PyTorch (exact logits at fp32; argmax agreement and cosine for int4/int8).
    """

    model: str | None = param(None, asset="uri_folder", help="model folder (Hugging Face format), e.g. the merge output")
    model_id: str | None = param(None, help="hub id of the model, when no folder is given")
    adapter: str | None = param(None, asset="uri_folder", help="PEFT adapter folder: build straight from base + adapter")
    precision: str = param("int4", choices=("int4", "int8", "fp16", "fp32"), help="weight precision")
    execution_provider: str = param("cpu", choices=("cpu", "cuda"), help="onnxruntime execution provider")
    int4_block_size: int = param(32, choices=(16, 32, 64, 128, 256), help="int4 quantization block size")
    int4_accuracy_level: int = param(4, ge=0, le=4, help="MatMulNBits accuracy level")
    int4_algo_config: str = param(onnx_builder.DEFAULT_INT4_ALGO, choices=onnx_builder.INT4_ALGOS, help=(
        "int4 method (the builder's algo_config); auto re-encodes a base whose weights lie on a 4-bit grid (a GGUF's "
        "Q4_1) without loss and keeps the adapter float, else uses k_quant_mixed (the best accuracy within the size "
        "goal on the real model: bench/results/int4_options.json)"))
    int4_is_symmetric: bool = param(True, help="symmetric int4 quantization")
    extra_options: str | None = param(None, help="comma-separated key=value builder options")
    adapter_slots: str | None = param(None, help=(
        "build a base for separate adapters: 'all' or a comma list of decoder Linears (q_proj,v_proj,...) whose "
        "LoRA weights become optional inputs, filled at run time by an .onnx_adapter (ExtractAdapters)"))
    dataset: str | None = param(None, asset="uri_folder",
                                help="load_data output folder: gate the build on its eval rows' answers")
    reference: str | None = param(None, asset="uri_folder", help=(
        "evaluate output of the source model on the same dataset; its answers are the gates' reference "
        "(else computed here)"))
    check_max_samples: int = param(default(Evaluation, "max_samples"), ge=1, help="eval rows the answer gates use")
    check_max_new_tokens: int = param(default(Evaluation, "max_new_tokens"), ge=1,
                                      help="tokens each answer of the gates may take")
    max_accuracy_drop: float | None = param(None, ge=0, le=1, help=(
        "largest accuracy loss against the source model the build may show (default per precision)"))
    output: str = param(asset="custom_model", output="model", help="onnxruntime-genai model folder to write")


SPEC = StepSpec("build_onnx", Params, version="3", model_kind="onnx", eval_inputs=("dataset",))


def run(**given) -> dict:
    """Build, check and write the ONNX folder (`given`: Params' names); return the check."""
    p = make(Params, given)
    output, model, model_id, adapter, precision, dataset = p.output, p.model, p.model_id, p.adapter, p.precision, p.dataset
    execution_provider, max_accuracy_drop = p.execution_provider, p.max_accuracy_drop
    from slmforge.models import gate_answers, onnx_builder, onnx_check, torch_model

    started = time.perf_counter()
    source = torch_model.base_source(model, model_id)
    adapter_path = folders.open_adapter(adapter) if adapter else None
    kind = torch_model.adapter_method(adapter_path) if adapter_path is not None else None
    slots = adapter_slots.parse_modules(p.adapter_slots) if p.adapter_slots else None
    if slots and adapter_path is not None:
        raise InvalidInput("--adapter_slots builds a base for separate adapters; it takes no --adapter (convert the "
                           "adapter for the base with the export_adapter step)")
    if kind is not None and not (kind in METHODS and METHODS[kind].builder_reads_adapter):  # the registry's
        raise InvalidInput(f"{adapter_path}: a {kind} adapter; the ONNX builder reads LoRA adapters only: merge "
                           "it first (MergeAdapterWeights) and build the merged model")
    extra = onnx_builder.parse_extra_options(p.extra_options)
    eval_data = read_dataset_folder(dataset, p.check_max_samples) if dataset else None
    if p.reference and not dataset:
        raise InvalidInput("--reference needs --dataset: the reference's answers are to that dataset's eval rows")
    reference_answers = onnx_check.read_reference(p.reference, dataset, eval_data, p.check_max_new_tokens) if p.reference else None

    with manifest.atomic_output(output) as tmp:
        build_started = time.perf_counter()
        builder_options = build_model(source, tmp, precision, execution_provider, p.int4_block_size,
                                      p.int4_accuracy_level, p.int4_algo_config, p.int4_is_symmetric, extra, adapter_path,
                                      slots)
        build_seconds = time.perf_counter() - build_started
        answered = gate_answers.Answered()  # the built model's answers to the gate rows, kept for its evaluation
        check = onnx_check.check_against_pytorch(
            tmp, source, adapter_path, precision, execution_provider, eval_data=eval_data,
            reference_answers=reference_answers, max_accuracy_drop=max_accuracy_drop,
            max_new_tokens=p.check_max_new_tokens, answered=answered)
        template = folders.carried_template(adapter_path or model) if (adapter_path or model) else None
        params = {"model_id": model_id, "precision": precision, "execution_provider": execution_provider,
                  "int4_block_size": p.int4_block_size, "int4_accuracy_level": p.int4_accuracy_level,
                  "int4_algo_config": p.int4_algo_config, "int4_is_symmetric": p.int4_is_symmetric,
                  "extra_options": extra, "check_max_samples": p.check_max_samples,
                  "check_max_new_tokens": p.check_max_new_tokens,
                  "max_accuracy_drop": max_accuracy_drop, "adapter_slots": ",".join(slots) if slots else None,
                  **folders.template_param(template)}
        manifest.write_manifest(
            tmp, step=STEP, params=params,
            inputs={"model": model, "adapter": adapter_path, "dataset": dataset, "reference": p.reference},
            metrics={"check": check, "size_bytes": folder_size(tmp), "builder_options": builder_options,
                     "build_seconds": round(build_seconds, 3)},
            seconds=time.perf_counter() - started, libraries=LIBRARIES,
            extra={gate_answers.KEY: answered.record(dataset, p.check_max_new_tokens)} if answered.requests else None,
        )
    summary = onnx_check.summary(check, precision)
    print(f"built {precision} onnxruntime-genai model -> {output}; {summary}")
    return check


def build_model(source: str, out: Path, precision: str, execution_provider: str, block_size: int,
                accuracy_level: int, algo_config: str, is_symmetric: bool, extra: dict, adapter: Path | None,
                slots: tuple[str, ...] | None = None) -> dict:
    """Build `out`; return how. With `slots`, a base for separate adapters: built with a zero skeleton
    adapter whose LoRA weights then become optional inputs (adapter_slots.py)."""
    if not slots:
        return _build(source, out, precision, execution_provider, block_size, accuracy_level, algo_config,
                      is_symmetric, extra, adapter)
    import tempfile

    if not Path(source).is_dir():
        raise InvalidInput("--adapter_slots needs the model as a folder (--model), to place the slots from its weights")
    with tempfile.TemporaryDirectory(prefix="slmforge-skeleton-") as tmp:
        skeleton = adapter_slots.skeleton_adapter(Path(source), Path(tmp), slots)
        how = _build(source, out, precision, execution_provider, block_size, accuracy_level, algo_config,
                     is_symmetric, extra, skeleton)
    record = adapter_slots.make_inputs(out, slots)
    return {**how, "adapter_slots": len(record["slots"])}


def _build(source: str, out: Path, precision: str, execution_provider: str, block_size: int,
           accuracy_level: int, algo_config: str, is_symmetric: bool, extra: dict, adapter: Path | None) -> dict:
    """int4 of a base whose weights already lie on a 4-bit grid (a GGUF's Q4_1) re-encodes them without
    loss (exact_quant.py); anything else goes to the builder's method."""
    from slmforge.models import exact_quant

    exact = (precision == "int4" and algo_config == "auto" and execution_provider == "cpu" and not extra
             and Path(source).is_dir() and exact_quant.on_grid(source))
    if not exact:
        return onnx_builder.build(source=source, out_dir=out, precision=precision, execution_provider=execution_provider,
                                  block_size=block_size, accuracy_level=accuracy_level, extra=extra, adapter=adapter,
                                  algo_config=algo_config, is_symmetric=is_symmetric)
    onnx_builder.build(source=source, out_dir=out, precision="fp32", execution_provider=execution_provider,
                       block_size=block_size, accuracy_level=accuracy_level, extra={}, adapter=adapter)
    counts = exact_quant.reencode(out, accuracy_level)
    print(f"build_onnx: the base's weights lie on a 4-bit block grid (Q4_1): re-encoded without loss "
          f"({counts['int4']} int4 and {counts['int8']} int8 MatMuls; {counts['float']} adapter MatMuls stay float32)",
          file=sys.stderr)
    return {"method": "exact re-encoding of grid weights (exact_quant.py)", "accuracy_level": str(accuracy_level),
            "matmuls": counts}


def main(argv: list[str] | None = None) -> int:
    return run_step(STEP, Params, argv, lambda values: run(**values), __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
