"""A data config's `user_script` as the recipe sees it: where the file is, which of its functions each
component names, and the keyword arguments each is called with (checked against the function's
signature, read with `ast`: validate runs none of the user's code)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

from slmforge.data import user_script as us
from slmforge.errors import InvalidInput
from slmforge.recipe.base import NOT_SUPPORTED
from slmforge.recipe.data_config import DataConfig
from slmforge.recipe.loaded import LoadedRecipe

EVAL_CLASH = (f"a second (eval) data config is {NOT_SUPPORTED} with user_script functions; give "
              "eval_dataset_size to hold rows out of the training data")
# Filled in by the load_data step as Olive fills them from the input model (workflows/run/config.py).
AUTO_FILLED = {"pre_process_data": ("model_name", "task")}


def script_path(loaded: LoadedRecipe, dc: DataConfig, resolve: Callable[[LoadedRecipe, str], Path]) -> Path:
    """user_script relative to the recipe file, else (when script_dir is given) to script_dir."""
    assert dc.user_script is not None
    path = resolve(loaded, dc.user_script)
    if not path.exists() and dc.script_dir:
        beside = resolve(loaded, dc.script_dir) / dc.user_script
        if beside.exists():
            return beside
    return path


def script_inputs(loaded: LoadedRecipe, dc: DataConfig, resolve: Callable[[LoadedRecipe, str], Path]) -> dict:
    """The load_data inputs that carry the script (and script_dir) to the step, when a component names one."""
    if not dc.user_components:
        return {}
    out = {"user_script": script_path(loaded, dc, resolve)}
    if dc.script_dir:
        out["script_dir"] = resolve(loaded, dc.script_dir)
    return out


def component_kwargs(loaded: LoadedRecipe, i: int, kind: str, fn: us.Function | None) -> dict[str, Any]:
    """The keyword arguments a component passes: its keys beside `type`. A key that came from Olive
    0.4/0.5's shared `params_config` goes only to a function that takes it, as Olive passes it."""
    dc = loaded.recipe.data_configs[i]
    comp = dc.user_components[kind]
    out = {}
    for key, value in comp.kwargs.items():
        raw = loaded.normalised.raw_path(("data_configs", i, us.CONFIG_KEY[kind], key))
        shared = len(raw) >= 2 and raw[-2] == "params_config"
        if shared and fn is not None and not fn.var_kw and key not in fn.params:
            continue
        out[key] = value
    return out


def data_spec(loaded: LoadedRecipe, i: int, resolve: Callable[[LoadedRecipe, str], Path]) -> dict[str, Any]:
    """What the load_data step's spec says of the user functions: {kind: {"type", "params"}}."""
    dc = loaded.recipe.data_configs[i]
    if not dc.user_components:
        return {}
    index = us.index(script_path(loaded, dc, resolve))
    return {kind: {"type": c.type, "params": component_kwargs(loaded, i, kind, us.component(index, kind, c.type))}
            for kind, c in dc.user_components.items()}


def check_user_script(loaded: LoadedRecipe, resolve: Callable[[LoadedRecipe, str], Path]) -> Iterator[str]:
    for i, dc in enumerate(loaded.recipe.data_configs):
        comps = dc.user_components
        if dc.script_dir is not None and not resolve(loaded, dc.script_dir).is_dir():
            yield (f"{loaded.where('data_configs', i, 'script_dir')}: folder '{dc.script_dir}' not found "
                   f"(looked at {resolve(loaded, dc.script_dir)})")
            continue
        if dc.script_dir is not None:
            folder = resolve(loaded, dc.script_dir)
            engine = loaded.recipe.engine
            inside = [k for k in ("cache_dir", "output_dir") if resolve(loaded, getattr(engine, k)).is_relative_to(folder)]
            if inside:
                yield (f"{loaded.where('data_configs', i, 'script_dir')}: folder '{dc.script_dir}' holds the recipe's "
                       f"{inside[0]}; it travels with the step and is part of its cache key, so give a folder of "
                       "scripts only")
                continue
        if dc.user_script is None:
            for kind, c in comps.items():
                yield (f"{loaded.where('data_configs', i, us.CONFIG_KEY[kind], 'type')}: '{c.type}' is not one of "
                       "slmforge's components; a function of yours needs 'user_script' (the Python file defining it)")
            continue
        if "pre_process_data" in comps and getattr(dc.load_dataset_config, "is_hub", False):
            yield (f"{loaded.where('data_configs', i, 'pre_process_data_config', 'type')}: a user pre_process_data "
                   f"over a hub dataset is {NOT_SUPPORTED}; load it in a load_dataset function of the script")
            continue
        path = script_path(loaded, dc, resolve)
        where = loaded.where("data_configs", i, "user_script")
        if not path.is_file():
            yield f"{where}: file '{dc.user_script}' not found (looked at {path})"
            continue
        try:
            index = us.index(path)
        except InvalidInput as e:
            yield f"{where}: {e}"
            continue
        for kind, c in comps.items():
            at = loaded.where("data_configs", i, us.CONFIG_KEY[kind], "type")
            fn = us.component(index, kind, c.type)
            if fn is None:
                yield f"{at}: {path.name} has no {kind} function '{c.type}'{index.hint(kind, c.type)}"
                continue
            given = list(component_kwargs(loaded, i, kind, fn))
            for problem in us.check_kwargs(fn, given, AUTO_FILLED.get(kind, ())):
                yield f"{loaded.where('data_configs', i, us.CONFIG_KEY[kind])}: {problem} ({path.name}:{fn.line})"
