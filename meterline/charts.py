"""Horizontal bar charts for a terminal, where a person would rather look than read."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from rich.table import Table

_EIGHTHS = " ▏▎▍▌▋▊▉"


def bar(value: Decimal, largest: Decimal, width: int) -> str:
    """A bar ``width`` cells long at ``largest``, drawn to an eighth of a cell."""
    if largest <= 0 or value <= 0:
        return ""
    eighths = int(value * width * 8 / largest)
    full, part = divmod(eighths, 8)
    return "█" * full + (_EIGHTHS[part] if part else "")


def bar_chart(
    title: str, rows: Sequence[tuple[str, Decimal, str]], width: int = 40, color: str = "cyan"
) -> Table:
    """One row per (label, value, value as shown), bars scaled to the largest value."""
    largest = max((value for _, value, _ in rows), default=Decimal(0))
    chart = Table(title=title, show_header=False, box=None, pad_edge=False)
    chart.add_column(justify="right", style="bold")
    chart.add_column(style=color, no_wrap=True)
    chart.add_column(justify="right")
    for label, value, shown in rows:
        chart.add_row(label, bar(value, largest, width), shown)
    return chart
