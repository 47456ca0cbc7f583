"""Read a component YAML and render its `command:` into an argv, the way Azure ML does.

Azure ML substitutes `${{inputs.x}}` and `${{outputs.y}}` and drops each `$[[ ... ]]` block whose
optional inputs are unset. The SDK has no helper for running that command locally (docs/pitfalls.md), so
this module is ours. Both the local backend and the emulator use it, so the argv a step sees is
the same wherever it runs.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Union

from slmforge.errors import InvalidInput
from slmforge.resources import components_dir

Value = Union[str, int, float, bool, None]

_REF = re.compile(r"\$\{\{\s*(inputs|outputs)\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_OPTIONAL = re.compile(r"\$\[\[(.*?)\]\]", re.DOTALL)


@dataclass(frozen=True)
class ComponentSpec:
    name: str  # file stem, e.g. "finetune"
    path: Path
    version: str
    command: str
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def defaults(self) -> dict[str, Value]:
        return {k: v["default"] for k, v in self.inputs.items() if "default" in v}

    def is_optional(self, name: str) -> bool:
        return bool(self.inputs.get(name, {}).get("optional", False))


@lru_cache(maxsize=None)
def load_component_spec(name: str, directory: Path | None = None) -> ComponentSpec:
    import yaml

    path = (directory or components_dir()) / f"{name}.yml"
    if not path.is_file():
        raise InvalidInput(f"component '{name}' not found: {path}")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return ComponentSpec(
        name=name,
        path=path,
        version=str(data.get("version", "1")),
        command=" ".join(str(data["command"]).split()),
        inputs=dict(data.get("inputs") or {}),
        outputs=dict(data.get("outputs") or {}),
    )


def bind(spec: ComponentSpec, values: dict[str, Value], outputs: dict[str, str]) -> dict[str, Value]:
    """Check names against the component, fill defaults; keys become 'inputs.x' / 'outputs.y'."""
    unknown = sorted(set(values) - set(spec.inputs))
    if unknown:
        raise InvalidInput(f"component '{spec.name}' has no input '{unknown[0]}'")
    missing_out = sorted(set(spec.outputs) - set(outputs))
    if missing_out:
        raise InvalidInput(f"component '{spec.name}': output '{missing_out[0]}' has no path")
    bound: dict[str, Value] = {f"inputs.{k}": v for k, v in spec.defaults().items()}
    bound.update({f"inputs.{k}": v for k, v in values.items()})
    for name in spec.inputs:
        if bound.get(f"inputs.{name}") is None and not spec.is_optional(name):
            raise InvalidInput(f"component '{spec.name}': required input '{name}' is not set")
    bound.update({f"outputs.{k}": v for k, v in outputs.items()})
    return bound


def format_value(value: Value) -> str:
    """How Azure ML writes a value into a command: booleans as True/False."""
    if isinstance(value, bool):
        return "True" if value else "False"
    return str(value)


def render_command(command: str, values: dict[str, Value]) -> list[str]:
    """Render a component command to an argv. `values` maps 'inputs.x' / 'outputs.y' to values.

    An optional block is kept only when every reference inside it has a value; a reference
    outside any block must have one.
    """

    def is_set(key: str) -> bool:
        return values.get(key) is not None

    def keep_block(match: re.Match) -> str:
        refs = [f"{kind}.{name}" for kind, name in _REF.findall(match.group(1))]
        return match.group(1) if all(is_set(r) for r in refs) else " "

    text = _OPTIONAL.sub(keep_block, command)

    def substitute(match: re.Match) -> str:
        key = f"{match.group(1)}.{match.group(2)}"
        if not is_set(key):
            raise InvalidInput(f"command needs '{key}' but it is not set")
        return shlex.quote(format_value(values[key]))

    return shlex.split(_REF.sub(substitute, text))


def step_module(argv: list[str]) -> str | None:
    """'slmforge.steps.X' when argv is `python -m slmforge.steps.X ...` (run in-process), else None."""
    if len(argv) >= 3 and Path(argv[0]).name.startswith("python") and argv[1] == "-m" \
            and argv[2].startswith("slmforge.steps."):
        return argv[2]
    return None
