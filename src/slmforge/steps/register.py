"""Step `register`: a new version of a named model in an MLflow model registry, alias `current`.

Locally the registry is MLflow on SQLite (registry/mlflow_store.py); a recipe may name another with
`register.tracking_uri`. Tags (registry/rules.py, the same scheme as on Azure ML): the recipe and
model digests, the slmforge version, the evaluation metrics. (On Azure ML the pipeline's named
output is registered with the SDK instead: backends/aml/models.py.)

With an `adapter` (the export_adapter step's folder), `model` is the shared base it plugs into, and
each is its own registered model: the base as `base_name`, reusing the version that already holds
the same base (its model digest), so every recipe fine-tuning that model adds an adapter, not a base;
the adapter as `name`, tagged with its base's name, version and digest, its metrics from
`adapter_metrics` (the evaluation of base + adapter).
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
from slmforge.registry.rules import (
    BASE_DIGEST_TAG,
    BASE_NAME_TAG,
    BASE_VERSION_TAG,
    KIND_TAG,
    MODEL_DIGEST_TAG,
    check_asset_name,
    default_base_name,
    default_tracking_uri,
    recipe_tracking_uri,
    version_tags,
)
from slmforge.steps._cli import run_step


@dataclass(kw_only=True)
class Params(StepParams):
    """Register model

    Register the final model as a new version of a named model with its metrics and the recipe digest as
    tags (a local MLflow registry, or the tracking URI the job is given).
    """

    model: str = param(asset="custom_model", help="the model folder to register (with an adapter: its base)")
    metrics: str | None = param(None, asset="uri_folder", help="evaluate output whose metrics become tags")
    adapter: str | None = param(None, asset="uri_folder", help=(
        "export_adapter output: register the adapter as its own model `name`, on the base `model` registered "
        "as `base_name`"))
    adapter_metrics: str | None = param(None, asset="uri_folder",
                                        help="evaluate output of base + adapter whose metrics become the adapter's tags")
    name: str = param(help="registered model name (with an adapter: the adapter's)")
    base_name: str | None = param(None, help=(
        "with an adapter: the base's registered name (default: the source model's name, -<precision>-base)"))
    format: str = param("custom_model", choices=("custom_model", "mlflow_model"), help="how the model is stored")
    recipe_digest: str = param("unknown", help="digest of the recipe, a tag of the version")
    tracking_uri: str | None = param(None, help="MLflow registry (default ~/.slmforge/registry.db)")
    registration: str = param(asset="uri_folder", output=True, help="folder to write registration.json to")


def _local_params(loaded: Any) -> dict[str, Any]:
    """On this machine the registry is the recipe's (registry/rules.py recipe_tracking_uri: `register.tracking_uri`,
    the project's with `register.local_registry: project`, else the user's)."""
    return {"tracking_uri": recipe_tracking_uri(loaded.recipe.register_, loaded.base_dir)}


def _preflight(params: dict[str, Any], where: str) -> None:
    """Refuse a registry the run could not write to before any step runs."""
    check_writable(params["tracking_uri"], where)


def _still_valid(outputs: dict[str, Path]) -> bool:
    """A cached registration is only good while the version it made is still in its registry."""
    return registration_present(outputs["registration"])


SPEC = StepSpec("register", Params, version="2", record="registration", local_only=True,
                local_params=_local_params, preflight=_preflight, still_valid=_still_valid)


def run(**given) -> dict[str, Any]:
    """Register the model (`given`: Params' names); return what registration.json records."""
    started = time.monotonic()
    p = make(Params, given)
    name, format, recipe_digest, registration = p.name, p.format, p.recipe_digest, p.registration  # noqa: A001
    metrics = Path(p.metrics) if p.metrics else None
    adapter_metrics = Path(p.adapter_metrics) if p.adapter_metrics else None
    check_asset_name(name)  # the rule Azure ML applies, so the name also works in a workspace
    if p.base_name:
        check_asset_name(p.base_name, "base model name")
    if (p.adapter_metrics or p.base_name) and not p.adapter:
        raise InvalidInput("--adapter_metrics and --base_name describe an adapter: give --adapter too")
    model = _finished(Path(p.model), "model")
    adapter = _finished(Path(p.adapter), "adapter") if p.adapter else None
    uri = p.tracking_uri or default_tracking_uri()
    found = manifest.read_manifest(model) or {}
    origin = {"version": __version__, "format": format, "source_step": str(found.get("step", ""))}
    base = None
    if adapter is not None:
        base_name, base_tags = _base_tags(model, found, p.base_name, folders.read_metrics(metrics) if metrics else None,
                                          origin)
        version, base_reused = register_version(uri, model, base_name, base_tags, same=(MODEL_DIGEST_TAG, KIND_TAG))
        base = {"name": base_name, "version": str(version.version), "source": version.source, "tags": base_tags,
                "reused": base_reused}
        print(f"{_done(base_reused)} base {base_name} version {version.version} (alias {ALIAS}) in {uri}")
        tags = _adapter_tags(adapter, model, base, recipe_digest, origin,
                             folders.read_metrics(adapter_metrics) if adapter_metrics else None)
        version, reused = register_version(uri, adapter, name, tags)
    else:
        tags = version_tags(folders.read_metrics(metrics) if metrics else None, recipe_digest=recipe_digest,
                            model_digest=str(found.get("outputs_digest")), **origin)
        version, reused = register_version(uri, model, name, tags)
    # reused: an earlier registration of this very model (same digests) is the version; none was made.
    info = {"name": name, "version": str(version.version), "alias": ALIAS, "tracking_uri": uri,
            "source": version.source, "run_id": version.run_id, "tags": tags, "reused": reused}
    if base is not None:
        info["base"] = base
    with manifest.atomic_output(registration) as tmp:
        (tmp / REGISTRATION_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        manifest.write_manifest(tmp, step="register", params={"name": name, "format": format,
                                                             "recipe_digest": recipe_digest, "tracking_uri": uri,
                                                             "base_name": base["name"] if base else None},
                                inputs={"model": model, "metrics": metrics, "adapter": adapter,
                                        "adapter_metrics": adapter_metrics},
                                metrics={"name": name, "version": str(version.version), "reused": reused,
                                         **({"base": {k: base[k] for k in ("name", "version")}} if base else {})},
                                seconds=time.monotonic() - started, libraries=("mlflow",))
    print(f"{_done(reused)} {'adapter ' if base else ''}{name} version {version.version} (alias {ALIAS}) in {uri}")
    return info


def _done(reused: bool) -> str:
    return "reused (same model)" if reused else "registered"


def _finished(folder: Path, what: str) -> Path:
    if not folder.is_dir():
        raise InvalidInput(f"{folder}: {what} folder not found")
    if not manifest.is_finished(folder):
        raise InvalidInput(f"{folder}: not a finished {what} folder (no valid {manifest.MANIFEST})")
    return folder


def _base_tags(model: Path, found: dict[str, Any], base_name: str | None, metrics: dict[str, Any] | None,
               origin: dict[str, str]) -> tuple[str, dict[str, str]]:
    """The shared base's registered name and tags. No recipe digest: the base is every recipe's on that model."""
    from slmforge.models.adapter_slots import require_slots

    slots = require_slots(model)  # an adapter plugs only into a base built with adapter slots
    params = found.get("params") or {}
    if not base_name:
        source = params.get("model_id") or ((found.get("inputs") or {}).get("model") or {}).get("path") or model.name
        base_name = default_base_name(str(source), str(params.get("precision") or "onnx"))
    tags = version_tags(metrics, model_digest=str(found.get("outputs_digest")), kind="base", **origin)
    tags[BASE_DIGEST_TAG] = slots.digest
    return base_name, tags


def _adapter_tags(adapter: Path, model: Path, base: dict[str, Any], recipe_digest: str, origin: dict[str, str],
                  metrics: dict[str, Any] | None) -> dict[str, str]:
    """The adapter's tags: its own digest and metrics, and its base's name, version and digest (from its sidecar,
    checked against the base folder first: an adapter is never registered on a base it does not fit)."""
    from slmforge.models import onnx_adapter

    file = onnx_adapter.open_file(adapter)
    onnx_adapter.check_fits(file, model)
    found = manifest.read_manifest(adapter) or {}
    tags = version_tags(metrics, recipe_digest=recipe_digest, model_digest=str(found.get("outputs_digest")),
                        kind="adapter", **{**origin, "format": "custom_model", "source_step": str(found.get("step", ""))})
    tags.update({BASE_NAME_TAG: base["name"], BASE_VERSION_TAG: base["version"],
                 BASE_DIGEST_TAG: str((file.meta.get("base") or {}).get("digest") or base["tags"][BASE_DIGEST_TAG])})
    return tags


def main(argv: list[str] | None = None) -> int:
    return run_step("register", Params, argv, lambda values: run(**values), __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
