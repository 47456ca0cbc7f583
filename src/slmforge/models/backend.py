"""Which runtime answers for a model folder: onnxruntime-genai for a build_onnx folder, else transformers.

Backends share one small contract: `encode(text, special)`, `decode(tokens)`, `answers(requests,
max_new_tokens)` (batched greedy answers, verified_greedy.py), `score(requests)` (teacher-forced
log-probabilities), `generate(prompt, max_new_tokens, stop)` (one prompt at a time: predict, chat),
`eos_token_id(s)`, `kind`. An ONNX folder is loaded without importing torch.
"""

from __future__ import annotations

from pathlib import Path

from slmforge.contract.folders import is_onnx_folder
from slmforge.errors import InvalidInput


def load_backend(model: str | Path | None, model_id: str | None, adapters: list[str | Path] = ()):
    """GenaiModel for an onnxruntime-genai folder, TorchBackend for anything else.

    `adapters`: `.onnx_adapter` files (or folders holding one) served on the base in `model`, each checked
    against it; the first is active (GenaiModel.use_adapter switches)."""
    if model and not Path(model).is_dir():
        raise InvalidInput(f"{model}: no such model folder")
    if adapters:
        require_adapter_base(model or model_id)
    if model and is_onnx_folder(model):
        from slmforge.models.genai import GenaiModel

        return GenaiModel(model, adapters=list(adapters))
    from slmforge.models.torch_model import TorchBackend, base_source

    return TorchBackend(base_source(model, model_id))


def require_adapter_base(model: str | Path | None) -> Path:
    """The model a separate adapter is served on: an onnxruntime-genai base built with adapter slots,
    or one line saying what `model` is instead."""
    from slmforge.models.adapter_slots import require_slots

    if not model:
        raise InvalidInput("an .onnx_adapter serves on its base: give the base's folder, not a hub id")
    if not Path(model).is_dir():
        raise InvalidInput(f"{model}: no such model folder")
    if not is_onnx_folder(model):
        raise InvalidInput(f"{model}: an .onnx_adapter serves on an onnxruntime-genai base built with adapter slots "
                           "(build_onnx --adapter_slots all), not on a Hugging Face model: give the base, or serve a "
                           "peft adapter merged")
    return require_slots(model).folder
