"""Load the base model (full precision, or bitsandbytes 4-bit for QLoRA) and add a LoRA-family adapter."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

from slmforge.errors import InvalidInput
from slmforge.models.model_folder import looks_like_local_path
from slmforge.training.methods import METHODS, AdapterSpec


def base_model_name(model_dir: str | Path | None, model_id: str | None) -> str:
    """What adapter_config.json names as its base: a hub id, or the folder's name — never a local path."""
    if model_id:
        return model_id
    folder = Path(model_dir)
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        config = {}
    name = config.get("_name_or_path") or ""
    if name and not looks_like_local_path(name) and not Path(name).exists():
        return name  # e.g. microsoft/Phi-3-mini-4k-instruct, kept by save_pretrained
    return folder.resolve().name


def load_model(model_dir: str | Path | None, model_id: str | None, spec: AdapterSpec, device, seed: int):
    """The base model with fresh adapter weights (seeded: get_peft_model initialises them)."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from slmforge.models.model_folder import resolve_hf_folder
    from slmforge.secrets import hf_token

    if not (model_dir or model_id):
        raise InvalidInput("give --model (a model folder) or --model_id")
    if model_dir and not Path(model_dir).is_dir():
        raise InvalidInput(f"model folder not found: {model_dir}")
    # A registry model in MLflow format holds the Hugging Face folder inside; a hub id takes
    # HF_TOKEN here or the Key Vault secret inside an Azure ML job.
    source = str(resolve_hf_folder(model_dir)) if model_dir else model_id
    kwargs: dict = {"local_files_only": True} if model_dir else {"token": hf_token()}
    quantized = METHODS[spec.method].quantized_base
    if quantized:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type=spec.options["quant_type"],
            bnb_4bit_use_double_quant=spec.options["double_quant"],
            bnb_4bit_compute_dtype=getattr(torch, spec.options["compute_dtype"]))
        kwargs["device_map"] = {"": device}
    from slmforge.models.weights_check import check_loadable, load_error

    check_loadable(source)
    torch.manual_seed(seed)
    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=getattr(torch, spec.torch_dtype), **kwargs)
    except OSError as e:
        raise InvalidInput(f"{source}: the model could not be loaded ({str(e).splitlines()[0]})") from None
    except Exception as e:  # noqa: BLE001 - a load error names the folder; anything else is re-raised
        raise (load_error(source, e) or e) from None
    with warnings.catch_warnings():  # peft asks transformers' deprecated `is_gradient_checkpointing`
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        if quantized:
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(
                model, use_gradient_checkpointing=spec.gradient_checkpointing,
                gradient_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.to(device)
            if spec.gradient_checkpointing:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
        config = METHODS[spec.method].peft_config(spec)  # the registry entry's
        torch.manual_seed(seed)  # get_peft_model draws the LoRA A matrices: seeded after it, runs differ
        try:
            peft_model = get_peft_model(model, config)
        except ValueError as e:
            raise InvalidInput(f"target_modules {spec.target_modules}: {str(e).splitlines()[0]}") from None
    if torch.device(device).type == "cpu":
        from slmforge.training import dropout

        dropout.install(peft_model)  # the same Bernoulli masks, drawn cheaper (training/dropout.py)
    return peft_model


def make_optimizer(name: str, params, *, lr: float, betas: tuple[float, float], eps: float,
                   weight_decay: float, device_type: str):
    """The `optim` training argument. Paged / 8-bit optimizers need CUDA; on CPU they become AdamW."""
    import torch

    decay = [p for p in params if p.ndim >= 2]  # like the HF Trainer: no decay on biases and norms
    rest = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr)
    if name in ("paged_adamw_32bit", "paged_adamw_8bit", "adamw_8bit"):
        if device_type == "cuda":
            import bitsandbytes as bnb

            cls = {"paged_adamw_32bit": bnb.optim.PagedAdamW32bit, "paged_adamw_8bit": bnb.optim.PagedAdamW8bit,
                   "adamw_8bit": bnb.optim.AdamW8bit}[name]
            return cls(groups, lr=lr, betas=betas, eps=eps)
        print(f"finetune: notice: optim '{name}' needs CUDA; using AdamW on CPU", file=sys.stderr)
    # The fused kernel is the same AdamW update in one pass over all tensors (CPU and CUDA).
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=True)
