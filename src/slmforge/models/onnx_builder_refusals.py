"""Models onnxruntime-genai 0.18.0's builder would build wrong, or onnxruntime would refuse to run: refused
before building, one line naming the config value and what it must be."""

from __future__ import annotations

from slmforge.errors import InvalidInput


def refuse_unbuildable(source: str, precision: str, block_size: int) -> None:
    """InvalidInput, one line naming the config value, for a model folder the 0.18.0 builder would build
    wrong or onnxruntime would refuse to run:

    - LM head clash: Model.make_model walks every module and Model.has_lm_head takes any
      `torch.nn.Linear` whose `out_features == config.vocab_size` for the LM head, so a projection of
      the vocabulary's width (Phi-3's fused gate_up_proj when vocab_size == 2 × intermediate_size, ...)
      becomes the head (the int4 check then sees a logit cosine near 0.45).
    - LongRoPE with partial rotary: onnxruntime's GroupQueryAttention needs the rotary half-width to be
      a multiple of 8 ("cos_cache dimension 1 must be <= head_size / 2 and a multiple of 8").
    - clip_qkv (OLMo 1.7+): the builder does not clamp the projections transformers clamps.
    - int4 on a layer whose input width is not a multiple of the block size: the builder's quantizer
      fails ("cannot reshape array of size 224 into shape (64,newaxis)", intermediate_size 200, block 32).
    """
    from pathlib import Path

    folder = Path(source)
    if not (folder / "config.json").is_file():
        return  # a hub name: the builder reads it itself
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(folder)
    except ValueError:
        return  # a model type transformers does not know (remote code): the builder reads it its own way
    config = getattr(config, "text_config", None) or config
    # Every Linear of the model itself (on the meta device), where transformers can make it.
    _refuse(folder, config, precision, block_size, _linear_layers(config) or _config_linears(config))


def refuse_from_config_json(folder, precision: str, block_size: int) -> None:
    """The same refusals from config.json alone, without torch or transformers (`slmforge validate`): the
    Linears are those of the usual decoder layout (q/k/v/o, gate/up/down, Phi-3's fused ones, the head)."""
    import json
    from pathlib import Path
    from types import SimpleNamespace

    path = Path(folder) / "config.json"
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # named by the other input checks, or by the builder
    config = SimpleNamespace(**{**values, **(values.get("text_config") or {})})
    _refuse(Path(folder), config, precision, block_size, _config_linears(config))


def _refuse(folder, config, precision: str, block_size: int, linears: dict) -> None:
    _refuse_longrope_width(folder, config)
    _refuse_clip_qkv(folder, config)
    _refuse_head_clash(folder, config, linears)
    if precision == "int4":
        _refuse_int4_block(folder, config, linears, block_size)


def _config_linears(config) -> dict:
    """{name: (in, out, is the head)} of layer 0's Linears and the head, as the usual decoder lays them out."""
    w = _widths(config)
    h, i, q, kv = w["hidden_size"], w["intermediate_size"], w["num_attention_heads × head_dim"], \
        w["num_key_value_heads × head_dim"]
    attention, mlp = "model.layers.0.self_attn.", "model.layers.0.mlp."
    if getattr(config, "model_type", None) == "phi3":
        layers = {attention + "qkv_proj": (h, q + 2 * kv), mlp + "gate_up_proj": (h, 2 * i)}
    else:
        layers = {attention + "q_proj": (h, q), attention + "k_proj": (h, kv), attention + "v_proj": (h, kv),
                  mlp + "gate_proj": (h, i), mlp + "up_proj": (h, i)}
    layers.update({attention + "o_proj": (q, h), mlp + "down_proj": (i, h)})
    return {**{n: (a, b, False) for n, (a, b) in layers.items()},
            "lm_head": (h, int(getattr(config, "vocab_size", 0) or 0), True)}


def _widths(config) -> dict[str, int]:
    h, i = getattr(config, "hidden_size", 0), getattr(config, "intermediate_size", 0) or 0
    heads, kv = getattr(config, "num_attention_heads", 0), getattr(config, "num_key_value_heads", None)
    kv = kv or heads
    d = getattr(config, "head_dim", None) or (h // heads if heads else 0)
    return {"hidden_size": h, "intermediate_size": i, "2 × intermediate_size": 2 * i,
            "num_attention_heads × head_dim": heads * d, "num_key_value_heads × head_dim": kv * d,
            "(num_attention_heads + 2 × num_key_value_heads) × head_dim": (heads + 2 * kv) * d}


def _linear_layers(config) -> dict | None:
    """{name: (in_features, out_features, is the output embedding)} of the model's Linears, built on the meta
    device (no memory); None when transformers cannot make a causal LM from the config."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except (ValueError, KeyError, TypeError):
        return None
    head = model.get_output_embeddings()
    return {name: (m.in_features, m.out_features, m is head) for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear)}


def _refuse_head_clash(folder, config, linears: dict) -> None:
    vocab = int(getattr(config, "vocab_size", 0) or 0)
    clashes = [name for name, (_, width, is_head) in linears.items() if width == vocab and not is_head]
    if clashes:
        keys = [f"{k} {v}" for k, v in _widths(config).items() if v == vocab]
        raise InvalidInput(
            f"{folder / 'config.json'}: vocab_size {vocab} equals the output width of {clashes[0]}"
            f"{' (' + ', '.join(keys) + ')' if keys else ''}: onnxruntime-genai 0.18's builder takes every "
            "Linear of the vocabulary's width for the LM head and would wire the head to it; give the model "
            "a vocabulary of another size (resize_token_embeddings to a width no layer has)")


def _refuse_int4_block(folder, config, linears: dict, block_size: int) -> None:
    odd = next(((name, width) for name, (width, _, _) in linears.items() if width % block_size), None)
    if odd:
        name, width = odd
        keys = [k for k, v in _widths(config).items() if v == width]
        raise InvalidInput(
            f"{folder / 'config.json'}: {keys[0] + ' ' if keys else ''}{width} (the input width of {name}) is not "
            f"a multiple of int4_block_size {block_size}: int4 quantizes blocks of a layer's input columns; choose "
            "an int4_block_size dividing every layer's input width (16, 32, 64, 128 or 256), or precision int8")


def _refuse_longrope_width(folder, config) -> None:
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    factor = getattr(config, "partial_rotary_factor", None) or rope.get("partial_rotary_factor", 1.0)
    if rope.get("rope_type", rope.get("type")) != "longrope" or factor >= 1.0:
        return
    head = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    half = int(head * factor) // 2
    if half % 8:
        raise InvalidInput(
            f"{folder / 'config.json'}: LongRoPE with partial_rotary_factor {factor} on head_dim {head} gives a "
            f"rotary half-width of {half}; onnxruntime needs a multiple of 8 (cos_cache dimension 1): choose "
            "partial_rotary_factor so that head_dim × partial_rotary_factor / 2 is a multiple of 8")


def _refuse_clip_qkv(folder, config) -> None:
    clip = getattr(config, "clip_qkv", None)
    if clip is not None:
        raise InvalidInput(
            f"{folder / 'config.json'}: clip_qkv {clip}: transformers clamps the query, key and value projections "
            "to that range, and onnxruntime-genai 0.18's builder does not (the ONNX model would differ wherever "
            "a projection exceeds it); only models with clip_qkv null can be built")
