"""The local run's step list: a live `rich` view on a terminal, one plain line per change otherwise.

A running step's bar comes from the progress events in its log (contract/progress.py), with the facts
they carry (loss, tokens/s, ETA). Without a terminal a running step's progress is a plain line at
tqdm's kind of interval: each further tenth of the work, or every PLAIN_EVERY_S seconds, and once more
when the step ends, so `slmforge run | tee log` shows the training as it goes.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from slmforge.contract.progress import Progress, describe, last_event

PLAIN_EVERY_S = 30.0  # a plain progress line at least this often while the work moves
PLAIN_SHARE = 10  # ... and one per tenth of the work
POLL_S = 0.5


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
    first: tuple[float, int] | None = None  # (when, done) of the first event seen: the display's own ETA
    printed: Progress | None = None  # plain mode: the last event printed, when, and its tenth
    printed_at: float = 0.0

    def see(self, event: Progress | None) -> Progress | None:
        """Take the latest event (None: keep the last one)."""
        if event is not None and self.first is None:
            self.first = (time.monotonic(), event.done)
        self.bar = event or self.bar
        return self.bar

    def eta(self) -> float | None:
        """Seconds left at the rate seen since the first event (for events that carry no ETA)."""
        if self.bar is None or self.first is None or self.bar.done <= self.first[1]:
            return None
        rate = (self.bar.done - self.first[1]) / max(time.monotonic() - self.first[0], 1e-9)
        return (self.bar.total - self.bar.done) / rate

    def progress_text(self) -> str:
        return describe(self.bar, self.eta()) if self.bar is not None else ""


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
        self._print_lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

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
        else:
            self._watcher = threading.Thread(target=self._watch, name="slmforge-progress", daemon=True)
            self._watcher.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join()
            self._watcher = None
        if self._live is not None:
            self._live.refresh()
            self._live.stop()
            self._live = None

    # ---- updates from the runner
    def update(self, name: str, state: str, *, seconds: float | None = None, note: str = "",
               log: Path | None = None) -> None:
        with self._lock:
            row = self.rows[name]
            ending = row.state == "running" and state != "running"
            if state == "running":
                row.started, row.log, row.bar, row.first, row.printed = time.monotonic(), log, None, None, None
            if seconds is not None:
                row.seconds = seconds
        if not self.live:
            if ending:
                self._plain_progress(row, final=True)
            with self._lock:
                row.state, row.note = state, note
            self._plain(row)
            return
        with self._lock:
            row.state, row.note = state, note

    def message(self, text: str) -> None:
        """A line above the step list (or a plain line)."""
        if self._console is not None:
            self._console.print(text, markup=False, highlight=False)
        else:
            print(text, file=self.out, flush=True)

    # ---- drawing
    def _watch(self) -> None:
        """Plain mode: a progress line for each running step when its work has moved enough."""
        while not self._stop.wait(POLL_S):
            with self._lock:
                running = [r for r in self.rows.values() if r.state == "running" and r.log is not None]
            for row in running:
                self._plain_progress(row)

    def _plain_progress(self, row: StepRow, *, final: bool = False) -> None:
        with self._print_lock:
            if row.log is None:
                return
            event = row.see(last_event(row.log))
            if event is None or event == row.printed or event.total <= 0:
                return
            now = time.monotonic()
            tenth = PLAIN_SHARE * event.done // event.total
            last_tenth = -1 if row.printed is None else PLAIN_SHARE * row.printed.done // max(row.printed.total, 1)
            if not (final or tenth > last_tenth or now - row.printed_at >= PLAIN_EVERY_S):
                return
            row.printed, row.printed_at = event, now
            print(f"[slmforge] {row.name:<16} {row.progress_text()}", file=self.out, flush=True)

    def _plain(self, row: StepRow) -> None:
        if row.state == "pending":
            return
        words = {"waiting": "waiting (another run holds this step)", "running": "running",
                 "cached": f"cached ({fmt_seconds(row.seconds)} originally)", "done": f"done in {fmt_seconds(row.seconds)}",
                 "failed": f"failed after {fmt_seconds(row.seconds)}"}
        note = f"  {row.note}" if row.note else ""
        with self._print_lock:
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
                    row.see(last_event(row.log))
                if row.bar is not None:
                    extra = Table.grid(padding=(0, 1))
                    extra.add_row(ProgressBar(total=max(row.bar.total, 1), completed=row.bar.done, width=30),
                                  Text(row.progress_text(), style="dim"))
            label = "cached" if row.state == "cached" else row.state
            table.add_row(Text(_SYMBOL[row.state], style=style[row.state]), Text(row.name),
                          Text(label, style=style[row.state]), Text(fmt_seconds(seconds)), extra)
        return table
