"""Olive's `evaluators` block and the engine's `evaluator`: strict models, checks, and the evaluate steps' spec.

Olive (0.4–0.13) writes `"evaluators": {"<name>": {"metrics": [...]}}` at the top level and names one
in `engine.evaluator` (at the top level in the flat 0.7+ shape), or gives it inline. A metric is
`{name, type, sub_types, data_config, user_config, backend}`; keys Olive nests (a metric's
user_config keys written on the metric, an evaluator's type_args written on the evaluator) are
gathered as Olive gathers them. What each metric computes: models/olive_metrics.py. The named
evaluator's metrics run in every evaluate step (base, merged, onnx) on the rows of the metric's
data_config, and land in run.json, report.md and the registry tags.
"""

from __future__ import annotations

from typing import Annotated, Any, Iterator, Literal, Union

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from slmforge.models.olive_metrics import (
    GOAL_TYPES,
    LATENCY_DEFAULTS,
    REFUSED_SUB_TYPES,
    SUB_TYPES,
    higher_is_better,
)
from slmforge.recipe.base import NOT_SUPPORTED, Strict

# Evaluator types Olive registers that slmforge does not run, and why.
REFUSED_EVALUATOR_TYPES = {
    "LMEvaluator": "lm-eval-harness tasks read their data from the Hugging Face hub, which slmforge cannot "
                   "serve here, and lm_eval is not installed; use an evaluator with accuracy/perplexity metrics "
                   "on a data config",
    "MTEBEvaluator": "MTEB tasks read their data from the Hugging Face hub and score embedding models",
    **{t: "slmforge evaluates PyTorch and onnxruntime-genai models only" for t in (
        "SNPEEvaluator", "OpenVINOEvaluator", "QNNEvaluator")},
}
EVALUATOR_TYPES = ("OnnxEvaluator", "PyTorchEvaluator")  # Olive's framework evaluators: what slmforge does
_USER_CODE = "custom metrics from user_script: not yet"
# A metric's user_config keys (Olive 0.4–0.9), and why slmforge refuses those it cannot honour.
_REFUSED_USER_CONFIG = {
    **{k: f"{_USER_CODE}; give the metric a data_config" for k in (
        "user_script", "script_dir", "dataloader_func", "func_kwargs", "post_processing_func", "evaluate_func",
        "evaluate_func_kwargs", "metric_func", "metric_func_kwargs")},
    "data_dir": "give the metric a data_config",
    **{k: "the ONNX builder derives inputs and outputs itself" for k in ("input_names", "input_shapes", "input_types")},
    "inference_settings": "onnxruntime-genai sets up its own session",
    "run_kwargs": "onnxruntime-genai sets up its own session",
    "batch_size": "each latency request is one row; accuracy rows are answered all at once",
}


class Goal(Strict):
    type: Literal[GOAL_TYPES] = Field(description="threshold: an absolute bound; max-degradation, "  # type: ignore[valid-type]
                                      "min-improvement and their percent- forms: against the input model")
    value: float = Field(description="the bound, in the metric's unit (percent for the percent- goals)")

    @model_validator(mode="after")
    def _nonnegative(self) -> "Goal":
        if self.type != "threshold" and self.value < 0:
            raise ValueError(f"a {self.type} goal's value must be nonnegative")
        return self


class SubMetric(Strict):
    name: str = Field(min_length=1, description="the sub-type: accuracy_score, f1_score, precision, recall, "
                      "perplexity; latency avg, p50, p90, ...; throughput", examples=["accuracy_score"])
    priority: int = Field(-1, description="Olive's rank for search; recorded")
    higher_is_better: bool | None = Field(None, description="default: latency and perplexity lower, others higher")
    goal: Goal | None = Field(None, description="the value the model should reach (judged in the report; a goal "
                              "never fails a run)")
    metric_config: dict[str, Any] | None = Field(None, description="accuracy: task, num_classes, average; latency: "
                                                 "warmup_num, repeat_test_num, sleep_num")


class MetricUserConfig(Strict):
    io_bind: bool = Field(False, description="onnxruntime-genai binds inputs and outputs itself: accepted")
    shared_kv_buffer: bool = Field(False, description="onnxruntime-genai shares its KV cache itself: accepted")

    @model_validator(mode="before")
    @classmethod
    def _refused(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in data:
                if key in _REFUSED_USER_CONFIG:
                    raise ValueError(f"user_config.{key} is {NOT_SUPPORTED} ({_REFUSED_USER_CONFIG[key]})")
        return data


class LatencyConfig(Strict):
    warmup_num: int = Field(LATENCY_DEFAULTS["warmup_num"], ge=0)
    repeat_test_num: int = Field(LATENCY_DEFAULTS["repeat_test_num"], ge=1)
    sleep_num: int = Field(LATENCY_DEFAULTS["sleep_num"], ge=0)


class AccuracyConfig(Strict):
    """The torchmetrics arguments that mean something for generated answers."""

    task: Literal["binary", "multiclass"] | None = Field(None, description="multiclass: macro averages by default")
    num_classes: int | None = Field(None, ge=1, description="recorded; the classes are the expected answers")
    average: Literal["micro", "macro", "weighted"] | None = None


class Metric(Strict):
    name: str = Field(min_length=1, description="the metric's name in the report", examples=["accuracy"])
    type: Literal["accuracy", "latency", "throughput", "custom"] = Field(description="what is measured (custom is "
                                                                         "refused)")
    backend: Literal["torch_metrics"] = Field("torch_metrics", description="torch_metrics, the one slmforge computes")
    sub_types: list[SubMetric] = Field(min_length=1, description="the figures of this metric, each with an "
                                       "optional goal")
    user_config: MetricUserConfig | None = Field(None, description="Olive's session switches (io_bind, "
                                                 "shared_kv_buffer); the rest are refused by name")
    data_config: str | None = Field(None, description="the data config whose held-out rows are scored")

    @model_validator(mode="before")
    @classmethod
    def _olive_nesting(cls, data: Any) -> Any:
        """Olive nests a metric's unknown keys into user_config; a custom metric is refused by name."""
        if not isinstance(data, dict):
            return data
        if data.get("type") == "custom":
            raise ValueError(f"metric type 'custom' is {NOT_SUPPORTED} ({_USER_CODE})")
        if data.get("type") == "perplexity":
            raise ValueError("unknown metric type 'perplexity': in Olive it is a sub_type of an 'accuracy' metric")
        if data.get("backend") == "huggingface_metrics":
            raise ValueError(f"backend 'huggingface_metrics' is {NOT_SUPPORTED} (its metrics load from the hub)")
        nested = {k: v for k, v in data.items() if k not in cls.model_fields and k in _REFUSED_USER_CONFIG
                  or k in MetricUserConfig.model_fields}
        if nested:
            data = {k: v for k, v in data.items() if k not in nested}
            data["user_config"] = {**(data.get("user_config") or {}), **nested}
        return data

    @field_validator("data_config", mode="before")
    @classmethod
    def _named(cls, value: Any) -> Any:
        if isinstance(value, dict):
            raise ValueError(f"an inline data config is {NOT_SUPPORTED}: put it in data_configs and name it here")
        return value

    @model_validator(mode="after")
    def _sub_types(self) -> "Metric":
        known = SUB_TYPES.get(self.type, ())
        for i, sub in enumerate(self.sub_types):
            if sub.name not in known:
                continue  # checks.py names it with a "did you mean"
            if sub.higher_is_better is None:
                sub.higher_is_better = higher_is_better(self.type, sub.name)
            config = sub.metric_config or {}
            model = LatencyConfig if self.type in ("latency", "throughput") else (
                AccuracyConfig if sub.name != "perplexity" else None)
            if config and model is None:
                raise ValueError(f"sub_types[{i}].metric_config: {NOT_SUPPORTED} for perplexity "
                                 "(slmforge scores the data config's labelled tokens)")
            if model is not None:
                unknown = sorted(set(config) - set(model.model_fields))
                if unknown:
                    raise ValueError(f"sub_types[{i}].metric_config.{unknown[0]} is {NOT_SUPPORTED} "
                                     f"(for {self.type} it reads {', '.join(model.model_fields)})")
                sub.metric_config = model.model_validate(config).model_dump()
            _check_goal_range(sub, i)
        return self

    @property
    def latency(self) -> dict[str, int]:
        """Olive reads warmup/repeat/sleep from the first sub-type that sets a metric_config."""
        for sub in self.sub_types:
            if sub.metric_config:
                return {k: sub.metric_config[k] for k in LATENCY_DEFAULTS}
        return dict(LATENCY_DEFAULTS)


def _check_goal_range(sub: SubMetric, i: int) -> None:
    """Olive's ranges for percent goals (0 < value < 100 where the value cannot pass 100 %)."""
    goal = sub.goal
    if goal is None or not goal.type.startswith("percent-"):
        return
    capped = (goal.type == "percent-min-improvement") != bool(sub.higher_is_better)
    if not (0 < goal.value < (100 if capped else float("inf"))):
        bound = "between 0 and 100" if capped else "above 0"
        raise ValueError(f"sub_types[{i}].goal: a {goal.type} goal on a {'higher' if sub.higher_is_better else 'lower'}"
                         f"-is-better value must be {bound} (got {goal.value:g})")


class Evaluator(Strict):
    name: str | None = Field(None, description="the evaluator's name (inline in engine.evaluator)")
    type: Literal[EVALUATOR_TYPES] | None = Field(  # type: ignore[valid-type]
        None, description="Olive's framework evaluators; the model's own by default")
    metrics: list[Metric] = Field(default_factory=list, description="the metrics every evaluate step computes")

    @model_validator(mode="before")
    @classmethod
    def _refused_types(cls, data: Any) -> Any:
        if isinstance(data, dict):
            kind = data.get("type")
            if isinstance(kind, str) and kind in REFUSED_EVALUATOR_TYPES:
                raise ValueError(f"evaluator type '{kind}' is {NOT_SUPPORTED} ({REFUSED_EVALUATOR_TYPES[kind]})")
            for key in ("user_script", "script_dir"):
                if key in data:
                    raise ValueError(f"'{key}' is {NOT_SUPPORTED} (evaluators registered by a user_script: not yet)")
        return data

    @field_validator("metrics")
    @classmethod
    def _unique(cls, metrics: list[Metric]) -> list[Metric]:
        names = [m.name for m in metrics]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"metric name '{name}' is used twice; Olive needs them unique")
        return metrics


# The engine's evaluator: a name in `evaluators`, or an evaluator inline (an error names only the one meant).
EvaluatorRef = Annotated[Union[Annotated[str, Tag("name")], Annotated[Evaluator, Tag("inline")]],
                         Discriminator(lambda v: "inline" if isinstance(v, (dict, Evaluator)) else "name")]


def active(recipe) -> tuple[str, Evaluator] | None:
    """The evaluator the engine names (or holds inline), with its name; None without one."""
    ref = recipe.engine.evaluator
    if ref is None:
        return None
    if isinstance(ref, Evaluator):
        return ref.name or "evaluator", ref
    found = recipe.evaluators.get(ref)
    return (ref, found) if found is not None else None


def data_config_name(recipe) -> str | None:
    """The data config the active evaluator's metrics score (checks.py makes it one)."""
    found = active(recipe)
    names = [m.data_config for m in found[1].metrics if m.data_config] if found else []
    return names[0] if names else None


def has_relative_goals(recipe) -> bool:
    found = active(recipe)
    return bool(found) and any(s.goal is not None and s.goal.type != "threshold"
                               for m in found[1].metrics for s in m.sub_types)


def step_spec(recipe) -> dict[str, Any] | None:
    """What the evaluate step reads as --evaluator: the active evaluator, resolved."""
    found = active(recipe)
    if found is None or not found[1].metrics:
        return None
    name, evaluator = found
    metrics = []
    for m in evaluator.metrics:
        entry: dict[str, Any] = {"name": m.name, "type": m.type, "data_config": m.data_config,
                                 "sub_types": [s.model_dump(mode="json") for s in m.sub_types]}
        if m.type in ("latency", "throughput"):
            entry["latency"] = m.latency
        metrics.append(entry)
    return {"name": name, "metrics": metrics}


def did_you_mean(key: str, known: list[str]) -> str:
    import difflib

    match = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
    return f"; did you mean '{match[0]}'?" if match else ""


def check_evaluators(loaded) -> Iterator[str]:
    """References and sub-type names, each with its path as the user wrote it."""
    recipe = loaded.recipe
    ref = recipe.engine.evaluator
    if isinstance(ref, str) and ref not in recipe.evaluators:
        yield f"{loaded.where('engine', 'evaluator')}: no evaluator named '{ref}'{did_you_mean(ref, list(recipe.evaluators))}"
    data_names = [dc.name for dc in recipe.data_configs]
    places = [(("evaluators", key), ev) for key, ev in recipe.evaluators.items()]
    if isinstance(ref, Evaluator):
        places.append((("engine", "evaluator"), ref))
    for base, evaluator in places:
        for i, metric in enumerate(evaluator.metrics):
            where = (*base, "metrics", i)
            for j, sub in enumerate(metric.sub_types):
                if (metric.type, sub.name) in REFUSED_SUB_TYPES:
                    yield (f"{loaded.where(*where, 'sub_types', j, 'name')}: sub_type '{sub.name}' is {NOT_SUPPORTED} "
                           f"({REFUSED_SUB_TYPES[metric.type, sub.name]})")
                elif sub.name not in SUB_TYPES[metric.type]:
                    known = list(SUB_TYPES[metric.type])
                    yield (f"{loaded.where(*where, 'sub_types', j, 'name')}: unknown sub_type '{sub.name}' for metric "
                           f"type '{metric.type}'{did_you_mean(sub.name, known)} (one of {', '.join(known)})")
            if metric.data_config is not None and metric.data_config not in data_names:
                yield (f"{loaded.where(*where, 'data_config')}: no data config named '{metric.data_config}'"
                       f"{did_you_mean(metric.data_config, data_names)}")
    found = active(recipe)
    if found is None:
        return
    named = {m.data_config for m in found[1].metrics if m.data_config}
    if recipe.evaluate.data_config:
        named.add(recipe.evaluate.data_config)
    if len(named) > 1:
        yield (f"{loaded.where('engine', 'evaluator')}: its metrics (and evaluate.data_config) name the data configs "
               f"{', '.join(sorted(named))}; slmforge evaluates on one held-out set: name the same one")
    if found[1].metrics and not recipe.data_configs:
        yield f"{loaded.where('engine', 'evaluator')}: its metrics need rows to score: add a data config"
