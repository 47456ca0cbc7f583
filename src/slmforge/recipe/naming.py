"""What a recipe is called: its digest, the name its model is registered under, its Azure ML host system."""

from __future__ import annotations

from pathlib import Path

from slmforge.contract.files import json_digest
from slmforge.recipe.loaded import LoadedRecipe
from slmforge.recipe.schema import AzureMLSystem


def recipe_digest(loaded: LoadedRecipe) -> str:
    # Of the validated recipe: one recipe written in two Olive generations (or with its defaults
    # written out, or another description) is one recipe.
    meaning = loaded.recipe.model_dump(mode="json", by_alias=True, exclude={"schema_", "description"})
    return json_digest(meaning)


def registered_name(loaded: LoadedRecipe) -> str:
    if loaded.recipe.register_.name:
        return loaded.recipe.register_.name
    stem = Path(loaded.recipe.engine.output_dir).name or loaded.path.stem
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in stem).strip("-.") or "model"
    return safe


def host_system(loaded: LoadedRecipe) -> AzureMLSystem | None:
    host = loaded.recipe.engine.host
    system = loaded.recipe.systems.get(host) if host else None
    return system if isinstance(system, AzureMLSystem) else None
