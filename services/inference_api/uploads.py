"""Read uploaded files from a multipart request.

The whole body is capped by the route's ``max_body_size`` (:func:`body_limit`): a client
sending gigabytes, declared or chunked, is cut off with a 413 once the cap is passed,
before the rest is read or spooled to disk. The per-file cap is then checked exactly on
each parsed part.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request

from services.common.problems import (
    InvalidRequest,
    PayloadTooLarge,
    Unprocessable,
    UnsupportedMediaType,
)

MULTIPART_OVERHEAD = 64 * 1024
"""Room per file for multipart boundaries and part headers on top of the file cap."""


def body_limit(max_files: int, max_bytes: int) -> int:
    """The body cap of a request carrying up to ``max_files`` files of ``max_bytes`` each."""
    return max_files * (max_bytes + MULTIPART_OVERHEAD)


@dataclass(frozen=True)
class Upload:
    """One uploaded file, fully read."""

    filename: str | None
    data: bytes

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


async def read_uploads(
    request: Request, *, field: str, max_files: int, max_bytes: int
) -> list[Upload]:
    """The files sent in multipart ``field`` (1 to ``max_files``, each <= ``max_bytes``)."""
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise UnsupportedMediaType(
            f"send the image as multipart/form-data with a '{field}' field "
            f"(got content type {content_type or 'none'!r})"
        )
    try:
        form = await request.form(max_files=max_files, max_fields=max_files)
    except HTTPException as exc:
        if exc.status_code == 413:  # the route's body limit: the handlers name it
            raise
        # malformed multipart, too many files or fields
        raise InvalidRequest(
            f"malformed multipart request: {exc.detail}", code="bad_multipart"
        ) from exc
    try:
        values = form.getlist(field)
        if not values:
            raise Unprocessable(f"multipart field '{field}' is required (the image file)")
        uploads = []
        for value in values:
            if not isinstance(value, UploadFile):
                raise Unprocessable(f"multipart field '{field}' must be a file, not text")
            if value.size is not None and value.size > max_bytes:
                raise PayloadTooLarge(
                    f"file {value.filename!r} is {value.size} bytes, more than the "
                    f"{max_bytes}-byte cap per file"
                )
            uploads.append(Upload(value.filename, await value.read()))
        return uploads
    finally:
        await form.close()
