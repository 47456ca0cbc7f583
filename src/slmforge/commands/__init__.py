"""The CLI commands: one module each, with `add_arguments(parser)` and `run(args) -> int`."""

import argparse
import functools
import re
from pathlib import Path


def int_range(low: int, high: int | None = None, *, noun: str = "", shown: str = ""):
    """An argparse type for a whole number in [low, high] (`high` None: no upper bound).

    `noun` names the value in messages ("port"); `shown` spells the range ("0 to 2**63 - 1")."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'a ' + noun + ' number' if noun else 'a whole number'}, "
                                             f"got {text!r}") from None
        if high is None and value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        if high is not None and not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{noun + ' ' if noun else ''}{value} is out of range "
                                             f"({shown or f'{low} to {high}'})")
        return value

    return parse


positive_int = int_range(1)  # counts
port_number = int_range(1, 65535, noun="port")  # a TCP port
seed_number = int_range(0, 2**63 - 1, shown="0 to 2**63 - 1")  # what torch.manual_seed takes


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


def model_argument(value: str) -> tuple[str, str | None, str | None]:
    """--model of predict, chat and evaluate: (model folder, adapter folder or None, label or None). A folder as
    given; a models:/ URI (registry/model_uri.py) as the registered version's folder, read from the registry
    here (registry/rules.py tracking_uri_here); a registered adapter as its base folder and its own."""
    from slmforge.registry.model_uri import is_model_uri, resolve

    if not is_model_uri(value):
        return value, None, None
    from slmforge.registry.rules import tracking_uri_here

    found = resolve(value, tracking_uri_here())
    label = f"{found.name}-v{found.version}"
    return (str(found.base), str(found.path), label) if found.base else (str(found.path), None, label)


def check_names(args: argparse.Namespace) -> None:
    """--name, --version and --registry follow Azure ML's asset rules, checked before any service call."""
    from slmforge.registry.rules import check_asset_name

    for option in ("name", "version", "registry"):
        value = getattr(args, option, None)
        if value is not None:
            check_asset_name(value, f"--{option}")
    experiment = getattr(args, "experiment", None)
    if experiment is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,254}", experiment):
        from slmforge.errors import InvalidInput

        raise InvalidInput(f"--experiment {experiment!r}: Azure ML experiment names take letters, digits, '_' and "
                           "'-', starting with a letter or digit, at most 255 characters")



def service_command(run):
    """A command's `run(args)` that talks to Azure ML: a service failure is one line, not a traceback."""
    @functools.wraps(run)
    def guarded(args: argparse.Namespace) -> int:
        from slmforge.backends.aml.workspace import service_errors

        with service_errors():
            return run(args)

    return guarded
