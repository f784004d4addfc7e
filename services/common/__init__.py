"""Plumbing every service uses the same way: the problem-details error model, structured
logs with request ids, the request-context middleware, bearer-token handling, request
metrics and the ``/metrics`` answer, settings helpers and the hub client.

This package is not a service: services import it, and it imports no service.
"""
