"""`slmforge cache ls|clean`: list or clean the local step cache."""

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
        where.add_argument("--cache-dir", help="cache folder (default: .slmforge/cache here)")
        where.add_argument("--recipe", help="use this recipe's engine.cache_dir")
        if name == "clean":
            what = p.add_mutually_exclusive_group()
            what.add_argument("--all", action="store_true", help="remove every entry")
            what.add_argument("--older-than", metavar="AGE",
                              help="also remove entries unused for AGE (e.g. 7d, 12h, 30m; a bare number is days)")


def _cache_dir(args: argparse.Namespace) -> Path:
    if args.recipe:
        from slmforge.backends.local.runner import cache_dir
        from slmforge.recipe.loader import load_recipe

        return cache_dir(load_recipe(args.recipe, check_files=False))
    return Path(args.cache_dir or ".slmforge/cache").resolve()


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
    from slmforge.backends.local.cache import ENTRY, Cache
    from slmforge.backends.local.display import fmt_seconds
    from slmforge.backends.local.report import fmt_size
    from slmforge.contract.files import folder_size

    cache = Cache(checked_cache_dir(_cache_dir(args)))
    if args.action == "clean":
        removed, freed = cache.clean(everything=args.all,
                                     older_than_s=parse_age(args.older_than) if args.older_than else None)
        print(f"removed {removed} entr{'y' if removed == 1 else 'ies'}, freed {fmt_size(freed)} in {cache.root}")
        return 0
    entries = cache.entries()
    if not entries:
        print(f"{cache.root}: empty")
        return 0
    total = 0
    print(f"{'component':<12} {'step':<16} {'key':<12} {'state':<10} {'took':>8} {'size':>9}  last used")
    for entry, meta in entries:
        size = folder_size(entry.root)
        total += size
        state = "finished" if meta else "unfinished"
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime((entry.root / ENTRY).stat().st_mtime)) if meta else "-"
        took = fmt_seconds(meta.get("seconds")) if meta else ""
        step = meta.get("step", "") if meta else ""
        print(f"{entry.component:<12} {step:<16} {entry.key[:12]:<12} {state:<10} {took:>8} {fmt_size(size):>9}  {used}")
    print(f"{len(entries)} entries, {fmt_size(total)} in {cache.root}")
    return 0
