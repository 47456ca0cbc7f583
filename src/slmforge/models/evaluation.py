"""Evaluate a model on label-style rows: accuracy by greedy generation, confusion, perplexity, speed.

The same code runs a Hugging Face folder (transformers) and an onnxruntime-genai folder, so a
run can show base -> merged -> int4 side by side. Backends share one small contract:
`encode(text, special)`, `decode(tokens)`, `answers(requests, max_new_tokens)` (batched greedy
answers, verified_greedy.py), `score(requests)` (teacher-forced log-probabilities),
`generate(prompt, max_new_tokens, stop)` (one prompt at a time: predict, chat), `eos_token_id(s)`, `kind`.
An ONNX folder is evaluated without importing torch.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable

from slmforge.contract import manifest
from slmforge.contract.files import folder_size
from slmforge.data import IGNORE
from slmforge.data.template import Template
from slmforge.errors import InvalidInput
from slmforge.models.model_folder import is_onnx_folder

OTHER = "(other)"


def load_backend(model: str | Path | None, model_id: str | None):
    """GenaiModel for an onnxruntime-genai folder, TorchBackend for anything else."""
    if model and not Path(model).is_dir():
        raise InvalidInput(f"{model}: no such model folder")
    if model and is_onnx_folder(model):
        from slmforge.models.genai import GenaiModel

        return GenaiModel(model)
    from slmforge.models.torch_model import TorchBackend, base_source

    return TorchBackend(base_source(model, model_id))


def check_rows(rows: list[dict], template: Template, where: str) -> None:
    for i, row in enumerate(rows, 1):
        missing = [f for f in template.fields if f not in row]
        if missing:
            raise InvalidInput(f"{where}: row {i} has no column {missing[0]!r} (the template uses "
                               f"{', '.join(template.fields)})")


def expected_answer(row: dict, template: Template) -> str:
    """The row's right answer, as a prediction is compared with it."""
    return str(row[template.answer_field]).strip()


def answer_of(generated: str, suffix: str = "") -> str:
    """The predicted answer: the text before the template's suffix, first non-empty line, stripped."""
    marker = suffix.strip()
    if marker and marker in generated:
        generated = generated[: generated.index(marker)]
    for line in generated.splitlines():
        if line.strip():
            return line.strip()
    return ""


def answer_finished(suffix: str = "") -> Callable[[str], bool]:
    """Stop rule for generation: a newline after some answer text, or the template's suffix."""
    marker = suffix.strip()

    def stop(text: str) -> bool:
        if marker and marker in text:
            return True
        stripped = text.lstrip()
        return "\n" in stripped
    return stop


def template_suffix(template: Template, row: dict) -> str:
    """What the template puts after the answer (often nothing), rendered for `row`."""
    return template.completion(row)[len(str(row[template.answer_field])):]


def examples_from_rows(backend, rows: Iterable[dict], template: Template) -> list[tuple[list[int], list[int]]]:
    """(input_ids, labels) scoring completion + EOS, tokenized the way load_data does it."""
    out = []
    for row in rows:
        prompt_ids, answer_ids = encode_row(backend, template, row)
        out.append((prompt_ids + answer_ids, [IGNORE] * len(prompt_ids) + answer_ids))
    return out


def encode_row(backend, template: Template, row: dict) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids + EOS), tokenized the way load_data does it."""
    prompt = backend.encode(template.prompt(row))
    return prompt, backend.encode(template.completion(row), special=False) + [backend.eos_token_id]


def evaluate(backend, rows: list[dict], template: Template, *, examples: list[tuple[list[int], list[int]]],
             max_new_tokens: int = 8, label: str = "model", model_dir: str | Path | None = None) -> dict:
    """Metrics in the agreed metrics.json shape (plus a few extra fields, per-row predictions among them).

    All rows are answered at once by the backend's batched greedy decoding (verified_greedy.py);
    perplexity reuses the log-probabilities seen on the way and scores only what is left.
    """
    from slmforge.models.verified_greedy import Request

    field = template.answer_field
    started = time.perf_counter()
    requests = []
    for row in rows:
        prompt, expected = encode_row(backend, template, row)
        requests.append(Request(prompt, expected, answer_finished(template_suffix(template, row))))
    by_sequence = {r.sequence: r for r in requests}  # an example that is a row's own prompt + answer
    for ids, labels in examples:  # the perplexity's positions of a row's own sequence: scored on the way
        request = by_sequence.get(tuple(ids))
        if request is not None:
            request.score_also = tuple(_labelled_positions(labels))
    if requests:
        backend.answers(requests, max_new_tokens)
    answer_seconds = time.perf_counter() - started
    nll_sum, nll_count = _perplexity_sums(backend, by_sequence, examples)

    classes = {expected_answer(r, template) for r in rows}
    samples: list[dict] = []
    predictions: list[str] = []
    confusion: dict[str, dict[str, int]] = {}
    correct = 0
    for row, request in zip(rows, requests):
        text = backend.decode(request.tokens)
        truth, predicted = expected_answer(row, template), answer_of(text, template_suffix(template, row))
        predictions.append(predicted)
        correct += predicted == truth
        # Free text outside the label set is one column: a confusion table is over classes.
        shown = predicted if predicted in classes else OTHER
        if len(samples) < 5:
            samples.append({"expected": truth, "generated": text[:80]})
        confusion.setdefault(truth, {}).setdefault(shown, 0)
        confusion[truth][shown] += 1

    seconds = time.perf_counter() - started
    generated_tokens = sum(len(r.tokens) for r in requests)
    truths = Counter(expected_answer(r, template) for r in rows)
    return {
        "label": label,
        "model_kind": backend.kind,
        "accuracy": round(correct / len(rows), 6) if rows else None,
        "n": len(rows),
        "correct": correct,
        "majority_baseline": round(truths.most_common(1)[0][1] / len(rows), 6) if rows else None,
        "confusion": confusion,
        "perplexity": round(math.exp(nll_sum / nll_count), 6) if nll_count else None,
        "perplexity_tokens": nll_count,
        # Answer tokens per second of answering (all rows batched; prompt processing included, and for
        # a teacher-forced backend the perplexity positions it scores in the same pass).
        "tokens_per_second": round(generated_tokens / answer_seconds, 2) if answer_seconds > 0 else None,
        "generated_tokens": generated_tokens,
        "generation_seconds": round(answer_seconds, 3),
        "evaluation_seconds": round(seconds, 3),
        "rows_off_expected_answer": sum(r.continued for r in requests),
        "samples": samples,
        "predictions": predictions,
        "first_answer_tokens": [r.tokens[0] if r.tokens else None for r in requests],
        "size_bytes": folder_size(model_dir) if model_dir else None,
        "answer_field": field,
        "max_new_tokens": max_new_tokens,
    }


def _perplexity_sums(backend, known: dict, examples: list[tuple[list[int], list[int]]]) -> tuple[float, int]:
    """(summed NLL, token count) over the examples' labelled tokens.

    An example that is a row's prompt + expected answer reuses the log-probabilities the answering
    pass saw (its answer positions, and with a teacher-forced pass every position it was asked
    for); everything else is scored in one batched pass."""
    from slmforge.models.verified_greedy import score_positions

    def seen(request, p: int) -> float | None:
        k = p - (len(request.prompt) - 1)
        return request.logprobs.get(k) if k >= 0 and k in request.logprobs else request.scored.get(p)

    total, count = 0.0, 0
    missing: dict[tuple[int, ...], set[int]] = {}
    needed: list[tuple[tuple[int, ...], list[int]]] = []
    for ids, labels in examples:
        key = tuple(ids)
        positions = _labelled_positions(labels)
        needed.append((key, positions))
        request = known.get(key)
        if request is None or any(seen(request, p) is None for p in positions):
            missing.setdefault(key, set()).update(positions)
    scored = score_positions(backend, missing) if missing else {}
    for key, positions in needed:
        for p in positions:
            total -= scored[key][p] if key in scored else seen(known[key], p)
            count += 1
    return total, count


def _labelled_positions(labels: list[int]) -> list[int]:
    """The positions whose next token carries a label (position p predicts token p + 1)."""
    return [p for p in range(len(labels) - 1) if labels[p + 1] != IGNORE]


def read_jsonl(path: Path, limit: int | None = None) -> list[dict]:
    """JSON objects, one a line (blank lines skipped), at most `limit`."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise InvalidInput(f"{path}: line {number} is not JSON: {e.msg}") from e
            if not isinstance(row, dict):
                raise InvalidInput(f"{path}: line {number} is not a JSON object")
            rows.append(row)
            if limit is not None and len(rows) >= limit:
                break
    return rows


def format_table(metrics: dict) -> str:
    """A human summary: headline figures and the confusion table."""
    def fmt(v, spec):
        return "n/a" if v is None else format(v, spec)
    lines = [
        f"{metrics['label']} ({metrics['model_kind']}): accuracy {fmt(metrics['accuracy'], '.3f')} "
        f"on {metrics['n']} rows (majority class {fmt(metrics['majority_baseline'], '.3f')}), "
        f"perplexity {fmt(metrics['perplexity'], '.3f')}, {fmt(metrics['tokens_per_second'], '.0f')} tokens/s, "
        f"size {fmt(metrics['size_bytes'], ',')} bytes",
    ]
    confusion = metrics["confusion"]
    if confusion:
        predicted = sorted({p for row in confusion.values() for p in row})
        corner = "true \\ predicted"
        first = max(len(corner), *(len(t) for t in confusion)) + 2
        width = max(6, *(len(p) for p in predicted)) + 2
        lines.append(corner.ljust(first) + "".join(p.rjust(width) for p in predicted))
        for truth in sorted(confusion):
            lines.append(truth.ljust(first) + "".join(str(confusion[truth].get(p, 0)).rjust(width)
                                                      for p in predicted))
    return "\n".join(lines)


def read_dataset_folder(dataset: str | Path, max_samples: int):
    """(eval rows, perplexity examples, template) from a load_data output folder, first max_samples each."""
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
