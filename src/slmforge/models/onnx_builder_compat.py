"""What onnxruntime-genai 0.18.0's builder needs that our transformers pin (5.24) no longer gives it, and
what it builds differently from transformers (the models it cannot build at all: onnx_builder_refusals.py).

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
