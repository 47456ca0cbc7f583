"""The tokenized dataset folder, the order examples are trained in, and padding-free batches.

Batches are packed, not padded: the examples of one micro-batch are laid into rows (first-fit
decreasing), and each example restarts its `position_ids` at 0. With no attention mask,
transformers reads those restarts as sequence boundaries and masks attention block-diagonally,
so a packed batch computes the same loss as the padded one — the same examples, the same
per-token losses — without spending compute on pad tokens. The row width is a small multiple of
the longest example, chosen by a cost model: wider rows waste less on padding but make the
(dense, masked) attention dearer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from slmforge.contract import folders
from slmforge.data import IGNORE
from slmforge.errors import InvalidInput

Example = tuple[list[int], list[int]]  # (input_ids, labels), padding stripped


@dataclass
class DatasetFolder:
    train: list[Example]
    eval: list[Example]
    pad_token_id: int
    manifest: dict


def read_dataset(folder: str | Path) -> DatasetFolder:
    """The train and eval examples of a load_data output folder, trailing padding removed."""
    dataset = folders.open_dataset(folder)
    pad = dataset.pad_token_id
    train, held = ([_strip(r, pad) for r in dataset.sequences(name)] for name in (folders.TRAIN, folders.EVAL))
    if not train:
        raise InvalidInput(f"{dataset.path}: {folders.TRAIN} holds no examples")
    return DatasetFolder(train, held, pad, dataset.manifest)


def _strip(record: dict, pad_id: int) -> Example:
    ids, labels = record["input_ids"], record["labels"]
    mask = record.get("attention_mask")
    if mask is not None and 0 in mask:
        n = len(mask) - mask[::-1].index(1) if 1 in mask else 0
    else:
        n = len(ids)
        while mask is None and n > 1 and ids[n - 1] == pad_id and labels[n - 1] == IGNORE:
            n -= 1
    return ids[:n], labels[:n]


class BatchPlan:
    """Which examples make micro-batch k on this rank — a pure function of (seed, epoch, k).

    Each epoch is a permutation drawn from `seed + epoch`; a resumed run recomputes the same order
    from the step number alone, so the data position needs no saved sampler state. Across ranks
    the epoch is padded to a multiple of the world size (like DistributedSampler) and every global
    batch is dealt out round-robin. `group_by_length` sorts mega-batches by length (like the HF
    Trainer's LengthGroupedSampler).
    """

    def __init__(self, lengths: list[int], batch_size: int, *, seed: int, world: int = 1, rank: int = 0,
                 group_by_length: bool = False):
        self.lengths, self.batch_size, self.seed = lengths, batch_size, seed
        self.world, self.rank, self.group_by_length = world, rank, group_by_length
        padded = math.ceil(len(lengths) / world) * world
        self.global_batch = batch_size * world
        self.batches_per_epoch = math.ceil(padded / self.global_batch)
        self._epoch, self._order = -1, []

    def position(self, k: int) -> tuple[int, int]:
        """(epoch, batch within the epoch) of micro-batch k."""
        return divmod(k, self.batches_per_epoch)

    def micro_batch(self, k: int) -> list[int]:
        epoch, b = self.position(k)
        if epoch != self._epoch:
            self._epoch, self._order = epoch, self._epoch_order(epoch)
        chunk = self._order[b * self.global_batch:(b + 1) * self.global_batch]
        return chunk[self.rank::self.world]

    def _epoch_order(self, epoch: int) -> list[int]:
        import torch

        g = torch.Generator().manual_seed(self.seed + epoch)
        order = torch.randperm(len(self.lengths), generator=g).tolist()
        if self.group_by_length:
            mega = self.global_batch * 50
            order = [i for s in range(0, len(order), mega)
                     for i in sorted(order[s:s + mega], key=lambda i: -self.lengths[i])]
        extra = (-len(order)) % self.world
        return order + order[:extra]


def attention_cost(hidden_size: int, intermediate_size: int) -> float:
    """Attention work per token and per unit of row width, relative to a token's linear-layer work.

    A layer's projections cost about 2·(4h² + 3h·i) FLOPs per token (Phi-3 shapes), masked dense
    attention about 4·h·width: the ratio is width / (2h + 1.5i).
    """
    return 1.0 / (2 * hidden_size + 1.5 * intermediate_size)


def _first_fit(lengths: list[int], width: int) -> list[list[int]]:
    rows: list[list[int]] = []  # example indices per row
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        r = next((r for r, free in enumerate(room) if free >= lengths[i]), None)
        if r is None:
            rows.append([]), room.append(width)
            r = len(rows) - 1
        rows[r].append(i)
        room[r] -= lengths[i]
    return rows


def pack_batch(examples: list[Example], pad_id: int, attn_cost: float = 0.0) -> dict:
    """input_ids, position_ids and labels tensors for a packed micro-batch (see the module doc).

    The width (between the longest example and 4 times it) minimises rows·width·(1 + attn_cost·width).
    The first label of every example is masked: in a padded batch nothing predicts an example's
    first token, and in a packed row the previous example's last token must not either.
    """
    import torch

    lengths = [len(ids) for ids, _ in examples]
    longest, total = max(lengths), sum(lengths)
    widths = {longest * k for k in range(1, 5)}  # whole examples per row ...
    widths |= {max(longest, -(-total // r)) + slack  # ... or the tokens spread over r rows
               for r in range(1, len(lengths) + 1) for slack in (0, longest // 4, longest // 2)}
    plans = [(len(rows) * w * (1 + attn_cost * w), w, rows)
             for w in sorted(widths) if w <= 4 * longest for rows in [_first_fit(lengths, w)]]
    _, width, rows = min(plans, key=lambda p: (p[0], p[1]))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    for r, members in enumerate(rows):
        at = 0
        for i in members:
            e_ids, e_labels = examples[i]
            n = len(e_ids)
            ids[r, at:at + n] = torch.tensor(e_ids)
            labels[r, at + 1:at + n] = torch.tensor(e_labels[1:])
            positions[r, at:at + n] = torch.arange(n)
            at += n
        positions[r, at:] = torch.arange(width - at)  # padding: a segment of its own, never a target
    return {"input_ids": ids, "position_ids": positions, "labels": labels}


def count_label_tokens(batch: dict) -> int:
    return int((batch["labels"][:, 1:] != IGNORE).sum())


def count_tokens(examples: list[Example]) -> int:
    return sum(len(ids) for ids, _ in examples)
