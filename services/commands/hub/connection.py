"""How ``fedmedclip hub`` reaches the hub, and how the hub's refusals become exit codes.

The group's options (URL, token, CA bundle, timeout, retries) are kept in a
:class:`Connection` on the Typer context; :func:`admin_client` opens the admin client only
when a command runs, so ``--help`` needs neither a hub nor the core library (torch).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer
from pydantic import ValidationError

from services.commands.errors import USAGE, fail

if TYPE_CHECKING:
    from services.common.hub_client import HubAdminClient

REFUSED = 1
"""Exit code: the hub refused (its problem is shown), or its answer failed a check."""
UNUSABLE = USAGE
"""Exit code: the command could not be sent (bad input, no URL or token, no hub)."""
ROUND_FAILED = 3
"""Exit code of ``rounds watch`` and ``rounds close``: the round ended without a model."""


@dataclass(frozen=True)
class Connection:
    """How to reach the hub, from the group's options; used only when a command runs."""

    url: str | None
    token: str | None
    ca_bundle: Path | None
    timeout_seconds: float
    retries: int


def invalid(exc: ValidationError) -> NoReturn:
    """Input the schemas refuse, as one line naming each field."""
    problems = "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'input'}: {error['msg']}"
        for error in exc.errors(include_url=False)
    )
    fail(problems, UNUSABLE)


@contextmanager
def admin_client(ctx: typer.Context) -> Iterator[HubAdminClient]:
    """An admin client for the hub the options name; its failures become one line and an
    exit code (see :mod:`services.commands.hub`), never a traceback."""
    from services.common.hub_client import HubAdminClient, HubError, HubRejected, HubUnavailable
    from services.common.serving import TlsConfigError, client_tls

    connection = ctx.find_object(Connection)
    assert connection is not None  # set by the group callback
    if not connection.url:
        fail("no hub URL: pass --url or set FEDMEDCLIP_HUB_URL", UNUSABLE)
    if not connection.token:
        fail("no admin token: set FEDMEDCLIP_HUB_TOKEN (or pass --token)", UNUSABLE)
    try:
        verify = client_tls(connection.ca_bundle)
    except TlsConfigError as exc:
        fail(str(exc), UNUSABLE)
    try:
        with HubAdminClient(
            connection.url,
            connection.token,
            retries=connection.retries,
            timeout_seconds=connection.timeout_seconds,
            verify=verify,
        ) as client:
            yield client
    except HubRejected as exc:
        fail(f"{exc.detail} ({exc.code or 'no code'}, HTTP {exc.status_code})", REFUSED)
    except HubUnavailable as exc:
        fail(str(exc), UNUSABLE)
    except HubError as exc:
        fail(str(exc), REFUSED)
    except ValidationError as exc:  # the client checks what it sends with the shared schemas
        invalid(exc)
