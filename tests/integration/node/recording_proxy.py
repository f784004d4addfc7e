"""A forwarding HTTP proxy that records every request, to see exactly what a node sends."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from starlette.requests import Request
from starlette.responses import Response

_HOP_HEADERS = {"host", "content-length", "transfer-encoding", "connection"}


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


class RecordingProxy:
    """ASGI app: forwards to ``target`` and appends each request to ``self.requests``."""

    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self.requests: list[Recorded] = []

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.requests.append(
            Recorded(request.method, request.url.path, request.url.query, headers, body)
        )
        async with httpx.AsyncClient(base_url=self.target, timeout=30) as client:
            upstream = await client.request(
                request.method,
                request.url.path,
                params=request.url.query,
                content=body,
                headers={k: v for k, v in headers.items() if k not in _HOP_HEADERS},
            )
        response = Response(
            upstream.content,
            status_code=upstream.status_code,
            headers={
                k: v
                for k, v in upstream.headers.items()
                if k.lower() not in _HOP_HEADERS | {"content-encoding"}
            },
        )
        await response(scope, receive, send)
