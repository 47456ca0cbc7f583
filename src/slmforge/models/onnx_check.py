"""Does a built onnxruntime-genai model match the PyTorch model it came from (the build_onnx step's check).

On fixed prompts at every position, through plain onnxruntime (logit_check.py has the bounds and why):
fp32 within a rounding bound, other precisions a floor on the logit cosine and argmax agreement; the
og tokenizer must give the Hugging Face ids. With eval rows, the built model's greedy answers are gated
against the source model's (logit_check.ANSWER_GATES), or against the answers an evaluate output of the
source model already holds (`read_reference`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from slmforge.contract import folders
from slmforge.errors import InvalidInput, SlmforgeError, StepFailed
from slmforge.models.answers import expected_answer


def read_reference(reference: str, dataset: str, eval_data, max_new_tokens: int) -> dict:
    """The source model's answers to the gates' eval rows, from its evaluate step's metrics.json.

    Only an evaluation of this dataset's eval part (rows, sequences, template: by digest; the training rows
    may differ), answering at least those rows with the gates' answer length, stands in for answering them
    again here."""
    rows, _, template = eval_data
    folder = Path(reference)
    found = folders.find_evaluation(folder)
    metrics = found.metrics if found is not None else {}
    if not isinstance(metrics.get("predictions"), list) or not isinstance(metrics.get("first_answer_tokens"), list):
        raise InvalidInput(f"--reference {folder}: not an evaluate output (no metrics.json with predictions)")
    if not found.evaluated(folders.open_dataset(dataset)):
        raise InvalidInput(f"--reference {folder}: it evaluated another dataset (other eval rows or template) "
                           f"than --dataset {dataset}")
    if metrics.get("max_new_tokens") != max_new_tokens or len(metrics["predictions"]) < len(rows):
        raise InvalidInput(f"--reference {folder}: it answered {len(metrics['predictions'])} rows with "
                           f"{metrics.get('max_new_tokens')} new tokens; the gates need {len(rows)} with {max_new_tokens}")
    predictions = metrics["predictions"][:len(rows)]
    correct = sum(predicted == expected_answer(row, template) for predicted, row in zip(predictions, rows))
    return {"predictions": predictions, "first_answer_tokens": metrics["first_answer_tokens"][:len(rows)],
            "accuracy": round(correct / len(rows), 6) if rows else None}


def check_against_pytorch(folder: Path, source: str, adapter: Path | None, precision: str,
                          execution_provider: str, *, eval_data=None, reference_answers: dict | None = None,
                          max_accuracy_drop: float | None = None, max_new_tokens: int = 8,
                          onnx_adapter: Path | None = None, answered=None) -> dict:
    """Compare the built model with the PyTorch model it came from; StepFailed when it falls short.

    Always, on fixed prompts at every position (logit_check.py): fp32 within a multiple of the
    PyTorch model's own float32 rounding (measured against float64); other precisions a sanity floor
    on the logit cosine that a mis-wired head or a broken layer cannot reach. With eval rows (`eval_data`): the built model's
    greedy answers against the source model's, and the accuracy it loses (logit_check.ANSWER_GATES).
    `onnx_adapter`: `folder` is a base with adapter slots and this file the adapter served on it; the
    gates are the same (the study behind it: docs/research/issue-22).
    `answered` (a gate_answers.Answered): filled with the built model's answers to the eval rows.
    """
    from slmforge.models import genai, logit_check, torch_model
    from slmforge.models import onnx_adapter as adapter_file

    reference_model = torch_model.TorchBackend(source, adapter=adapter)
    token_ids = [reference_model.encode(p) for p in logit_check.CHECK_PROMPTS]
    reference = torch_model.all_logits(reference_model.model, token_ids)
    layers = int(getattr(reference_model.model.config, "num_hidden_layers", 1))
    if eval_data and reference_answers is None:
        reference_answers = _answers(reference_model, eval_data, max_new_tokens)
    del reference_model
    # fp32: the bound is a multiple of the PyTorch model's own float32 rounding (against float64),
    # loaded once the float32 model is gone (float64 weights take twice its memory).
    reference64 = torch_model.float64_logits(source, adapter, token_ids) if precision == "fp32" else None

    try:
        served = adapter_file.open_file(onnx_adapter) if onnx_adapter is not None else None
        onnx_model = genai.PlainOrtModel(folder, execution_provider, adapter=served)
        candidate = [onnx_model.logits(ids) for ids in token_ids]
    except SlmforgeError:
        raise
    except Exception as e:  # onnxruntime rejects an invalid graph with its own exception types
        raise StepFailed(f"the built model.onnx does not run in onnxruntime: {e}") from e
    result = logit_check.compare(reference, candidate)

    og_model = genai.GenaiModel(folder, adapters=[onnx_adapter] if onnx_adapter is not None else [])
    tokenizer_matches = sum(og_model.encode(p) == ids for p, ids in zip(logit_check.CHECK_PROMPTS, token_ids))

    check = {**result.as_dict(), "precision": precision, "prompts": len(token_ids),
             "tokenizer_matches": tokenizer_matches, "layers": layers}
    if precision == "fp32":
        check["reference_rounding"] = logit_check.rounding_scale(reference, reference64)
        check["bound"] = logit_check.fp32_bound(reference, check["reference_rounding"])
        problems = logit_check.fp32_failures(result, check["bound"], check["reference_rounding"])
    else:
        problems = logit_check.failures(result, precision)
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
        answers = logit_check.answer_comparison(reference_answers,
                                                _answers(og_model, eval_data, max_new_tokens, answered))
        check["answers"] = {**answers, "gate": dataclasses.asdict(gate)}
        answer_problems = logit_check.answer_failures(answers, gate)
        if answer_problems:
            answer_problems[-1] += (" (to ship it anyway, set max_accuracy_drop: the accuracy loss you accept "
                                    "then replaces the agreement gates; int8 or another int4_algo_config may keep more)")
        problems += answer_problems
    if problems:
        what = "adapter on its base" if onnx_adapter is not None else "model"
        raise StepFailed(f"the {precision} ONNX {what} does not match its source: " + "; ".join(problems))
    return check


def summary(check: dict, precision: str) -> str:
    """The check in one line, for the step's log."""
    text = (f"max abs logit difference {check['max_abs_diff']:.3g} (bound {check['bound']:.3g})"
            if precision == "fp32" else f"logit cosine {check['cosine_mean']:.4f}")
    answers = check.get("answers")
    if answers:
        text += (f"; on {answers['rows']} eval rows: answers agree {answers['answer_agreement']:.3f}, "
                 f"accuracy {answers['accuracy']:.3f} vs {answers['reference_accuracy']:.3f}")
    return text


def _answers(backend, eval_data, max_new_tokens: int, answered=None) -> dict:
    from slmforge.models.evaluation import evaluate

    rows, examples, template = eval_data
    return evaluate(backend, rows, template, examples=[], max_new_tokens=max_new_tokens, label="check",
                    answered=answered)
