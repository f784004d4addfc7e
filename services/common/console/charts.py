"""Line charts as inline SVG, computed on the server.

The console's charts are small (one metric over a few dozen model versions), so the hub
draws them itself instead of shipping a chart library: no script, nothing to vendor or
update, readable without JavaScript and printable. Each chart also carries a text
description for screen readers, and the page shows the same numbers in a table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

WIDTH, HEIGHT, MARGIN = 380, 150, 56


@dataclass(frozen=True)
class Chart:
    """What the template draws: a polyline, its dots, and the axis labels."""

    points: str  # "x,y x,y ..." in SVG coordinates
    dots: list[tuple[float, float, str]]  # x, y, tooltip
    y_min: str
    y_max: str
    x_first: str
    x_last: str
    description: str
    width: int = WIDTH
    height: int = HEIGHT
    margin: int = MARGIN


def _scale(value: float, low: float, high: float, start: float, end: float) -> float:
    if high == low:  # a flat series sits in the middle
        return (start + end) / 2
    return start + (value - low) / (high - low) * (end - start)


def line_chart(series: Sequence[tuple[float, float]], name: str) -> Chart | None:
    """The chart of ``series`` ((x, y) pairs, x ascending), or None when it is empty."""
    if not series:
        return None
    xs = [x for x, _ in series]
    ys = [y for _, y in series]
    x_low, x_high, y_low, y_high = min(xs), max(xs), min(ys), max(ys)
    coords = [
        (
            round(_scale(x, x_low, x_high, MARGIN, WIDTH - MARGIN / 2), 1),
            round(_scale(y, y_low, y_high, HEIGHT - MARGIN / 2, MARGIN / 2), 1),
            f"{name} {y:.4g} at version {x:g}",
        )
        for x, y in series
    ]
    return Chart(
        points=" ".join(f"{x},{y}" for x, y, _ in coords),
        dots=coords,
        y_min=f"{y_low:.4g}",
        y_max=f"{y_high:.4g}",
        x_first=f"v{x_low:g}",
        x_last=f"v{x_high:g}",
        description=(
            f"{name} over {len(series)} versions, from {ys[0]:.4g} (v{xs[0]:g}) "
            f"to {ys[-1]:.4g} (v{xs[-1]:g}); lowest {y_low:.4g}, highest {y_high:.4g}"
        ),
    )
