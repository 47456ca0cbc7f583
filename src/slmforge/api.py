"""The Python API: the CLI's run, validate, evaluate and recipe loading as functions.

`import slmforge` stays light: `slmforge/__init__.py` imports this module on first use of one of its
names, and this module imports the CLI's commands (and through them torch and the rest) only inside
the functions. Bad input raises `slmforge.errors.InvalidInput` (a failed step `StepFailed`), one line
naming the cause, as the CLI prints it; nothing exits the interpreter.

    import slmforge
    result = slmforge.run("pipelines/demo.json", evaluate__max_samples=8)
    result.metrics["onnx"]["accuracy"], result.model_dir, result.registered
"""

from __future__ import annotations

import argparse
import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["RunResult", "evaluate", "load_recipe", "run", "validate"]


@dataclass(frozen=True)
class RunResult:
    """A finished local run: where its outputs are, its evaluations and its registration (run.json's facts)."""

    output_dir: Path  # engine.output_dir: model/, run.json, report.md, logs/
    model_dir: Path | None  # the final model (output_dir/model)
    metrics: dict[str, dict[str, Any]]  # the evaluations by model: base, merged, onnx (accuracy, n, perplexity, ...)
    registered: dict[str, Any] | None  # name, version, tracking_uri of the registered model; None: not registered
    record: dict[str, Any] = field(repr=False)  # the whole run.json

    @property
    def report(self) -> Path:
        return self.output_dir / "report.md"


def load_recipe(recipe: str | Path, **overrides: Any):
    """Read and validate a recipe file (or the name of a shipped one, such as "demo"), as `slmforge validate`
    does; `overrides` set keys of its canonical (Olive 0.7+ flat) shape, nested with `__` or `.`:
    `engine__output_dir="out2"`, `passes__lora__training_args__max_steps=5`. Returns the LoadedRecipe
    (`.recipe`: the pydantic model; `.path`: the file)."""
    from slmforge.recipe.loader import load_recipe as load
    from slmforge.resources import find_recipe

    path = find_recipe(str(recipe))
    if not overrides:
        return load(path)
    from slmforge.recipe.generations import normalise
    from slmforge.recipe.loader import read_raw

    raw = read_raw(Path(path).expanduser().resolve())
    data = copy.deepcopy(normalise(raw).data)
    for key, value in overrides.items():
        _set(data, key, value)
    return load(path, raw=data)


def _set(data: dict[str, Any], key: str, value: Any) -> None:
    from slmforge.errors import InvalidInput

    parts = key.replace("__", ".").split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise InvalidInput(f"override {key}: {'.'.join(parts[:i + 1])} is not an object in the recipe")
    node[parts[-1]] = value


def validate(recipe: str | Path, **overrides: Any) -> dict[str, Any]:
    """`slmforge validate --json`: the step graph (recipe_digest, final, steps) and the notes, after every check
    `slmforge run` makes before its first step (the rows, the model's modules)."""
    from slmforge.commands.validate import graph_as_dict
    from slmforge.recipe.checks import recipe_notes
    from slmforge.recipe.graph import build_graph
    from slmforge.recipe.input_checks import check_inputs

    loaded = load_recipe(recipe, **overrides)
    graph = build_graph(loaded)
    check_inputs(loaded, graph)
    return {**graph_as_dict(graph), "notes": recipe_notes(loaded)}


def run(recipe: str | Path = "smollm2-tones", *, force: bool | list[str] = False, isolate: bool = False,
        plain: bool = True, **overrides: Any) -> RunResult:
    """`slmforge run`: run a recipe on this machine (cached steps reused) and return its RunResult.
    `force`: True reruns every step, a list only those; `overrides`: recipe keys, as `load_recipe` takes them."""
    from slmforge.backends.local.runner import output_dir
    from slmforge.backends.local.shipped_model import ensure_shipped_model
    from slmforge.commands.run import offline_env, run_loaded
    from slmforge.resources import find_recipe, slmforge_home

    offline_env()
    slmforge_home()  # a file there is refused before any work
    ensure_shipped_model(find_recipe(str(recipe)))
    loaded = load_recipe(recipe, **overrides)
    steps = ["*"] if force is True else list(force or [])
    record = run_loaded(loaded, force=steps, isolate=isolate, plain=plain)
    out = output_dir(loaded)
    model = (record.get("model") or {}).get("path")
    return RunResult(output_dir=out, model_dir=Path(model) if model else None, metrics=dict(record["evaluation"]),
                     registered=record.get("registered"), record=record)


def evaluate(model: str | Path, data: str | Path, *, template: str | None = None, label: str | None = None,
             max_samples: int | None = None, max_new_tokens: int | None = None,
             adapters: list[str | Path] = ()) -> dict[str, Any] | list[dict[str, Any]]:
    """`slmforge evaluate`: accuracy (with its confusion table), perplexity, tokens/s and size of a model folder
    (onnxruntime-genai or Hugging Face) on a data file or a load_data folder. With `adapters`, one result per
    adapter (a list); else the model's metrics."""
    from slmforge.commands.evaluate import evaluations
    from slmforge.recipe.schema import EvaluateConfig

    defaults = EvaluateConfig()
    args = argparse.Namespace(model=str(model), data=str(data), template=template, label=label,
                              adapter=[str(a) for a in adapters], json=True,
                              max_samples=defaults.max_samples if max_samples is None else max_samples,
                              max_new_tokens=defaults.max_new_tokens if max_new_tokens is None else max_new_tokens)
    results = list(evaluations(args))
    return results if adapters else results[0]
