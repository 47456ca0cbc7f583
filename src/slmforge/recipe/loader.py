"""Read a recipe file (JSON or YAML), validate it, and report every problem on its own line.

Each problem reads `<recipe file>: <json.path>: <message>`, so it can be found in the file at once.
"""

from __future__ import annotations

import difflib
import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from slmforge.errors import InvalidInput
from slmforge.recipe.schema import Recipe

MAX_VALUES = 100_000  # values in a recipe after YAML aliases are expanded; real recipes have hundreds
# Levels that `schema._unwrap` folds away; the formatter puts them back into paths.
_WRAPPER_LEVELS = ("config", "params")
_TAGS = {"PyTorchModel", "HfModel", "LocalSystem", "AzureML", "LoRA", "QLoRA", "MergeAdapterWeights",
         "ModelBuilder", "str", "list[str]", "AzureMLRegistryModel", "AzureMLDatastoreFiles",
         "Accelerator", "function-after", "function-before", "literal['cpu','gpu','npu']"}


@dataclass(frozen=True)
class LoadedRecipe:
    recipe: Recipe
    path: Path  # the recipe file, resolved
    raw: dict[str, Any]

    @property
    def base_dir(self) -> Path:
        return self.path.parent


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
    from slmforge.datasets_io import read_text

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
            raise InvalidInput(f"{path}: {_dotted(where) or '(top level)'}: holds a NUL byte")


def load_recipe(path: str | Path, *, check_files: bool = True) -> LoadedRecipe:
    """Parse and fully validate a recipe; raise InvalidInput listing every problem."""
    from slmforge.recipe.checks import check_recipe

    path = Path(path).expanduser().resolve()
    raw = read_raw(path)
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as e:
        problems = [f"{path}: {p}" for p in format_validation_errors(e, raw)]
        raise InvalidInput(problems[0], problems) from None
    loaded = LoadedRecipe(recipe=recipe, path=path, raw=raw)
    problems = [f"{path}: {p}" for p in check_recipe(loaded, check_files=check_files)]
    if problems:
        raise InvalidInput(problems[0], problems)
    return loaded


# --------------------------------------------------------------------------- error formatting


def format_validation_errors(error: ValidationError, raw: dict[str, Any]) -> list[str]:
    entries: list[tuple[list[str | int], str, str]] = []  # (path, kind, message)
    for err in error.errors():
        path = _raw_path(err["loc"], raw)
        entries.append((path, err["type"], _message(err, path, raw)))
    # A misspelt key also makes its real name "missing": report the typo once, with its hint.
    suggested = {(_dotted(p[:-1]), m.split("did you mean '")[1].rstrip("'?"))
                 for p, kind, m in entries if kind == "extra_forbidden" and "did you mean" in m}
    lines: list[str] = []
    for path, kind, message in entries:
        if kind == "missing" and path and (_dotted(path[:-1]), str(path[-1])) in suggested:
            continue
        line = f"{_dotted(path) or '(top level)'}: {message}"
        if line not in lines:
            lines.append(line)
    return _drop_union_noise(lines)


def _raw_path(loc: tuple, raw: Any) -> list[str | int]:
    """Map a pydantic location onto the keys the user wrote (union tags out, wrapper levels in)."""
    path: list[str | int] = []
    node = raw
    for part in loc:
        if isinstance(part, str) and (part in _TAGS or part.startswith(("function-", "literal[", "union["))):
            continue
        if isinstance(node, dict) and isinstance(part, str) and part not in node:
            for level in _WRAPPER_LEVELS:
                inner = node.get(level)
                if isinstance(inner, dict) and (part in inner or _expected_inside(level, node)):
                    path.append(level)
                    node = inner
                    break
        path.append(part)
        if isinstance(node, dict):
            node = node.get(part) if isinstance(part, str) else None
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            node = None
    return path


def _expected_inside(level: str, node: dict) -> bool:
    """A missing field belongs inside the wrapper level when the user wrote that level."""
    return isinstance(node.get(level), dict)


def _dotted(path: list[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _message(err: dict, path: list[str | int], raw: Any) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        key = str(path[-1]) if path else "?"
        hint = _did_you_mean(key, _known_keys(path[:-1], raw))
        return f"unknown key '{key}'{hint}"
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


def _known_keys(path: list[str | int], raw: Any) -> list[str]:
    """The keys allowed at `path`, found by walking the schema along the user's own path."""
    annotation: Any = Recipe
    node = raw
    for part in path:
        child_node = None
        if isinstance(node, dict) and isinstance(part, str):
            child_node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            child_node = node[part]
        model = _resolve(annotation, node)
        if model is not None:
            fields = model.model_fields
            if part in _WRAPPER_LEVELS and part not in fields:
                annotation, node = model, child_node
                continue  # a folded wrapper level: same model
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
        if type_field is not None and tag in typing.get_args(_strip(type_field.annotation)):
            return m
    return models[0] if len(models) == 1 else None


def _did_you_mean(key: str, known: list[str]) -> str:
    match = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
    return f"; did you mean '{match[0]}'?" if match else ""
