"""Which workspace, with which credential: an `MLClient` from a workspace file.

The workspace comes from `--workspace FILE` (an Azure ML `config.json`, or the emulator's
workspace file), else the recipe's `azureml_client`, else `./config.json`. Real workspaces use
`DefaultAzureCredential` without interactive methods (never a browser prompt, never a hang in
CI). Emulator workspace files (kind "slmforge-emulator") are opened by the emulator's own
client code, which knows its certificate and credential.

Transient faults (408/429/5xx, dropped connections) are retried by one layer, azure-core's
RetryPolicy as `retry.BudgetRetryPolicy` configures it: bounded in time, not only in count,
each service call gives up after SLMFORGE_RETRY_SECONDS (default 15 s), so an unreachable
workspace is one clear line (`service_errors`) saying how long we really tried, not minutes of
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
from typing import TYPE_CHECKING, Any, Iterator

from slmforge.errors import InvalidInput, SlmforgeError, StepFailed

if TYPE_CHECKING:
    from azure.ai.ml import MLClient

    from slmforge.recipe.schema import AzureMLClient

WORKSPACE_KEYS = ("subscription_id", "resource_group", "workspace_name")
EMULATOR_KIND = "slmforge-emulator"  # slmforge.emulator.workspace_file.KIND (not imported: it pulls the server in)
EMULATOR_FILE = "workspace.json"
PROBE_TIMEOUT_S = 3.0
WORKSPACE_ENV = "SLMFORGE_WORKSPACE"
# The ways to name a workspace, said wherever one is missing or cannot be signed in to.
WAYS = ("--workspace CONFIG (an Azure ML config.json, or the emulator's workspace file), the recipe's "
        f"azureml_client, or {WORKSPACE_ENV}=CONFIG (default: ./config.json)")
SIGN_IN = ("sign in with `az login` (or set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET for a "
           "service principal)")
EMULATOR_HINT = "offline: `slmforge emulator start`, then --workspace with the workspace file it prints"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_endpoint: str | None = None  # the workspace endpoint this process talks to (for error messages)
_workspace: str | None = None  # which workspace, and where it was named (for error messages)


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
    """MLClient keyword arguments: the one retry policy (the recipe may set its count and interval)."""
    from slmforge.backends.aml.retry import retry_policy

    policy: dict[str, Any] = {}
    settings: dict[str, Any] = {}
    if overrides is not None:
        if overrides.max_operation_retries is not None:
            policy["retry_total"] = overrides.max_operation_retries
        if overrides.operation_retry_interval is not None:
            policy["backoff_factor"] = overrides.operation_retry_interval
        if overrides.read_timeout is not None:
            settings["read_timeout"] = overrides.read_timeout
    return {"retry_policy": retry_policy(**policy), **settings,
            "enable_telemetry": False, "show_progress": sys.stderr.isatty()}


def ml_client_from_workspace_file(path: str | Path, *, registry_name: str | None = None) -> "MLClient":
    """An MLClient for an Azure ML config.json or an emulator workspace file."""
    from slmforge.backends.aml.pipeline import quiet_sdk

    quiet_sdk()
    data = read_workspace_file(path)
    if is_emulator_file(data):
        from slmforge.backends.aml.retry import retry_policy
        from slmforge.emulator import client as emulator_client
        from slmforge.emulator.workspace_file import read as read_emulator_file

        data = read_emulator_file(path)  # every key the client needs, with the right type
        _remember_endpoint(data["endpoint"])
        folder = Path(path) if Path(path).is_dir() else Path(path).parent
        probe(data.get("endpoint"), hint=f"is the emulator running? (`slmforge emulator status --dir {folder}`)")
        return emulator_client.ml_client(Path(path), registry_name=registry_name, retry_policy=retry_policy())
    return _ml_client(data["subscription_id"], data["resource_group"], data["workspace_name"],
                      registry_name=registry_name, named_by=str(path))


def _ml_client(subscription: str, resource_group: str, workspace: str, *, registry_name: str | None = None,
               overrides: "AzureMLClient | None" = None, named_by: str = "") -> "MLClient":
    from azure.ai.ml import MLClient

    global _workspace
    settings = client_settings(overrides)
    _remember_endpoint("https://management.azure.com")
    _workspace = f"{registry_name or workspace} (subscription {subscription}, resource group {resource_group}" \
                 f"{', from ' + named_by if named_by else ''})"
    if registry_name:
        return MLClient(default_credential(), subscription, resource_group, registry_name=registry_name, **settings)
    return MLClient(default_credential(), subscription, resource_group, workspace, **settings)


def resolve_ml_client(workspace_file: str | Path | None, recipe_client: "AzureMLClient | None" = None,
                      *, registry_name: str | None = None) -> "MLClient":
    """--workspace FILE, else the recipe's azureml_client, else ./config.json."""
    from slmforge.backends.aml.pipeline import quiet_sdk

    quiet_sdk()
    if workspace_file is not None:
        return ml_client_from_workspace_file(workspace_file, registry_name=registry_name)
    if recipe_client is not None:
        return _ml_client(recipe_client.subscription_id, recipe_client.resource_group, recipe_client.workspace_name,
                          registry_name=registry_name, overrides=recipe_client, named_by="the recipe's azureml_client")
    env_file = os.environ.get(WORKSPACE_ENV)
    default = Path(env_file) if env_file else Path.cwd() / "config.json"
    if not default.is_file():
        raise InvalidInput(f"no workspace ({default} not found): give one with {WAYS}; {SIGN_IN}; {EMULATOR_HINT}")
    return ml_client_from_workspace_file(default, registry_name=registry_name)


def connection_failure(error: BaseException | None) -> BaseException | None:
    """The connection-level failure inside an SDK error (the SDK wraps some in validation errors)."""
    from azure.core.exceptions import ServiceRequestError, ServiceResponseError

    return _find(error, (ServiceRequestError, ServiceResponseError, ConnectionError, TimeoutError))


def _find(error: BaseException | None, types: tuple[type, ...]) -> BaseException | None:
    """The outermost error of `types` in the cause/context chain of `error`."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, types):
            return error
        error = error.__cause__ or error.__context__
    return None


def unreachable(error: BaseException) -> StepFailed:
    """One line naming the endpoint that could not be reached and how long we really tried."""
    from slmforge.backends.aml.retry import RETRY_SECONDS_ENV, RetriesSpent, retry_seconds

    endpoint = _endpoint or "the Azure ML service"
    where = f"cannot reach the Azure ML workspace at {endpoint}"
    if not isinstance(error, RetriesSpent):
        return StepFailed(f"{where}: {one_line(error)}")
    tried = (f"{error.elapsed:.1f} s and {error.attempts} attempt{'s' if error.attempts != 1 else ''}"
             f" of a {retry_seconds():g} s retry budget; {RETRY_SECONDS_ENV} sets how long")
    if error.timed_out:
        return StepFailed(f"{where}: no usable answer in {tried}")
    return StepFailed(f"{where}: {one_line(error.cause)} (gave up after {tried})")


def retry_refused(error: BaseException) -> StepFailed:
    """A Retry-After longer than the budget has left: we stopped rather than sleep through it."""
    from slmforge.backends.aml.retry import RETRY_SECONDS_ENV, retry_seconds

    return StepFailed(f"the Azure ML workspace at {_endpoint or 'the Azure ML service'} answered "
                      f"{error.status_code} and asked to retry after {error.retry_after:g} s, more than the "
                      f"{error.left:.1f} s left of the {retry_seconds():g} s retry budget; gave up after "
                      f"{error.elapsed:.1f} s ({RETRY_SECONDS_ENV} sets the budget)")


def not_signed_in(error: BaseException) -> StepFailed | None:
    """No credential for a real workspace (DefaultAzureCredential found none): one line saying how to give one."""
    from azure.core.exceptions import ClientAuthenticationError

    if _find(error, (ClientAuthenticationError,)) is None:
        return None
    where = f"workspace {_workspace}" if _workspace else "the Azure ML workspace"
    return StepFailed(f"no Azure credential for {where}: {SIGN_IN}; name the workspace with {WAYS}; "
                      f"{EMULATOR_HINT}")


def as_step_failed(error: BaseException, what: str) -> StepFailed:
    """An SDK error as one line: no credential, the unreachable endpoint, a refused Retry-After, else
    `what: <first line>`."""
    from slmforge.backends.aml.retry import RetryAfterBeyondBudget

    if (unsigned := not_signed_in(error)) is not None:
        return unsigned
    refused = _find(error, (RetryAfterBeyondBudget,))
    if refused is not None:
        return retry_refused(refused)
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
        from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

        if isinstance(e, (HttpResponseError, ClientAuthenticationError)) or connection_failure(e) is not None:
            raise as_step_failed(e, f"the workspace answered {getattr(e, 'status_code', None)}") from None
        raise


def probe(endpoint: str | None, *, hint: str) -> None:
    """A quick TCP connect to a loopback endpoint (the emulator), so a stopped one fails at once."""
    if not endpoint:
        return
    from urllib.parse import urlsplit

    url = urlsplit(endpoint)
    started = time.monotonic()
    try:
        with socket.create_connection((url.hostname or "127.0.0.1", url.port or 443), timeout=PROBE_TIMEOUT_S):
            return
    except OSError as e:
        reason = e.strerror or type(e).__name__
    tried = (f"one connection attempt, {time.monotonic() - started:.1f} s of a {PROBE_TIMEOUT_S:g} s timeout: an "
             "emulator on this machine answers at once or not at all, so it is not retried")
    raise StepFailed(f"cannot reach the Azure ML workspace at {endpoint}: {reason.lower()} ({tried}); {hint}")


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
