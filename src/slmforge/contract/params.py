"""A step's parameters, declared once: name, type, default, allowed values, bounds and help.

Each step module has a `Params` dataclass whose fields are made with `param(...)`. From it come
the step's argparse (steps._cli.parse_params), the one validation of its values (`make`, used by
the step's `run`), and a test's checks of `components/<step>.yml` and of the recipe schema
(tests/test_params.py). The recipe's `training_args` model is generated from the fine-tune's
(`pydantic_fields`), so a training argument is written in one place.

Light by design (stdlib only at import): the CLI imports it to parse arguments.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import MISSING
from typing import Any

from slmforge.errors import InvalidInput

# A component input's or output's Azure ML type when it is a path (an asset), not a plain value.
ASSETS = ("uri_folder", "uri_file", "custom_model")
_BOUNDS = {"ge": ("at least", lambda v, b: v >= b), "gt": ("above", lambda v, b: v > b),
           "le": ("at most", lambda v, b: v <= b), "lt": ("below", lambda v, b: v < b)}


def param(default: Any = MISSING, *, help: str, choices: tuple | list | None = None,  # noqa: A002 - argparse's name
          asset: str | None = None, output: bool | str = False, **bounds: float) -> Any:
    """One parameter. No default: required. `asset`: a path, of that Azure ML type; `output`: a
    folder the step writes (a string: the component's output name, when the option's differs);
    `bounds`: ge/gt/le/lt."""
    assert asset is None or asset in ASSETS, asset
    assert set(bounds) <= set(_BOUNDS), bounds
    return dataclasses.field(default=default, metadata={
        "help": help, "choices": tuple(choices) if choices else None, "asset": asset, "output": output, **bounds})


def value_type(cls: type, name: str) -> type:
    """The field's value type without None: str, int, float or bool (a path is str)."""
    hint = typing.get_type_hints(cls)[name]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = next((a for a in args if a in (bool, int, float)), str)
    return hint if hint in (bool, int, float) else str


def optional(f: dataclasses.Field) -> bool:
    return f.default is None


def make(cls: type, given: dict[str, Any]):
    """`cls(**given)` checked: unknown and missing names, types, allowed values and bounds, then the
    class's own `check()` for rules between fields. Every problem is InvalidInput naming the parameter."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise InvalidInput(f"unknown parameter '{unknown[0]}'")
    missing = [n for n, f in known.items() if f.default is MISSING and given.get(n) is None]
    if missing:
        raise InvalidInput(f"parameter '{missing[0]}' is required")
    for name, value in given.items():
        if value is not None:
            _check_value(name, value, value_type(cls, name), known[name].metadata)
    made = cls(**given)
    check = getattr(made, "check", None)
    if check is not None:
        check()
    return made


def _check_value(name: str, value: Any, kind: type, meta: typing.Mapping[str, Any]) -> None:
    if kind is bool and not isinstance(value, bool) or kind in (int, float) and (
            isinstance(value, bool) or not isinstance(value, int if kind is int else (int, float))):
        raise InvalidInput(f"{name}: expected {kind.__name__}, got {value!r}")
    choices = meta.get("choices")
    if choices and value not in choices:
        raise InvalidInput(f"{name} {value!r} is not one of {', '.join(map(str, choices))}")
    for key, (words, ok) in _BOUNDS.items():
        bound = meta.get(key)
        if bound is not None and not ok(value, bound):
            raise InvalidInput(f"{name} must be {words} {bound}, got {value}")


def pydantic_fields(cls: type, exclude: tuple[str, ...] = ()) -> dict[str, tuple[Any, Any]]:
    """The fields of `cls` for `pydantic.create_model`: choices as a Literal, bounds and help as the Field's."""
    from pydantic import Field

    out = {}
    for f in dataclasses.fields(cls):
        if f.name in exclude:
            continue
        meta = f.metadata
        kind: Any = typing.Literal[meta["choices"]] if meta.get("choices") else value_type(cls, f.name)
        if optional(f):
            kind = kind | None
        out[f.name] = (kind, Field(f.default, description=meta["help"],
                                   **{k: meta[k] for k in _BOUNDS if meta.get(k) is not None}))
    return out
