"""Recipes in the shapes Olive has published since 0.4 (tests/recipes/olive-history/, written for
slmforge after reading Olive's examples at v0.4.0-v0.9.x, microsoft/olive-recipes and the Phi-3
Cookbook): every one validates to the step graph it means, and the fine-tuning ones run to a model
on the tiny model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from local_pipeline import run_slmforge
from slmforge.cli import main
from slmforge.recipe.graph import build_graph
from slmforge.recipe.loader import load_recipe

HISTORY = Path(__file__).parent / "recipes" / "olive-history"
RECIPES = sorted(p.name for p in HISTORY.glob("*.json"))


HUB_DATASET = "slmforge-tests/guanaco-tones"
HUB_COMMIT = "6f1c2d3e4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d"


def _place(folder: Path, tiny_model_dir: Path, demo_data: Path) -> Path:
    """The recipes beside what they name: model-cache/phi3-tiny, dataset/tones.jsonl, the user script."""
    for path in HISTORY.iterdir():
        shutil.copy(path, folder / path.name)
    model = shutil.copytree(tiny_model_dir, folder / "model-cache" / "phi3-tiny")
    # Olive's default max_seq_len (1024) must fit: a longer context, still plain Phi-3 (max == original).
    config = json.loads((model / "config.json").read_text())
    config.update(max_position_embeddings=2048, original_max_position_embeddings=2048)
    (model / "config.json").write_text(json.dumps(config))
    (folder / "dataset").mkdir()
    shutil.copy(demo_data, folder / "dataset" / "tones.jsonl")
    return folder


def _hub_stand_in(cache: Path, demo_data: Path) -> None:
    """A guanaco-shaped dataset (one `text` column) in an offline hub cache, laid out as huggingface_hub
    lays out a download: what olive-recipes' hub recipes read, served by the code path users take."""
    storage = cache / f"datasets--{HUB_DATASET.replace('/', '--')}"
    (storage / "refs").mkdir(parents=True)
    (storage / "refs" / "main").write_text(HUB_COMMIT)
    rows = [json.loads(line) for line in demo_data.read_text(encoding="utf-8").splitlines() if line.strip()]
    lines = [json.dumps({"text": f"### Human: {r['phrase']}### Assistant: {r['tone']}"}) for r in rows]
    snapshot = storage / "snapshots" / HUB_COMMIT / "openassistant_best_replies_train.jsonl"
    snapshot.parent.mkdir(parents=True)
    snapshot.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def history(tmp_path_factory, tiny_model_dir, demo_data):
    folder = _place(tmp_path_factory.mktemp("olive-history"), tiny_model_dir, demo_data)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("HF_HUB_CACHE", str(folder / "hf-cache"))
        env.setenv("HF_HUB_OFFLINE", "1")
        _hub_stand_in(folder / "hf-cache", demo_data)
        yield folder


@pytest.mark.parametrize("name", RECIPES)
def test_every_history_recipe_validates(history, capsys, name):
    assert main(["validate", str(history / name)]) == 0, capsys.readouterr().err
    assert "valid;" in capsys.readouterr().out


def _steps(history: Path, name: str) -> dict:
    graph = build_graph(load_recipe(history / name))
    return {s.name: s for s in graph.steps}


def test_olive_04_dict_data_configs_and_an_inline_target(history):
    loaded = load_recipe(history / "olive04-dict-data-configs-inline-target.json")
    assert [dc.name for dc in loaded.recipe.data_configs] == ["tones-train"]
    assert loaded.recipe.engine.target in loaded.recipe.systems  # the inline system joined `systems`
    assert loaded.recipe.systems[loaded.recipe.engine.target].accelerators == ["gpu"]  # "GPU", as Olive reads it
    steps = _steps(history, "olive04-dict-data-configs-inline-target.json")
    assert steps["finetune"].params["method"] == "qlora" and steps["finetune"].params["r"] == 8
    assert steps["load_data"].params["strategy"] == "line-by-line"
    assert any("model_class: ignored" in n for n in loaded.normalised.notes)


def test_olive_04_training_arguments_are_honoured_or_named_as_ignored(history):
    loaded = load_recipe(history / "olive04-dict-data-configs-inline-target.json")
    steps = _steps(history, "olive04-dict-data-configs-inline-target.json")
    assert steps["finetune"].params["eval_strategy"] == "steps"  # Olive 0.4's evaluation_strategy
    assert steps["finetune"].params["load_best_model_at_end"] is True
    assert any("training_args.output_dir" in n for n in loaded.notes)


def test_olive_04_user_script_components_name_the_scripts_function(history):
    steps = _steps(history, "olive04-user-script-components.json")
    assert steps["load_data"].inputs["user_script"].value.endswith("olive04_tone_script.py")


def test_hub_data_is_pinned_to_the_commit_the_cache_resolves(history):
    steps = _steps(history, "olive-recipes-hub-qlora-chain.json")
    pinned = json.loads(steps["load_data"].inputs["hub_data"].value)
    assert {source["revision"] for source in pinned.values()} == {HUB_COMMIT}
    assert steps["finetune"].params["method"] == "qlora"
    assert steps["build_onnx"].params["precision"] == "fp32"  # a quantizer-free chain at fp32


def test_olive_evaluators_run_in_the_evaluate_steps(history):
    steps = _steps(history, "olive06-evaluators.json")
    assert "evaluator" in steps["evaluate_merged"].inputs


def test_olive_05_refers_to_a_data_config_by_its_key(history):
    loaded = load_recipe(history / "olive05-named-key-differs.json")
    assert loaded.recipe.passes["lora"].train_data_config == "tones_train"
    assert any("passes refer to it as 'tones_train'" in n for n in loaded.normalised.notes)


def test_olive_06_pass_flows_run_the_one_flow_in_order(history):
    steps = _steps(history, "olive06-params-levels-pass-flows.json")
    assert [s for s in steps if s.startswith("build")] == ["build_onnx"]
    assert steps["build_onnx"].params["precision"] == "fp32"  # the flow's builder, not builder_int8


def test_lower_case_types_and_builder_switches(history):
    steps = _steps(history, "olive09-flat-lowercase-builder-switches.json")
    assert steps["finetune"].params["method"] == "dora"
    build = steps["build_onnx"].params
    assert build["int4_algo_config"] == "rtn"
    assert "op_types_to_quantize=MatMul" in build["extra_options"]
    assert "enable_cuda_graph" not in build.get("extra_options", "")  # false: the builder's default


def test_the_export_chain_is_one_checked_builder_with_the_quantizers_settings(history):
    loaded = load_recipe(history / "olive-recipes-export-chain-int4.json")
    assert [p.type for p in loaded.recipe.passes.values()] == ["LoKr", "MergeAdapterWeights", "ModelBuilder"]
    steps = _steps(history, "olive-recipes-export-chain-int4.json")
    assert steps["build_onnx"].params["precision"] == "int4"
    assert steps["build_onnx"].params["int4_block_size"] == 32
    assert "merge" in steps  # a LoKr adapter is merged first: the builder reads LoRA beside the base only
    [note] = [n for n in loaded.normalised.notes if "export chain" in n]
    assert "OnnxConversion -> OrtTransformersOptimization -> OnnxMatMul4Quantizer -> ModelBuilder" in note


def test_a_chain_quantizer_algorithm_without_a_counterpart_is_refused(history, capsys):
    recipe = json.loads((history / "olive-recipes-export-chain-int4.json").read_text())
    recipe["passes"]["q"]["algorithm"] = "GPTQ"
    path = history / "chain-gptq.json"
    path.write_text(json.dumps(recipe))
    assert main(["validate", str(path)]) == 2
    assert "q.algorithm: 'GPTQ' has no ModelBuilder counterpart" in capsys.readouterr().err


@pytest.mark.parametrize("kind,why", [
    ("GraphSurgeries", "rewrites the ONNX graph for a vendor execution provider"),
    ("gptq", "quantizes the PyTorch model; slmforge quantizes in its checked ModelBuilder step"),
    ("LoftQ", "initialises LoRA by rewriting the base model's weights"),
    ("OrtSessionParamsTuning", "tunes onnxruntime session options"),
])
def test_olive_passes_slmforge_does_not_run_are_refused_by_name(history, capsys, kind, why):
    recipe = json.loads((history / "olive09-flat-lowercase-builder-switches.json").read_text())
    recipe["passes"]["x"] = {"type": kind}
    path = history / f"refused-{kind}.json"
    path.write_text(json.dumps(recipe))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "passes.x.type: pass type" in err[0] and why in err[0], err


def test_several_pass_flows_are_refused(history, capsys):
    recipe = json.loads((history / "olive06-params-levels-pass-flows.json").read_text())
    recipe["pass_flows"] = [["lora", "merge", "builder"], ["lora", "merge", "builder_int8"]]
    path = history / "two-flows.json"
    path.write_text(json.dumps(recipe))
    assert main(["validate", str(path)]) == 2
    assert "pass_flows: 2 flows: slmforge runs one flow per recipe" in capsys.readouterr().err


FINETUNING = [n for n in RECIPES if any(
    str(p.get("type", "")).lower() in ("lora", "qlora", "dora", "loha", "lokr")
    for p in json.loads((HISTORY / n).read_text())["passes"].values())]


@pytest.mark.parametrize("name", FINETUNING)
def test_fine_tuning_history_recipes_run_to_a_model(history, tmp_path, name):
    outcome = run_slmforge(history / name, tmp_path / "home")
    assert outcome.rc == 0, outcome.stderr
    final = outcome.out_dir / "model"
    manifest = json.loads((final / "slmforge.json").read_text())
    assert manifest["step"] in ("finetune", "merge", "build_onnx")
    if manifest["step"] == "build_onnx":
        assert (final / "genai_config.json").is_file()
    elif manifest["step"] == "finetune":
        assert (final / "adapter_config.json").is_file()
    else:
        assert (final / "config.json").is_file()
    record = json.loads((outcome.out_dir / "run.json").read_text())
    if name == "olive06-evaluators.json":
        evaluation = record["evaluation"]["merged"]
        metrics = {m["name"]: m for m in evaluation["evaluator"]["metrics"]}
        assert [s["name"] for s in metrics["tone"]["sub_types"]] == ["accuracy_score", "f1_score"]
        assert metrics["latency"]["sub_types"][0]["value"] > 0
