"""What the workspace holds, persisted in DIR/state.sqlite so a stop/start loses nothing.

One table of JSON documents keyed by (kind, key): kind is e.g. "codes", "jobs", "registry-models";
key is "name" or "name/version", lower-cased like ARM ids are compared.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any


class Store:
    def __init__(self, path: Path):
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS docs (kind TEXT, key TEXT, body TEXT, created REAL,"
            " PRIMARY KEY (kind, key))"
        )

    def put(self, kind: str, key: str, body: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO docs VALUES (?, ?, ?, ?) ON CONFLICT(kind, key) DO UPDATE SET body=excluded.body",
                (kind, key.lower(), json.dumps(body), time.time()),
            )

    def get(self, kind: str, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT body FROM docs WHERE kind=? AND key=?", (kind, key.lower())).fetchone()
        return json.loads(row[0]) if row else None

    def list(self, kind: str, prefix: str = "") -> list[dict[str, Any]]:
        """Documents of `kind` whose key starts with `prefix`, oldest first."""
        pattern = prefix.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        with self._lock:
            rows = self._db.execute(
                "SELECT body FROM docs WHERE kind=? AND key LIKE ? ESCAPE '\\' ORDER BY created, key",
                (kind, pattern),
            ).fetchall()
        return [json.loads(r[0]) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
