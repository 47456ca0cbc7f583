"""Which folders slmforge may write into (issue 20): those it made, or empty ones; never a user's.

A folder slmforge made carries a small marker file, `.slmforge`, naming the command that made it.
A command that writes a folder calls `claim(folder, ...)` before any work: a new or empty folder is
claimed (the marker is written); a non-empty folder without the marker is refused on one line,
naming what is in the way (exit 2). `ours` lets a caller accept a folder an older slmforge wrote
before the marker existed (it names files only slmforge writes).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from slmforge.errors import InvalidInput

MARKER = ".slmforge"


def is_marked(folder: Path) -> bool:
    return (Path(folder) / MARKER).is_file()


def check(folder: str | Path, *, what: str, ours: Callable[[Path], bool] | None = None,
          hint: str = "choose a new or empty folder") -> Path:
    """InvalidInput when `folder` is a file, or holds files slmforge did not write; writes nothing."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InvalidInput(f"{what} {folder}: is a file; expected a folder to write into")
    if folder.is_dir() and not is_marked(folder):
        present = sorted(p.name for p in folder.iterdir())
        if present and not (ours is not None and ours(folder)):
            shown = ", ".join(present[:3]) + (f" and {len(present) - 3} more" if len(present) > 3 else "")
            raise InvalidInput(f"{what} {folder}: is not empty and was not written by slmforge ({shown}; no "
                               f"{MARKER} marker); slmforge writes only into folders it made or empty ones: {hint}")
    return folder


def claim(folder: str | Path, *, what: str, made_by: str, ours: Callable[[Path], bool] | None = None,
          hint: str = "choose a new or empty folder") -> Path:
    """Make `folder` ours (its marker written) or refuse it, as `check` does."""
    folder = check(folder, what=what, ours=ours, hint=hint)
    folder.mkdir(parents=True, exist_ok=True)
    if not is_marked(folder):
        (folder / MARKER).write_text(json.dumps({"made_by": f"slmforge {made_by}"}) + "\n", encoding="utf-8")
    return folder
