"""Requests, replies and the route table the HTTP server dispatches on."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import parse_qs

# Every workspace-scoped ARM path starts like this (ARM compares case-insensitively).
WS = (r"/subscriptions/(?P<sub>[^/]+)/resourcegroups/(?P<rg>[^/]+)"
      r"/providers/microsoft\.machinelearningservices/workspaces/(?P<ws>[^/]+)")
REG = (r"/subscriptions/(?P<sub>[^/]+)/resourcegroups/(?P<rg>[^/]+)"
       r"/providers/microsoft\.machinelearningservices/registries/(?P<registry>[^/]+)")


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    raw: bytes = b""

    @property
    def json(self) -> Any:
        return json.loads(self.raw) if self.raw else {}

    @classmethod
    def parse(cls, method: str, target: str, headers: dict[str, str], raw: bytes) -> "Request":
        path, _, qs = target.partition("?")
        query = {k.lower(): v[-1] for k, v in parse_qs(qs, keep_blank_values=True).items()}
        return cls(method, path.rstrip("/") or "/", query, {k.lower(): v for k, v in headers.items()}, raw)


@dataclass
class Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


def error(status: int, code: str, message: str) -> Reply:
    """An ARM-shaped error body: the SDK raises it with the message intact."""
    return Reply(status, {"error": {"code": code, "message": message, "details": [],
                                    "innerError": {"code": code}}})


def not_found(what: str) -> Reply:
    return error(404, "UserError", f"{what} not found in the emulated workspace")


Handler = Callable[..., Reply]


class Router:
    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []

    def add(self, method: str, pattern: str) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            self._routes.append((method, re.compile(pattern + r"$", re.IGNORECASE), fn))
            return fn
        return register

    def resolve(self, method: str, path: str) -> tuple[Handler, dict[str, str]] | None:
        for m, pattern, fn in self._routes:
            if m == method and (match := pattern.match(path)):
                return fn, match.groupdict()
        return None


router = Router()
route = router.add
