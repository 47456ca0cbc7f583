"""Files as steps, the cache and the emulator write them: never seen half-written, digested one way."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from slmforge.errors import InvalidInput


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write `path` whole or not at all: a temp file beside it, then one rename (readers never see a part)."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}{path.suffix}"
    try:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def json_digest(value: Any) -> str:
    """sha256 of a JSON value in canonical form (sorted keys, no spaces; other types by str)."""
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def folder_size(folder: str | Path) -> int:
    """Bytes of every file below `folder`."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


_RENAME_EXCHANGE = 2  # linux/fs.h


def exchange(a: str | Path, b: str | Path) -> bool:
    """Swap two paths in one step (renameat2 RENAME_EXCHANGE): a reader, or a kill, sees one or the
    other, never neither. False where the system or filesystem cannot (the caller falls back)."""
    import ctypes
    import errno

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd = -100
    if renameat2(at_fdcwd, os.fsencode(str(a)), at_fdcwd, os.fsencode(str(b)), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def read_json_object(path: str | Path, expected: str = "a JSON object") -> dict:
    """A JSON object from a file a step was given; a missing or broken file is one line naming it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidInput(f"{path}: not found") from None
    except json.JSONDecodeError as e:
        raise InvalidInput(f"{path}: line {e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"{path}: expected {expected}")
    return data
