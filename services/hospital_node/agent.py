"""The node's background agent: job monitor, round follower and model puller.

It runs in a thread of the API process and only opens outbound connections, as hospital
firewalls expect. Every ``poll_seconds`` it

* fails running jobs whose heartbeat stopped (their worker died), always;
* with auto-join, asks the hub for open rounds and starts one job for each round the
  node has never worked on (a failed round is not retried automatically: a fault that
  repeats would loop; the admin retries with ``POST /api/v1/jobs``), except secure rounds
  the admin opened for other sites: their job could only fail;
* with auto-join, copies the hub's production model into the model store, so that the
  site's inference API can follow the federation without talking to the hub itself.
"""

from __future__ import annotations

import logging
import threading
import time

from fedmedclip.model_store import ModelStore
from fedmedclip.schemas import RoundInfo
from services.common.hub_client import HubClient, HubError, ensure_global
from services.hospital_node.context import NodeContext
from services.hospital_node.datasets import has_datasets
from services.hospital_node.hub_client import connect_hub
from services.hospital_node.jobs import (
    EnqueueError,
    JobConflict,
    long_queued_jobs,
    reap_stale_jobs,
    round_has_job,
    start_job,
)

log = logging.getLogger(__name__)


class Agent:
    """Polls on a daemon thread until :meth:`stop`."""

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="node-agent", daemon=True)
        self._resent: dict[int, float] = {}  # job id -> when its message was last re-sent

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.tick()
            self._stop.wait(self.ctx.settings.poll_seconds)

    def tick(self) -> None:
        """One poll; faults are logged and counted, never fatal to the agent."""
        try:
            with self.ctx.db.write() as session:
                reaped = reap_stale_jobs(session, self.ctx.settings.job_stale_seconds)
            for job_id in reaped:
                log.warning("job %d lost its worker", job_id)
            self._resend_lost_messages()
            if self.ctx.settings.auto_join:
                with connect_hub(self.ctx.settings, interactive=True) as hub:
                    self._join_open_rounds(hub)
                    self._pull_production(hub)
            self.ctx.metrics.agent_polls.labels("ok").inc()
        except HubError as exc:
            self.ctx.metrics.agent_polls.labels("hub_error").inc()
            log.warning("agent poll failed: %s", exc)
        except Exception:
            self.ctx.metrics.agent_polls.labels("error").inc()
            log.exception("agent poll crashed")

    def _resend_lost_messages(self) -> None:
        """Re-send jobs queued for long, at most once per stale period each (a broker that
        lost its data would otherwise leave them queued forever)."""
        stale = self.ctx.settings.job_stale_seconds
        now = time.monotonic()
        with self.ctx.db.read() as session:
            queued = long_queued_jobs(session, stale)
        for job_id in queued:
            if now - self._resent.get(job_id, float("-inf")) >= stale:
                self._resent[job_id] = now
                log.warning("job %d still queued after %g s: sending it again", job_id, stale)
                self.ctx.runner.submit(job_id)

    def _join_open_rounds(self, hub: HubClient) -> None:
        open_rounds = hub.open_rounds()
        with self.ctx.db.read() as session:
            new = [r for r in open_rounds if not round_has_job(session, r.id)]
            datasets = has_datasets(session)
        rounds = [r for r in new if self._takes_part(hub, r)]
        if rounds and not datasets:
            log.warning("round %d is open but no dataset is registered; not joining", rounds[0].id)
            return
        for round_info in rounds:
            try:
                job = start_job(self.ctx.db, self.ctx.runner, round_info.id, "agent")
                log.info("joined round %d with job %d", round_info.id, job.id)
            except (JobConflict, EnqueueError) as exc:
                log.warning("could not join round %d: %s", round_info.id, exc)

    @staticmethod
    def _takes_part(hub: HubClient, round_info: RoundInfo) -> bool:
        """Whether this node is a site of the round: every node is one of a plain round; a
        secure round fixed its participants when it opened."""
        if not round_info.secure_aggregation or round_info.participants is None:
            return True
        return hub.identity().name in round_info.participants

    def _pull_production(self, hub: HubClient) -> None:
        info = hub.model_info("production")
        store: ModelStore = self.ctx.store
        if not store.has_global(info.version):
            ensure_global(hub, store, info)
            log.info("pulled production model v%d into the model store", info.version)
