"""What onnxruntime-genai 0.18.0's builder needs that our transformers pin (5.24) no longer gives it,
and the models it would build wrong or not at all, refused before building with the cause named.

Upstream-shaped: each shim gives the builder the config shape it reads (transformers 4's) or the graph
transformers computes, nothing else; each was found by a tiny model of its family failing the fp32 parity
check (tests/test_families.py) and is proven by it passing.
"""

from __future__ import annotations

import contextlib

from slmforge.errors import InvalidInput

# Model types whose transformers 5 attention windows every layer when config.sliding_window is set, without
# a config.layer_types (Mistral v0.1: 4096; Phi-3-mini-4k: 2047 of a 4096 context).
UNIFORM_WINDOW_MODEL_TYPES = ("mistral", "phi3")
# transformers' OlmoLayerNorm: a LayerNorm without parameters, eps fixed at 1e-5 (no config key).
OLMO_LAYERNORM_EPS = 1e-5


@contextlib.contextmanager
def builder_shims():
    """Every shim below, in place while the builder runs (the builder's classes, patched and restored)."""
    from onnxruntime_genai.models import builder

    # builder.py's own classes: its folder is on sys.path, so `builders.gemma` there is another module
    # object than onnxruntime_genai.models.builders.gemma.
    with contextlib.ExitStack() as stack:
        stack.enter_context(transformers5_rope())
        stack.enter_context(_wrapped(builder.Model, "__init__", _config_fixes))
        stack.enter_context(_wrapped(builder.SmolLM3Model, "make_attention", _nope_layers_without_rope))
        stack.enter_context(_wrapped(builder.OLMoModel, "__init__", _olmo_layernorm))
        yield


@contextlib.contextmanager
def _wrapped(cls, name: str, make):
    original = getattr(cls, name)
    setattr(cls, name, make(original))
    try:
        yield
    finally:
        setattr(cls, name, original)


def _config_fixes(original_init):
    def init(self, config, *args, **kwargs):
        uniform_sliding_window(config)
        original_init(self, config, *args, **kwargs)
    return init


def uniform_sliding_window(config) -> None:
    """Mistral and Phi-3 window every layer when `sliding_window` is set (transformers' mask function reads
    config.sliding_window); 0.18.0 windows only the layers config.layer_types calls sliding_attention
    (Model.is_local), and these configs have none: it dropped the window, so past it the ONNX model
    attended to tokens PyTorch masks (tiny Mistral, window 8: max abs logit difference 1.85). A window
    at least the context long changes nothing and is left alone (no window-sized cache of that size)."""
    window = getattr(config, "sliding_window", None)
    if (getattr(config, "model_type", None) in UNIFORM_WINDOW_MODEL_TYPES
            and getattr(config, "layer_types", None) is None and isinstance(window, int)
            and 0 < window < getattr(config, "max_position_embeddings", 0)):
        config.layer_types = ["sliding_attention"] * config.num_hidden_layers


def _olmo_layernorm(original_init):
    """OLMo normalises with a LayerNorm without parameters (mean removed, eps 1e-5, transformers'
    OlmoLayerNorm); 0.18.0's OLMoModel gives it unit weights and zero biases but keeps the base's
    SimplifiedLayerNormalization (RMS norm, no mean removed) and eps 1e-6 (tiny OLMo: max abs logit
    difference 0.055)."""
    def init(self, config, *args, **kwargs):
        original_init(self, config, *args, **kwargs)
        self.layernorm_attrs.update(simple=False, epsilon=OLMO_LAYERNORM_EPS)
    return init


def _nope_layers_without_rope(original_make_attention):
    """SmolLM3's NoPE layers (no_rope_layers[i] == 0): 0.18.0's SmolLM3Model turns off the rope fused into
    GroupQueryAttention there, and the base then adds a separate RotaryEmbedding on q and k, reading a
    `position_ids` input that GQA models do not have (KeyError: 'position_ids'). transformers applies no
    rope at all on those layers: the layer is built without rope."""
    def make_attention(self, layer_id, attention, root_input, **kwargs):
        rope = self.attention_attrs["rope"]
        self.attention_attrs["rope"] = rope and bool(self.no_rope_layers[layer_id])
        try:
            return original_make_attention(self, layer_id, attention, root_input, **kwargs)
        finally:
            self.attention_attrs["rope"] = rope
    return make_attention


@contextlib.contextmanager
def transformers5_rope():
    """Gemma-3 under transformers 5: its config holds the rope settings per layer type
    (`rope_parameters: {full_attention: {...}, sliding_attention: {...}}`); onnxruntime-genai 0.18.0's
    Gemma3Model reads transformers 4's shape (`rope_theta`, `rope_local_base_freq`, a flat
    `rope_scaling` with `rope_type`) and fails with KeyError: 'rope_type'. The config is reshaped
    before the builder reads it. And 0.18.0 applies the global layers' linear rope factor to the
    local (sliding) layers' caches too (make_rotary_embedding_multi_cache keeps `rescale_factors`);
    transformers gives the sliding layers their own rope (Gemma-3 4B+: linear ×8 global, none local),
    so the local caches are made with the sliding layers' factor."""
    from onnxruntime_genai.models import builder

    Gemma3Model = builder.Gemma3Model
    original_init, original_caches = Gemma3Model.__init__, Gemma3Model.make_rotary_embedding_multi_cache

    def init(self, config, *args, **kwargs):
        # Only Gemma-3 itself: Gemma4Model (a subclass) reads the per-layer-type shape on its own.
        self.slmforge_local_rope_factor = flatten_layer_type_rope(config) if type(self) is Gemma3Model else None
        original_init(self, config, *args, **kwargs)

    def multi_cache(self):
        from_scratch, made = self.make_rotary_embedding_caches_from_scratch, []

        def caches():  # the first caches made are the global layers', the next the local layers'
            factor = self.rope_attrs["rescale_factors"]
            if made and getattr(self, "slmforge_local_rope_factor", None) is not None:
                self.rope_attrs["rescale_factors"] = self.slmforge_local_rope_factor
            made.append(True)
            try:
                return from_scratch()
            finally:
                self.rope_attrs["rescale_factors"] = factor

        self.make_rotary_embedding_caches_from_scratch = caches
        try:
            return original_caches(self)
        finally:
            del self.make_rotary_embedding_caches_from_scratch

    Gemma3Model.__init__, Gemma3Model.make_rotary_embedding_multi_cache = init, multi_cache
    try:
        yield
    finally:
        Gemma3Model.__init__, Gemma3Model.make_rotary_embedding_multi_cache = original_init, original_caches


def flatten_layer_type_rope(config) -> float | None:
    """Per-layer-type rope settings (transformers 5) -> transformers 4's Gemma-3 attributes, in place;
    returns the sliding layers' linear rope factor (None: the config was in the old shape already)."""
    params = getattr(config, "rope_parameters", None)
    if not (isinstance(params, dict) and isinstance(params.get("full_attention"), dict)):
        return None
    full, local = params["full_attention"], params.get("sliding_attention") or params["full_attention"]
    config.rope_theta = full["rope_theta"]
    config.rope_local_base_freq = local["rope_theta"]
    config.rope_parameters = {k: v for k, v in full.items() if k != "rope_theta"}
    if local.get("rope_type", "default") not in ("default", "linear"):
        raise InvalidInput(f"config.json: rope_parameters.sliding_attention.rope_type {local['rope_type']!r}: "
                           "onnxruntime-genai 0.18's Gemma-3 builder serves 'default' or 'linear' there")
    return float(local.get("factor", 1.0)) if local.get("rope_type", "default") == "linear" else 1.0


def refuse_unbuildable(source: str) -> None:
    """InvalidInput, one line naming the config value, for a model folder the 0.18.0 builder would build
    wrong or onnxruntime would refuse to run:

    - LM head clash: Model.make_model walks every module and Model.has_lm_head takes any
      `torch.nn.Linear` whose `out_features == config.vocab_size` for the LM head, so a projection of
      the vocabulary's width (Phi-3's fused gate_up_proj when vocab_size == 2 × intermediate_size, ...)
      becomes the head (the int4 check then sees a logit cosine near 0.45).
    - LongRoPE with partial rotary: onnxruntime's GroupQueryAttention needs the rotary half-width to be
      a multiple of 8 ("cos_cache dimension 1 must be <= head_size / 2 and a multiple of 8").
    - clip_qkv (OLMo 1.7+): the builder does not clamp the projections transformers clamps.
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
    _refuse_head_clash(folder, config)
    _refuse_longrope_width(folder, config)
    _refuse_clip_qkv(folder, config)


def _widths(config) -> dict[str, int]:
    h, i = getattr(config, "hidden_size", 0), getattr(config, "intermediate_size", 0) or 0
    heads, kv = getattr(config, "num_attention_heads", 0), getattr(config, "num_key_value_heads", None)
    kv = kv or heads
    d = getattr(config, "head_dim", None) or (h // heads if heads else 0)
    return {"hidden_size": h, "intermediate_size": i, "2 × intermediate_size": 2 * i,
            "num_attention_heads × head_dim": heads * d, "num_key_value_heads × head_dim": kv * d,
            "(num_attention_heads + 2 × num_key_value_heads) × head_dim": (heads + 2 * kv) * d}


def _refuse_head_clash(folder, config) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    vocab = int(getattr(config, "vocab_size", 0) or 0)
    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except ValueError:
        return  # not a causal LM transformers can make from its config: the builder loads it its own way
    clashes = [name for name, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and m.out_features == vocab and m is not model.get_output_embeddings()]
    if clashes:
        keys = [f"{k} {v}" for k, v in _widths(config).items() if v == vocab]
        raise InvalidInput(
            f"{folder / 'config.json'}: vocab_size {vocab} equals the output width of {clashes[0]}"
            f"{' (' + ', '.join(keys) + ')' if keys else ''}: onnxruntime-genai 0.18's builder takes every "
            "Linear of the vocabulary's width for the LM head and would wire the head to it; give the model "
            "a vocabulary of another size (resize_token_embeddings to a width no layer has)")


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
