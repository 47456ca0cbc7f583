"""Which workspace, with which credential: an `MLClient` from a workspace file.

The workspace comes from `--workspace FILE` (an Azure ML `config.json`, or the emulator's
workspace file), else the recipe's `azureml_client`, else `./config.json`. Real workspaces use
`DefaultAzureCredential` without interactive methods (never a browser prompt, never a hang in
CI). Emulator workspace files (kind "slmforge-emulator") are opened by the emulator's own
client code, which knows its certificate and credential.

Transient HTTP faults (429, 5xx, dropped connections) are retried by azure-core's RetryPolicy
with exponential backoff; `with_retries` does the same around our own polling calls.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from slmforge.errors import InvalidInput, StepFailed

if TYPE_CHECKING:
    from azure.ai.ml import MLClient

    from slmforge.recipe.schema import AzureMLClient

T = TypeVar("T")

# azure-core RetryPolicy settings for every SDK call (status codes: its defaults 408/429/500/502/503/504).
RETRY_SETTINGS: dict[str, Any] = {
    "retry_total": 8,
    "retry_connect": 8,
    "retry_read": 8,
    "retry_status": 8,
    "retry_backoff_factor": 0.8,
    "retry_backoff_max": 30,
}
TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
WORKSPACE_KEYS = ("subscription_id", "resource_group", "workspace_name")
EMULATOR_KIND = "slmforge-emulator"  # slmforge.emulator.workspace_file.KIND (not imported: it pulls the server in)
EMULATOR_FILE = "workspace.json"


def read_workspace_file(path: str | Path) -> dict[str, Any]:
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / EMULATOR_FILE
    if not path.is_file():
        raise InvalidInput(f"{path}: workspace file not found (an Azure ML config.json or the emulator's workspace file)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InvalidInput(f"{path}: line {e.lineno} column {e.colno}: not valid JSON: {e.msg}") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"{path}: a workspace file is a JSON object")
    # config.json downloaded from the studio may spell the keys in camelCase
    for snake, camel in (("subscription_id", "subscriptionId"), ("resource_group", "resourceGroup"),
                         ("workspace_name", "workspaceName")):
        if snake not in data and camel in data:
            data[snake] = data[camel]
    missing = [k for k in WORKSPACE_KEYS if not data.get(k)]
    if missing:
        raise InvalidInput(f"{path}: workspace file lacks '{missing[0]}'")
    return data


def is_emulator_file(data: dict[str, Any]) -> bool:
    """The emulator's workspace.json (Engineer E's format: kind 'slmforge-emulator', cloud metadata, CA bundle)."""
    return data.get("kind") == EMULATOR_KIND


def default_credential():
    """DefaultAzureCredential, never interactive: env, workload/managed identity, Azure CLI, ..."""
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(exclude_interactive_browser_credential=True,
                                  exclude_visual_studio_code_credential=True)


def client_settings(overrides: "AzureMLClient | None" = None) -> dict[str, Any]:
    settings = dict(RETRY_SETTINGS)
    if overrides is not None:
        if overrides.max_operation_retries is not None:
            settings.update(retry_total=overrides.max_operation_retries, retry_status=overrides.max_operation_retries)
        if overrides.operation_retry_interval is not None:
            settings["retry_backoff_factor"] = overrides.operation_retry_interval
        if overrides.read_timeout is not None:
            settings["read_timeout"] = overrides.read_timeout
    settings.update(enable_telemetry=False, show_progress=sys.stderr.isatty())
    return settings


def ml_client_from_workspace_file(path: str | Path, *, registry_name: str | None = None) -> "MLClient":
    """An MLClient for an Azure ML config.json or an emulator workspace file."""
    from slmforge.backends.aml import quiet_sdk

    quiet_sdk()
    data = read_workspace_file(path)
    if is_emulator_file(data):
        from slmforge.emulator import client as emulator_client  # Engineer E's module

        return emulator_client.ml_client(Path(path), registry_name=registry_name, **RETRY_SETTINGS)
    return _ml_client(data["subscription_id"], data["resource_group"], data["workspace_name"],
                      registry_name=registry_name)


def _ml_client(subscription: str, resource_group: str, workspace: str, *, registry_name: str | None = None,
               overrides: "AzureMLClient | None" = None) -> "MLClient":
    from azure.ai.ml import MLClient

    settings = client_settings(overrides)
    if registry_name:
        return MLClient(default_credential(), subscription, resource_group, registry_name=registry_name, **settings)
    return MLClient(default_credential(), subscription, resource_group, workspace, **settings)


def resolve_ml_client(workspace_file: str | Path | None, recipe_client: "AzureMLClient | None" = None,
                      *, registry_name: str | None = None) -> "MLClient":
    """--workspace FILE, else the recipe's azureml_client, else ./config.json."""
    from slmforge.backends.aml import quiet_sdk

    quiet_sdk()
    if workspace_file is not None:
        return ml_client_from_workspace_file(workspace_file, registry_name=registry_name)
    if recipe_client is not None:
        return _ml_client(recipe_client.subscription_id, recipe_client.resource_group, recipe_client.workspace_name,
                          registry_name=registry_name, overrides=recipe_client)
    env_file = os.environ.get("SLMFORGE_WORKSPACE")
    default = Path(env_file) if env_file else Path.cwd() / "config.json"
    if not default.is_file():
        raise InvalidInput("no workspace: pass --workspace CONFIG (an Azure ML config.json or the emulator's "
                           "workspace file), set azureml_client in the recipe, or put config.json here")
    return ml_client_from_workspace_file(default, registry_name=registry_name)


def is_transient(error: BaseException) -> bool:
    from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

    if isinstance(error, (ServiceRequestError, ServiceResponseError, ConnectionError, TimeoutError)):
        return True
    if isinstance(error, HttpResponseError):
        return getattr(error, "status_code", None) in TRANSIENT_STATUS
    return False


def with_retries(call: Callable[[], T], what: str, *, attempts: int = 6, first_delay: float = 1.0) -> T:
    """Run `call`, riding through transient faults with exponential backoff; anything else is raised."""
    delay = first_delay
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as e:  # noqa: BLE001 - classified just below
            if not is_transient(e):
                raise
            if attempt == attempts:
                raise StepFailed(f"{what}: still failing after {attempts} attempts: {one_line(e)}") from None
            time.sleep(delay)
            delay = min(delay * 2, 30.0)
    raise AssertionError("unreachable")


def one_line(error: BaseException) -> str:
    """The first meaningful line of an SDK error (they are often pages long)."""
    text = getattr(error, "message", None) or str(error) or type(error).__name__
    for line in str(text).splitlines():
        line = line.strip()
        if line:
            return line[:400]
    return type(error).__name__
