"""Package contracts: components load in the real SDK, the CLI starts light, the schema copy is current."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from slmforge.contract.render import bind, components_dir, load_component_spec, render_command

REPO = Path(__file__).resolve().parents[1]
STEPS = ["load_data", "finetune", "merge", "build_onnx", "evaluate", "register"]
HEAVY = ["torch", "transformers", "azure.ai.ml", "mlflow", "peft", "onnxruntime", "datasets"]


@pytest.mark.parametrize("name", STEPS)
def test_component_loads_and_validates_in_the_sdk(name):
    from azure.ai.ml import load_component

    component = load_component(components_dir() / f"{name}.yml")
    result = component._validate()
    assert result.passed, result.error_messages
    assert component.command.startswith(f"python -m slmforge.steps.{name} ")
    spec = load_component_spec(name)
    assert set(spec.inputs) == set(component.inputs) and set(spec.outputs) == set(component.outputs)


def _modules_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("argv", [["--help"], ["validate", "tests/recipes/cookbook-aml.json"]])
def test_cli_starts_without_heavy_imports(argv):
    code = ("import contextlib, io\nfrom slmforge.cli import main\n"
            f"with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    try:\n        rc = main({argv!r})\n    except SystemExit as e:\n        rc = e.code\n"
            "assert rc == 0, rc")
    loaded = _modules_after(code)
    assert not [m for m in HEAVY if m in loaded]


def test_committed_schema_is_current():
    from slmforge.commands.schema import recipe_schema_text

    committed = (REPO / "pipelines" / "recipe.schema.json").read_text()
    assert committed == recipe_schema_text(), "run: slmforge schema -o pipelines/recipe.schema.json"


def test_unknown_command_suggests(capsys):
    from slmforge.cli import main

    assert main(["valdate", "x.json"]) == 2
    assert "did you mean 'validate'?" in capsys.readouterr().err


def test_render_drops_optional_blocks_and_quotes_values():
    spec = load_component_spec("load_data")
    values = bind(spec, {"data": "/d/my data.json", "spec": "/w/spec.json", "tokenizer": "/m",
                         "eval_dataset_size": 0.25, "pad_to_max_len": True},
                  {"dataset": "/o/dataset"})
    argv = render_command(spec.command, values)
    assert argv[:3] == ["python", "-m", "slmforge.steps.load_data"]
    assert argv[argv.index("--data") + 1] == "/d/my data.json"
    assert argv[argv.index("--pad_to_max_len") + 1] == "True"
    assert argv[argv.index("--eval_dataset_size") + 1] == "0.25"
    assert "--eval_data" not in argv and "--model_id" not in argv and "--max_samples" not in argv
    assert argv[argv.index("--max_seq_len") + 1] == "1024"  # the component default


def test_render_rejects_unknown_and_missing_inputs():
    from slmforge.errors import InvalidInput

    spec = load_component_spec("merge")
    with pytest.raises(InvalidInput, match="has no input 'adaptor'"):
        bind(spec, {"adaptor": "/a"}, {"model": "/o"})
    with pytest.raises(InvalidInput, match="required input 'adapter'"):
        bind(spec, {}, {"model": "/o"})
