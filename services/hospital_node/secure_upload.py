"""A site's part in a secure-aggregation round, over the hub's REST protocol.

The job joins before it trains (key advertisement and key shares must be done by every
site before anyone uploads), then uploads its masked update and answers the unmask
request after training. The protocol client, with the site's private keys and its
self-mask seed, lives only in this object, in the job's memory: nothing of it is written
to disk or logged. Between phases the site polls the hub (``poll_seconds``) until the
phase it needs has started, giving up once that phase's deadline is well past.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Collection
from datetime import UTC, datetime

import numpy as np

from fedmedclip.schemas import SecAggStatus
from fedmedclip.secagg import ProtocolViolation, SecAggClient
from fedmedclip.secagg.messages import AdvertiseKeys, MaskedInput, Phase, ShareKeys, UnmaskResponse
from services.common.hub_client import HubClient, HubRejected

GRACE_SECONDS = 30.0
"""How long past a phase's deadline a site keeps waiting for the hub to move on."""


class SecureRoundError(RuntimeError):
    """The site cannot take part (any more): the message says why."""


class SecureUpload:
    """One site's protocol state for one round; call :meth:`join`, then :meth:`upload`."""

    def __init__(
        self,
        hub: HubClient,
        round_id: int,
        *,
        poll_seconds: float,
        report: Callable[[Phase], None] | None = None,
    ) -> None:
        """``report(phase)`` is told each protocol step, for the job's progress."""
        self.hub = hub
        self.round_id = round_id
        self.poll_seconds = poll_seconds
        self.report = report or (lambda _: None)
        self._client: SecAggClient | None = None
        self.masked_sha256: str | None = None
        self.masked_bytes = 0

    @property
    def client(self) -> SecAggClient:
        if self._client is None:
            raise SecureRoundError("join() must come first")
        return self._client

    def _wait(self, phases: Collection[Phase]) -> SecAggStatus:
        """Poll until the round is in one of ``phases``; fail on a failed round or timeout."""
        while True:
            status = self.hub.secagg_status(self.round_id)
            if status.phase in phases:
                return status
            if status.phase in (Phase.failed, Phase.done):
                raise SecureRoundError(
                    f"secure round {self.round_id} ended ({status.phase}) before this site "
                    f"could finish: {status.reason or 'it went on without this site'}"
                )
            deadline = status.phase_deadline
            if deadline is not None:
                late = (datetime.now(UTC) - deadline).total_seconds()
                if late > GRACE_SECONDS:
                    raise SecureRoundError(
                        f"secure round {self.round_id} is still in phase {status.phase}, "
                        f"{late:.0f}s past its deadline"
                    )
            time.sleep(self.poll_seconds)

    def _send(
        self, message: AdvertiseKeys | ShareKeys | MaskedInput | UnmaskResponse
    ) -> SecAggStatus:
        """Send a message; a lost answer's retry (409 replay) counts as sent if the hub
        lists the phase as received from this site."""
        try:
            return self.hub.send_secagg(self.round_id, message)
        except HubRejected as exc:
            if exc.code == "secagg_replay":
                status = self.hub.secagg_status(self.round_id)
                if message.phase in status.sent:
                    return status
            raise SecureRoundError(str(exc)) from exc

    def _require_in(self, status: SecAggStatus, phase: Phase) -> None:
        if phase not in status.sent:
            raise SecureRoundError(
                f"secure round {self.round_id} went on without this site's {phase} message"
            )

    def join(self) -> None:
        """Advertise keys, then share them with the neighbours once every site advertised."""
        status = self.hub.secagg_status(self.round_id)
        if status.phase is not Phase.advertise:
            raise SecureRoundError(
                f"secure round {self.round_id} is past key advertisement ({status.phase}); "
                "this site joined too late"
            )
        self._client = SecAggClient(status.client_id, status.params)
        self.report(Phase.advertise)
        self._send(self.client.advertise())
        status = self._wait((Phase.share, Phase.upload, Phase.unmask))
        self._require_in(status, Phase.advertise)
        if status.phase is not Phase.share or status.directory is None:
            raise SecureRoundError(f"secure round {self.round_id} left the share phase early")
        self.report(Phase.share)
        try:
            shares = self.client.share_keys(status.directory)
        except ProtocolViolation as exc:
            raise SecureRoundError(f"cannot share keys: {exc}") from exc
        self._send(shares)

    def upload(self, values: np.ndarray, weight: int) -> None:
        """Mask and upload ``weight * values`` and ``weight``; then answer the unmask
        request, which only the sites that uploaded get."""
        status = self._wait((Phase.upload, Phase.unmask))
        self._require_in(status, Phase.share)
        if status.phase is not Phase.upload or status.inbox is None:
            raise SecureRoundError(f"secure round {self.round_id} closed its upload phase")
        self.report(Phase.upload)
        try:
            masked = self.client.masked_input(status.inbox, values, weight)
        except (ProtocolViolation, ValueError) as exc:
            raise SecureRoundError(f"cannot mask the update: {exc}") from exc
        self.masked_bytes = len(masked.masked)
        self.masked_sha256 = hashlib.sha256(masked.masked).hexdigest()
        self._send(masked)
        status = self._wait((Phase.unmask,))
        self._require_in(status, Phase.upload)
        if status.unmask_request is None:
            raise SecureRoundError(f"secure round {self.round_id} sent no unmask request")
        self.report(Phase.unmask)
        try:
            response = self.client.unmask(status.unmask_request)
        except ProtocolViolation as exc:
            raise SecureRoundError(f"cannot answer the unmask request: {exc}") from exc
        self._send(response)
