"""The site's PACS over DICOMweb: find a study's instances, retrieve them, store results.

* QIDO-RS ``GET {url}/studies/{study}[/series/{series}]/instances`` lists the instances
  first, so an unknown UID is a 404 and an oversized study is refused before any pixel is
  downloaded.
* WADO-RS ``GET {url}/studies/{study}[/series/{series}]`` retrieves them as
  ``multipart/related; type="application/dicom"``. The body is streamed and cut off at
  ``max_total_bytes``; parts are then capped in number and size
  (:mod:`services.inference_api.multipart_related`).
* STOW-RS ``POST {url}/studies`` stores a result (the Structured Report).

Every failure of the PACS becomes a service error: unreachable or answering 5xx or
refusing our credentials is 502 ``pacs_error``, too slow is 504 ``pacs_timeout``, an
unknown study or series 404 ``unknown_study``. Credentials are never logged.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from services.common.problems import BadGateway, GatewayTimeout, NotFound, Unprocessable
from services.inference_api.multipart_related import (
    DICOM,
    MultipartError,
    TooLarge,
    build_related,
    parse_related,
)

DICOM_JSON = "application/dicom+json"


@dataclass(frozen=True)
class PacsLimits:
    max_instances: int
    max_instance_bytes: int
    max_total_bytes: int


class PacsClient:
    """An async DICOMweb client bound to one PACS root URL."""

    def __init__(
        self,
        url: str,
        *,
        limits: PacsLimits,
        timeout: float,
        username: str = "",
        password: str = "",
        token: str = "",
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        auth = httpx.BasicAuth(username, password) if username else None
        self.limits = limits
        self._http = httpx.AsyncClient(
            base_url=url, headers=headers, auth=auth, timeout=timeout, transport=transport
        )

    async def close(self) -> None:
        await self._http.aclose()

    @staticmethod
    def _path(study: str, series: str | None) -> str:
        return f"/studies/{study}" + (f"/series/{series}" if series else "")

    async def instance_count(self, study: str, series: str | None) -> int:
        """How many instances the study (or series) has; 404 when the PACS has none."""
        response = await self._send("GET", self._path(study, series) + "/instances", DICOM_JSON)
        if response.status_code == 204:
            found = []
        else:
            try:
                found = response.json()
            except ValueError as exc:
                raise BadGateway(
                    "the PACS answered QIDO-RS with something that is not JSON", code="pacs_error"
                ) from exc
        if not isinstance(found, list) or not found:
            raise _unknown(study, series)
        return len(found)

    async def retrieve(self, study: str, series: str | None) -> list[bytes]:
        """The instances of a study (or series) as DICOM Part 10 bytes, within the caps."""
        count = await self.instance_count(study, series)
        limits = self.limits
        if count > limits.max_instances:
            raise Unprocessable(
                f"the study has {count} instances, more than the {limits.max_instances} "
                "predicted per request (FEDMEDCLIP_INFERENCE_DICOMWEB_MAX_INSTANCES)",
                code="study_too_large",
            )
        accept = f'multipart/related; type="{DICOM}"; transfer-syntax=*'
        try:
            request = self._http.build_request(
                "GET", self._path(study, series), headers={"Accept": accept}
            )
            response = await self._http.send(request, stream=True)
            try:
                self._check(response, study, series)
                body = await self._read_capped(response)
            finally:
                await response.aclose()
        except httpx.TimeoutException as exc:
            raise GatewayTimeout("the PACS did not answer in time", code="pacs_timeout") from exc
        except httpx.HTTPError as exc:
            raise BadGateway(
                f"cannot reach the PACS: {type(exc).__name__}", code="pacs_error"
            ) from exc
        try:
            parts = parse_related(
                response.headers.get("content-type", ""),
                body,
                max_parts=limits.max_instances,
                max_part_bytes=limits.max_instance_bytes,
            )
        except TooLarge as exc:
            raise Unprocessable(f"the study is too large: {exc}", code="study_too_large") from exc
        except MultipartError as exc:
            raise BadGateway(
                f"the PACS answered WADO-RS with an unusable body: {exc}", code="pacs_error"
            ) from exc
        return [part.data for part in parts]

    async def store(self, instances: list[bytes]) -> None:
        """STOW-RS: store DICOM instances (the SR) in the PACS."""
        content_type, body = build_related(instances)
        response = await self._send(
            "POST", "/studies", DICOM_JSON, content=body, content_type=content_type
        )
        if response.status_code not in (200, 202):
            raise BadGateway(
                f"the PACS did not store the report (STOW-RS status {response.status_code})",
                code="pacs_error",
            )

    async def _read_capped(self, response: httpx.Response) -> bytes:
        cap = self.limits.max_total_bytes
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > cap:
            raise _too_big(cap)
        chunks, size = [], 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > cap:
                raise _too_big(cap)
            chunks.append(chunk)
        return b"".join(chunks)

    async def _send(
        self,
        method: str,
        path: str,
        accept: str,
        *,
        content: bytes | None = None,
        content_type: str | None = None,
    ) -> httpx.Response:
        headers = {"Accept": accept}
        if content_type:
            headers["Content-Type"] = content_type
        try:
            response = await self._http.request(method, path, headers=headers, content=content)
        except httpx.TimeoutException as exc:
            raise GatewayTimeout("the PACS did not answer in time", code="pacs_timeout") from exc
        except httpx.HTTPError as exc:
            raise BadGateway(
                f"cannot reach the PACS: {type(exc).__name__}", code="pacs_error"
            ) from exc
        if method == "GET":
            self._check(response, *_uids(path))
        return response

    @staticmethod
    def _check(response: httpx.Response, study: str, series: str | None) -> None:
        status = response.status_code
        if status == 404:
            raise _unknown(study, series)
        if status in (401, 403):
            raise BadGateway(
                f"the PACS refused the service's credentials (status {status}); check "
                "FEDMEDCLIP_INFERENCE_DICOMWEB_USERNAME/PASSWORD/TOKEN",
                code="pacs_error",
            )
        if status >= 300:
            raise BadGateway(f"the PACS answered status {status}", code="pacs_error")


def _uids(path: str) -> tuple[str, str | None]:
    parts = path.strip("/").split("/")
    return parts[1], parts[3] if len(parts) > 3 and parts[2] == "series" else None


def _unknown(study: str, series: str | None) -> NotFound:
    what = f"series {series} of study {study}" if series else f"study {study}"
    return NotFound(f"the PACS has no instances of {what}", code="unknown_study")


def _too_big(cap: int) -> Unprocessable:
    return Unprocessable(
        f"the study is larger than the {cap}-byte cap "
        "(FEDMEDCLIP_INFERENCE_DICOMWEB_MAX_TOTAL_BYTES)",
        code="study_too_large",
    )
