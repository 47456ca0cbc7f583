"""Is a Hugging Face model folder loadable? Its config.json and the headers of its safetensors files,
read cheaply (no weights), so a corrupt or truncated file is one line naming it, not a library error.

Used wherever a model is loaded (merge, build_onnx, evaluate, the fine-tune) before the library reads it.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from slmforge.errors import InvalidInput

_MAX_HEADER = 100_000_000  # safetensors' own bound on the JSON header


def check_loadable(folder: str | Path) -> None:
    """Raise InvalidInput naming the file and the cause when `folder` (a local Hugging Face folder)
    cannot be loaded: config.json that is not JSON or names an unknown model_type, a safetensors
    file whose header is broken or whose tensors run past its end (a truncated download)."""
    folder = Path(folder)
    if not folder.is_dir():
        return  # a hub id: the library reports it
    config = folder / "config.json"
    if config.is_file():
        _check_config(config)
    check_json_files(folder)
    for weights in sorted(folder.glob("*.safetensors")):
        problem = safetensors_problem(weights)
        if problem:
            raise InvalidInput(f"{weights}: {problem}")


# The other JSON files transformers reads from a model folder (the config is checked further).
JSON_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
              "model.safetensors.index.json")


def check_json_files(folder: str | Path) -> None:
    """Each of the folder's JSON_FILES that is there parses as JSON, else InvalidInput naming it."""
    for name in JSON_FILES:
        path = Path(folder) / name
        if path.is_file():
            try:
                json.loads(path.read_text(encoding="utf-8"))
            except (UnicodeError, json.JSONDecodeError) as e:
                raise InvalidInput(f"{path}: not valid JSON ({e})") from None


def _check_config(config: Path) -> None:
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (UnicodeError, json.JSONDecodeError) as e:
        raise InvalidInput(f"{config}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"{config}: not a JSON object")
    model_type = data.get("model_type")
    if model_type is None:
        return  # transformers names what is missing
    from transformers import CONFIG_MAPPING

    if model_type not in CONFIG_MAPPING:
        raise InvalidInput(f"{config}: model_type {model_type!r} is not one this transformers knows "
                           "(a typo, or a model newer than the installed transformers)")


def safetensors_problem(path: Path) -> str | None:
    """Why `path` is not a whole safetensors file, or None: a short or unreadable header, or tensors
    whose data runs past the end of the file."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return f"not a safetensors file (only {size} bytes)"
        length = struct.unpack("<Q", head)[0]
        if length > min(_MAX_HEADER, size - 8):
            return f"not a safetensors file, or truncated (its header claims {length} bytes; the file has {size})"
        try:
            header = json.loads(f.read(length).decode("utf-8"))
        except (UnicodeError, json.JSONDecodeError):
            return "not a safetensors file (its header is not JSON)"
    if not isinstance(header, dict):
        return "not a safetensors file (its header is not a JSON object)"
    try:
        ends = [int(e.get("data_offsets", [0, 0])[1]) for k, e in header.items() if k != "__metadata__"]
    except (AttributeError, TypeError, ValueError, IndexError):
        return "not a safetensors file (its header does not list tensors)"
    needed = 8 + length + max(ends, default=0)
    if needed > size:
        return f"truncated ({size} bytes; its tensors need {needed})"
    return None


def load_error(source: str, error: Exception) -> InvalidInput | None:
    """A library's error while loading `source` as one line naming it, or None when it is not a load error
    (safetensors' SafetensorError, transformers' unknown-architecture ValueError)."""
    first = next((ln.strip() for ln in str(error).splitlines() if ln.strip()), type(error).__name__)
    if type(error).__name__ == "SafetensorError":
        return InvalidInput(f"{source}: its safetensors weights cannot be read ({first})")
    if isinstance(error, ValueError) and "model type" in first:
        return InvalidInput(f"{source}: {first}")
    return None
