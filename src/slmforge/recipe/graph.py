"""Compile a validated recipe into the ordered step graph both backends run.

A step names its component (`components/<component>.yml`), binds each component input to a
`Ref` (another step's output, a local path, an Azure ML URI, or a small generated file) and
sets its parameters. Parameter and input names are the component's own, so a backend only
renders the component's command with them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Union

from slmforge.contract.files import json_digest
from slmforge.data.hub import HubSource, locate
from slmforge.errors import InvalidInput
from slmforge.models.model_folder import is_local_model
from slmforge.recipe import evaluators
from slmforge.recipe.checks import data_config_path, resolve_path
from slmforge.recipe.load_kwargs import finetune_dtype
from slmforge.recipe.loaded import LoadedRecipe
from slmforge.recipe.passes import dtype_name, finetune_step_params
from slmforge.recipe.schema import (
    AzureMLRegistryModel,
    AzureMLSystem,
    DataConfig,
    FinetunePass,
    MergePass,
    ModelBuilderPass,
    Recipe,
)
from slmforge.recipe.user_script import EVAL_CLASH, data_spec, script_inputs
from slmforge.training.methods import by_pass_type

Scalar = Union[str, int, float, bool]


@dataclass(frozen=True)
class Ref:
    """Where a step input comes from.

    kind "step": `value` is a step name, `output` the output name.
    kind "path": a local file or folder (absolute).
    kind "uri":  an Azure ML URI (azureml://datastores/..., azureml://registries/...).
    kind "text": a small file the backend writes itself; `value` is its content, `output` its file name.
    """

    kind: Literal["step", "path", "uri", "text"]
    value: str
    output: str = ""

    def describe(self) -> str:
        if self.kind == "step":
            return f"{self.value}.{self.output}"
        if self.kind == "text":
            return f"<{self.output}>"
        return self.value


@dataclass
class Step:
    name: str
    component: str
    inputs: dict[str, Ref] = field(default_factory=dict)
    params: dict[str, Scalar] = field(default_factory=dict)

    def upstream(self) -> list[str]:
        return sorted({r.value for r in self.inputs.values() if r.kind == "step"})


@dataclass
class ModelSource:
    """The input model: a local folder, an Azure ML registry model, or a hub id."""

    ref: Ref | None  # None for a hub id
    model_id: str | None
    mlflow: bool = False  # an Azure ML registry model stored as PyTorch.MLflow


@dataclass
class StepGraph:
    steps: list[Step]
    final: tuple[str, str]  # (step, output) holding the final model
    recipe_digest: str

    def step(self, name: str) -> Step:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)

    def names(self) -> list[str]:
        return [s.name for s in self.steps]


def recipe_digest(loaded: LoadedRecipe) -> str:
    # Of the validated recipe: one recipe written in two Olive generations (or with its defaults
    # written out, or another description) is one recipe.
    meaning = loaded.recipe.model_dump(mode="json", by_alias=True, exclude={"schema_", "description"})
    return json_digest(meaning)


def model_source(loaded: LoadedRecipe) -> ModelSource:
    m = loaded.recipe.input_model
    if isinstance(m.model_path, AzureMLRegistryModel):
        return ModelSource(Ref("uri", m.model_path.uri), None, mlflow=m.model_file_format == "PyTorch.MLflow")
    name = m.model_path
    if is_local_model(name, loaded.base_dir):
        return ModelSource(Ref("path", str(resolve_path(loaded, name))), None)
    return ModelSource(None, name)


def _model_inputs(source: ModelSource, key: str = "model") -> tuple[dict[str, Ref], dict[str, Scalar]]:
    if source.ref is None:
        return {}, {"model_id": source.model_id or ""}
    return {key: source.ref}, {}


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


def build_graph(loaded: LoadedRecipe) -> StepGraph:
    recipe = loaded.recipe
    source = model_source(loaded)
    steps: list[Step] = []
    finetune = _finetune_pass(recipe)
    evaluate_name = recipe.evaluate.data_config or evaluators.data_config_name(recipe)  # checks.py: one name

    # ---- load_data: trains on the fine-tune's data config; evaluates on evaluate.data_config or the
    # fine-tune's eval_data_config when one is named, else on a seeded split of the training rows.
    if finetune is not None:
        cfg = finetune[1]
        dc = _data_config(recipe, cfg.train_data_config)
        eval_name = _eval_data_name(loaded, finetune[0], cfg.eval_data_config, evaluate_name)
        if eval_name == (dc.name if dc else None):
            eval_name = None
    else:
        dc = _data_config(recipe, evaluate_name)
        eval_name = None
    if dc is not None:
        pre = dc.pre_process_data_config
        user = data_spec(loaded, recipe.data_configs.index(dc), resolve_path)  # user_script functions, if any
        spec = {**({} if "pre_process_data" in user else pre.step_spec), **user}
        inputs, params = _model_inputs(source, "tokenizer")
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
        else:
            params["eval_dataset_size"] = 0.2
            params["data_seed"] = 42
        if hub:  # the pinned commits are in the file, so a moved revision changes the step's cache key
            inputs["hub_data"] = Ref("text", json.dumps(hub, indent=2, ensure_ascii=False), "hub_data.json")
        steps.append(Step("load_data", "load_data", inputs, params))

    def model_of(step: str) -> dict[str, Ref]:
        return {"model": Ref("step", step, "model")}

    base_inputs, base_params = _model_inputs(source)
    # A user_script pre-process gives token ids, not rows: nothing to answer, so no evaluate steps or answer gates.
    rows = dc is not None and "pre_process_data" not in dc.user_components
    final: tuple[str, str] | None = None
    current_model: tuple[dict[str, Ref], dict[str, Scalar]] = (base_inputs, base_params)
    adapter: Ref | None = None  # an adapter not merged yet
    trained_adapter: Ref | None = None  # set only for adapters the ONNX builder reads beside the base

    # Olive evaluates the input model when a goal is relative to it.
    if (recipe.engine.evaluate_input_model or evaluators.has_relative_goals(recipe)) and rows:
        steps.append(_evaluate("evaluate_base", dict(base_inputs), dict(base_params), recipe))

    for pass_name, p in recipe.passes.items():
        if isinstance(p, FinetunePass):
            cfg = p
            targs = cfg.training_args
            params: dict[str, Scalar] = dict(base_params)
            params.update(finetune_step_params(cfg))
            params["torch_dtype"] = finetune_dtype(recipe.input_model.load_kwargs, cfg)  # the pass's, else load_kwargs'
            params.update(targs.step_params())
            inputs = dict(base_inputs)
            inputs["dataset"] = Ref("step", "load_data", "dataset")
            steps.append(Step("finetune", "finetune", inputs, params))
            adapter = Ref("step", "finetune", "adapter")
            trained_adapter = adapter if by_pass_type(p.type).builder_reads_adapter else None
            final = ("finetune", "adapter")
        elif isinstance(p, MergePass):
            assert adapter is not None  # checks.py guarantees a fine-tune pass first
            inputs = dict(base_inputs)
            inputs["adapter"] = adapter
            params = dict(base_params)
            params["torch_dtype"] = dtype_name(p.torch_dtype)
            steps.append(Step("merge", "merge", inputs, params))
            current_model = (model_of("merge"), {})
            adapter = None
            final = ("merge", "model")
            if rows:
                steps.append(_evaluate("evaluate_merged", model_of("merge"), {}, recipe, steps))
        elif isinstance(p, ModelBuilderPass):
            cfg = p
            inputs = dict(current_model[0])
            params = dict(current_model[1])
            if adapter is None and trained_adapter is not None:
                # After a merge the build still reads base + adapter: the builder quantizes the base
                # on its own and the adapter stays float32 (bench/results/int4_options.json: the
                # merged weights lose more in int4); the merge check proved both the same function.
                inputs, params, adapter = dict(base_inputs), dict(base_params), trained_adapter
            if adapter is not None:
                inputs["adapter"] = adapter  # build straight from base + adapter
            params.update(
                precision=cfg.precision,
                execution_provider=cfg.execution_provider or _provider(recipe),
                int4_block_size=cfg.int4_block_size,
                int4_accuracy_level=cfg.int4_accuracy_level,
            )
            params.update(int4_algo_config=cfg.int4_algo_config, int4_is_symmetric=cfg.int4_is_symmetric)
            extra = _builder_extra_options(loaded, pass_name, cfg)
            if extra:
                params["extra_options"] = ",".join(f"{k}={_option(v)}" for k, v in extra.items())
            if cfg.max_accuracy_drop is not None:
                params["max_accuracy_drop"] = cfg.max_accuracy_drop
            if rows:
                inputs["dataset"] = Ref("step", "load_data", "dataset")  # the answer gates' eval rows
                params["check_max_samples"] = recipe.evaluate.max_samples
                params["check_max_new_tokens"] = recipe.evaluate.max_new_tokens
                if any(s.name == "evaluate_merged" for s in steps):
                    # The merged model's answers are the source model's (the merge check proved them one
                    # function): the gates reuse them instead of answering every row again.
                    inputs["reference"] = Ref("step", "evaluate_merged", "metrics")
            steps.append(Step("build_onnx", "build_onnx", inputs, params))
            final = ("build_onnx", "model")
            if rows:
                steps.append(_evaluate("evaluate_onnx", model_of("build_onnx"), {}, recipe, steps))

    if final is None:
        raise InvalidInput(f"{loaded.path}: passes: the recipe has no LoRA, QLoRA, MergeAdapterWeights or "
                           "ModelBuilder pass, so there is nothing to produce")

    if recipe.register_.enabled:
        step_name, output = final
        inputs = {"model": Ref("step", step_name, output)}
        # Only an evaluation of the registered model itself: a LoRA-only recipe has evaluated just
        # the base, and those figures are not the adapter's.
        last_eval = next((s.name for s in reversed(steps) if s.component == "evaluate"
                          and s.inputs.get("model") == Ref("step", step_name, output)), None)
        if last_eval is not None:
            inputs["metrics"] = Ref("step", last_eval, "metrics")
        params = {"name": registered_name(loaded), "format": recipe.register_.format,
                  "recipe_digest": recipe_digest(loaded)}
        steps.append(Step("register", "register", inputs, params))

    return StepGraph(steps=steps, final=final, recipe_digest=recipe_digest(loaded))


def _evaluate(name: str, inputs: dict[str, Ref], params: dict[str, Scalar], recipe: Recipe,
              before: list[Step] | None = None) -> Step:
    inputs = dict(inputs)
    inputs["dataset"] = Ref("step", "load_data", "dataset")
    spec = evaluators.step_spec(recipe)
    if spec is not None:
        inputs["evaluator"] = Ref("text", json.dumps(spec, indent=2, ensure_ascii=False), "evaluator.json")
        if evaluators.has_relative_goals(recipe) and any(s.name == "evaluate_base" for s in before or []):
            inputs["baseline"] = Ref("step", "evaluate_base", "metrics")  # what relative goals are measured from
    params = dict(params)
    params.update(label=name.removeprefix("evaluate_"), max_samples=recipe.evaluate.max_samples,
                  max_new_tokens=recipe.evaluate.max_new_tokens)
    return Step(name, "evaluate", inputs, params)


def registered_name(loaded: LoadedRecipe) -> str:
    if loaded.recipe.register_.name:
        return loaded.recipe.register_.name
    stem = Path(loaded.recipe.engine.output_dir).name or loaded.path.stem
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in stem).strip("-.") or "model"
    return safe


def host_system(loaded: LoadedRecipe) -> AzureMLSystem | None:
    host = loaded.recipe.engine.host
    system = loaded.recipe.systems.get(host) if host else None
    return system if isinstance(system, AzureMLSystem) else None


def _provider(recipe: Recipe) -> str:
    eps = recipe.engine.execution_providers or []
    return "cuda" if any("CUDA" in ep for ep in eps) else "cpu"


# Olive's ModelBuilder keys that slmforge passes to the builder as they are, under the builder's names.
_BUILDER_KEYS = {"int4_op_types_to_quantize": "op_types_to_quantize", "int4_nodes_to_exclude": "nodes_to_exclude",
                 **{k: k for k in ("exclude_embeds", "exclude_lm_head", "use_qdq", "use_8bits_moe", "use_webgpu_fp32",
                                   "use_cuda_bf16", "include_hidden_states", "enable_cuda_graph")}}


def _builder_extra_options(loaded: LoadedRecipe, pass_name: str, cfg) -> dict[str, Scalar]:
    """extra_options plus the pass-through keys; one setting spelled twice is an error naming both."""
    extra: dict[str, Scalar] = dict(cfg.extra_options or {})
    for key, option in _BUILDER_KEYS.items():
        value = getattr(cfg, key)
        if value in (None, False):
            continue
        if option in extra:
            raise InvalidInput(f"{loaded.path}: {loaded.where('passes', pass_name)}: '{key}' and extra_options.{option} "
                               "set the same builder option; keep one")
        sep = "/" if key == "int4_op_types_to_quantize" else ","
        extra[option] = sep.join(value) if isinstance(value, list) else value
    return extra


def _option(value: Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
