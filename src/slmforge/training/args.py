"""The Hugging Face TrainingArguments names slmforge honours: the one definition.

The fine-tune step's Params take these fields (its argparse, `components/finetune.yml`), the training
loop reads them, and the recipe's `training_args` model is generated from them (recipe/passes.py),
which adds only Olive's recipe-side names (`data_seed`, `evaluation_strategy`).
"""

from __future__ import annotations

from dataclasses import dataclass

from slmforge.contract.params import param

SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup")
OPTIMIZERS = ("adamw_torch", "adamw_hf", "adamw_torch_fused", "paged_adamw_32bit", "paged_adamw_8bit",
              "adamw_8bit", "sgd")
EVAL_STRATEGIES = ("no", "steps", "epoch")


@dataclass(kw_only=True)
class TrainArgs:
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
    logging_steps: int = param(10, ge=1, help="optimizer steps between loss records")
    save_steps: int = param(500, ge=1, help="optimizer steps between checkpoints")
    eval_strategy: str = param("no", choices=EVAL_STRATEGIES, help="when to compute the eval loss")
    eval_steps: int | None = param(None, ge=1, help="optimizer steps between evaluations (default logging_steps)")
    max_eval_samples: int = param(1000, ge=1, help="eval sequences the eval loss is computed over (the first "
                                  "ones; Hugging Face's run_clm name); the held-out rows beyond are not scored")
    group_by_length: bool = param(False, help="batch examples of similar length together")
    adam_beta1: float = param(0.9, ge=0, lt=1, help="AdamW beta1")
    adam_beta2: float = param(0.999, ge=0, lt=1, help="AdamW beta2")
    adam_epsilon: float = param(1e-8, gt=0, help="AdamW epsilon")
    max_grad_norm: float = param(1.0, ge=0, help="gradient clipping norm (0: none)")
    optim: str = param("adamw_torch", choices=OPTIMIZERS, help="optimizer")
