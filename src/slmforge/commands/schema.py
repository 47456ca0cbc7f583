"""`slmforge schema`: the recipe's JSON Schema (a copy is committed as pipelines/recipe.schema.json), or with
`--markdown` its reference page (committed as docs/recipe-reference.md)."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", help="write to this file instead of standard output")
    parser.add_argument("--markdown", action="store_true",
                        help="the recipe reference as Markdown tables (docs/recipe-reference.md) instead of JSON")


def recipe_schema() -> dict:
    from slmforge.recipe.json_schema import recipe_schema

    schema = recipe_schema()
    schema["$id"] = "https://slmforge.dev/schema/recipe.schema.json"
    schema["title"] = "slmforge recipe (Olive workflow JSON)"
    return schema


def recipe_schema_text() -> str:
    return json.dumps(recipe_schema(), indent=2, sort_keys=True) + "\n"


def recipe_reference_text() -> str:
    from slmforge.recipe.schema_doc import markdown

    return markdown(recipe_schema())


def run(args: argparse.Namespace) -> int:
    text = recipe_reference_text() if args.markdown else recipe_schema_text()
    if args.output:
        from slmforge.commands import output_file

        output_file(args.output, "-o").write_text(text, encoding="utf-8")
    else:
        print(text, end="")
    return 0
