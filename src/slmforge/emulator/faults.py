"""Fault injection: answer a share of API requests with 429/503 (+Retry-After) or drop the connection.

Configured by `emulator start --faults`, the admin endpoint PUT /_emulator/faults, or config.json.
A seeded RNG keeps a test's sequence of faults reproducible.
"""

from __future__ import annotations

import random
import threading
from typing import Any

KINDS = ("429", "503", "drop")


def parse_spec(spec: str) -> dict[str, Any]:
    """'0.3:429,503,drop' -> {"rate": 0.3, "kinds": ["429", "503", "drop"]}."""
    rate_text, _, kinds_text = spec.partition(":")
    rate = float(rate_text)
    kinds = [k.strip() for k in (kinds_text or "429,503").split(",") if k.strip()]
    if not 0.0 <= rate <= 1.0 or not kinds or any(k not in KINDS for k in kinds):
        raise ValueError(f"fault spec '{spec}': want RATE[:KIND,...] with 0<=RATE<=1, KIND in {', '.join(KINDS)}")
    return {"rate": rate, "kinds": kinds}


class Faults:
    def __init__(self, settings: dict[str, Any] | None = None):
        self._lock = threading.Lock()
        self.injected: dict[str, int] = {k: 0 for k in KINDS}
        self.configure(settings or {})

    def configure(self, settings: dict[str, Any]) -> None:
        rate = float(settings.get("rate", 0.0))
        kinds = list(settings.get("kinds", ["429", "503"]))
        if not 0.0 <= rate <= 1.0 or any(k not in KINDS for k in kinds):
            raise ValueError(f"bad fault settings {settings}")
        with self._lock:
            self.rate = rate
            self.kinds = kinds
            self.retry_after = int(settings.get("retry_after", 1))
            # azure-core honours retry-after-ms first: lets tests ride faults without whole-second waits
            self.retry_after_ms = settings.get("retry_after_ms")
            self.methods = [m.upper() for m in settings.get("methods") or []]  # empty: every method
            self._rng = random.Random(settings.get("seed", 0))

    def settings(self) -> dict[str, Any]:
        return {"rate": self.rate, "kinds": self.kinds, "retry_after": self.retry_after,
                "retry_after_ms": self.retry_after_ms, "methods": self.methods,
                "injected": dict(self.injected)}

    def draw(self, method: str) -> str | None:
        """The fault to inject for this request, or None."""
        with self._lock:
            if self.methods and method.upper() not in self.methods:
                return None
            if self.rate <= 0 or self._rng.random() >= self.rate:
                return None
            kind = self._rng.choice(self.kinds)
            self.injected[kind] += 1
            return kind
