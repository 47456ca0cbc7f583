"""`model_folder.resolve_hf_folder` / `resolve_tokenizer_folder`: a registry model in MLflow format
(model_file_format PyTorch.MLflow) arrives in a step as an MLflow folder; the steps need the
Hugging Face folder inside it. Layouts as azureml's hftransformersv2 flavour (data/model,
data/tokenizer, often under mlflow_model_folder/) and mlflow.transformers (model/,
components/tokenizer/) write them; the inner folders hold the tiny model's real files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from slmforge.errors import InvalidInput
from slmforge.models.model_folder import resolve_hf_folder, resolve_tokenizer_folder

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


def _split(tiny: Path, model_dir: Path, tokenizer_dir: Path, mlmodel: Path, flavour: str) -> None:
    """The tiny model's weights+config in model_dir, its tokenizer files in tokenizer_dir."""
    model_dir.mkdir(parents=True)
    tokenizer_dir.mkdir(parents=True)
    for f in tiny.iterdir():
        if f.is_file():
            shutil.copy(f, (tokenizer_dir if f.name in TOKENIZER_FILES else model_dir) / f.name)
    mlmodel.write_text(f"flavors:\n  python_function:\n    loader_module: mlflow.{flavour}\n  {flavour}:\n"
                       "    task: text-generation\nmlflow_version: 2.12.1\n")


def test_plain_hf_folder_is_itself(tiny_model_dir):
    assert resolve_hf_folder(tiny_model_dir) == tiny_model_dir
    assert resolve_tokenizer_folder(tiny_model_dir) == tiny_model_dir


def test_azureml_registry_layout_under_mlflow_model_folder(tmp_path, tiny_model_dir):
    root = tmp_path / "input" / "mlflow_model_folder"
    _split(tiny_model_dir, root / "data" / "model", root / "data" / "tokenizer", root / "MLmodel", "hftransformersv2")
    hf = resolve_hf_folder(tmp_path / "input")
    assert hf == root / "data" / "model"
    assert resolve_tokenizer_folder(tmp_path / "input") == root / "data" / "tokenizer"
    assert resolve_hf_folder(root) == hf  # the MLflow folder itself works too

    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    assert AutoConfig.from_pretrained(hf).vocab_size == 512
    assert AutoModelForCausalLM.from_pretrained(hf).num_parameters() > 0
    assert AutoTokenizer.from_pretrained(resolve_tokenizer_folder(root))("hi")["input_ids"]


def test_mlflow_transformers_layout(tmp_path, tiny_model_dir):
    root = tmp_path / "mlflow"
    _split(tiny_model_dir, root / "model", root / "components" / "tokenizer", root / "MLmodel", "transformers")
    assert resolve_hf_folder(root) == root / "model"
    assert resolve_tokenizer_folder(root) == root / "components" / "tokenizer"


def test_mlflow_without_hf_model_and_empty_folder_are_one_line_errors(tmp_path):
    (tmp_path / "mlflow" / "data").mkdir(parents=True)
    (tmp_path / "mlflow" / "MLmodel").write_text("flavors: {}\n")
    with pytest.raises(InvalidInput, match=r"an MLflow model without a Hugging Face model inside"):
        resolve_hf_folder(tmp_path / "mlflow")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInput, match=r"empty: not a Hugging Face model folder \(no config.json\)"):
        resolve_hf_folder(tmp_path / "empty")
