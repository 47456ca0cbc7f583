"""The recipe: every Cookbook shape validates unchanged; every mistake gets one precise line and exit 2."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest

from slmforge.cli import main
from slmforge.recipe.graph import build_graph
from slmforge.recipe.loader import load_recipe

RECIPES = Path(__file__).parent / "recipes"


def _place_cookbook_files(folder: Path, data_file: Path, model_dir: Path) -> None:
    """What the Cookbook's local recipe expects next to it: a model folder (a stand-in for Phi-3-mini) and its data."""
    shutil.copytree(model_dir, folder / "model-cache" / "microsoft" / "phi-3-mini")
    (folder / "dataset").mkdir()
    shutil.copy(data_file, folder / "dataset" / "dataset-classification.json")


@pytest.fixture()
def cookbook_dir(tmp_path, seed_data, phi3_stand_in_dir) -> Path:
    shutil.copy(RECIPES / "cookbook-local.json", tmp_path / "olive-config.json")
    _place_cookbook_files(tmp_path, seed_data, phi3_stand_in_dir)
    return tmp_path


def test_cookbook_local_recipe_validates_unchanged(cookbook_dir, capsys):
    assert main(["validate", str(cookbook_dir / "olive-config.json")]) == 0
    out = capsys.readouterr().out
    for step in ("load_data", "finetune", "merge", "build_onnx", "evaluate_onnx", "register"):
        assert step in out


def test_cookbook_aml_recipe_validates_and_points_at_azure():
    graph = build_graph(load_recipe(RECIPES / "cookbook-aml.json"))
    load = graph.step("load_data")
    assert load.inputs["data"].value == "azureml://datastores/workspaceblobstore/paths/data/train_data.json"
    assert graph.step("finetune").inputs["model"].value == (
        "azureml://registries/azureml-msr/models/microsoft/Phi-3-mini-4k-instruct/versions/11")
    assert graph.step("finetune").params["method"] == "qlora"
    # The Cookbook's lora_r / lora_alpha are honoured (Olive silently ignores them).
    assert graph.step("finetune").params["r"] == 64 and graph.step("finetune").params["alpha"] == 64


def test_params_config_shape_hub_id_and_top_level_components():
    graph = build_graph(load_recipe(RECIPES / "datastore-top-level-components.json"))
    finetune = graph.step("finetune")
    assert finetune.params["model_id"] == "microsoft/Phi-3-mini-4k-instruct"
    assert "model" not in finetune.inputs
    assert graph.step("build_onnx").params["int4_block_size"] == 64
    assert graph.step("merge").params["torch_dtype"] == "float16"


def test_yaml_hfmodel_shape_with_unwrapped_levels(tmp_path, demo_data, tiny_model_dir):
    shutil.copy(RECIPES / "hfmodel-params-config.yaml", tmp_path / "recipe.yaml")
    shutil.copytree(tiny_model_dir, tmp_path / "model-cache" / "phi3-tiny")
    (tmp_path / "dataset").mkdir()
    shutil.copy(demo_data, tmp_path / "dataset" / "tones.jsonl")
    loaded = load_recipe(tmp_path / "recipe.yaml")
    assert loaded.recipe.engine.output_dir == "out/hf"  # engine keys at the top level
    graph = build_graph(loaded)
    assert graph.step("load_data").params["loss_on"] == "completion"
    assert graph.step("load_data").params["strategy"] == "line-by-line"
    assert graph.step("build_onnx").params["precision"] == "fp32"
    # paths resolve relative to the recipe file, not the working directory
    assert graph.step("load_data").inputs["data"].value == str((tmp_path / "dataset" / "tones.jsonl").resolve())


def test_graph_leaves_out_steps_the_recipe_does_not_ask_for(cookbook_dir):
    recipe = json.loads((cookbook_dir / "olive-config.json").read_text())
    del recipe["passes"]["merge_adapter_weights"], recipe["passes"]["builder"]
    path = cookbook_dir / "lora-only.json"
    path.write_text(json.dumps(recipe))
    graph = build_graph(load_recipe(path))
    assert graph.names() == ["load_data", "finetune", "register"]
    assert graph.final == ("finetune", "adapter")

    # Issue 11 #14: with the base evaluated, the adapter was registered with the base's metrics.
    recipe.setdefault("engine", {})["evaluate_input_model"] = True
    path.write_text(json.dumps(recipe))
    graph = build_graph(load_recipe(path))
    assert graph.names() == ["load_data", "evaluate_base", "finetune", "register"]
    assert "metrics" not in graph.step("register").inputs


def test_evaluate_enabled_false_runs_no_evaluation_and_no_answer_gates(cookbook_dir, capsys):
    """Issue 25: a run as Olive runs a recipe without an evaluator, so bench/e2e_smollm2.py can price the checks."""
    recipe = json.loads((cookbook_dir / "olive-config.json").read_text())
    full = build_graph(load_recipe(cookbook_dir / "olive-config.json"))
    assert "evaluate_onnx" in full.names() and "dataset" in full.step("build_onnx").inputs
    recipe["evaluate"] = {"enabled": False}
    path = cookbook_dir / "no-eval.json"
    path.write_text(json.dumps(recipe))
    graph = build_graph(load_recipe(path))
    assert [n for n in graph.names() if n.startswith("evaluate")] == []
    assert "dataset" not in graph.step("build_onnx").inputs and "metrics" not in graph.step("register").inputs
    assert graph.names() == [n for n in full.names() if not n.startswith("evaluate")]

    recipe.setdefault("engine", {})["evaluate_input_model"] = True  # asks for an evaluation: one line, exit 2
    path.write_text(json.dumps(recipe))
    capsys.readouterr()
    assert main(["validate", str(path)]) == 2
    assert "evaluate.enabled: false, but engine.evaluate_input_model is true" in capsys.readouterr().err


# --------------------------------------------------------------------------- mistakes

def _set(path: str, value):
    def mutate(r):
        node = r
        keys = path.split(".")
        for k in keys[:-1]:
            node = node[int(k)] if k.isdigit() else node[k]
        node[keys[-1]] = value
    return mutate


def _delete(path: str):
    def mutate(r):
        node = r
        keys = path.split(".")
        for k in keys[:-1]:
            node = node[int(k)] if k.isdigit() else node[k]
        del node[keys[-1]]
    return mutate


def _rename(path: str, new: str):
    def mutate(r):
        node = r
        keys = path.split(".")
        for k in keys[:-1]:
            node = node[int(k)] if k.isdigit() else node[k]
        node[new] = node.pop(keys[-1])
    return mutate


def _aml_without_keyvault(r):
    r["azureml_client"] = {"subscription_id": "s", "resource_group": "g", "workspace_name": "w"}
    r["systems"]["aml"] = {"type": "AzureML", "config": {"hf_token": True, "aml_compute": "gpu"}}


def _merge_first(r):
    merge = r["passes"].pop("merge_adapter_weights")
    r["passes"] = {"merge_adapter_weights": merge, **r["passes"]}


LORA = "passes.lora.config"
PRE = "data_configs[0].pre_process_data_config.params"

MISTAKES = [
    ("training arg typo", _rename(f"{LORA}.training_args.max_steps", "max_step"),
     f"{LORA}.training_args.max_step: unknown key 'max_step'; did you mean 'max_steps'?"),
    ("top-level typo", _rename("passes", "pases"), "pases: unknown key 'pases'; did you mean 'passes'?"),
    ("pass key typo", _rename(f"{LORA}.lora_dropout", "lora_dropuot"),
     f"{LORA}.lora_dropuot: unknown key 'lora_dropuot'; did you mean 'lora_dropout'?"),
    ("data params typo", _rename("data_configs.0.load_dataset_config.params.data_files", "data_file"),
     "data_configs[0].load_dataset_config.params.data_file: unknown key 'data_file'; did you mean 'data_files'?"),
    ("unknown pass type", _set("passes.lora.type", "LoRAX"), "passes.lora.type: unknown pass type 'LoRAX'; did you mean 'LoRA'?"),
    ("dropout out of range", _set(f"{LORA}.lora_dropout", 1.5), f"{LORA}.lora_dropout: Input should be less than 1"),
    ("learning rate zero", _set(f"{LORA}.training_args.learning_rate", 0),
     f"{LORA}.training_args.learning_rate: Input should be greater than 0"),
    ("unknown data config", _set(f"{LORA}.train_data_config", "dataset_train"),
     f"{LORA}.train_data_config: no data config named 'dataset_train'; did you mean 'dataset_default_train'?"),
    ("unknown host", _set("engine.host", "local"), "engine.host: no system named 'local'; did you mean 'local_system'?"),
    ("hf_token without key vault", _aml_without_keyvault,
     "systems.aml: hf_token is true but azureml_client.keyvault_name is not set"),
    ("template placeholder", _set("data_configs.0.pre_process_data_config.params.text_template", "{phrase} is {tonee}"),
     f"{PRE}.text_template: placeholder '{{tonee}}' is not in text_cols ['phrase', 'tone']"),
    ("column not in data", lambda r: r["data_configs"][0]["pre_process_data_config"]["params"].update(
        text_cols=["phrase", "tones"], text_template="{phrase}: {tones}"),
     f"{PRE}.text_cols: column 'tones' is not in dataset-classification.json"),
    ("missing data file", _set("data_configs.0.load_dataset_config.params.data_files", "dataset/missing.json"),
     "data_configs[0].load_dataset_config.params.data_files: data file 'dataset/missing.json' not found (looked at"),
    ("missing model folder", _set("input_model.config.hf_config.model_name", "model-cache/microsoft/phi-3-mini-128k"),
     "input_model.config.hf_config.model_name: model folder 'model-cache/microsoft/phi-3-mini-128k' not found"),
    ("bad precision", _set("passes.builder.config.precision", "int3"),
     "passes.builder.config.precision: got 'int3'; expected 'int4', 'int8', 'fp16' or 'fp32'"),
    ("merge before fine-tune", _merge_first, "passes.merge_adapter_weights: MergeAdapterWeights needs a fine-tune pass (LoRA, QLoRA, DoRA, LoHa, LoKr) before it"),
    ("r beside lora_r", _set(f"{LORA}.r", 8),
     f"{LORA}.r: 'r' and {LORA}.lora_r set the same 'r' (lora_r: the Cookbook and Olive < 0.8); keep one"),
    ("missing required key", _delete(f"{LORA}.train_data_config"), f"{LORA}.train_data_config: required key is missing"),
    ("bad corpus strategy", _set("data_configs.0.pre_process_data_config.params.corpus_strategy", "lines"),
     f"{PRE}.corpus_strategy: got 'lines'; expected 'join' or 'line-by-line'"),
    ("bad block size", _set("passes.builder.config.int4_block_size", 48), "passes.builder.config.int4_block_size: got 48"),
    ("system config typo", lambda r: r["systems"]["local_system"]["config"].update(acelerators=["cpu"]),
     "systems.local_system.config.acelerators: unknown key 'acelerators'; did you mean 'accelerators'?"),
    ("data_files of the wrong type", _set("data_configs.0.load_dataset_config.params.data_files", 5),
     "data_configs[0].load_dataset_config.params.data_files: Input should be a valid string or list or dictionary (got 5)"),
    ("system without type", lambda r: r["systems"].update(gpu={"config": {}}), "systems.gpu: needs a 'type'"),
    ("negative source_max_len", _set("data_configs.0.pre_process_data_config.params.source_max_len", -1),
     f"{PRE}.source_max_len: Input should be greater than 0"),
    # Issue 11 #22: strict types, no coercion of strings or booleans into numbers.
    ("rank as a string", _set(f"{LORA}.lora_r", "16"), f"{LORA}.lora_r: Input should be a valid integer"),
    ("rank as a boolean", _set(f"{LORA}.lora_r", True), f"{LORA}.lora_r: Input should be a valid integer"),
]


@pytest.mark.parametrize("mutate,expected", [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES])
def test_each_mistake_gets_one_precise_line(cookbook_dir, capsys, mutate, expected):
    recipe = json.loads((cookbook_dir / "olive-config.json").read_text())
    recipe = copy.deepcopy(recipe)
    mutate(recipe)
    path = cookbook_dir / "olive-config.json"
    path.write_text(json.dumps(recipe, indent=2))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0] == f"slmforge: error: {path}: {expected}" or err[0].startswith(f"slmforge: error: {path}: {expected}"), err[0]
    assert "Traceback" not in err[0]


def test_all_problems_are_reported_at_once(cookbook_dir, capsys):
    recipe = json.loads((cookbook_dir / "olive-config.json").read_text())
    recipe["passes"]["lora"]["config"]["training_args"]["max_step"] = 5
    recipe["passes"]["builder"]["config"]["precision"] = "int2"
    recipe["engine"]["outptu_dir"] = "x"
    path = cookbook_dir / "olive-config.json"
    path.write_text(json.dumps(recipe))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3, err
    assert any("max_step" in e for e in err) and any("int2" in e for e in err) and any("outptu_dir" in e for e in err)


def test_broken_json_names_line_and_column(tmp_path, capsys):
    path = tmp_path / "broken.json"
    path.write_text('{\n  "input_model": {\n    "type": "HfModel",\n  }\n}\n')
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"slmforge: error: {path}: line 4 column 3: not valid JSON")


def test_missing_recipe_file(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "nope.json")]) == 2
    assert "recipe file not found" in capsys.readouterr().err


def test_hub_id_is_not_mistaken_for_a_path(cookbook_dir, capsys):
    recipe = json.loads((cookbook_dir / "olive-config.json").read_text())
    recipe["input_model"]["config"]["hf_config"]["model_name"] = "microsoft/Phi-3-mini-4k-instruct"
    (cookbook_dir / "hub.json").write_text(json.dumps(recipe))
    assert main(["validate", str(cookbook_dir / "hub.json")]) == 0


def test_the_fine_tune_trains_on_its_data_and_evaluates_on_the_evaluate_data_config(tmp_path, tiny_model_dir):
    """Issue 11 #3: with `evaluate.data_config` naming a second data set, the fine-tune once trained on it."""
    repo = Path(__file__).resolve().parents[1]
    shutil.copytree(repo / "pipelines", tmp_path / "pipelines")
    data = tmp_path / "src" / "slmforge" / "data"
    data.mkdir(parents=True)
    for name in ("tones-train.jsonl", "tones-heldout.jsonl"):
        shutil.copy(repo / "src" / "slmforge" / "data" / name, data / name)
    shutil.copytree(tiny_model_dir, tmp_path / ".slmforge" / "models" / "smollm2-135m-instruct")  # a model folder
    graph = build_graph(load_recipe(tmp_path / "pipelines" / "smollm2-tones.json"))
    load = graph.step("load_data")
    assert load.inputs["data"].value == str(data / "tones-train.jsonl")
    assert load.inputs["eval_data"].value == str(data / "tones-heldout.jsonl")
    assert "eval_dataset_size" not in load.params
    assert graph.step("build_onnx").inputs["dataset"].value == "load_data"  # the answer gates' rows


def test_a_key_written_twice_is_refused(tmp_path, capsys):
    """Issue 11 #13: `"lora"` twice in `passes` silently kept the second."""
    from slmforge.cli import main as cli

    path = tmp_path / "twice.json"
    path.write_text('{"input_model": {"type": "HfModel", "model_path": "m"}, "passes": {"lora": {"type": "LoRA"}, '
                    '"lora": {"type": "QLoRA"}}}')
    assert cli(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"slmforge: error: {path}: key 'lora' appears twice in one object; JSON keeps only the last, so keep one"]


LIMITS = [  # issue 11 #12: each validated, then failed late or ran away
    ("source_max_len over the context", lambda r: r["data_configs"][0]["pre_process_data_config"].update(
        source_max_len=2048), "data_configs[0].pre_process_data_config.source_max_len: 2048 tokens is longer than "
     "the model's context (512: max_position_embeddings in"),
    ("pad_to_max_len with 10**7", lambda r: r["data_configs"][0]["pre_process_data_config"].update(
        source_max_len=10**7, pad_to_max_len=True), "source_max_len: 10000000 tokens is longer than the model's context"),
    ("source_max_len 1", lambda r: r["data_configs"][0]["pre_process_data_config"].update(source_max_len=1),
     "source_max_len: 1 tokens cannot hold a prompt and its answer (at least 16)"),
    ("rank over the width", lambda r: r["passes"]["lora"]["config"].update(r=100000),
     "passes.lora.config.r: rank 100000 is above the model's hidden_size 128"),
    ("max_steps 1e40", lambda r: r["passes"]["lora"]["config"]["training_args"].update(max_steps=10**40),
     "passes.lora.config.training_args.max_steps: 10000000000000000000000000000000000000000 is beyond any run"),
    ("max_new_tokens over the context", lambda r: r["evaluate"].update(max_new_tokens=4096),
     "evaluate.max_new_tokens: 4096 is not below the model's context (512)"),
]


@pytest.mark.parametrize("edit,expected", [m[1:] for m in LIMITS], ids=[m[0] for m in LIMITS])
def test_values_beyond_the_models_limits_are_refused_at_validate_time(tmp_path, tiny_model_dir, demo_data, capsys,
                                                                      edit, expected):
    from local_pipeline import write_recipe

    recipe = write_recipe(tmp_path, tiny_model_dir, demo_data, edit=edit)
    assert main(["validate", str(recipe)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err
