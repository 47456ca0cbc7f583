"""Every key of `slmforge schema` is documented, and docs/recipe-reference.md is generated from the same schema."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def undocumented(node, path: str = "") -> list[str]:
    """Paths of the properties (at any depth: nested levels, list items, maps, alternatives) with no description."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, prop in node.get("properties", {}).items():
            if not isinstance(prop, dict) or not prop.get("description"):
                found.append(f"{path}.{key}")
            found += undocumented(prop, f"{path}.{key}")
        for key in ("anyOf", "oneOf", "allOf", "items", "additionalProperties"):
            for sub in node.get(key) if isinstance(node.get(key), list) else [node.get(key)]:
                found += undocumented(sub, path)
    return found


def test_every_schema_key_has_a_description():
    from slmforge.commands.schema import recipe_schema

    schema = recipe_schema()
    missing = undocumented(schema, "recipe")
    for name, definition in schema["$defs"].items():
        missing += undocumented(definition, name)
    assert missing == [], f"{len(missing)} recipe keys have no description: {', '.join(missing[:20])}"
    # the walk reaches the keys the issue named, and a level of an older layout
    assert "default" in schema["$defs"]["Engine"]["properties"]["cache_dir"]
    assert schema["$defs"]["LoRAPass"]["properties"]["config"]["description"].startswith("the Cookbook")


def test_walk_finds_a_key_without_description():
    """The walk itself: a nested property without one is reported with its path."""
    node = {"properties": {"a": {"description": "x", "anyOf": [{"properties": {"b": {"type": "string"}}}]}}}
    assert undocumented(node, "r") == ["r.a.b"]


def test_recipe_reference_is_up_to_date():
    from slmforge.commands.schema import recipe_reference_text

    committed = (ROOT / "docs" / "recipe-reference.md").read_text(encoding="utf-8")
    text = recipe_reference_text()
    assert committed == text, "run: slmforge schema --markdown -o docs/recipe-reference.md"
    # one table row per key, with its description and default
    assert ("| `cache_dir` | string | `\".slmforge/cache\"` | the content-addressed step cache" in text)
    assert "## EvaluateConfig" in text and "held out of training" in text
