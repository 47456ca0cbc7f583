"""The CLI commands: one module each, with `add_arguments(parser)` and `run(args) -> int`."""

import argparse
from pathlib import Path


def positive_int(text: str) -> int:
    """argparse type for counts that must be at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def port_number(text: str) -> int:
    """argparse type for a TCP port: 1 to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port {value} is out of range (1 to 65535)")
    return value


def seed_number(text: str) -> int:
    """argparse type for a random seed: what torch.manual_seed takes (0 to 2**63 - 1)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"{value} is out of range (0 to 2**63 - 1)")
    return value


def output_folder(path: str | Path, option: str) -> Path:
    """A folder the command writes into: it may not exist yet, but it must not be a file."""
    from slmforge.errors import InvalidInput

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InvalidInput(f"{option} {path}: is a file; expected a folder to write into")
    return path


def output_file(path: str | Path, option: str) -> Path:
    """A file the command writes: not a folder, and in a folder that exists."""
    from slmforge.errors import InvalidInput

    path = Path(path)
    if path.is_dir():
        raise InvalidInput(f"{option} {path}: is a folder; expected a file name")
    if not path.resolve().parent.is_dir():
        raise InvalidInput(f"{option} {path}: the folder {path.resolve().parent} does not exist")
    return path


def check_names(args: argparse.Namespace) -> None:
    """--name, --version and --registry follow Azure ML's asset rules, checked before any service call."""
    from slmforge.registry_rules import check_asset_name

    for option in ("name", "version", "registry"):
        value = getattr(args, option, None)
        if value is not None:
            check_asset_name(value, f"--{option}")

