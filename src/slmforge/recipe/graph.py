"""Compile a validated recipe into the ordered step graph both backends run (its shapes: step_graph.py).

One function per part: the load_data step (data_step.py), the input model's evaluation, one step per
pass in the recipe's order (they hand on the model so far in a `_Chain`), the evaluation the final
model's registration carries (`_final_metrics`, the one rule both backends follow) and the register step.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from slmforge.errors import InvalidInput
from slmforge.models.model_folder import is_local_model
from slmforge.recipe import evaluators
from slmforge.recipe.builder_options import extra_options
from slmforge.recipe.checks import resolve_path
from slmforge.recipe.data_step import load_data_step, scored_rows
from slmforge.recipe.load_kwargs import finetune_dtype
from slmforge.recipe.loaded import LoadedRecipe
from slmforge.recipe.naming import recipe_digest, registered_name
from slmforge.recipe.passes import dtype_name, finetune_step_params
from slmforge.recipe.schema import (
    AzureMLRegistryModel,
    ExtractAdaptersPass,
    FinetunePass,
    MergePass,
    ModelBuilderPass,
    Recipe,
)
from slmforge.recipe.step_graph import ModelSource, Ref, Scalar, Step, StepGraph
from slmforge.registry.rules import default_base_name
from slmforge.training.methods import by_pass_type


def model_source(loaded: LoadedRecipe) -> ModelSource:
    m = loaded.recipe.input_model
    if isinstance(m.model_path, AzureMLRegistryModel):
        return ModelSource(Ref("uri", m.model_path.uri), None, mlflow=m.model_file_format == "PyTorch.MLflow")
    name = m.model_path
    if is_local_model(name, loaded.base_dir):
        return ModelSource(Ref("path", str(resolve_path(loaded, name))), None)
    return ModelSource(None, name)


def build_graph(loaded: LoadedRecipe) -> StepGraph:
    recipe = loaded.recipe
    source = model_source(loaded)
    steps: list[Step] = []
    dc = load_data_step(loaded, source, steps)
    # A user_script pre-process gives token ids, not rows: nothing to answer, so no evaluate steps or answer gates;
    # nor with evaluate.enabled false.
    rows = dc is not None and "pre_process_data" not in dc.user_components and recipe.evaluate.enabled
    chain = _Chain(*source.inputs())
    extract = next((p for p in recipe.passes.values() if isinstance(p, ExtractAdaptersPass)), None)
    # Olive evaluates the input model when a goal is relative to it.
    if (recipe.engine.evaluate_input_model or evaluators.has_relative_goals(recipe)) and rows:
        steps.append(_evaluate("evaluate_base", dict(chain.base_inputs), dict(chain.base_params), recipe))
    for pass_name, p in recipe.passes.items():
        if isinstance(p, FinetunePass):
            _finetune(chain, p, steps, recipe)
        elif isinstance(p, MergePass):
            _merge(chain, p, steps, recipe, rows)
        elif isinstance(p, ModelBuilderPass) and extract is not None:
            _build_base(chain, loaded, pass_name, p, extract, steps)
        elif isinstance(p, ModelBuilderPass):
            _build_onnx(chain, loaded, pass_name, p, steps, rows)
    adapter = adapter_metrics = None
    if extract is not None:
        adapter, adapter_metrics = _export_adapter(chain, loaded, steps, rows)
    if chain.final is None:
        raise InvalidInput(f"{loaded.path}: passes: the recipe has no LoRA, QLoRA, MergeAdapterWeights or "
                           "ModelBuilder pass, so there is nothing to produce")
    final_metrics = None if adapter else _final_metrics(steps, chain.final)  # the base's evaluations are the adapter's
    if recipe.register_.enabled:
        steps.append(_register(loaded, chain.final, final_metrics, adapter, adapter_metrics))
    return StepGraph(steps=steps, final=chain.final, recipe_digest=recipe_digest(loaded), final_metrics=final_metrics,
                     adapter=adapter, adapter_metrics=adapter_metrics, scored=scored_rows(loaded) if rows else None)


# ---- the passes, in the recipe's order


@dataclass
class _Chain:
    """What the passes hand on: the input model, the model so far, an adapter and the final output."""

    base_inputs: dict[str, Ref]
    base_params: dict[str, Scalar]
    current_model: tuple[dict[str, Ref], dict[str, Scalar]] | None = None
    adapter: Ref | None = None  # an adapter not merged yet
    trained_adapter: Ref | None = None  # set only for adapters the ONNX builder reads beside the base
    final: tuple[str, str] | None = None

    def __post_init__(self) -> None:
        if self.current_model is None:
            self.current_model = (self.base_inputs, self.base_params)


def _model_of(step: str) -> dict[str, Ref]:
    return {"model": Ref("step", step, "model")}


def _finetune(chain: _Chain, p: FinetunePass, steps: list[Step], recipe: Recipe) -> None:
    params: dict[str, Scalar] = dict(chain.base_params)
    params.update(finetune_step_params(p))
    params["torch_dtype"] = finetune_dtype(recipe.input_model.load_kwargs, p)  # the pass's, else load_kwargs'
    params.update(p.training_args.step_params())
    inputs = dict(chain.base_inputs)
    inputs["dataset"] = Ref("step", "load_data", "dataset")
    steps.append(Step("finetune", "finetune", inputs, params))
    chain.adapter = Ref("step", "finetune", "adapter")
    chain.trained_adapter = chain.adapter if by_pass_type(p.type).builder_reads_adapter else None
    chain.final = ("finetune", "adapter")


def _merge(chain: _Chain, p: MergePass, steps: list[Step], recipe: Recipe, rows: bool) -> None:
    assert chain.adapter is not None  # checks.py guarantees a fine-tune pass first
    inputs = dict(chain.base_inputs)
    inputs["adapter"] = chain.adapter
    params = dict(chain.base_params)
    params["torch_dtype"] = dtype_name(p.torch_dtype)
    steps.append(Step("merge", "merge", inputs, params))
    chain.current_model = (_model_of("merge"), {})
    chain.adapter = None
    chain.final = ("merge", "model")
    if rows:
        steps.append(_evaluate("evaluate_merged", _model_of("merge"), {}, recipe, steps))


def _build_onnx(chain: _Chain, loaded: LoadedRecipe, pass_name: str, cfg: ModelBuilderPass, steps: list[Step],
                rows: bool) -> None:
    recipe = loaded.recipe
    assert chain.current_model is not None
    inputs = dict(chain.current_model[0])
    params = dict(chain.current_model[1])
    adapter = chain.adapter
    if adapter is None and chain.trained_adapter is not None:
        # After a merge the build still reads base + adapter: the builder quantizes the base
        # on its own and the adapter stays float32 (bench/results/int4_options.json: the
        # merged weights lose more in int4); the merge check proved both the same function.
        inputs, params, adapter = dict(chain.base_inputs), dict(chain.base_params), chain.trained_adapter
    chain.adapter = adapter
    if adapter is not None:
        inputs["adapter"] = adapter  # build straight from base + adapter
    params = _builder_params(params, loaded, pass_name, cfg)
    if rows:
        inputs["dataset"] = Ref("step", "load_data", "dataset")  # the answer gates' eval rows
        params["check_max_samples"] = recipe.evaluate.max_samples
        params["check_max_new_tokens"] = recipe.evaluate.max_new_tokens
        if any(s.name == "evaluate_merged" for s in steps):
            # The merged model's answers are the source model's (the merge check proved them one
            # function): the gates reuse them instead of answering every row again.
            inputs["reference"] = Ref("step", "evaluate_merged", "metrics")
    steps.append(Step("build_onnx", "build_onnx", inputs, params))
    chain.final = ("build_onnx", "model")
    if rows:
        steps.append(_evaluate("evaluate_onnx", _model_of("build_onnx"), {}, recipe, steps))


def _builder_params(chain_params: dict[str, Scalar], loaded: LoadedRecipe, pass_name: str,
                    cfg: ModelBuilderPass) -> dict[str, Scalar]:
    params = dict(chain_params)
    params.update(
        precision=cfg.precision,
        execution_provider=cfg.execution_provider or _provider(loaded.recipe),
        int4_block_size=cfg.int4_block_size,
        int4_accuracy_level=cfg.int4_accuracy_level,
    )
    params.update(int4_algo_config=cfg.int4_algo_config, int4_is_symmetric=cfg.int4_is_symmetric)
    extra = extra_options(loaded, pass_name, cfg)
    if extra:
        params["extra_options"] = extra
    if cfg.max_accuracy_drop is not None:
        params["max_accuracy_drop"] = cfg.max_accuracy_drop
    return params


def _build_base(chain: _Chain, loaded: LoadedRecipe, pass_name: str, cfg: ModelBuilderPass,
                extract: ExtractAdaptersPass, steps: list[Step]) -> None:
    """The base for separate adapters: built from the input model alone, with adapter slots. No adapter
    and no dataset among its inputs, so every fine-tune of that model shares its cache entry."""
    params = _builder_params(chain.base_params, loaded, pass_name, cfg)
    params["adapter_slots"] = extract.adapter_slots
    steps.append(Step("build_onnx", "build_onnx", dict(chain.base_inputs), params))
    chain.final = ("build_onnx", "model")


def _export_adapter(chain: _Chain, loaded: LoadedRecipe, steps: list[Step],
                    rows: bool) -> tuple[tuple[str, str], tuple[str, str] | None]:
    """The fine-tune's adapter as an .onnx_adapter for the base, checked, then evaluated on the base."""
    assert chain.adapter is not None and chain.final == ("build_onnx", "model")  # checks.py: fine-tune, ModelBuilder
    recipe = loaded.recipe
    inputs = {"model": Ref("step", "build_onnx", "model"), "adapter": chain.adapter}
    params: dict[str, Scalar] = {"name": registered_name(loaded)}
    if "model" in chain.base_inputs:
        inputs["source"] = chain.base_inputs["model"]
    else:
        params["source_id"] = str(chain.base_params.get("model_id", ""))
    build = next(s for s in steps if s.name == "build_onnx")
    if "max_accuracy_drop" in build.params:
        params["max_accuracy_drop"] = build.params["max_accuracy_drop"]
    if rows:
        inputs["dataset"] = Ref("step", "load_data", "dataset")
        params["check_max_samples"] = recipe.evaluate.max_samples
        params["check_max_new_tokens"] = recipe.evaluate.max_new_tokens
    steps.append(Step("export_adapter", "export_adapter", inputs, params))
    adapter = ("export_adapter", "adapter")
    if not rows:
        return adapter, None
    evaluation = _evaluate("evaluate_onnx", _model_of("build_onnx"), {}, recipe, steps)
    evaluation.inputs["adapter"] = Ref("step", *adapter)
    steps.append(evaluation)
    return adapter, ("evaluate_onnx", "metrics")


# ---- evaluation and registration


def _final_metrics(steps: list[Step], final: tuple[str, str]) -> tuple[str, str] | None:
    """The metrics a registration of the final model carries: the last evaluation of that model itself.
    Only that one: a LoRA-only recipe has evaluated just the base, and those figures are not the
    adapter's. Both backends take it from here (the register step, the Azure ML
    pipeline's metrics output)."""
    model = Ref("step", *final)
    return next(((s.name, "metrics") for s in reversed(steps)
                 if s.component == "evaluate" and s.inputs.get("model") == model), None)


def _register(loaded: LoadedRecipe, final: tuple[str, str], final_metrics: tuple[str, str] | None,
              adapter: tuple[str, str] | None = None, adapter_metrics: tuple[str, str] | None = None) -> Step:
    """The register step; with a separate adapter, the final model is its shared base, registered under
    `base_registered_name` beside the adapter (the recipe's registered name)."""
    recipe = loaded.recipe
    inputs = {"model": Ref("step", *final)}
    if final_metrics is not None:
        inputs["metrics"] = Ref("step", *final_metrics)
    params: dict[str, Scalar] = {"name": registered_name(loaded), "format": recipe.register_.format,
                                 "recipe_digest": recipe_digest(loaded)}
    if adapter is not None:
        inputs["adapter"] = Ref("step", *adapter)
        if adapter_metrics is not None:
            inputs["adapter_metrics"] = Ref("step", *adapter_metrics)
        params["base_name"] = base_registered_name(loaded)
    return Step("register", "register", inputs, params)


def base_registered_name(loaded: LoadedRecipe) -> str:
    """The shared base's registered name (registry/rules.py default_base_name): the input model's name and
    the build's precision, the same for every recipe fine-tuning that model at that precision."""
    source = model_source(loaded)
    name = source.model_id if source.ref is None else source.ref.value
    if source.ref is not None and source.ref.kind == "uri" and "/models/" in name:
        name = name.split("/models/", 1)[1].split("/", 1)[0]  # azureml://registries/r/models/<name>/versions/1
    build = next((p for p in loaded.recipe.passes.values() if isinstance(p, ModelBuilderPass)), None)
    return default_base_name(name or "model", build.precision if build is not None else "onnx")


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


def _provider(recipe: Recipe) -> str:
    eps = recipe.engine.execution_providers or []
    return "cuda" if any("CUDA" in ep for ep in eps) else "cpu"
