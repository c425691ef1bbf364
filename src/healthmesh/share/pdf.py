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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fpdf import FPDF

_PUNCTUATION = str.maketrans(
    {"–": "-", "—": "-", "‘": "'", "’": "'", "“": '"', "”": '"', "…": "...", "•": "-"}
)


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


@cache
def _pdf_class() -> type[FPDF]:
    """FPDF with a page-number footer; fpdf2 (and Pillow, fontTools) load on first use, not
    when the server starts (~0.5 s and tens of MB a process that never renders would pay)."""
    from fpdf import FPDF

    class Pdf(FPDF):
        def footer(self) -> None:
            self.set_y(-12)
            self.set_font("Helvetica", size=8)
            self.set_text_color(110)
            self.cell(0, 6, f"Page {self.page_no()}/{{nb}}", align="C")

    return Pdf


def render(document: PdfDocument) -> bytes:
    """The document as PDF bytes (US Letter, portrait)."""
    pdf = _pdf_class()(orientation="portrait", unit="mm", format="letter")
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
    if pdf.get_y() + 24 > pdf.page_break_trigger:  # keep a title with its first rows
        pdf.add_page()
    pdf.set_font("Helvetica", "B", 13)
    pdf.cell(0, 8, latin1(table.title), new_x="LMARGIN", new_y="NEXT")
    if not table.rows:
        pdf.set_font("Helvetica", size=9)
        pdf.set_text_color(90)
        pdf.multi_cell(0, 5, latin1(table.empty_text), new_x="LMARGIN", new_y="NEXT")
        pdf.set_text_color(0)
        return
    weights = _weights(len(table.columns))
    widths = [pdf.epw * w / sum(weights) for w in weights]
    heading = [latin1(c) for c in table.columns]
    _row(pdf, widths, heading, heading=True)
    for values in table.rows:
        if _row(pdf, widths, [latin1(v) for v in values], heading=False):
            _row(pdf, widths, heading, heading=True)  # a new page: repeat the heading
            _row(pdf, widths, [latin1(v) for v in values], heading=False)


_LINE = 4.2  # mm per line of 9 pt text
_PAD = 1.0
_BASELINE = 3.1  # mm from a line's top to its baseline at 9 pt


def _row(pdf: FPDF, widths: Sequence[float], cells: Sequence[str], *, heading: bool) -> bool:
    """Draw one table row, its cells' text wrapped to their widths.

    Laid out by hand rather than with ``FPDF.table``, which measures every cell several
    times: a summary of a few hundred rows renders in tens of milliseconds, not seconds.
    Returns True, drawing nothing, when the row does not fit on this page (a page is added).
    """
    pdf.set_font("Helvetica", "B" if heading else "", 9)
    lines = [_wrap(pdf, text, width - 2 * _PAD) for text, width in zip(cells, widths, strict=False)]
    height = max(len(cell) for cell in lines) * _LINE + 2 * _PAD
    top = pdf.get_y()
    if top + height > pdf.page_break_trigger and not heading:
        pdf.add_page()
        return True
    left = pdf.l_margin
    pdf.set_draw_color(140)
    pdf.set_fill_color(225, 230, 236)
    for width, cell in zip(widths, lines, strict=False):
        pdf.rect(left, top, width, height, style="DF" if heading else "D")
        for k, line in enumerate(cell):
            if line:  # text() at the baseline: ten times cheaper than cell()
                pdf.text(left + _PAD, top + _PAD + k * _LINE + _BASELINE, line)
        left += width
    pdf.set_xy(pdf.l_margin, top + height)
    return False


def _measure(pdf: FPDF) -> Callable[[str], float]:
    """The width of a string in the current core font, from its metrics (``cw``, in 1/1000
    of the font size); ``get_string_width`` does far more work per call (bidi, shaping)."""
    metrics: Any = getattr(pdf.current_font, "cw", None)
    if not isinstance(metrics, dict):
        return pdf.get_string_width
    size = pdf.font_size / 1000

    def width(text: str) -> float:
        return float(sum(metrics.get(c, 600) for c in text) * size)

    return width


def _wrap(pdf: FPDF, text: str, width: float) -> list[str]:
    """Greedy word wrap to ``width`` mm in the current font; over-long words are split."""
    measure = _measure(pdf)
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}" if current else word
        if measure(candidate) <= width:
            current = candidate
            continue
        if current:
            lines.append(current)
        while measure(word) > width and len(word) > 1:
            cut = len(word) - 1
            while cut > 1 and measure(word[:cut]) > width:
                cut -= 1
            lines.append(word[:cut])
            word = word[cut:]
        current = word
    lines.append(current)
    return lines


def _weights(n: int) -> tuple[int, ...]:
    """The first column (the name of the thing) gets the most room."""
    if n <= 1:
        return (1,)
    return (3, *([2] * (n - 1))) if n > 3 else (3, *([1] * (n - 1)))
