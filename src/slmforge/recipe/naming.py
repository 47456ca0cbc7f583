"""What a recipe is called: its digest, the name its model is registered under and the registry (its models:/
input model resolved there), its Azure ML host system."""

from __future__ import annotations

from slmforge.contract.files import json_digest
from slmforge.errors import InvalidInput
from slmforge.recipe.loaded import LoadedRecipe
from slmforge.recipe.schema import AzureMLSystem
from slmforge.registry.model_uri import is_model_uri, resolve
from slmforge.registry.rules import recipe_tracking_uri


def recipe_digest(loaded: LoadedRecipe) -> str:
    # Of the validated recipe: one recipe written in two Olive generations (or with its defaults
    # written out, or another description) is one recipe. The name it registers under is part of it,
    # given or taken from the file's name (so `migrate`, which writes that name out, keeps the digest).
    meaning = loaded.recipe.model_dump(mode="json", by_alias=True, exclude={"schema_", "description"})
    meaning["register"]["name"] = registered_name(loaded)
    return json_digest(meaning)


def registered_name(loaded: LoadedRecipe) -> str:
    """`register.name`, else the recipe file's stem (never the output folder's name: every recipe writing
    to `out` would share one name), in the characters a model name takes."""
    if loaded.recipe.register_.name:
        return loaded.recipe.register_.name
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in loaded.path.stem)
    return safe.lstrip("-._").rstrip("-.")[:255] or "model"


def resolve_registered_input(loaded: LoadedRecipe) -> None:
    """An `input_model.model_path` that is a models:/ URI becomes the registered version's folder (read from
    the recipe's registry), before anything reads the model: the digest and cache keys then follow the version
    an alias points at. An unknown name, version or alias: InvalidInput naming the key and what exists."""
    model = loaded.recipe.input_model
    if not is_model_uri(model.model_path):
        return
    try:
        found = resolve(model.model_path, recipe_tracking_uri(loaded.recipe.register_, loaded.base_dir))
    except InvalidInput as e:
        raise InvalidInput(f"{loaded.path}: {loaded.where('input_model', 'model_path')}: {e}") from None
    if found.base is not None:
        raise InvalidInput(f"{loaded.path}: {loaded.where('input_model', 'model_path')}: {model.model_path} is a "
                           "registered adapter; name the model to fine-tune (its base, or a merged model)")
    model.model_path = str(found.path)


def registered_input_note(loaded: LoadedRecipe) -> str | None:
    """What a models:/ input model was read as (validate and run print it)."""
    given = (loaded.canonical.get("input_model") or {}).get("model_path")
    if not is_model_uri(given) or given == loaded.recipe.input_model.model_path:
        return None
    where = loaded.where("input_model", "model_path")
    return f"{where}: {given} read from the registry: {loaded.recipe.input_model.model_path}"


def host_system(loaded: LoadedRecipe) -> AzureMLSystem | None:
    host = loaded.recipe.engine.host
    system = loaded.recipe.systems.get(host) if host else None
    return system if isinstance(system, AzureMLSystem) else None
