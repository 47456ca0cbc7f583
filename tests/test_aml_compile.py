"""Compiling recipes to Azure ML pipeline jobs, offline with the real azure-ai-ml SDK.

Checks the pipeline validates, that `slmforge compile` output round-trips through load_job, and
what the REST body the SDK would send contains: nodes, computes, datastore and registry URIs, the
named and versioned final output, distribution, environments — and no secret anywhere.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from slmforge.cli import main as cli
from slmforge.recipe.graph import build_graph
from slmforge.recipe.loader import load_recipe
from slmforge.recipe.naming import host_system

from aml_demo import DEMO_AML, demo_aml_tree

REPO = Path(__file__).resolve().parents[1]
COOKBOOK_AML = REPO / "tests" / "recipes" / "cookbook-aml.json"
LORA_AML = REPO / "pipelines" / "phi3-mini-lora-int4-aml.json"
QLORA_AML = REPO / "pipelines" / "phi3-mini-qlora-aml.json"
FAKE_TOKEN = "hf_" + "FAKEtokenPLANTEDbyTHEtest0123456789"  # built here so no token-shaped string is committed


def aml_recipes() -> list[Path]:
    found = []
    for path in sorted((REPO / "pipelines").glob("*.json")):
        if path.name == "recipe.schema.json":
            continue
        if host_system(load_recipe(path, check_files=False)) is not None:
            found.append(path)
    return found


def compile_to(recipe: Path, out: Path, *extra: str):
    """`slmforge compile` in-process; returns the YAML as a dict and the reloaded job."""
    from azure.ai.ml import load_job

    assert cli(["compile", str(recipe), "-o", str(out), *extra]) == 0
    job = load_job(out / "pipeline.yml")
    return yaml.safe_load((out / "pipeline.yml").read_text()), job


def rest_body(job) -> dict:
    """The REST body of a pipeline job; inline components (resolved to ids at submission) as dicts."""
    def component(obj):
        return obj._to_dict() if hasattr(obj, "_to_dict") else str(obj)

    return json.loads(json.dumps(job._to_rest_object().as_dict(), default=component))["properties"]


def edited(tmp_path: Path, source: Path, edit) -> Path:
    """A copy of a recipe (next to the original's relative files) with `edit(raw)` applied."""
    raw = json.loads(source.read_text())
    edit(raw)
    path = tmp_path / source.name
    path.write_text(json.dumps(raw))
    return path


def test_aml_pipelines_exist():
    names = {p.name for p in aml_recipes()}
    assert {LORA_AML.name, QLORA_AML.name, DEMO_AML.name} <= names


@pytest.mark.parametrize("recipe", aml_recipes() + [COOKBOOK_AML], ids=lambda p: p.stem)
def test_every_aml_recipe_compiles_validates_and_round_trips(recipe, tmp_path, request):
    if recipe == DEMO_AML:  # its tiny model is built by `make demo`: give it one in a checkout-shaped tree
        recipe = demo_aml_tree(tmp_path / "tree", request.getfixturevalue("tiny_model_dir"))
    data, job = compile_to(recipe, tmp_path / "out")
    graph = build_graph(load_recipe(recipe))
    expected = [s.name for s in graph.steps if s.component != "register"]
    assert list(data["jobs"]) == expected  # register is local-only: SDK registration after the job
    result = job._validate()
    assert result.passed, result.error_messages
    assert set(job.jobs) == set(expected)
    assert job.settings.default_datastore.endswith("workspaceblobstore")
    assert (tmp_path / "out" / "spec.json").is_file()
    assert data["jobs"]["load_data"]["inputs"]["spec"]["path"] == "spec.json"  # relative to pipeline.yml
    # every local path the YAML names exists (code snapshot, conda files, uploaded inputs)
    for value in _paths(data):
        if not value.startswith(("azureml:", "${{", "http")):
            assert ((tmp_path / "out") / value).exists(), value


def _paths(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("path", "code", "conda_file") and isinstance(value, str):
                yield value
            else:
                yield from _paths(value)
    elif isinstance(node, list):
        for item in node:
            yield from _paths(item)


def test_demo_aml_uploads_the_tiny_model_and_data_and_targets_the_emulator(tmp_path, tiny_model_dir):
    from slmforge.emulator.context import Config

    recipe = demo_aml_tree(tmp_path / "tree", tiny_model_dir)
    data, job = compile_to(recipe, tmp_path / "out")
    body = rest_body(job)
    assert body["settings"]["default_compute"] == "cpu-cluster"
    assert body["outputs"]["model"]["assetName"] == "phi3-tiny-tones"
    tree = (tmp_path / "tree").resolve()
    inputs = data["jobs"]["load_data"]["inputs"]
    assert inputs["tokenizer"] == {"type": "uri_folder", "path": str(tree / ".slmforge/models/phi3-tiny")}
    assert inputs["data"] == {"type": "uri_file", "path": str(tree / "src/slmforge/data/tones.jsonl")}
    assert set(data["jobs"]) == {"load_data", "evaluate_base", "finetune", "merge", "evaluate_merged",
                                 "build_onnx", "evaluate_onnx"}
    for node in body["jobs"].values():
        assert "computeId" not in node and "environment_variables" not in node  # no vault: no hub model
    client, emulator = load_recipe(recipe).recipe.azureml_client, Config()
    assert (client.subscription_id, client.resource_group, client.workspace_name, client.keyvault_name) == \
        (emulator.subscription, emulator.resource_group, emulator.workspace, emulator.keyvault)


def test_cookbook_rest_body_has_registry_model_datastore_output_and_keyvault_name(tmp_path):
    _, job = compile_to(COOKBOOK_AML, tmp_path / "out")
    body = rest_body(job)
    digest = build_graph(load_recipe(COOKBOOK_AML)).recipe_digest
    assert body["settings"]["default_compute"] == "gpu-cluster"
    assert body["settings"]["default_datastore"] == "workspaceblobstore"
    # No register.name: the recipe file's name (issue 24), not the output folder's (phi3-finetuned).
    assert body["outputs"]["model"] == {"assetName": "cookbook-aml", "assetVersion": digest[:12],
                                        "jobOutputType": "custom_model"}
    assert body["outputs"]["metrics"]["jobOutputType"] == "uri_folder"
    jobs = body["jobs"]
    assert set(jobs) == {"load_data", "finetune", "merge", "evaluate_merged", "build_onnx", "evaluate_onnx"}
    registry = "azureml://registries/azureml-msr/models/microsoft/Phi-3-mini-4k-instruct/versions/11"
    for node in ("load_data", "finetune", "merge", "build_onnx"):  # the build reads base + adapter
        model_input = jobs[node]["inputs"]["tokenizer" if node == "load_data" else "model"]
        assert model_input == {"uri": registry, "job_input_type": "mlflow_model"}
    assert jobs["load_data"]["inputs"]["data"] == {
        "uri": "azureml://datastores/workspaceblobstore/paths/data/train_data.json", "job_input_type": "uri_file"}
    assert jobs["finetune"]["inputs"]["dataset"]["value"] == "${{parent.jobs.load_data.outputs.dataset}}"
    assert jobs["finetune"]["inputs"]["method"]["value"] == "qlora"
    assert jobs["build_onnx"]["inputs"]["adapter"]["value"] == "${{parent.jobs.finetune.outputs.adapter}}"
    assert jobs["build_onnx"]["inputs"]["dataset"]["value"] == "${{parent.jobs.load_data.outputs.dataset}}"
    assert "distribution" not in jobs["finetune"]  # one node, one process: no distribution
    for node in jobs.values():
        assert node["environment_variables"] == {"SLMFORGE_KEYVAULT": "kv-slmforge"}
        assert "computeId" not in node  # all on the default compute
    # the recipe's docker config: its base image with the recipe-relative conda file
    env = jobs["finetune"]["componentId"]["environment"]
    assert env["image"] == "mcr.microsoft.com/azureml/openmpi4.1.0-cuda11.8-cudnn8-ubuntu22.04"
    assert env["conda_file"]["name"] == "project_environment"


def test_distribution_instance_count_and_per_step_compute(tmp_path):
    _, job = compile_to(QLORA_AML, tmp_path / "out", "--compute", "a100-cluster", "--version", "7")
    body = rest_body(job)
    jobs = body["jobs"]
    assert body["settings"]["default_compute"] == "a100-cluster"  # --compute wins over aml_compute
    assert body["outputs"]["model"]["assetVersion"] == "7"
    assert jobs["finetune"]["distribution"] == {"distribution_type": "PyTorch", "process_count_per_instance": 1}
    assert jobs["finetune"]["resources"]["instance_count"] == 2
    assert jobs["load_data"]["computeId"] == "cpu-cluster"
    assert jobs["evaluate_merged"]["computeId"] == jobs["evaluate_onnx"]["computeId"] == "cpu-cluster"
    assert "computeId" not in jobs["finetune"] and "computeId" not in jobs["build_onnx"]
    assert "environment_variables" not in jobs["finetune"]  # hf_token is false: no vault name either
    assert jobs["build_onnx"]["inputs"]["execution_provider"]["value"] == "cuda"


def test_hub_model_stays_a_parameter_and_project_environments_are_used(tmp_path):
    _, job = compile_to(LORA_AML, tmp_path / "out")
    jobs = rest_body(job)["jobs"]
    assert jobs["finetune"]["inputs"]["model_id"]["value"] == "microsoft/Phi-3-mini-4k-instruct"
    assert "model" not in jobs["finetune"]["inputs"]
    assert jobs["finetune"]["computeId"] == "gpu-cluster"
    images = {n: jobs[n]["componentId"]["environment"]["image"] for n in jobs}
    gpu = yaml.safe_load((REPO / "environments" / "gpu.yml").read_text())["image"]
    cpu = yaml.safe_load((REPO / "environments" / "cpu.yml").read_text())["image"]
    assert images.pop("finetune") == gpu  # accelerators: gpu -> the GPU environment for fine-tuning
    assert set(images.values()) == {cpu}


@pytest.mark.parametrize("ref, expected", [({"name": "phi3-train", "version": 4}, "azureml:phi3-train:4"),
                                           ({"name": "phi3-train", "label": "latest"}, "azureml:phi3-train@latest")])
def test_registered_environment_by_version_or_label(tmp_path, ref, expected):
    def edit(raw):
        raw["systems"]["aml"]["config"]["aml_environment_config"] = ref

    _, job = compile_to(edited(tmp_path, LORA_AML, edit), tmp_path / "out")
    for node in rest_body(job)["jobs"].values():
        assert node["componentId"]["environment"] == expected


def test_docker_build_context_resolves_against_the_recipe(tmp_path):
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker" / "Dockerfile").write_text("FROM mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04\n")

    def edit(raw):
        raw["systems"]["aml"]["config"]["aml_docker_config"] = {"build_context_path": "docker"}

    data, _ = compile_to(edited(tmp_path, LORA_AML, edit), tmp_path / "out")
    env = data["jobs"]["finetune"]["component"]["environment"]
    assert env["build"]["path"] == "docker"  # a copy beside pipeline.yml, so the folder can move
    assert (tmp_path / "out" / "docker" / "Dockerfile").read_text() == (tmp_path / "docker" / "Dockerfile").read_text()


def test_local_data_and_model_become_uploaded_inputs(tmp_path, phi3_stand_in_dir):
    shutil.copytree(phi3_stand_in_dir, tmp_path / "model")  # validate reads the folder: a real model folder
    (tmp_path / "train.jsonl").write_text('{"phrase": "hi", "tone": "joy"}\n')

    def edit(raw):
        raw["input_model"] = {"type": "HfModel", "model_path": "./model"}
        raw["data_configs"][0]["load_dataset_config"]["data_files"] = "train.jsonl"
        raw["systems"]["aml"]["config"]["hf_token"] = False

    data, job = compile_to(edited(tmp_path, LORA_AML, edit), tmp_path / "out")
    inputs = data["jobs"]["load_data"]["inputs"]
    assert inputs["data"] == {"type": "uri_file", "path": str(tmp_path / "train.jsonl")}
    assert inputs["tokenizer"] == {"type": "uri_folder", "path": str(tmp_path / "model")}
    assert data["jobs"]["finetune"]["inputs"]["model"]["path"] == str(tmp_path / "model")
    assert job._validate().passed


def test_planted_token_appears_nowhere(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    out = tmp_path / "out"
    _, job = compile_to(COOKBOOK_AML, out)
    texts = [p.read_text() for p in out.rglob("*") if p.is_file()]
    texts.append(json.dumps(rest_body(job)))
    texts.append(job._to_yaml() if hasattr(job, "_to_yaml") else yaml.safe_dump(job._to_dict()))
    captured = capsys.readouterr()
    texts += [captured.out, captured.err]
    assert len(texts) >= 5
    for text in texts:
        assert FAKE_TOKEN not in text
        assert "hf_FAKE" not in text
    assert "kv-slmforge" in texts[-3]  # the vault *name* is there; the secret is not


def test_non_aml_host_is_invalid_input(tmp_path, capsys):
    def edit(raw):
        raw["systems"]["here"] = {"type": "LocalSystem"}
        raw["engine"]["host"] = raw["engine"]["target"] = "here"

    assert cli(["compile", str(edited(tmp_path, LORA_AML, edit)), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "system 'here' is not an AzureML system; give --compute to run it on Azure ML" in err
    assert not (tmp_path / "out" / "pipeline.yml").exists()


def _local_host(raw):
    raw["systems"] = {"here": {"type": "LocalSystem", "accelerators": ["gpu"]}}
    raw["engine"]["host"] = raw["engine"]["target"] = "here"


def test_local_host_with_compute_compiles_on_that_compute_with_project_environments(tmp_path):
    _, job = compile_to(edited(tmp_path, LORA_AML, _local_host), tmp_path / "out", "--compute", "my-cluster")
    body = rest_body(job)
    assert body["settings"]["default_compute"] == "my-cluster"
    images = {n: node["componentId"]["environment"]["image"] for n, node in body["jobs"].items()}
    project = {kind: yaml.safe_load((REPO / "environments" / f"{kind}.yml").read_text())["image"]
               for kind in ("cpu", "gpu")}
    assert images.pop("finetune") == project["gpu"]  # the local system's accelerators still choose
    assert set(images.values()) == {project["cpu"]}


def test_compiled_folder_is_self_contained_and_can_be_moved(tmp_path):
    import shutil

    from azure.ai.ml import load_job

    compile_to(COOKBOOK_AML, tmp_path / "out")
    moved = tmp_path / "elsewhere" / "pipeline-folder"
    moved.parent.mkdir()
    shutil.move(tmp_path / "out", moved)
    text = (moved / "pipeline.yml").read_text()
    assert str(REPO) not in text and str(tmp_path / "out") not in text
    job = load_job(moved / "pipeline.yml")
    for name, node in job.jobs.items():
        code = (Path(node.component.base_path) / node.component.code).resolve()  # as the SDK resolves it
        assert code.is_relative_to(moved.resolve()), (name, code)
        module = node.component.command.split()[2]  # python -m slmforge.steps.<step>
        assert (code / (module.replace(".", "/") + ".py")).is_file(), (name, module)
    snapshot = {p.relative_to(moved / "code").as_posix() for p in (moved / "code").rglob("*") if p.is_file()}
    assert ".amlignore" in snapshot and "slmforge/cli.py" in snapshot
    assert not any("__pycache__" in p or p.endswith(".pyc") for p in snapshot)  # src/.amlignore honoured


def _with_conda(tmp_path: Path, conda: dict) -> Path:
    """The Cookbook's AzureML recipe with its own conda file (conda.yaml beside the recipe copy)."""
    (tmp_path / "conda.yaml").write_text(yaml.safe_dump(conda))
    return edited(tmp_path, COOKBOOK_AML, lambda raw: None)


def _pip(env: dict) -> list[str]:
    return next(d["pip"] for d in env["conda_file"]["dependencies"] if isinstance(d, dict))


def test_user_conda_file_gets_slmforge_requirements_and_keeps_its_own_packages(tmp_path):
    from slmforge.contract.runtime_env import conda_spec, missing_requirements

    conda = {"name": "mine", "channels": ["conda-forge"],
             "dependencies": ["python=3.11", "pip", {"pip": ["scikit-learn==1.5.2", "torch>=2.0", "slmforge"]}]}
    _, job = compile_to(_with_conda(tmp_path, conda), tmp_path / "out")
    env = rest_body(job)["jobs"]["finetune"]["componentId"]["environment"]
    pip = _pip(env)
    assert env["conda_file"]["name"] == "mine" and env["conda_file"]["channels"] == ["conda-forge"]
    assert pip[:3] == ["scikit-learn==1.5.2", "torch==2.13.0", "slmforge"]  # the user's, torch pinned to ours
    gpu_pins = next(d["pip"] for d in conda_spec("gpu")["dependencies"] if isinstance(d, dict))
    assert set(gpu_pins) <= set(pip)  # accelerators: gpu -> the GPU builds (onnxruntime-gpu, ...)
    assert missing_requirements(env["conda_file"]) == []
    assert missing_requirements(conda) != []  # what the emulator would have refused


@pytest.mark.parametrize("dependency, message", [
    ({"pip": ["torch==2.0.1"]}, "'torch==2.0.1' conflicts with slmforge's torch==2.13.0"),
    ({"pip": ["onnxruntime-gpu<1.20"]}, "'onnxruntime-gpu<1.20' conflicts with slmforge's onnxruntime-gpu==1.32.0"),
    ("python=3.8", "'python=3.8' conflicts with slmforge's python=3.11"),
])
def test_conflicting_pin_in_user_conda_file_is_one_line_error(tmp_path, capsys, dependency, message):
    recipe = _with_conda(tmp_path, {"name": "mine", "dependencies": ["pip", dependency]})
    assert cli(["compile", str(recipe), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    # named where the Cookbook recipe writes it (under `config`), as every recipe error is
    assert "systems.aml.config.aml_docker_config.conda_file_path: conda.yaml: " + message in err[0]
    assert not (tmp_path / "out" / "pipeline.yml").exists()


@pytest.mark.parametrize("text, message", [("dependencies: [python=3.11\n", "conda.yaml is not valid YAML"),
                                           ("- python=3.11\n", "conda.yaml is not a conda environment file")])
def test_unreadable_user_conda_file_is_one_line_error(tmp_path, capsys, text, message):
    recipe = _with_conda(tmp_path, {})
    (tmp_path / "conda.yaml").write_text(text)
    assert cli(["compile", str(recipe), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_lora_only_with_evaluate_input_model_registers_no_base_metrics(tmp_path):
    """A LoRA-only recipe that evaluates its input model: the base model's figures are not the adapter's,
    so the pipeline has no metrics output for the registration to carry (the local graph's rule too)."""
    def lora_only(raw):
        raw["passes"] = {"lora": raw["passes"]["lora"]}
        raw["engine"]["evaluate_input_model"] = True

    shutil.copy(COOKBOOK_AML.parent / "conda.yaml", tmp_path / "conda.yaml")
    recipe = edited(tmp_path, COOKBOOK_AML, lora_only)
    graph = build_graph(load_recipe(recipe, check_files=False))
    assert "evaluate_base" in graph.names() and graph.final == ("finetune", "adapter")
    assert graph.final_metrics is None
    assert "metrics" not in graph.step("register").inputs
    _, job = compile_to(recipe, tmp_path / "out")
    body = rest_body(job)
    assert "evaluate_base" in body["jobs"]
    assert set(body["outputs"]) == {"model"}  # no metrics output: nothing of the base's is registered
