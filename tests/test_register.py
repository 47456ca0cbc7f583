"""The local MLflow registry (register step, `slmforge models`) and the shipped local recipes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from slmforge.backends.local.runner import LocalRunner
from slmforge.contract import manifest
from slmforge.errors import InvalidInput
from slmforge.recipe.graph import build_graph
from slmforge.recipe.loader import load_recipe
from slmforge.registry import mlflow_store
from slmforge.steps import register

from local_pipeline import REPO, cli, run_slmforge, warm_pipeline, write_recipe

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def warm(tmp_path_factory, tiny_model_dir, demo_data):
    return warm_pipeline(tmp_path_factory, tiny_model_dir, demo_data)


def test_run_registers_the_final_model_with_tags(warm):
    registered = warm.cold.record["registered"]
    assert registered["name"] == "tiny-tones" and int(registered["version"]) >= 1
    assert registered["tracking_uri"] == f"sqlite:///{warm.home / 'registry.db'}"
    [model] = [m for m in mlflow_store.list_models(registered["tracking_uri"]) if m["name"] == "tiny-tones"]
    version = next(v for v in model["versions"] if v["version"] == registered["version"])
    assert version["tags"]["slmforge.recipe_digest"] == warm.cold.record["recipe_digest"]
    assert version["tags"]["slmforge.version"]
    assert float(version["tags"]["metrics.accuracy"]) == warm.cold.record["evaluation"]["onnx"]["accuracy"]
    # The registry holds its own copy of the model: it survives `slmforge cache clean`.
    source = Path(version["source"].removeprefix("file://"))
    assert (source / "genai_config.json").is_file()
    assert manifest.content_matches(warm.cold.out_dir / "model", manifest.digest_path(source))  # the card aside


def test_models_command_lists_names_versions_and_aliases(warm):
    listing = cli(warm.home, "models")
    assert listing.returncode == 0, listing.stderr
    row = next(line for line in listing.stdout.splitlines() if line.startswith("tiny-tones"))
    assert "current" in row and "latest" in row
    as_json = json.loads(cli(warm.home, "models", "--json").stdout)
    assert as_json["tracking_uri"].endswith("registry.db")
    assert any(m["name"] == "tiny-tones" for m in as_json["models"])


def test_new_version_each_registration_and_alias_moves(warm, tmp_path):
    uri = f"sqlite:///{tmp_path / 'r.db'}"
    model = warm.cold.out_dir / "model"
    first = register.run(model=model, name="m", registration=tmp_path / "reg1", tracking_uri=uri, recipe_digest="abc")
    second = register.run(model=model, name="m", registration=tmp_path / "reg2", tracking_uri=uri, recipe_digest="def")
    assert (first["version"], second["version"]) == ("1", "2")
    [listed] = mlflow_store.list_models(uri)
    assert [v["version"] for v in listed["versions"]] == ["2", "1"]
    assert listed["versions"][0]["aliases"] == ["current", "latest"] and listed["versions"][1]["aliases"] == []
    assert manifest.is_finished(tmp_path / "reg2")


def test_register_refuses_an_unfinished_model_folder(tmp_path):
    (tmp_path / "model").mkdir()
    rc = register.main(["--model", str(tmp_path / "model"), "--name", "m", "--registration", str(tmp_path / "r"),
                        "--tracking_uri", f"sqlite:///{tmp_path / 'r.db'}"])
    assert rc == 2 and not (tmp_path / "r").exists() and not (tmp_path / "r.db").exists()


def test_empty_registry_lists_nothing(tmp_path):
    out = cli(tmp_path, "models")
    assert out.returncode == 0 and "no registered models" in out.stdout


@pytest.mark.parametrize("name", ["demo.json", "phi3-mini-lora-int4.json", "phi3-mini-qlora.json"])
def test_shipped_local_recipes_validate(name, tmp_path, demo_data, phi3_stand_in_dir):
    """The recipes users start from: valid, local, building INT4 ONNX and registering it."""
    (tmp_path / "pipelines").mkdir()
    recipe = tmp_path / "pipelines" / name
    shutil.copyfile(REPO / "pipelines" / name, recipe)
    raw = json.loads(recipe.read_text())
    assert raw["$schema"] == "./recipe.schema.json"
    model = recipe.parent / raw["input_model"]["config"]["hf_config"]["model_name"]
    shutil.copytree(phi3_stand_in_dir, model)  # load_recipe reads the model folder: a real one
    data = recipe.parent / raw["data_configs"][0]["load_dataset_config"]["data_files"]
    data.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(demo_data, data)
    graph = build_graph(load_recipe(recipe))
    assert graph.final == ("build_onnx", "model")
    assert graph.names()[-1] == "register" and "evaluate_base" in graph.names()
    assert graph.step("build_onnx").params["precision"] == "int4"
    assert all(ref.kind != "uri" for step in graph.steps for ref in step.inputs.values())


def test_a_deleted_registry_is_registered_again(warm, tmp_path):
    recipe, _ = warm.fork(tmp_path)
    home = tmp_path / "home"
    first = run_slmforge(recipe, home)
    assert first.rc == 0, first.stderr
    assert {k for k, v in first.statuses().items() if v == "ran"} == {"register"}  # another registry
    (home / "registry.db").unlink()
    again = run_slmforge(recipe, home)
    assert again.rc == 0, again.stderr
    assert again.statuses()["register"] == "ran" and again.record["registered"]["version"] == "1"
    assert [m["name"] for m in mlflow_store.list_models(f"sqlite:///{home / 'registry.db'}")] == ["tiny-tones"]


def test_a_deleted_version_or_a_truncated_registry_is_registered_again(warm, tmp_path):
    """#5: the cached registration was trusted while registry.db existed: `registered: … v6` that
    `slmforge models` did not show."""
    recipe, _ = warm.fork(tmp_path)
    home = tmp_path / "home"
    first = run_slmforge(recipe, home)
    assert first.rc == 0, first.stderr
    uri = f"sqlite:///{home / 'registry.db'}"
    mlflow_store.client_for(uri).delete_model_version("tiny-tones", first.record["registered"]["version"])

    again = run_slmforge(recipe, home)
    assert again.rc == 0, again.stderr
    assert again.statuses()["register"] == "ran"
    listed = {v["version"] for m in mlflow_store.list_models(uri) for v in m["versions"]}
    assert again.record["registered"]["version"] in listed

    (home / "registry.db").write_bytes(b"")  # truncated
    third = run_slmforge(recipe, home)
    assert third.rc == 0, third.stderr
    assert third.statuses()["register"] == "ran"
    assert [v["version"] for m in mlflow_store.list_models(uri) for v in m["versions"]] == [third.record["registered"]["version"]]


def test_registering_the_same_model_from_the_same_recipe_again_reuses_its_version(warm, tmp_path):
    """#16: a run killed right after create_model_version left `current` behind `latest`; the rerun
    registered a duplicate version with the same digest."""
    uri = f"sqlite:///{tmp_path / 'r.db'}"
    model = warm.cold.out_dir / "model"
    first = register.run(model=model, name="m", registration=tmp_path / "reg1", tracking_uri=uri, recipe_digest="abc")
    client = mlflow_store.client_for(uri)
    client.delete_registered_model_alias("m", mlflow_store.ALIAS)  # killed before the alias was set

    again = register.run(model=model, name="m", registration=tmp_path / "reg2", tracking_uri=uri, recipe_digest="abc")
    assert again["version"] == first["version"] == "1"
    [listed] = mlflow_store.list_models(uri)
    assert [(v["version"], v["aliases"]) for v in listed["versions"]] == [("1", ["current", "latest"])]
    assert listed["versions"][0]["tags"]["slmforge.model_digest"] == manifest.read_manifest(model)["outputs_digest"]


def test_a_registry_that_cannot_be_written_is_refused_before_any_step(tmp_path, tiny_model_dir, demo_data):
    """The register step's preflight (StepSpec.preflight), run by the local runner before any step: a
    registry under a plain file cannot be created, and the run says so naming the step."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    recipe = write_recipe(tmp_path / "recipe", tiny_model_dir, demo_data,
                          edit=lambda r: r["register"].update(tracking_uri=f"sqlite:///{blocker}/registry.db"))
    loaded = load_recipe(recipe)
    runner = LocalRunner(loaded, build_graph(loaded))
    with pytest.raises(InvalidInput, match=r"^step 'register': the model registry .*a-file/registry.db cannot be"):
        runner.preflight()
    assert not (tmp_path / "recipe" / "cache").exists()  # refused before any step touched the cache
