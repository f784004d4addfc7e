"""Follow the hub's production global version: find it, download it, check it, store it.

Only two read calls of the hub contract are needed, made with the site's node token
through the shared :class:`services.common.hub_client.HubClient`. No retries here: the
model manager polls periodically, so a failed call is simply tried again at the next poll
while the service keeps serving the model it has.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable

from fedmedclip.model_store import ModelStore
from fedmedclip.schemas import ModelInfo
from services.common.hub_client import HubClient, ensure_global


class HubFollower:
    """Keeps the site's model store holding the hub's production global version."""

    def __init__(
        self,
        base_url: str,
        token: str | Callable[[], str],
        store: ModelStore,
        timeout: float = 30.0,
        verify: ssl.SSLContext | bool = True,
    ):
        self.base_url = base_url
        self.store = store
        self.production: ModelInfo | None = None  # last production version seen
        self._in_store: tuple[int, str] | None = None  # (version, sha256) known to be stored
        self._hub = HubClient(base_url, token, retries=0, timeout_seconds=timeout, verify=verify)

    def close(self) -> None:
        self._hub.close()

    def sync(self) -> ModelInfo:
        """Make sure the production version is in the store, byte for byte, and return it.

        Raises :class:`services.common.hub_client.HubError` when the hub cannot say or
        serve it.
        """
        info = self._hub.model_info("production")
        if self._in_store != (info.version, info.blob_sha256):
            ensure_global(self._hub, self.store, info)
            self._in_store = (info.version, info.blob_sha256)
        self.production = info
        return info
