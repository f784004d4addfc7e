"""Plumbing every service uses the same way: structured logs with request ids, the
request-context middleware, bearer-token handling, validation messages, request metrics
and the ``/metrics`` answer, capped body reading, settings helpers and the hub client.

This package is not a service: services import it, and it imports no service.
"""
