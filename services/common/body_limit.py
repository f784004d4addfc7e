"""Counting a request body as it streams in, so an oversized one is cut off while reading.

A ``Content-Length`` can be absent (chunked uploads) or wrong; wrapping the ASGI
``receive`` stops a client after ``limit`` bytes, before the rest is read or spooled.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import Message, Receive


def capped_receive(receive: Receive, limit: int, too_large: Callable[[], Exception]) -> Receive:
    """``receive`` that raises ``too_large()`` once more than ``limit`` body bytes came in."""
    received = 0

    async def wrapped() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise too_large()
        return message

    return wrapped
