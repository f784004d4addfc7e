"""Plumbing every service uses the same way: structured logs with request ids, the
request-context middleware, bearer-token handling and validation messages.

This package is not a service: services import it, and it imports no service.
"""
