"""HTTP client for the hub (aggregator) contract, with retries and exponential backoff.

The node only ever opens outbound connections to the hub, as hospital firewalls expect.
Transient faults (connection refused, timeouts, 429 and 5xx answers) are retried with an
exponentially growing delay; a 4xx answer is the hub's final word and is raised at once as
:class:`HubRejected` carrying the hub's ``detail``. Uploads carry an ``Idempotency-Key`` so
that a retry after a lost response is answered with the original receipt, never counted
twice.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from fedmedclip.model_store import blob_sha256
from fedmedclip.schemas import ModelInfo, RoundInfo, TaskSpec, UpdateReceipt
from services.hospital_node.settings import NodeSettings

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_BACKOFF_SECONDS = 30.0
INTERACTIVE_RETRIES = 1
"""Hub retries while an admin waits for an answer (jobs retry as configured)."""
INTERACTIVE_TIMEOUT_SECONDS = 10.0
_M = TypeVar("_M", bound=BaseModel)
_ROUNDS = TypeAdapter(list[RoundInfo])


class HubError(RuntimeError):
    """A hub call failed; the message is fit for a job's ``error`` field."""


class HubUnavailable(HubError):
    """The hub could not be reached or kept failing after every retry."""


class HubRejected(HubError):
    """The hub answered with a 4xx: retrying the same request cannot help."""

    def __init__(self, status_code: int, detail: str, what: str) -> None:
        super().__init__(f"the aggregator refused {what} ({status_code}): {detail}")
        self.status_code = status_code
        self.detail = detail


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    detail = body.get("detail") if isinstance(body, dict) else body
    return detail if isinstance(detail, str) else json.dumps(detail)[:300]


class HubClient:
    """Typed calls of the hub API, authenticated with this node's token."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        retries: int = 5,
        backoff_seconds: float = 0.5,
        timeout_seconds: float = 30.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.backoff_seconds = backoff_seconds
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout_seconds,
        )

    @classmethod
    def from_settings(cls, settings: NodeSettings, *, interactive: bool = False) -> HubClient:
        """A client for the configured hub; an interactive one gives up sooner."""
        retries, timeout = settings.hub_retries, settings.hub_timeout_seconds
        if interactive:
            retries = min(retries, INTERACTIVE_RETRIES)
            timeout = min(timeout, INTERACTIVE_TIMEOUT_SECONDS)
        return cls(
            settings.aggregator_url,
            settings.node_token,
            retries=retries,
            backoff_seconds=settings.hub_backoff_seconds,
            timeout_seconds=timeout,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> HubClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _delay(self, attempt: int) -> float:
        return min(self.backoff_seconds * 2**attempt, MAX_BACKOFF_SECONDS)

    def _request(self, method: str, path: str, what: str, **kwargs: Any) -> httpx.Response:
        """Send one request, retrying transient faults; raise HubError subclasses."""
        problem = ""
        for attempt in range(self.retries + 1):
            if attempt:
                delay = self._delay(attempt - 1)
                log.warning("retrying %s in %.1fs after: %s", what, delay, problem)
                time.sleep(delay)
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
                continue
            if response.status_code in RETRY_STATUSES:
                problem = f"HTTP {response.status_code}: {_detail(response)}"
                continue
            if response.is_error:
                raise HubRejected(response.status_code, _detail(response), what)
            return response
        raise HubUnavailable(
            f"the aggregator at {self.base_url} is unreachable for {what} after "
            f"{self.retries + 1} attempts: {problem}"
        )

    def _parse(self, response: httpx.Response, model: type[_M]) -> _M:
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            raise HubError(f"unexpected answer from the aggregator: {exc}") from exc

    def get_task(self) -> TaskSpec:
        return self._parse(self._request("GET", "/api/v1/task", "reading the task"), TaskSpec)

    def open_rounds(self) -> list[RoundInfo]:
        response = self._request(
            "GET", "/api/v1/rounds", "listing open rounds", params={"state": "open"}
        )
        try:
            return _ROUNDS.validate_json(response.content)
        except ValidationError as exc:
            raise HubError(f"unexpected answer from the aggregator: {exc}") from exc

    def get_round(self, round_id: int) -> RoundInfo:
        response = self._request("GET", f"/api/v1/rounds/{round_id}", f"reading round {round_id}")
        return self._parse(response, RoundInfo)

    def model_info(self, version: int | str) -> ModelInfo:
        response = self._request("GET", f"/api/v1/models/{version}", f"reading model {version}")
        return self._parse(response, ModelInfo)

    def download_model(self, info: ModelInfo) -> bytes:
        """The blob of ``info.version``, checked against the sha256 the hub published."""
        response = self._request(
            "GET", f"/api/v1/models/{info.version}/blob", f"downloading model {info.version}"
        )
        digest = blob_sha256(response.content)
        announced = response.headers.get("X-Model-SHA256", info.blob_sha256)
        if digest != info.blob_sha256 or announced != info.blob_sha256:
            raise HubError(
                f"model {info.version} failed its integrity check: sha256 {digest}, "
                f"expected {info.blob_sha256}"
            )
        return response.content

    def upload_update(
        self,
        round_id: int,
        payload: bytes,
        *,
        sample_count: int,
        metrics: Mapping[str, float],
        idempotency_key: str,
    ) -> UpdateReceipt:
        """Send an encoded FAM delta; retries reuse ``idempotency_key``."""
        response = self._request(
            "POST",
            f"/api/v1/rounds/{round_id}/updates",
            f"the update for round {round_id}",
            content=payload,
            headers={
                "Content-Type": "application/octet-stream",
                "X-Sample-Count": str(sample_count),
                "X-Local-Metrics": json.dumps(dict(metrics), separators=(",", ":")),
                "Idempotency-Key": idempotency_key,
            },
        )
        return self._parse(response, UpdateReceipt)
