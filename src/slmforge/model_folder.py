"""What a model folder is and what it carries: its kind, its training template, its size.

Light (stdlib only): predict, chat and evaluate use it before deciding which runtime to load.
"""

from __future__ import annotations

from pathlib import Path

from slmforge import manifest

GENAI_CONFIG = "genai_config.json"
_MAX_DEPTH = 4  # adapter -> dataset is 1 hop; merged/onnx -> adapter -> dataset is 2


def is_onnx_folder(folder: str | Path) -> bool:
    """An onnxruntime-genai folder (the build_onnx output) rather than a Hugging Face one."""
    return (Path(folder) / GENAI_CONFIG).is_file()


def model_kind(folder: str | Path) -> str:
    return "onnx" if is_onnx_folder(folder) else "pytorch"


def size_on_disk(folder: str | Path) -> int:
    """Bytes of every file in the folder (the manifest included: it ships with the model)."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def carried_template(folder: str | Path) -> str | None:
    """The text template the model was trained with, from the folder's manifest.

    Looks at `params.text_template`, then a top-level `text_template`, then follows the
    manifest's inputs (adapter -> dataset) while they still exist on this machine.
    """
    return _template(Path(folder), _MAX_DEPTH)


def _template(folder: Path, depth: int) -> str | None:
    data = manifest.read_manifest(folder)
    if data is None:
        return None
    params = data.get("params") or {}
    for value in (params.get("text_template"), data.get("text_template")):
        if isinstance(value, str) and value:
            return value
    if depth <= 0:
        return None
    for entry in (data.get("inputs") or {}).values():
        path = Path(entry.get("path", "")) if isinstance(entry, dict) else None
        if path is not None and path.is_dir():
            found = _template(path, depth - 1)
            if found:
                return found
    return None
