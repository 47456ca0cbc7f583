"""Evaluate a model on label-style rows: accuracy by greedy generation, confusion, perplexity, speed.

The same code runs a Hugging Face folder (transformers) and an onnxruntime-genai folder (backend.py),
so a run can show base -> merged -> int4 side by side. The metrics are metrics.json's shape
(contract/folders.py writes it; metrics_table.py prints it); rows and answers are answers.py's.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from pathlib import Path

from slmforge.contract.files import folder_size
from slmforge.data import IGNORE
from slmforge.data.template import Template
from slmforge.models.answers import answer_finished, answer_of, encode_row, expected_answer, template_suffix

OTHER = "(other)"


def evaluate(backend, rows: list[dict], template: Template, *, examples: list[tuple[list[int], list[int]]],
             max_new_tokens: int = 8, label: str = "model", model_dir: str | Path | None = None,
             recorded=None, answered=None) -> dict:
    """Metrics in the agreed metrics.json shape (plus a few extra fields, per-row predictions among them).

    All rows are answered at once by the backend's batched greedy decoding (verified_greedy.py);
    perplexity reuses the log-probabilities seen on the way and scores only what is left.
    `recorded` (a gate_answers.Recorded): the answers a build gate gave to these very requests, taken
    instead of answering again when they match (`answers_from` says so; generation_seconds and
    tokens_per_second are then the gate's). `answered` (a gate_answers.Answered): filled with the
    answered requests and their seconds (the build gate records them).
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
    reused = recorded is not None and recorded.fill(requests)
    if requests and not reused:
        backend.answers(requests, max_new_tokens)
    answer_seconds = recorded.seconds if reused else time.perf_counter() - started
    if answered is not None:
        answered.requests, answered.seconds = requests, answer_seconds
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
        "example": example_input(rows[0], template) if rows else None,
        **({"answers_from": recorded.source} if reused else {}),
    }


def example_input(row: dict, template: Template) -> dict:
    """One evaluated row as `slmforge predict` takes it (the run summary's "try it"): the text of the
    template's one input field, else a JSON object of its input fields; with the answer expected."""
    import json

    inputs = [f for f in dict.fromkeys(template.fields) if f != template.answer_field]
    text = str(row[inputs[0]]) if len(inputs) == 1 else json.dumps({f: row[f] for f in inputs}, ensure_ascii=False)
    return {"text": text, "expected": expected_answer(row, template)}


def adapter_record(adapter) -> dict:
    """What metrics.json says about the separate adapter (an onnx_adapter.AdapterFile) that answered:
    its name, file, sha256 and size, how it was trained, and the base it was made for."""
    from slmforge.contract.manifest import digest_file

    meta = adapter.meta
    return {"name": adapter.name, "file": adapter.path.name, "sha256": digest_file(adapter.path),
            "size_bytes": adapter.path.stat().st_size, "method": meta.get("method"), "rank": meta.get("rank"),
            "base_digest": (meta.get("base") or {}).get("digest")}


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
