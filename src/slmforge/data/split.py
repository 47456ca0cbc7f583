"""Hold out eval rows: a seeded share of the rows, whole prompts at a time, so no eval prompt is trained on.

The load_data step splits with it, and `validate` runs the same split over the rows it reads, so a split
that cannot work (more rows asked than there are, too few distinct prompts) stops before any work.
"""

from __future__ import annotations

import random

from slmforge.errors import InvalidInput


def split_eval(rows: list[dict], prompt_of, size: float | None, seed: int) -> tuple[list, list]:
    """(train, eval) rows. Rows sharing a prompt (`prompt_of(row)`) stay on one side, so no eval prompt is
    seen in training.

    `size` below 1 is a fraction of the rows, 1 or more a row count; groups are drawn in an order
    shuffled with `seed` and skipped when they would overshoot the count. A split that holds out no row
    (every prompt repeats more often than the count allows) is an InvalidInput with the counts.
    """
    if not size:
        return rows, []
    want = round(len(rows) * size) if size < 1 else int(size)
    want = max(want, 1)
    if want >= len(rows):
        raise InvalidInput(f"eval_dataset_size {size} leaves no training rows (there are {len(rows)} rows)")
    groups: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(prompt_of(row), []).append(i)
    order = list(groups.values())
    random.Random(seed).shuffle(order)
    held: set[int] = set()
    for members in order:
        if len(held) + len(members) <= want:
            held.update(members)
        if len(held) == want:
            break
    if not held or len(groups) < 2:
        smallest = min(len(m) for m in order)
        raise InvalidInput(
            f"eval_dataset_size {size}: too few distinct rows to hold out {want} of {len(rows)} rows: they have "
            f"{len(groups)} distinct prompt{'s' if len(groups) != 1 else ''} (the rarest in {smallest} rows), and "
            "rows sharing a prompt stay on one side; add distinct rows or give separate eval data")
    train = [r for i, r in enumerate(rows) if i not in held]
    return train, [rows[i] for i in sorted(held)]
