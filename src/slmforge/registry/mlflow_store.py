"""The local model registry: MLflow on SQLite (or any tracking URI MLflow knows), read and written here only.

The default store is `$SLMFORGE_HOME/registry.db` (registry/rules.py), one place that `slmforge
models` finds from any folder. MLflow reserves the alias name `latest` (`models:/<name>/latest` is
built in and always means the newest version), so the version just registered gets the alias
`current`; `slmforge models` marks the newest version `latest` too. The model folder is copied into
the registry's artifact store (`<registry folder>/artifacts`), so a registered version stays usable
after `slmforge cache clean`.

MLflow 3 (docs/pitfalls.md): `mlflow.register_model("runs:/...")` fails after `log_artifacts`;
`MlflowClient().create_model_version(source=...)` works.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterator

from slmforge.contract import manifest
from slmforge.errors import InvalidInput, StepFailed
from slmforge.registry.rules import MODEL_DIGEST_TAG, RECIPE_DIGEST_TAG

EXPERIMENT = "slmforge-models"
ALIAS = "current"  # MLflow reserves "latest" (see above)
BUILTIN_LATEST = "latest"
REGISTRATION_FILE = "registration.json"


def sqlite_path(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def check_writable(uri: str, what: str) -> None:
    """Before a run that registers: InvalidInput when its SQLite registry cannot be written (else
    a read-only SLMFORGE_HOME showed only at the register step, after the whole run)."""
    import tempfile

    db = sqlite_path(uri)
    if db is None:
        return
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=db.parent):
            pass
        if db.exists():
            with open(db, "r+b"):
                pass
    except OSError as e:
        raise InvalidInput(f"{what}: the model registry {db} cannot be written ({(e.strerror or str(e)).lower()}); "
                           "point SLMFORGE_HOME or register.tracking_uri at a writable place") from None


def client_for(uri: str):
    """An MlflowClient on `uri`, offline, without telemetry and without MLflow's INFO lines on stderr."""
    import logging

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    from mlflow import MlflowClient

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    db = sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@contextlib.contextmanager
def registry_errors(uri: str) -> Iterator[None]:
    """An unusable registry (unknown URI scheme, a locked, broken or half-made database) is one line naming it."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking.registry import UnsupportedModelRegistryStoreURIException
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except UnsupportedModelRegistryStoreURIException:
        raise InvalidInput(f"tracking URI '{uri}': not a model registry MLflow knows (use sqlite:///PATH, "
                           "a folder, or http(s)://HOST)") from None
    except (SQLAlchemyError, MlflowException, sqlite3.Error) as e:
        first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        raise StepFailed(f"the model registry {uri} cannot be used: {first[:300]}") from None


def experiment_id(client, uri: str, name: str = EXPERIMENT) -> str:
    """The id of experiment `name`, made on first use (a SQLite store keeps its artifacts beside the database)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    db = sqlite_path(uri)
    location = (db.parent / "artifacts").resolve().as_uri() if db is not None else None
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # another run created it meanwhile
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def register_version(uri: str, model: Path, name: str, tags: dict[str, str],
                     same: tuple[str, ...] = (MODEL_DIGEST_TAG, RECIPE_DIGEST_TAG)):
    """The version of `name` holding `model`, alias `current`: an existing one whose `same` tags equal
    `tags`' (this very model from this very recipe), else a new one. Idempotent: a run killed after
    creating the version (before the alias or the registration file) left that version behind, and
    registering again reuses it. A shared base matches on its model digest alone: every recipe
    fine-tuning that model reuses its one version. Returns (the version, whether it was reused)."""
    with registry_errors(uri):
        client = client_for(uri)
        reused = _same_version(client, name, tags, same)
        version = reused or _new_version(client, uri, model, name, tags)
        client.set_registered_model_alias(name, ALIAS, version.version)
    return version, reused is not None


def _same_version(client, name: str, tags: dict[str, str], same: tuple[str, ...]):
    """The newest version of `name` whose `same` tags equal `tags`', if its files are there."""
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name='{name}'", max_results=1000)
    except MlflowException:
        return None
    for v in sorted(versions, key=lambda v: int(v.version), reverse=True):
        mine = (v.tags or {})
        if all(mine.get(k) == tags.get(k) for k in same) and _source_present(v.source):
            return v
    return None


def _source_present(source: str) -> bool:
    path = Path(source.removeprefix("file://")) if source.startswith(("file://", "/")) else None
    return path is None or (path / manifest.MANIFEST).is_file()


def _new_version(client, uri: str, model: Path, name: str, tags: dict[str, str]):
    from mlflow.exceptions import MlflowException

    run_ = client.create_run(experiment_id(client, uri), tags={"mlflow.runName": f"register-{name}", **tags})
    try:
        client.log_artifacts(run_.info.run_id, str(model), "model")
    except Exception as e:
        client.set_terminated(run_.info.run_id, "FAILED")
        raise StepFailed(f"copying {model} into the registry's artifact store failed: {e}") from e
    client.set_terminated(run_.info.run_id, "FINISHED")
    try:
        client.create_registered_model(name)
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":  # another run registered the name meanwhile: fine
            raise
    return client.create_model_version(name, source=f"{run_.info.artifact_uri}/model", run_id=run_.info.run_id,
                                       tags=tags)


def registration_present(registration: Path) -> bool:
    """True while the version a registration folder names is still in its registry, with its files.

    A cached register step is trusted only then: a deleted version or a truncated registry.db
    must register again, or the run would report a version the registry no longer has. Read with sqlite3,
    read-only: no MLflow import, no writes."""
    try:
        info = json.loads((registration / REGISTRATION_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    db = sqlite_path(info.get("tracking_uri", ""))
    if db is None:
        return True  # a remote tracking server: trust it
    if not db.is_file():
        return False
    try:
        with contextlib.closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)) as conn:
            # MLflow's registry table; a deleted version keeps its row, marked Deleted_Internal.
            row = conn.execute("SELECT source FROM model_versions WHERE name = ? AND version = ? "
                               "AND current_stage != 'Deleted_Internal'",
                               (info.get("name"), int(info.get("version", 0)))).fetchone()
    except (sqlite3.Error, ValueError):
        return False
    return row is not None and _source_present(row[0])


def list_models(uri: str) -> list[dict[str, Any]]:
    """Every registered model with its versions (newest first) and aliases."""
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        return []
    with registry_errors(uri):
        return _list_models(client_for(uri))


def _list_models(client) -> list[dict[str, Any]]:
    out = []
    for rm in client.search_registered_models(max_results=1000):
        aliases_by_version: dict[str, list[str]] = {}
        for alias, version in (rm.aliases or {}).items():
            aliases_by_version.setdefault(str(version), []).append(alias)
        versions = client.search_model_versions(f"name='{rm.name}'", max_results=1000)
        if versions:
            newest = str(max(int(v.version) for v in versions))
            aliases_by_version.setdefault(newest, []).append(BUILTIN_LATEST)
        out.append({
            "name": rm.name,
            "versions": [{"version": str(v.version), "aliases": sorted(aliases_by_version.get(str(v.version), [])),
                          "source": v.source, "tags": dict(v.tags or {}),
                          "created": time.strftime("%Y-%m-%d %H:%M", time.localtime(v.creation_timestamp / 1000))}
                         for v in sorted(versions, key=lambda v: int(v.version), reverse=True)],
        })
    return sorted(out, key=lambda m: m["name"])


