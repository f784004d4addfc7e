"""A cap on JSON request bodies, so no route reads an unbounded body into memory.

Update uploads are exempt: their route reads the body itself with its own, larger cap
(``MAX_UPLOAD_BYTES``) after authenticating the node, and counts and audits refusals.
"""

from __future__ import annotations

import re

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from services.common.body_limit import capped_receive

JSON_BODY_LIMIT = 1024 * 1024
"""Far above any legitimate JSON body here (a task with 1000 class names is ~100 KB)."""

UPLOAD_PATH = re.compile(r"/api/v1/rounds/[^/]+/updates")


class JsonBodyLimitMiddleware:
    """413 with a JSON detail for a body over the limit, declared or streamed."""

    def __init__(self, app: ASGIApp, limit: int = JSON_BODY_LIMIT) -> None:
        self.app = app
        self.limit = limit

    def _detail(self) -> str:
        return f"request body is larger than the limit of {self.limit} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or UPLOAD_PATH.fullmatch(scope["path"]):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await JSONResponse({"detail": self._detail()}, status_code=413)(scope, receive, send)
            return

        def too_large() -> HTTPException:
            return HTTPException(status_code=413, detail=self._detail())

        await self.app(scope, capped_receive(receive, self.limit, too_large), send)
