"""Printable pages as PDF: the HTML the exports render (one page per invoice or credit
note), laid out by WeasyPrint. Imported only where a PDF is asked for: WeasyPrint loads
Pango, a system library (Debian's libpango-1.0-0 and libpangoft2-1.0-0)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

Document = TypeVar("Document")


def pdf_of(html: str) -> bytes:
    from weasyprint import HTML  # noqa: PLC0415 (loads Pango: only when a PDF is made)

    pdf: bytes = HTML(string=html).write_pdf()
    return pdf


def write_pdfs(
    documents: Sequence[Document],
    folder: Path,
    name: Callable[[Document], str],
    html: Callable[[Sequence[Document]], str],
) -> list[Path]:
    """One PDF per document in ``folder``, named ``name(document)``.pdf."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for document in documents:
        path = folder / f"{name(document)}.pdf"
        path.write_bytes(pdf_of(html([document])))
        written.append(path)
    return written
