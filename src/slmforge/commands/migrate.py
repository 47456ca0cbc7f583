"""`slmforge migrate RECIPE`: the recipe in the flat shape Olive 0.7–0.13 writes.

What a user needs to move a Cookbook (or Olive 0.6) recipe to today's Olive, and back to
slmforge: the same recipe, every key in its current place and spelling, engine keys at the top
level. Only a valid recipe is migrated, so the output loads to the same step graph.
"""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="recipe file (Olive workflow JSON or YAML, any generation)")
    parser.add_argument("-o", "--output", help="write to this file (refused if it exists) instead of standard output")


def run(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from slmforge.errors import InvalidInput
    from slmforge.recipe.generations import to_current
    from slmforge.recipe.loader import load_recipe
    from slmforge.recipe.naming import registered_name

    loaded = load_recipe(args.recipe, check_files=False)  # a recipe moves before its files do
    canonical = dict(loaded.canonical)
    register = dict(canonical.get("register") or {})
    if loaded.recipe.register_.enabled and not register.get("name"):
        # The name it registers under came from its file's name: written out, so the migrated file (named
        # otherwise) registers the same model.
        canonical["register"] = {**register, "name": registered_name(loaded)}
    current = to_current(canonical)
    text = json.dumps(current, indent=2, ensure_ascii=False) + "\n"
    if not args.output:
        print(text, end="")
        return 0
    out = Path(args.output)
    if out.is_symlink():  # a dangling link too: writing through it would create its target elsewhere
        raise InvalidInput(f"{out}: a symbolic link (to {os.readlink(out)}); migrate writes only a new file")
    if out.exists():
        raise InvalidInput(f"{out}: already exists; migrate never overwrites a file")
    with out.open("x", encoding="utf-8") as f:  # O_EXCL: nothing made in between is followed or overwritten
        f.write(text)
    return 0
