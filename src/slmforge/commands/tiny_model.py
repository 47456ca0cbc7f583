"""`slmforge tiny-model DIR [--seed N] [--size tiny|small]`."""

from __future__ import annotations

import argparse

from slmforge.commands import seed_number


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", help="folder to write the model and tokenizer to")
    parser.add_argument("--seed", type=seed_number, default=0, help="weight init seed (same seed: identical files)")
    parser.add_argument("--size", choices=["tiny", "small"], default="tiny",
                        help="tiny: ~0.56 M parameters (tests, demo); small: ~27 M (benchmarks)")


def run(args: argparse.Namespace) -> int:
    from slmforge.contract.ownership import claim
    from slmforge.models.tinymodel import build_tiny_model

    claim(args.dir, what="DIR", made_by="tiny-model")  # never over a user's config.json
    out = build_tiny_model(args.dir, seed=args.seed, size=args.size)
    print(f"wrote a {args.size} Phi-3 to {out}")
    return 0
