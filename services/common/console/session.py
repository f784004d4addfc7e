"""The console's session: one signed cookie, no server-side state.

The cookie holds who signed in (``who``, the actor written to audit records), how
(``via``: ``token`` today; a single sign-on flow stores ``oidc`` and the person's id), the
synchronizer CSRF token of the session, and at most one flash message for the next page.
It is signed with itsdangerous (HMAC-SHA1 over a derived key) and expires after
:data:`SESSION_MAX_AGE`; a cookie that does not verify counts as no session at all.

The cookie is ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no other site's
page sends it) and ``Secure`` whenever the request came over HTTPS. Being stateless, a
session cannot be revoked before it expires except by changing the secret, which ends
every session: the price of needing no session table in either service.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, replace

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

COOKIE = "fedmedclip_console"
SESSION_MAX_AGE = 8 * 3600
"""A working day: long enough not to interrupt an operator, short enough to bound a leak."""

_SALT = "fedmedclip.console.session"


@dataclass(frozen=True)
class Session:
    """One browser's console session; ``who`` is None before sign-in."""

    csrf: str
    who: str | None = None
    via: str | None = None
    flash: tuple[str, str] | None = None  # (kind, message) shown once on the next page

    @property
    def signed_in(self) -> bool:
        return self.who is not None


def new_session(who: str | None = None, via: str | None = None) -> Session:
    """A session with a fresh CSRF token (issued again at sign-in: no session fixation)."""
    return Session(csrf=secrets.token_urlsafe(32), who=who, via=via)


class SessionCodec:
    """Signs sessions into cookies and reads them back."""

    def __init__(self, secret: str | None) -> None:
        # Random per process unless configured: sessions then end when the process restarts
        # and are not shared between replicas, which is safe; set the secret to share them.
        self._serializer = URLSafeTimedSerializer(secret or secrets.token_urlsafe(32), _SALT)

    def read(self, request: Request) -> Session | None:
        raw = request.cookies.get(COOKIE)
        if not raw:
            return None
        try:
            data = self._serializer.loads(raw, max_age=SESSION_MAX_AGE)
        except BadSignature:  # also covers an expired signature
            return None
        if not isinstance(data, dict) or not isinstance(data.get("csrf"), str):
            return None
        flash = data.get("flash")
        return Session(
            csrf=data["csrf"],
            who=data.get("who"),
            via=data.get("via"),
            flash=tuple(flash) if isinstance(flash, list) and len(flash) == 2 else None,
        )

    def write(self, request: Request, response: Response, session: Session) -> None:
        payload = {"csrf": session.csrf, "who": session.who, "via": session.via}
        if session.flash is not None:
            payload["flash"] = list(session.flash)
        response.set_cookie(
            COOKIE,
            self._serializer.dumps(payload),
            max_age=SESSION_MAX_AGE,
            path="/console",
            httponly=True,
            secure=request.url.scheme == "https",
            samesite="strict",
        )

    def clear(self, request: Request, response: Response) -> None:
        response.delete_cookie(
            COOKIE,
            path="/console",
            httponly=True,
            secure=request.url.scheme == "https",
            samesite="strict",
        )


def with_flash(session: Session, kind: str, message: str) -> Session:
    return replace(session, flash=(kind, message))
