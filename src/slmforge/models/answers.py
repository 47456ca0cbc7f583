"""A row under a template: its prompt and expected answer as token ids, and the answer a generation gave.

Shared by evaluation, the ONNX build's answer gates, Olive's metrics and `slmforge predict`, so every
one of them reads an answer the same way.
"""

from __future__ import annotations

from typing import Callable, Iterable

from slmforge.data import IGNORE
from slmforge.data.template import Template


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
