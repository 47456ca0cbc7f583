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

Identical files are stored once: a finished entry's result files that another entry already holds
(same digest) become hard links to it, read-only like every shared file (`share_identical`), and the
run's output folder links the final model the same way (outputs.py). An edit of a shared file (root
ignores the read-only bit) changes its signature: the entry is found corrupt and rebuilt, never served.
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
from slmforge.contract.files import json_digest, write_atomic
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

    def finish(self, *, step: str, outputs: list[str], seconds: float, extra: dict[str, Any],
               memo: "DigestMemo | None" = None) -> dict[str, Any]:
        """Record a completed step; outputs must already be finished folders. With the cache's `memo`, its
        result files that the cache already holds become links to those (`share_identical`)."""
        digests = {}
        for name in outputs:
            if name in self.work_outputs:
                continue
            found = manifest.read_manifest(self.output(name))
            if found is None or not manifest.is_finished(self.output(name)):
                raise FileNotFoundError(f"output '{name}' was not written (no {manifest.MANIFEST} in {self.output(name)})")
            digests[name] = found["outputs_digest"]
        if memo is not None:
            share_identical([self.output(n) for n in outputs if n not in self.work_outputs], self.root.parent.parent,
                            memo)
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


SHARE_MIN_BYTES = 4096  # smaller files are not worth a link (and an inode's bookkeeping)
READ_ONLY = 0o444


def share_identical(folders: list[Path], root: Path, memo: DigestMemo) -> int:
    """Replace each file of `folders` that a file elsewhere under `root` (the cache) already holds, byte for byte,
    by a hard link to it; return the bytes saved. Candidates are the files `memo` has digested under `root`.
    The shared files are made read-only: an edit in place would change every entry holding them."""
    prefix = str(root.absolute()) + os.sep
    inside = [str(f.absolute()) + os.sep for f in folders]
    work = f"{os.sep}{WORK}{os.sep}"  # resumable state is rewritten in place: never a link target
    held: dict[str, str] = {}
    for path, (_, digest) in list(memo.data.items()):
        if path.startswith(prefix) and work not in path[len(prefix):] and not any(path.startswith(f) for f in inside) \
                and os.path.isfile(path):
            held.setdefault(digest, path)
    saved = 0
    for folder in folders:
        for file in sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()):
            if file.stat().st_size < SHARE_MIN_BYTES or file.name == manifest.MANIFEST:
                continue
            digest = memo.file_digest(file)
            other = held.get(digest)
            if other is None:
                held[digest] = str(file.absolute())
                continue
            if os.path.samefile(other, file):
                continue
            if memo.file_digest(Path(other)) != digest:  # changed since it was digested: never link to it
                held[digest] = str(file.absolute())
                continue
            if not link_into(Path(other), file):
                continue
            saved += file.stat().st_size
            memo.file_digest(file)  # its signature is now the shared inode's
    return saved


def link_into(source: Path, target: Path) -> bool:
    """Make `target` a read-only hard link to `source` in one rename; False where the filesystem cannot."""
    tmp = target.parent / f".{target.name}.link-{os.getpid()}"
    try:
        os.chmod(source, READ_ONLY)
        os.link(source, tmp)
    except OSError:  # another filesystem, no hard links there, or too many links
        tmp.unlink(missing_ok=True)
        return False
    os.replace(tmp, target)
    return True


def keep_last(entries: list[tuple[Entry, dict[str, Any] | None]], n: int) -> list[Entry]:
    """Finished entries beyond the `n` most recently used of each step (a run uses one entry per step)."""
    by_step: dict[str, list[Entry]] = {}
    for entry, meta in entries:
        if meta is not None:
            by_step.setdefault(f"{entry.component}/{meta.get('step', '')}", []).append(entry)
    old = []
    for found in by_step.values():
        found.sort(key=lambda e: (e.root / ENTRY).stat().st_mtime, reverse=True)
        old += found[n:]
    return old


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

    def clean(self, *, everything: bool = False, older_than_s: float | None = None,
              keep_last_n: int | None = None) -> tuple[int, int]:
        """Remove unfinished entries (and, as asked, all, old ones, or all but each step's last `keep_last_n`).
        Returns (removed, bytes freed: a file another entry still links is not counted).

        Entries in use by a running step (locked) are skipped.
        """
        if self.root.is_dir() and not self.is_marked():
            from slmforge.errors import InvalidInput

            raise InvalidInput(f"{self.root}: not an slmforge cache (no {MARKER}); refusing to remove anything in it")
        removed = freed = 0
        now = time.time()
        entries = self.entries()
        beyond = {e.root for e in keep_last(entries, keep_last_n)} if keep_last_n is not None else set()
        for entry, meta in entries:
            if meta is not None and not everything and entry.root not in beyond:
                if older_than_s is None:
                    continue
                if now - (entry.root / ENTRY).stat().st_mtime < older_than_s:
                    continue
            with locked(entry.lock_path, blocking=False) as got:
                if not got:
                    continue
                size = sum(p.stat().st_size for p in entry.root.rglob("*") if p.is_file() and p.stat().st_nlink == 1)
                entry.remove()
                entry.lock_path.unlink(missing_ok=True)
                removed += 1
                freed += size
        return removed, freed


def _is_key(name: str) -> bool:
    return len(name) == 64 and all(c in "0123456789abcdef" for c in name)


