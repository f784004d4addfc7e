"""``fedmedclip hub rounds``: open, follow, close and cancel training rounds."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table

from fedmedclip.enums import TERMINAL_ROUND_STATES, AggregationRule, RoundState
from services.commands.errors import fail
from services.commands.hub.connection import ROUND_FAILED, admin_client, invalid
from services.commands.hub.output import AsJson, console, fields_table, show, when

if TYPE_CHECKING:
    from fedmedclip.schemas import RoundInfo
    from services.common.hub_client import HubAdminClient

app = typer.Typer(no_args_is_help=True, help="Training rounds.")

RoundId = Annotated[int, typer.Argument(min=1, help="The round's id.")]


def _updates(info: RoundInfo) -> str:
    return f"{info.updates_received}/{info.min_clients}"


def _round_table(info: RoundInfo) -> Table:
    return fields_table(
        [
            ("state", info.state.value),
            ("base version", info.base_version),
            ("updates / min clients", _updates(info)),
            ("deadline", when(info.deadline)),
            ("aggregation rule", info.aggregation_rule.value),
            ("clip norm", info.clip_norm),
            ("max update norm", info.max_update_norm),
            ("hints", ", ".join(f"{k}={v}" for k, v in info.hints.model_dump().items())),
            ("result version", info.result_version),
            ("reason", info.reason),
            ("opened", when(info.created_at)),
            ("closed", when(info.closed_at)),
            *_secure_rows(info),
        ],
        title=f"round {info.id}",
    )


def _secure_rows(info: RoundInfo) -> list[tuple[str, Any]]:
    """What the table shows of a secure round: phase, sites, DP settings and epsilons."""
    if not info.secure_aggregation:
        return []
    rows: list[tuple[str, Any]] = [
        ("secure aggregation", f"phase {info.secagg_phase}"),
        ("participants", ", ".join(info.participants or [])),
    ]
    if info.dp is not None:
        rows.append(("distributed DP", ", ".join(f"{k}={v}" for k, v in info.dp)))
        rows.append(("epsilon (round / total)", f"{info.dp_epsilon} / {info.dp_epsilon_total}"))
    return rows


def _ended(info: RoundInfo) -> None:
    """Exit with ROUND_FAILED when the round ended without a model."""
    if info.state in (RoundState.failed, RoundState.cancelled):
        reason = info.reason or "no reason given"
        fail(f"round {info.id} {info.state.value}: {reason}", ROUND_FAILED)


def _key_values(pairs: list[str], what: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint=what)
        values[key.strip()] = value.strip()
    return values


@app.command("start")
def rounds_start(
    ctx: typer.Context,
    min_clients: Annotated[int, typer.Option(min=1, help="Updates needed to aggregate.")] = 1,
    deadline_seconds: Annotated[
        int | None, typer.Option(min=1, help="Seconds until the deadline (default: the hub's).")
    ] = None,
    aggregation_rule: Annotated[
        AggregationRule | None, typer.Option(help="How updates are combined.")
    ] = None,
    clip_norm: Annotated[
        float | None, typer.Option(help="Clip each update to this L2 norm.")
    ] = None,
    max_update_norm: Annotated[
        float | None, typer.Option(help="Refuse updates whose L2 norm is larger.")
    ] = None,
    base_version: Annotated[
        int | None, typer.Option(min=0, help="Version to train from (default: the newest).")
    ] = None,
    hint: Annotated[
        list[str] | None,
        typer.Option(
            help="A training hint for the sites, KEY=VALUE (repeat): local_epochs, lr, "
            "batch_size, kd_weight, kd_temperature, adaptive_kd, prune_weight, calibrate."
        ),
    ] = None,
    secure_aggregation: Annotated[
        bool, typer.Option(help="The hub learns only the sum of the updates.")
    ] = False,
    participant: Annotated[
        list[str] | None,
        typer.Option(help="A node of a secure round (repeat; default: every active node)."),
    ] = None,
    dp: Annotated[
        list[str] | None,
        typer.Option(
            help="Distributed DP of a secure round, KEY=VALUE (repeat): noise_multiplier, "
            "clip_norm, delta."
        ),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Open a round (refused while another one is open)."""
    from fedmedclip.schemas import RoundCreate

    body: dict[str, Any] = {"min_clients": min_clients}
    optional = {
        "deadline_seconds": deadline_seconds,
        "aggregation_rule": aggregation_rule,
        "clip_norm": clip_norm,
        "max_update_norm": max_update_norm,
        "base_version": base_version,
        "secure_aggregation": secure_aggregation or None,
        "participants": participant or None,
    }
    body |= {key: value for key, value in optional.items() if value is not None}
    if hint:
        body["hints"] = _key_values(hint, "--hint")
    if dp:
        body["dp"] = _key_values(dp, "--dp")
    try:
        request = RoundCreate.model_validate(body)
    except ValidationError as exc:
        invalid(exc)
    with admin_client(ctx) as hub:
        info = hub.open_round(request)
    show(info, as_json, _round_table(info))


@app.command("list")
def rounds_list(
    ctx: typer.Context,
    state: Annotated[RoundState | None, typer.Option(help="Only rounds in this state.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")] = 20,
    as_json: AsJson = False,
) -> None:
    """List rounds, newest first."""
    with admin_client(ctx) as hub:
        rounds = hub.list_rounds(state, limit)
    table = Table("id", "state", "base", "updates", "rule", title="rounds")
    table.add_column("deadline", no_wrap=True)
    table.add_column("result")
    for info in rounds:
        table.add_row(
            str(info.id),
            info.state.value,
            f"v{info.base_version}",
            _updates(info),
            info.aggregation_rule.value,
            when(info.deadline),
            "-" if info.result_version is None else f"v{info.result_version}",
        )
    show(rounds, as_json, table)


@app.command("show")
def rounds_show(ctx: typer.Context, round_id: RoundId, as_json: AsJson = False) -> None:
    """Show one round."""
    with admin_client(ctx) as hub:
        info = hub.get_round(round_id)
    show(info, as_json, _round_table(info))


def _remaining(deadline: datetime) -> str:
    if deadline.tzinfo is None:
        deadline = deadline.replace(tzinfo=UTC)
    seconds = int((deadline - datetime.now(UTC)).total_seconds())
    if seconds <= 0:
        return "passed"
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"in {hours}h {minutes:02d}m {seconds:02d}s"
    return f"in {minutes}m {seconds:02d}s"


def _progress(info: RoundInfo) -> Table:
    """The live view of ``rounds watch``: state, updates against min_clients, deadline."""
    status = Table.grid(padding=(0, 2))
    status.add_column(style="bold")
    status.add_column()
    status.add_row("round", f"{info.id} ({info.state.value})")
    bar = Table.grid(padding=(0, 1))
    bar.add_row(
        ProgressBar(total=info.min_clients, completed=info.updates_received, width=30),
        f"{_updates(info)} updates",
    )
    status.add_row("updates", bar)
    status.add_row("deadline", f"{when(info.deadline)} ({_remaining(info.deadline)})")
    if info.result_version is not None:
        status.add_row("published", f"model v{info.result_version}")
    if info.reason:
        status.add_row("reason", info.reason)
    return status


def _poll(hub: HubAdminClient, info: RoundInfo, interval: float) -> Iterator[RoundInfo]:
    """The round as given, then as the hub has it every ``interval`` seconds, until it ends."""
    yield info
    while info.state not in TERMINAL_ROUND_STATES:
        time.sleep(interval)
        info = hub.get_round(info.id)
        yield info


def _changes(rounds: Iterator[RoundInfo]) -> Iterator[RoundInfo]:
    shown = None
    for info in rounds:
        if info != shown:
            yield info
            shown = info


def _summary(info: RoundInfo) -> str:
    """One line of ``rounds watch`` where no live view can be drawn (a log, a pipe)."""
    line = (
        f"round {info.id} {info.state.value}: {_updates(info)} updates, "
        f"deadline {when(info.deadline)}"
    )
    if info.result_version is not None:
        line += f", model v{info.result_version}"
    return line + (f" ({info.reason})" if info.reason else "")


@app.command("watch")
def rounds_watch(
    ctx: typer.Context,
    round_id: RoundId,
    interval: Annotated[
        float, typer.Option(min=0.05, help="Seconds between two looks at the round.")
    ] = 2.0,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the round as a JSON line at each change.")
    ] = False,
) -> None:
    """Follow a round until it ends: a live view in a terminal, a line per change otherwise.
    Exit 0 once it publishes a model, 3 if it fails or is cancelled."""
    terminal = console()
    with admin_client(ctx) as hub:
        info = hub.get_round(round_id)
        rounds = _poll(hub, info, interval)
        if as_json or not terminal.is_terminal:
            for info in _changes(rounds):
                typer.echo(info.model_dump_json() if as_json else _summary(info))
        else:
            with Live(_progress(info), console=terminal, refresh_per_second=4) as live:
                for info in rounds:
                    live.update(_progress(info))
    _ended(info)
    if not as_json:
        typer.echo(f"round {info.id} published model v{info.result_version}")


@app.command("close")
def rounds_close(ctx: typer.Context, round_id: RoundId, as_json: AsJson = False) -> None:
    """Aggregate a round now rather than at its deadline (exit 3 if too few updates came,
    which fails the round)."""
    with admin_client(ctx) as hub:
        info = hub.close_round(round_id)
    show(info, as_json, _round_table(info))
    _ended(info)


@app.command("cancel")
def rounds_cancel(ctx: typer.Context, round_id: RoundId, as_json: AsJson = False) -> None:
    """Cancel an open round: its updates are kept but never aggregated."""
    with admin_client(ctx) as hub:
        info = hub.cancel_round(round_id)
    show(info, as_json, _round_table(info))
