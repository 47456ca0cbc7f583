"""Model families through build_onnx (a start on issue 23's matrix): tiny random models of our own that
carry each family's distinguishing config features, built fp32 (parity with PyTorch) and int4 (the
check passes, onnxruntime-genai generates); a model the builder would mis-build is refused before building."""

from __future__ import annotations

from pathlib import Path

import pytest

from slmforge.contract import manifest
from slmforge.steps import build_onnx

# Widths kept clear of the 512-token vocabulary (the builder's LM-head clash) and multiples of the int4 block.
SHAPE = dict(vocab_size=512, hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, head_dim=16, max_position_embeddings=256)


def _save(out: Path, tiny_model_dir: Path, config_class, model_class, **features) -> Path:
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)  # the tiny Phi-3's 512-token BPE
    config = config_class(**{**SHAPE, **features}, bos_token_id=tokenizer.bos_token_id,
                          eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model_class(config).eval().save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def gemma2(out: Path, tiny_model_dir: Path) -> Path:
    """Gemma-2: a sliding window shorter than the check prompts, attention and final logit soft-capping,
    query_pre_attn_scalar."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    return _save(out, tiny_model_dir, Gemma2Config, Gemma2ForCausalLM, sliding_window=8,
                 attn_logit_softcapping=50.0, final_logit_softcapping=30.0, query_pre_attn_scalar=16)


def gemma3(out: Path, tiny_model_dir: Path) -> Path:
    """Gemma-3 (text): local/global layers, a local rope base, linear rope scaling on the global layers."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    return _save(out, tiny_model_dir, Gemma3TextConfig, Gemma3ForCausalLM, sliding_window=8,
                 layer_types=["sliding_attention", "full_attention"], rope_local_base_freq=10000.0,
                 query_pre_attn_scalar=16, rope_scaling={"rope_type": "linear", "factor": 8.0})


FAMILIES = {"gemma2": gemma2, "gemma3": gemma3}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_builds_fp32_and_int4_and_generates(family, tiny_model_dir, tmp_path):
    import onnxruntime_genai as og

    model = FAMILIES[family](tmp_path / family, tiny_model_dir)
    for precision in ("fp32", "int4"):
        out = tmp_path / f"{family}-{precision}"
        assert build_onnx.main(["--model", str(model), "--output", str(out), "--precision", precision]) == 0
        check = manifest.read_manifest(out)["metrics"]["check"]
        if precision == "fp32":
            assert check["max_abs_diff"] <= check["bound"]
        else:
            assert check["cosine_mean"] >= check["bounds"]["cosine_mean"]
    og_model = og.Model(str(out))
    params = og.GeneratorParams(og_model)
    params.set_search_options(do_sample=False, max_length=40)
    generator = og.Generator(og_model, params)
    prompt = og.Tokenizer(og_model).encode("### Text: The storm took our roof last night.\n### The tone is:\n")
    assert len(prompt) > 8  # longer than the sliding window
    generator.append_tokens(prompt)
    generated = 0
    while not generator.is_done():
        generator.generate_next_token()
        generated += 1
    assert generated > 0


def _phi3(out: Path, tiny_model_dir: Path, **features) -> Path:
    from transformers import Phi3Config, Phi3ForCausalLM

    features = {"num_key_value_heads": 4, **features}
    return _save(out, tiny_model_dir, Phi3Config, Phi3ForCausalLM, **features)


def test_lm_head_clash_is_refused_before_building(tiny_model_dir, tmp_path, capsys):
    # Phi-3's fused gate_up_proj is 2 × intermediate_size wide: 512, the vocabulary's width.
    model = _phi3(tmp_path / "clash", tiny_model_dir, intermediate_size=256)
    assert build_onnx.main(["--model", str(model), "--output", str(tmp_path / "out"), "--precision", "int4"]) != 0
    err = capsys.readouterr().err
    assert "vocab_size 512 equals the output width of model.layers.0.mlp.gate_up_proj" in err
    assert "2 × intermediate_size 512" in err and "resize_token_embeddings" in err
    assert not (tmp_path / "out").exists()


def test_longrope_partial_rotary_width_is_refused_before_building(tiny_model_dir, tmp_path, capsys):
    # head_dim 16 × partial_rotary_factor 0.75 = 12 rotary dims: a half-width of 6, not a multiple of 8.
    model = _phi3(tmp_path / "longrope", tiny_model_dir, partial_rotary_factor=0.75, max_position_embeddings=512,
                  original_max_position_embeddings=256,
                  rope_scaling={"rope_type": "longrope", "short_factor": [1.0] * 6, "long_factor": [2.0] * 6})
    assert build_onnx.main(["--model", str(model), "--output", str(tmp_path / "out"), "--precision", "fp32"]) != 0
    err = capsys.readouterr().err
    assert "partial_rotary_factor 0.75 on head_dim 16" in err and "half-width of 6" in err
