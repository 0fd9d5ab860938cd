"""How the demo looks in a terminal: progress while it runs, an invoice summary at the end."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from invoicing.summary import USAGE, write_csv
from meterline.demo.job import DemoOutcome
from meterline.demo.job import Progress as JobProgress
from meterline.settings import Settings


class RichProgress(JobProgress):
    def __init__(self, console: Console) -> None:
        self._bars = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._task: TaskID | None = None

    def __enter__(self) -> RichProgress:
        self._bars.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._finish()
        self._bars.stop()

    def _finish(self) -> None:
        if self._task is not None:
            task = self._bars.tasks[self._task]
            if task.total is None:
                self._bars.update(self._task, total=1, completed=1)
            self._bars.stop_task(self._task)

    def stage(self, description: str, total: int | None = None) -> None:
        self._finish()
        self._task = self._bars.add_task(description, total=total)

    def advance(self, done: int) -> None:
        if self._task is not None:
            self._bars.update(self._task, completed=done)


def print_outcome(console: Console, outcome: DemoOutcome, settings: Settings, show: int) -> None:
    summary = outcome.summary
    period = summary.period.strftime("%Y-%m")
    totals = summary.subscription_totals()
    largest = sorted(totals.items(), key=lambda item: (-item[1][2], item[0]))[:show]
    lines_by_sub: dict[tuple[str, str], list[tuple[str, str, str, str]]] = {}
    for line in summary.lines:
        plan = line.plan if line.plan_version == 1 else f"{line.plan} v{line.plan_version}"
        item = line.item if line.kind == USAGE else f"{line.kind}: {line.item}"
        if line.group:
            item = f"{item} ({line.group})"
        quantity = f"{line.quantity:,}" if line.kind == USAGE else ""
        lines_by_sub.setdefault((line.tenant, line.subscription), []).append(
            (plan, item, quantity, f"{line.amount:,} {line.currency}")
        )

    table = Table(
        title=f"Invoice summary, period {period} (largest {len(largest)} of {len(totals)})"
    )
    for column in ("Subscription", "Plan", "Line", "Quantity", "Amount"):
        table.add_column(column, justify="right" if column in ("Quantity", "Amount") else "left")
    for (tenant, subscription), (_, currency, total) in largest:
        for plan, item, quantity, shown in lines_by_sub[(tenant, subscription)]:
            table.add_row(subscription, plan, item, quantity, shown)
        table.add_row("", "", "[bold]invoice total[/]", "", f"[bold]{total:,} {currency}[/]",
                      end_section=True)  # fmt: skip
    console.print(table)

    by_plan = Table(title=f"Totals by plan, period {period}")
    for column in ("Plan", "Subscriptions", "Amount"):
        by_plan.add_column(column, justify="left" if column == "Plan" else "right")
    for plan, currency, count, plan_amount in summary.plan_totals():
        by_plan.add_row(plan, f"{count:,}", f"{plan_amount:,} {currency}")
    for currency, currency_amount in summary.currency_totals().items():
        by_plan.add_row("[bold]all plans[/]", "", f"[bold]{currency_amount:,} {currency}[/]")
    console.print(by_plan)

    csv_path = settings.data_dir / f"invoice-summary-{period}.csv"
    write_csv(summary, csv_path)
    duplicates = outcome.sent - outcome.stored_events - outcome.rejected
    reasons = ", ".join(
        f"{reason} {count:,}" for reason, count in outcome.rejected_by_reason.items()
    )
    dead_letters = f" ({reasons}) to {outcome.dead_letter_topic}" if reasons else ""
    rate = outcome.sent / outcome.process_seconds if outcome.process_seconds else 0.0
    console.print(
        f"Events sent {outcome.sent:,}; distinct {outcome.distinct:,}; billed "
        f"{outcome.stored_events:,}; duplicates dropped {duplicates:,}; rejected "
        f"{outcome.rejected:,}{dead_letters}.\n"
        f"Produced in {outcome.produce_seconds:.1f} s; consumed, rated and stored in "
        f"{outcome.process_seconds:.1f} s after that ({rate:,.0f} events/s through the "
        f"worker).\nEvery line: {csv_path}",
        highlight=False,
    )
