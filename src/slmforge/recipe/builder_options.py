"""The ONNX builder's `--extra_options`: a ModelBuilder pass's `extra_options` plus the Olive keys the
builder takes as they are, encoded as the step's one `extra_options` parameter (`k=v,k=v`)."""

from __future__ import annotations

from slmforge.errors import InvalidInput
from slmforge.recipe.loaded import LoadedRecipe
from slmforge.recipe.schema import ModelBuilderPass

# Olive's ModelBuilder keys that slmforge passes to the builder as they are, under the builder's names.
BUILDER_KEYS = {"int4_op_types_to_quantize": "op_types_to_quantize", "int4_nodes_to_exclude": "nodes_to_exclude",
                **{k: k for k in ("exclude_embeds", "exclude_lm_head", "use_qdq", "use_8bits_moe", "use_webgpu_fp32",
                                  "use_cuda_bf16", "include_hidden_states", "enable_cuda_graph")}}


def extra_options(loaded: LoadedRecipe, pass_name: str, cfg: ModelBuilderPass) -> str | None:
    """The pass's builder options as the step's `extra_options` value; None when there are none."""
    extra = builder_extra_options(loaded, pass_name, cfg)
    return ",".join(f"{k}={_option(v)}" for k, v in extra.items()) if extra else None


def builder_extra_options(loaded: LoadedRecipe, pass_name: str,
                          cfg: ModelBuilderPass) -> dict[str, str | int | float | bool]:
    """extra_options plus the pass-through keys; one setting spelled twice is an error naming both."""
    extra: dict[str, str | int | float | bool] = dict(cfg.extra_options or {})
    for key, option in BUILDER_KEYS.items():
        value = getattr(cfg, key)
        if value in (None, False):
            continue
        if option in extra:
            raise InvalidInput(f"{loaded.path}: {loaded.where('passes', pass_name)}: '{key}' and "
                               f"extra_options.{option} set the same builder option; keep one")
        sep = "/" if key == "int4_op_types_to_quantize" else ","
        extra[option] = sep.join(value) if isinstance(value, list) else value
    return extra


def _option(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
