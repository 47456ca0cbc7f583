"""Read a recipe file (JSON or YAML), validate it, and report every problem on its own line.

Each problem reads `<recipe file>: <json.path>: <message>`, so it can be found in the file at once.
"""

from __future__ import annotations

import json
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from slmforge.errors import InvalidInput
from slmforge.recipe.checks import check_recipe
from slmforge.recipe.generations import Normalised, canonical_name, did_you_mean, dotted, normalise, old_spellings
from slmforge.recipe.loaded import LoadedRecipe
from slmforge.recipe.naming import resolve_registered_input
from slmforge.recipe.schema import Recipe

MAX_VALUES = 100_000  # values in a recipe after YAML aliases are expanded; real recipes have hundreds


class DuplicateKey(ValueError):
    """A JSON object names one key twice (json.loads would silently keep the last)."""


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise DuplicateKey(key)
        seen[key] = value
    return seen


def read_raw(path: Path) -> dict[str, Any]:
    from slmforge.data.readers import read_text

    if path.is_dir():
        raise InvalidInput(f"{path}: is a folder; expected a recipe file (.json, .yaml or .yml)")
    if not path.is_file():
        raise InvalidInput(f"{path}: recipe file not found")
    text = read_text(path)  # UTF-8, with or without a BOM
    try:
        if path.suffix.lower() in (".yml", ".yaml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except DuplicateKey as e:
        raise InvalidInput(f"{path}: key '{e}' appears twice in one object; JSON keeps only the last, so "
                           "keep one") from None
    except json.JSONDecodeError as e:
        raise InvalidInput(f"{path}: line {e.lineno} column {e.colno}: not valid JSON: {e.msg}") from None
    except RecursionError:
        raise InvalidInput(f"{path}: nested too deep (lists or objects inside each other far beyond any "
                           "recipe)") from None
    except Exception as e:  # yaml.YAMLError: its str carries line and column
        first = " ".join(str(e).split())
        raise InvalidInput(f"{path}: not valid YAML: {first}") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"{path}: the recipe must be a JSON object at the top level")
    _check_values(path, data)
    return data


def _check_values(path: Path, data: Any) -> None:
    """Refuse what no key can mean: a string with a NUL byte (no path can hold one), and a YAML
    document whose aliases expand to more values than any recipe has (an alias bomb)."""
    stack: list[tuple[list[str | int], Any]] = [([], data)]
    seen = 0
    while stack:
        where, value = stack.pop()
        seen += 1
        if seen > MAX_VALUES:
            raise InvalidInput(f"{path}: more than {MAX_VALUES} values once its YAML aliases are expanded; "
                               "a recipe is far smaller (an alias bomb?)")
        if isinstance(value, dict):
            stack.extend(([*where, str(k)], v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend(([*where, i], v) for i, v in enumerate(value))
        elif isinstance(value, str) and "\x00" in value:
            raise InvalidInput(f"{path}: {dotted(where) or '(top level)'}: holds a NUL byte")


def load_recipe(path: str | Path, *, check_files: bool = True, raw: dict[str, Any] | None = None) -> LoadedRecipe:
    """Parse and fully validate a recipe; raise InvalidInput listing every problem. `raw`: the recipe's
    content as given (the Python API's overrides applied), read instead of the file at `path`."""

    path = Path(path).expanduser().resolve()
    raw = read_raw(path) if raw is None else raw
    norm = normalise(raw)  # any Olive generation -> the canonical shape
    problems = [f"{path}: {dotted(p)}: {m}" for p, m in norm.problems]
    try:
        recipe = Recipe.model_validate(norm.data)
    except ValidationError as e:
        problems += [f"{path}: {p}" for p in format_validation_errors(e, norm)]
    if problems:
        raise InvalidInput(problems[0], problems) from None
    loaded = LoadedRecipe(recipe=recipe, path=path, raw=raw, normalised=norm)
    resolve_registered_input(loaded)  # a models:/ input model: its registered folder, before anything reads it
    problems = [f"{path}: {p}" for p in check_recipe(loaded, check_files=check_files)]
    if problems:
        raise InvalidInput(problems[0], problems)
    return loaded


# --------------------------------------------------------------------------- error formatting


def format_validation_errors(error: ValidationError, norm: Normalised) -> list[str]:
    entries: list[tuple[list[str | int], str, str]] = []  # (the user's path, kind, message)
    for err in error.errors():
        cpath = _canonical_path(err["loc"], norm.data, err["type"])
        path = list(norm.raw_path(tuple(cpath)))
        entries.append((path, err["type"], _message(err, path, cpath, norm.data)))
    # A misspelt key also makes its real name "missing": report the typo once, with its hint.
    suggested = {(dotted(p[:-1]), canonical_name(m.split("did you mean '")[1].rstrip("'?")))
                 for p, kind, m in entries if kind == "extra_forbidden" and "did you mean" in m}
    lines: list[str] = []
    for path, kind, message in entries:
        if kind == "missing" and path and (dotted(path[:-1]), str(path[-1])) in suggested:
            continue
        if kind == "missing" and any(tuple(path[:len(t)]) == t for t in norm.typo_sections):
            continue  # the misspelt level the normaliser reported is where this key was
        line = f"{dotted(path) or '(top level)'}: {message}"
        if line not in lines:
            lines.append(line)
    return _drop_union_noise(lines)


def _canonical_path(loc: tuple, data: Any, kind: str) -> list[str | int]:
    """A pydantic location without its union tags: a part is a key only where the data has it."""
    path: list[str | int] = []
    node = data
    for i, part in enumerate(loc):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        elif i == len(loc) - 1 and kind == "missing":
            node = None
        else:
            continue  # a union member's tag (a pass type, 'str', 'function-after[...]')
        path.append(part)
    return path


def _message(err: dict, path: list[str | int], cpath: list[str | int], data: Any) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        key = str(path[-1]) if path else "?"
        known = _known_keys(cpath[:-1], data) + old_spellings(tuple(cpath[:-1]))
        return f"unknown key '{key}'{did_you_mean(key, known)}"
    if kind == "missing":
        return "required key is missing"
    if kind == "literal_error":
        return f"got {err.get('input')!r}; expected {err['ctx']['expected']}"
    if kind == "union_tag_invalid":
        return f"unknown type {err['ctx']['tag']!r}; expected one of {err['ctx']['expected_tags']}"
    if kind == "union_tag_not_found":
        return "needs a 'type'"
    if kind == "value_error":
        return str(err["ctx"]["error"])
    msg = err["msg"]
    return f"{msg} (got {err.get('input')!r})" if "input" in err and not isinstance(err["input"], (dict, list)) else msg


def _drop_union_noise(lines: list[str]) -> list[str]:
    """A `str | Model` field reports one failure per member: keep the deepest, or merge them."""
    paths = [line.split(": ", 1)[0] for line in lines]
    kept: list[str] = []
    merged: dict[str, int] = {}  # path -> index in kept of its "should be a valid" line
    for line, path in zip(lines, paths):
        message = line.split(": ", 1)[1]
        if not message.startswith("Input should be a valid"):
            kept.append(line)
            continue
        if any(p != path and p.startswith((path + ".", path + "[")) for p in paths):
            continue  # a deeper error inside the object member says more
        what = message.removeprefix("Input should be a valid ").split(" (got ")[0].split(" or instance")[0]
        if path in merged:
            i = merged[path]
            head, got = kept[i].rsplit(" (got ", 1) if " (got " in kept[i] else (kept[i], None)
            kept[i] = f"{head} or {what}" + (f" (got {got}" if got else "")
        else:
            merged[path] = len(kept)
            kept.append(line)
    return kept


def _known_keys(path: list[str | int], data: Any) -> list[str]:
    """The keys allowed at a canonical path, found by walking the schema along it."""
    annotation: Any = Recipe
    node = data
    for part in path:
        child_node = None
        if isinstance(node, dict) and isinstance(part, str):
            child_node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            child_node = node[part]
        model = _resolve(annotation, node)
        if model is not None:
            fields = model.model_fields
            field = fields.get(part) or next((f for f in fields.values() if f.alias == part), None)
            if field is None:
                return []
            annotation = field.annotation
        else:
            args = typing.get_args(_strip(annotation))
            if not args:
                return []
            annotation = args[-1]  # list[X] or dict[str, X]: the item type
        node = child_node
    model = _resolve(annotation, node)
    if model is None:
        return []
    return [f.alias or name for name, f in model.model_fields.items()]


def _strip(annotation: Any) -> Any:
    """Drop Annotated and Optional wrappers."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return _strip(args[0])
    return annotation


def _resolve(annotation: Any, node: Any) -> type[BaseModel] | None:
    """The model an annotation stands for at this node (a union is decided by the node's 'type')."""
    annotation = _strip(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        return None
    models = [m for m in (_resolve(a, node) for a in typing.get_args(annotation)) if m is not None]
    tag = node.get("type") if isinstance(node, dict) else None
    for m in models:
        type_field = m.model_fields.get("type")
        if type_field is not None and (tag in typing.get_args(_strip(type_field.annotation))
                                       or (tag is None and not type_field.is_required())):
            return m
    return models[0] if len(models) == 1 else None
