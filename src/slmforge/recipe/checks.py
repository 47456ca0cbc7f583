"""Checks across fields that a schema cannot express: references, paths, template columns, pass order.

Each check returns problems as `<json.path>: <message>`; the loader prefixes the recipe file.
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Iterator

from slmforge.errors import InvalidInput
from slmforge.models.folder_check import model_folder_problem
from slmforge.models.model_folder import is_local_model
from slmforge.recipe.evaluators import active as active_evaluator
from slmforge.recipe.evaluators import check_evaluators
from slmforge.recipe.limits import check_limits
from slmforge.recipe.load_kwargs import check_load_kwargs, load_kwargs_notes
from slmforge.recipe.loaded import LoadedRecipe
from slmforge.recipe.schema import AzureMLSystem, ExtractAdaptersPass, FinetunePass, MergePass, ModelBuilderPass
from slmforge.recipe.user_script import check_user_script
from slmforge.training.methods import PASS_TYPES, by_pass_type


def check_recipe(loaded: LoadedRecipe, *, check_files: bool = True) -> list[str]:
    problems: list[str] = []
    for check in (_check_references, check_evaluators, _check_passes, _check_secrets, _check_templates,
                  check_load_kwargs):
        problems.extend(check(loaded))
    if check_files:
        problems.extend(_check_model_path(loaded))
        problems.extend(_check_data_files(loaded))
        problems.extend(check_user_script(loaded, resolve_path))
    problems.extend(check_limits(loaded, local_model_dir(loaded) if check_files else None, data_config_path))
    return problems


def template_fields(template: str) -> list[str]:
    """Placeholder names of a `str.format` template, in order."""
    return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]


_LOAD_FIELDS = ("data_name", "data_files", "split", "subset", "data_dir", "revision", "col_filters")


def data_config_path(loaded: LoadedRecipe, index: int, field: str) -> str:
    """The JSON path of a load/pre-process field, in the shape the user wrote."""
    block = "load_dataset_config" if field in _LOAD_FIELDS else "pre_process_data_config"
    return loaded.where("data_configs", index, block, field)


def _check_references(loaded: LoadedRecipe) -> Iterator[str]:
    r = loaded.recipe
    names = [dc.name for dc in r.data_configs]
    for i, name in enumerate(names):
        if names.index(name) != i:
            yield f"data_configs[{i}].name: duplicate data config name '{name}'"
    for pname, p in r.passes.items():
        if isinstance(p, FinetunePass):
            for field in ("train_data_config", "eval_data_config"):
                ref = getattr(p, field)
                if ref is not None and ref not in names:
                    yield f"{loaded.where('passes', pname, field)}: no data config named '{ref}'{_hint(ref, names)}"
    if r.evaluate.data_config is not None and r.evaluate.data_config not in names:
        ref = r.evaluate.data_config
        yield f"evaluate.data_config: no data config named '{ref}'{_hint(ref, names)}"
    if not r.evaluate.enabled:
        evaluator = active_evaluator(r)
        if evaluator is not None:
            yield f"evaluate.enabled: false, but the engine names an evaluator '{evaluator[0]}' (drop one)"
        if r.engine.evaluate_input_model:
            yield "evaluate.enabled: false, but engine.evaluate_input_model is true (drop one)"
    for field in ("host", "target"):
        ref = getattr(r.engine, field)
        if ref is not None and ref not in r.systems:
            yield f"{loaded.where('engine', field)}: no system named '{ref}'{_hint(ref, list(r.systems))}"


def _check_passes(loaded: LoadedRecipe) -> Iterator[str]:
    seen_finetune = seen_merge = seen_build = None
    separate = any(isinstance(p, ExtractAdaptersPass) for p in loaded.recipe.passes.values())  # the build reads no adapter
    for name, p in loaded.recipe.passes.items():
        where = loaded.where("passes", name)
        if isinstance(p, ModelBuilderPass) and seen_finetune and not seen_merge and not separate:
            finetune = loaded.recipe.passes[seen_finetune]
            if not by_pass_type(finetune.type).builder_reads_adapter:
                yield (f"{where}: the ONNX builder reads LoRA adapters only; put a MergeAdapterWeights pass "
                       f"between the {finetune.type} pass '{seen_finetune}' and ModelBuilder")
        if isinstance(p, FinetunePass):
            if seen_finetune:
                yield f"{where}: a second fine-tune pass; '{seen_finetune}' already fine-tunes"
            if seen_build:
                yield f"{where}: fine-tuning must come before the ModelBuilder pass '{seen_build}'"
            seen_finetune = name
        elif isinstance(p, MergePass):
            if not seen_finetune:
                yield f"{where}: MergeAdapterWeights needs a fine-tune pass ({', '.join(PASS_TYPES)}) before it"
            if seen_merge:
                yield f"{where}: a second MergeAdapterWeights pass"
            if seen_build:
                yield f"{where}: MergeAdapterWeights must come before ModelBuilder"
            seen_merge = name
        elif isinstance(p, ModelBuilderPass):
            if seen_build:
                yield f"{where}: a second ModelBuilder pass"
            seen_build = name
    yield from _check_extract(loaded)


def _check_extract(loaded: LoadedRecipe) -> Iterator[str]:
    """ExtractAdapters: a LoRA or QLoRA fine-tune, a ModelBuilder to build the base, no merge."""
    passes = loaded.recipe.passes
    extract = next((n for n, p in passes.items() if isinstance(p, ExtractAdaptersPass)), None)
    if extract is None:
        return
    where, p = loaded.where("passes", extract), passes[extract]
    finetune = next((q for q in passes.values() if isinstance(q, FinetunePass)), None)
    refused = by_pass_type(finetune.type) if finetune is not None else None
    if p.adapter_type != "lora":
        refused = by_pass_type(p.adapter_type)
    if refused is not None and not refused.genai_adapter:
        yield (f"{where}: a {refused.pass_type} adapter cannot be served separately: {refused.genai_adapter_why} "
               "(without ExtractAdapters)")
    elif finetune is None:
        yield f"{where}: ExtractAdapters needs a LoRA or QLoRA pass before it (the adapter it writes out)"
    if any(isinstance(q, MergePass) for q in passes.values()):
        yield (f"{where}: MergeAdapterWeights bakes the adapter into the model and ExtractAdapters keeps it separate; "
               "keep one of them")
    if sum(isinstance(q, ExtractAdaptersPass) for q in passes.values()) > 1:
        yield f"{where}: a second ExtractAdapters pass"
    if not any(isinstance(q, ModelBuilderPass) for q in passes.values()):
        yield f"{where}: ExtractAdapters needs a ModelBuilder pass (or Olive's ONNX export chain) to build the base"


def _check_secrets(loaded: LoadedRecipe) -> Iterator[str]:
    r = loaded.recipe
    for name, system in r.systems.items():
        if isinstance(system, AzureMLSystem) and system.hf_token:
            if r.azureml_client is None or not r.azureml_client.keyvault_name:
                yield (f"{loaded.where('systems', name)}: hf_token is true but azureml_client.keyvault_name is not set "
                       "(the token is read from that Key Vault's secret 'hf-token')")


def _check_templates(loaded: LoadedRecipe) -> Iterator[str]:
    for i, dc in enumerate(loaded.recipe.data_configs):
        pre = dc.pre_process_data_config
        if "pre_process_data" in dc.user_components or pre.chat_template:
            continue  # the tokenizer's template; load_data names a bad conversation by its line
        try:
            fields = template_fields(pre.text_template)
        except ValueError as e:
            yield f"{data_config_path(loaded, i, 'text_template')}: not a valid template: {e}"
            continue
        for field in fields:
            if field not in pre.columns:
                yield (f"{data_config_path(loaded, i, 'text_template')}: placeholder '{{{field}}}' "
                       f"is not in text_cols {pre.columns}{_hint(field, pre.columns)}")
        if pre.loss_on == "completion" and not fields:
            yield f"{data_config_path(loaded, i, 'loss_on')}: 'completion' needs a text_template with placeholders"
        if fields and fields.count(fields[-1]) > 1:  # the last placeholder is the answer (data/template.py)
            yield (f"{data_config_path(loaded, i, 'text_template')}: the answer placeholder '{{{fields[-1]}}}' "
                   f"appears {fields.count(fields[-1])} times; it may appear once, at the end (an earlier one "
                   "puts the answer in the prompt)")


def _local_model_ref(loaded: LoadedRecipe) -> tuple[str, str, str] | None:
    """(value, json path, what) of an input model that is a local path; None for a hub id or Azure ML."""
    name = loaded.recipe.input_model.model_path
    if not isinstance(name, str):
        return None  # an Azure ML registry model
    where = loaded.where("input_model", "model_path")
    if is_local_model(name, loaded.base_dir):
        return name, where, "model folder"
    return None


def local_model_dir(loaded: LoadedRecipe) -> Path | None:
    ref = _local_model_ref(loaded)
    path = resolve_path(loaded, ref[0]) if ref else None
    return path if path is not None and path.is_dir() else None


def _check_model_path(loaded: LoadedRecipe) -> Iterator[str]:
    ref = _local_model_ref(loaded)
    if ref is None:
        return
    name, where, _ = ref
    if not name.strip():
        yield f"{where}: is empty; name a model folder (relative to the recipe) or a hub id (org/name)"
        return
    path = resolve_path(loaded, name)
    if not path.exists():
        yield (f"{where}: model folder '{name}' not found (looked at {path}); a local path is never looked up on a "
               "hub (a hub id is written org/name)")
        return
    problem = model_folder_problem(path)
    if problem:
        yield f"{where}: '{name}' ({path}) {problem}"


def recipe_notes(loaded: LoadedRecipe) -> list[str]:
    """Every note `validate` and `run` print: the recipe's own (LoadedRecipe.notes, load_kwargs') and how the
    model was read."""
    from slmforge.recipe.naming import registered_input_note

    hub, extract, registered = hub_id_note(loaded), extract_note(loaded), registered_input_note(loaded)
    return [*loaded.notes, *load_kwargs_notes(loaded), *([hub] if hub else []), *([extract] if extract else []),
            *([registered] if registered else [])]


def extract_note(loaded: LoadedRecipe) -> str | None:
    """Where a recipe with ExtractAdapters leaves its base and its adapter."""
    from slmforge.recipe.naming import registered_name

    name = next((n for n, p in loaded.recipe.passes.items() if isinstance(p, ExtractAdaptersPass)), None)
    if name is None:
        return None
    slots = loaded.recipe.passes[name].adapter_slots
    return (f"passes.{name}: the base is built once with adapter slots ({slots}) and shared by every fine-tune of "
            f"this model; the adapter goes to {loaded.recipe.engine.output_dir}/adapters/"
            f"{registered_name(loaded)}.onnx_adapter")


def hub_id_note(loaded: LoadedRecipe) -> str | None:
    """How a hub-id-shaped model name with no folder of that name was read (validate prints it)."""
    name = loaded.recipe.input_model.model_path
    if not isinstance(name, str) or _local_model_ref(loaded) is not None:
        return None
    return (f"{loaded.where('input_model', 'model_path')} '{name}' is no folder here (looked at "
            f"{resolve_path(loaded, name)}): read as a Hugging Face hub id")


def resolve_path(loaded: LoadedRecipe, value: str) -> Path:
    """Paths in a recipe are relative to the recipe file, not the working directory."""
    return (loaded.base_dir / Path(value).expanduser()).resolve()


def _check_data_files(loaded: LoadedRecipe) -> Iterator[str]:
    for i, dc in enumerate(loaded.recipe.data_configs):
        files = getattr(dc.load_dataset_config, "data_files", None)  # None: a user_script loader
        if not isinstance(files, str):
            continue
        where = data_config_path(loaded, i, "data_files")
        path = resolve_path(loaded, files)
        if not path.is_file():
            state = ("is a folder; name a data file in it" if path.is_dir() else
                     "is not a regular file (a device, pipe or socket)" if path.exists() else "not found")
            yield f"{where}: data file '{files}' {state} (looked at {path})"
            continue
        pre = dc.pre_process_data_config
        if "pre_process_data" in dc.user_components:
            continue
        try:
            columns = read_columns(path, dc.load_dataset_config.data_name)
        except InvalidInput as e:
            yield f"{where}: {e}"
            continue
        if columns is None:
            continue
        for col in pre.columns:
            if col not in columns:
                written = "text_cols" in loaded.canonical["data_configs"][i]["pre_process_data_config"]
                field = "text_cols" if written else "text_template"  # without text_cols: its placeholders
                yield (f"{data_config_path(loaded, i, field)}: column '{col}' is not in "
                       f"{path.name} (columns: {', '.join(sorted(columns))}){_hint(col, sorted(columns))}")


def read_columns(path: Path, data_name: str) -> set[str] | None:
    """The columns of a data file, from its first record; None when they can't be read cheaply.
    A file in another encoding than UTF-8, or a broken parquet file, is InvalidInput naming it."""
    from slmforge.data.readers import read_parquet, read_text

    if data_name == "parquet":
        return set(read_parquet(path, schema_only=True).names)
    try:
        return _text_columns(path, data_name)
    except UnicodeDecodeError:
        read_text(path)  # raises, naming the first line that is not UTF-8
        raise


def _text_columns(path: Path, data_name: str) -> set[str] | None:
    if data_name == "json":
        with path.open(encoding="utf-8-sig") as f:
            head = f.read(1)
            f.seek(0)
            if head == "[":
                return None  # a JSON array: read by the load_data step, which reports row errors
            for line in f:
                if line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        return None  # load_data names the broken line
                    return set(row) if isinstance(row, dict) else None
        return None
    if data_name == "csv":
        import csv

        with path.open(encoding="utf-8-sig", newline="") as f:
            first = f.readline().lstrip()
            if first.startswith(("{", "[")):
                raise InvalidInput(f"data_name is 'csv' but {path.name} does not look like CSV (its first line is "
                                   "JSON); use data_name: json")
            f.seek(0)
            header = next(csv.reader(f), None)
        return set(header) if header else None
    return None


def _hint(value: str, options: list[str]) -> str:
    import difflib

    match = difflib.get_close_matches(value, options, n=1, cutoff=0.5)
    return f"; did you mean '{match[0]}'?" if match else ""


