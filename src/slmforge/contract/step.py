"""What a step is besides its parameters, declared once on the step (`SPEC` in `steps/<name>.py`).

The component YAML is generated from a StepSpec and its Params (contract/component_yaml.py); the
local runner, the Azure ML compiler and the emulator read these facts (through `steps.catalog`)
instead of naming a step. A fact a backend needs about one step belongs here, not in the backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class StepSpec:
    name: str  # the module `slmforge.steps.<name>` and the component `components/<name>.yml`
    params: type  # its Params dataclass: inputs, outputs, types, defaults, help
    display_name: str
    description: str
    version: str  # the Azure ML component version: raise it when the inputs or the command change
    environment: Literal["cpu", "gpu"] = "cpu"  # "gpu": its Azure ML environment when the system has a GPU
    distributable: bool = False  # may run under torchrun across processes and instances
    model_kind: str | None = None  # what its model output holds, as the run record names it (adapter, merged, onnx)
