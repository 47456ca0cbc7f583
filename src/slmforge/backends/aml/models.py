"""Register a pipeline job's final model in the workspace (or share it into a registry); list models.

The compiled pipeline names and versions its final output (`name:version` in the job's tags), so
the model is registered from the job output URI — no download and re-upload. Tags carry the recipe
digest and the final model's evaluation metrics (the pipeline's `metrics` output, when it has one).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from slmforge.backends.aml.jobs import get_job, job_metrics, status_text
from slmforge.backends.aml.pipeline import FINAL_OUTPUT
from slmforge.backends.aml.workspace import as_step_failed, resolve_ml_client, service_errors
from slmforge.errors import InvalidInput, StepFailed
from slmforge.registry.rules import RECIPE_DIGEST_TAG, version_tags

if TYPE_CHECKING:
    from azure.ai.ml import MLClient
    from azure.ai.ml.entities import Model

def model_tags(job_name: str, job_tags: dict[str, str], metrics: dict[str, Any] | None) -> dict[str, str]:
    return version_tags(metrics, job=job_name, recipe_digest=job_tags.get(RECIPE_DIGEST_TAG) or None)


def register_job_model(ml_client: "MLClient", job_name: str, *, name: str | None = None,
                       version: str | None = None, model_format: str | None = None,
                       registry: str | None = None) -> "Model":
    """Register `azureml://jobs/<job>/outputs/model` as name:version (defaults from the job's tags)."""
    from azure.ai.ml.entities import Model

    job = get_job(ml_client, job_name)
    if status_text(job.status) != "Completed":
        raise StepFailed(f"job {job_name} is {status_text(job.status)}; only a completed job's model can be registered")
    tags = dict(job.tags or {})
    default_name, _, default_version = tags.get("slmforge.model", "").partition(":")
    name, version = name or default_name, version or default_version
    if not name or not version:
        raise InvalidInput(f"job {job_name} was not submitted by slmforge (no slmforge.model tag): pass --name and --version")
    model_format = model_format or tags.get("slmforge.register_format") or "custom_model"
    model = Model(name=name, version=version, type=model_format,
                  path=f"azureml://jobs/{job_name}/outputs/{FINAL_OUTPUT}",
                  description=f"{tags.get('slmforge.final_step', 'final')} output of Azure ML job {job_name}",
                  tags=model_tags(job_name, tags, job_metrics(ml_client, job)))
    existing = _existing(ml_client, name, version)
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
