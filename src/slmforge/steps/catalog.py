"""Every step's StepSpec by name: what backends and the component generator read about a step."""

from __future__ import annotations

from slmforge.contract.step import StepSpec
from slmforge.steps import build_onnx, evaluate, export_adapter, finetune, load_data, merge, register

STEPS: dict[str, StepSpec] = {m.SPEC.name: m.SPEC for m in (load_data, finetune, merge, build_onnx, export_adapter, evaluate,
                                                      register)}


def spec(component: str) -> StepSpec:
    """The StepSpec of a graph step's component."""
    return STEPS[component]
