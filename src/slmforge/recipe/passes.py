"""The recipe's passes in their canonical (Olive 0.7–0.13, flat) shape.

The fine-tune passes form one family: `FINETUNE_PASSES` maps each Olive pass type slmforge runs
to its model, the finetune step's `--method` and its method-specific step parameters. Adding
DoRA, LoHa, LoKr or LoftQ is one model (its own keys) and one entry there; until then
`generations.UNSUPPORTED_PASS_TYPES` refuses them by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Callable, Literal, Union

from pydantic import Field, field_validator, model_validator

from slmforge.onnx_builder import DEFAULT_INT4_ALGO, INT4_ALGOS
from slmforge.recipe.base import Strict, olive_choice


class TrainingArgs(Strict):
    """The Hugging Face TrainingArguments names the fine-tune step honours; anything else is an error."""

    seed: int = 42
    data_seed: int | None = None
    per_device_train_batch_size: int = Field(8, ge=1)
    per_device_eval_batch_size: int = Field(8, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    gradient_checkpointing: bool = False
    learning_rate: float = Field(2e-4, gt=0, lt=1)
    lr_scheduler_type: Literal[
        "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup"
    ] = "linear"
    warmup_steps: int = Field(0, ge=0)
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    num_train_epochs: float = Field(1.0, gt=0)
    max_steps: int = Field(-1, ge=-1, description="-1: train num_train_epochs; else this many optimizer steps")
    logging_steps: int = Field(10, ge=1)
    save_steps: int = Field(500, ge=1)
    evaluation_strategy: Literal["no", "steps", "epoch"] | None = None
    eval_strategy: Literal["no", "steps", "epoch"] | None = None
    eval_steps: int | None = Field(None, ge=1)
    group_by_length: bool = False
    adam_beta1: float = Field(0.9, ge=0, lt=1)
    adam_beta2: float = Field(0.999, ge=0, lt=1)
    adam_epsilon: float = Field(1e-8, gt=0)
    max_grad_norm: float = Field(1.0, ge=0)
    optim: Literal[
        "adamw_torch", "adamw_hf", "adamw_torch_fused", "paged_adamw_32bit", "paged_adamw_8bit", "adamw_8bit", "sgd"
    ] = "adamw_torch"

    @model_validator(mode="after")
    def _one_eval_strategy(self) -> "TrainingArgs":
        a, b = self.evaluation_strategy, self.eval_strategy
        if a is not None and b is not None and a != b:
            raise ValueError("'evaluation_strategy' and 'eval_strategy' disagree; give one")
        return self

    @property
    def effective_eval_strategy(self) -> str:
        return self.eval_strategy or self.evaluation_strategy or "no"


DTYPES = Literal["bfloat16", "float16", "float32", "bf16", "fp16", "fp32"]


class FinetunePass(Strict):
    """Keys every LoRA-family pass shares (Olive 0.13's LoRA); each member adds its own."""

    type: str
    target_modules: list[str] | None = Field(None, description="default: every attention and MLP projection")
    r: int = Field(64, ge=1, description="LoRA rank (the Cookbook and Olive < 0.8: lora_r)")
    alpha: float = Field(16, gt=0, description="LoRA alpha (the Cookbook and Olive < 0.8: lora_alpha)")
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    torch_dtype: Literal["float32", "fp32"] = Field(
        "float32", description="training dtype; slmforge trains in float32 (Olive's default bfloat16 is 2.5x slower on CPU)")
    # The Cookbook writes QLoRA's quantization keys on its LoRA pass too: accepted there, used by QLoRA.
    double_quant: bool = Field(True, description="QLoRA: quantize the quantization constants")
    quant_type: Literal["nf4", "fp4"] = "nf4"
    compute_dtype: DTYPES = "float32"
    train_data_config: str = Field(description="name of a data config")
    eval_data_config: str | None = None
    eval_dataset_size: float | None = Field(None, gt=0, description="slmforge: fraction (<1) or row count held out")
    training_args: TrainingArgs = Field(default_factory=TrainingArgs)

    _torch_dtype = field_validator("torch_dtype", mode="before")(
        olive_choice(("float32", "fp32"), ("bfloat16", "float16", "bf16", "fp16"),
                     "the fine-tune trains in float32"))


class LoRAPass(FinetunePass):
    type: Literal["LoRA"]


class QLoRAPass(FinetunePass):
    type: Literal["QLoRA"]


def dtype_name(dtype: str) -> str:
    return {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}.get(dtype, dtype)


@dataclass(frozen=True)
class FinetuneMethod:
    model: type[FinetunePass]
    method: str  # the finetune step's --method
    params: Callable[[Any], dict[str, Any]]  # method-specific finetune step parameters


FINETUNE_PASSES: dict[str, FinetuneMethod] = {
    "LoRA": FinetuneMethod(LoRAPass, "lora", lambda p: {}),
    "QLoRA": FinetuneMethod(QLoRAPass, "qlora", lambda p: {
        "quant_type": p.quant_type, "double_quant": p.double_quant, "compute_dtype": dtype_name(p.compute_dtype)}),
}


class MergePass(Strict):
    type: Literal["MergeAdapterWeights"]
    torch_dtype: Literal["float32", "float16", "fp32", "fp16"] = "float32"


class ModelBuilderPass(Strict):
    type: Literal["ModelBuilder"]
    precision: Literal["int4", "int8", "fp16", "fp32"] = "int4"
    execution_provider: Literal["cpu", "cuda"] | None = None
    int4_block_size: Literal[16, 32, 64, 128, 256] = 32
    int4_accuracy_level: int = Field(4, ge=0, le=4)
    int4_algo_config: Literal[INT4_ALGOS] = Field(  # type: ignore[valid-type]
        DEFAULT_INT4_ALGO, description="int4 quantization method (builder algo_config); slmforge's default keeps the "
        "accuracy best on the measured real model (bench/results/int4_options.json)")
    int4_is_symmetric: bool = True
    int4_op_types_to_quantize: list[Literal["MatMul", "Gather"]] | None = None
    int4_nodes_to_exclude: list[str] | None = None
    exclude_embeds: bool = False
    exclude_lm_head: bool = False
    extra_options: dict[str, str | int | float | bool] | None = None
    max_accuracy_drop: float | None = Field(
        None, ge=0, le=1, description="slmforge: the largest accuracy loss on the eval rows, against the model "
        "the build came from, that the build may show (default per precision: int4 0.05, int8 0.02)")


Pass = Annotated[Union[tuple(m.model for m in FINETUNE_PASSES.values()) + (MergePass, ModelBuilderPass)],
                 Field(discriminator="type")]
