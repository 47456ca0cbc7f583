"""`slmforge schema`: the recipe's JSON Schema (a copy is committed as pipelines/recipe.schema.json)."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", help="write to this file instead of standard output")


def recipe_schema_text() -> str:
    from slmforge.recipe.json_schema import recipe_schema

    schema = recipe_schema()
    schema["$id"] = "https://slmforge.dev/schema/recipe.schema.json"
    schema["title"] = "slmforge recipe (Olive workflow JSON)"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def run(args: argparse.Namespace) -> int:
    text = recipe_schema_text()
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        print(text, end="")
    return 0
