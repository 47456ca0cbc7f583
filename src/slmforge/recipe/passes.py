"""The recipe's passes in their canonical (Olive 0.7–0.13, flat) shape.

The fine-tune passes form one family, generated from the registry (training/methods.py): one model
per method (`FINETUNE_PASSES`, by Olive pass type: LoRA, QLoRA, DoRA, LoHa, LoKr), its fields the
finetune step's `Params` with their help text, bounds and defaults (the dtypes also take Olive's
bf16/fp16/fp32), its own rules the entry's. Only the keys whose recipe shape is the recipe's own
(`target_modules` as a list, the data configs, `training_args`) are written here.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Field, create_model, field_validator, model_validator

from slmforge.contract.params import help_text, pydantic_fields
from slmforge.recipe.base import Strict
from slmforge.recipe.training_args import TrainingArgs
from slmforge.steps import build_onnx, finetune, merge
from slmforge.training.methods import METHODS, SHARED, TORCH_DTYPES, Method, by_pass_type

OLIVE_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}  # Olive's short names of torch dtypes


# A fine-tune dtype as Olive spells it, in Olive's order (error messages list them so): the torch
# names, then their short forms.
_OLIVE_DTYPE_NAMES = Literal[tuple(sorted(TORCH_DTYPES)) + tuple(OLIVE_DTYPES)]  # type: ignore[valid-type]


def dtype_name(dtype: str) -> str:
    return OLIVE_DTYPES.get(dtype, dtype)


# Keys whose recipe shape is not the step's (the step takes target_modules comma-separated).
_RECIPE_SHAPED = {"target_modules": (list[str] | None, Field(None, description="default: every attention and MLP "
                                                                                "projection",
                                                              examples=[["q_proj", "v_proj", "o_proj"]]))}


def _step_fields(names) -> dict[str, tuple[Any, Any]]:
    """The finetune step's fields as recipe keys (a dtype also in Olive's short spelling)."""
    names = tuple(names)
    step = pydantic_fields(finetune.Params, only=names)
    return {n: _RECIPE_SHAPED.get(n) or ((_OLIVE_DTYPE_NAMES, step[n][1]) if n.endswith("dtype") else step[n])
            for n in names}


class FinetunePass(create_model("_FamilyKeys", __base__=Strict, type=(str, ...), **_step_fields(SHARED))):
    """Keys every LoRA-family pass shares (Olive 0.13's LoRA); each member adds its own."""

    train_data_config: str = Field(description="name of a data config")
    eval_data_config: str | None = Field(None, description="name of a data config evaluated on instead of rows held "
                                         "out of the training data")
    eval_dataset_size: float | None = Field(None, gt=0, description="slmforge: fraction (<1) or row count held out")
    training_args: TrainingArgs = Field(default_factory=TrainingArgs, description="the training loop's arguments "
                                        "(Hugging Face TrainingArguments names)")


def _rule(rule):
    def check(cls, value):
        problem = rule(value)
        if problem:
            raise ValueError(problem)
        return value
    return check


def pass_model(m: Method) -> type[FinetunePass]:
    """A method's pass: the shared keys, its own step parameters, the SHARED keys it refuses and its value rules."""
    validators: dict[str, Any] = {f"_rule_{n}": field_validator(n)(_rule(rule)) for n, rule in m.rules.items()}

    def refuse(self):
        for key, hint in m.refuses.items():
            if key in self.model_fields_set:
                raise ValueError(f"{self.type} has no '{key}'; {hint}")
        return self

    if m.refuses:
        validators["_refuses"] = model_validator(mode="after")(refuse)
    return create_model(f"{m.pass_type}Pass", __base__=FinetunePass, __doc__=m.summary, __validators__=validators,
                        type=(Literal[m.pass_type], Field(description=f"Olive's pass type: {m.summary}")),
                        **_step_fields(n for n in m.params if n not in SHARED))


FINETUNE_PASSES: dict[str, type[FinetunePass]] = {m.pass_type: pass_model(m) for m in METHODS.values()}


def finetune_step_params(p: FinetunePass) -> dict[str, Any]:
    """The finetune step's parameters a fine-tune pass sets: the method, the shared keys it reads and its own."""
    method = by_pass_type(p.type)
    params: dict[str, Any] = {"method": method.name, "r": p.r, "alpha": p.alpha, "lora_dropout": p.lora_dropout}
    if p.target_modules:
        params["target_modules"] = ",".join(p.target_modules)
    params.update({n: dtype_name(getattr(p, n)) if n.endswith("dtype") else getattr(p, n) for n in method.params})
    params["torch_dtype"] = dtype_name(p.torch_dtype)
    return params


class MergePass(create_model("MergeFields", __base__=Strict, type=(Literal["MergeAdapterWeights"], Field(
                             description="Olive's pass type: merge the adapter into the base")),
                             **pydantic_fields(merge.Params, only=("torch_dtype",), aliases=OLIVE_DTYPES))):
    """Olive's MergeAdapterWeights: the merge step's parameters (steps/merge.py), Olive's fp16/fp32 spellings too."""


# The build_onnx step's parameters a ModelBuilder pass sets, and where the recipe's differ from the step's.
_BUILDER_PARAMS = ("precision", "execution_provider", "int4_block_size", "int4_accuracy_level", "int4_algo_config",
                   "int4_is_symmetric", "max_accuracy_drop")
_BUILDER_RECIPE = {
    "execution_provider": {"default": None, "description": f"{help_text(build_onnx.Params, 'execution_provider')} "
                           "(default: cuda when the engine's execution_providers name CUDA, else cpu)"},
    "max_accuracy_drop": {"description": (
        "slmforge: the largest accuracy loss on the eval rows, against the model the build came from, that the "
        "build may show; it replaces the default gates (answer agreement with the source and a drop of at most "
        "int4 0.05, int8 0.03, fp16 0.02)")},
}


class ModelBuilderPass(create_model("ModelBuilderFields", __base__=Strict, type=(Literal["ModelBuilder"], Field(
                                    description="Olive's pass type: build an onnxruntime-genai model")),
                                    **pydantic_fields(build_onnx.Params, only=_BUILDER_PARAMS,
                                                      recipe=_BUILDER_RECIPE))):
    """Olive's ModelBuilder: the build_onnx step's parameters (steps/build_onnx.py), then builder keys passed on."""

    int4_op_types_to_quantize: list[str] | None = Field(
        None, description="op types the builder quantizes (MatMul, Gather, ...; the builder checks the names)")
    int4_nodes_to_exclude: list[str] | None = Field(None, description="node names the builder leaves unquantized")
    exclude_embeds: bool = Field(False, description="remove the embedding layer from the ONNX model")
    exclude_lm_head: bool = Field(False, description="remove the language modeling head from the ONNX model")
    extra_options: dict[str, str | int | float | bool] | None = Field(
        None, description="the builder's extra options, passed on as they are")
    # Builder switches Olive passes on as they are (builder_options.BUILDER_KEYS): the builder validates them.
    use_qdq: bool | None = Field(None, description="QuantizeLinear/DequantizeLinear pairs instead of MatMulNBits")
    use_8bits_moe: bool | None = Field(None, description="8-bit QMoE weights (mixture-of-experts models)")
    use_webgpu_fp32: bool | None = Field(None, description="fp32 for WebGPU devices without fp16")
    use_cuda_bf16: bool | None = Field(None, description="bf16 inputs and outputs for quantized models on CUDA")
    include_hidden_states: bool | None = Field(None, description="the hidden states as an output of the model")
    enable_cuda_graph: bool | None = Field(None, description="allow CUDA graph capture (CUDA execution provider)")


_NOT_SEPARATE = "a base with adapter slots keeps every adapter as optional inputs, served by onnxruntime-genai's Adapters"


_EXTRACT_TYPE = (Literal["ExtractAdapters"], Field(description="Olive's pass type: keep the adapter separate from the base"))


class ExtractAdaptersPass(create_model("ExtractAdaptersFields", __base__=Strict, type=_EXTRACT_TYPE,
                                       **pydantic_fields(build_onnx.Params, only=("adapter_slots",), recipe={
                                           "adapter_slots": {"default": "all"}}))):
    """Olive's ExtractAdapters: the model is built as a base whose LoRA weights are inputs (build_onnx with
    adapter_slots), and the fine-tune's adapter is written beside it as an .onnx_adapter (export_adapter)."""

    adapter_type: Literal["lora", "dora", "loha"] = Field(
        "lora", description="lora; dora and loha are refused (they cannot be served separately: their reason names why)")
    make_inputs: Literal[True] = Field(True, description=f"always true: {_NOT_SEPARATE}")
    dynamic_lora_r: Literal[True] = Field(True, description="always true: each adapter brings its own rank")
    optional_inputs: Literal[True] = Field(True, description="always true: without an adapter the base answers alone")
    save_format: Literal["onnx_adapter"] = Field(
        "onnx_adapter", description="onnx_adapter: the file onnxruntime-genai's Adapters load")
    pack_inputs: Literal[False] = Field(
        False, description="false: onnxruntime-genai loads one input per weight (Olive removed packing in 0.7)")
    # Olive's external-data keys: the base is always written with its weights in model.onnx.data.
    save_as_external_data: Literal[True] = Field(True, description="always true: weights in model.onnx.data")
    all_tensors_to_one_file: Literal[True] = Field(True, description="always true: one model.onnx.data")


Pass = Annotated[Union[tuple(FINETUNE_PASSES.values()) + (MergePass, ModelBuilderPass, ExtractAdaptersPass)],
                 Field(discriminator="type")]
