"""Is a folder a Hugging Face model slmforge can fine-tune, and which modules does it have: read from
its file names, config.json and the safetensors header (never the weights), so `validate` stays fast.

Light (stdlib only): the recipe checks call it before any library is imported.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from slmforge.contract.folders import GENAI_CONFIG
from slmforge.errors import InvalidInput
from slmforge.models.model_folder import HF_CONFIG, MLMODEL, resolve_hf_folder, resolve_tokenizer_folder

# Any one of these is a tokenizer transformers can load (fast tokenizer, sentencepiece, BPE vocab, WordPiece).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "spiece.model", "vocab.json", "vocab.txt")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
_MAX_HEADER = 100_000_000  # safetensors caps its JSON header at 100 MB


def model_folder_problem(path: Path) -> str | None:
    """What makes `path` not a Hugging Face model folder (one phrase naming what is missing), or None."""
    if not path.is_dir():
        return "is a file, not a model folder" if path.exists() else "not found"
    if (path / GENAI_CONFIG).is_file() or any(path.glob("*.onnx")):
        found = GENAI_CONFIG if (path / GENAI_CONFIG).is_file() else next(path.glob("*.onnx")).name
        return (f"is an ONNX model folder ({found}), not a Hugging Face model: fine-tuning needs the Hugging Face "
                "folder it was built from (config.json, safetensors weights, tokenizer)")
    if not (path / HF_CONFIG).is_file() and not (path / MLMODEL).is_file():
        gguf = sorted(p.name for p in path.glob("*.gguf"))
        if gguf:
            return (f"holds a GGUF model ({gguf[0]}) and no {HF_CONFIG}: fine-tuning needs a Hugging Face model "
                    "folder (config.json, safetensors weights, tokenizer)")
        return f"not a Hugging Face model folder: no {HF_CONFIG}"
    try:
        folder = resolve_hf_folder(path)
        tokenizer = resolve_tokenizer_folder(path)
    except InvalidInput as e:
        return str(e).removeprefix(f"{path}: ")
    try:
        config = json.loads((folder / HF_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return f"{HF_CONFIG} is not readable JSON ({e})"
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        return f"{HF_CONFIG} names no model_type"
    if not _has_weights(folder):
        return f"no weights ({' or '.join(WEIGHT_FILES[::2])}) in {folder}"
    if not any((tokenizer / name).is_file() for name in TOKENIZER_FILES):
        return f"no tokenizer ({' or '.join(TOKENIZER_FILES[:2])}) in {tokenizer}"
    return None


def _has_weights(folder: Path) -> bool:
    return any((folder / name).is_file() for name in WEIGHT_FILES) or any(folder.glob("*.safetensors"))


def tensor_names(folder: Path) -> list[str] | None:
    """The weight names of a model folder from the safetensors header(s) or the shard index, without reading
    the weights; None when they cannot be read cheaply (pytorch_model.bin only, a broken header)."""
    index = folder / "model.safetensors.index.json"
    try:
        if index.is_file():
            weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map")
            return list(weight_map) if isinstance(weight_map, dict) else None
        files = sorted(folder.glob("*.safetensors"))
        if not files:
            return None
        names: list[str] = []
        for file in files:
            with file.open("rb") as f:
                size = struct.unpack("<Q", f.read(8))[0]
                if size > _MAX_HEADER:
                    return None
                header = json.loads(f.read(size))
            names += [k for k in header if k != "__metadata__"]
        return names
    except (OSError, ValueError, struct.error, AttributeError):
        return None  # a broken file: loading the model names it


def module_names(folder: Path) -> set[str] | None:
    """Every module path that holds a weight (`model.layers.0.self_attn.o_proj`) and every parent of one."""
    names = tensor_names(folder)
    if names is None:
        return None
    modules: set[str] = set()
    for name in names:
        parts = name.split(".")[:-1]  # drop `weight` / `bias`
        modules.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return modules


def unknown_targets(targets: list[str], modules: set[str]) -> list[str]:
    """The targets that match no module the way peft matches a name: the whole path or its last parts."""
    return [t for t in targets if not any(m == t or m.endswith("." + t) for m in modules)]
