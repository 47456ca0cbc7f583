"""Tokenized examples into training sequences: packed into blocks (`join`) or one per example
(`line-by-line`), padded on request; with the counts the load_data manifest reports."""

from __future__ import annotations

from dataclasses import dataclass

from slmforge.data import IGNORE


@dataclass
class Sequences:
    """Tokenized training sequences and their counts."""

    records: list[dict[str, list[int]]]
    tokens: int = 0  # non-pad tokens
    label_tokens: int = 0  # tokens the loss is computed on
    pad_tokens: int = 0
    truncated: int = 0  # line-by-line examples cut to source_max_len
    dropped: int = 0  # examples left with no label token after truncation


def join(examples: list[tuple[list[int], list[int]]], block: int) -> Sequences:
    """Concatenate every example and cut the stream into `block`-token sequences: no padding.

    Labels travel with their tokens, so completion masking survives packing. The last, shorter
    block is kept rather than padded or dropped.
    """
    ids = [t for e in examples for t in e[0]]
    labels = [t for e in examples for t in e[1]]
    s = Sequences([])
    for i in range(0, len(ids), block):
        r = {"input_ids": ids[i:i + block], "labels": labels[i:i + block]}
        if any(x != IGNORE for x in r["labels"][1:]):
            s.records.append(r)
        else:
            s.dropped += 1  # a block of prompt tokens only: nothing to learn
    return count(s)


def line_by_line(examples: list[tuple[list[int], list[int]]], max_len: int) -> Sequences:
    """One sequence per example, cut to `max_len`; one left with nothing to learn is dropped."""
    s = Sequences([])
    for ids, labels in examples:
        if len(ids) > max_len:
            s.truncated += 1
            ids, labels = ids[:max_len], labels[:max_len]
        if all(x == IGNORE for x in labels[1:]):
            s.dropped += 1
            continue
        s.records.append({"input_ids": ids, "labels": labels})
    return count(s)


def pad(s: Sequences, length: int, pad_id: int) -> None:
    """`pad_to_max_len`: pad every sequence to `length` (masked out of attention and loss)."""
    for r in s.records:
        n = length - len(r["input_ids"])
        r["attention_mask"] = [1] * len(r["input_ids"]) + [0] * n
        r["input_ids"] = r["input_ids"] + [pad_id] * n
        r["labels"] = r["labels"] + [IGNORE] * n
        s.pad_tokens += n


def count(s: Sequences) -> Sequences:
    s.tokens = sum(len(r["input_ids"]) for r in s.records)
    s.label_tokens = sum(sum(1 for x in r["labels"][1:] if x != IGNORE) for r in s.records)
    return s
