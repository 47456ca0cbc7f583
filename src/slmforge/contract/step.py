"""What a step is besides its parameters, declared once on the step (`SPEC` in `steps/<name>.py`).

The component YAML is generated from a StepSpec and its Params (contract/component_yaml.py); the
local runner, the Azure ML compiler and the emulator read these facts (through `steps.catalog`)
instead of naming a step. A fact a backend needs about one step belongs here, not in the backend.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

from slmforge.contract.params import output_name


@dataclass(frozen=True)
class StepSpec:
    name: str  # the module `slmforge.steps.<name>` and the component `components/<name>.yml`
    params: type  # its Params dataclass: inputs, outputs, types, defaults, help; its docstring the title and description
    version: str  # the Azure ML component version: raise it when the inputs or the command change
    environment: Literal["cpu", "gpu"] = "cpu"  # "gpu": its Azure ML environment when the system has a GPU
    distributable: bool = False  # may run under torchrun across processes and instances
    model_kind: str | None = None  # what its model output holds, as the run record names it (adapter, merged, onnx)
    # Outputs that hold resumable state rather than results (fine-tuning checkpoints): the local cache
    # keeps them in the entry's work/, never verifies or publishes them, and drops them once the step is done.
    work_outputs: tuple[str, ...] = ()
    # What the run record takes from its result: an evaluation of a model (its metrics), or the registration.
    record: Literal["evaluation", "registration"] | None = None
    # Dataset inputs it reads only the eval part of (folders.eval_digest: eval rows, eval sequences, template):
    # the local cache keys them by that part, so editing only the training rows does not rerun it.
    eval_inputs: tuple[str, ...] = ()
    # Runs on this machine only: on Azure ML the pipeline's named outputs stand in for it (register: the
    # SDK registers the final model after the job, backends/aml/models.py).
    local_only: bool = False
    # Hooks the local backend calls; each None when the step needs nothing of the kind.
    # local_params(loaded recipe): values it adds to the step's parameters on this machine (a default that
    # depends on the machine, e.g. register's local tracking URI).
    local_params: Callable[[Any], dict[str, Any]] | None = None
    # preflight(params, where): a check before any step runs; raises errors.InvalidInput naming `where`.
    preflight: Callable[[dict[str, Any], str], None] | None = None
    # still_valid(outputs): whether a cached result still holds (its output folders by name), e.g. a
    # registration whose version is still in its registry; False reruns the step.
    still_valid: Callable[[dict[str, Path]], bool] | None = None

    @property
    def display_name(self) -> str:
        """The component's title: the first line of the Params docstring."""
        return inspect.cleandoc(self.params.__doc__ or self.name).split("\n", 1)[0].strip()

    @property
    def description(self) -> str:
        """The component's description: the rest of the Params docstring, as one paragraph."""
        rest = inspect.cleandoc(self.params.__doc__ or "").split("\n", 1)[1:]
        return " ".join(rest[0].split()) if rest else ""

    def __post_init__(self) -> None:
        outputs = {output_name(f) for f in dataclasses.fields(self.params)} - {None}
        unknown = sorted(set(self.work_outputs) - outputs)
        assert not unknown, f"{self.name}: work_outputs {unknown} are not outputs of its Params"
        inputs = {f.name for f in dataclasses.fields(self.params) if f.metadata.get("asset") and not output_name(f)}
        unknown = sorted(set(self.eval_inputs) - inputs)
        assert not unknown, f"{self.name}: eval_inputs {unknown} are not folder inputs of its Params"
