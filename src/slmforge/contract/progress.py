"""Progress events: how a step tells whoever runs it how far it is.

A step calls `emit(done, total, unit)`: one line on stderr, `##slmforge-progress {json}`, which
lands in the step's log whether it runs in-process, as a subprocess or in an Azure ML job. The
local display reads the latest event from the running step's log (`last_event`); nothing parses
the step's human-readable lines. An event may carry the facts of the work so far (`loss`,
`tokens_per_second`, `eta_seconds`); `describe` is the one way they are written for people (the
local display, `slmforge logs`).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "##slmforge-progress "


@dataclass(frozen=True)
class Progress:
    done: int
    total: int
    unit: str = ""
    facts: dict = field(default_factory=dict, compare=False)  # loss, tokens_per_second, eta_seconds


FACTS = ("loss", "tokens_per_second", "eta_seconds")


def emit(done: int, total: int, unit: str = "", **facts: float | None) -> None:
    """Called by steps: `done` of `total` units (optimizer steps, rows) finished; `facts`: FACTS."""
    event = {"done": int(done), "total": int(total), "unit": unit,
             **{k: round(float(v), 6) for k, v in facts.items() if k in FACTS and v is not None}}
    print(PREFIX + json.dumps(event, separators=(",", ":")), file=sys.stderr, flush=True)


def fmt_eta(seconds: float) -> str:
    seconds = max(int(round(seconds)), 0)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def describe(p: Progress, eta_seconds: float | None = None) -> str:
    """`16/40 steps (40%)  loss 1.2345  4,321 tokens/s  ETA 0:12` (ETA: the event's, else `eta_seconds`)."""
    share = f" ({100 * p.done // p.total}%)" if p.total > 0 else ""
    words = [f"{p.done}/{p.total} {p.unit}".rstrip() + share]
    if p.facts.get("loss") is not None:
        words.append(f"loss {p.facts['loss']:.4f}")
    if p.facts.get("tokens_per_second") is not None:
        words.append(f"{p.facts['tokens_per_second']:,.0f} tokens/s")
    eta = p.facts.get("eta_seconds", eta_seconds)
    if eta is not None and p.done < p.total:
        words.append(f"ETA {fmt_eta(eta)}")
    return "  ".join(words)


def parse(line: str) -> Progress | None:
    """The event a log line holds (None: a line of another kind, or one cut by a crash)."""
    if not line.startswith(PREFIX):
        return None
    try:
        event = json.loads(line[len(PREFIX):])
        return Progress(int(event["done"]), int(event["total"]), str(event.get("unit", "")),
                        {k: float(event[k]) for k in FACTS if isinstance(event.get(k), (int, float))})
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def render(text: str) -> str:
    """A log's text for people: each progress event as `progress: <describe>`, every other line as it is."""
    lines = []
    for line in text.splitlines(keepends=True):
        event = parse(line.rstrip("\r\n"))
        lines.append(line if event is None else f"progress: {describe(event)}\n")
    return "".join(lines)


def last_event(log: Path, start: int = 0) -> Progress | None:
    """The latest progress event in a log (reading from byte `start`); None before the first."""
    try:
        with open(log, "rb") as f:
            f.seek(0, 2)
            f.seek(max(start, f.tell() - 65536))  # the tail is enough: events are frequent
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        event = parse(line)
        if event is not None:
            return event  # (a line cut by a crash parses as None: the one before it holds)
    return None
