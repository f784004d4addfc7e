"""``fedmedclip hub``: run a federation from a terminal or a script, over the hub's HTTP API.

Every command is one or a few calls of :class:`~services.common.hub_client.HubAdminClient`
(so the admin CLI, the demo and the sites speak the hub's API through one client), shown as a
table, or printed as JSON with ``--json`` for scripts. The hub's refusals arrive as RFC 9457
problems and are shown as one line, ``error: <detail> (<code>, HTTP <status>)``.

Exit codes, so that scripts can tell the cases apart:

* 0: done;
* 1: the hub refused (its problem is shown), or its answer failed a check (a model blob
  whose sha256 is not the one published);
* 2: the command could not be sent: bad usage or input, no URL or token, an unusable CA
  bundle, the hub unreachable after the retries;
* 3: ``rounds watch``/``rounds close``: the round ended without publishing a model
  (failed or cancelled).

The hub client pulls in the core library (torch); it is imported when a command runs, so
``fedmedclip --help`` stays quick.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from pydantic_core import to_jsonable_python
from rich.console import Console
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table

from fedmedclip.enums import TERMINAL_ROUND_STATES, AggregationRule, Quantization, RoundState

if TYPE_CHECKING:
    from fedmedclip.schemas import ModelInfo, NodeCreated, NodeInfo, RoundInfo, TaskSpec
    from services.common.hub_client import HubAdminClient

REFUSED = 1
UNUSABLE = 2
ROUND_FAILED = 3
AUDIT_DETAILS_CHARS = 80

app = typer.Typer(no_args_is_help=True, pretty_exceptions_show_locals=False)
task_app = typer.Typer(no_args_is_help=True, help="The task the federation learns.")
nodes_app = typer.Typer(no_args_is_help=True, help="Hospital nodes and their tokens.")
rounds_app = typer.Typer(no_args_is_help=True, help="Training rounds.")
models_app = typer.Typer(no_args_is_help=True, help="Global model versions and production.")
app.add_typer(task_app, name="task")
app.add_typer(nodes_app, name="nodes")
app.add_typer(rounds_app, name="rounds")
app.add_typer(models_app, name="models")

AsJson = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts), not a table.")]
RoundId = Annotated[int, typer.Argument(min=1, help="The round's id.")]
NodeId = Annotated[int, typer.Argument(min=1, help="The node's id (see `nodes list`).")]
Version = Annotated[str, typer.Argument(help="A version number, or `production`.")]


@dataclass(frozen=True)
class Connection:
    """How to reach the hub, from the group's options; used only when a command runs."""

    url: str | None
    token: str | None
    ca_bundle: Path | None
    timeout_seconds: float
    retries: int


@app.callback()
def connect(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Option(
            envvar="FEDMEDCLIP_HUB_URL", help="The hub's base URL, e.g. https://hub:8000."
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="FEDMEDCLIP_HUB_TOKEN",
            help="The hub's admin token. Prefer the variable: a command line is visible to "
            "other users of the machine.",
            show_default=False,
        ),
    ] = None,
    ca_bundle: Annotated[
        Path | None,
        typer.Option(
            envvar="FEDMEDCLIP_HUB_CA_BUNDLE",
            help="CA bundle the hub's certificate must chain to (default: the system's CAs).",
        ),
    ] = None,
    timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds to wait for each answer.")
    ] = 30.0,
    retries: Annotated[
        int, typer.Option(min=0, max=10, help="Retries of a call that met a transient fault.")
    ] = 2,
) -> None:
    """Talk to a hub as its admin: task, nodes, rounds, models, audit trail."""
    ctx.obj = Connection(url, token, ca_bundle, timeout, retries)


# --- plumbing ------------------------------------------------------------------------------


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _invalid(exc: ValidationError) -> NoReturn:
    """Input the schemas refuse, as one line naming each field."""
    problems = "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'input'}: {error['msg']}"
        for error in exc.errors(include_url=False)
    )
    _fail(problems, UNUSABLE)


@contextmanager
def _hub(ctx: typer.Context) -> Iterator[HubAdminClient]:
    """An admin client for the hub the options name; its failures become one line and an
    exit code (see the module docstring), never a traceback."""
    from services.common.hub_client import HubAdminClient, HubError, HubRejected, HubUnavailable
    from services.common.serving import TlsConfigError, client_tls

    connection = ctx.find_object(Connection)
    assert connection is not None  # set by the group callback
    if not connection.url:
        _fail("no hub URL: pass --url or set FEDMEDCLIP_HUB_URL", UNUSABLE)
    if not connection.token:
        _fail("no admin token: set FEDMEDCLIP_HUB_TOKEN (or pass --token)", UNUSABLE)
    try:
        verify = client_tls(connection.ca_bundle)
    except TlsConfigError as exc:
        _fail(str(exc), UNUSABLE)
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
        _fail(f"{exc.detail} ({exc.code or 'no code'}, HTTP {exc.status_code})", REFUSED)
    except HubUnavailable as exc:
        _fail(str(exc), UNUSABLE)
    except HubError as exc:
        _fail(str(exc), REFUSED)
    except ValidationError as exc:  # the client checks what it sends with the shared schemas
        _invalid(exc)


def _console() -> Console:
    # Made per call: it writes to the sys.stdout of the moment (a test runner swaps it).
    return Console(highlight=False)


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(to_jsonable_python(value), indent=2, ensure_ascii=False))


def _when(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    if moment.tzinfo is None:  # the hub's SQLite store drops the zone; its times are UTC
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _optional(value: object) -> str:
    return "-" if value is None else str(value)


def _fields(rows: Sequence[tuple[str, object]], title: str | None = None) -> Table:
    """A two-column table: one field of one object per row."""
    table = Table(show_header=False, title=title, title_justify="left")
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for name, value in rows:
        table.add_row(name, _optional(value))
    return table


def _show(value: Any, as_json: bool, table: Table) -> None:
    if as_json:
        _print_json(value)
    else:
        _console().print(table)


def _key_values(pairs: list[str], what: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint=what)
        values[key.strip()] = value.strip()
    return values


def _version(value: str) -> int | str:
    if value == "production":
        return value
    if value.isdigit():
        return int(value)
    raise typer.BadParameter(f"{value!r} is neither a version number nor 'production'")


# --- task ----------------------------------------------------------------------------------


def _task_table(task: TaskSpec) -> Table:
    return _fields(
        [
            ("classes", f"{', '.join(task.class_names)} ({len(task.class_names)})"),
            ("prompt template", task.prompt_template),
            ("backbone", task.backbone),
            ("weights id", task.weights_id),
            ("learn prototypes", task.fam.learn_prototypes),
            ("class statistics", task.fam.class_statistics),
            ("margin", task.fam.margin),
            ("quantization", task.fam.quantization.value),
            ("seed", task.fam.seed),
        ],
        title="task",
    )


@task_app.command("show")
def task_show(ctx: typer.Context, as_json: AsJson = False) -> None:
    """Show the task."""
    with _hub(ctx) as hub:
        task = hub.get_task()
    _show(task, as_json, _task_table(task))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        _fail(f"cannot read {path}: {exc}", UNUSABLE)
    if not isinstance(data, dict):
        _fail(f"{path} must hold a JSON object (a task)", UNUSABLE)
    return data


@task_app.command("set")
def task_set(
    ctx: typer.Context,
    class_names: Annotated[
        list[str] | None,
        typer.Option("--class", "-c", help="A class name, in label order (repeat)."),
    ] = None,
    from_file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            help="A task as JSON (the body of PUT /api/v1/task); the other "
            "options override its fields.",
        ),
    ] = None,
    prompt_template: Annotated[str | None, typer.Option(help="With one '{}'.")] = None,
    backbone: Annotated[str | None, typer.Option(help="open_clip architecture.")] = None,
    weights_id: Annotated[str | None, typer.Option(help="The CLIP weights sites use.")] = None,
    learn_prototypes: Annotated[bool | None, typer.Option(show_default=False)] = None,
    class_statistics: Annotated[
        bool | None,
        typer.Option(
            show_default=False,
            help="Sites send class statistics with their updates (on by default for a new "
            "task; docs/method.md, Class statistics).",
        ),
    ] = None,
    margin: Annotated[float | None, typer.Option(help="Row pruning margin.")] = None,
    quantization: Annotated[Quantization | None, typer.Option(help="Update encoding.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the version-0 weights.")] = None,
    as_json: AsJson = False,
) -> None:
    """Set the task and create model version 0 (refused once a round has started)."""
    from fedmedclip.schemas import TaskSpec

    body = _read_json(from_file) if from_file is not None else {}
    given = {
        "class_names": class_names or None,
        "prompt_template": prompt_template,
        "backbone": backbone,
        "weights_id": weights_id,
    }
    body |= {key: value for key, value in given.items() if value is not None}
    fam = {
        "learn_prototypes": learn_prototypes,
        "class_statistics": class_statistics,
        "margin": margin,
        "quantization": quantization,
        "seed": seed,
    }
    if any(value is not None for value in fam.values()):
        base = body.get("fam") if isinstance(body.get("fam"), dict) else {}
        body["fam"] = base | {key: value for key, value in fam.items() if value is not None}
    if "class_names" not in body:
        _fail("name the classes: --class NAME (repeat) or --file TASK.json", UNUSABLE)
    try:
        task = TaskSpec.model_validate(body)
    except ValidationError as exc:
        _invalid(exc)
    with _hub(ctx) as hub:
        stored = hub.set_task(task)
    _show(stored, as_json, _task_table(stored))


# --- nodes ---------------------------------------------------------------------------------


def _node_state(node: NodeInfo) -> str:
    return "active" if node.revoked_at is None else f"revoked {_when(node.revoked_at)}"


@nodes_app.command("list")
def nodes_list(ctx: typer.Context, as_json: AsJson = False) -> None:
    """List registered nodes, with when each was last seen."""
    with _hub(ctx) as hub:
        nodes = hub.list_nodes()
    table = Table("id", "name", title="nodes")
    for heading in ("registered", "last seen", "state"):
        table.add_column(heading, no_wrap=True)
    for node in nodes:
        table.add_row(
            str(node.id),
            node.name,
            _when(node.created_at),
            _when(node.last_seen),
            _node_state(node),
        )
    _show(nodes, as_json, table)


def _show_token(created: NodeCreated, as_json: bool) -> None:
    table = _fields([("id", created.id), ("name", created.name), ("token", created.token)])
    _show(created, as_json, table)
    if not as_json:
        typer.echo("Store this token at the site now: the hub shows it only once.", err=True)


@nodes_app.command("add")
def nodes_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The site's name: letters, digits, '.', '_', '-'.")],
    as_json: AsJson = False,
) -> None:
    """Register a node; prints its token, which the hub shows only this once."""
    with _hub(ctx) as hub:
        created = hub.add_node(name)
    _show_token(created, as_json)


@nodes_app.command("revoke")
def nodes_revoke(ctx: typer.Context, node_id: NodeId, as_json: AsJson = False) -> None:
    """Revoke a node's token now: its calls are refused from this moment."""
    with _hub(ctx) as hub:
        node = hub.revoke_node(node_id)
    table = _fields(
        [("id", node.id), ("name", node.name), ("state", _node_state(node))], title="node"
    )
    _show(node, as_json, table)


@nodes_app.command("rotate-token")
def nodes_rotate_token(
    ctx: typer.Context,
    node_id: NodeId,
    grace_seconds: Annotated[
        int,
        typer.Option(min=0, help="How long the old token keeps working (0: refused at once)."),
    ] = 3600,
    as_json: AsJson = False,
) -> None:
    """Give a node a new token; prints it (shown only this once)."""
    with _hub(ctx) as hub:
        created = hub.rotate_token(node_id, grace_seconds)
    _show_token(created, as_json)


# --- rounds --------------------------------------------------------------------------------


def _updates(info: RoundInfo) -> str:
    return f"{info.updates_received}/{info.min_clients}"


def _round_table(info: RoundInfo) -> Table:
    return _fields(
        [
            ("state", info.state.value),
            ("base version", info.base_version),
            ("updates / min clients", _updates(info)),
            ("deadline", _when(info.deadline)),
            ("aggregation rule", info.aggregation_rule.value),
            ("clip norm", info.clip_norm),
            ("max update norm", info.max_update_norm),
            ("hints", ", ".join(f"{k}={v}" for k, v in info.hints.model_dump().items())),
            ("result version", info.result_version),
            ("reason", info.reason),
            ("opened", _when(info.created_at)),
            ("closed", _when(info.closed_at)),
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
        _fail(f"round {info.id} {info.state.value}: {reason}", ROUND_FAILED)


@rounds_app.command("start")
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
        _invalid(exc)
    with _hub(ctx) as hub:
        info = hub.open_round(request)
    _show(info, as_json, _round_table(info))


@rounds_app.command("list")
def rounds_list(
    ctx: typer.Context,
    state: Annotated[RoundState | None, typer.Option(help="Only rounds in this state.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")] = 20,
    as_json: AsJson = False,
) -> None:
    """List rounds, newest first."""
    with _hub(ctx) as hub:
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
            _when(info.deadline),
            "-" if info.result_version is None else f"v{info.result_version}",
        )
    _show(rounds, as_json, table)


@rounds_app.command("show")
def rounds_show(ctx: typer.Context, round_id: RoundId, as_json: AsJson = False) -> None:
    """Show one round."""
    with _hub(ctx) as hub:
        info = hub.get_round(round_id)
    _show(info, as_json, _round_table(info))


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
    status.add_row("deadline", f"{_when(info.deadline)} ({_remaining(info.deadline)})")
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
        f"deadline {_when(info.deadline)}"
    )
    if info.result_version is not None:
        line += f", model v{info.result_version}"
    return line + (f" ({info.reason})" if info.reason else "")


@rounds_app.command("watch")
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
    console = _console()
    with _hub(ctx) as hub:
        info = hub.get_round(round_id)
        rounds = _poll(hub, info, interval)
        if as_json or not console.is_terminal:
            for info in _changes(rounds):
                typer.echo(info.model_dump_json() if as_json else _summary(info))
        else:
            with Live(_progress(info), console=console, refresh_per_second=4) as live:
                for info in rounds:
                    live.update(_progress(info))
    _ended(info)
    if not as_json:
        typer.echo(f"round {info.id} published model v{info.result_version}")


@rounds_app.command("close")
def rounds_close(ctx: typer.Context, round_id: RoundId, as_json: AsJson = False) -> None:
    """Aggregate a round now rather than at its deadline (exit 3 if too few updates came,
    which fails the round)."""
    with _hub(ctx) as hub:
        info = hub.close_round(round_id)
    _show(info, as_json, _round_table(info))
    _ended(info)


@rounds_app.command("cancel")
def rounds_cancel(ctx: typer.Context, round_id: RoundId, as_json: AsJson = False) -> None:
    """Cancel an open round: its updates are kept but never aggregated."""
    with _hub(ctx) as hub:
        info = hub.cancel_round(round_id)
    _show(info, as_json, _round_table(info))


# --- models --------------------------------------------------------------------------------


def _metrics(metrics: Mapping[str, float]) -> str:
    return ", ".join(f"{name}={value:.4g}" for name, value in sorted(metrics.items())) or "-"


def _model_table(info: ModelInfo) -> Table:
    return _fields(
        [
            ("production", "yes" if info.is_production else "no"),
            ("parent version", info.parent_version),
            ("round", info.round_id),
            ("contributors", ", ".join(info.contributors) or "-"),
            ("metrics", _metrics(info.metrics)),
            ("sha256", info.blob_sha256),
            ("created", _when(info.created_at)),
        ],
        title=f"model v{info.version}",
    )


@models_app.command("list")
def models_list(ctx: typer.Context, as_json: AsJson = False) -> None:
    """List global model versions, oldest first; * marks production."""
    with _hub(ctx) as hub:
        models = hub.list_models()
    table = Table("version", "prod", "parent", "round", "contributors", "metrics", title="models")
    table.add_column("created", no_wrap=True)
    for info in models:
        table.add_row(
            f"v{info.version}",
            "*" if info.is_production else "",
            _optional(info.parent_version),
            _optional(info.round_id),
            str(len(info.contributors)),
            _metrics(info.metrics),
            _when(info.created_at),
        )
    _show(models, as_json, table)


@models_app.command("show")
def models_show(ctx: typer.Context, version: Version, as_json: AsJson = False) -> None:
    """Show one version's metadata (contributors, metrics, sha256)."""
    with _hub(ctx) as hub:
        info = hub.model_info(_version(version))
    _show(info, as_json, _model_table(info))


@models_app.command("promote")
def models_promote(
    ctx: typer.Context,
    version: Annotated[int, typer.Argument(min=0, help="The version sites should serve.")],
    as_json: AsJson = False,
) -> None:
    """Make a version production: the one the sites' inference APIs serve."""
    with _hub(ctx) as hub:
        info = hub.promote(version)
    _show(info, as_json, _model_table(info))


@models_app.command("rollback")
def models_rollback(ctx: typer.Context, as_json: AsJson = False) -> None:
    """Undo the last promotion: production returns to the version it was before."""
    with _hub(ctx) as hub:
        info = hub.rollback()
    _show(info, as_json, _model_table(info))


def _write_atomically(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all: a partial file never takes its name."""
    partial = path.with_name(path.name + ".part")
    try:
        partial.write_bytes(data)
        partial.replace(path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        _fail(f"cannot write {path}: {exc}", UNUSABLE)


@models_app.command("download")
def models_download(
    ctx: typer.Context,
    version: Version,
    output: Annotated[Path, typer.Option("--output", "-o", help="The file to write.")],
    as_json: AsJson = False,
) -> None:
    """Download a version's weights (safetensors), written only once they match the sha256
    the hub published."""
    with _hub(ctx) as hub:
        info = hub.model_info(_version(version))
        data = hub.download_model(info)
    _write_atomically(output, data)
    if as_json:
        _print_json(
            {
                "version": info.version,
                "path": str(output),
                "bytes": len(data),
                "sha256": info.blob_sha256,
            }
        )
    else:
        typer.echo(
            f"model v{info.version} written to {output} ({len(data)} bytes, sha256 "
            f"{info.blob_sha256} verified)"
        )


# --- audit ---------------------------------------------------------------------------------


def _since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not an ISO time such as 2026-05-01T08:00:00Z", param_hint="--since"
        ) from None


@app.command("audit")
def audit(
    ctx: typer.Context,
    action: Annotated[str | None, typer.Option(help="Only this action, e.g. round.open.")] = None,
    actor: Annotated[str | None, typer.Option(help="Only this actor, e.g. node:site-a.")] = None,
    since: Annotated[
        str | None, typer.Option(help="Only events from this ISO time on (UTC when no zone).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")] = 50,
    as_json: AsJson = False,
) -> None:
    """Show the hub's audit trail, newest first."""
    start = _since(since)
    with _hub(ctx) as hub:
        events = hub.audit(action=action, actor=actor, since=start, limit=limit)
    table = Table("id", title="audit")
    table.add_column("at", no_wrap=True)
    table.add_column("actor")
    table.add_column("action")
    table.add_column("target")
    table.add_column("details", overflow="fold")
    for event in events:
        details = json.dumps(event.details, separators=(",", ":"), ensure_ascii=False)
        if len(details) > AUDIT_DETAILS_CHARS:  # --json shows them whole
            details = details[: AUDIT_DETAILS_CHARS - 1] + "…"
        table.add_row(
            str(event.id),
            _when(event.at),
            event.actor,
            event.action,
            _optional(event.target),
            details,
        )
    _show(events, as_json, table)
