"""The step graph's shapes: a step, where each of its inputs comes from, and the graph both backends run.

A step names its component (`components/<component>.yml`), binds each component input to a
`Ref` (another step's output, a local path, an Azure ML URI, or a small generated file) and
sets its parameters. Parameter and input names are the component's own, so a backend only
renders the component's command with them. recipe/graph.py builds the graph from a recipe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Union

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

    def inputs(self, key: str = "model") -> tuple[dict[str, Ref], dict[str, Scalar]]:
        """The model as a step's inputs and parameters: the `key` input, or a hub id's `model_id`."""
        if self.ref is None:
            return {}, {"model_id": self.model_id or ""}
        return {key: self.ref}, {}


@dataclass
class StepGraph:
    steps: list[Step]
    final: tuple[str, str]  # (step, output) holding the final model
    recipe_digest: str
    # (step, output): the evaluation of the final model itself, the metrics its registration carries
    # (the register step's input; on Azure ML the pipeline's metrics output). None: none evaluates it.
    final_metrics: tuple[str, str] | None = None
    # (step, output): a separate adapter for the final model (a base with adapter slots), and the
    # evaluation of that base with it active. None without ExtractAdapters.
    adapter: tuple[str, str] | None = None
    adapter_metrics: tuple[str, str] | None = None
    # Which rows the evaluate steps score (data_step.scored_rows): data_config, split, held_out or separate.
    scored: dict[str, Scalar] | None = None

    def step(self, name: str) -> Step:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)

    def names(self) -> list[str]:
        return [s.name for s in self.steps]
