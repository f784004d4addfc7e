"""Read uploaded files from a multipart request, refusing oversized ones while reading.

The body is counted as it streams in: a client sending gigabytes is cut off once the cap
is passed (413), before the rest is read or spooled to disk. The per-file cap is then
checked exactly on each parsed part.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request

from services.common.body_limit import capped_receive
from services.inference_api.errors import ApiError

MULTIPART_OVERHEAD = 64 * 1024
"""Room per file for multipart boundaries and part headers on top of the file cap."""


@dataclass(frozen=True)
class Upload:
    """One uploaded file, fully read."""

    filename: str | None
    data: bytes

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


class _BodyTooLarge(Exception):
    pass


def _too_large(cap: int) -> ApiError:
    return ApiError(413, f"request body is larger than the {cap}-byte cap for this request")


async def read_uploads(
    request: Request, *, field: str, max_files: int, max_bytes: int
) -> list[Upload]:
    """The files sent in multipart ``field`` (1 to ``max_files``, each <= ``max_bytes``)."""
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise ApiError(
            415,
            f"send the image as multipart/form-data with a '{field}' field "
            f"(got content type {content_type or 'none'!r})",
        )
    body_cap = max_files * (max_bytes + MULTIPART_OVERHEAD)
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, f"invalid Content-Length header {declared!r}")
        if int(declared) > body_cap:
            raise _too_large(body_cap)
    capped = Request(
        request.scope, receive=capped_receive(request.receive, body_cap, _BodyTooLarge)
    )
    try:
        form = await capped.form(max_files=max_files, max_fields=max_files)
    except _BodyTooLarge:
        raise _too_large(body_cap) from None
    except HTTPException as exc:  # malformed multipart, too many files or fields
        raise ApiError(exc.status_code, f"malformed multipart request: {exc.detail}") from exc
    try:
        values = form.getlist(field)
        if not values:
            raise ApiError(422, f"multipart field '{field}' is required (the image file)")
        uploads = []
        for value in values:
            if not isinstance(value, UploadFile):
                raise ApiError(422, f"multipart field '{field}' must be a file, not text")
            if value.size is not None and value.size > max_bytes:
                raise ApiError(
                    413,
                    f"file {value.filename!r} is {value.size} bytes, more than the "
                    f"{max_bytes}-byte cap per file",
                )
            uploads.append(Upload(value.filename, await value.read()))
        return uploads
    finally:
        await form.close()
