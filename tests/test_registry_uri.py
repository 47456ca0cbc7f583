"""The registry by name (issue 24.3/24.4): models:/NAME/VERSION and models:/NAME@ALIAS in predict, chat,
evaluate and a recipe's model_path; default names from the recipe; "reused vN (same model)"; a project
registry; the run's "try it" line from the recipe's own eval data."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest

from slmforge.backends.local.report import cli_command, summary_rows
from slmforge.cli import main
from slmforge.contract import manifest
from slmforge.errors import InvalidInput
from slmforge.recipe.checks import recipe_notes
from slmforge.recipe.graph import build_graph
from slmforge.recipe.loader import load_recipe
from slmforge.registry import model_uri
from slmforge.registry.rules import PROJECT_REGISTRY, project_tracking_uri, tracking_uri_here
from slmforge.steps import register

from local_pipeline import warm_pipeline, write_recipe

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def warm(tmp_path_factory, tiny_model_dir, demo_data):
    return warm_pipeline(tmp_path_factory, tiny_model_dir, demo_data)


@pytest.fixture
def in_warm_home(warm, tmp_path, monkeypatch):
    """The CLI run in an empty folder with a copy of the warm run's registry as the user's, its `current`
    alias on the warm run's version (other tests register more versions of tiny-tones in the shared one)."""
    from slmforge.registry.mlflow_store import client_for

    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(warm.home / "registry.db", home / "registry.db")  # the versions' files stay where they are
    client_for(f"sqlite:///{home / 'registry.db'}").set_registered_model_alias(
        "tiny-tones", "current", str(warm.cold.record["registered"]["version"]))
    monkeypatch.setenv("SLMFORGE_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    return warm


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_predict_answers_a_registered_model_by_alias_as_its_folder_does(in_warm_home, capsys):
    phrase = "What a wonderful surprise, thank you all!"
    code, by_alias, err = _cli(capsys, "predict", "--model", "models:/tiny-tones@current", phrase)
    assert code == 0, err
    code, by_folder, err = _cli(capsys, "predict", "--model", str(in_warm_home.cold.out_dir / "model"), phrase)
    assert code == 0, err
    assert by_alias == by_folder and by_alias.strip()


def test_a_version_and_latest_resolve_to_the_registered_copy(warm):
    uri = warm.cold.record["registered"]["tracking_uri"]
    version = warm.cold.record["registered"]["version"]
    found = model_uri.resolve(f"models:/tiny-tones/{version}", uri)
    assert found.version == version and found.base is None
    without_card = (manifest.MANIFEST, manifest.CARD)  # the output's model card is not part of the model
    assert manifest.digest_path(found.path, exclude=without_card) == manifest.digest_path(warm.cold.out_dir / "model",
                                                                                          exclude=without_card)
    assert found.path != warm.cold.out_dir / "model"  # the registry's own copy
    assert model_uri.resolve("models:/tiny-tones/latest", uri).path == model_uri.resolve("models:/tiny-tones@current",
                                                                                        uri).path


def test_evaluate_takes_a_registered_model_and_labels_it_by_name(in_warm_home, capsys):
    code, out, err = _cli(capsys, "evaluate", "--model", "models:/tiny-tones@current", "--data",
                          str(in_warm_home.data_file), "--max_samples", "2", "--max_new_tokens", "2", "--json")
    assert code == 0, err
    assert json.loads(out)["label"] == f"tiny-tones-v{in_warm_home.cold.record['registered']['version']}"


@pytest.mark.parametrize("uri, says", [
    ("models:/tiny-tones/999",
     r"tiny-tones has no version '999' in sqlite:///\S+; its versions: (\d+, )*\d+ \(or latest\)$"),
    ("models:/tiny-tones@prod", r"tiny-tones has no alias 'prod' in \S+; its aliases: @current \(v\d+\), @latest"),
    ("models:/nothing@current", r"no model 'nothing' in the registry \S+ \(registered: [^)]*tiny-tones"),
    ("models:/tiny-tones", r"not a registered model URI; use models:/NAME/VERSION or models:/NAME@ALIAS$"),
])
def test_an_unknown_uri_is_one_line_naming_what_exists(in_warm_home, capsys, uri, says):
    for command in (["predict", "--model", uri, "hi"], ["chat", "--model", uri]):
        code, out, err = _cli(capsys, *command)
        assert code == 2 and out == ""
        [line] = err.strip().splitlines()
        assert line.startswith(f"slmforge: error: {uri}: ")
        assert re.search(says, line), line


def test_the_default_registered_name_is_the_recipe_files_stem(tmp_path, tiny_model_dir, demo_data):
    recipe = write_recipe(tmp_path, tiny_model_dir, demo_data, name="my-intents.json",
                          edit=lambda r: r.pop("register"))
    graph = build_graph(load_recipe(recipe))
    assert graph.step("register").params["name"] == "my-intents"  # not the output folder's name, "out"


def _registry_copy(warm, db: Path) -> str:
    """A copy of the warm run's registry.db (made by MLflow already: no schema migration to wait for)."""
    db.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(warm.home / "registry.db", db)
    return f"sqlite:///{db.resolve()}"


def test_registering_the_same_model_again_says_reused(warm, tmp_path, capsys):
    uri = _registry_copy(warm, tmp_path / "r.db")
    model = warm.cold.out_dir / "model"
    first = register.run(model=model, name="m", registration=tmp_path / "a", tracking_uri=uri, recipe_digest="d")
    assert "registered m version 1" in capsys.readouterr().out and first["reused"] is False
    again = register.run(model=model, name="m", registration=tmp_path / "b", tracking_uri=uri, recipe_digest="d")
    assert "reused (same model) m version 1" in capsys.readouterr().out and again["reused"] is True
    assert manifest.read_manifest(tmp_path / "b")["metrics"]["reused"] is True
    rows = dict(summary_rows({"registered": {"name": "m", "version": "1", "reused": True}}))
    assert rows["registered"] == "m reused v1 (same model): models:/m@current"
    assert dict(summary_rows({"registered": {"name": "m", "version": "2", "reused": False}}))["registered"] == \
        "m v2: models:/m@current"


def test_a_recipe_model_path_names_a_registered_model_in_the_project_registry(warm, tmp_path, tiny_model_dir,
                                                                               demo_data, monkeypatch):
    """`register.local_registry: project`: the registry beside the recipe, where a models:/ model_path is read,
    the run registers, and the CLI looks when run from that folder."""
    monkeypatch.setenv("SLMFORGE_HOME", str(tmp_path / "user-home"))
    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    manifest.write_manifest(base, step="pretrained", params={})
    project = project_tracking_uri(tmp_path / "proj")
    assert _registry_copy(warm, tmp_path / "proj" / PROJECT_REGISTRY) == project
    register.run(model=base, name="tiny-base", registration=tmp_path / "reg", tracking_uri=project)

    def edit(r):
        r["register"]["local_registry"] = "project"
        r["input_model"]["config"]["hf_config"]["model_name"] = "models:/tiny-base@current"

    loaded = load_recipe(write_recipe(tmp_path / "proj", tiny_model_dir, demo_data, edit=edit))
    registered = model_uri.resolve("models:/tiny-base/1", project).path
    assert loaded.recipe.input_model.model_path == str(registered)
    assert build_graph(loaded).step("finetune").inputs["model"].value == str(registered)
    assert any("models:/tiny-base@current read from the registry" in n for n in recipe_notes(loaded))
    assert register.SPEC.local_params(loaded) == {"tracking_uri": project}
    assert (tmp_path / "proj" / PROJECT_REGISTRY).is_file() and not (tmp_path / "user-home" / "registry.db").exists()
    monkeypatch.chdir(tmp_path / "proj")
    assert tracking_uri_here() == project

    def bad(r):
        edit(r)
        r["input_model"]["config"]["hf_config"]["model_name"] = "models:/tiny-base/7"

    with pytest.raises(InvalidInput, match=r"input_model\.config\.hf_config\.model_name: models:/tiny-base/7: "
                                           r"tiny-base has no version '7' .*its versions: 1 \(or latest\)$"):
        load_recipe(write_recipe(tmp_path / "proj", tiny_model_dir, demo_data, edit=bad))


def test_the_try_it_line_is_a_row_of_the_recipes_eval_data(warm):
    example = warm.cold.record["evaluation"]["onnx"]["example"]
    phrases = {json.loads(line)["phrase"]: json.loads(line)["tone"]
               for line in warm.data_file.read_text(encoding="utf-8").splitlines() if line.strip()}
    assert phrases[example["text"]] == example["expected"]
    line = next(ln for ln in warm.cold.stdout.splitlines() if ln.strip().startswith("try it:"))
    assert example["text"] in line and f"expected: {example['expected']}" in line


def test_the_command_is_written_as_it_can_be_called(monkeypatch, tmp_path):
    """`slmforge` when PATH finds this installation's, else the script beside this Python (.venv/bin/slmforge)."""
    script = Path(sys.executable).parent / "slmforge"
    if not script.is_file():
        pytest.skip(f"no slmforge script beside {sys.executable}")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.chdir(tmp_path)  # a folder the script is not under: its absolute path
    assert cli_command() == str(script)
    monkeypatch.chdir(script.parent.parent)
    assert cli_command() == f"{script.parent.name}/slmforge"
    monkeypatch.setenv("PATH", str(script.parent))
    assert cli_command() == "slmforge"
