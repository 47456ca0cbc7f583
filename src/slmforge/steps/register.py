"""Step `register`: a new version of a named model in an MLflow model registry, alias `current`.

Locally the registry is MLflow on SQLite (registry/mlflow_store.py); a recipe may name another with
`register.tracking_uri`. Tags (registry/rules.py, the same scheme as on Azure ML): the recipe and
model digests, the slmforge version, the evaluation metrics. (On Azure ML the pipeline's named
output is registered with the SDK instead: backends/aml/models.py.)
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slmforge import __version__
from slmforge.contract import folders, manifest
from slmforge.contract.params import StepParams, make, param
from slmforge.contract.step import StepSpec
from slmforge.errors import InvalidInput
from slmforge.registry.mlflow_store import (
    ALIAS,
    REGISTRATION_FILE,
    check_writable,
    register_version,
    registration_present,
)
from slmforge.registry.rules import check_asset_name, default_tracking_uri, version_tags
from slmforge.steps._cli import run_step


@dataclass(kw_only=True)
class Params(StepParams):
    """Register model

    Register the final model as a new version of a named model with its metrics and the recipe digest as
    tags (a local MLflow registry, or the tracking URI the job is given).
    """

    model: str = param(asset="custom_model", help="the model folder to register")
    metrics: str | None = param(None, asset="uri_folder", help="evaluate output whose metrics become tags")
    name: str = param(help="registered model name")
    format: str = param("custom_model", choices=("custom_model", "mlflow_model"), help="how the model is stored")
    recipe_digest: str = param("unknown", help="digest of the recipe, a tag of the version")
    tracking_uri: str | None = param(None, help="MLflow registry (default ~/.slmforge/registry.db)")
    registration: str = param(asset="uri_folder", output=True, help="folder to write registration.json to")


def _local_params(recipe: Any) -> dict[str, Any]:
    """On this machine the registry is the recipe's `register.tracking_uri`, else the local default."""
    return {"tracking_uri": recipe.register_.tracking_uri or default_tracking_uri()}


def _preflight(params: dict[str, Any], where: str) -> None:
    """Refuse a registry the run could not write to before any step runs."""
    check_writable(params["tracking_uri"], where)


def _still_valid(outputs: dict[str, Path]) -> bool:
    """A cached registration is only good while the version it made is still in its registry."""
    return registration_present(outputs["registration"])


SPEC = StepSpec("register", Params, version="1", record="registration", local_only=True,
                local_params=_local_params, preflight=_preflight, still_valid=_still_valid)


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
    tags = version_tags(folders.read_metrics(metrics) if metrics else None, recipe_digest=recipe_digest, model_digest=str(found.get("outputs_digest")),
                        version=__version__, format=format, source_step=str(found.get("step", "")))
    version = register_version(uri, model, name, tags)
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


def main(argv: list[str] | None = None) -> int:
    return run_step("register", Params, argv, lambda values: run(**values), __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
