"""`input_model.load_kwargs`: Olive's from_pretrained arguments, each honoured, noted or refused by name.

Olive passes these to `from_pretrained` (its HfLoadKwargs; keys under `extra_args` count as written
beside them). slmforge loads models itself, in each step, so every key Olive writes is decided here
once (the Cookbook's `model_loading_args` / `from_pretrained_args` arrive as `load_kwargs`): HONOURED
keys change what a step does (torch_dtype: the fine-tune's load dtype when its pass names none;
trust_remote_code false: what slmforge always does), IGNORED ones are named as notes with why, REFUSED
ones and any key not listed here are one error line each. README's table says the same to users.
"""

from __future__ import annotations

from typing import Any, Iterator, get_args

from slmforge.recipe.base import NOT_SUPPORTED
from slmforge.recipe.passes import FinetunePass, dtype_name

_PLACES = "slmforge places the model itself (CPU, or the one GPU)"
# Keys that are accepted and have no effect here: validate and run name them with why.
IGNORED = {
    "attn_implementation": "slmforge loads models with transformers' default attention (sdpa where the model has "
                           "it: the same function as eager); the ONNX builder writes its own attention",
    "low_cpu_mem_usage": "transformers 5 no longer reads it (it always loads the weights once)",
    "device_map": _PLACES,
    "max_memory": _PLACES,
}
SPELLINGS = {"_attn_implementation": "attn_implementation"}  # Olive 0.6's llama2 QLoRA recipes
_NO_REMOTE = ("slmforge runs no code from a model repository: it loads the architectures transformers ships "
              "(Phi-3, Llama, Qwen2, Mistral, ...)")
_QUANT = "use a QLoRA pass (it loads the base in 4 bits itself); a model quantized on load is not read"
_PIN = ("a hub id is read at its main branch; to pin a commit, download it (hf download ORG/NAME --revision REV "
        "--local-dir DIR) and name that folder as model_path")
_TOKEN = "a token never goes in a recipe: set HF_TOKEN, or hf_token on the Azure ML system"
REFUSED = {"quantization_method": _QUANT, "quantization_config": _QUANT, "revision": _PIN, "code_revision": _PIN,
           "token": _TOKEN, "use_auth_token": _TOKEN}
HONOURED = ("torch_dtype", "trust_remote_code")
_DTYPES = get_args(FinetunePass.model_fields["torch_dtype"].annotation)  # the fine-tune pass's spellings


def entries(load_kwargs: dict[str, Any] | None) -> Iterator[tuple[tuple[str, ...], str, Any]]:
    """(path below input_model, canonical key, value) of each key; `extra_args`' keys as if written beside."""
    for key, value in (load_kwargs or {}).items():
        if key == "extra_args" and isinstance(value, dict):
            for inner, v in value.items():
                yield ("load_kwargs", "extra_args", inner), SPELLINGS.get(inner, inner), v
        else:
            yield ("load_kwargs", key), SPELLINGS.get(key, key), value


TEXT_GENERATION = ("text-generation", "text-generation-with-past")


def _finetune_pass(recipe) -> tuple[str, FinetunePass] | None:
    return next(((n, p) for n, p in recipe.passes.items() if isinstance(p, FinetunePass)), None)


def check_load_kwargs(loaded) -> Iterator[str]:
    """One line per key slmforge refuses, naming it and what to do instead."""
    model = loaded.recipe.input_model
    # Olive fine-tunes a model of the task's head (text-classification: a classifier); slmforge trains causal LMs.
    if model.task not in TEXT_GENERATION and _finetune_pass(loaded.recipe) is not None:
        yield (f"{loaded.where('input_model', 'task')}: task '{model.task}' is not supported by slmforge: it "
               "fine-tunes, builds and evaluates causal language models (task: text-generation)")
    if not isinstance((model.load_kwargs or {}).get("extra_args") or {}, dict):
        yield (f"{loaded.where('input_model', 'load_kwargs', 'extra_args')}: must be an object of from_pretrained "
               "arguments")
    seen: dict[str, tuple[str, ...]] = {}
    for path, key, value in entries(model.load_kwargs):
        where = loaded.where("input_model", *path)
        if key in seen:
            yield f"{where}: '{path[-1]}' and {loaded.where('input_model', *seen[key])} set the same '{key}'; keep one"
            continue
        seen[key] = path
        if value is None:  # Olive's default for every key: not given
            continue
        if key in REFUSED:
            yield f"{where}: '{path[-1]}' is {NOT_SUPPORTED} ({REFUSED[key]})"
        elif key == "torch_dtype" and value not in _DTYPES:
            yield (f"{where}: {value!r} is {NOT_SUPPORTED}; name the dtype the fine-tune loads the model in "
                   "(float32, float16 or bfloat16)")
        elif key == "trust_remote_code" and not isinstance(value, bool):
            yield f"{where}: expected true or false (got {value!r})"
        elif key not in HONOURED and key not in IGNORED and key != "extra_args":
            yield (f"{where}: '{path[-1]}' is {NOT_SUPPORTED} (slmforge passes no other from_pretrained argument; "
                   f"it reads {', '.join(HONOURED + tuple(IGNORED))})")


def load_kwargs_notes(loaded) -> list[str]:
    """What a valid key that changes nothing here means, one line each (validate and run print them)."""
    recipe = loaded.recipe
    notes = []
    if recipe.input_model.task not in TEXT_GENERATION:  # only without a fine-tune pass (check_load_kwargs)
        notes.append(f"{loaded.where('input_model', 'task')}: ignored: ModelBuilder builds a causal language model "
                     "whatever the task, as Olive's does")
    for path, key, value in entries(recipe.input_model.load_kwargs):
        why = IGNORED.get(key) if value is not None else None
        if key == "trust_remote_code" and value is True:
            why = _NO_REMOTE
        elif key == "torch_dtype" and value is not None:
            finetune = _finetune_pass(recipe)
            if finetune is None:
                why = ("no fine-tune pass loads the model here (merge and ModelBuilder take their own precision, "
                       "evaluate loads float32)")
            elif "torch_dtype" in finetune[1].model_fields_set:
                why = f"the fine-tune pass '{finetune[0]}' names its own torch_dtype"
        if why is not None:
            notes.append(f"{loaded.where('input_model', *path)}: ignored: {why}")
    return notes


def finetune_dtype(load_kwargs: dict[str, Any] | None, finetune: FinetunePass) -> str:
    """The dtype the fine-tune loads the base in: its pass's torch_dtype, else load_kwargs' (else float32)."""
    if "torch_dtype" not in finetune.model_fields_set:
        given = next((v for _, key, v in entries(load_kwargs) if key == "torch_dtype"), None)
        if given is not None:
            return dtype_name(given)
    return dtype_name(finetune.torch_dtype)
