"""The one retry layer of every Azure ML call: azure-core's RetryPolicy, bounded by a time budget.

azure-core retries 408/429/5xx answers and dropped connections with exponential backoff. Left
alone it also sleeps whatever Retry-After a server sends (100000 s is 28 hours) and never retries
a POST whose connection dropped. `BudgetRetryPolicy` keeps its backoff and its counting, and:
- never sleeps past the call's budget (SLMFORGE_RETRY_SECONDS, default 15 s): a wait that would
  end after it gives up at once, raising `RetryAfterBeyondBudget` for a Retry-After it will not
  honour, `RetriesSpent` for a connection that kept failing — both say how long it really tried;
- retries POSTs too: the POSTs slmforge's calls send are reads or idempotent actions
  (startPendingUpload, listSecrets, run-history and data queries, cancel, a registry import of a
  fixed name:version), and a connection dropped under them is as transient as under a GET.
"""

from __future__ import annotations

import os
import time
from typing import Any

from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ServiceRequestError,
    ServiceRequestTimeoutError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)
from azure.core.pipeline.policies import RetryPolicy

from slmforge.errors import InvalidInput

RETRY_SECONDS_ENV = "SLMFORGE_RETRY_SECONDS"
DEFAULT_RETRY_SECONDS = 15.0
RETRY_COUNT = 1000  # the time budget, not a count, ends retrying (unless a recipe sets max_operation_retries)
BACKOFF_FACTOR = 0.8  # azure-core's default: waits of 0, 1.6, 3.2, 6.4 ... s, capped at a quarter of the budget
RETRY_METHODS = frozenset({"HEAD", "GET", "PUT", "DELETE", "OPTIONS", "TRACE", "POST"})
LAST_TRY_S = 0.5  # what the last attempt keeps of the budget (at most a tenth of it)
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


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


class RetriesSpent(ServiceRequestError):
    """A call whose connection kept failing until the budget (or the retry count) was spent."""

    def __init__(self, cause: AzureError, elapsed: float, attempts: int):
        super().__init__(str(cause), error=cause)
        self.cause, self.elapsed, self.attempts = cause, elapsed, attempts

    @property
    def timed_out(self) -> bool:
        """The budget ran out before an attempt could start (azure-core's own timeout)."""
        return isinstance(self.cause, (ServiceRequestTimeoutError, ServiceResponseTimeoutError))


class RetryAfterBeyondBudget(HttpResponseError):
    """The service asked us to wait longer than the budget has left: we stopped instead of sleeping."""

    def __init__(self, response: Any, retry_after: float, left: float, elapsed: float):
        super().__init__(f"the service asked to retry after {retry_after:g} s", response=response)
        self.retry_after, self.left, self.elapsed = retry_after, left, elapsed


class BudgetRetryPolicy(RetryPolicy):
    """azure-core's RetryPolicy whose `timeout` is a hard budget on its sleeps, POSTs included (module doc)."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._method_whitelist = RETRY_METHODS

    def configure_retries(self, options: dict[str, Any]) -> dict[str, Any]:
        settings = super().configure_retries(options)
        settings["started"] = time.monotonic()
        return settings

    def increment(self, settings: dict[str, Any], response: Any = None, error: Any = None) -> bool:
        """Count the retry (azure-core), then choose its wait so that it ends within the budget."""
        if not super().increment(settings, response=response, error=error):
            return False
        left = settings["started"] + settings["timeout"] - time.monotonic()
        retry_after = self.get_retry_after(response) if error is None and response is not None else None
        if retry_after:  # the server's wait, or none: send() turns the answer into RetryAfterBeyondBudget
            if retry_after >= left:
                settings["refused_retry_after"] = (retry_after, max(left, 0.0))
                return False
            settings["wait"] = retry_after
            return True
        wait = self.get_backoff_time(settings)
        if wait >= left:
            # one last try just before the deadline rather than none
            wait = left - min(LAST_TRY_S, settings["timeout"] / 10)
        settings["wait"] = wait
        return wait >= 0

    def sleep(self, settings: dict[str, Any], transport: Any, response: Any = None) -> None:
        if settings["wait"] > 0:
            transport.sleep(settings["wait"])

    def update_context(self, context: Any, retry_settings: dict[str, Any]) -> None:
        super().update_context(context, retry_settings)
        if "refused_retry_after" in retry_settings:
            context["slmforge_refused_retry_after"] = retry_settings["refused_retry_after"]

    def send(self, request: Any) -> Any:
        started = time.monotonic()
        try:
            response = super().send(request)
        except (ServiceRequestError, ServiceResponseError) as e:
            if isinstance(e, RetriesSpent):
                raise
            raise RetriesSpent(e, time.monotonic() - started, request.context.get("retry_count", 0) + 1) from e
        refused = response.context.pop("slmforge_refused_retry_after", None)
        if refused is not None:
            retry_after, left = refused
            raise RetryAfterBeyondBudget(response.http_response, retry_after, left, time.monotonic() - started)
        return response


def retry_policy(*, retry_total: int = RETRY_COUNT, backoff_factor: float = BACKOFF_FACTOR) -> BudgetRetryPolicy:
    """The policy every MLClient of slmforge gets (`retry_policy=` reaches each of its service clients)."""
    budget = retry_seconds()
    return BudgetRetryPolicy(retry_total=retry_total, retry_connect=retry_total, retry_read=retry_total,
                             retry_status=retry_total, retry_backoff_factor=backoff_factor,
                             retry_backoff_max=max(1.0, budget / 4), timeout=budget)


def is_transient(error: BaseException | None) -> bool:
    """A fault worth trying again later (anywhere in the error's cause chain, which the SDK wraps):
    a connection failure, or a 408/429/5xx answer — unless it asked for a wait beyond the budget."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, RetryAfterBeyondBudget):
            return False
        if isinstance(error, (ServiceRequestError, ServiceResponseError, ConnectionError, TimeoutError)):
            return True
        if isinstance(error, HttpResponseError) and getattr(error, "status_code", None) in TRANSIENT_STATUS:
            return True
        error = error.__cause__ or error.__context__
    return False
