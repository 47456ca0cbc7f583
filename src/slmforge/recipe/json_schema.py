"""The recipe's JSON Schema, covering every Olive generation so editors complete keys in each.

The canonical models give the flat shape; each entry of `generations.ALIASES` then adds its old
spelling beside the canonical key (`lora_r` next to `r`), and each level (`config`, `params`,
`params_config`, `component_kwargs`, the Cookbook's `PyTorchModel` + `hf_config`) as an object
holding the keys it may wrap. Keys that may sit inside a level are not `required` outside it.
"""

from __future__ import annotations

import copy
from typing import Any

from slmforge.recipe.generations import ALIASES, IGNORED, Alias, Path
from slmforge.recipe.schema import FINETUNE_PASSES, Recipe

_PASS_DEFS = (*(m.__name__ for m in FINETUNE_PASSES.values()), "MergePass", "ModelBuilderPass")
_SECTION_DEFS = {"input_model": ("HfModel",), "data_config": ("DataConfig",),
                 "system": ("LocalSystem", "AzureMLSystem"), "pass": _PASS_DEFS}


def recipe_schema() -> dict[str, Any]:
    schema = Recipe.model_json_schema(by_alias=True)
    for prop in schema["$defs"]["DataConfig"]["properties"].values():  # slmforge's component or a user function:
        if "oneOf" in prop:  # `type: huggingface_dataset` fits both shapes
            prop["anyOf"] = prop.pop("oneOf")
    _add_ignored(schema)
    original = copy.deepcopy(schema)
    defs = schema["$defs"]
    for section, names in (("recipe", (None,)), *_SECTION_DEFS.items()):
        for name in names:
            _add_spellings(section, schema, original, name)
    cookbook_model = _container("PyTorchModel", (), (), original, "HfModel", "")
    cookbook_model["properties"]["type"] = {"const": "PyTorchModel", "type": "string",
                                            "description": "Olive's model type: a PyTorch model"}
    cookbook_model.update(required=["type", "config"], description="the Cookbook's and Olive < 0.7's input model")
    defs["PyTorchModel"] = cookbook_model
    schema["properties"]["input_model"] = {"anyOf": [{"$ref": "#/$defs/HfModel"}, {"$ref": "#/$defs/PyTorchModel"}],
                                           "description": Recipe.model_fields["input_model"].description}
    return schema


def _add_ignored(schema: dict[str, Any]) -> None:
    """Olive's keys that slmforge accepts and ignores (generations.IGNORED): valid, described with why."""
    for (section, kind, key), why in IGNORED.items():
        cpath = key if isinstance(key, tuple) else (key,)
        names = (None,) if section == "recipe" else _SECTION_DEFS[section]
        for name in names:
            if kind is not None and name not in (kind + "Pass", kind + "System"):
                continue
            node = _node(schema, name, cpath[:-1])
            if node is not None and "properties" in node:
                node["properties"].setdefault(cpath[-1], {"description": f"ignored by slmforge: {why}"})


def _aliases(section: str) -> list[Alias]:
    return [a for a in ALIASES if a.section == section]


def _node(root: dict, def_name: str | None, cpath: Path) -> dict | None:
    """The schema object at a canonical path below a definition of `root`, following $refs."""
    node = root["$defs"][def_name] if def_name else root
    for part in cpath:
        prop = node.get("properties", {}).get(part)
        if prop is None:
            return None
        ref = prop.get("$ref") or next((m["$ref"] for m in prop.get("anyOf", prop.get("oneOf", [])) if "$ref" in m),
                                       None)
        node = root["$defs"][ref.rsplit("/", 1)[1]] if ref else prop
    return node


def _prop(original: dict, def_name: str | None, cpath: Path) -> dict | None:
    parent = _node(original, def_name, cpath[:-1])
    prop = (parent or {}).get("properties", {}).get(cpath[-1])
    return copy.deepcopy(prop) if prop is not None else None


def _renamed(section: str, target: Path, original: dict, def_name: str | None) -> dict[str, Any]:
    """Old key spellings that land under `target`, each with the canonical key's schema."""
    props = {}
    for a in _aliases(section):
        if not a.level and a.old[:-1] == target:
            prop = _prop(original, def_name, a.new)
            if prop is not None:
                prop["description"] = f"'{'.'.join(a.new)}' as {a.era} spells it"
                props[a.old[-1]] = prop
    return props


def _container(section: str, old: Path, target: Path, original: dict, def_name: str | None,
               description: str) -> dict[str, Any]:
    """The object a level at raw path `old` is: the keys of `target`, old spellings, nested levels."""
    node = _node(original, def_name, target) or {}
    props = {k: copy.deepcopy(v) for k, v in node.get("properties", {}).items() if k != "type" or not old}
    props.update(_renamed(section, target, original, def_name))
    for a in _aliases(section):
        if a.level and a.old[:-1] == old and len(a.old) > len(old) and a.old != a.new:
            props[a.old[-1]] = _container(section, a.old, a.new, original, def_name, _level_text(a))
    return {"type": "object", "properties": props, "additionalProperties": False, "description": description}


def _level_text(a: Alias) -> str:
    """What an older layout's wrapping level is, for its description."""
    era = a.era or "Olive"
    if a.holder:
        return f"{era}: holds the data components' levels"
    inside = ".".join(a.new) or "this object"
    return f"{era}: a level holding the keys of {inside}"


def _add_spellings(section: str, live: dict, original: dict, def_name: str | None) -> None:
    """Add a section's old spellings and levels to its definition in the schema being written."""
    _node(live, def_name, ())["properties"].update(_renamed(section, (), original, def_name))
    # A level is new to the schema unless it is a canonical object itself (load_dataset_config).
    levels = [a for a in _aliases(section) if a.level and (a.old != a.new or _node(original, def_name, a.new) is None)]
    for a in levels:
        parent = a.old[:-1]
        if any(b.old == parent for b in levels):
            continue  # nested inside another level's object
        where = _node(live, def_name, parent)  # the section itself, or a canonical object in it
        if where is None:
            continue
        where["properties"][a.old[-1]] = _container(section, a.old, a.new, original, def_name, _level_text(a))
        # The keys may be inside the level instead: only the tag and the name stay required.
        where["required"] = [k for k in where.get("required", []) if k in ("type", "name")]
        if not where["required"]:
            del where["required"]
    for a in _aliases(section):  # canonical objects inside the section gain old key spellings too
        if not a.level and len(a.old) > 1:
            node = _node(live, def_name, a.old[:-1])
            prop = _prop(original, def_name, a.new)
            if node is not None and prop is not None:
                prop["description"] = f"'{a.new[-1]}' as {a.era} spells it"
                node["properties"][a.old[-1]] = prop
