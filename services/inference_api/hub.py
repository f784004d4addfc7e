"""Follow the hub's production global version: find it, download it, check it, store it.

Only two read calls of the hub contract are needed, with the site's node token. No retry
loop here: the model manager polls periodically, so a failed call is simply tried again at
the next poll while the service keeps serving the model it has.
"""

from __future__ import annotations

import logging

import httpx
from pydantic import ValidationError

from fedmedclip.model_store import ModelBlobError, ModelStore, blob_sha256, decode_blob
from fedmedclip.schemas import ModelInfo

log = logging.getLogger(__name__)

MAX_MODEL_BYTES = 256 * 1024 * 1024
"""A global adapter is a few MB; anything far larger is not a model we asked for."""


class HubError(RuntimeError):
    """The hub could not tell us its production version or serve an intact blob."""


class HubFollower:
    """Keeps the site's model store holding the hub's production global version."""

    def __init__(self, base_url: str, token: str, store: ModelStore, timeout: float = 30.0):
        self.base_url = base_url
        self.store = store
        self.production: ModelInfo | None = None  # last production version seen
        self._in_store: tuple[int, str] | None = None  # (version, sha256) known to be stored
        self._http = httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout
        )

    def close(self) -> None:
        self._http.close()

    def sync(self) -> ModelInfo:
        """Make sure the production version is in the store, byte for byte, and return it.

        The sha256 is compared too, not only the number: a hub whose task was reset
        publishes a new version 0 that replaces the old one.
        """
        info = self._production_info()
        if self._in_store != (info.version, info.blob_sha256):
            stored = self.store.has_global(info.version) and (
                self.store.load_global(info.version).sha256 == info.blob_sha256
            )
            if not stored:
                self.store.save_global_blob(info.version, self._download(info))
                log.info(
                    "downloaded production global model from the hub",
                    extra={"fields": {"version": info.version, "sha256": info.blob_sha256}},
                )
            self._in_store = (info.version, info.blob_sha256)
        self.production = info
        return info

    def _fail(self, what: str, response: httpx.Response) -> HubError:
        detail = response.text[:300]
        return HubError(f"the hub answered {response.status_code} for {what}: {detail}")

    def _production_info(self) -> ModelInfo:
        what = "the production version"
        try:
            response = self._http.get("/api/v1/models/production")
        except httpx.HTTPError as exc:
            raise HubError(f"cannot reach the hub at {self.base_url} for {what}: {exc}") from exc
        if response.status_code != 200:
            raise self._fail(what, response)
        try:
            return ModelInfo.model_validate_json(response.content)
        except ValidationError as exc:
            raise HubError(f"unexpected production model info from the hub: {exc}") from exc

    def _download(self, info: ModelInfo) -> bytes:
        """The blob of ``info.version``, size-capped while streaming and verified against
        the sha256 the hub published (in the model info and in the response header)."""
        what = f"the blob of model {info.version}"
        chunks: list[bytes] = []
        size = 0
        try:
            with self._http.stream("GET", f"/api/v1/models/{info.version}/blob") as response:
                if response.status_code != 200:
                    response.read()
                    raise self._fail(what, response)
                announced = response.headers.get("X-Model-SHA256", info.blob_sha256)
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > MAX_MODEL_BYTES:
                        raise HubError(f"{what} is larger than the {MAX_MODEL_BYTES} byte cap")
                    chunks.append(chunk)
        except httpx.HTTPError as exc:
            raise HubError(f"cannot download {what} from {self.base_url}: {exc}") from exc
        data = b"".join(chunks)
        digest = blob_sha256(data)
        if digest != info.blob_sha256 or announced != info.blob_sha256:
            raise HubError(
                f"{what} failed its integrity check: sha256 {digest}, expected {info.blob_sha256}"
            )
        try:
            _, meta = decode_blob(data)
        except ModelBlobError as exc:
            raise HubError(f"{what} is not a model blob: {exc}") from exc
        if meta.get("version") != info.version:
            raise HubError(f"{what} says it is version {meta.get('version')!r}")
        return data
