"""Evaluate a model on label-style rows: accuracy by greedy generation, confusion, perplexity, speed.

The same code runs a Hugging Face folder (transformers) and an onnxruntime-genai folder, so a
run can show base -> merged -> int4 side by side. Backends share one small contract:
`encode(text)`, `generate(prompt, max_new_tokens, stop) -> (text, n_tokens)`,
`nll(ids, labels) -> (sum, count)`, `eos_token_id`, `kind`.
An ONNX folder is evaluated without importing torch.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable

from slmforge.errors import InvalidInput
from slmforge.model_folder import is_onnx_folder, size_on_disk
from slmforge.template import Template


OTHER = "(other)"


def load_backend(model: str | Path | None, model_id: str | None):
    """GenaiModel for an onnxruntime-genai folder, TorchBackend for anything else."""
    if model and not Path(model).is_dir():
        raise InvalidInput(f"{model}: no such model folder")
    if model and is_onnx_folder(model):
        from slmforge.genai import GenaiModel

        return GenaiModel(model)
    from slmforge.torch_model import TorchBackend, base_source

    return TorchBackend(base_source(model, model_id))


def check_rows(rows: list[dict], template: Template, where: str) -> None:
    for i, row in enumerate(rows, 1):
        missing = [f for f in template.fields if f not in row]
        if missing:
            raise InvalidInput(f"{where}: row {i} has no column {missing[0]!r} (the template uses "
                               f"{', '.join(template.fields)})")


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
        prompt_ids = backend.encode(template.prompt(row))
        answer_ids = backend.encode(template.completion(row), special=False) + [backend.eos_token_id]
        out.append((prompt_ids + answer_ids, [-100] * len(prompt_ids) + answer_ids))
    return out


def evaluate(backend, rows: list[dict], template: Template, *, examples: list[tuple[list[int], list[int]]],
             max_new_tokens: int = 8, label: str = "model", model_dir: str | Path | None = None) -> dict:
    """Metrics in the agreed metrics.json shape (plus a few extra fields)."""
    field = template.answer_field
    classes = {str(r[field]).strip() for r in rows}
    samples: list[dict] = []
    confusion: dict[str, dict[str, int]] = {}
    correct = generated_tokens = 0
    gen_seconds = 0.0
    for row in rows:
        suffix = template_suffix(template, row)
        started = time.perf_counter()
        text, count = backend.generate(template.prompt(row), max_new_tokens, answer_finished(suffix))
        gen_seconds += time.perf_counter() - started
        generated_tokens += count
        truth, predicted = str(row[field]).strip(), answer_of(text, suffix)
        correct += predicted == truth
        # Free text outside the label set is one column: a confusion table is over classes.
        shown = predicted if predicted in classes else OTHER
        if len(samples) < 5:
            samples.append({"expected": truth, "generated": text[:80]})
        confusion.setdefault(truth, {}).setdefault(shown, 0)
        confusion[truth][shown] += 1

    nll_sum, nll_count = 0.0, 0
    ppl_started = time.perf_counter()
    for ids, labels in examples:
        s, c = backend.nll(ids, labels)
        nll_sum, nll_count = nll_sum + s, nll_count + c
    truths = Counter(str(r[field]).strip() for r in rows)
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
        "perplexity_seconds": round(time.perf_counter() - ppl_started, 3),
        "tokens_per_second": round(generated_tokens / gen_seconds, 2) if gen_seconds > 0 else None,
        "generated_tokens": generated_tokens,
        "generation_seconds": round(gen_seconds, 3),
        "samples": samples,
        "size_bytes": size_on_disk(model_dir) if model_dir else None,
        "answer_field": field,
        "max_new_tokens": max_new_tokens,
    }


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
