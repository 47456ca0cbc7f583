"""Step output folders: content digests, the `slmforge.json` manifest, and atomic writes.

A folder is finished when it holds a manifest whose `outputs_digest` matches its files.
Steps write into a temporary sibling and rename it into place, so a killed step never
leaves a folder that looks finished.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from slmforge.contract.files import write_atomic

MANIFEST = "slmforge.json"
CARD = "README.md"  # the model card a run writes into its output's model folder, after the manifest
_CHUNK = 1 << 20


def digest_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def digest_path(path: str | Path, *, exclude: tuple[str, ...] = (MANIFEST,),
                file_digest: Callable[[Path], str] = digest_file) -> str:
    """Content digest of a file, or of a folder (relative names and contents, sorted).

    `file_digest` lets a caller reuse digests it already knows (the local cache's memo).
    """
    path = Path(path)
    if path.is_file():
        return file_digest(path)
    if not path.is_dir():
        raise FileNotFoundError(path)
    h = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = file.relative_to(path).as_posix()
        if rel in exclude:
            continue
        h.update(rel.encode() + b"\0" + file_digest(file).encode() + b"\n")
    return h.hexdigest()


def library_versions(*names: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("slmforge",) + names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def write_manifest(
    out_dir: str | Path,
    *,
    step: str,
    params: dict[str, Any],
    inputs: dict[str, str | Path | None] | None = None,
    metrics: dict[str, Any] | None = None,
    seconds: float | None = None,
    libraries: tuple[str, ...] = (),
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write `slmforge.json` last: it marks the folder finished and records what made it."""
    out_dir = Path(out_dir)
    manifest: dict[str, Any] = {
        "step": step,
        "params": params,
        "inputs": {k: {"path": str(v), "digest": digest_path(v)} for k, v in (inputs or {}).items() if v},
        "outputs_digest": digest_path(out_dir),
        "metrics": metrics or {},
        "seconds": round(seconds, 3) if seconds is not None else None,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "libraries": library_versions(*libraries),
    }
    if extra:
        manifest.update(extra)
    write_atomic(out_dir / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")
    return manifest


def read_manifest(folder: str | Path) -> dict[str, Any] | None:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None


def is_finished(folder: str | Path, *, verify: bool = True) -> bool:
    """True when the folder has a manifest and (with verify) its files still match it."""
    manifest = read_manifest(folder)
    if manifest is None:
        return False
    return not verify or content_matches(folder, manifest.get("outputs_digest"))


def content_matches(folder: str | Path, wanted: str | None, *,
                    file_digest: Callable[[Path], str] = digest_file) -> bool:
    """True when the folder's files have the digest `wanted`: whole, or with a model card (CARD) written into
    it set aside (backends/local/model_card.py), so the card never makes a model look edited."""
    if digest_path(folder, file_digest=file_digest) == wanted:
        return True
    return (Path(folder) / CARD).is_file() and digest_path(
        folder, exclude=(MANIFEST, CARD), file_digest=file_digest) == wanted


@contextlib.contextmanager
def atomic_output(final: str | Path) -> Iterator[Path]:
    """Yield a temporary folder; on success it becomes `final`, on failure it is removed.

    When `final` is an existing empty folder we cannot replace (an Azure ML output mount),
    the files are moved into it and the manifest, written by the caller, moves last.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(final)
    tmp = final.parent / f".{final.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _move_into_place(tmp, final)


def remove_stale_partials(final: Path) -> None:
    """Drop temporary siblings of `final` left by writers that were killed (SIGKILL skips cleanup,
    so only a later writer can). A partial whose writer still lives is another process's work in progress."""
    for partial in final.parent.glob(f".{final.name}.partial-*"):
        pid = partial.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(partial, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _move_into_place(tmp: Path, final: Path) -> None:
    if final.exists() and final.is_dir() and any(final.iterdir()):
        shutil.rmtree(final)  # a stale, unfinished or replaced output
    try:
        if final.exists():
            final.rmdir()
        os.replace(tmp, final)
        return
    except OSError:
        pass  # a mount point: move the contents, manifest last
    children = sorted(tmp.iterdir(), key=lambda p: p.name == MANIFEST)
    for child in children:
        shutil.move(str(child), str(final / child.name))
    tmp.rmdir()
