"""Domain errors. Each carries the HTTP status it maps to and a message naming the problem.

Domain modules raise these; one exception handler in the app turns them into
``{"detail": message}`` responses, so routers stay free of error translation.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base class: a request that cannot be honoured, with a human-readable reason."""

    status_code = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidRequest(ServiceError):
    status_code = 400


class Unauthenticated(ServiceError):
    status_code = 401


class Forbidden(ServiceError):
    status_code = 403


class NotFound(ServiceError):
    status_code = 404


class Conflict(ServiceError):
    status_code = 409


class PayloadTooLarge(ServiceError):
    status_code = 413


class Unavailable(ServiceError):
    status_code = 503
