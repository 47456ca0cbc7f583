"""A step's parameters, declared once: name, type, default, allowed values, bounds and help.

Each step module has a `Params` dataclass whose fields are made with `param(...)` and whose base is
`StepParams`, so constructing one checks it (types, allowed values, bounds, then the class's own
`check()` for rules between fields). From it come the step's argparse (steps._cli.parser_for),
its component YAML (contract/component_yaml.py, `python -m slmforge.steps.components --write`) and
the recipe's fields for the step (`pydantic_fields`: `training_args`, the ModelBuilder and
MergeAdapterWeights passes, the `evaluate` block), so a parameter is written in one place.

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


def output_name(f: dataclasses.Field) -> str | None:
    """The component output a field writes (its own name unless `output` names another); None for an input."""
    out = f.metadata.get("output")
    return (out if isinstance(out, str) else f.name) if out else None


def optional(f: dataclasses.Field) -> bool:
    return f.default is None


def default(cls: type, name: str) -> Any:
    """The default of the field `name` of `cls` (where another definition takes it from)."""
    return cls.__dataclass_fields__[name].default


def help_text(cls: type, name: str) -> str:
    return cls.__dataclass_fields__[name].metadata["help"]


def ordered_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of `cls`, its own first, then those it inherits (the finetune step's training arguments)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    names = [n for klass in cls.__mro__ for n in vars(klass).get("__annotations__", {}) if n in fields]
    return [fields[n] for n in dict.fromkeys(names)]


class StepParams:
    """The base of every step's Params (a dataclass): constructing one checks it, so no caller can forget to."""

    def __post_init__(self) -> None:
        cls = type(self)
        for f in dataclasses.fields(cls):
            value = getattr(self, f.name)
            if value is None and f.default is MISSING:
                raise InvalidInput(f"parameter '{f.name}' is required")
            if value is not None:
                _check_value(f.name, value, value_type(cls, f.name), f.metadata)
        check = getattr(self, "check", None)
        if check is not None:
            check()


def make(cls: type, given: dict[str, Any]):
    """`cls(**given)` with unknown and missing names said as one line naming the parameter; constructing
    it checks types, allowed values and bounds, then the class's own `check()` (StepParams)."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise InvalidInput(f"unknown parameter '{unknown[0]}'")
    missing = [n for n, f in known.items() if f.default is MISSING and given.get(n) is None]
    if missing:
        raise InvalidInput(f"parameter '{missing[0]}' is required")
    return cls(**given)


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


def pydantic_fields(cls: type, exclude: tuple[str, ...] = (), *, only: tuple[str, ...] | None = None,
                    aliases: dict[str, str] | None = None,
                    recipe: dict[str, dict[str, Any]] | None = None) -> dict[str, tuple[Any, Any]]:
    """The fields of `cls` for `pydantic.create_model`: choices as a Literal, bounds and help as the Field's.
    `only`: just these names; `aliases`: other spellings a choice may take (Olive's fp16 for float16),
    allowed beside the choice they stand for; `recipe`: by name, where the recipe's field differs from
    the step's (its `default`, a longer `description`)."""
    from pydantic import Field

    out = {}
    for f in ordered_fields(cls):
        if f.name in exclude or only is not None and f.name not in only:
            continue
        meta, own = f.metadata, (recipe or {}).get(f.name, {})
        choices = meta.get("choices")
        if choices:
            choices += tuple(a for a, name in (aliases or {}).items() if name in choices)
        kind: Any = typing.Literal[choices] if choices else value_type(cls, f.name)
        value = own.get("default", f.default)
        if value is None:
            kind = kind | None
        out[f.name] = (kind, Field(value, description=own.get("description", meta["help"]),
                                   **{k: meta[k] for k in _BOUNDS if meta.get(k) is not None}))
    return out
