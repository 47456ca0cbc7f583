"""The local run's step list: a live `rich` view on a terminal, one plain line per change otherwise.

A running step's bar comes from the progress events in its log (contract/progress.py).
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from slmforge.contract.progress import Progress, last_event


def fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f}s"
    return f"{int(seconds // 60)}m{seconds % 60:04.1f}s"


@dataclass
class StepRow:
    name: str
    state: str = "pending"  # pending | waiting | running | cached | done | failed
    seconds: float | None = None
    started: float | None = None
    note: str = ""
    log: Path | None = None
    bar: Progress | None = None


_SYMBOL = {"pending": "·", "waiting": "…", "running": "▶", "cached": "✓", "done": "✓", "failed": "✗"}


@dataclass
class Display:
    """The step list. `rich` live view when `out` is a terminal, else one plain line per change."""

    names: list[str]
    out: TextIO = field(default_factory=lambda: sys.stdout)
    live: bool | None = None

    def __post_init__(self) -> None:
        self.rows = {n: StepRow(n) for n in self.names}
        if self.live is None:
            self.live = bool(getattr(self.out, "isatty", lambda: False)())
        self._lock = threading.Lock()
        self._live = None
        self._console = None

    # ---- lifecycle
    def __enter__(self) -> "Display":
        if self.live:
            from rich.console import Console
            from rich.live import Live

            self._console = Console(file=self.out, force_terminal=True)
            # No stdout/stderr redirection: a step's own output belongs in its log, not on screen.
            self._live = Live(get_renderable=self._render, console=self._console, refresh_per_second=4,
                              transient=False, redirect_stdout=False, redirect_stderr=False)
            self._live.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.refresh()
            self._live.stop()
            self._live = None

    # ---- updates from the runner
    def update(self, name: str, state: str, *, seconds: float | None = None, note: str = "",
               log: Path | None = None) -> None:
        with self._lock:
            row = self.rows[name]
            row.state, row.note = state, note
            if state == "running":
                row.started, row.log, row.bar = time.monotonic(), log, None
            if seconds is not None:
                row.seconds = seconds
        if not self.live:
            self._plain(row)

    def message(self, text: str) -> None:
        """A line above the step list (or a plain line)."""
        if self._console is not None:
            self._console.print(text, markup=False, highlight=False)
        else:
            print(text, file=self.out, flush=True)

    # ---- drawing
    def _plain(self, row: StepRow) -> None:
        if row.state == "pending":
            return
        words = {"waiting": "waiting (another run holds this step)", "running": "running",
                 "cached": f"cached ({fmt_seconds(row.seconds)} originally)", "done": f"done in {fmt_seconds(row.seconds)}",
                 "failed": f"failed after {fmt_seconds(row.seconds)}"}
        note = f"  {row.note}" if row.note else ""
        print(f"[slmforge] {row.name:<16} {words[row.state]}{note}", file=self.out, flush=True)

    def _render(self):
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        table = Table.grid(padding=(0, 2))
        table.add_column(width=2)
        table.add_column(min_width=16)
        table.add_column(min_width=10)
        table.add_column(justify="right", min_width=8)
        table.add_column()
        style = {"pending": "dim", "waiting": "yellow", "running": "cyan", "cached": "green",
                 "done": "green", "failed": "bold red"}
        with self._lock:
            rows = list(self.rows.values())
        for row in rows:
            seconds = row.seconds
            extra = Text(row.note, style="dim")
            if row.state == "running" and row.started is not None:
                seconds = time.monotonic() - row.started
                if row.log is not None:
                    row.bar = last_event(row.log) or row.bar
                if row.bar is not None:
                    done, total, what = row.bar.done, row.bar.total, row.bar.unit
                    extra = Table.grid(padding=(0, 1))
                    extra.add_row(ProgressBar(total=max(total, 1), completed=done, width=30),
                                  Text(f"{done}/{total} {what}".rstrip(), style="dim"))
            label = "cached" if row.state == "cached" else row.state
            table.add_row(Text(_SYMBOL[row.state], style=style[row.state]), Text(row.name),
                          Text(label, style=style[row.state]), Text(fmt_seconds(seconds)), extra)
        return table
