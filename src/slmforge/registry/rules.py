"""What a model registry accepts, how a version is tagged, and where the local one lives.

Names and versions follow Azure ML's asset rules, so a model registered locally can be registered
in a workspace under the same name: letters, digits, `-`, `_` and `.`, starting with a letter or
digit, at most 255 characters (so never a path separator). The local registry (MLflow on SQLite)
is `$SLMFORGE_HOME/registry.db`, SLMFORGE_HOME defaulting to ~/.slmforge, one per user; a recipe with
`register.local_registry: project` keeps its own in `<recipe folder>/.slmforge/registry/`, which the
CLI (`models`, `models:/` URIs) reads when run from that folder.

One tag scheme for both registries (local MLflow and Azure ML): `slmforge.*` for where a version
came from, `metrics.*` for its last evaluation: its figures (`metrics.accuracy`), and the recipe's
evaluator metrics under Olive's joint key `metrics.<metric>-<sub_type>` (`metrics.latency-avg`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from slmforge.errors import InvalidInput
from slmforge.resources import slmforge_home

ASSET_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$"
_ASSET_NAME = re.compile(ASSET_NAME_PATTERN)
DEFAULT_TRACKING_URI_TEXT = "sqlite:///$SLMFORGE_HOME/registry.db, SLMFORGE_HOME defaulting to ~/.slmforge"
HERE_TRACKING_URI_TEXT = ("./.slmforge/registry/registry.db when there (a project registry), else "
                          f"{DEFAULT_TRACKING_URI_TEXT}")


PROJECT_REGISTRY = Path(".slmforge") / "registry" / "registry.db"  # under the recipe's folder


def default_tracking_uri() -> str:
    return f"sqlite:///{slmforge_home() / 'registry.db'}"


def project_tracking_uri(folder: Path) -> str:
    """The project-local registry of a recipe in `folder` (`register.local_registry: project`)."""
    return f"sqlite:///{(folder / PROJECT_REGISTRY).resolve()}"


def recipe_tracking_uri(register: Any, folder: Path) -> str:
    """The local registry of a recipe in `folder` (its `register` block): `tracking_uri`, else the project
    registry with `local_registry: project`, else the user's."""
    if register.tracking_uri:
        return register.tracking_uri
    return project_tracking_uri(folder) if register.local_registry == "project" else default_tracking_uri()


def tracking_uri_here() -> str:
    """The registry the CLI reads when none is named: the current folder's project registry if one
    exists, else the user's."""
    project = Path.cwd() / PROJECT_REGISTRY
    return project_tracking_uri(Path.cwd()) if project.is_file() else default_tracking_uri()


def check_asset_name(value: str, what: str = "model name") -> str:
    """`value` if Azure ML (and so slmforge) accepts it as a model name or version, else InvalidInput."""
    if not isinstance(value, str) or not _ASSET_NAME.fullmatch(value):
        raise InvalidInput(f"{what} {value!r}: use letters, digits, '-', '_' and '.', starting with a letter or "
                           "digit, at most 255 characters")
    return value


METRIC_TAGS = ("label", "accuracy", "perplexity", "tokens_per_second", "size_bytes", "n", "model_kind")
RECIPE_DIGEST_TAG = "slmforge.recipe_digest"
MODEL_DIGEST_TAG = "slmforge.model_digest"
# An adapter (an .onnx_adapter served on a shared base) is its own model; these tags name its base.
# `slmforge models` lists an adapter under the base version they name.
KIND_TAG = "slmforge.kind"  # "base" (a base with adapter slots) or "adapter"; absent on a plain model
BASE_NAME_TAG, BASE_VERSION_TAG = "slmforge.base_name", "slmforge.base_version"
BASE_DIGEST_TAG = "slmforge.base_digest"  # the base graph's digest (adapter_slots.json), as the adapter's sidecar records it


def default_base_name(source: str, precision: str) -> str:
    """The registered name of a shared base when none is given: the source model's last path part
    (a hub id's name, a folder's name), `-<precision>-base`, in the characters a model name takes.
    The same for every recipe that fine-tunes that model and builds it at that precision, so their
    adapters share one base entry."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", source.rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1]).strip("-._")
    return check_asset_name(f"{stem or 'model'}-{precision}-base"[-255:].lstrip("-._"), "base model name")


def version_tags(metrics: dict[str, Any] | None, **origin: str | None) -> dict[str, str]:
    """A registered version's tags: `slmforge.<origin key>` for each given origin, `metrics.<key>` from metrics.json."""
    tags = {f"slmforge.{k}": str(v) for k, v in origin.items() if v is not None}
    tags.update({f"metrics.{k}": str(metrics[k]) for k in METRIC_TAGS if metrics and metrics.get(k) is not None})
    for metric in ((metrics or {}).get("evaluator") or {}).get("metrics", []):
        for sub in metric["sub_types"]:
            if sub.get("value") is not None:
                tags[f"metrics.{metric['name']}-{sub['name']}"] = str(sub["value"])
    return tags


def accuracy_tag(tags: dict[str, str] | None) -> str:
    return (tags or {}).get("metrics.accuracy", "-")
