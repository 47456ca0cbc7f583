"""Tiny random models, one per model family Olive's recipes target (issue 23's matrix).

Each carries its family's distinguishing features as its published config.json has them (named on each
entry), scaled down: 2 layers, 64-wide, the tiny Phi-3's 512-token BPE. Widths stay clear of the vocabulary
(the builder's LM-head clash) and are multiples of the int4 block. `targets` are the modules the family's
published LoRA recipes adapt (Phi-3's fused qkv_proj and gate_up_proj).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

SHAPE = dict(vocab_size=512, hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, head_dim=16, max_position_embeddings=256)
ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
ALL_LINEAR = ATTENTION + ["gate_proj", "up_proj", "down_proj"]
PHI3_LINEAR = ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]


@dataclass(frozen=True)
class Family:
    model_type: str  # transformers' model type: AutoConfig.for_model reads the published keys as from config.json
    published: str  # the published model whose config.json the features come from
    features: dict = field(default_factory=dict)
    targets: list[str] = field(default_factory=lambda: list(ALL_LINEAR))

    def with_features(self, **features) -> Family:
        return replace(self, features={**self.features, **features})

    def save(self, out: Path, tokenizer_dir: Path) -> Path:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        config = AutoConfig.for_model(self.model_type, **{**SHAPE, **self.features},
                                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                      pad_token_id=tokenizer.pad_token_id)
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(config).eval().save_pretrained(out)
        tokenizer.save_pretrained(out)
        return out


def _longrope(half_width: int) -> dict:
    # Phi-3.5 / Phi-4-mini: one factor per rotary frequency; short ~1, long growing (as published, shortened).
    return {"type": "longrope", "short_factor": [1.0 + i / (4 * half_width) for i in range(half_width)],
            "long_factor": [1.0 + i / half_width for i in range(half_width)]}


FAMILIES = {
    # microsoft/Phi-3-mini-4k-instruct: full multi-head attention, fused qkv/gate_up, a sliding window of
    # half the context less one (2047 of 4096), untied head.
    "phi3-mini-4k": Family("phi3", "microsoft/Phi-3-mini-4k-instruct", dict(
        num_key_value_heads=4, sliding_window=127, original_max_position_embeddings=256, rope_theta=10000.0),
        PHI3_LINEAR),
    # microsoft/Phi-3.5-mini-instruct (and Phi-3-mini-128k): LongRoPE past the 4k original context.
    "phi3.5-mini": Family("phi3", "microsoft/Phi-3.5-mini-instruct", dict(
        num_key_value_heads=4, max_position_embeddings=512, original_max_position_embeddings=256,
        sliding_window=512, rope_scaling=_longrope(8)), PHI3_LINEAR),
    # microsoft/Phi-4-mini-instruct: LongRoPE on 3/4 of each head (partial_rotary_factor 0.75), grouped-query
    # attention (24 heads, 8 kv), tied embeddings. Head width 64 keeps the rotary half-width (24) a multiple of 8.
    "phi4-mini": Family("phi3", "microsoft/Phi-4-mini-instruct", dict(
        hidden_size=128, num_attention_heads=2, num_key_value_heads=1, head_dim=64, partial_rotary_factor=0.75,
        max_position_embeddings=512, original_max_position_embeddings=256, sliding_window=1024,
        rope_scaling=_longrope(24), tie_word_embeddings=True), PHI3_LINEAR),
    # meta-llama/Llama-3.2-1B-Instruct: llama3 rope scaling (factor 32, low/high frequency factors 1 and 4),
    # rope_theta 500000, tied embeddings.
    "llama3.2": Family("llama", "meta-llama/Llama-3.2-1B-Instruct", dict(
        rope_theta=500000.0, tie_word_embeddings=True,
        rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 64})),
    # Qwen/Qwen2.5-0.5B-Instruct: biases on q/k/v, rope_theta 1e6, tied embeddings, sliding window off.
    "qwen2.5": Family("qwen2", "Qwen/Qwen2.5-0.5B-Instruct", dict(
        rope_theta=1000000.0, tie_word_embeddings=True, use_sliding_window=False, sliding_window=256)),
    # Qwen/Qwen3-0.6B: RMS norms on q and k per head, a head width set apart from hidden/heads (128 of 1024/16).
    "qwen3": Family("qwen3", "Qwen/Qwen3-0.6B", dict(
        head_dim=32, rope_theta=1000000.0, tie_word_embeddings=True)),
    # google/gemma-2-2b-it: a sliding window (4096; here shorter than the check prompts), attention and final
    # logit soft-capping, query_pre_attn_scalar.
    "gemma2": Family("gemma2", "google/gemma-2-2b-it", dict(
        sliding_window=8, attn_logit_softcapping=50.0, final_logit_softcapping=30.0, query_pre_attn_scalar=16)),
    # google/gemma-3-4b-it (text): local/global layers, a local rope base, linear rope scaling ×8 on the global ones.
    "gemma3": Family("gemma3_text", "google/gemma-3-4b-it", dict(
        sliding_window=8, layer_types=["sliding_attention", "full_attention"], rope_local_base_freq=10000.0,
        query_pre_attn_scalar=16, rope_scaling={"rope_type": "linear", "factor": 8.0})),
    # mistralai/Mistral-7B-Instruct-v0.1: grouped-query attention with a sliding window (4096; here 8).
    "mistral": Family("mistral", "mistralai/Mistral-7B-Instruct-v0.1", dict(sliding_window=8, rope_theta=10000.0)),
    # ibm-granite/granite-3.1-2b-instruct: embedding, attention and residual multipliers, logits scaling, tied.
    "granite": Family("granite", "ibm-granite/granite-3.1-2b-instruct", dict(
        embedding_multiplier=12.0, attention_multiplier=0.015625, residual_multiplier=0.22, logits_scaling=8.0,
        rope_theta=5000000.0, tie_word_embeddings=True)),
    # HuggingFaceTB/SmolLM3-3B: every fourth layer without rope (no_rope_layers), rope_theta 5e6, tied.
    "smollm3": Family("smollm3", "HuggingFaceTB/SmolLM3-3B", dict(
        num_hidden_layers=4, no_rope_layers=[1, 1, 1, 0], rope_theta=5000000.0, tie_word_embeddings=True)),
    # allenai/OLMo-1B-hf: LayerNorm without parameters, tied embeddings.
    "olmo": Family("olmo", "allenai/OLMo-1B-hf", dict(tie_word_embeddings=True, clip_qkv=None)),
}
