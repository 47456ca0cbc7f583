"""The recipe's passes in their canonical (Olive 0.7–0.13, flat) shape.

The fine-tune passes form one family: `FINETUNE_PASSES` maps each Olive pass type slmforge runs
to its model, the finetune step's `--method` and its method-specific step parameters: LoRA, QLoRA,
DoRA, LoHa and LoKr. Adding another (LoftQ) is one model (its own keys) and one entry there; until
then `generations.UNSUPPORTED_PASS_TYPES` refuses it by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Callable, Literal, Union

from pydantic import Field, create_model, field_validator, model_validator

from slmforge.contract.params import help_text, pydantic_fields
from slmforge.recipe.base import Strict
from slmforge.recipe.training_args import TrainingArgs
from slmforge.steps import build_onnx, merge


DTYPES = Literal["bfloat16", "float16", "float32", "bf16", "fp16", "fp32"]


class FinetunePass(Strict):
    """Keys every LoRA-family pass shares (Olive 0.13's LoRA); each member adds its own."""

    type: str
    target_modules: list[str] | None = Field(None, description="default: every attention and MLP projection")
    r: int = Field(64, ge=1, description="LoRA rank (the Cookbook and Olive < 0.8: lora_r)")
    alpha: float = Field(16, gt=0, description="LoRA alpha (the Cookbook and Olive < 0.8: lora_alpha)")
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    torch_dtype: DTYPES = Field(
        "float32", description="dtype the base model is loaded in (the adapter stays float32, as peft keeps it); "
        "slmforge's default is float32, not Olive's bfloat16 (README: bf16 is slower on a CPU without AMX)")
    # The Cookbook writes QLoRA's quantization keys on its LoRA pass too: accepted there, used by QLoRA.
    double_quant: bool = Field(True, description="QLoRA: quantize the quantization constants")
    quant_type: Literal["nf4", "fp4"] = "nf4"
    compute_dtype: DTYPES = "float32"
    train_data_config: str = Field(description="name of a data config")
    eval_data_config: str | None = None
    eval_dataset_size: float | None = Field(None, gt=0, description="slmforge: fraction (<1) or row count held out")
    training_args: TrainingArgs = Field(default_factory=TrainingArgs)


class LoRAPass(FinetunePass):
    type: Literal["LoRA"]


class QLoRAPass(FinetunePass):
    type: Literal["QLoRA"]


class DoRAPass(FinetunePass):
    """LoRA with weight decomposition (peft `use_dora`): Olive's DoRA takes LoRA's keys."""

    type: Literal["DoRA"]


class LycorisPass(FinetunePass):
    """LoHa and LoKr (peft's LyCORIS adapters): dropout per rank component or per module, not lora_dropout."""

    rank_dropout: float = Field(0.0, ge=0, lt=1, description="drop rank components while training")
    module_dropout: float = Field(0.0, ge=0, lt=1, description="skip a whole adapted module while training")

    @model_validator(mode="after")
    def _no_lora_dropout(self) -> "LycorisPass":
        if "lora_dropout" in self.model_fields_set:
            raise ValueError(f"{self.type} has no 'lora_dropout'; use 'rank_dropout' or 'module_dropout'")
        return self


class LoHaPass(LycorisPass):
    type: Literal["LoHa"]


class LoKrPass(LycorisPass):
    type: Literal["LoKr"]
    decompose_both: bool = Field(False, description="low-rank decompose the left Kronecker factor too")
    decompose_factor: int = Field(-1, ge=-1, description="the Kronecker factorisation's split (-1: near square)")

    @field_validator("decompose_factor")
    @classmethod
    def _factor(cls, value: int) -> int:
        if value == 0:
            raise ValueError("decompose_factor is -1 (automatic) or at least 1")
        return value


OLIVE_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}  # Olive's short names of torch dtypes


def dtype_name(dtype: str) -> str:
    return OLIVE_DTYPES.get(dtype, dtype)


@dataclass(frozen=True)
class FinetuneMethod:
    model: type[FinetunePass]
    method: str  # the finetune step's --method
    params: Callable[[Any], dict[str, Any]]  # method-specific finetune step parameters
    # The ONNX builder reads plain LoRA beside the base (its adapter_path); other adapters are built merged.
    builder_reads_adapter: bool = False


def _lycoris(p: LycorisPass) -> dict[str, Any]:
    return {"rank_dropout": p.rank_dropout, "module_dropout": p.module_dropout}


FINETUNE_PASSES: dict[str, FinetuneMethod] = {
    "LoRA": FinetuneMethod(LoRAPass, "lora", lambda p: {}, builder_reads_adapter=True),
    "QLoRA": FinetuneMethod(QLoRAPass, "qlora", lambda p: {
        "quant_type": p.quant_type, "double_quant": p.double_quant, "compute_dtype": dtype_name(p.compute_dtype)},
        builder_reads_adapter=True),
    "DoRA": FinetuneMethod(DoRAPass, "dora", lambda p: {}),
    "LoHa": FinetuneMethod(LoHaPass, "loha", _lycoris),
    "LoKr": FinetuneMethod(LoKrPass, "lokr", lambda p: {
        **_lycoris(p), "decompose_both": p.decompose_both, "decompose_factor": p.decompose_factor}),
}


class MergePass(create_model("MergeFields", __base__=Strict, type=(Literal["MergeAdapterWeights"], ...),
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


class ModelBuilderPass(create_model("ModelBuilderFields", __base__=Strict, type=(Literal["ModelBuilder"], ...),
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
    # Builder switches Olive passes on as they are (graph._BUILDER_KEYS): the builder validates them.
    use_qdq: bool | None = Field(None, description="QuantizeLinear/DequantizeLinear pairs instead of MatMulNBits")
    use_8bits_moe: bool | None = Field(None, description="8-bit QMoE weights (mixture-of-experts models)")
    use_webgpu_fp32: bool | None = Field(None, description="fp32 for WebGPU devices without fp16")
    use_cuda_bf16: bool | None = Field(None, description="bf16 inputs and outputs for quantized models on CUDA")
    include_hidden_states: bool | None = Field(None, description="the hidden states as an output of the model")
    enable_cuda_graph: bool | None = Field(None, description="allow CUDA graph capture (CUDA execution provider)")


Pass = Annotated[Union[tuple(m.model for m in FINETUNE_PASSES.values()) + (MergePass, ModelBuilderPass)],
                 Field(discriminator="type")]
