"""The issue's accuracy claim: LoRA (loss on the completion) -> merge -> int4 ONNX beats the majority class.

Runs the real steps through their main() functions on the Cookbook's seed data with the recipe
of docs/pitfalls.md (r=16, lr 3e-3, batch 16, 200 steps). Seed 42 measured 0.829 on 146 held-out rows
(merged PyTorch 0.829 too; majority class 0.404). A few seconds of training on an idle machine,
minutes on a loaded one.
"""

from __future__ import annotations

import json

import pytest

from slmforge.steps import build_onnx, evaluate, finetune, load_data, merge

TEMPLATE = "### Text: {phrase}\n### The tone is:\n{tone}"


@pytest.mark.slow
def test_int4_model_after_lora_is_well_above_the_majority_class(tiny_model_dir, seed_data, tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"text_cols": ["phrase", "tone"], "text_template": TEMPLATE}))
    dataset, adapter, merged, onnx, metrics = (tmp_path / n for n in ("dataset", "adapter", "merged", "int4", "metrics"))
    assert load_data.main(["--data", str(seed_data), "--spec", str(spec), "--tokenizer", str(tiny_model_dir),
                           "--loss_on", "completion", "--strategy", "line-by-line",
                           "--eval_dataset_size", "0.1", "--data_seed", "42", "--dataset", str(dataset)]) == 0
    assert finetune.main(["--model", str(tiny_model_dir), "--dataset", str(dataset), "--method", "lora",
                          "--r", "16", "--alpha", "32", "--lora_dropout", "0.0", "--learning_rate", "0.003",
                          "--per_device_train_batch_size", "16", "--max_steps", "200", "--seed", "42",
                          "--logging_steps", "50", "--adapter", str(adapter)]) == 0
    assert merge.main(["--model", str(tiny_model_dir), "--adapter", str(adapter), "--output", str(merged)]) == 0
    assert build_onnx.main(["--model", str(merged), "--precision", "int4", "--output", str(onnx)]) == 0
    assert evaluate.main(["--model", str(onnx), "--dataset", str(dataset), "--label", "int4",
                          "--max_samples", "200", "--metrics", str(metrics)]) == 0

    result = json.loads((metrics / "metrics.json").read_text())
    print(f"int4 accuracy {result['accuracy']:.3f} on {result['n']} held-out rows "
          f"(majority class {result['majority_baseline']:.3f})")
    assert result["model_kind"] == "onnx" and result["n"] >= 100
    assert 0.40 <= result["majority_baseline"] <= 0.46
    assert result["accuracy"] >= 0.6
