"""A registered model by name: MLflow's model URIs `models:/NAME/VERSION` and `models:/NAME@ALIAS`, resolved
to the version's folder in the registry's own artifact store (the one place `predict`, `chat`, `evaluate`
and a recipe's `input_model.model_path` read them).

VERSION is a number or `latest` (MLflow's built-in: the newest version); ALIAS is one the registry holds
(slmforge sets `current` on every registration). A registered adapter (`slmforge.kind` adapter) resolves to
its folder and its base's, so it answers on that base. Anything unknown is one line naming what exists.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slmforge.errors import InvalidInput
from slmforge.registry.rules import BASE_NAME_TAG, BASE_VERSION_TAG, KIND_TAG

PREFIX = "models:/"
FORMS = "models:/NAME/VERSION or models:/NAME@ALIAS"
_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>[^/@]+)|@(?P<alias>[^/@]+))$")


@dataclass(frozen=True)
class Registered:
    """A resolved URI: the version's folder and, for an adapter, the base folder it answers on."""

    name: str
    version: str
    path: Path
    base: Path | None = None


def is_model_uri(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def parse(uri: str) -> tuple[str, str | None, str | None]:
    """(name, version or None, alias or None) of a models:/ URI; InvalidInput for any other shape."""
    found = _URI.match(uri)
    if found is None:
        raise InvalidInput(f"{uri}: not a registered model URI; use {FORMS}")
    return found["name"], found["version"], found["alias"]


def resolve(uri: str, tracking_uri: str) -> Registered:
    """The registered version `uri` names in the registry at `tracking_uri`, with its folder."""
    from slmforge.registry.mlflow_store import list_models

    name, version, alias = parse(uri)
    models = {m["name"]: m for m in list_models(tracking_uri)}
    model = models.get(name)
    if model is None or not model["versions"]:
        known = ", ".join(sorted(models)) or "none"
        raise InvalidInput(f"{uri}: no model {name!r} in the registry {tracking_uri} (registered: {known})")
    entry = _version(uri, model, version, alias, tracking_uri)
    base = None
    if entry["tags"].get(KIND_TAG) == "adapter":
        base_uri = f"{PREFIX}{entry['tags'].get(BASE_NAME_TAG)}/{entry['tags'].get(BASE_VERSION_TAG)}"
        base = resolve(base_uri, tracking_uri).path
    return Registered(name, entry["version"], _folder(uri, entry["source"]), base)


def _version(uri: str, model: dict[str, Any], version: str | None, alias: str | None,
             tracking_uri: str) -> dict[str, Any]:
    versions = model["versions"]  # newest first; `latest` is among the aliases (list_models)
    if alias is not None:
        found = next((v for v in versions if alias in v["aliases"]), None)
        if found is None:
            aliases = sorted({f"@{a} (v{v['version']})" for v in versions for a in v["aliases"]})
            raise InvalidInput(f"{uri}: {model['name']} has no alias {alias!r} in {tracking_uri}; its aliases: "
                               f"{', '.join(aliases) or 'none'}")
        return found
    if version == "latest":
        return versions[0]
    found = next((v for v in versions if v["version"] == version), None)
    if found is None:
        listed = ", ".join(v["version"] for v in reversed(versions))
        raise InvalidInput(f"{uri}: {model['name']} has no version {version!r} in {tracking_uri}; its versions: "
                           f"{listed} (or latest)")
    return found


def _folder(uri: str, source: str) -> Path:
    """The local folder of a version's source (a file URI or path in the registry's artifact store)."""
    from urllib.parse import unquote, urlparse

    path = Path(unquote(urlparse(source).path)) if source.startswith("file:") else Path(source)
    if ("://" in source and not source.startswith("file:")) or not path.is_dir():
        raise InvalidInput(f"{uri}: its files ({source}) are not a folder on this machine")
    return path
