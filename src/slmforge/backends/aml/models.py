"""Register a pipeline job's final model in the workspace (or share it into a registry); list models.

The compiled pipeline names and versions its final output (`name:version` in the job's tags), so
the model is registered from the job output URI — no download and re-upload. Tags carry the recipe
digest and the final model's evaluation metrics (the pipeline's `metrics` output, when it has one).
A separate adapter and its shared base are two models, tagged as the local registry tags them
(registry/rules.py): the adapter names its base's name, version and digest.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slmforge.backends.aml.jobs import get_job, job_metrics, status_text
from slmforge.backends.aml.pipeline import ADAPTER_METRICS_OUTPUT, ADAPTER_OUTPUT, BASE_NAME_JOB_TAG, FINAL_OUTPUT
from slmforge.backends.aml.workspace import as_step_failed, resolve_ml_client, service_errors
from slmforge.errors import InvalidInput, StepFailed
from slmforge.registry.rules import (
    BASE_DIGEST_TAG,
    BASE_NAME_TAG,
    BASE_VERSION_TAG,
    KIND_TAG,
    RECIPE_DIGEST_TAG,
    version_tags,
)

if TYPE_CHECKING:
    from azure.ai.ml import MLClient
    from azure.ai.ml.entities import Job, Model

def model_tags(job_name: str, job_tags: dict[str, str], metrics: dict[str, Any] | None) -> dict[str, str]:
    return version_tags(metrics, job=job_name, recipe_digest=job_tags.get(RECIPE_DIGEST_TAG) or None)


def register_job_model(ml_client: "MLClient", job_name: str, *, name: str | None = None,
                       version: str | None = None, model_format: str | None = None,
                       registry: str | None = None, registry_client: "MLClient | None" = None) -> list["Model"]:
    """Register `azureml://jobs/<job>/outputs/model` as name:version (defaults from the job's tags).

    A job with an `adapter` output (a separate adapter on a shared base) registers two models: the base
    (its name from the job's tags, its version the first 12 hex digits of its digest, so a version that
    already holds that base is reused, never made again) and the adapter as name:version, tagged with the
    base's name, version and digest. Returns what was registered, the recipe's model last. `registry_client`
    (an MLClient on `registry`) lets a base already shared into the registry be reused there too."""
    job = get_job(ml_client, job_name)
    if status_text(job.status) != "Completed":
        raise StepFailed(f"job {job_name} is {status_text(job.status)}; only a completed job's model can be registered")
    tags = dict(job.tags or {})
    default_name, _, default_version = tags.get("slmforge.model", "").partition(":")
    name, version = name or default_name, version or default_version
    if not name or not version:
        raise InvalidInput(f"job {job_name} was not submitted by slmforge (no slmforge.model tag): pass --name and --version")
    model_format = model_format or tags.get("slmforge.register_format") or "custom_model"
    if ADAPTER_OUTPUT not in (job.outputs or {}):
        return [_register_output(ml_client, job_name, FINAL_OUTPUT, name, version, model_format,
                                 model_tags(job_name, tags, job_metrics(ml_client, job)), registry)]
    base_digest = _adapter_base_digest(ml_client, job)
    base_name, base_version = tags.get(BASE_NAME_JOB_TAG) or f"{name}-base", base_digest[:12]
    base_tags = version_tags(job_metrics(ml_client, job), job=job_name, kind="base")
    base_tags[BASE_DIGEST_TAG] = base_digest
    base = _reuse_base(ml_client, base_name, base_version, base_digest, registry, registry_client)
    if base is None:
        base = _register_output(ml_client, job_name, FINAL_OUTPUT, base_name, base_version, model_format, base_tags,
                                registry, reuse_digest=base_digest)
    adapter_tags = model_tags(job_name, tags, job_metrics(ml_client, job, ADAPTER_METRICS_OUTPUT))
    adapter_tags.update({KIND_TAG: "adapter", BASE_NAME_TAG: base_name, BASE_VERSION_TAG: base_version,
                         BASE_DIGEST_TAG: base_digest})
    return [base, _register_output(ml_client, job_name, ADAPTER_OUTPUT, name, version, "custom_model", adapter_tags,
                                   registry)]


def _register_output(ml_client: "MLClient", job_name: str, output: str, name: str, version: str, model_format: str,
                     tags: dict[str, str], registry: str | None, reuse_digest: str | None = None) -> "Model":
    """The job's `output` as model name:version in the workspace (and shared into `registry`)."""
    from azure.ai.ml.entities import Model

    model = Model(name=name, version=version, type=model_format,
                  path=f"azureml://jobs/{job_name}/outputs/{output}",
                  description=f"{output} output of Azure ML job {job_name}", tags=tags)
    existing = _existing(ml_client, name, version)
    if existing is not None and reuse_digest is not None \
            and (existing.tags or {}).get(BASE_DIGEST_TAG) == reuse_digest:
        registered = existing  # this very base, registered from another job: shared, not made again
    else:
        if existing is not None and (existing.tags or {}).get("slmforge.job") not in (None, job_name) \
                and getattr(existing, "job_name", None) != job_name:
            raise StepFailed(f"model {name}:{version} already exists from job {existing.tags.get('slmforge.job')}; "
                             "register with another --version")
        try:
            registered = ml_client.models.create_or_update(model)
        except (InvalidInput, StepFailed):
            raise
        except Exception as e:  # noqa: BLE001 - one line for the user
            raise as_step_failed(e, f"registering {name}:{version} from job {job_name} failed") from None
    if registry:
        try:
            registered = ml_client.models.share(name, version, share_with_name=name, share_with_version=version,
                                                registry_name=registry)
        except (InvalidInput, StepFailed):
            raise
        except Exception as e:  # noqa: BLE001
            raise as_step_failed(e, f"sharing {name}:{version} into registry {registry} failed") from None
    return registered


def _reuse_base(ml_client: "MLClient", name: str, version: str, digest: str, registry: str | None,
                registry_client: "MLClient | None") -> "Model | None":
    """The base already registered where this registration goes (the registry when sharing into one), or None."""
    where = registry_client if registry else ml_client
    if where is None:
        return None
    found = _existing(where, name, version)
    return found if found is not None and (found.tags or {}).get(BASE_DIGEST_TAG) == digest else None


def _adapter_base_digest(ml_client: "MLClient", job: "Job") -> str:
    """The base digest the job's adapter was made for (its sidecar; the adapter output is small)."""
    from slmforge.backends.aml.jobs import downloaded_output
    from slmforge.models import onnx_adapter

    with tempfile.TemporaryDirectory(prefix="slmforge-adapter-") as tmp:
        ml_client.jobs.download(job.name, download_path=tmp, output_name=ADAPTER_OUTPUT)
        file = onnx_adapter.find(downloaded_output(Path(tmp), ADAPTER_OUTPUT))
        try:
            meta = json.loads(onnx_adapter.sidecar(file).read_text(encoding="utf-8"))
            return str(meta["base"]["digest"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise StepFailed(f"job {job.name}: its adapter {file.name} has no readable base digest in its sidecar "
                             f"({e})") from None


def _existing(ml_client: "MLClient", name: str, version: str) -> "Model | None":
    from azure.core.exceptions import ResourceNotFoundError

    try:
        return ml_client.models.get(name, version=version)
    except ResourceNotFoundError:
        return None


def list_workspace_models(workspace_file: str | Path | None = None, *, registry: str | None = None,
                          name: str | None = None) -> list[dict[str, Any]]:
    """Every version of every model in the workspace (or a registry), newest name first.

    Each entry: {"name", "version", "type", "path", "created", "tags"}. For `slmforge models --workspace`.
    """
    with service_errors():
        return _list_models(workspace_file, registry, name)


def _list_models(workspace_file: str | Path | None, registry: str | None, name: str | None) -> list[dict[str, Any]]:
    ml_client = resolve_ml_client(workspace_file, registry_name=registry)

    names = [name] if name else [m.name for m in ml_client.models.list()]
    rows = []
    for model_name in names:
        for m in ml_client.models.list(name=model_name):
            created = getattr(getattr(m, "creation_context", None), "created_at", None)
            rows.append({"name": m.name, "version": str(m.version), "type": m.type, "path": str(m.path or ""),
                         "created": created.isoformat() if created else None, "tags": dict(m.tags or {})})
    return rows
