"""The Hugging Face TrainingArguments names slmforge honours: the one definition.

The fine-tune step's Params take these fields (its argparse, `components/finetune.yml`), the training
loop reads them, and the recipe's `training_args` model is generated from them (recipe/passes.py),
which adds the recipe-side names and accepts or refuses every other Hugging Face name
(training/hf_args.py: one table of what slmforge does with each).

`logging_steps`, `eval_steps` and `save_steps` are read as HF reads them: below 1, a share of the
run's optimizer steps (0.1: every ceil(0.1 * total) steps); from 1 on, a whole number of steps
(50.0 is 50).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from slmforge.contract.params import StepParams, param

SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup")
OPTIMIZERS = ("adamw_torch", "adamw_hf", "adamw_torch_fused", "paged_adamw_32bit", "paged_adamw_8bit",
              "adamw_8bit", "sgd")
EVAL_STRATEGIES = ("no", "steps", "epoch")
BEST_METRICS = ("eval_loss", "loss")  # slmforge evaluates the loss; HF writes either name for it
STEP_COUNTS = ("logging_steps", "eval_steps", "save_steps")


@dataclass(kw_only=True)
class TrainArgs(StepParams):
    seed: int = param(42, help="seed of the adapter's initialisation and the batch order")
    per_device_train_batch_size: int = param(8, ge=1, help="examples per micro-batch and process")
    per_device_eval_batch_size: int = param(8, ge=1, help="examples per evaluation batch")
    gradient_accumulation_steps: int = param(1, ge=1, help="micro-batches per optimizer step")
    gradient_checkpointing: bool = param(False, help="recompute activations in the backward pass (less memory)")
    learning_rate: float = param(2e-4, gt=0, lt=1, help="peak learning rate")
    lr_scheduler_type: str = param("linear", choices=SCHEDULERS, help="learning rate schedule")
    warmup_steps: int = param(0, ge=0, help="optimizer steps of linear warm-up")
    warmup_ratio: float = param(0.0, ge=0, lt=1, help="warm-up as a fraction of the steps (when warmup_steps is 0)")
    weight_decay: float = param(0.0, ge=0, help="AdamW weight decay")
    num_train_epochs: float = param(1.0, gt=0, help="epochs to train when max_steps is -1")
    max_steps: int = param(-1, ge=-1, help="-1: train num_train_epochs; else this many optimizer steps")
    logging_steps: float = param(10.0, gt=0, help="optimizer steps between loss records (<1: a share of the run)")
    save_steps: float = param(500.0, gt=0, help="optimizer steps between checkpoints (<1: a share of the run)")
    save_total_limit: int | None = param(None, ge=0, help="checkpoints kept (default 2; 0: all of them)")
    eval_strategy: str = param("no", choices=EVAL_STRATEGIES, help="when to compute the eval loss")
    eval_steps: float | None = param(None, gt=0, help="optimizer steps between evaluations (default logging_steps; "
                                     "<1: a share of the run)")
    load_best_model_at_end: bool = param(False, help="write the adapter of the best evaluation, not the last")
    metric_for_best_model: str | None = param(None, choices=BEST_METRICS, help="what 'best' means (the eval loss)")
    greater_is_better: bool | None = param(None, help="a higher metric is better (default: false, for a loss)")
    bf16: bool = param(False, help="train under bfloat16 autocast (the adapter stays float32)")
    fp16: bool = param(False, help="train under float16 autocast with a gradient scaler (the adapter stays float32)")
    max_eval_samples: int = param(1000, ge=1, help="eval sequences the eval loss is computed over (the first "
                                  "ones; Hugging Face's run_clm name); the held-out rows beyond are not scored")
    group_by_length: bool = param(False, help="batch examples of similar length together")
    adam_beta1: float = param(0.9, ge=0, lt=1, help="AdamW beta1")
    adam_beta2: float = param(0.999, ge=0, lt=1, help="AdamW beta2")
    adam_epsilon: float = param(1e-8, gt=0, help="AdamW epsilon")
    max_grad_norm: float = param(1.0, ge=0, help="gradient clipping norm (0: none)")
    optim: str = param("adamw_torch", choices=OPTIMIZERS, help="optimizer")

    def check_args(self) -> str | None:
        """The rules between training arguments: the first one broken, as one line (None: all kept)."""
        return args_problem({f: getattr(self, f) for f in (*STEP_COUNTS, "bf16", "fp16", "load_best_model_at_end")},
                            self.eval_strategy)


def args_problem(values: dict, eval_strategy: str | None) -> str | None:
    """What the recipe and the step both check (`values`: names to values, None when not given)."""
    for name in STEP_COUNTS:
        value = values.get(name)
        if value is not None and value >= 1 and value != int(value):
            return f"{name} {value} is neither a share of the run (below 1) nor a whole number of steps"
    if values.get("bf16") and values.get("fp16"):
        return "bf16 and fp16 are both true; give one"
    if values.get("load_best_model_at_end") and (eval_strategy or "no") == "no":
        return "load_best_model_at_end needs an evaluation: set eval_strategy to 'steps' or 'epoch'"
    return None


def every(value: float, total: int) -> int:
    """Optimizer steps between two events: `value` steps, or below 1 that share of `total` (as HF reads it)."""
    return max(1, math.ceil(value * total)) if value < 1 else int(value)
