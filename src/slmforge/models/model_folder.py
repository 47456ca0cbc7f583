"""What a model folder is: where an MLflow model keeps its Hugging Face files (the
template it carries and the folders' files: contract/folders.py).

Light (stdlib only): predict, chat and evaluate use it before deciding which runtime to load.
"""

from __future__ import annotations

from pathlib import Path

from slmforge.errors import InvalidInput

HF_CONFIG = "config.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
MLMODEL = "MLmodel"
# Inside an MLflow model folder (the one holding MLmodel), where each flavour keeps the Hugging Face
# files: azureml's hftransformers(v2) -> data/model + data/tokenizer; mlflow.transformers -> model +
# components/tokenizer.
MLFLOW_MODEL_DIRS = ("data/model", "model")
MLFLOW_TOKENIZER_DIRS = ("data/tokenizer", "components/tokenizer")


def resolve_hf_folder(path: str | Path) -> Path:
    """The folder holding the Hugging Face model's config.json: `path` itself, or, for an MLflow
    model (an Azure ML registry model with model_file_format PyTorch.MLflow arrives so), its inner
    model folder. The MLflow folder may be `path` or one level down (e.g. mlflow_model_folder/)."""
    path = Path(path)
    if (path / HF_CONFIG).is_file():
        return path
    mlflow_root = _mlflow_root(path)
    if mlflow_root is not None:
        for inner in MLFLOW_MODEL_DIRS:
            if (mlflow_root / inner / HF_CONFIG).is_file():
                return mlflow_root / inner
        raise InvalidInput(f"{mlflow_root}: an MLflow model without a Hugging Face model inside "
                           f"(no {HF_CONFIG} under {' or '.join(MLFLOW_MODEL_DIRS)})")
    raise InvalidInput(f"{path}: not a Hugging Face model folder (no {HF_CONFIG}) nor an MLflow model (no {MLMODEL})")


def resolve_tokenizer_folder(path: str | Path) -> Path:
    """Where the tokenizer files are: beside the weights, else in the enclosing MLflow model's
    tokenizer folder (`path` may be the MLflow folder or its inner model folder)."""
    path = Path(path)
    if (path / HF_CONFIG).is_file() and (path / TOKENIZER_CONFIG).is_file():
        return path
    # The MLflow folder is `path` (or one level below it), or an ancestor of the inner model folder.
    ancestors = [p for p in path.parents[:2] if (p / MLMODEL).is_file()]
    for mlflow_root in [_mlflow_root(path), *ancestors]:
        if mlflow_root is not None:
            for inner in MLFLOW_TOKENIZER_DIRS:
                if (mlflow_root / inner).is_dir():
                    return mlflow_root / inner
            break
    return resolve_hf_folder(path)


def _mlflow_root(path: Path) -> Path | None:
    if (path / MLMODEL).is_file():
        return path
    inner = sorted(p.parent for p in path.glob(f"*/{MLMODEL}") if p.is_file()) if path.is_dir() else []
    if len(inner) > 1:
        raise InvalidInput(f"{path}: several MLflow models inside ({', '.join(p.name for p in inner)}); pass one")
    return inner[0] if inner else None


def looks_like_local_path(name: str) -> bool:
    """A hub id is `name` or `org/name`; anything else (./x, /x, ~, a/b/c, a\\b) is a local path."""
    return name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1


def is_hub_id(name: str) -> bool:
    """Shaped like a Hugging Face hub id: `org/name` (one slash, no path syntax)."""
    org, _, repo = name.partition("/")
    return bool(org and repo) and not looks_like_local_path(name) and not name.endswith("/")


def is_local_model(name: str, base: Path) -> bool:
    """A recipe's model name read as a local folder: anything not shaped like a hub id, or a hub-id-shaped
    name that is a folder next to the recipe (`base`). A missing local folder is never looked up on a hub."""
    return not is_hub_id(name) or (base / name).exists()
