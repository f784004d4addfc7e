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
from services.inference_api.multipart_related import (
    DICOM,
    MultipartError,
    TooLarge,
    parse_related,
    related_type,
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
    """The files sent in multipart ``field`` (1 to ``max_files``, each <= ``max_bytes``),
    or the DICOM instances of a STOW-RS style ``multipart/related`` body."""
    content_type = request.headers.get("content-type", "")
    related = related_type(content_type)
    if related is not None:
        return await _read_related(request, content_type, related, max_files, max_bytes)
    if not content_type.lower().startswith("multipart/form-data"):
        raise UnsupportedMediaType(
            f"send the image as multipart/form-data with a '{field}' field, or DICOM as "
            f'multipart/related; type="{DICOM}" (got content type {content_type or "none"!r})'
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


async def _read_related(
    request: Request, content_type: str, related: str, max_files: int, max_bytes: int
) -> list[Upload]:
    """DICOM instances sent the STOW-RS way (the route's body cap bounds the read)."""
    if related != DICOM:
        raise UnsupportedMediaType(
            f'multipart/related bodies must have type="{DICOM}" (got {related or "none"!r})'
        )
    body = await request.body()
    try:
        parts = parse_related(content_type, body, max_parts=max_files, max_part_bytes=max_bytes)
    except TooLarge as exc:
        raise PayloadTooLarge(
            f"multipart/related body: {exc} (caps: {max_files} parts of {max_bytes} bytes)"
        ) from exc
    except MultipartError as exc:
        raise InvalidRequest(
            f"malformed multipart/related body: {exc}", code="bad_multipart"
        ) from exc
    for number, part in enumerate(parts, start=1):
        if part.content_type != DICOM:
            raise UnsupportedMediaType(f"part {number} is {part.content_type}, not {DICOM}")
    return [Upload(None, part.data) for part in parts]
