"""Rows into (input_ids, labels) examples, and the tokenizer's content digest.

A template row is tokenized as two pieces, prompt (with the tokenizer's special tokens, e.g. `<s>`) and
completion (the template's last placeholder and what follows it), then EOS. Tokenizing the pieces apart
makes the prompt/answer boundary exact (`loss_on: completion` masks exactly the prompt tokens) and matches
what the model sees at inference, where it is given the prompt alone. A chat row is rendered with the
tokenizer's chat template and learned on its assistant turns (chat_rows.py).
"""

from __future__ import annotations

import hashlib
import json

from slmforge.data import IGNORE, chat_rows
from slmforge.data.template import Template

LOSS_ON = ("all", "completion")


def tokenize_rows(tok, template: Template, rows: list[dict], loss_on: str) -> list[tuple[list[int], list[int]]]:
    """(input_ids, labels) per row: prompt + completion + EOS; with `completion` the prompt is masked."""
    if not rows:
        return []
    prompts = tok([template.prompt(r) for r in rows], add_special_tokens=True)["input_ids"]
    answers = tok([template.completion(r) for r in rows], add_special_tokens=False)["input_ids"]
    eos = tok.eos_token_id
    out = []
    for p, a in zip(prompts, answers):
        ids = list(p) + list(a) + [eos]
        labels = ([IGNORE] * len(p) if loss_on == "completion" else list(p)) + list(a) + [eos]
        out.append((ids, labels))
    return out


def tokenize(tok, template: Template, rows: list[dict], loss_on: str, chat: bool) -> list[tuple[list[int], list[int]]]:
    """(input_ids, labels) per row: chat rows (`messages`) through the chat template, others through `template`."""
    if chat:
        return [chat_rows.tokenize_conversation(tok, r[chat_rows.COLUMN], IGNORE, loss_on_all=loss_on == "all")
                for r in rows]
    return tokenize_rows(tok, template, rows, loss_on)


def pad_token_id(tok) -> int:
    """The id padding uses: the tokenizer's pad token, else its EOS."""
    return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id


def tokenizer_digest(tok) -> str:
    """Content digest of the tokenizer itself (vocabulary, merges, special tokens), not of its path."""
    backend = getattr(tok, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(tok.get_vocab(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()
