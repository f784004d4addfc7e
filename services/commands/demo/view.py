"""What ``fedmedclip demo`` shows: the rounds table, the held-out check, the improvement line.

Kept apart from the process orchestration in ``services.commands.demo.run`` so that what a
first-time user reads can be tested without starting a federation: every line fits 80
columns, the table is one live view on a terminal and plain rows (each printed once) in a
log, and the sentence about improvement is computed from the same numbers the table shows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table

from fedmedclip.enums import RoundState

MAX_COLUMNS = 80
ROUND_METRICS = (
    ("accuracy", "accuracy"),
    ("balanced_accuracy", "balanced accuracy"),
    ("macro_f1", "macro-F1"),
)
"""(key in the node job's ``test_*`` metrics, words for people), in table order."""


@dataclass
class RoundRecord:
    """What one round produced, for the table and the report.

    ``site_metrics[site][metric]`` are the site's scores on its own test split, which the
    site never trains on (the node keeps one split for every round).
    """

    round_id: int
    version: int | None
    state: RoundState
    seconds: float
    site_metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    bytes_sent: dict[str, int] = field(default_factory=dict)

    def mean(self, metric: str) -> float:
        """Unweighted mean over sites (NaN when no site reported it)."""
        values = [m[metric] for m in self.site_metrics.values() if metric in m]
        return sum(values) / len(values) if values else float("nan")

    @property
    def kb_per_site(self) -> float:
        return sum(self.bytes_sent.values()) / max(len(self.bytes_sent), 1) / 1024


_HEADER = f"{'round':>5}  {'accuracy':>8}  {'bal. acc':>8}  {'macro-F1':>8}  "
_HEADER += f"{'KB/site':>7}  {'version':>7}  {'seconds':>7}"


def plain_header() -> str:
    """The column names of the plain (non-terminal) rounds table."""
    return _HEADER


def plain_row(record: RoundRecord) -> str:
    """One round as a fixed-width line under :func:`plain_header`."""
    return (
        f"{record.round_id:>5}  "
        + "  ".join(f"{record.mean(key):>8.3f}" for key, _ in ROUND_METRICS)
        + f"  {record.kb_per_site:>7.0f}  {record.version!s:>7}  {record.seconds:>7.1f}"
    )


def rounds_table(records: Sequence[RoundRecord], sites: int) -> Table:
    """The rich rounds table; its natural width is well under 80 columns."""
    table = Table(
        title=f"Rounds: mean over {sites} sites, on test splits never trained on",
        box=box.SIMPLE_HEAD,
        title_justify="left",
    )
    for name in ("round", "accuracy", "bal. acc", "macro-F1", "KB/site", "version", "seconds"):
        table.add_column(name, justify="right")
    for r in records:
        table.add_row(*plain_row(r).split())
    return table


class RoundsView:
    """The rounds table as one live view on a terminal, or plain rows printed once each.

    On a terminal the table is redrawn in place (with the running round's progress below
    it); anywhere else (a log, CI) each round is one plain line, printed when it ends.
    """

    def __init__(self, console: Console, sites: int) -> None:
        self.console = console
        self.sites = sites
        self.records: list[RoundRecord] = []
        self.live: Live | None = None

    def __enter__(self) -> RoundsView:
        if self.console.is_terminal:
            self.live = Live(self._render(None), console=self.console, auto_refresh=False)
            self.live.__enter__()
        else:
            self.console.print(
                f"Rounds: mean over {self.sites} sites, on test splits never trained on"
            )
            self.console.print(plain_header())
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.update(self._render(None), refresh=True)
            self.live.__exit__(*exc)  # type: ignore[arg-type]
            self.live = None

    def _render(self, below: RenderableType | None) -> RenderableType:
        table = rounds_table(self.records, self.sites)
        return table if below is None else Group(table, below)

    def progress(self, below: RenderableType) -> None:
        """Show the running round's progress under the table (terminal only)."""
        if self.live is not None:
            self.live.update(self._render(below), refresh=True)

    def add(self, record: RoundRecord) -> None:
        self.records.append(record)
        if self.live is not None:
            self.live.update(self._render(None), refresh=True)
        else:
            self.console.print(plain_row(record))


def improvement_sentence(records: Sequence[RoundRecord]) -> str:
    """What changed from the first to the last round, in words, from the table's numbers."""
    if len(records) < 2:
        return "Only one round ran, so there is no change over rounds to report."
    first, last = records[0], records[-1]
    parts = []
    learned = False
    for key, words in ROUND_METRICS:
        a, b = first.mean(key), last.mean(key)
        if math.isnan(a) or math.isnan(b):
            parts.append(f"{words} was not reported")
        elif round(b, 2) > round(a, 2):
            parts.append(f"{words} rose from {a:.2f} to {b:.2f}")
            learned = learned or key == "balanced_accuracy"
        elif round(b, 2) < round(a, 2):
            parts.append(f"{words} fell from {a:.2f} to {b:.2f}")
        else:
            parts.append(f"{words} stayed at {a:.2f}")
    # Balanced accuracy is the verdict: accuracy alone rises by favouring a majority class.
    verdict = "The federation learned" if learned else "The federation did not improve"
    return (
        f"{verdict}: from round {first.round_id} to round {last.round_id} (mean over sites, "
        f"test splits) " + "; ".join(parts) + "."
    )


@dataclass(frozen=True)
class HeldOutResult:
    """``/predict`` on class-balanced images that no site trained on."""

    class_names: list[str]
    truths: list[str]
    labels: list[str]

    @property
    def accuracy(self) -> float:
        return sum(t == p for t, p in zip(self.truths, self.labels, strict=True)) / max(
            len(self.truths), 1
        )

    @property
    def balanced_accuracy(self) -> float:
        """Mean recall over the classes present in the truths."""
        recalls = []
        for name in sorted(set(self.truths)):
            picked = [p for t, p in zip(self.truths, self.labels, strict=True) if t == name]
            recalls.append(sum(p == name for p in picked) / len(picked))
        return sum(recalls) / max(len(recalls), 1)

    @property
    def chance(self) -> float:
        return 1 / len(self.class_names)

    def confusion(self) -> dict[str, dict[str, int]]:
        """``confusion[truth][predicted]`` counts, every class on both sides."""
        counts = {t: dict.fromkeys(self.class_names, 0) for t in self.class_names}
        for t, p in zip(self.truths, self.labels, strict=True):
            counts[t][p] += 1
        return counts

    def lines(self) -> list[str]:
        """The check as text: summary, then the confusion matrix (rows: true class)."""
        n = len(self.truths)
        summary = [
            f"/predict on {n} held-out images ({n // len(self.class_names)} per class, never "
            "trained on):",
            f"  accuracy {self.accuracy:.2f}, balanced accuracy {self.balanced_accuracy:.2f} "
            f"(chance {self.chance:.2f}); {len(set(self.labels))} classes predicted",
            "  true class \\ predicted:",
        ]
        width = 10
        cell = max(4, min(9, (MAX_COLUMNS - width - 2) // len(self.class_names)))
        header = " " * (width + 2) + "".join(f"{c[: cell - 1]:>{cell}}" for c in self.class_names)
        rows = [
            f"  {t[:width]:<{width}}" + "".join(f"{row[p]:>{cell}}" for p in self.class_names)
            for t, row in self.confusion().items()
        ]
        return summary + [header, *rows]
