"""A recipe's `user_script`: Olive data components (`load_dataset_config.type`, ...) that name functions in it.

Olive imports the script and looks a component's `type` up in its registry (`@Registry.register_dataset()`
and friends, names in lower case); slmforge does the same, and also takes a plain function of that name.
Two halves:

- `index(script)` reads the script with `ast`, running none of it: `validate` finds each function, its
  line and its parameters there (a missing name is one line with a "did you mean").
- `loaded(script, script_dir)` imports it for the load_data step, with `olive_compat/` standing in for
  Olive when Olive is not installed, and `call` runs one function: whatever it raises becomes one line
  naming the function, the file and the line in the user's file where it failed.
"""

from __future__ import annotations

import ast
import contextlib
import difflib
import importlib.util
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from slmforge.errors import InvalidInput

KINDS = ("load_dataset", "pre_process_data", "post_process_data", "dataloader")
CONFIG_KEY = {k: f"{k}_config" for k in KINDS}  # the data config key that names a kind's function
_DECORATORS = {"register_dataset": "load_dataset", "register_default_dataset": "load_dataset",
               "register_pre_process": "pre_process_data", "register_default_pre_process": "pre_process_data",
               "register_post_process": "post_process_data", "register_default_post_process": "post_process_data",
               "register_dataloader": "dataloader", "register_default_dataloader": "dataloader"}
_DEFAULT_NAMES = {"load_dataset": "default_load_dataset", "pre_process_data": "default_pre_process_data",
                  "post_process_data": "default_post_process_data", "dataloader": "default_dataloader"}


@dataclass(frozen=True)
class Function:
    """A function of the script as `ast` sees it."""

    name: str
    line: int
    params: tuple[str, ...]  # keyword-passable parameters (a component's first, the data, left out)
    required: tuple[str, ...]  # those without a default
    var_kw: bool  # takes **kwargs


@dataclass
class ScriptIndex:
    path: Path
    registered: dict[str, dict[str, Function]] = field(default_factory=lambda: {k: {} for k in KINDS})
    plain: dict[str, Function] = field(default_factory=dict)

    def find(self, kind: str, name: str) -> Function | None:
        """Olive's lookup (registered, case-insensitive), then a plain function of that name."""
        hit = self.registered[kind].get(name.lower()) or self.plain.get(name)
        if hit is None:
            hit = next((f for n, f in self.plain.items() if n.lower() == name.lower()), None)
        return hit

    def names(self, kind: str) -> list[str]:
        return list(dict.fromkeys([*self.registered[kind], *self.plain]))

    def hint(self, kind: str, name: str) -> str:
        match = difflib.get_close_matches(name.lower(), [n.lower() for n in self.names(kind)], n=1, cutoff=0.5)
        if match:
            return f"; did you mean '{next(n for n in self.names(kind) if n.lower() == match[0])}'?"
        known = self.names(kind)
        return f" (it defines: {', '.join(known)})" if known else " (it defines no function)"


def index(path: Path) -> ScriptIndex:
    """The script's top-level functions and what each is registered as; a syntax error is InvalidInput."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8-sig"), filename=str(path))
    except SyntaxError as e:
        raise InvalidInput(f"{path}:{e.lineno}: not valid Python ({e.msg})") from None
    out = ScriptIndex(path)
    for node in tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        kinds = [(kind, name) for kind, name in map(_registration, node.decorator_list) if kind]
        for kind, name in kinds:
            out.registered[kind][(name or node.name).lower()] = _function(node, skip_first=kind != "load_dataset")
        out.plain[node.name] = _function(node, skip_first=False)
    return out


def component(index_: ScriptIndex, kind: str, name: str) -> Function | None:
    """The function a `type` names, with its parameters as Olive passes them (a plain function used as a
    pre-process, post-process or dataloader gets the data first, too)."""
    fn = index_.find(kind, name)
    if fn is None or kind == "load_dataset" or name.lower() in index_.registered[kind]:
        return fn
    params = fn.params[1:]
    return Function(fn.name, fn.line, params, tuple(p for p in fn.required if p in params), fn.var_kw)


def _registration(deco: ast.expr) -> tuple[str | None, str | None]:
    """(kind, name) of `@Registry.register_dataset("name")`-style decorators; (None, None) otherwise."""
    if not (isinstance(deco, ast.Call) and isinstance(deco.func, ast.Attribute)):
        return None, None
    attr = deco.func.attr
    if attr in _DECORATORS:
        kind = _DECORATORS[attr]
        if attr.startswith("register_default_"):
            return kind, _DEFAULT_NAMES[kind]
        args = [*deco.args, *(k.value for k in deco.keywords if k.arg == "name")]
        name = args[0].value if args and isinstance(args[0], ast.Constant) and isinstance(args[0].value, str) else None
        return kind, name
    if attr == "register" and deco.args:  # Registry.register(DataComponentType.LOAD_DATASET, "name")
        first = deco.args[0]
        label = (first.attr if isinstance(first, ast.Attribute) else
                 first.value if isinstance(first, ast.Constant) else "")
        kind = next((k for k in KINDS if str(label).lower() == k), None)
        second = deco.args[1] if len(deco.args) > 1 else None
        return kind, second.value if isinstance(second, ast.Constant) else None
    return None, None


def _function(node: ast.FunctionDef | ast.AsyncFunctionDef, skip_first: bool) -> Function:
    a = node.args
    positional = [*a.posonlyargs, *a.args]
    defaults_from = len(positional) - len(a.defaults)
    names, required = [], []
    for i, arg in enumerate(positional):
        if skip_first and i == 0:
            continue
        if i < len(a.posonlyargs):
            continue
        names.append(arg.arg)
        if i < defaults_from:
            required.append(arg.arg)
    for arg, default in zip(a.kwonlyargs, a.kw_defaults):
        names.append(arg.arg)
        if default is None:
            required.append(arg.arg)
    return Function(node.name, node.lineno, tuple(names), tuple(required), a.kwarg is not None)


def check_kwargs(fn: Function, given: list[str], filled: tuple[str, ...] = ()) -> list[str]:
    """Problems with the keyword arguments a recipe passes to `fn` (unknown ones, missing required ones);
    `filled`: those slmforge passes itself when `fn` takes them."""
    problems, meant = [], set()
    if not fn.var_kw:
        for key in given:
            if key not in fn.params:
                match = difflib.get_close_matches(key, fn.params, n=1, cutoff=0.5)
                meant.update(match)  # a misspelt key: its real name is not "missing" as well
                hint = f"; did you mean '{match[0]}'?" if match else f" (it takes: {', '.join(fn.params) or 'none'})"
                problems.append(f"'{key}' is not a parameter of {fn.name}(){hint}")
    missing = [p for p in fn.required if p not in given and p not in filled and p not in meant]
    if missing:
        problems.append(f"{fn.name}() needs '{missing[0]}' (no default): give it beside 'type'")
    return problems


# --------------------------------------------------------------------------- running the script


@dataclass
class Script:
    path: Path
    module: Any
    registry: Any  # olive.data.registry.Registry (the real one or slmforge's stand-in), None if never imported

    def function(self, kind: str, name: str) -> Callable:
        registry = self.registry or sys.modules.get("olive.data.registry", None)
        registry = getattr(registry, "Registry", registry)
        if registry is not None:
            try:
                return registry.get_component(kind, name)
            except KeyError:
                pass
        fn = getattr(self.module, name, None)
        if fn is None:
            fn = next((v for k, v in vars(self.module).items() if k.lower() == name.lower() and callable(v)), None)
        if not callable(fn):
            raise InvalidInput(f"{self.path}: no function '{name}' for {CONFIG_KEY[kind]}.type "
                               f"(neither registered as one nor defined by that name)")
        return fn

    def call(self, kind: str, name: str, *args, **kwargs) -> Any:
        fn = self.function(kind, name)
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - the user's code: any failure becomes one line naming it
            raise user_error(e, self.path, f"{CONFIG_KEY[kind]}.type '{name}'") from None


@contextlib.contextmanager
def loaded(path: str | Path, script_dir: str | Path | None = None) -> Iterator[Script]:
    """The user's script imported (its folder, or script_dir, first on sys.path; slmforge's stand-in for
    Olive beside it when Olive is not installed) for the duration of the block; sys.path and sys.modules
    are put back afterwards, so the stand-in is there only while a user script runs."""
    from slmforge.data.olive_compat import ROOT

    path = Path(path).resolve()
    if not path.is_file():
        raise InvalidInput(f"user_script not found: {path}")
    folders = [str(Path(script_dir).resolve()) if script_dir else str(path.parent)]
    if importlib.util.find_spec("olive") is None:
        folders.append(str(ROOT))
    saved_path, saved_modules = list(sys.path), set(sys.modules)
    sys.path[:0] = folders
    try:
        yield _import(path)
    finally:
        sys.path[:] = saved_path
        for name in set(sys.modules) - saved_modules:
            if name.split(".")[0] in ("olive", _MODULE):
                del sys.modules[name]


_MODULE = "slmforge_user_script"


def _import(path: Path) -> Script:
    spec = importlib.util.spec_from_file_location(_MODULE, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[_MODULE] = module
    try:
        spec.loader.exec_module(module)
    except ImportError as e:
        if (e.name or "").split(".")[0] == "olive" and _stand_in():
            what = e.name if isinstance(e, ModuleNotFoundError) else f"{e.name}.{_missing_name(e)}"
            raise InvalidInput(f"{_where(e, path)}: imports {what}, which slmforge's stand-in for Olive does not "
                               f"provide (it has {', '.join(_stand_in().PROVIDED)}); install Olive to use it") from None
        raise user_error(e, path, "importing it") from None
    except Exception as e:  # noqa: BLE001 - the user's code
        raise user_error(e, path, "importing it") from None
    return Script(path, module, sys.modules.get("olive.data.registry"))


def _missing_name(error: ImportError) -> str:
    """The name of `cannot import name 'X' from 'olive.model'`."""
    text = str(error)
    return text.split("'")[1] if text.count("'") >= 2 else "?"


def _stand_in():
    olive = sys.modules.get("olive")
    return olive if getattr(olive, "SLMFORGE_STAND_IN", False) else None


def _where(error: BaseException, path: Path) -> str:
    """`file:line` of the last frame of the traceback inside the user's file (the file alone if none)."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if Path(f.filename).resolve() == path]
    return f"{path}:{frames[-1].lineno}" if frames else str(path)


def user_error(error: BaseException, path: Path, what: str) -> InvalidInput:
    """One line for a failure in the user's code: where in their file, in which function, and the error."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if Path(f.filename).resolve() == path]
    inside = f" in {frames[-1].name}()" if frames and frames[-1].name != "<module>" else ""
    first = (str(error).strip().splitlines() or [""])[0]
    return InvalidInput(f"{_where(error, path)}{inside}: {what} raised {type(error).__name__}"
                        + (f": {first}" if first else ""))


# --------------------------------------------------------------------------- what the functions return


def rows_of(value: Any, what: str) -> list[dict]:
    """Rows from a load_dataset function's result: a datasets.Dataset, a pandas DataFrame or a list of dicts."""
    kind = type(value).__name__
    if kind in ("DatasetDict", "IterableDatasetDict"):
        raise InvalidInput(f"{what} returned a {kind} (splits {', '.join(value)}); return one split")
    if hasattr(value, "to_list") and hasattr(value, "column_names"):  # datasets.Dataset
        return value.to_list()
    if hasattr(value, "to_dict") and hasattr(value, "columns"):  # pandas.DataFrame
        return value.to_dict(orient="records")
    if isinstance(value, (list, tuple)) and all(isinstance(r, dict) for r in value):
        return list(value)
    raise InvalidInput(f"{what} returned {kind}; slmforge reads a datasets.Dataset, a pandas DataFrame "
                       "or a list of dicts")


def examples_of(value: Any, what: str) -> list[tuple[list[int], list[int], list[int] | None]]:
    """(input_ids, labels, attention_mask) per example of a pre_process function's result, read as Olive's
    training reads it: indexable, each item a dict with input_ids (labels default to input_ids) or an
    (inputs, labels) pair."""
    try:
        n = len(value)
    except TypeError:
        raise InvalidInput(f"{what} returned {type(value).__name__}, which has no length; return a "
                           "datasets.Dataset or a list of dicts with input_ids") from None
    out = []
    for i in range(n):
        item = value[i]
        labels = None
        if isinstance(item, tuple) and len(item) == 2:
            item, labels = item
        if not isinstance(item, dict) or "input_ids" not in item:
            raise InvalidInput(f"{what}: example {i} is {type(item).__name__} without input_ids; each example "
                               "must be a dict with input_ids (and optionally labels, attention_mask)")
        ids = _ints(item["input_ids"], what, i, "input_ids")
        labels = _ints(labels if labels is not None else item.get("labels", ids), what, i, "labels")
        mask = item.get("attention_mask")
        mask = _ints(mask, what, i, "attention_mask") if mask is not None else None
        for name, seq in (("labels", labels), ("attention_mask", mask)):
            if seq is not None and len(seq) != len(ids):
                raise InvalidInput(f"{what}: example {i}: {name} has {len(seq)} entries, input_ids {len(ids)}")
        out.append((ids, labels, mask))
    if not out:
        raise InvalidInput(f"{what} returned no examples")
    return out


def _ints(seq: Any, what: str, i: int, name: str) -> list[int]:
    seq = seq.tolist() if hasattr(seq, "tolist") else seq
    if not isinstance(seq, (list, tuple)) or not all(isinstance(t, int) and not isinstance(t, bool) for t in seq):
        raise InvalidInput(f"{what}: example {i}: {name} must be a flat list of token ids")
    return list(seq)


# --------------------------------------------------------------------------- the load_data step's use


def read_user_rows(script: Script, spec: dict, text_cols: list[str], *, chat: bool, max_samples: int | None):
    """readers.Rows from the user's load_dataset function, checked as rows read from a file are."""
    from slmforge.data.readers import Rows, check_rows, limit_rows

    comp = spec["load_dataset"]
    what = f"{script.path.name}: load_dataset_config.type '{comp['type']}'"
    rows = rows_of(script.call("load_dataset", comp["type"], **comp["params"]), what)
    records = ((script.path, f"row {i + 1} of {comp['type']}()", r) for i, r in enumerate(rows))
    return limit_rows(check_rows(Rows(script.path), records, text_cols, chat), max_samples)


def user_examples(script: Script, spec: dict, model_name: str, data_file: Path | None, data_format: str, split: str):
    """(input_ids, labels, attention_mask) per example from the user's pre_process function, called as
    Olive calls it: the loaded dataset first (the user's load_dataset function's result, else the data
    file as a datasets.Dataset), then its keyword arguments (model_name and task filled in from the input
    model when the function takes them)."""
    if "load_dataset" in spec:
        dataset = script.call("load_dataset", spec["load_dataset"]["type"], **spec["load_dataset"]["params"])
    else:
        dataset = load_file_dataset(data_file, data_format, split)
    comp = spec["pre_process_data"]
    fn = script.function("pre_process_data", comp["type"])
    import inspect

    try:
        taken = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        taken = {}
    var_kw = any(p.kind == p.VAR_KEYWORD for p in taken.values())
    kwargs = dict(comp["params"])
    for key, value in (("model_name", model_name), ("task", "text-generation")):
        if key not in kwargs and (key in taken or var_kw):
            kwargs[key] = value
    what = f"{script.path.name}: pre_process_data_config.type '{comp['type']}'"
    return examples_of(script.call("pre_process_data", comp["type"], dataset, **kwargs), what)


def load_file_dataset(path: Path, data_format: str, split: str):
    """A data file as the `datasets.Dataset` Olive's huggingface_dataset hands a pre-process function."""
    from datasets import load_dataset

    return load_dataset(data_format, data_files=str(path), split=split)
