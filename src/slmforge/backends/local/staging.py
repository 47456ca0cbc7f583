"""A run builds its outputs in `output_dir/runs/<run-id>/` and swaps them in only when it succeeds.

Until then `output_dir` keeps the last good run whole: model/, run.json, report.md, loss.png, logs/.
A failed or interrupted run leaves its folder under runs/ (its run.json says `failed`, its logs beside),
a killed one leaves it saying `running` with its pid. The swap renames: a folder is exchanged in one
step (renameat2) where the filesystem can, so a kill mid-swap leaves the old or the new model whole;
elsewhere the old one is moved aside first and put back by the next run if the swap was cut short.
run.json moves last: it is the commit.

run.json's failure record must land even on a full disk: the running record reserves
`RESERVE` bytes, and a failure record that cannot be written whole is written over them in place.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slmforge.contract.files import exchange, write_atomic

RUNS = "runs"
LOCK = ".slmforge.lock"  # two runs into one output_dir swap in turn
RESERVE = 4096  # bytes run.json holds from the start of a run: room for its failure record
_ASIDE = ".old-"  # an old output moved aside by a swap without exchange


@dataclass
class Stage:
    out: Path  # output_dir
    path: Path  # output_dir/runs/<run-id>
    run_id: str
    swapped: bool = False


def made_by_older_slmforge(folder: Path) -> bool:
    """An output folder a slmforge before the `.slmforge` marker wrote: it holds the run lock only slmforge makes."""
    return (folder / LOCK).is_file()


def begin(out: Path) -> Stage:
    """The new run's staging folder, after putting back what a cut-short swap moved aside."""
    recover(out)
    run_id = time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + f"-{os.getpid()}"
    path = out / RUNS / run_id
    path.mkdir(parents=True)
    return Stage(out, path, run_id)


def recover(out: Path) -> None:
    for aside in sorted((out / RUNS).glob(f"*/{_ASIDE}*")):
        target = out / aside.name.removeprefix(_ASIDE)
        if not target.exists():
            os.rename(aside, target)


def write_record(path: Path, record: dict[str, Any], *, reserve: bool = False) -> None:
    text = json.dumps(record, indent=2, default=str) + "\n"
    if reserve and len(text.encode()) < RESERVE:
        text = text.rstrip("\n").ljust(RESERVE - 1) + "\n"  # JSON allows trailing whitespace
    write_atomic(path, text)


def write_failure_record(path: Path, record: dict[str, Any]) -> None:
    """Write a failed run's record whole; on a full disk, over the bytes the running record reserved."""
    try:
        write_record(path, record)
        return
    except OSError as e:
        error: OSError = e
    short = {k: record.get(k) for k in ("status", "recipe", "recipe_digest", "created", "run_id", "pid")}
    short["error"] = str(record.get("error") or "")[:2000]
    short["note"] = f"shortened: the full record could not be written ({error.strerror or error})"
    for candidate in (json.dumps(record, indent=2, default=str), json.dumps(short, default=str)):
        data = (candidate + "\n").encode()
        if len(data) > RESERVE and candidate is not short:
            continue
        try:
            with open(path, "r+b", buffering=0) as f:
                f.write(data)
                f.truncate()
            return
        except OSError as e:
            error = e
    raise error


@contextlib.contextmanager
def signals_held():
    """Ctrl-C and SIGTERM wait until the block ends (they then arrive as usual)."""
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def swap_in(stage: Stage, names: list[str], stale: list[str]) -> None:
    """Move `names` from the stage into output_dir (the last one last), replacing what is there;
    `stale` outputs of the last run that this run has none of go with the stage. Then drop the stage."""
    out, path = stage.out, stage.path
    with signals_held():
        for name in stale:
            if (out / name).exists() and not (path / name).exists():
                os.rename(out / name, path / f".gone-{name}")
        for name in names:
            new, old = path / name, out / name
            if not new.exists():
                continue
            if new.is_dir() and old.is_dir() and not exchange(new, old):
                os.rename(old, path / f"{_ASIDE}{name}")  # put back by `recover` if cut short here
                os.rename(new, old)
            elif new.is_dir() and old.is_dir():
                pass  # exchanged: the old one is in the stage now
            else:
                os.replace(new, old)  # a file, or nothing there yet: one rename
        stage.swapped = True
        shutil.rmtree(path, ignore_errors=True)
        with contextlib.suppress(OSError):
            (out / RUNS).rmdir()  # only when no other run's folder is left
