"""What every recipe model shares: strictness, and refusing Olive values slmforge does not run yet."""

from __future__ import annotations

import difflib
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict

NOT_SUPPORTED = "not supported by slmforge yet"


class Strict(BaseModel):
    # strict: "16" is not 16 and "false" is not False (a quoted value is a mistake to name, not to guess);
    # a JSON int still passes for a float.
    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True)


def olive_choice(supported: tuple, olive_only: tuple, why: str) -> Callable[[Any], Any]:
    """A before-validator: a value Olive takes but slmforge does not run is refused by name, not as a typo."""

    def check(value: Any) -> Any:
        if isinstance(value, (str, bool)) and value in olive_only and value not in supported:
            choices = " or ".join(repr(s) for s in supported)
            raise ValueError(f"{value!r} is {NOT_SUPPORTED} ({why}; use {choices})")
        return value

    return check


def refuse_text(why: Callable[[str], str]) -> Callable[[Any], Any]:
    """A validator: a string value (where the recipe takes another kind) is refused with `why(value)`."""

    def check(value: Any) -> Any:
        if isinstance(value, str):
            raise ValueError(why(value))
        return value

    return check


def dotted(path: tuple) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def did_you_mean(key: str, known: list[str]) -> str:
    match = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
    return f"; did you mean '{match[0]}'?" if match else ""
