"""`slmforge cache ls|clean`: list or clean the local step cache.

Without --cache-dir or --recipe, the caches of the recipes in the current folder (their engine.cache_dir,
resolved from the recipe's folder as `slmforge run` does), else ./.slmforge/cache.
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw]?)$")
_UNIT = {"": 86400, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    for name, help_text in (("ls", "list cache entries"), ("clean", "remove unfinished entries (or more)")):
        p = sub.add_parser(name, help=help_text)
        where = p.add_mutually_exclusive_group()
        where.add_argument("--cache-dir", help="cache folder (default: the cache of the recipes in this folder, "
                                               "else .slmforge/cache here)")
        where.add_argument("--recipe", help="use this recipe's engine.cache_dir")
        if name == "clean":
            what = p.add_mutually_exclusive_group()
            what.add_argument("--all", action="store_true", help="remove every entry")
            what.add_argument("--older-than", metavar="AGE",
                              help="also remove entries unused for AGE (e.g. 7d, 12h, 30m; a bare number is days)")
            what.add_argument("--keep-last", metavar="N", type=int,
                              help="also remove every entry but the N most recently used of each step "
                                   "(a run uses one entry per step: the last N runs stay cached)")


RECIPE_SUFFIXES = (".json", ".yaml", ".yml")
DEFAULT = ".slmforge/cache"


def _cache_dirs(args: argparse.Namespace) -> list[Path]:
    """The caches to look at: the one named, else those of this folder's recipes, else ./.slmforge/cache."""
    from slmforge.backends.local.runner import cache_dir
    from slmforge.recipe.loader import load_recipe

    if args.recipe:
        return [cache_dir(load_recipe(args.recipe, check_files=False))]
    if args.cache_dir:
        return [Path(args.cache_dir).resolve()]
    import sys

    from slmforge.errors import InvalidInput

    found = []
    for recipe in recipes_here(Path.cwd()):
        try:
            found.append(cache_dir(load_recipe(recipe, check_files=False)))
        except InvalidInput as e:  # said, and the other recipes' caches still listed
            print(f"note: {e}; its cache is not looked for", file=sys.stderr)
    found = [c for c in dict.fromkeys(found) if c.is_dir()]
    return found or [Path(DEFAULT).resolve()]


def recipes_here(folder: Path) -> list[Path]:
    """Files of `folder` that are recipes (an object with input_model or passes: schemas and data files are not)."""
    from slmforge.errors import InvalidInput
    from slmforge.recipe.loader import read_raw

    found = []
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in RECIPE_SUFFIXES and p.is_file()):
        try:
            raw = read_raw(path)
        except InvalidInput:  # not a JSON/YAML object: not a recipe
            continue
        if "input_model" in raw or "passes" in raw:
            found.append(path)
    return found


def checked_cache_dir(root: Path) -> Path:
    """`root` when it is an slmforge cache (or an empty folder); else one line saying what it is instead."""
    from slmforge.backends.local.cache import MARKER
    from slmforge.errors import InvalidInput

    if not root.exists():
        raise InvalidInput(f"{root}: no slmforge cache there (no such folder)")
    if not root.is_dir():
        raise InvalidInput(f"{root}: a file, not an slmforge cache folder")
    if not (root / MARKER).is_file() and any(root.iterdir()):
        raise InvalidInput(f"{root}: not an slmforge cache (no {MARKER}); it holds other files")
    return root


def parse_age(text: str) -> float:
    from slmforge.errors import InvalidInput

    match = _DURATION.match(text.strip())
    if not match:
        raise InvalidInput(f"--older-than: '{text}' is not an age like 7d, 12h or 30m")
    return float(match.group(1)) * _UNIT[match.group(2)]


def run(args: argparse.Namespace) -> int:
    from slmforge.backends.local.cache import Cache
    from slmforge.backends.local.report import fmt_size

    from slmforge.errors import InvalidInput

    roots = _cache_dirs(args)
    if args.action == "clean":
        if len(roots) > 1:
            raise InvalidInput(f"the recipes here use {len(roots)} caches ({', '.join(map(str, roots))}); "
                               "name one with --recipe or --cache-dir")
        if args.keep_last is not None and args.keep_last < 0:
            raise InvalidInput(f"--keep-last: {args.keep_last} is negative; N is how many entries of each step stay")
        cache = Cache(checked_cache_dir(roots[0]))
        removed, freed = cache.clean(everything=args.all, keep_last_n=args.keep_last,
                                     older_than_s=parse_age(args.older_than) if args.older_than else None)
        print(f"removed {removed} entr{'y' if removed == 1 else 'ies'}, freed {fmt_size(freed)} in {cache.root}")
        return 0
    for root in roots:
        list_cache(Cache(checked_cache_dir(root)))
    return 0


def list_cache(cache) -> None:
    from slmforge.backends.local.cache import ENTRY
    from slmforge.backends.local.display import fmt_seconds
    from slmforge.backends.local.report import fmt_size
    from slmforge.contract.files import folder_size

    entries = cache.entries()
    if not entries:
        print(f"{cache.root}: empty")
        return
    print(f"{'component':<12} {'step':<16} {'key':<12} {'state':<10} {'took':>8} {'size':>9}  last used")
    for entry, meta in entries:
        size = folder_size(entry.root)
        state = "finished" if meta else "unfinished"
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime((entry.root / ENTRY).stat().st_mtime)) if meta else "-"
        took = fmt_seconds(meta.get("seconds")) if meta else ""
        step = meta.get("step", "") if meta else ""
        print(f"{entry.component:<12} {step:<16} {entry.key[:12]:<12} {state:<10} {took:>8} {fmt_size(size):>9}  {used}")
    inodes = {(st.st_dev, st.st_ino): st.st_size for e, _ in entries
              for st in (p.stat() for p in e.root.rglob("*") if p.is_file())}
    print(f"{len(entries)} entries, {fmt_size(sum(inodes.values()))} on disk in {cache.root} "
          "(a file entries share counted once)")
