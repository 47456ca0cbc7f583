"""`slmforge submit` of the tiny LoRA -> merge -> int4 recipe against the emulated workspace, end to end:
the job completes, the model is registered and downloadable, the downloaded ONNX model answers
`slmforge predict`, a resubmission uploads no code, and the hf-token secret stays in the vault."""

from __future__ import annotations

import json
import re
import secrets
import shutil
from pathlib import Path

import pytest

from slmforge.cli import main as cli
from slmforge.emulator import control

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _tiny_aml_recipe(folder: Path, model_dir: Path, data: Path) -> Path:
    recipe = json.loads((REPO / "pipelines" / "demo.json").read_text())
    recipe.pop("$schema", None)
    shutil.copytree(model_dir, folder / "phi3-tiny")
    shutil.copy(data, folder / "tones.jsonl")
    recipe["input_model"]["config"]["hf_config"]["model_name"] = "phi3-tiny"
    recipe["data_configs"][0]["load_dataset_config"]["data_files"] = "tones.jsonl"
    recipe["azureml_client"] = {"subscription_id": "00000000-0000-0000-0000-000000000000",
                                "resource_group": "slmforge-emulator", "workspace_name": "emulated-workspace",
                                "keyvault_name": "kv-emulator"}
    recipe["systems"]["aml"] = {"type": "AzureML", "config": {"accelerators": ["cpu"], "aml_compute": "cpu-cluster",
                                                              "hf_token": True}}
    recipe["engine"].update(host="aml", target="aml", cache_dir="cache", output_dir="out")
    recipe["passes"]["lora"]["config"]["training_args"]["max_steps"] = 20
    path = folder / "tiny-aml.json"
    path.write_text(json.dumps(recipe, indent=1))
    return path


def test_submit_tiny_recipe_registers_a_model_that_predicts(tmp_path, tiny_model_dir, demo_data, capsys):
    from slmforge.emulator.client import ml_client, secret_client

    state = tmp_path / "emulator"
    info = control.start(state)
    ws = info["workspace_file"]
    token = "hf_" + secrets.token_hex(16)
    try:
        secret_client(ws).set_secret("hf-token", token)
        recipe = _tiny_aml_recipe(tmp_path, tiny_model_dir, demo_data)
        assert cli(["submit", str(recipe), "--workspace", ws, "--wait"]) == 0
        out = capsys.readouterr().out
        job = re.search(r"^submitted (\S+)$", out, re.M).group(1)
        name, version = re.search(r"^registered model (\S+):(\S+)$", out, re.M).groups()
        ml = ml_client(ws)
        assert ml.models.get(name, version).path.startswith("azureml://")

        assert cli(["download", job, "--workspace", ws, "-o", str(tmp_path / "dl")]) == 0
        model = tmp_path / "dl" / "model"
        assert (model / "genai_config.json").is_file() and (model / "model.onnx").is_file()
        capsys.readouterr()
        assert cli(["predict", "--model", str(model), "I am so happy today"]) == 0
        assert capsys.readouterr().out.strip()

        uploads = control.admin(state, "GET", "counters").get("start_pending_upload", 0)
        assert cli(["submit", str(recipe), "--workspace", ws, "--detach"]) == 0
        second = re.search(r"^submitted (\S+)$", capsys.readouterr().out, re.M).group(1)
        assert control.admin(state, "GET", "counters").get("start_pending_upload", 0) == uploads
        assert cli(["cancel", second, "--workspace", ws]) == 0
    finally:
        control.stop(state)
    leaks = [p for root in (state, tmp_path / "dl", tmp_path / "out") if root.exists()
             for p in root.rglob("*") if p.is_file() and p.name != "secrets.json" and token.encode() in p.read_bytes()]
    assert leaks == []
