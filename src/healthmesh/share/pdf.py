"""A readable PDF of shared data: a title, facts about the patient, and one table per section.

Kill the Clipboard (SPECS.md §6) carries "a PDF rendering of the shared FHIR data" (a
DocumentReference of type LOINC 60591-5) for receivers that do not read FHIR. This module
knows nothing of FHIR: it lays out text it is given (share/bundle.py prepares it).

Rendered with fpdf2 (pure Python, maintained by the py-pdf organisation). Its built-in
Helvetica covers Latin-1; other characters are transliterated where Unicode decomposes them
(``ł`` stays ``?``), so no font file has to ship or be found on the machine.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from fpdf import FPDF
from fpdf.fonts import FontFace

_PUNCTUATION = str.maketrans(
    {"–": "-", "—": "-", "‘": "'", "’": "'", "“": '"', "”": '"', "…": "...", "•": "-"}
)
_HEADING = FontFace(emphasis="BOLD", fill_color=(225, 230, 236))


def latin1(text: str) -> str:
    """``text`` in what the PDF core fonts can draw (Latin-1)."""
    text = text.translate(_PUNCTUATION)
    out = []
    for char in text:
        if ord(char) < 256:
            out.append(char)
            continue
        base = unicodedata.normalize("NFKD", char)
        kept = "".join(c for c in base if ord(c) < 256 and not unicodedata.combining(c))
        out.append(kept or "?")
    return "".join(out)


@dataclass(frozen=True, slots=True)
class PdfTable:
    """A titled table; ``empty_text`` is printed instead when it has no rows."""

    title: str
    columns: Sequence[str]
    rows: Sequence[Sequence[str]]
    empty_text: str = "No information."


@dataclass(frozen=True, slots=True)
class PdfDocument:
    title: str
    subtitle: str
    facts: Sequence[tuple[str, str]]  # (label, value) lines under the title
    tables: Sequence[PdfTable] = field(default_factory=tuple)
    created: datetime | None = None


class _Pdf(FPDF):
    def footer(self) -> None:
        self.set_y(-12)
        self.set_font("Helvetica", size=8)
        self.set_text_color(110)
        self.cell(0, 6, f"Page {self.page_no()}/{{nb}}", align="C")


def render(document: PdfDocument) -> bytes:
    """The document as PDF bytes (US Letter, portrait)."""
    pdf = _Pdf(orientation="portrait", unit="mm", format="letter")
    pdf.set_title(latin1(document.title))
    pdf.set_creator("HealthMesh")
    if document.created is not None:
        pdf.set_creation_date(document.created)
    pdf.set_auto_page_break(auto=True, margin=16)
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 18)
    pdf.cell(0, 10, latin1(document.title), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=10)
    pdf.set_text_color(90)
    pdf.cell(0, 6, latin1(document.subtitle), new_x="LMARGIN", new_y="NEXT")
    pdf.set_text_color(0)
    pdf.ln(2)
    for label, value in document.facts:
        pdf.set_font("Helvetica", "B", 10)
        pdf.cell(40, 6, latin1(label))
        pdf.set_font("Helvetica", size=10)
        pdf.multi_cell(0, 6, latin1(value), new_x="LMARGIN", new_y="NEXT")
    for table in document.tables:
        _table(pdf, table)
    return bytes(pdf.output())


def _table(pdf: FPDF, table: PdfTable) -> None:
    pdf.ln(4)
    pdf.set_font("Helvetica", "B", 13)
    pdf.cell(0, 8, latin1(table.title), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=9)
    if not table.rows:
        pdf.set_text_color(90)
        pdf.multi_cell(0, 5, latin1(table.empty_text), new_x="LMARGIN", new_y="NEXT")
        pdf.set_text_color(0)
        return
    widths = _widths(len(table.columns))
    with pdf.table(
        col_widths=widths,
        text_align="LEFT",
        headings_style=_HEADING,
        line_height=5,
        padding=1,
    ) as grid:
        heading = grid.row()
        for column in table.columns:
            heading.cell(latin1(column))
        for values in table.rows:
            row = grid.row()
            for value in values:
                row.cell(latin1(value))


def _widths(n: int) -> tuple[int, ...]:
    """The first column (the name of the thing) gets the most room."""
    if n <= 1:
        return (1,)
    return (3, *([2] * (n - 1))) if n > 3 else (3, *([1] * (n - 1)))
