"""A step's Azure ML command component (`components/<step>.yml`), generated from its StepSpec and Params.

The header comes from the StepSpec (name, display name, version, description), the environment's
image and conda file from `environments/<cpu|gpu>.yml` (named there once), the inputs, outputs and
the command from the Params: one `--name ${{inputs.name}}` per input (inside `$[[...]]` when it may
be left out), then one `--name ${{outputs.<output>}}` per output. The step's own fields come first,
then those it inherits (the finetune step's training arguments). `python -m slmforge.steps.components
--write` writes the files; a test fails when a committed file differs from what this writes.
"""

from __future__ import annotations

import dataclasses
import json
import textwrap
from typing import Any

from slmforge.contract.params import optional, ordered_fields, output_name, value_type
from slmforge.contract.step import StepSpec
from slmforge.resources import environments_dir

SCHEMA = "https://azuremlschemas.azureedge.net/latest/commandComponent.schema.json"
AML_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean"}
WIDTH = 100  # a longer text is written as a folded block of lines this wide
HEADER = ("# Generated from steps/{name}.py (its SPEC and Params) by `python -m slmforge.steps.components --write`\n"
          "# (make components): change the Params there, not this file.\n")


def environment(kind: str) -> dict[str, str]:
    """The image and conda file of environments/<kind>.yml, as a component in components/ names them."""
    import yaml

    env = yaml.safe_load((environments_dir() / f"{kind}.yml").read_text(encoding="utf-8"))
    return {"image": env["image"], "conda_file": f"../{environments_dir().name}/{env['conda_file']}"}


def _input(params: type, f: dataclasses.Field) -> dict[str, Any]:
    meta = f.metadata
    out: dict[str, Any] = {"type": meta["asset"] or AML_TYPES[value_type(params, f.name)]}
    if optional(f):
        out["optional"] = True
    if f.default not in (dataclasses.MISSING, None):
        out["default"] = f.default
    choices = meta["choices"] or ()
    text = meta["help"]
    if choices and isinstance(choices[0], str):
        out["enum"] = list(choices)
    elif choices:  # Azure ML's enum holds strings only: the step checks the others
        text += f" (one of {', '.join(map(str, choices))})"
    out["description"] = text
    return out


def command_lines(spec: StepSpec) -> list[str]:
    """The command, then one option per line: inputs (optional ones inside `$[[...]]`), then outputs."""
    options, output_options = [], []
    for f in ordered_fields(spec.params):
        if f.metadata["output"]:  # an output always has a path
            output_options.append(f"--{f.name} ${{{{outputs.{output_name(f)}}}}}")
        else:
            option = f"--{f.name} ${{{{inputs.{f.name}}}}}"
            options.append(f"$[[{option}]]" if optional(f) else option)
    return [f"python -m slmforge.steps.{spec.name}", *options, *output_options]


def component(spec: StepSpec) -> dict[str, Any]:
    """The component's content as data (what a YAML loader reads from `component_text`)."""
    fields = ordered_fields(spec.params)
    return {
        "$schema": SCHEMA, "type": "command", "name": f"slmforge_{spec.name}", "display_name": spec.display_name,
        "version": spec.version, "description": spec.description,
        "inputs": {f.name: _input(spec.params, f) for f in fields if not f.metadata["output"]},
        "outputs": {output_name(f): {"type": f.metadata["asset"], "description": f.metadata["help"]}
                    for f in fields if f.metadata["output"]},
        "code": "../src", "environment": environment(spec.environment),
        "command": " ".join(command_lines(spec)),
    }


def component_text(spec: StepSpec) -> str:
    """components/<step>.yml: `component(spec)` written for people (one option per command line)."""
    import yaml

    data = component(spec)
    lines = [HEADER.format(name=spec.name)]
    for key, value in data.items():
        if key in ("inputs", "outputs"):
            lines.append(f"{key}:\n")
            for name, entry in value.items():
                lines.append(f"  {name}:\n")
                lines += [_entry(k, v, "    ") for k, v in entry.items()]
        elif key == "environment":
            lines.append(f"{key}:\n")
            lines += [_entry(k, v, "  ") for k, v in value.items()]
        elif key == "command":
            lines.append("command: >-\n" + "".join(f"  {line}\n" for line in command_lines(spec)))
        elif key == "description":
            lines.append(_folded(key, value, ""))
        else:
            lines.append(_entry(key, value, ""))
    text = "".join(lines)
    assert yaml.safe_load(text) == data, f"{spec.name}: the YAML written does not read back as generated"
    return text


def _entry(key: str, value: Any, indent: str) -> str:
    line = f"{indent}{key}: {_scalar(value)}\n"
    return _folded(key, value, indent) if isinstance(value, str) and len(line) > WIDTH else line


def _folded(key: str, text: str, indent: str) -> str:
    """A folded block (`>-`): its lines join with single spaces into `text`."""
    wrapped = textwrap.wrap(text, WIDTH - len(indent) - 2, break_long_words=False, break_on_hyphens=False)
    return f"{indent}{key}: >-\n" + "".join(f"{indent}  {line}\n" for line in wrapped)


def _scalar(value: Any) -> str:
    """One value in YAML's flow style, quoted where a plain scalar would read as another type ('no', '2')."""
    import yaml

    if isinstance(value, list):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).removesuffix("\n...\n").strip()
    return json.dumps(value) if text.startswith("'") else text  # "1" rather than '1': a JSON string is YAML
