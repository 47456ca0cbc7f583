"""input_model.load_kwargs, task, is_dev and log_severity_level: each honoured, noted or refused by name.

Olive's recipes write `load_kwargs` (torch_dtype, trust_remote_code, attn_implementation; the Cookbook's
`from_pretrained_args` / `model_loading_args`), `task`, `is_dev` and `log_severity_level`; none is dropped
without a word (recipe/load_kwargs.py holds the table).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from slmforge.cli import main
from slmforge.recipe.checks import recipe_notes
from slmforge.recipe.graph import build_graph
from slmforge.recipe.loader import load_recipe

RECIPES = Path(__file__).parent / "recipes"


@pytest.fixture()
def flat_recipe(tmp_path, demo_data, tiny_model_dir) -> dict:
    """Olive 0.13's flat LoRA recipe beside its model and rows; the test edits and writes it."""
    shutil.copytree(tiny_model_dir, tmp_path / "model-cache" / "phi3-tiny")
    (tmp_path / "dataset").mkdir()
    shutil.copy(demo_data, tmp_path / "dataset" / "tones.jsonl")
    return json.loads((RECIPES / "olive013-lora.json").read_text())


def _write(tmp_path: Path, recipe: dict) -> Path:
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(recipe, indent=2))
    return path


def test_load_kwargs_torch_dtype_is_the_fine_tunes_load_dtype_when_its_pass_names_none(tmp_path, flat_recipe):
    del flat_recipe["passes"]["lora"]["torch_dtype"]
    assert build_graph(load_recipe(_write(tmp_path, flat_recipe))).step("finetune").params["torch_dtype"] == "float32"
    flat_recipe["input_model"]["load_kwargs"] = {"torch_dtype": "bf16"}
    loaded = load_recipe(_write(tmp_path, flat_recipe))
    assert build_graph(loaded).step("finetune").params["torch_dtype"] == "bfloat16"
    # Olive's nested extra_args count as written beside; the pass's own torch_dtype wins, and says so
    flat_recipe["input_model"]["load_kwargs"] = {"extra_args": {"torch_dtype": "float16"}}
    assert build_graph(load_recipe(_write(tmp_path, flat_recipe))).step("finetune").params["torch_dtype"] == "float16"
    flat_recipe["passes"]["lora"]["torch_dtype"] = "fp32"
    path = _write(tmp_path, flat_recipe)
    assert build_graph(load_recipe(path)).step("finetune").params["torch_dtype"] == "float32"
    assert main(["validate", str(path)]) == 0


def test_the_cookbooks_from_pretrained_args_reach_the_fine_tune(tmp_path, demo_data, tiny_model_dir):
    recipe = json.loads((RECIPES / "cookbook-tiny-lora.json").read_text())
    recipe["input_model"]["config"]["hf_config"]["model_loading_args"]["torch_dtype"] = "float16"
    shutil.copytree(tiny_model_dir, tmp_path / "model-cache" / "phi3-tiny")
    (tmp_path / "dataset").mkdir()
    shutil.copy(demo_data, tmp_path / "dataset" / "tones.jsonl")
    graph = build_graph(load_recipe(_write(tmp_path, recipe)))
    assert graph.step("finetune").params["torch_dtype"] == "float16"


def test_keys_without_effect_are_named_by_validate_with_why(tmp_path, flat_recipe, capsys):
    flat_recipe["input_model"]["load_kwargs"] = {"trust_remote_code": True, "attn_implementation": "eager",
                                                 "extra_args": {"low_cpu_mem_usage": True}, "device_map": "auto"}
    flat_recipe["log_severity_level"] = 0
    assert main(["validate", str(_write(tmp_path, flat_recipe))]) == 0
    out = capsys.readouterr().out
    assert "note: input_model.load_kwargs.trust_remote_code: ignored: slmforge runs no code from a model" in out
    assert "note: input_model.load_kwargs.attn_implementation: ignored: slmforge loads models with" in out
    assert "note: input_model.load_kwargs.extra_args.low_cpu_mem_usage: ignored: transformers 5" in out
    assert "note: input_model.load_kwargs.device_map: ignored: slmforge places the model itself" in out
    assert "note: log_severity_level: ignored:" in out
    # trust_remote_code false is what slmforge does: no note
    flat_recipe["input_model"]["load_kwargs"] = {"trust_remote_code": False, "torch_dtype": "float16"}
    flat_recipe["passes"] = {"builder": flat_recipe["passes"]["builder"]}  # no fine-tune reads torch_dtype
    assert main(["validate", str(_write(tmp_path, flat_recipe))]) == 0
    out = capsys.readouterr().out
    assert "trust_remote_code" not in out
    assert "note: input_model.load_kwargs.torch_dtype: ignored: no fine-tune pass loads the model" in out


def test_azure_mls_is_dev_is_named_as_ignored(tmp_path):
    recipe = json.loads((RECIPES / "cookbook-aml.json").read_text())
    name, system = next((n, s) for n, s in recipe["systems"].items() if s["type"] == "AzureML")
    system["config"]["is_dev"] = True
    notes = recipe_notes(load_recipe(_write(tmp_path, recipe), check_files=False))
    assert (f"systems.{name}.config.is_dev: ignored: slmforge's Azure ML steps always run the slmforge that submits "
            "them (its source goes with the components)") in notes


@pytest.mark.parametrize("edit,expected", [
    ({"revision": "abc123"}, "input_model.load_kwargs.revision: 'revision' is not supported by slmforge yet (a hub "
                             "id is read at its main branch; to pin a commit, download it"),
    ({"quantization_method": "bitsandbytes"},
     "input_model.load_kwargs.quantization_method: 'quantization_method' is not supported by slmforge yet (use a "
     "QLoRA pass"),
    ({"extra_args": {"token": "hf_x"}}, "input_model.load_kwargs.extra_args.token: 'token' is not supported by "
                                        "slmforge yet (a token never goes in a recipe: set HF_TOKEN"),
    ({"use_safetensors": True}, "input_model.load_kwargs.use_safetensors: 'use_safetensors' is not supported by "
                                "slmforge yet (slmforge passes no other from_pretrained argument; it reads "
                                "torch_dtype, trust_remote_code, attn_implementation"),
    ({"torch_dtype": "auto"}, "input_model.load_kwargs.torch_dtype: 'auto' is not supported by slmforge yet; name "
                              "the dtype the fine-tune loads the model in (float32, float16 or bfloat16)"),
    ({"torch_dtype": "float16", "extra_args": {"torch_dtype": "float32"}},
     "input_model.load_kwargs.extra_args.torch_dtype: 'torch_dtype' and input_model.load_kwargs.torch_dtype set "
     "the same 'torch_dtype'; keep one"),
    ({"task": "text-classification"}, "input_model.task: task 'text-classification' is not supported by slmforge: "
                                      "it fine-tunes, builds and evaluates causal language models"),
], ids=["revision", "quantization", "token", "other-key", "dtype-auto", "twice", "task"])
def test_keys_slmforge_cannot_honour_are_refused_in_one_line(tmp_path, flat_recipe, capsys, edit, expected):
    if "task" in edit:
        flat_recipe["input_model"].update(edit)
    else:
        flat_recipe["input_model"]["load_kwargs"] = edit
    path = _write(tmp_path, flat_recipe)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"slmforge: error: {path}: {expected}"), err[0]


def test_olives_default_task_is_text_generation(tmp_path, flat_recipe):
    flat_recipe["input_model"]["task"] = "text-generation-with-past"
    assert build_graph(load_recipe(_write(tmp_path, flat_recipe))).step("finetune").params["method"] == "lora"


def test_a_key_written_as_null_is_not_given(tmp_path, flat_recipe, capsys):
    """Olive's HfLoadKwargs defaults every key to None: null is accepted whatever the key, and says nothing."""
    flat_recipe["input_model"]["load_kwargs"] = {"torch_dtype": None, "revision": None, "extra_args": None}
    path = _write(tmp_path, flat_recipe)
    assert main(["validate", str(path)]) == 0
    assert "load_kwargs" not in capsys.readouterr().out
    assert build_graph(load_recipe(path)).step("finetune").params["torch_dtype"] == "float32"


def test_a_build_only_recipes_task_is_named_not_refused(tmp_path, flat_recipe, capsys):
    """olive-recipes' ModelBuilder-only recipes write task text-classification for causal LMs: Olive's ModelBuilder
    builds a causal LM whatever the task, so the task is a note there; beside a fine-tune pass it is refused."""
    flat_recipe["input_model"]["task"] = "text-classification"
    flat_recipe["passes"] = {name: p for name, p in flat_recipe["passes"].items() if p["type"] == "ModelBuilder"}
    path = _write(tmp_path, flat_recipe)
    assert main(["validate", str(path)]) == 0
    assert "input_model.task: ignored: ModelBuilder builds a causal language model" in capsys.readouterr().out
