"""Step `register`: a new version of a named model in an MLflow model registry, alias `latest`.

Locally the registry is MLflow on SQLite. The default store is `~/.slmforge/registry.db`
(`$SLMFORGE_HOME/registry.db` when set), one place that `slmforge models` finds from any folder;
a recipe may name another with `register.tracking_uri`. MLflow reserves the alias name `latest`
(`models:/<name>/latest` is built in and always means the newest version), so the version just
registered gets the alias `current`; `slmforge models` marks the newest version `latest` too.
The model folder is copied into the
registry's artifact store (`<registry folder>/artifacts`), so a registered version stays usable
after `slmforge cache clean`. Tags: the recipe digest, the evaluation metrics, the slmforge version.
(On Azure ML the pipeline's named output is registered with the SDK instead: backends/aml*.py.)

MLflow 3 notes (NOTES.md): `mlflow.register_model("runs:/...")` fails after `log_artifacts`;
`MlflowClient().create_model_version(source=...)` works.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from slmforge import __version__, manifest
from slmforge.errors import InvalidInput, StepFailed
from slmforge.registry_rules import check_asset_name, default_tracking_uri
from slmforge.params import make, param
from slmforge.steps._cli import run_step

EXPERIMENT = "slmforge-models"
ALIAS = "current"  # MLflow reserves "latest" (see above)
BUILTIN_LATEST = "latest"
REGISTRATION_FILE = "registration.json"


def sqlite_path(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


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


def _experiment_id(client, uri: str) -> str:
    found = client.get_experiment_by_name(EXPERIMENT)
    if found is not None:
        return found.experiment_id
    db = sqlite_path(uri)
    location = (db.parent / "artifacts").resolve().as_uri() if db is not None else None
    try:
        return client.create_experiment(EXPERIMENT, artifact_location=location)
    except Exception:  # another run created it meanwhile
        found = client.get_experiment_by_name(EXPERIMENT)
        if found is None:
            raise
        return found.experiment_id


def _metric_tags(metrics_dir: Path | None) -> dict[str, str]:
    if metrics_dir is None:
        return {}
    path = metrics_dir / "metrics.json"
    if not path.is_file():
        raise InvalidInput(f"{metrics_dir}: no metrics.json (expected the output of an evaluate step)")
    data = json.loads(path.read_text(encoding="utf-8"))
    return {f"metric.{k}": str(v) for k, v in data.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}


@dataclass(kw_only=True)
class Params:
    """The register step's parameters: `components/register.yml`'s inputs and outputs."""

    model: str = param(asset="custom_model", help="the model folder to register")
    metrics: str | None = param(None, asset="uri_folder", help="evaluate output whose metrics become tags")
    name: str = param(help="registered model name")
    format: str = param("custom_model", choices=("custom_model", "mlflow_model"), help="how the model is stored")
    recipe_digest: str = param("unknown", help="digest of the recipe, a tag of the version")
    tracking_uri: str | None = param(None, help="MLflow registry (default ~/.slmforge/registry.db)")
    registration: str = param(asset="uri_folder", output=True, help="folder to write registration.json to")


def run(**given) -> dict[str, Any]:
    """Register the model (`given`: Params' names); return what registration.json records."""
    started = time.monotonic()
    p = make(Params, given)
    name, format, recipe_digest, registration = p.name, p.format, p.recipe_digest, p.registration  # noqa: A001
    metrics = Path(p.metrics) if p.metrics else None
    check_asset_name(name)  # the rule Azure ML applies, so the name also works in a workspace
    model = Path(p.model)
    if not model.is_dir():
        raise InvalidInput(f"{model}: model folder not found")
    if not manifest.is_finished(model):
        raise InvalidInput(f"{model}: not a finished model folder (no valid {manifest.MANIFEST})")
    uri = p.tracking_uri or default_tracking_uri()
    found = manifest.read_manifest(model) or {}
    tags = {"recipe_digest": recipe_digest, "model_digest": str(found.get("outputs_digest")),
            "slmforge_version": __version__, "format": format, "source_step": str(found.get("step", "")),
            **_metric_tags(metrics)}
    with registry_errors(uri):
        client = client_for(uri)
        # Idempotent: a run killed after creating the version (before the alias or the registration
        # file) left that version behind; registering the same model from the same recipe reuses it.
        version = _same_version(client, name, tags) or _new_version(client, uri, model, name, tags)
        client.set_registered_model_alias(name, ALIAS, version.version)
    info = {"name": name, "version": str(version.version), "alias": ALIAS, "tracking_uri": uri,
            "source": version.source, "run_id": version.run_id, "tags": tags}
    with manifest.atomic_output(registration) as tmp:
        (tmp / REGISTRATION_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        manifest.write_manifest(tmp, step="register", params={"name": name, "format": format,
                                                             "recipe_digest": recipe_digest, "tracking_uri": uri},
                                inputs={"model": model, "metrics": metrics},
                                metrics={"name": name, "version": str(version.version)},
                                seconds=time.monotonic() - started, libraries=("mlflow",))
    print(f"registered {name} version {version.version} (alias {ALIAS}) in {uri}")
    return info


def _same_version(client, name: str, tags: dict[str, str]):
    """The version of `name` registering this very model (digest) from this recipe, if its files are there."""
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name='{name}'", max_results=1000)
    except MlflowException:
        return None
    for v in sorted(versions, key=lambda v: int(v.version), reverse=True):
        mine = (v.tags or {})
        if all(mine.get(k) == tags[k] for k in ("model_digest", "recipe_digest")) and _source_present(v.source):
            return v
    return None


def _source_present(source: str) -> bool:
    path = Path(source.removeprefix("file://")) if source.startswith(("file://", "/")) else None
    return path is None or (path / manifest.MANIFEST).is_file()


def _new_version(client, uri: str, model: Path, name: str, tags: dict[str, str]):
    from mlflow.exceptions import MlflowException

    run_ = client.create_run(_experiment_id(client, uri), tags={"mlflow.runName": f"register-{name}", **tags})
    try:
        client.log_artifacts(run_.info.run_id, str(model), "model")
    except Exception as e:
        client.set_terminated(run_.info.run_id, "FAILED")
        raise StepFailed(f"copying {model} into the registry's artifact store failed: {e}") from e
    client.set_terminated(run_.info.run_id, "FINISHED")
    try:
        client.create_registered_model(name)
    except MlflowException as e:
        if "already exists" not in str(e).lower() and "RESOURCE_ALREADY_EXISTS" not in str(e):
            raise
    return client.create_model_version(name, source=f"{run_.info.artifact_uri}/model", run_id=run_.info.run_id,
                                       tags=tags)


def registration_present(registration: Path) -> bool:
    """True while the version a registration folder names is still in its registry, with its files.

    A cached register step is trusted only then: a deleted version or a truncated registry.db
    must register again (issue 11 #5). Read with sqlite3, read-only: no MLflow import, no writes."""
    import sqlite3

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


def main(argv: list[str] | None = None) -> int:
    return run_step("register", Params, argv, lambda values: run(**values), __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
