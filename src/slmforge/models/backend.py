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


def load_backend(model: str | Path | None, model_id: str | None):
    """GenaiModel for an onnxruntime-genai folder, TorchBackend for anything else."""
    if model and not Path(model).is_dir():
        raise InvalidInput(f"{model}: no such model folder")
    if model and is_onnx_folder(model):
        from slmforge.models.genai import GenaiModel

        return GenaiModel(model)
    from slmforge.models.torch_model import TorchBackend, base_source

    return TorchBackend(base_source(model, model_id))
