"""``multipart/related`` bodies (DICOMweb: WADO-RS answers, STOW-RS requests).

Parsing uses the standard library's MIME parser (``email``) rather than hand-written
boundary splitting. The caller bounds the body before it gets here (the route's body cap,
or the PACS client's byte cap while streaming); this module then bounds the number of parts
and the size of each, and names what is wrong in a :class:`MultipartError`.

Building a body (a STOW-RS request to the PACS) is writing bytes in a fixed layout, so it
is done here by hand.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesParser
from email.policy import HTTP

DICOM = "application/dicom"


class MultipartError(ValueError):
    """The body is not a usable multipart/related message."""


class TooLarge(MultipartError):
    """A part, or the number of parts, passes its cap."""


@dataclass(frozen=True)
class Part:
    content_type: str
    data: bytes


def _header(content_type: str) -> Message:
    return BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1", "replace") + b"\r\n\r\n",
        headersonly=True,
    )


def related_type(content_type: str) -> str | None:
    """The ``type`` parameter of a multipart/related content type (None if not related)."""
    header = _header(content_type)
    if header.get_content_type() != "multipart/related":
        return None
    value = header.get_param("type")
    return str(value).strip().lower() if value else ""


def parse_related(
    content_type: str, body: bytes, *, max_parts: int, max_part_bytes: int
) -> list[Part]:
    """The parts of a multipart/related ``body`` whose header is ``content_type``."""
    header = _header(content_type)
    if header.get_content_type() != "multipart/related":
        raise MultipartError(f"expected multipart/related, got {header.get_content_type()}")
    if not header.get_param("boundary"):
        raise MultipartError("the multipart/related content type has no boundary")
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1", "replace") + b"\r\n\r\n" + body
    )
    if not message.is_multipart():
        raise MultipartError("the body has no parts")
    if message.defects:
        raise MultipartError(f"malformed multipart body: {message.defects[0].__class__.__name__}")
    parts = []
    for number, part in enumerate(message.iter_parts(), start=1):
        if number > max_parts:
            raise TooLarge(f"more than {max_parts} parts")
        data = part.get_payload(decode=True)
        if not isinstance(data, bytes):
            raise MultipartError(f"part {number} has no payload")
        if len(data) > max_part_bytes:
            raise TooLarge(f"part {number} is {len(data)} bytes, more than {max_part_bytes}")
        parts.append(Part(part.get_content_type(), data))
    if not parts:
        raise MultipartError("the body has no parts")
    return parts


def build_related(parts: Sequence[bytes], part_type: str = DICOM) -> tuple[str, bytes]:
    """(content type, body) of a multipart/related message of ``parts``."""
    boundary = secrets.token_hex(16)
    chunks = []
    for data in parts:
        chunks.append(f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode())
        chunks.append(data)
        chunks.append(b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    content_type = f'multipart/related; type="{part_type}"; boundary={boundary}'
    return content_type, b"".join(chunks)
