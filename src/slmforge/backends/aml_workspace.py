"""Which workspace, with which credential: an `MLClient` from a workspace file.

The workspace comes from `--workspace FILE` (an Azure ML `config.json`, or the emulator's
workspace file), else the recipe's `azureml_client`, else `./config.json`. Real workspaces use
`DefaultAzureCredential` without interactive methods (never a browser prompt, never a hang in
CI). Emulator workspace files (kind "slmforge-emulator") are opened by the emulator's own
client code, which knows its certificate and credential.

Transient HTTP faults (429, 5xx, dropped connections) are retried by azure-core's RetryPolicy
with exponential backoff; `with_retries` does the same around our own polling calls. Retrying is
bounded in time, not only in count: each service call gives up after SLMFORGE_RETRY_SECONDS
(default 15 s), so an unreachable workspace is one clear line (`service_errors`), not minutes of
silence. An emulator workspace is probed first: a stopped emulator is reported at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, TypeVar

from slmforge.errors import InvalidInput, SlmforgeError, StepFailed

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
RETRY_SECONDS_ENV = "SLMFORGE_RETRY_SECONDS"
DEFAULT_RETRY_SECONDS = 15.0
TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
WORKSPACE_KEYS = ("subscription_id", "resource_group", "workspace_name")
EMULATOR_KIND = "slmforge-emulator"  # slmforge.emulator.workspace_file.KIND (not imported: it pulls the server in)
EMULATOR_FILE = "workspace.json"
PROBE_TIMEOUT_S = 3.0
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_HOST_PORT = re.compile(r"host='([^']+)', port=(\d+)")
_endpoint: str | None = None  # the workspace endpoint this process talks to (for error messages)


def retry_seconds() -> float:
    """How long one service call may keep retrying (SLMFORGE_RETRY_SECONDS, default 15)."""
    raw = os.environ.get(RETRY_SECONDS_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_RETRY_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise InvalidInput(f"{RETRY_SECONDS_ENV}={raw!r}: give a number of seconds greater than 0")
    return value


def retry_settings() -> dict[str, Any]:
    """azure-core RetryPolicy settings: RETRY_SETTINGS bounded by the retry time budget."""
    budget = retry_seconds()
    return {**RETRY_SETTINGS, "timeout": budget,
            "retry_backoff_max": min(RETRY_SETTINGS["retry_backoff_max"], max(1.0, budget / 4))}


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
    settings = retry_settings()
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
        from slmforge.emulator import client as emulator_client
        from slmforge.emulator.workspace_file import read as read_emulator_file

        data = read_emulator_file(path)  # every key the client needs, with the right type
        _remember_endpoint(data["endpoint"])
        folder = Path(path) if Path(path).is_dir() else Path(path).parent
        probe(data.get("endpoint"), hint=f"is the emulator running? (`slmforge emulator status --dir {folder}`)")
        return emulator_client.ml_client(Path(path), registry_name=registry_name, **retry_settings())
    return _ml_client(data["subscription_id"], data["resource_group"], data["workspace_name"],
                      registry_name=registry_name)


def _ml_client(subscription: str, resource_group: str, workspace: str, *, registry_name: str | None = None,
               overrides: "AzureMLClient | None" = None) -> "MLClient":
    from azure.ai.ml import MLClient

    settings = client_settings(overrides)
    _remember_endpoint("https://management.azure.com")
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


def with_retries(call: Callable[[], T], what: str, *, patience: float | None = None, first_delay: float = 1.0) -> T:
    """Run `call`, riding through transient faults with exponential backoff for up to `patience`
    seconds (default: the retry budget); anything else is raised. A connection that still fails at
    the end is re-raised as is, for `service_errors` to name the endpoint."""
    patience = retry_seconds() if patience is None else patience
    deadline = time.monotonic() + patience
    delay, attempt = first_delay, 0
    while True:
        attempt += 1
        try:
            return call()
        except Exception as e:  # noqa: BLE001 - classified just below
            if not is_transient(e):
                raise
            if time.monotonic() + delay > deadline:
                if connection_failure(e) is not None:
                    raise
                raise StepFailed(f"{what}: still failing after {attempt} attempts: {one_line(e)}") from None
            time.sleep(delay)
            delay = min(delay * 2, 30.0)


def connection_failure(error: BaseException | None) -> BaseException | None:
    """The connection-level failure inside an SDK error (the SDK wraps some in validation errors)."""
    from azure.core.exceptions import ServiceRequestError, ServiceResponseError

    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, (ServiceRequestError, ServiceResponseError, ConnectionError, TimeoutError)):
            return error
        error = error.__cause__ or error.__context__
    return None


def unreachable(error: BaseException) -> StepFailed:
    """One line naming the endpoint that could not be reached and for how long we tried."""
    found = _HOST_PORT.search(str(error))
    endpoint = f"https://{found.group(1)}:{found.group(2)}" if found else (_endpoint or "the Azure ML service")
    from azure.core.exceptions import ServiceRequestTimeoutError, ServiceResponseTimeoutError

    budget = f"{retry_seconds():g} s of retries; {RETRY_SECONDS_ENV} sets how long"
    if isinstance(error, (ServiceRequestTimeoutError, ServiceResponseTimeoutError)):  # the budget ran out
        return StepFailed(f"cannot reach the Azure ML workspace at {endpoint}: no usable answer in {budget}")
    return StepFailed(f"cannot reach the Azure ML workspace at {endpoint}: {one_line(error)} (gave up after {budget})")


def as_step_failed(error: BaseException, what: str) -> StepFailed:
    """An SDK error as one line: the unreachable endpoint, else `what: <first line of the error>`."""
    failure = connection_failure(error)
    return unreachable(failure) if failure is not None else StepFailed(f"{what}: {one_line(error)}")


@contextlib.contextmanager
def service_errors() -> Iterator[None]:
    """Around a command's service calls: an unreachable workspace, or an error answer, is one line (exit 1)."""
    try:
        yield
    except (SlmforgeError, BrokenPipeError):  # a bare BrokenPipeError is our stdout's reader gone (the SDK wraps its own)
        raise
    except Exception as e:  # noqa: BLE001 - connection failures and service answers are translated
        from azure.core.exceptions import HttpResponseError

        failure = connection_failure(e)
        if failure is not None:
            raise unreachable(failure) from None
        if isinstance(e, HttpResponseError):
            raise StepFailed(f"the workspace answered {e.status_code}: {one_line(e)}") from None
        raise


def probe(endpoint: str | None, *, hint: str) -> None:
    """A quick TCP connect to a loopback endpoint (the emulator), so a stopped one fails at once."""
    if not endpoint:
        return
    from urllib.parse import urlsplit

    url = urlsplit(endpoint)
    try:
        with socket.create_connection((url.hostname or "127.0.0.1", url.port or 443), timeout=PROBE_TIMEOUT_S):
            return
    except OSError as e:
        reason = e.strerror or type(e).__name__
    raise StepFailed(f"cannot reach the Azure ML workspace at {endpoint}: {reason.lower()}; {hint}")


def _remember_endpoint(endpoint: str | None) -> None:
    global _endpoint
    _endpoint = endpoint.rstrip("/") if endpoint else None


def one_line(error: BaseException) -> str:
    """The first meaningful line of an SDK error (they are often pages long)."""
    text = getattr(error, "message", None) or str(error) or type(error).__name__
    for line in _ANSI.sub("", str(text)).splitlines():
        line = line.strip()
        if line:
            return line[:400]
    return type(error).__name__
