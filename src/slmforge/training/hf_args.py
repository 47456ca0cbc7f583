"""Every Hugging Face `TrainingArguments` name, and what slmforge does with it: one table.

A recipe's `training_args` may hold any field of transformers' `TrainingArguments` (Olive hands them to
the HF Trainer). Each is in exactly one class:

- honoured: a field of `training/args.py` (the finetune step's parameter), or read by the recipe itself
  (`RECIPE_SIDE`: mapped onto a step parameter or checked there);
- ignored: accepted with any value and named, with its reason, in `slmforge validate`'s output;
- refused: accepted only at the value that asks for nothing (HF's default, or none at all); any
  other value is an error naming the key and the reason.

Why a committed list instead of reading `dataclasses.fields(transformers.TrainingArguments)` when a
recipe is checked: importing transformers.training_args costs 6-7 s here (measured: 6.8 s wall on this
2-core machine, against 0.3 s for a whole `slmforge validate`), which would make every validate slow.
`CURRENT` is the installed transformers' list (5.24.0 when written); tests/test_training_args.py
compares it with `dataclasses.fields(TrainingArguments)` and fails when transformers moves, naming the
fields that came or went. `OLDER` holds the fields transformers 4.34 - 4.57 had and 5.x removed: Olive
0.4 - 0.9 recipes were written against those.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

from slmforge.training.args import TrainArgs

HONOURED, IGNORED, REFUSED = "honoured", "ignored", "refused"


class Rule(NamedTuple):
    kind: str  # HONOURED, IGNORED or REFUSED
    reason: str
    inert: tuple = (None,)  # REFUSED: values that ask for nothing (accepted, and named as ignored)

    def asks_for_nothing(self, value: Any) -> bool:
        return any(value == v and type(value) is type(v) for v in self.inert) or value in ("", [], {})


def _h(reason: str) -> Rule:
    return Rule(HONOURED, reason)


def _i(reason: str) -> Rule:
    return Rule(IGNORED, reason)


def _r(reason: str, *inert: Any) -> Rule:
    return Rule(REFUSED, reason, (None, *inert))


# The installed transformers' TrainingArguments fields (init=True), in its order.
CURRENT = (
    "output_dir per_device_train_batch_size num_train_epochs max_steps learning_rate lr_scheduler_type "
    "lr_scheduler_kwargs warmup_steps optim optim_args weight_decay adam_beta1 adam_beta2 adam_epsilon "
    "optim_target_modules gradient_accumulation_steps average_tokens_across_devices max_grad_norm "
    "label_smoothing_factor bf16 fp16 bf16_full_eval fp16_full_eval tf32 activation_checkpointing "
    "activation_checkpointing_kwargs gradient_checkpointing gradient_checkpointing_kwargs torch_compile "
    "torch_compile_backend torch_compile_mode use_liger_kernel liger_kernel_config use_cache neftune_noise_alpha "
    "torch_empty_cache_steps auto_find_batch_size logging_strategy logging_steps logging_first_step "
    "log_on_each_node logging_nan_inf_filter include_num_input_tokens_seen log_level log_level_replica "
    "disable_tqdm report_to run_name project trackio_space_id trackio_bucket_id trackio_static_space_id "
    "eval_strategy eval_steps eval_delay per_device_eval_batch_size prediction_loss_only eval_on_start "
    "eval_do_concat_batches eval_use_gather_object eval_accumulation_steps include_for_metrics "
    "batch_eval_metrics save_only_model save_strategy save_steps save_on_each_node save_total_limit "
    "enable_jit_checkpoint push_to_hub hub_token hub_private_repo hub_model_id hub_strategy hub_always_push "
    "hub_revision load_best_model_at_end metric_for_best_model greater_is_better ignore_data_skip "
    "restore_callback_states_from_checkpoint full_determinism seed data_seed use_cpu accelerator_config "
    "parallelism_config dataloader_drop_last dataloader_num_workers dataloader_pin_memory "
    "dataloader_persistent_workers dataloader_prefetch_factor dataloader_multiprocessing_context "
    "dataloader_in_order remove_unused_columns label_names train_sampling_strategy length_column_name "
    "ddp_find_unused_parameters ddp_bucket_cap_mb ddp_broadcast_buffers ddp_static_graph ddp_backend "
    "ddp_timeout fsdp fsdp_config deepspeed debug skip_memory_metrics do_train do_eval do_predict "
    "resume_from_checkpoint local_rank"
).split()

# Fields of transformers 4.34 - 4.57 that 5.x removed (older Olive recipes carry them).
OLDER = (
    "adafactor dispatch_batches evaluation_strategy fp16_backend fp16_opt_level fsdp_min_num_params "
    "fsdp_transformer_layer_cls_to_wrap group_by_length half_precision_backend include_inputs_for_metrics "
    "include_tokens_per_second jit_mode_eval logging_dir mp_parameters no_cuda overwrite_output_dir past_index "
    "per_gpu_eval_batch_size per_gpu_train_batch_size push_to_hub_model_id push_to_hub_organization "
    "push_to_hub_token ray_scope save_safetensors sharded_ddp split_batches torchdynamo tpu_metrics_debug "
    "tpu_num_cores use_ipex use_legacy_prediction_loop use_mps_device warmup_ratio"
).split()

# slmforge's training arguments that TrainingArguments lacks (Hugging Face's example scripts name them).
SLMFORGE_OWN = ("max_eval_samples",)

# Honoured by the recipe, not as a finetune step parameter of the same name (recipe/training_args.py).
RECIPE_SIDE = ("data_seed", "evaluation_strategy", "activation_checkpointing", "train_sampling_strategy",
               "resume_from_checkpoint", "report_to")

_SPEED = "a speed or memory setting of the HF Trainer; slmforge's own loop computes the same result"
_LOADER = "slmforge packs its batches in-process (training/data.py); there is no DataLoader"
_HUB = "slmforge does not push to the Hugging Face Hub; it registers the model in Azure ML or MLflow"
_TRACK = ("slmforge tracks each run itself (report_to: MLflow by default, one run named after the recipe file, "
          "a nested run per step)")
_EVAL = "slmforge computes the eval loss in its own loop (training/loop.py)"
_SHARD = "slmforge trains with DDP under torchrun (multi-GPU: components/finetune.yml); it has no sharding"
_LOG = "slmforge records the loss every logging_steps in the adapter's manifest and prints its own progress"
_NOT_YET = "slmforge's loop does not implement it; the trained weights would differ from the HF Trainer's"

# The training arguments of training/args.py that are Hugging Face's (not slmforge's own): honoured.
_STEP_ARGS = tuple(f.name for f in dataclasses.fields(TrainArgs) if f.name not in SLMFORGE_OWN)

TABLE: dict[str, Rule] = {
    # ---- honoured: training/args.py fields (the finetune step's parameters)
    **{name: _h("a finetune step parameter (training/args.py)") for name in _STEP_ARGS},
    # ---- honoured by the recipe (RECIPE_SIDE)
    "data_seed": _h("seeds load_data's held-out split"),
    "evaluation_strategy": _h("transformers < 4.46's name of eval_strategy"),
    "activation_checkpointing": _h("transformers 5's name of gradient_checkpointing"),
    "train_sampling_strategy": _h("'group_by_length' sets group_by_length; 'random' is the default"),
    "resume_from_checkpoint": _h("true or false: slmforge resumes from its newest matching checkpoint "
                                 "anyway, and a resumed run ends with the adapter an uninterrupted one writes"),
    "report_to": _h("mlflow (the default), azure_ml, tensorboard, all or none: slmforge honours each "
                     "(training/tracking.py); other integrations are refused"),
    # ---- ignored: no meaning in slmforge
    "output_dir": _i("slmforge owns its outputs: the step's adapter and checkpoints folders"),
    "overwrite_output_dir": _i("slmforge owns its outputs; a new run never writes over an old one"),
    "logging_dir": _i(_LOG),
    "logging_strategy": _i(_LOG),
    "logging_first_step": _i(_LOG),
    "log_on_each_node": _i(_LOG),
    "logging_nan_inf_filter": _i(_LOG),
    "log_level": _i(_LOG),
    "log_level_replica": _i(_LOG),
    "disable_tqdm": _i(_LOG),
    "include_num_input_tokens_seen": _i("slmforge always records the tokens trained on"),
    "include_tokens_per_second": _i("slmforge always records tokens/s"),
    "skip_memory_metrics": _i("slmforge always records the peak memory"),
    "run_name": _i(_TRACK),
    "project": _i(_TRACK),
    "trackio_space_id": _i(_TRACK),
    "trackio_bucket_id": _i(_TRACK),
    "trackio_static_space_id": _i(_TRACK),
    "save_strategy": _i("slmforge checkpoints every save_steps to resume a killed run; checkpoints are not "
                        "outputs, and load_best_model_at_end keeps the best adapter itself"),
    "save_on_each_node": _i("rank 0 writes slmforge's checkpoints; every rank its own RNG state"),
    "save_only_model": _i("slmforge's checkpoints always hold what an exact resume needs"),
    "save_safetensors": _i("slmforge always writes safetensors"),
    "enable_jit_checkpoint": _i("slmforge checkpoints every save_steps and resumes exactly after a kill"),
    "restore_callback_states_from_checkpoint": _i("slmforge's loop has no callbacks"),
    "ignore_data_skip": _i("slmforge's resume derives the batch order from the step: nothing is skipped"),
    "full_determinism": _i("slmforge's training is deterministic already: one seed, one adapter"),
    "do_train": _i("the recipe's passes decide what runs"),
    "do_eval": _i("the recipe's passes decide what runs"),
    "do_predict": _i("the recipe's passes decide what runs"),
    "prediction_loss_only": _i(_EVAL),
    "eval_do_concat_batches": _i(_EVAL),
    "eval_use_gather_object": _i(_EVAL),
    "eval_accumulation_steps": _i(_EVAL),
    "batch_eval_metrics": _i(_EVAL),
    "include_for_metrics": _i(_EVAL),
    "include_inputs_for_metrics": _i(_EVAL),
    "eval_on_start": _i("slmforge evaluates the base model in its evaluate_base step "
                        "(engine.evaluate_input_model)"),
    "bf16_full_eval": _i("slmforge evaluates under the training's autocast (bf16 / fp16)"),
    "fp16_full_eval": _i("slmforge evaluates under the training's autocast (bf16 / fp16)"),
    "past_index": _i(_EVAL),
    "use_legacy_prediction_loop": _i(_EVAL),
    "remove_unused_columns": _i("load_data writes only input_ids and labels"),
    "label_names": _i("load_data writes only input_ids and labels"),
    "length_column_name": _i("group_by_length measures the tokenized rows"),
    "dataloader_num_workers": _i(_LOADER),
    "dataloader_pin_memory": _i(_LOADER),
    "dataloader_persistent_workers": _i(_LOADER),
    "dataloader_prefetch_factor": _i(_LOADER),
    "dataloader_multiprocessing_context": _i(_LOADER),
    "dataloader_in_order": _i(_LOADER),
    "dispatch_batches": _i(_LOADER),
    "split_batches": _i(_LOADER),
    "accelerator_config": _i(_LOADER),
    "tf32": _i(_SPEED),
    "torch_compile": _i(_SPEED),
    "torch_compile_backend": _i(_SPEED),
    "torch_compile_mode": _i(_SPEED),
    "torchdynamo": _i(_SPEED),
    "use_liger_kernel": _i(_SPEED),
    "liger_kernel_config": _i(_SPEED),
    "use_ipex": _i(_SPEED),
    "jit_mode_eval": _i(_SPEED),
    "torch_empty_cache_steps": _i(_SPEED),
    "auto_find_batch_size": _i("slmforge does not retry with a smaller batch; out of memory stops the step"),
    "use_cache": _i("slmforge turns the KV cache off while training"),
    "gradient_checkpointing_kwargs": _i("slmforge checkpoints with use_reentrant=False"),
    "activation_checkpointing_kwargs": _i("slmforge checkpoints with use_reentrant=False"),
    "fp16_backend": _i("slmforge's fp16 is torch autocast with a gradient scaler"),
    "half_precision_backend": _i("slmforge's fp16 is torch autocast with a gradient scaler"),
    "fp16_opt_level": _i("an apex setting; slmforge's fp16 is torch autocast"),
    "use_cpu": _i("the machine decides: slmforge trains on the GPU when there is one"),
    "no_cuda": _i("the machine decides: slmforge trains on the GPU when there is one"),
    "use_mps_device": _i("the machine decides: slmforge trains on the GPU when there is one"),
    "local_rank": _i("torchrun sets each process's rank"),
    "ddp_backend": _i("slmforge's DDP uses gloo on CPU and nccl on GPU"),
    "ddp_timeout": _i("slmforge's DDP keeps torch's default timeout"),
    "ddp_find_unused_parameters": _i(_SPEED),
    "ddp_bucket_cap_mb": _i(_SPEED),
    "ddp_broadcast_buffers": _i(_SPEED),
    "ddp_static_graph": _i(_SPEED),
    "debug": _i("the HF Trainer's debug hooks are not part of slmforge's loop"),
    "tpu_metrics_debug": _i("slmforge does not run on TPUs"),
    "mp_parameters": _i("a SageMaker setting"),
    "ray_scope": _i("a hyperparameter-search setting; slmforge runs the recipe's one configuration"),
    "hub_strategy": _i(_HUB),
    "hub_private_repo": _i(_HUB),
    "hub_always_push": _i(_HUB),
    "hub_revision": _i(_HUB),
    # ---- refused unless they ask for nothing
    "push_to_hub": _r(_HUB, False),
    "hub_model_id": _r(_HUB),
    "hub_token": _r(_HUB + "; a token never belongs in a recipe (HF_TOKEN, or the Key Vault on Azure ML)"),
    "push_to_hub_model_id": _r(_HUB),
    "push_to_hub_organization": _r(_HUB),
    "push_to_hub_token": _r(_HUB),
    "deepspeed": _r(_SHARD, False),
    "fsdp": _r(_SHARD, False),
    "fsdp_config": _r(_SHARD),
    "fsdp_min_num_params": _r(_SHARD, 0),
    "fsdp_transformer_layer_cls_to_wrap": _r(_SHARD),
    "sharded_ddp": _r(_SHARD, False),
    "parallelism_config": _r(_SHARD),
    "tpu_num_cores": _r("slmforge does not run on TPUs"),
    "per_gpu_train_batch_size": _r("deprecated by transformers; write per_device_train_batch_size"),
    "per_gpu_eval_batch_size": _r("deprecated by transformers; write per_device_eval_batch_size"),
    "adafactor": _r("slmforge's optimizers are the optim choices; Adafactor is not one", False),
    "optim_args": _r(_NOT_YET),
    "optim_target_modules": _r(_NOT_YET),
    "lr_scheduler_kwargs": _r(_NOT_YET),
    "label_smoothing_factor": _r(_NOT_YET, 0, 0.0),
    "neftune_noise_alpha": _r(_NOT_YET),
    "eval_delay": _r(_NOT_YET, 0, 0.0),
    "average_tokens_across_devices": _r("slmforge's loss is always the mean over every label token of all "
                                        "ranks", True),
    "dataloader_drop_last": _r("slmforge's batch plan fills an epoch's last batch instead of dropping it", False),
}


def rule(name: str) -> Rule | None:
    return TABLE.get(name)


def not_honoured(kind: str) -> tuple[str, ...]:
    """The names of one class (IGNORED or REFUSED), in the table's order."""
    return tuple(name for name, r in TABLE.items() if r.kind == kind)
