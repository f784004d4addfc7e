"""The node's connection to the hub: :class:`services.common.hub_client.HubClient` set up
from the node settings (retries with exponential backoff, timeouts).

Jobs retry as configured; calls made while an admin waits for an answer (the API, the
agent's poll, the round watch during training) give up sooner.
"""

from __future__ import annotations

from services.common.hub_client import HubClient
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
        settings.node_token.get_secret_value(),
        retries=retries,
        backoff_seconds=settings.hub_backoff_seconds,
        timeout_seconds=timeout,
    )
