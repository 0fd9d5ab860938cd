"""How the demo looks in a terminal: progress while it runs, an invoice summary at the end."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
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

from base.settings import Settings
from invoicing.export import money, render
from invoicing.invoice import Invoice
from meterline.cli_support import command_name
from meterline.demo.job import DEMO_DATABASE, DemoOutcome
from meterline.demo.job import Progress as JobProgress
from rating.money import trimmed


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
    invoices = outcome.invoices
    period = f"{invoices[0].period:%Y-%m}" if invoices else "(none)"
    largest = sorted(invoices, key=lambda i: (-i.total, i.subscription))[:show]
    table = Table(
        title=f"Draft invoices, period {period} (largest {len(largest)} of {len(invoices):,})"
    )
    for column in ("Invoice", "Plan", "Line", "Quantity", "Amount"):
        table.add_column(column, justify="right" if column in ("Quantity", "Amount") else "left",
                         no_wrap=column == "Invoice")  # fmt: skip
    for invoice in largest:
        cur = invoice.currency
        for number, line in enumerate(invoice.lines):
            plan = line.plan if line.plan_version == 1 else f"{line.plan} v{line.plan_version}"
            shown = f"{trimmed(line.quantity)}" if line.unit else ""
            first = invoice.invoice_id if number == 0 else ""
            table.add_row(first, plan, line.description, shown, money(line.amount, cur))
        table.add_row(invoice.subscription, "", f"tax {trimmed(invoice.tax_rate)}%", "",
                      money(invoice.tax, cur))  # fmt: skip
        table.add_row("", "", "[bold]total[/]", "", f"[bold]{money(invoice.total, cur)} {cur}[/]",
                      end_section=True)  # fmt: skip
    console.print(table)
    console.print(_by_plan(invoices, period))

    exported = {}
    for fmt in ("csv", "html"):
        path = settings.data_dir / f"invoices-{period}.{fmt}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render(invoices, fmt), encoding="utf-8")
        exported[fmt] = path
    duplicates = outcome.sent - outcome.stored_events - outcome.rejected
    reasons = ", ".join(
        f"{reason} {count:,}" for reason, count in outcome.rejected_by_reason.items()
    )
    dead_letters = f" ({reasons}) to {outcome.dead_letter_topic}" if reasons else ""
    rate = outcome.sent / outcome.process_seconds if outcome.process_seconds else 0.0
    example = largest[0].invoice_id if largest else "INV-…"
    console.print(
        f"Events sent {outcome.sent:,}; distinct {outcome.distinct:,}; billed "
        f"{outcome.stored_events:,}; duplicates dropped {duplicates:,}; rejected "
        f"{outcome.rejected:,}{dead_letters}.\n"
        f"Produced in {outcome.produce_seconds:.1f} s; consumed, rated and stored in "
        f"{outcome.process_seconds:.1f} s after that ({rate:,.0f} events/s through the "
        f"worker).\n{outcome.closed.created:,} draft invoices: every line in "
        f"{exported['csv']}, printable in {exported['html']}.\n"
        f"Look closer: METERLINE_CLICKHOUSE_DATABASE={DEMO_DATABASE} "
        f"{command_name()} invoices show {example}  (or explain {example} 1)",
        highlight=False,
    )


def _by_plan(invoices: list[Invoice], period: str) -> Table:
    subs: dict[tuple[str, str], set[str]] = defaultdict(set)
    amounts: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for invoice in invoices:
        for line in invoice.lines:
            subs[(line.plan, invoice.currency)].add(invoice.subscription)
            amounts[(line.plan, invoice.currency)] += line.amount
    by_plan = Table(title=f"Totals by plan before tax, period {period}")
    for column in ("Plan", "Subscriptions", "Amount"):
        by_plan.add_column(column, justify="left" if column == "Plan" else "right")
    for (plan, cur), amount in sorted(amounts.items(), key=lambda item: -item[1]):
        by_plan.add_row(plan, f"{len(subs[(plan, cur)]):,}", f"{money(amount, cur)} {cur}")
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for invoice in invoices:
        totals[invoice.currency] += invoice.subtotal
    for cur, amount in sorted(totals.items()):
        by_plan.add_row("[bold]all plans[/]", "", f"[bold]{money(amount, cur)} {cur}[/]")
    return by_plan
