"""What a model registry accepts, and where the local one lives unless told otherwise.

Names and versions follow Azure ML's asset rules, so a model registered locally can be registered
in a workspace under the same name: letters, digits, `-`, `_` and `.`, starting with a letter or
digit, at most 255 characters (so never a path separator). The local registry (MLflow on SQLite)
is `$SLMFORGE_HOME/registry.db`, SLMFORGE_HOME defaulting to ~/.slmforge.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from slmforge.errors import InvalidInput

ASSET_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$"
_ASSET_NAME = re.compile(ASSET_NAME_PATTERN)
DEFAULT_TRACKING_URI_TEXT = "sqlite:///$SLMFORGE_HOME/registry.db, SLMFORGE_HOME defaulting to ~/.slmforge"


def slmforge_home() -> Path:
    return Path(os.environ.get("SLMFORGE_HOME") or Path.home() / ".slmforge").expanduser()


def default_tracking_uri() -> str:
    return f"sqlite:///{slmforge_home() / 'registry.db'}"


def check_asset_name(value: str, what: str = "model name") -> str:
    """`value` if Azure ML (and so slmforge) accepts it as a model name or version, else InvalidInput."""
    if not isinstance(value, str) or not _ASSET_NAME.fullmatch(value):
        raise InvalidInput(f"{what} {value!r}: use letters, digits, '-', '_' and '.', starting with a letter or "
                           "digit, at most 255 characters")
    return value
