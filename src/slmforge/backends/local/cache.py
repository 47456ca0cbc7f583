"""The content-addressed step cache: keys, entries, locks, listing and cleaning.

An entry is `cache_dir/<component>/<key>/`: one folder per component output (each finished by its
own `slmforge.json`), `work/` for files the step needs or resumes from (generated inputs,
fine-tuning checkpoints), `step.log`, and `entry.json`, written last, which marks the entry
complete and records the outputs' digests and how long the step took. An entry without
`entry.json` is unfinished work (a killed run): it is resumed, not trusted. An entry whose
outputs no longer match `entry.json` is corrupt: it is removed and rebuilt.

`cache_dir/<component>/<key>.lock` serialises runs on one entry (fcntl.flock): a second run
waits, then finds the first run's result.

`cache_dir/digests.json` remembers file digests by (size, mtime, inode), so a cached rerun does
not re-read a multi-GB model to key or verify it; any write to a file changes its signature.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from slmforge.contract import manifest
from slmforge.contract.files import folder_size, json_digest, write_atomic
from slmforge.steps.catalog import STEPS

ENTRY = "entry.json"
# Written into cache_dir by the first run that uses it. `cache clean` touches only folders that
# carry it, and only `<component>/<64-hex key>` inside: never a folder slmforge did not make.
MARKER = "slmforge-cache.json"
MEMO = "digests.json"
WORK = "work"
LOG = "step.log"


def cache_key(material: dict[str, Any]) -> str:
    """sha256 of a canonical JSON of everything that determines a step's outputs."""
    return json_digest(material)


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Entry:
    root: Path  # cache_dir/<component>/<key>

    @property
    def component(self) -> str:
        return self.root.parent.name

    @property
    def key(self) -> str:
        return self.root.name

    @property
    def work_outputs(self) -> tuple[str, ...]:
        """Its step's outputs that hold resumable state rather than results (StepSpec.work_outputs):
        they live in work/ and are not verified."""
        step = STEPS.get(self.component)
        return step.work_outputs if step is not None else ()

    @property
    def work(self) -> Path:
        return self.root / WORK

    @property
    def log(self) -> Path:
        return self.root / LOG

    @property
    def lock_path(self) -> Path:
        return self.root.parent / f"{self.key}.lock"

    def output(self, name: str) -> Path:
        return self.work / name if name in self.work_outputs else self.root / name

    def meta(self) -> dict[str, Any] | None:
        path = self.root / ENTRY
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def state(self, outputs: list[str], memo: "DigestMemo | None" = None) -> str:
        """'hit' (complete and verified), 'miss' (absent or unfinished) or 'corrupt'."""
        digest = memo.digest_path if memo is not None else manifest.digest_path
        meta = self.meta()
        if meta is None:
            return "miss"
        recorded = meta.get("outputs", {})
        for name in outputs:
            if name in self.work_outputs:
                continue
            folder = self.output(name)
            found = manifest.read_manifest(folder)
            if found is None or name not in recorded or found.get("outputs_digest") != recorded[name]:
                return "corrupt"
            if digest(folder) != recorded[name]:
                return "corrupt"
        return "hit"

    def finish(self, *, step: str, outputs: list[str], seconds: float, extra: dict[str, Any]) -> dict[str, Any]:
        """Record a completed step; outputs must already be finished folders."""
        digests = {}
        for name in outputs:
            if name in self.work_outputs:
                continue
            found = manifest.read_manifest(self.output(name))
            if found is None or not manifest.is_finished(self.output(name)):
                raise FileNotFoundError(f"output '{name}' was not written (no {manifest.MANIFEST} in {self.output(name)})")
            digests[name] = found["outputs_digest"]
        meta = {"step": step, "component": self.component, "key": self.key, "seconds": round(seconds, 3),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "outputs": digests, **extra}
        write_atomic(self.root / ENTRY, json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return meta

    def touch(self) -> None:
        """Mark a hit as recently used (for `cache clean --older-than`)."""
        with contextlib.suppress(OSError):
            os.utime(self.root / ENTRY)

    def remove_results(self) -> None:
        """Drop everything but work/ (and the log): what a failed step leaves must not look finished."""
        if not self.root.is_dir():
            return
        for child in self.root.iterdir():
            if child.name in (WORK, LOG):
                continue
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


class DigestMemo:
    """File digests keyed by path and (size, mtime_ns, inode); saved atomically, lost updates harmless."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.data: dict[str, list] = json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            self.data = {}
        self.dirty = False

    def file_digest(self, file: Path) -> str:
        st = file.stat()
        key, signature = str(file.absolute()), [st.st_size, st.st_mtime_ns, st.st_ino]
        known = self.data.get(key)
        if known is not None and known[0] == signature:
            return known[1]
        digest = manifest.digest_file(file)
        self.data[key] = [signature, digest]
        self.dirty = True
        return digest

    def digest_path(self, path: str | Path) -> str:
        return manifest.digest_path(path, file_digest=self.file_digest)

    def save(self) -> None:
        if not self.dirty:
            return
        self.data = {k: v for k, v in self.data.items() if os.path.exists(k)}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, json.dumps(self.data))
        self.dirty = False


@dataclass(frozen=True)
class Held:
    """A held lock; `fd` can be passed to a child process, which then holds the lock as long as it lives."""

    fd: int


@contextlib.contextmanager
def locked(path: Path, *, blocking: bool = True) -> Iterator[Held | None]:
    """Hold an exclusive flock on `path`; yields None when non-blocking and already held elsewhere.

    After locking, the path must still name the locked file: a `cache clean` may have removed it
    meanwhile, in which case we lock the new file instead.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            flags = fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB)
            try:
                fcntl.flock(fd, flags)
            except BlockingIOError:
                yield None
                return
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                yield Held(fd)
                return
        finally:
            os.close(fd)  # closing releases the lock


class Cache:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.memo = DigestMemo(self.root / MEMO)

    def entry(self, component: str, key: str) -> Entry:
        return Entry(self.root / component / key)

    def lock(self, entry: Entry):
        return locked(entry.lock_path)

    def mark(self) -> None:
        """Claim cache_dir as an slmforge cache (idempotent)."""
        self.root.mkdir(parents=True, exist_ok=True)
        marker = self.root / MARKER
        if not marker.is_file():
            marker.write_text(json.dumps({"slmforge_cache": 1}) + "\n", encoding="utf-8")

    def is_marked(self) -> bool:
        return (self.root / MARKER).is_file()

    def entries(self) -> list[tuple[Entry, dict[str, Any] | None]]:
        """Every entry folder (`<component>/<64-hex key>`) with its entry.json (None: unfinished)."""
        found = []
        if not self.root.is_dir() or not self.is_marked():
            return found
        for component in sorted(p for p in self.root.iterdir() if p.is_dir()):
            for root in sorted(p for p in component.iterdir() if p.is_dir() and _is_key(p.name)):
                entry = Entry(root)
                found.append((entry, entry.meta()))
        return found

    def clean(self, *, everything: bool = False, older_than_s: float | None = None) -> tuple[int, int]:
        """Remove unfinished entries (and, as asked, all or old ones). Returns (removed, bytes freed).

        Entries in use by a running step (locked) are skipped.
        """
        if self.root.is_dir() and not self.is_marked():
            from slmforge.errors import InvalidInput

            raise InvalidInput(f"{self.root}: not an slmforge cache (no {MARKER}); refusing to remove anything in it")
        removed = freed = 0
        now = time.time()
        for entry, meta in self.entries():
            if meta is not None and not everything:
                if older_than_s is None:
                    continue
                if now - (entry.root / ENTRY).stat().st_mtime < older_than_s:
                    continue
            with locked(entry.lock_path, blocking=False) as got:
                if not got:
                    continue
                size = folder_size(entry.root)
                entry.remove()
                entry.lock_path.unlink(missing_ok=True)
                removed += 1
                freed += size
        return removed, freed


def _is_key(name: str) -> bool:
    return len(name) == 64 and all(c in "0123456789abcdef" for c in name)


