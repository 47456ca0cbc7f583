"""Tokenized examples into training sequences: packed into blocks (`join`) or one per example
(`line-by-line`), padded on request; with the counts the load_data manifest reports."""

from __future__ import annotations

from dataclasses import dataclass

from slmforge.data import IGNORE
from slmforge.errors import InvalidInput

STRATEGIES = ("join", "line-by-line")


@dataclass
class Sequences:
    """Tokenized training sequences and their counts."""

    records: list[dict[str, list[int]]]
    tokens: int = 0  # non-pad tokens
    label_tokens: int = 0  # tokens the loss is computed on
    pad_tokens: int = 0
    truncated: int = 0  # line-by-line examples cut to max_seq_len
    dropped: int = 0  # examples left with no label token after truncation


def pack(examples: list[tuple[list[int], list[int]]], strategy: str, max_len: int,
         pad_id: int | None = None) -> Sequences:
    """`strategy` (join or line-by-line) over the examples; with a `pad_id`, every sequence padded to `max_len`."""
    s = join(examples, max_len) if strategy == "join" else line_by_line(examples, max_len)
    if pad_id is not None:
        pad(s, max_len, pad_id)
    return s


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


MAX_CUT_SHARE = 0.10  # line-by-line rows longer than max_seq_len: past this share a run is refused


def cut_rows(lengths: list[int], max_len: int) -> str | None:
    """Line-by-line: a row longer than `max_len` tokens loses its end, which is its answer and EOS (the whole
    answer gone: the row is dropped). None when every row fits; a note naming how many did not; past
    MAX_CUT_SHARE of the rows an InvalidInput naming the count, the longest row and the setting to raise."""
    cut = sum(1 for n in lengths if n > max_len)
    if not cut:
        return None
    text = cut_text(cut, len(lengths), max_len, max(lengths))
    if cut > MAX_CUT_SHARE * len(lengths):
        raise InvalidInput(f"{text}, more than {MAX_CUT_SHARE:.0%} of the rows: raise max_seq_len "
                           f"(source_max_len in older recipes) to {max(lengths)} to keep every answer")
    return text


def cut_text(cut: int, rows: int, max_len: int, longest: int) -> str:
    return (f"{cut} of {rows} rows ({100 * cut / rows:.1f} %) are longer than max_seq_len {max_len} tokens "
            f"(the longest: {longest} tokens), so their answers are cut off")
