"""The fp32 self-checks' bound is the reference's own float32 rounding (measured against float64), in both directions.

Correct merges pass whatever the adapter's magnitude; a wrong adapter scale, a zeroed layer (merge) and a
mis-wired LM head or zeroed layer (fp32 ONNX, test_build_onnx.py) fail. Tiny Phi-3, seconds.
"""

from __future__ import annotations

import shutil

import pytest

from slmforge.errors import StepFailed
from slmforge.steps import merge

from lora_adapter import adapter_logits, make_lora_adapter

# lora_B std: 0.04 is what the Cookbook-shaped fine-tune gives (tiny Phi-3, LoRA on qkv_proj + o_proj, r 16,
# lr 0.003, 200 steps on the seed data: lora_B std 0.039, measured; that run takes 2 minutes here, so the
# test uses a peft adapter of that magnitude); 0.4 is ten times it, past what lr 1e-2 for a few hundred
# steps gives, on every linear layer.
CASES = {"cookbook-shaped (qkv_proj+o_proj, B std 0.04)": (["qkv_proj", "o_proj"], 0.04),
         "all linear layers, B std 0.01": (None, 0.01),
         "all linear layers, B std 0.4": (None, 0.4)}


@pytest.mark.parametrize("case", list(CASES))
def test_correct_merges_pass_across_adapter_magnitudes(tiny_model_dir, tmp_path, case):
    targets, std = CASES[case]
    kwargs = {"targets": targets} if targets else {}
    adapter = make_lora_adapter(tiny_model_dir, tmp_path / "adapter", seed=3, r=16, std=std, **kwargs)
    check = merge.merge_into(str(tiny_model_dir), adapter, tmp_path / "merged")
    print(f"{case}: max abs diff {check['max_abs_diff']:.3g}, bound {check['bound']:.3g}, "
          f"reference rounding {check['reference_rounding']:.3g}")
    assert 0 < check["reference_rounding"] and 0 < check["max_abs_diff"] <= check["bound"] < 1e-4


def test_wrong_scale_and_zeroed_layer_fail_the_merge_check(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    adapter = make_lora_adapter(tiny_model_dir, tmp_path / "adapter", seed=3, r=16, std=0.04,
                                targets=["qkv_proj", "o_proj"])
    reference = adapter_logits(tiny_model_dir, adapter)

    wrong = tmp_path / "wrong-scale"
    shutil.copytree(adapter, wrong)
    weights = load_file(wrong / "adapter_model.safetensors")
    save_file({k: (v * 2 if "lora_B" in k else v) for k, v in weights.items()}, wrong / "adapter_model.safetensors")
    with pytest.raises(StepFailed, match=r"does not reproduce the adapter model: max abs logit difference .* > "
                                         r".*own float32 rounding") as e:
        merge.merge_into(str(tiny_model_dir), wrong, tmp_path / "out1", reference=reference)
    print(f"lora_B x2: {e.value}")

    zeroed_base = tmp_path / "zeroed-base"
    shutil.copytree(tiny_model_dir, zeroed_base)
    weights = load_file(zeroed_base / "model.safetensors")
    weights["model.layers.1.mlp.down_proj.weight"].zero_()
    save_file(weights, zeroed_base / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(StepFailed, match=r"max abs logit difference .* > ") as e:
        merge.merge_into(str(zeroed_base), adapter, tmp_path / "out2", reference=reference)
    print(f"zeroed layer: {e.value}")


def test_float64_reference_run_layer_by_layer_is_the_whole_model_in_float64(tiny_model_dir, tmp_path, monkeypatch):
    """The yardstick keeps one decoder layer in float64 at a time: bit for bit what the model loaded whole
    in float64 computes, peft adapter included."""
    import numpy as np

    from slmforge.models import logit_check, torch_model

    adapter = make_lora_adapter(tiny_model_dir, tmp_path / "adapter", seed=3, r=16, std=0.4)
    token_ids = [list(torch_model.load_tokenizer(str(tiny_model_dir))(p)["input_ids"]) for p in logit_check.CHECK_PROMPTS]
    model64 = torch_model.with_adapter(torch_model.load_causal_lm(str(tiny_model_dir), "float64"), adapter)
    whole = torch_model.all_logits(model64, token_ids, packed=True)
    # Packed (one forward, what the yardstick runs) against one forward per prompt: float64 rounding only,
    # a million times below the float32 rounding the yardstick measures.
    one_by_one = torch_model.all_logits(model64, token_ids)
    assert max(float(np.abs(a - b).max()) for a, b in zip(whole, one_by_one)) < 1e-9
    monkeypatch.setattr(torch_model, "WHOLE_FLOAT64_BYTES", 0)  # the tiny model is small: force layer by layer
    layerwise = torch_model.float64_logits(str(tiny_model_dir), adapter, token_ids)
    assert all(a.dtype == np.float64 and np.array_equal(a, b) for a, b in zip(layerwise, whole))
    monkeypatch.undo()
    cast_whole = torch_model.float64_logits(str(tiny_model_dir), adapter, token_ids)
    assert all(a.dtype == np.float64 and np.array_equal(a, b) for a, b in zip(cast_whole, whole))
