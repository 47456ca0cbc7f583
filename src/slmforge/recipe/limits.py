"""Values that validate on their own but cannot work with the recipe's model, found at validate time.

A max_seq_len (the Cookbook: source_max_len) over the model's context failed only at evaluate_onnx; pad_to_max_len with a huge
source_max_len ran out of memory; a rank above the model's width wrote GB-sized checkpoints,
each long after validate had passed. The model's config.json is read when the model is a local folder; the bounds that
need no model (a step count no run reaches, a length too short for a prompt) always apply.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterator

from slmforge.recipe.loaded import LoadedRecipe
from slmforge.recipe.schema import FinetunePass

MIN_SOURCE_LEN = 16  # a template's prompt and its answer need at least this many tokens
MAX_STEPS = 100_000_000  # ~3 years at one step a second: beyond it, a typo
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length")


def check_limits(loaded: LoadedRecipe, model_dir: Path | None,
                 data_config_path: Callable[[LoadedRecipe, int, str], str]) -> Iterator[str]:
    """`data_config_path(loaded, i, field)` names a data field in the shape the user wrote."""
    config = _model_config(model_dir)
    context_key = next((k for k in CONTEXT_KEYS if isinstance(config.get(k), int)), None)
    context = config[context_key] if context_key else None
    width = config.get("hidden_size") if isinstance(config.get("hidden_size"), int) else None
    for i, dc in enumerate(loaded.recipe.data_configs):
        length = getattr(dc.pre_process_data_config, "max_seq_len", None)
        if length is None:
            continue  # a user_script pre-process makes its own sequences
        where = data_config_path(loaded, i, "max_seq_len")
        if length < MIN_SOURCE_LEN:
            yield f"{where}: {length} tokens cannot hold a prompt and its answer (at least {MIN_SOURCE_LEN})"
        elif context is not None and length > context:
            yield (f"{where}: {length} tokens is longer than the model's context "
                   f"({context}: {context_key} in {model_dir}/config.json)")
    for name, p in loaded.recipe.passes.items():
        if not isinstance(p, FinetunePass):
            continue
        if width is not None and p.r > width:
            yield (f"{loaded.where('passes', name, 'r')}: rank {p.r} is above the model's hidden_size {width}; "
                   "a rank beyond a layer's width adds parameters, not capacity")
        steps = p.training_args.max_steps
        if steps > MAX_STEPS:
            yield (f"{loaded.where('passes', name, 'training_args', 'max_steps')}: {steps} is beyond any run "
                   f"(at most {MAX_STEPS})")
    new_tokens = loaded.recipe.evaluate.max_new_tokens
    if context is not None and new_tokens >= context:
        yield f"{loaded.where('evaluate', 'max_new_tokens')}: {new_tokens} is not below the model's context ({context})"


def _model_config(model_dir: Path | None) -> dict:
    if model_dir is None:
        return {}
    try:
        data = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # no readable config: the finetune step names the problem
    return data if isinstance(data, dict) else {}
