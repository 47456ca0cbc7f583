"""`python -m slmforge.steps.components --write | --check` (`make components`): components/*.yml from
each step's SPEC and Params (contract/component_yaml.py). `--check` prints what differs and exits 1."""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

from slmforge.contract.component_yaml import component_text
from slmforge.resources import components_dir
from slmforge.steps.catalog import STEPS


def generated() -> dict[str, str]:
    """File name -> the text the generator writes, for every step."""
    return {f"{name}.yml": component_text(spec) for name, spec in STEPS.items()}


def differences(directory: Path) -> dict[str, str]:
    """File name -> a unified diff from the file in `directory` to the generated text (a missing file
    diffs from nothing; a component with no step is named too)."""
    out = {}
    for name, text in generated().items():
        path = directory / name
        committed = path.read_text(encoding="utf-8") if path.is_file() else ""
        if committed != text:
            out[name] = "".join(difflib.unified_diff(committed.splitlines(True), text.splitlines(True),
                                                     f"{path} (committed)", f"{path} (generated)"))
    for path in sorted(directory.glob("*.yml")):
        if path.name not in out and path.name not in generated():
            out[path.name] = f"{path}: no step named '{path.stem}' (steps/catalog.py)\n"
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m slmforge.steps.components", description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="write components/<step>.yml for every step")
    mode.add_argument("--check", action="store_true", help="print what differs from the generated files; exit 1 if any")
    parser.add_argument("--dir", type=Path, default=None, help="the components folder (default: the shipped one)")
    args = parser.parse_args(argv)
    directory = args.dir or components_dir().resolve()
    if args.check:
        diffs = differences(directory)
        sys.stdout.write("".join(diffs.values()))
        return 1 if diffs else 0
    for name, text in generated().items():
        path = directory / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
