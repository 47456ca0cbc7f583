"""Registering a shared base and its adapters (issue 22): each its own model, the base once per model.

The base is a real tiny-model build with adapter slots, the adapters real peft LoRAs converted to
`.onnx_adapter` files in finished export_adapter-shaped folders; the registry is MLflow on SQLite in tmp.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from slmforge.cli import main as cli
from slmforge.contract import manifest
from slmforge.errors import InvalidInput
from slmforge.registry import mlflow_store, model_uri
from slmforge.registry.rules import default_base_name
from slmforge.steps import register

from lora_adapter import make_lora_adapter

pytestmark = pytest.mark.slow


def adapter_folder(base: Path, peft_dir: Path, out: Path, name: str) -> Path:
    """What the export_adapter step writes: `<name>.onnx_adapter`, its sidecar and slmforge.json."""
    from slmforge.models import onnx_adapter

    with manifest.atomic_output(out) as tmp:
        onnx_adapter.convert(peft_dir, base, tmp / f"{name}.onnx_adapter", name=name)
        manifest.write_manifest(tmp, step="export_adapter", params={"name": name}, inputs={"model": base})
    return out


def metrics_folder(out: Path, accuracy: float) -> Path:
    from slmforge.contract import folders

    with manifest.atomic_output(out) as tmp:
        folders.write_metrics(tmp, {"label": "onnx", "accuracy": accuracy, "n": 10, "model_kind": "onnx"})
        manifest.write_manifest(tmp, step="evaluate", params={})
    return out


@pytest.fixture(scope="module")
def built(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    from slmforge.steps import build_onnx

    root = tmp_path_factory.mktemp("register-adapters")
    base = root / "base"
    build_onnx.run(model=str(tiny_model_dir), precision="int4", adapter_slots="all", output=str(base))
    out = {"base": base, "root": root}
    for i, task in enumerate(("tones", "topics")):
        peft_dir = make_lora_adapter(tiny_model_dir, root / f"peft-{task}", seed=i)
        out[task] = adapter_folder(base, peft_dir, root / f"adapter-{task}", task)
        out[f"{task}-metrics"] = metrics_folder(root / f"metrics-{task}", 0.5 + i / 4)
    other = root / "other-base"  # a base of another model (other weights): the adapters do not fit it
    from slmforge.models.tinymodel import build_tiny_model

    other_model = build_tiny_model(root / "other-model", seed=7)
    build_onnx.run(model=str(other_model), precision="int4", adapter_slots="all", output=str(other))
    out["other-base"] = other
    return out


def test_two_adapters_on_one_base_register_one_base_version(built, tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'registry.db'}"
    infos = [register.run(model=str(built["base"]), adapter=str(built[task]), adapter_metrics=str(built[f"{task}-metrics"]),
                          name=f"tiny-{task}", base_name="tiny-int4-base", recipe_digest=f"recipe-{task}",
                          tracking_uri=uri, registration=str(tmp_path / f"reg-{task}"))
             for task in ("tones", "topics")]
    # one base version, reused by the second recipe; one adapter version each
    assert [i["base"]["version"] for i in infos] == ["1", "1"]
    assert [(i["name"], i["version"]) for i in infos] == [("tiny-tones", "1"), ("tiny-topics", "1")]
    models = {m["name"]: m for m in mlflow_store.list_models(uri)}
    assert set(models) == {"tiny-int4-base", "tiny-tones", "tiny-topics"}
    assert [v["version"] for v in models["tiny-int4-base"]["versions"]] == ["1"]
    base_tags = models["tiny-int4-base"]["versions"][0]["tags"]
    assert base_tags["slmforge.kind"] == "base" and "slmforge.recipe_digest" not in base_tags
    slots = json.loads((built["base"] / "adapter_slots.json").read_text())
    for task, accuracy in (("tones", "0.5"), ("topics", "0.75")):
        tags = models[f"tiny-{task}"]["versions"][0]["tags"]
        assert tags["slmforge.kind"] == "adapter"
        assert (tags["slmforge.base_name"], tags["slmforge.base_version"]) == ("tiny-int4-base", "1")
        assert tags["slmforge.base_digest"] == slots["digest"]
        assert tags["metrics.accuracy"] == accuracy  # the evaluation of base + this adapter
        assert tags["slmforge.recipe_digest"] == f"recipe-{task}"
        source = Path(models[f"tiny-{task}"]["versions"][0]["source"].removeprefix("file://"))
        assert (source / f"{task}.onnx_adapter").is_file() and (source / f"{task}.onnx_adapter.json").is_file()
    record = json.loads((tmp_path / "reg-topics" / "registration.json").read_text())
    assert record["base"]["name"] == "tiny-int4-base" and record["base"]["version"] == "1"
    assert manifest.read_manifest(tmp_path / "reg-topics")["metrics"]["base"] == {"name": "tiny-int4-base", "version": "1"}

    # `slmforge models`: each adapter under its base version, not as a model of its own
    capsys.readouterr()
    assert cli(["models", "--tracking-uri", uri]) == 0
    lines = capsys.readouterr().out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("tiny-int4-base "))
    assert re.match(r"^ +(└|├)─ adapter tiny-tones +1 ", lines[at + 1]), lines
    assert re.match(r"^ +└─ adapter tiny-topics +1 ", lines[at + 2]), lines
    assert not any(line.startswith(("tiny-tones", "tiny-topics")) for line in lines), lines
    assert cli(["models", "--tracking-uri", uri, "--json"]) == 0
    listed = {m["name"]: m for m in json.loads(capsys.readouterr().out)["models"]}
    assert [(a["name"], a["version"]) for a in listed["tiny-int4-base"]["versions"][0]["adapters"]] == \
        [("tiny-tones", "1"), ("tiny-topics", "1")]


def test_a_rebuilt_base_with_other_bytes_is_a_new_base_version(built, tmp_path):
    """The base version is reused only for the same base: an adapter for another base refuses it first."""
    uri = f"sqlite:///{tmp_path / 'registry.db'}"
    with pytest.raises(InvalidInput, match="made for the base"):
        register.run(model=str(built["other-base"]), adapter=str(built["tones"]), name="tiny-tones",
                     base_name="tiny-int4-base", tracking_uri=uri, registration=str(tmp_path / "reg"))
    assert not (tmp_path / "reg").exists()


def test_plain_registration_is_unchanged_and_adapter_keys_need_an_adapter(built, tmp_path):
    uri = f"sqlite:///{tmp_path / 'registry.db'}"
    info = register.run(model=str(built["base"]), name="plain", recipe_digest="r", tracking_uri=uri,
                        registration=str(tmp_path / "reg"))
    assert "base" not in info and "slmforge.kind" not in info["tags"] and info["tags"]["slmforge.recipe_digest"] == "r"
    with pytest.raises(InvalidInput, match="give --adapter"):
        register.run(model=str(built["base"]), name="plain", base_name="b", tracking_uri=uri,
                     registration=str(tmp_path / "reg2"))


def test_the_default_base_name_is_the_source_model_and_precision():
    assert default_base_name("HuggingFaceTB/SmolLM2-135M-Instruct", "int4") == "SmolLM2-135M-Instruct-int4-base"
    assert default_base_name("/data/models/phi3 tiny/", "fp16") == "phi3-tiny-fp16-base"


def test_default_base_name_comes_from_the_base_build(built, tmp_path):
    uri = f"sqlite:///{tmp_path / 'registry.db'}"
    info = register.run(model=str(built["base"]), adapter=str(built["tones"]), name="tiny-tones", tracking_uri=uri,
                        registration=str(tmp_path / "reg"))
    assert info["base"]["name"] == "phi3-tiny-int4-base"  # the tiny model's folder is phi3-tiny


def test_two_recipe_runs_on_one_base_register_one_base_and_two_adapters(two_runs):
    """The run itself (recipe/graph.py's register step): the base once, each recipe's adapter under it, with
    the metrics of its own evaluation on the base."""
    from slmforge.commands.models import nest_adapters

    a, b = two_runs["a"], two_runs["b"]
    uri = f"sqlite:///{a.out_dir.parent / 'home' / 'registry.db'}"
    # The recipes' file names (recipe-a.json, recipe-b.json), not their output folders'
    assert a.record["registered"]["name"] == "recipe-a" and b.record["registered"]["name"] == "recipe-b"
    models = {m["name"]: m for m in nest_adapters(mlflow_store.list_models(uri))}
    assert set(models) == {"phi3-tiny-int4-base"}
    [base] = models["phi3-tiny-int4-base"]["versions"]
    assert [(x["name"], x["version"]) for x in base["adapters"]] == [("recipe-a", "1"), ("recipe-b", "1")]
    for run, adapter in zip((a, b), base["adapters"]):
        assert float(adapter["tags"]["metrics.accuracy"]) == run.record["evaluation"]["onnx"]["accuracy"]



def test_a_registered_adapter_resolves_to_its_folder_on_its_base(two_runs):
    """models:/ADAPTER@current (predict, chat, evaluate): the adapter's folder and the base it answers on."""
    from slmforge.models import onnx_adapter

    uri = f"sqlite:///{two_runs['a'].out_dir.parent / 'home' / 'registry.db'}"
    found = model_uri.resolve("models:/recipe-a@current", uri)
    assert onnx_adapter.open_file(found.path).name == "recipe-a"
    assert found.base == model_uri.resolve("models:/phi3-tiny-int4-base/1", uri).path
