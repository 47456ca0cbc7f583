"""`slmforge pretrained NAME DIR`: write a real pretrained model as a Hugging Face folder (offline)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from slmforge.models.pretrained import MODELS

    parser.add_argument("name", help="model to write: " + "; ".join(f"{m.name} ({m.description})" for m in MODELS.values()))
    parser.add_argument("dir", help="folder to write the model and tokenizer to (kept when it already holds it)")


def run(args: argparse.Namespace) -> int:
    from slmforge.models.pretrained import write_pretrained

    folder, converted = write_pretrained(args.name, args.dir)
    print(f"{'wrote' if converted else 'already up to date:'} {args.name} -> {folder}")
    return 0
