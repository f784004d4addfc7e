"""Property-based fuzzing of a running service from its own OpenAPI schema (schemathesis).

For one operation, :func:`fuzz_operation` sends a bounded number of schema-valid (positive)
and schema-violating (negative) requests with a valid token and checks each answer:

* never a 5xx;
* the ``Content-Type`` is one the schema documents for that status;
* a 2xx body matches the documented response schema;
* for a protected operation, the same request without a token, and with an unknown
  token, is refused with 401 (only for positive cases, whose path reaches the route).

Generation is derandomized, so a CI failure reproduces locally; shrinking is off to bound
the time a failure takes. Failures are collected (with a curl command to reproduce) rather
than raised at the first one, so one run reports everything it found.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.errors import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
)

POSITIVE_EXAMPLES = 12
NEGATIVE_EXAMPLES = 8
BAD_TOKEN = "Bearer this-is-not-a-token-of-this-service"


@dataclass
class FuzzResult:
    """What fuzzing one operation did and found."""

    label: str
    examples: int = 0
    auth_probes: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    def report(self) -> str:
        return f"{self.label}: {len(self.failures)} failure(s)\n" + "\n".join(self.failures[:5])


def load_schema(app: Any) -> schemathesis.BaseSchema:
    """The app's OpenAPI document as a schemathesis schema (no request needed)."""
    return schemathesis.openapi.from_dict(app.openapi())


def operation_labels(schema: schemathesis.BaseSchema) -> list[str]:
    return sorted(result.ok().label for result in schema.get_all_operations())


def _without_auth(kwargs: dict[str, Any], replacement: str | None) -> dict[str, Any]:
    headers = {k: v for k, v in kwargs.get("headers", {}).items() if k.lower() != "authorization"}
    if replacement is not None:
        headers["Authorization"] = replacement
    return {**kwargs, "headers": headers}


def _describe(case: Any, status: int, problem: str, base_url: str) -> str:
    return f"  {case.method} {case.formatted_path} -> {status}: {problem}\n    " + (
        case.as_curl_command(base_url=base_url)
    )


def fuzz_operation(
    schema: schemathesis.BaseSchema,
    label: str,
    base_url: str,
    *,
    auth: Mapping[str, str],
    protected: bool,
    path_parameters: Mapping[str, Any] | None = None,
    positive: int = POSITIVE_EXAMPLES,
    negative: int = NEGATIVE_EXAMPLES,
) -> FuzzResult:
    """Fuzz one operation of the service at ``base_url``; see the module docstring."""
    operation = schema.find_operation_by_label(label)
    assert operation is not None, f"{label} is not in the schema"
    result = FuzzResult(label)
    session = requests.Session()
    known = {
        name: value
        for name, value in (path_parameters or {}).items()
        if "{" + name + "}" in operation.path
    }

    def send(kwargs: dict[str, Any]) -> requests.Response:
        try:
            return session.request(**kwargs, timeout=60, allow_redirects=False)
        except requests.ConnectionError:
            # After a crash uvicorn drops the kept-alive connection; the crash itself was
            # reported. Retry once on a new connection: a second drop is a failure.
            session.close()
            return session.request(**kwargs, timeout=60, allow_redirects=False)

    def check(case: Any, mode: GenerationMode) -> None:
        kwargs = case.as_transport_kwargs(base_url=base_url, headers=dict(auth))
        response = send(kwargs)
        result.examples += 1
        result.statuses[response.status_code] += 1
        checks = [not_a_server_error, content_type_conformance]
        if 200 <= response.status_code < 300:
            checks.append(response_schema_conformance)
        try:
            case.validate_response(response, checks=checks)
        except FailureGroup as group:
            titles = "; ".join(sorted({f.title for f in group.exceptions}))
            result.failures.append(_describe(case, response.status_code, titles, base_url))
        if protected and mode is GenerationMode.POSITIVE:
            for replacement in (None, BAD_TOKEN):
                probe = send(_without_auth(kwargs, replacement))
                result.auth_probes += 1
                if probe.status_code != 401:
                    what = "no token" if replacement is None else "an unknown token"
                    problem = f"with {what} answered {probe.status_code}, expected 401"
                    result.failures.append(_describe(case, probe.status_code, problem, base_url))

    def runner(mode: GenerationMode, budget: int) -> Any:
        strategy = operation.as_strategy(generation_mode=mode)
        if known:  # half the cases address objects that exist, so handlers run past lookups
            strategy = st.one_of(
                strategy, operation.as_strategy(generation_mode=mode, path_parameters=known)
            )

        @given(case=strategy)
        @settings(
            max_examples=budget,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            check(case, mode)

        return run

    runner(GenerationMode.POSITIVE, positive)()
    with contextlib.suppress(Unsatisfiable):  # an operation without inputs has no negatives
        runner(GenerationMode.NEGATIVE, negative)()
    return result
