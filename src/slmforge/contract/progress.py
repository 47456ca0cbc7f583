"""Progress events: how a step tells whoever runs it how far it is.

A step calls `emit(done, total, unit)`: one line on stderr, `##slmforge-progress {json}`, which
lands in the step's log whether it runs in-process, as a subprocess or in an Azure ML job. The
local display reads the latest event from the running step's log (`last_event`); nothing parses
the step's human-readable lines.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

PREFIX = "##slmforge-progress "


@dataclass(frozen=True)
class Progress:
    done: int
    total: int
    unit: str = ""


def emit(done: int, total: int, unit: str = "") -> None:
    """Called by steps: `done` of `total` units (optimizer steps, rows) finished."""
    event = {"done": int(done), "total": int(total), "unit": unit}
    print(PREFIX + json.dumps(event, separators=(",", ":")), file=sys.stderr, flush=True)


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
        if line.startswith(PREFIX):
            try:
                event = json.loads(line[len(PREFIX):])
                return Progress(int(event["done"]), int(event["total"]), str(event.get("unit", "")))
            except (ValueError, KeyError, TypeError):
                continue  # a line cut by a crash: the one before it holds
    return None
