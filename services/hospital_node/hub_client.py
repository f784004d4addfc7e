"""The node's connection to the hub: :class:`services.common.hub_client.HubClient` set up
from the node settings (retries with exponential backoff, timeouts).

Jobs retry as configured; calls made while an admin waits for an answer (the API, the
agent's poll, the round watch during training) give up sooner.
"""

from __future__ import annotations

from services.common.hub_client import HubClient, HubError, HubRejected
from services.common.problems import BadGateway, Conflict, Unavailable
from services.hospital_node.settings import NodeSettings

INTERACTIVE_RETRIES = 1
"""Hub retries while an admin waits for an answer (jobs retry as configured)."""
INTERACTIVE_TIMEOUT_SECONDS = 10.0


def connect_hub(settings: NodeSettings, *, interactive: bool = False) -> HubClient:
    """A client for the configured hub; an interactive one gives up sooner."""
    retries, timeout = settings.hub_retries, settings.hub_timeout_seconds
    if interactive:
        retries = min(retries, INTERACTIVE_RETRIES)
        timeout = min(timeout, INTERACTIVE_TIMEOUT_SECONDS)
    return HubClient(
        settings.aggregator_url,
        settings.live_token("node_token"),
        retries=retries,
        backoff_seconds=settings.hub_backoff_seconds,
        timeout_seconds=timeout,
        verify=settings.hub_tls(),
    )


def federation_classes(settings: NodeSettings) -> list[str]:
    """The federation's class names, which a dataset is validated against.

    409 while the hub has no task, 502 for any other refusal by the hub, 503 when the hub
    cannot be reached: the admin waiting for an answer learns which side to look at.
    """
    try:
        with connect_hub(settings, interactive=True) as hub:
            return hub.get_task().class_names
    except HubRejected as exc:
        if exc.status_code == 404:
            raise Conflict(
                "the federation has no task yet, so there are no classes to check the "
                "dataset against; register it once the hub admin has set the task",
                code="no_task",
            ) from exc
        raise BadGateway(str(exc), code="hub_rejected") from exc
    except HubError as exc:
        raise Unavailable(str(exc), code="hub_unavailable") from exc
