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

import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from slmforge.contract import manifest
from slmforge.contract.files import folder_size
from slmforge.contract.step import StepSpec
from slmforge.contract.params import make, param
from slmforge.errors import InvalidInput, SlmforgeError, StepFailed
from slmforge.models import onnx_builder
from slmforge.models.evaluation import read_dataset_folder
from slmforge.steps._cli import run_step
from slmforge.training.methods import METHODS

STEP = "build_onnx"
PRECISIONS = ("int4", "int8", "fp16", "fp32")
PROVIDERS = ("cpu", "cuda")
BLOCK_SIZES = (16, 32, 64, 128, 256)
INT4_ALGOS = onnx_builder.INT4_ALGOS
DEFAULT_INT4_ALGO = onnx_builder.DEFAULT_INT4_ALGO
LIBRARIES = ("onnxruntime-genai", "onnxruntime", "onnx", "onnx-ir", "torch", "transformers", "peft")


@dataclass(kw_only=True)
class Params:
    """The build_onnx step's parameters: `components/build_onnx.yml`'s inputs and outputs."""

    model: str | None = param(None, asset="uri_folder", help="model folder (Hugging Face format), e.g. the merge output")
    model_id: str | None = param(None, help="hub id of the model, when no folder is given")
    adapter: str | None = param(None, asset="uri_folder", help="PEFT adapter folder: build straight from base + adapter")
    precision: str = param("int4", choices=PRECISIONS, help="weight precision")
    execution_provider: str = param("cpu", choices=PROVIDERS, help="onnxruntime execution provider")
    int4_block_size: int = param(32, choices=BLOCK_SIZES, help="int4 quantization block size")
    int4_accuracy_level: int = param(4, ge=0, le=4, help="MatMulNBits accuracy level")
    int4_algo_config: str = param(DEFAULT_INT4_ALGO, choices=INT4_ALGOS, help=(
        "int4 method; auto re-encodes a base whose weights lie on a 4-bit grid (a GGUF's Q4_1) without loss and "
        "keeps the adapter float, else uses k_quant_mixed"))
    int4_is_symmetric: bool = param(True, help="symmetric int4 quantization")
    extra_options: str | None = param(None, help="comma-separated key=value builder options")
    dataset: str | None = param(None, asset="uri_folder",
                                help="load_data output folder: gate the build on its eval rows' answers")
    reference: str | None = param(None, asset="uri_folder", help=(
        "evaluate output of the source model on the same dataset; its answers are the gates' reference "
        "(else computed here)"))
    check_max_samples: int = param(200, ge=1, help="eval rows the answer gates use")
    check_max_new_tokens: int = param(8, ge=1, help="tokens each answer of the gates may take")
    max_accuracy_drop: float | None = param(None, ge=0, le=1, help=(
        "largest accuracy loss against the source model the build may show (default per precision)"))
    output: str = param(asset="custom_model", output="model", help="onnxruntime-genai model folder to write")


SPEC = StepSpec(
    name="build_onnx", params=Params, display_name="Build ONNX (onnxruntime-genai)",
    version="2",
    description=(
        "Build an onnxruntime-genai model folder with the onnxruntime-genai model builder and check it "
        "against PyTorch (exact logits at fp32; argmax agreement and cosine for int4/int8)."),
    model_kind="onnx",
)


def run(**given) -> dict:
    """Build, check and write the ONNX folder (`given`: Params' names); return the check."""
    p = make(Params, given)
    output, model, model_id, adapter, precision, dataset = p.output, p.model, p.model_id, p.adapter, p.precision, p.dataset
    execution_provider, max_accuracy_drop = p.execution_provider, p.max_accuracy_drop
    from slmforge.models import model_folder, onnx_builder, torch_model

    started = time.perf_counter()
    source = torch_model.base_source(model, model_id)
    adapter_path = torch_model.check_adapter_folder(adapter) if adapter else None
    kind = torch_model.adapter_method(adapter_path) if adapter_path is not None else None
    if kind is not None and not (kind in METHODS and METHODS[kind].builder_reads_adapter):  # the registry's
        raise InvalidInput(f"{adapter_path}: a {kind} adapter; the ONNX builder reads LoRA adapters only: merge "
                           "it first (MergeAdapterWeights) and build the merged model")
    extra = onnx_builder.parse_extra_options(p.extra_options)
    eval_data = read_dataset_folder(dataset, p.check_max_samples) if dataset else None
    if p.reference and not dataset:
        raise InvalidInput("--reference needs --dataset: the reference's answers are to that dataset's eval rows")
    reference_answers = read_reference(p.reference, dataset, eval_data, p.check_max_new_tokens) if p.reference else None

    with manifest.atomic_output(output) as tmp:
        build_started = time.perf_counter()
        builder_options = build_model(source, tmp, precision, execution_provider, p.int4_block_size,
                                      p.int4_accuracy_level, p.int4_algo_config, p.int4_is_symmetric, extra, adapter_path)
        build_seconds = time.perf_counter() - build_started
        check = check_against_pytorch(tmp, source, adapter_path, precision, execution_provider, eval_data=eval_data,
                                      reference_answers=reference_answers, max_accuracy_drop=max_accuracy_drop,
                                      max_new_tokens=p.check_max_new_tokens)
        template = model_folder.carried_template(adapter_path or model) if (adapter_path or model) else None
        params = {"model_id": model_id, "precision": precision, "execution_provider": execution_provider,
                  "int4_block_size": p.int4_block_size, "int4_accuracy_level": p.int4_accuracy_level,
                  "int4_algo_config": p.int4_algo_config, "int4_is_symmetric": p.int4_is_symmetric,
                  "extra_options": extra, "check_max_samples": p.check_max_samples,
                  "check_max_new_tokens": p.check_max_new_tokens,
                  "max_accuracy_drop": max_accuracy_drop}
        if template:
            params["text_template"] = template
        manifest.write_manifest(
            tmp, step=STEP, params=params,
            inputs={"model": model, "adapter": adapter_path, "dataset": dataset, "reference": p.reference},
            metrics={"check": check, "size_bytes": folder_size(tmp), "builder_options": builder_options,
                     "build_seconds": round(build_seconds, 3)},
            seconds=time.perf_counter() - started, libraries=LIBRARIES,
        )
    summary = (f"max abs logit difference {check['max_abs_diff']:.3g} (bound {check['bound']:.3g})"
               if precision == "fp32" else f"logit cosine {check['cosine_mean']:.4f}")
    answers = check.get("answers")
    if answers:
        summary += (f"; on {answers['rows']} eval rows: answers agree {answers['answer_agreement']:.3f}, "
                    f"accuracy {answers['accuracy']:.3f} vs {answers['reference_accuracy']:.3f}")
    print(f"built {precision} onnxruntime-genai model -> {output}; {summary}")
    return check


def build_model(source: str, out: Path, precision: str, execution_provider: str, block_size: int,
                accuracy_level: int, algo_config: str, is_symmetric: bool, extra: dict, adapter: Path | None) -> dict:
    """Build `out`; return how. int4 of a base whose weights already lie on a 4-bit grid (a GGUF's
    Q4_1) re-encodes them without loss (exact_quant.py); anything else goes to the builder's method."""
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


def read_reference(reference: str, dataset: str, eval_data, max_new_tokens: int) -> dict:
    """The source model's answers to the gates' eval rows, from its evaluate step's metrics.json.

    Only an evaluation of this very dataset (by digest), answering at least those rows with the
    gates' answer length, stands in for answering them again here."""
    import json

    from slmforge.models.evaluation import expected_answer

    rows, _, template = eval_data
    folder = Path(reference)
    found = manifest.read_manifest(folder)
    try:
        metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        metrics = None
    if found is None or not isinstance(metrics, dict) or not isinstance(metrics.get("predictions"), list) \
            or not isinstance(metrics.get("first_answer_tokens"), list):
        raise InvalidInput(f"--reference {folder}: not an evaluate output (no metrics.json with predictions)")
    evaluated = ((found.get("inputs") or {}).get("dataset") or {}).get("digest")
    if evaluated != manifest.digest_path(Path(dataset)):
        raise InvalidInput(f"--reference {folder}: it evaluated another dataset than --dataset {dataset}")
    if metrics.get("max_new_tokens") != max_new_tokens or len(metrics["predictions"]) < len(rows):
        raise InvalidInput(f"--reference {folder}: it answered {len(metrics['predictions'])} rows with "
                           f"{metrics.get('max_new_tokens')} new tokens; the gates need {len(rows)} with {max_new_tokens}")
    predictions = metrics["predictions"][:len(rows)]
    correct = sum(predicted == expected_answer(row, template) for predicted, row in zip(predictions, rows))
    return {"predictions": predictions, "first_answer_tokens": metrics["first_answer_tokens"][:len(rows)],
            "accuracy": round(correct / len(rows), 6) if rows else None}


def check_against_pytorch(folder: Path, source: str, adapter: Path | None, precision: str,
                          execution_provider: str, *, eval_data=None, reference_answers: dict | None = None,
                          max_accuracy_drop: float | None = None, max_new_tokens: int = 8) -> dict:
    """Compare the built model with the PyTorch model it came from; StepFailed when it falls short.

    Always, on fixed prompts at every position (logit_check.py): fp32 within a rounding bound that
    scales with the logits and the depth; other precisions a sanity floor on the logit cosine that
    a mis-wired head or a broken layer cannot reach. With eval rows (`eval_data`): the built model's
    greedy answers against the source model's, and the accuracy it loses (logit_check.ANSWER_GATES).
    """
    from slmforge.models import genai, logit_check, torch_model

    reference_model = torch_model.TorchBackend(source, adapter=adapter)
    token_ids = [reference_model.encode(p) for p in logit_check.CHECK_PROMPTS]
    reference = torch_model.all_logits(reference_model.model, token_ids)
    layers = int(getattr(reference_model.model.config, "num_hidden_layers", 1))
    if eval_data and reference_answers is None:
        reference_answers = _answers(reference_model, eval_data, max_new_tokens)
    del reference_model

    try:
        onnx_model = genai.PlainOrtModel(folder, execution_provider)
        candidate = [onnx_model.logits(ids) for ids in token_ids]
    except SlmforgeError:
        raise
    except Exception as e:  # onnxruntime rejects an invalid graph with its own exception types
        raise StepFailed(f"the built model.onnx does not run in onnxruntime: {e}") from e
    result = logit_check.compare(reference, candidate)

    og_model = genai.GenaiModel(folder)
    tokenizer_matches = sum(og_model.encode(p) == ids for p, ids in zip(logit_check.CHECK_PROMPTS, token_ids))

    check = {**result.as_dict(), "precision": precision, "prompts": len(token_ids),
             "tokenizer_matches": tokenizer_matches, "layers": layers}
    problems = logit_check.failures(result, precision, reference, layers)
    if precision == "fp32":
        check["bound"] = logit_check.fp32_bound(reference, layers)
    else:
        check["bounds"] = {**logit_check.THRESHOLDS[precision], "min_decisive_positions": logit_check.MIN_DECISIVE,
                           "decisive_margin_std": logit_check.DECISIVE_MARGIN}
        check["argmax_gated"] = result.decisive_positions >= logit_check.MIN_DECISIVE
    if tokenizer_matches != len(token_ids):
        problems.append(f"onnxruntime-genai's tokenizer gives the Hugging Face token ids for only "
                        f"{tokenizer_matches}/{len(token_ids)} check prompts")
    if reference_answers is not None and not problems:
        gate = logit_check.ANSWER_GATES[precision]
        if max_accuracy_drop is not None:
            # The user's own bound on what the build may lose replaces the agreement gates: answers
            # that differ but are as often right are then fine. The logit checks still catch a broken graph.
            gate = dataclasses.replace(gate, max_accuracy_drop=max_accuracy_drop, min_answer_agreement=0.0,
                                       min_first_token_agreement=0.0)
        answers = logit_check.answer_comparison(reference_answers, _answers(og_model, eval_data, max_new_tokens))
        check["answers"] = {**answers, "gate": dataclasses.asdict(gate)}
        answer_problems = logit_check.answer_failures(answers, gate)
        if answer_problems:
            answer_problems[-1] += (" (to ship it anyway, set max_accuracy_drop: the accuracy loss you accept "
                                    "then replaces the agreement gates; int8 or another int4_algo_config may keep more)")
        problems += answer_problems
    if problems:
        raise StepFailed(f"the {precision} ONNX model does not match its source: " + "; ".join(problems))
    return check


def _answers(backend, eval_data, max_new_tokens: int) -> dict:
    from slmforge.models import evaluation

    rows, examples, template = eval_data
    return evaluation.evaluate(backend, rows, template, examples=[], max_new_tokens=max_new_tokens, label="check")


def main(argv: list[str] | None = None) -> int:
    return run_step(STEP, Params, argv, lambda values: run(**values), __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
