"""QR codes of links and cards, as PNG and SVG (segno).

SHL IG: a link's QR carries ``shlink:/…`` alone or behind a viewer URL, error correction M.
SHC spec: a card's QR is a byte segment ``shc:/`` followed by a numeric segment, error
correction L (so that a 1195-character JWS fits version 22).
"""

from __future__ import annotations

import io
from typing import Literal

import segno
import segno.consts

Format = Literal["png", "svg"]
MEDIA = {"png": "image/png", "svg": "image/svg+xml"}


def _render(code: segno.QRCode, fmt: Format, scale: int) -> bytes:
    out = io.BytesIO()
    code.save(out, kind=fmt, scale=scale, border=4)
    return out.getvalue()


def link_qr(text: str, fmt: Format = "png", *, scale: int = 8) -> bytes:
    """``text`` is ``shlink:/…`` or ``<viewer>#shlink:/…``; byte mode, error correction M."""
    code = segno.make_qr(text, error="m", mode="byte", boost_error=False)
    return _render(code, fmt, scale)


def card_qr(numeric: str, fmt: Format = "png", *, scale: int = 6) -> bytes:
    """``numeric`` is ``shc:/`` + digits (shc.numeric): two segments, error correction L."""
    cut = numeric.rfind("/") + 1  # "shc:/" or, for a chunk, "shc:/2/3/"
    prefix, digits = numeric[:cut], numeric[cut:]
    if not prefix.startswith("shc:/") or not digits.isdigit():
        raise ValueError("a card QR value is shc:/ followed by digits")
    # segno takes per-segment modes as its constants (consts.MODE_BYTE, MODE_NUMERIC).
    segments = [(prefix, segno.consts.MODE_BYTE), (digits, segno.consts.MODE_NUMERIC)]
    code = segno.make_qr(
        segments,  # type: ignore[arg-type]  # segno's stub lists one value only
        error="l",
        boost_error=False,
    )
    return _render(code, fmt, scale)
