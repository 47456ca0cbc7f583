"""The graph's load_data step: which data configs it reads, how their files bind, what it holds out."""

from __future__ import annotations

import json

from slmforge.data.hub import HubSource, locate
from slmforge.errors import InvalidInput
from slmforge.recipe import evaluators
from slmforge.recipe.checks import data_config_path, resolve_path
from slmforge.recipe.loaded import LoadedRecipe
from slmforge.recipe.schema import DataConfig, FinetunePass, LoadDatasetConfig, Recipe
from slmforge.recipe.step_graph import ModelSource, Ref, Scalar, Step
from slmforge.recipe.user_script import EVAL_CLASH, data_spec, script_inputs


def _data_ref(loaded: LoadedRecipe, dc: DataConfig) -> Ref:
    files = dc.load_dataset_config.data_files
    if isinstance(files, str):
        return Ref("path", str(resolve_path(loaded, files)))
    return Ref("uri", files.uri)


def _bind_data(loaded: LoadedRecipe, dc: DataConfig, role: str, inputs: dict[str, Ref], params: dict[str, Scalar],
               hub: dict[str, dict]) -> None:
    """A data file becomes the `data`/`eval_data` input; a hub dataset an entry of hub_data, its commit pinned."""
    ldc = dc.load_dataset_config
    if ldc.is_hub:
        hub["train" if role == "data" else "eval"] = hub_source(loaded, dc).to_json()
        return
    inputs[role] = _data_ref(loaded, dc)
    params.setdefault("data_format", ldc.data_name)
    if role == "data":
        params["split"] = ldc.split


def hub_source(loaded: LoadedRecipe, dc: DataConfig) -> HubSource:
    """The data config's hub dataset with its revision resolved to a commit (the hub online, the hub cache
    offline); unreachable, it is one line naming the data config and the cause."""
    ldc = dc.load_dataset_config
    # Olive's huggingface_dataset reads split "validation" when the recipe names none
    split = ldc.split if "split" in ldc.model_fields_set else "validation"
    wanted = HubSource(ldc.data_name, split, ldc.subset, ldc.data_dir, ldc.revision, ldc.col_filters)
    where = data_config_path(loaded, loaded.recipe.data_configs.index(dc), "data_name")
    try:
        return locate(wanted).pinned()
    except InvalidInput as e:
        raise InvalidInput(f"{loaded.path}: {where}: {e}") from None


DEFAULT_EVAL_SHARE = 0.1  # rows held out for the evaluate steps when the recipe names no eval data
EVAL_ONLY_SHARE = 0.2  # the rows scored when nothing is trained (an evaluate-only recipe)


def _finetune_pass(recipe: Recipe) -> tuple[str, FinetunePass] | None:
    for name, p in recipe.passes.items():
        if isinstance(p, FinetunePass):
            return name, p
    return None


def _data_config(recipe: Recipe, name: str | None) -> DataConfig | None:
    if name is None:
        return recipe.data_configs[0] if recipe.data_configs else None
    return next(dc for dc in recipe.data_configs if dc.name == name)


def _eval_data_name(loaded: LoadedRecipe, pass_name: str, finetune_eval: str | None,
                    evaluate_name: str | None) -> str | None:
    if finetune_eval and evaluate_name and finetune_eval != evaluate_name:
        raise InvalidInput(f"{loaded.path}: the evaluation's data config '{evaluate_name}' (evaluate.data_config or "
                           "the evaluator's metrics) and "
                           f"{loaded.where('passes', pass_name, 'eval_data_config')} '{finetune_eval}' name different data configs; slmforge evaluates "
                           "on one held-out set: name the same one, or leave one out")
    return evaluate_name or finetune_eval


def load_data_step(loaded: LoadedRecipe, source: ModelSource, steps: list[Step]) -> DataConfig | None:
    """The load_data step: trains on the fine-tune's data config; evaluates on evaluate.data_config or the
    fine-tune's eval_data_config when one is named, else on a seeded split of the training rows.
    Returns the data config it reads (None: no data, no step)."""
    recipe = loaded.recipe
    finetune = _finetune_pass(recipe)
    dc, eval_name = _data_configs(loaded, finetune)
    if dc is None:
        return None
    pre = dc.pre_process_data_config
    user = data_spec(loaded, recipe.data_configs.index(dc), resolve_path)  # user_script functions, if any
    spec = {**({} if "pre_process_data" in user else pre.step_spec), **user}
    inputs, params = source.inputs("tokenizer")
    hub: dict[str, dict] = {}
    if "load_dataset" not in user:
        _bind_data(loaded, dc, "data", inputs, params, hub)
    inputs.update({k: Ref("path", str(v)) for k, v in script_inputs(loaded, dc, resolve_path).items()})
    inputs["spec"] = Ref("text", json.dumps(spec, indent=2, ensure_ascii=False), "spec.json")
    if "pre_process_data" not in user:
        params.update(strategy=pre.strategy, max_seq_len=pre.max_seq_len,
                      pad_to_max_len=pre.pad_to_max_len, use_attention_mask=pre.use_attention_mask,
                      loss_on=pre.loss_on)
        if pre.max_samples is not None:
            params["max_samples"] = pre.max_samples
    if finetune is not None:
        _held_out(loaded, finetune[1], dc, eval_name, bool(user), inputs, params, hub)
    else:
        params["eval_dataset_size"] = EVAL_ONLY_SHARE
        params["data_seed"] = 42
    if hub:  # the pinned commits are in the file, so a moved revision changes the step's cache key
        inputs["hub_data"] = Ref("text", json.dumps(hub, indent=2, ensure_ascii=False), "hub_data.json")
    steps.append(Step("load_data", "load_data", inputs, params))
    return dc


def _data_configs(loaded: LoadedRecipe, finetune: tuple[str, FinetunePass] | None
                  ) -> tuple[DataConfig | None, str | None]:
    """The data config trained (or, without a fine-tune, evaluated) on, and a separate one evaluated on."""
    recipe = loaded.recipe
    evaluate_name = recipe.evaluate.data_config or evaluators.data_config_name(recipe)  # checks.py: one name
    if finetune is None:
        return _data_config(recipe, evaluate_name), None
    dc = _data_config(recipe, finetune[1].train_data_config)
    eval_name = _eval_data_name(loaded, finetune[0], finetune[1].eval_data_config, evaluate_name)
    return dc, None if eval_name == (dc.name if dc else None) else eval_name


def _held_out(loaded: LoadedRecipe, cfg: FinetunePass, dc: DataConfig, eval_name: str | None, user: bool,
              inputs: dict[str, Ref], params: dict[str, Scalar], hub: dict[str, dict]) -> None:
    """The rows held out for evaluation: the named eval data config, else a seeded share of the training rows."""
    recipe, pre = loaded.recipe, dc.pre_process_data_config
    if eval_name is not None:
        eval_dc = _data_config(recipe, eval_name)
        assert eval_dc is not None
        if eval_dc.user_components or user:
            raise InvalidInput(f"{loaded.path}: data config '{eval_dc.name}' beside '{dc.name}': {EVAL_CLASH}")
        if eval_dc.pre_process_data_config != pre:
            raise InvalidInput(
                f"{loaded.path}: data config '{eval_dc.name}' (evaluated on) must use the same "
                f"pre-processing as '{dc.name}' (trained on)"
            )
        _bind_data(loaded, eval_dc, "eval_data", inputs, params, hub)
    else:  # Olive 0.13 has no eval_dataset_size: without eval data, hold out a seeded share to evaluate on
        params["eval_dataset_size"] = (cfg.eval_dataset_size if cfg.eval_dataset_size is not None
                                       else DEFAULT_EVAL_SHARE)
    params["data_seed"] = cfg.training_args.data_seed if cfg.training_args.data_seed is not None else cfg.training_args.seed


def scored_rows(loaded: LoadedRecipe) -> dict[str, Scalar] | None:
    """Which rows the evaluate steps score, for run.json and the report: the data config, the split read, and
    `held_out` (the share of the training rows held out of training) or `separate` (a data config of its own)."""
    recipe = loaded.recipe
    finetune = _finetune_pass(recipe)
    dc, eval_name = _data_configs(loaded, finetune)
    if dc is None:
        return None
    scored = _data_config(recipe, eval_name) if eval_name is not None else dc
    assert scored is not None
    ldc = scored.load_dataset_config
    if not isinstance(ldc, LoadDatasetConfig):
        split = None  # a user_script function reads the rows
    elif ldc.is_hub:
        split = ldc.split if "split" in ldc.model_fields_set else "validation"
    else:
        split = ldc.split if eval_name is None else "train"  # a separate eval file is read whole (sources.py)
    found: dict[str, Scalar] = {"data_config": scored.name, **({"split": split} if split else {})}
    if eval_name is not None:
        found["separate"] = True
    else:
        size = finetune[1].eval_dataset_size if finetune is not None else EVAL_ONLY_SHARE
        found["held_out"] = size if size is not None else DEFAULT_EVAL_SHARE
    return found
