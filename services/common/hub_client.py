"""HTTP client for the hub (aggregator) contract, used by the hospital node and the inference API
(:class:`HubClient`, with a node token) and by admin tools such as the demo
(:class:`HubAdminClient`, with the hub's admin token).

Sites only ever open outbound connections to the hub, as hospital firewalls expect.
Transient faults (connection refused, timeouts, 429 and 5xx answers) are retried
``retries`` times with an exponentially growing delay; a 4xx answer is the hub's final
word and is raised at once as :class:`HubRejected` carrying the hub's ``detail``. Uploads
carry an ``Idempotency-Key`` so that a retry after a lost response is answered with the
original receipt, never counted twice. Every request (each retry too) carries a W3C
``traceparent``: a new span of the current trace (a node's job, or the request being
served), so the hub's log lines of a job share the job's trace id.

Model blobs are read with a size cap while streaming and checked against the sha256 the
hub published before anyone stores them; :func:`ensure_global` keeps a site's model store
holding exactly the blob the hub names.
"""

from __future__ import annotations

import json
import logging
import ssl
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from fedmedclip.enums import RoundState
from fedmedclip.model_store import (
    ModelBlobError,
    ModelStore,
    StoredModel,
    blob_sha256,
    decode_blob,
)
from fedmedclip.schemas import (
    AuditEntry,
    ModelInfo,
    NodeCreate,
    NodeCreated,
    NodeIdentity,
    NodeInfo,
    RoundCreate,
    RoundInfo,
    SecAggStatus,
    TaskSpec,
    UpdateReceipt,
)
from fedmedclip.secagg.messages import AdvertiseKeys, MaskedInput, ShareKeys, UnmaskResponse
from services.common.tracing import TRACEPARENT, outgoing_traceparent

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_BACKOFF_SECONDS = 30.0
MAX_MODEL_BYTES = 256 * 1024 * 1024
"""A global adapter is a few MB; anything far larger is not a model we asked for."""
_M = TypeVar("_M", bound=BaseModel)
_ROUNDS = TypeAdapter(list[RoundInfo])
_MODELS = TypeAdapter(list[ModelInfo])
_NODES = TypeAdapter(list[NodeInfo])
_AUDIT = TypeAdapter(list[AuditEntry])


class HubError(RuntimeError):
    """A hub call failed; the message is fit for a job's ``error`` field or a log line."""


class HubUnavailable(HubError):
    """The hub could not be reached or kept failing after every retry."""


class HubRejected(HubError):
    """The hub answered with a 4xx: retrying the same request cannot help.

    ``detail`` and ``code`` are those of the hub's problem+json answer (``code`` is None
    when the answer was not one, e.g. from a proxy in front of the hub).
    """

    def __init__(self, status_code: int, detail: str, what: str, code: str | None = None) -> None:
        super().__init__(f"the aggregator refused {what} ({status_code}): {detail}")
        self.status_code = status_code
        self.detail = detail
        self.code = code


def _problem(response: httpx.Response) -> tuple[str, str | None]:
    """The ``detail`` and ``code`` of an error answer, whatever its body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase, None
    detail = body.get("detail") if isinstance(body, dict) else body
    code = body.get("code") if isinstance(body, dict) else None
    text = detail if isinstance(detail, str) else json.dumps(detail)[:300]
    return text, code if isinstance(code, str) else None


class BearerAuth(httpx.Auth):
    """``Authorization: Bearer <token>`` with the token as it is when each request is sent.

    The token may be a function (``ServiceSettings.live_secret``), so a client that lives
    for a whole training job picks up a node token rotated in its secret file.
    """

    def __init__(self, token: str | Callable[[], str]) -> None:
        self._token = token if callable(token) else lambda: token

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        request.headers["Authorization"] = f"Bearer {self._token()}"
        yield request


def _stamp_trace(request: httpx.Request) -> None:
    request.headers[TRACEPARENT] = outgoing_traceparent()


class HubClient:
    """Typed calls of the hub API, authenticated with a node token."""

    def __init__(
        self,
        base_url: str,
        token: str | Callable[[], str],
        *,
        retries: int = 5,
        backoff_seconds: float = 0.5,
        timeout_seconds: float = 30.0,
        max_model_bytes: int = MAX_MODEL_BYTES,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        """``token``: the bearer token, or a function giving the current one per request.
        ``verify``: the TLS context for an https hub (CA bundle, client certificate under
        mutual TLS; see ``services.common.settings.HubClientSettings.hub_tls``)."""
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.backoff_seconds = backoff_seconds
        self.max_model_bytes = max_model_bytes
        self._http = httpx.Client(
            base_url=self.base_url,
            auth=BearerAuth(token),
            timeout=timeout_seconds,
            verify=verify,
            event_hooks={"request": [_stamp_trace]},
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> HubClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _delay(self, attempt: int) -> float:
        return min(self.backoff_seconds * 2**attempt, MAX_BACKOFF_SECONDS)

    def _send(
        self, method: str, path: str, what: str, max_bytes: int | None, **kwargs: Any
    ) -> tuple[httpx.Response, bytes]:
        """One exchange: the response and its body, read in full (a successful body is
        refused once it passes ``max_bytes``, while streaming)."""
        if max_bytes is None:
            response = self._http.request(method, path, **kwargs)
            return response, response.content
        with self._http.stream(method, path, **kwargs) as response:
            if not response.is_success:
                return response, response.read()
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise HubError(f"{what}: the answer is larger than the {max_bytes} byte cap")
                chunks.append(chunk)
        return response, b"".join(chunks)

    def _request(
        self, method: str, path: str, what: str, *, max_bytes: int | None = None, **kwargs: Any
    ) -> tuple[httpx.Response, bytes]:
        """Send one request, retrying transient faults; raise HubError subclasses.

        Returns the successful response and its body.
        """
        problem = ""
        attempts = self.retries + 1
        for attempt in range(attempts):
            if attempt:
                delay = self._delay(attempt - 1)
                log.warning("retrying %s in %.1fs after: %s", what, delay, problem)
                time.sleep(delay)
            try:
                response, body = self._send(method, path, what, max_bytes, **kwargs)
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
                continue
            except httpx.HTTPError as exc:  # not transient (a bad redirect, a broken encoding)
                raise HubError(f"{what} failed: {type(exc).__name__}: {exc}") from exc
            if response.status_code in RETRY_STATUSES:
                problem = f"HTTP {response.status_code}: {_problem(response)[0]}"
                continue
            if response.is_error:
                detail, code = _problem(response)
                raise HubRejected(response.status_code, detail, what, code)
            return response, body
        raise HubUnavailable(
            f"the aggregator at {self.base_url} is unreachable for {what} after "
            f"{attempts} attempt{'s' if attempts != 1 else ''}: {problem}"
        )

    def _parse(self, reply: tuple[httpx.Response, bytes], model: type[_M]) -> _M:
        try:
            return model.model_validate_json(reply[1])
        except ValidationError as exc:
            raise HubError(f"unexpected answer from the aggregator: {exc}") from exc

    def _parse_list(
        self, reply: tuple[httpx.Response, bytes], adapter: TypeAdapter[list[_M]]
    ) -> list[_M]:
        try:
            return adapter.validate_json(reply[1])
        except ValidationError as exc:
            raise HubError(f"unexpected answer from the aggregator: {exc}") from exc

    def get_task(self) -> TaskSpec:
        return self._parse(self._request("GET", "/api/v1/task", "reading the task"), TaskSpec)

    def list_rounds(self, state: RoundState | None = None, limit: int = 100) -> list[RoundInfo]:
        """Rounds, newest first; only those in ``state`` when given."""
        params: dict[str, str | int] = {"limit": limit}
        if state is not None:
            params["state"] = state.value
        reply = self._request("GET", "/api/v1/rounds", "listing rounds", params=params)
        return self._parse_list(reply, _ROUNDS)

    def open_rounds(self) -> list[RoundInfo]:
        return self.list_rounds(RoundState.open)

    def get_round(self, round_id: int) -> RoundInfo:
        reply = self._request("GET", f"/api/v1/rounds/{round_id}", f"reading round {round_id}")
        return self._parse(reply, RoundInfo)

    def list_models(self) -> list[ModelInfo]:
        """Every global version, oldest first."""
        return self._parse_list(self._request("GET", "/api/v1/models", "listing models"), _MODELS)

    def model_info(self, version: int | str) -> ModelInfo:
        """Model ``version`` (a number, or ``production`` for the promoted one)."""
        reply = self._request("GET", f"/api/v1/models/{version}", f"reading model {version}")
        return self._parse(reply, ModelInfo)

    def download_model(self, info: ModelInfo) -> bytes:
        """The blob of ``info.version``, size-capped while streaming, checked against the
        sha256 the hub published (in the model info and in the response header) and
        checked to be a model blob of that version."""
        response, data = self._request(
            "GET",
            f"/api/v1/models/{info.version}/blob",
            f"downloading model {info.version}",
            max_bytes=self.max_model_bytes,
        )
        digest = blob_sha256(data)
        announced = response.headers.get("X-Model-SHA256", info.blob_sha256)
        if digest != info.blob_sha256 or announced != info.blob_sha256:
            raise HubError(
                f"model {info.version} failed its integrity check: sha256 {digest}, "
                f"expected {info.blob_sha256}"
            )
        try:
            _, meta = decode_blob(data)
        except ModelBlobError as exc:
            raise HubError(f"model {info.version} from the hub is not a model blob: {exc}") from exc
        if meta.get("version") != info.version:
            raise HubError(
                f"model {info.version} from the hub says it is version {meta.get('version')!r}"
            )
        return data

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
        reply = self._request(
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
        return self._parse(reply, UpdateReceipt)

    def identity(self) -> NodeIdentity:
        """The node the hub takes this client for (its registered name)."""
        reply = self._request("GET", "/api/v1/nodes/me", "reading this node's identity")
        return self._parse(reply, NodeIdentity)

    def secagg_status(self, round_id: int) -> SecAggStatus:
        """This site's view of a secure round: phase, parameters, messages for it."""
        reply = self._request(
            "GET",
            f"/api/v1/rounds/{round_id}/secagg",
            f"reading the secure-aggregation state of round {round_id}",
        )
        return self._parse(reply, SecAggStatus)

    def send_secagg(
        self, round_id: int, message: AdvertiseKeys | ShareKeys | MaskedInput | UnmaskResponse
    ) -> SecAggStatus:
        """Send this site's message of the phase it names; the answer is the new status.

        A retry after a lost answer is refused with 409 ``secagg_replay``; the status then
        lists the phase under ``sent``.
        """
        reply = self._request(
            "POST",
            f"/api/v1/rounds/{round_id}/secagg/{message.phase.value}",
            f"the {message.phase.value} message of round {round_id}",
            content=message.model_dump_json(),
            headers={"Content-Type": "application/json"},
        )
        return self._parse(reply, SecAggStatus)


class HubAdminClient(HubClient):
    """The hub API as its admin uses it: the node calls (reads) plus the admin-only ones.

    Built with the hub's admin token; retries and error types are those of HubClient. A
    registration or round opening retried after a lost answer is refused with a 409 that
    names the cause (the name is taken, a round is already open), never done twice.
    """

    def healthy(self) -> bool:
        """Whether the hub answers its liveness probe now (one try, no retries)."""
        try:
            return self._http.get("/health").status_code == 200
        except httpx.HTTPError:
            return False

    def set_task(self, task: TaskSpec) -> TaskSpec:
        reply = self._request(
            "PUT", "/api/v1/task", "setting the task", json=task.model_dump(mode="json")
        )
        return self._parse(reply, TaskSpec)

    def add_node(self, name: str) -> NodeCreated:
        """Register a hospital node; the answer holds its token (shown only once)."""
        body = NodeCreate(name=name).model_dump(mode="json")
        reply = self._request("POST", "/api/v1/nodes", f"registering node {name!r}", json=body)
        return self._parse(reply, NodeCreated)

    def list_nodes(self) -> list[NodeInfo]:
        return self._parse_list(self._request("GET", "/api/v1/nodes", "listing nodes"), _NODES)

    def revoke_node(self, node_id: int) -> NodeInfo:
        """Revoke node ``node_id``'s token at once (revoking twice is harmless)."""
        reply = self._request("DELETE", f"/api/v1/nodes/{node_id}", f"revoking node {node_id}")
        return self._parse(reply, NodeInfo)

    def rotate_token(self, node_id: int, grace_seconds: int) -> NodeCreated:
        """A new token for node ``node_id``; the old one keeps working ``grace_seconds`` so
        the site can switch without missing a round. The answer holds the new token (shown
        only once)."""
        reply = self._request(
            "POST",
            f"/api/v1/nodes/{node_id}/token",
            f"rotating the token of node {node_id}",
            json={"grace_seconds": grace_seconds},
        )
        return self._parse(reply, NodeCreated)

    def open_round(self, request: RoundCreate) -> RoundInfo:
        body = request.model_dump(mode="json", exclude_unset=True)
        reply = self._request("POST", "/api/v1/rounds", "opening a round", json=body)
        return self._parse(reply, RoundInfo)

    def close_round(self, round_id: int) -> RoundInfo:
        """Aggregate round ``round_id`` now rather than at its deadline."""
        reply = self._request(
            "POST", f"/api/v1/rounds/{round_id}/close", f"closing round {round_id}"
        )
        return self._parse(reply, RoundInfo)

    def promote(self, version: int) -> ModelInfo:
        """Make global ``version`` the one sites serve."""
        reply = self._request(
            "POST", f"/api/v1/models/{version}/promote", f"promoting model {version}"
        )
        return self._parse(reply, ModelInfo)

    def rollback(self) -> ModelInfo:
        """Undo the last promotion; the answer is the version that is production again."""
        reply = self._request("POST", "/api/v1/models/rollback", "rolling back production")
        return self._parse(reply, ModelInfo)

    def cancel_round(self, round_id: int) -> RoundInfo:
        """Cancel open round ``round_id``: no model is published, its updates are kept."""
        reply = self._request(
            "POST", f"/api/v1/rounds/{round_id}/cancel", f"cancelling round {round_id}"
        )
        return self._parse(reply, RoundInfo)

    def audit(
        self,
        *,
        action: str | None = None,
        actor: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
    ) -> list[AuditEntry]:
        """Audit events, newest first, filtered as the hub's query parameters allow."""
        params: dict[str, str | int] = {"limit": limit}
        if action is not None:
            params["action"] = action
        if actor is not None:
            params["actor"] = actor
        if since is not None:
            params["since"] = since.isoformat()
        reply = self._request("GET", "/api/v1/audit", "reading the audit trail", params=params)
        return self._parse_list(reply, _AUDIT)


def ensure_global(hub: HubClient, store: ModelStore, info: ModelInfo) -> StoredModel:
    """The global model ``info`` names, from ``store`` when it holds that exact blob, else
    downloaded from the hub, verified and stored.

    The sha256 is compared, not only the version number: a hub whose task was reset
    publishes a new version 0 that replaces the old one.
    """
    if store.has_global(info.version):
        stored = store.load_global(info.version)
        if stored.sha256 == info.blob_sha256:
            return stored
        log.warning("stored global v%d does not match the hub's sha256; downloading", info.version)
    store.save_global_blob(info.version, hub.download_model(info))
    log.info(
        "downloaded global model v%d from the hub",
        info.version,
        extra={"fields": {"version": info.version, "sha256": info.blob_sha256}},
    )
    return store.load_global(info.version)
