"""merge step: adapter folded into the base, checked against the adapter model's logits."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from slmforge.contract import manifest
from slmforge.steps import merge

from lora_adapter import make_lora_adapter

PROMPTS = ["### Text: I lost my keys again.\n### The tone is:\n", "What a wonderful surprise!", "hello there"]


def _logits(model, tokenizer, prompts):
    import torch

    with torch.inference_mode():
        return [model(torch.tensor([tokenizer(p)["input_ids"]])).logits[0] for p in prompts]


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """A LoRA adapter whose finetune-style manifest points at a dataset folder holding the template."""
    root = tmp_path_factory.mktemp("merge")
    dataset = root / "dataset"
    dataset.mkdir()
    manifest.write_manifest(dataset, step="load_data", params={"text_template": "### Text: {phrase}\n### The tone is:\n{tone}"})
    adapter = make_lora_adapter(tiny_model_dir, root / "adapter", seed=1)
    manifest.write_manifest(adapter, step="finetune", params={"r": 8}, inputs={"dataset": dataset})
    return adapter


@pytest.fixture(scope="module")
def merged_dir(tiny_model_dir, adapter_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("merged") / "model"
    assert merge.main(["--model", str(tiny_model_dir), "--adapter", str(adapter_dir),
                       "--torch_dtype", "float32", "--output", str(out)]) == 0
    return out


def test_merged_model_matches_the_adapter_model_within_1e_4(tiny_model_dir, adapter_dir, merged_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    base_logits = _logits(base, tokenizer, PROMPTS)
    peft_logits = _logits(PeftModel.from_pretrained(base, adapter_dir).eval(), tokenizer, PROMPTS)
    merged_logits = _logits(AutoModelForCausalLM.from_pretrained(merged_dir).eval(), tokenizer, PROMPTS)

    diff = max(float((a - b).abs().max()) for a, b in zip(peft_logits, merged_logits))
    moved = max(float((a - b).abs().max()) for a, b in zip(peft_logits, base_logits))
    assert diff <= 1e-4
    assert moved > 1e-2, "the adapter must change the model, or the check proves nothing"
    check = manifest.read_manifest(merged_dir)["metrics"]["check"]
    # The bound scales with the logits and the depth: on 2 tiny layers it is tighter than 1e-4.
    assert check["max_abs_diff"] <= check["bound"] <= 1e-4 and check["layers"] == 2 and check["positions"] > 100


def test_merged_folder_is_a_finished_hf_folder_with_template_and_fresh_tokenizer(merged_dir):
    assert manifest.is_finished(merged_dir)
    data = manifest.read_manifest(merged_dir)
    assert data["params"]["text_template"] == "### Text: {phrase}\n### The tone is:\n{tone}"
    assert set(data["inputs"]) == {"model", "adapter"}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in merged_dir.iterdir()}
    assert json.loads((merged_dir / "tokenizer.json").read_text())["padding"] is None
    assert not list(merged_dir.glob("adapter_*")), "a merged model has no adapter files"


def test_float16_merge_writes_half_weights_within_a_relative_bound(tiny_model_dir, adapter_dir, tmp_path):
    from safetensors import safe_open

    out = tmp_path / "merged16"
    assert merge.main(["--model", str(tiny_model_dir), "--adapter", str(adapter_dir),
                       "--torch_dtype", "float16", "--output", str(out)]) == 0
    with safe_open(out / "model.safetensors", "pt") as f:
        dtypes = {str(f.get_tensor(k).dtype) for k in f.keys()}
    assert dtypes == {"torch.float16"}
    check = manifest.read_manifest(out)["metrics"]["check"]
    assert 0 < check["max_abs_diff"] <= check["bound"] < 0.1


def test_qlora_adapter_merges_into_the_full_precision_base(tiny_model_dir, tmp_path):
    adapter = make_lora_adapter(tiny_model_dir, tmp_path / "qlora", seed=2, quantized=True)
    out = tmp_path / "merged"
    assert merge.main(["--model", str(tiny_model_dir), "--adapter", str(adapter), "--output", str(out)]) == 0
    check = manifest.read_manifest(out)["metrics"]["check"]
    assert check["max_abs_diff"] <= 1e-4
    assert json.loads((out / "config.json").read_text()).get("quantization_config") is None


def test_adapter_for_another_model_is_invalid_input_and_leaves_nothing(tiny_model_dir, tmp_path, capsys):
    from transformers import Phi3Config, Phi3ForCausalLM

    other = tmp_path / "other-base"
    Phi3ForCausalLM(Phi3Config(vocab_size=512, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=4, pad_token_id=3, bos_token_id=1,
                               eos_token_id=2)).save_pretrained(other)
    shutil.copy(tiny_model_dir / "tokenizer.json", other / "tokenizer.json")
    adapter = make_lora_adapter(other, tmp_path / "adapter")
    out = tmp_path / "merged"
    assert merge.main(["--model", str(tiny_model_dir), "--adapter", str(adapter), "--output", str(out)]) == 2
    assert "does not fit the base model" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".merged.partial-*"))


def test_missing_inputs_are_invalid_input(tiny_model_dir, tmp_path, capsys):
    assert merge.main(["--model", str(tmp_path), "--adapter", str(tmp_path), "--output", str(tmp_path / "o")]) == 2
    assert "no config.json" in capsys.readouterr().err
    assert merge.main(["--model", str(tiny_model_dir), "--adapter", str(tmp_path), "--output", str(tmp_path / "o")]) == 2
    assert "no adapter_config.json" in capsys.readouterr().err
