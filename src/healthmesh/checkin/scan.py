"""From what the front desk has to what it is: a photo of a QR code, or text pasted or scanned.

A photo (PNG/JPEG, a camera frame) is decoded server-side with OpenCV (the optional extra
``healthmesh[checkin]``: the node runs without it, and then only pasted text works). Text is
a SMART Health Link (``shlink:/…``, alone or behind a viewer URL ``…#shlink:/…``, SHL IG
"Link") or a SMART Health Card numeric QR value (``shc:/…``, SHC spec "QR"), possibly chunked
(``shc:/2/3/…``), one chunk per line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from healthmesh.checkin import errors
from healthmesh.share.shl import PREFIX, InvalidLink, LinkPayload, decode

CARD_PREFIX = "shc:/"
MAX_TEXT = 64 * 1024
MAX_PIXELS = 40_000_000  # a decompression bomb is refused before OpenCV allocates it
_PNG, _JPEG = b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff"


@dataclass(frozen=True, slots=True)
class Scanned:
    """A link (``link`` set) or the numeric QR chunks of a health card (``card_chunks``)."""

    link: LinkPayload | None = None
    card_chunks: tuple[str, ...] = ()


def classify(text: str) -> Scanned:
    text = text.strip()
    if not text:
        raise errors.invalid_input("Paste a link (shlink:/…) or scan the patient's QR code.")
    if len(text) > MAX_TEXT:
        raise errors.invalid_input("That text is too long to be a link or a health card.")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if all(line.startswith(CARD_PREFIX) for line in lines):
        return Scanned(card_chunks=tuple(lines))
    if PREFIX not in text:
        raise errors.invalid_input(
            "This is not a SMART Health Link (shlink:/…) or a SMART Health Card (shc:/…)."
        )
    try:
        return Scanned(link=decode(text))
    except InvalidLink as error:
        raise errors.invalid_input(f"This SMART Health Link is malformed: {error}.") from None


def _cv2() -> Any:
    try:
        import cv2
    except ImportError:  # the optional extra is not installed
        raise errors.unreadable_photo(
            "This server cannot read photos (install healthmesh[checkin]); paste the link instead."
        ) from None
    return cv2


def _image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG's IHDR; None for other formats (JPEG is checked after)."""
    if data.startswith(_PNG) and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return None


def decode_photo(data: bytes) -> str:
    """The text of the QR code in a PNG or JPEG photo; unreadable-photo when there is none."""
    if not (data.startswith(_PNG) or data.startswith(_JPEG)):
        raise errors.unreadable_photo("Upload a PNG or JPEG photo of the QR code.")
    size = _image_size(data)
    if size is not None and size[0] * size[1] > MAX_PIXELS:
        raise errors.unreadable_photo("That photo is too large; take one at a lower resolution.")
    cv2 = _cv2()
    import numpy as np

    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise errors.unreadable_photo("That file is not a photo this server can read.")
    height, width = image.shape[:2]
    if height * width > MAX_PIXELS:
        raise errors.unreadable_photo("That photo is too large; take one at a lower resolution.")
    for candidate in _variants(cv2, image):
        for detector in (cv2.QRCodeDetector(), cv2.QRCodeDetectorAruco()):
            try:
                value = detector.detectAndDecode(candidate)[0]
            except cv2.error:
                continue
            if value:
                return str(value)
    raise errors.unreadable_photo(
        "No QR code could be read in this photo. Hold the code flat, fill the frame with it,"
        " avoid glare, and try again — or paste the link."
    )


def _variants(cv2: Any, image: Any) -> list[Any]:
    """The photo as taken, scaled to a size the detectors like, and binarised (glare)."""
    found = [image]
    height, width = image.shape[:2]
    longest = max(height, width)
    if longest > 1400 or longest < 400:
        factor = 1000 / longest
        found.append(cv2.resize(image, (int(width * factor), int(height * factor))))
    found.append(
        cv2.adaptiveThreshold(
            found[-1], 255, cv2.ADAPTIVE_THRESH_GAUSSIAN_C, cv2.THRESH_BINARY, 31, 5
        )
    )
    return found
