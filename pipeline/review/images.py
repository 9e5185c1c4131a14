"""Small page pictures for the review page, in the coordinate frame of each page's word boxes.

Renditions exist for page 1 only, and for a photo they show the upload as taken, while the OCR
boxes refer to the image Tesseract read (perspective-corrected, deskewed, scaled, turned). That
image is exactly the picture of the page in ``searchable.pdf``, so OCR'd pages are rendered from
there; text-layer pages are rendered from the original PDF, upright (its /Rotate applied), and
their boxes, which pages.json gives in the unrotated crop box, are turned the same way by
:func:`pipeline.review.render.display_box`. Either way every box sits on its word in the picture,
whatever the upload was.

pypdfium2 and Pillow are imported inside the functions: ``pipeline`` stays light to import, and
this module is never on a Lambda's path (only the CLI's ``show`` uses it).
"""
from __future__ import annotations

import base64
import io
import logging
import time
from typing import Any

log = logging.getLogger(__name__)

#: Longest rendered side in pixels: sharp enough to read a word at the page's displayed width
#: (~800 CSS px), small enough that 300 pages stay a few tens of MB.
MAX_SIDE = 1000
JPEG_QUALITY = 60


def page_images(pages: list[dict[str, Any]], original: bytes | None, searchable: bytes | None,
                max_side: int = MAX_SIDE) -> dict[int, str]:
    """{page_no: data: URI} for every page that has a picture in the right frame.

    ``original`` is the upload when it is a PDF (None for images); ``searchable`` is
    results/<id>/searchable.pdf when OCR ran. Pages without a source are left out (text only).
    """
    import pypdfium2 as pdfium

    started = time.perf_counter()
    docs: dict[str, Any] = {}
    out: dict[int, str] = {}
    try:
        for record in pages:
            page_no = int(record.get("page_no", 0))
            from_layer = record.get("source") == "text-layer"
            blob, name = (original, "original") if from_layer else (searchable, "searchable")
            if blob is None or page_no < 1:
                continue
            if name not in docs:
                try:
                    docs[name] = pdfium.PdfDocument(blob)
                except pdfium.PdfiumError:
                    docs[name] = None
            doc = docs[name]
            if doc is None or page_no > len(doc):
                continue
            out[page_no] = _render(doc, page_no - 1, gray=not from_layer, max_side=max_side)
    finally:
        for doc in docs.values():
            if doc is not None:
                doc.close()
    log.info("review: %d page pictures in %.2f s", len(out), time.perf_counter() - started)
    return out


def _render(doc: Any, index: int, *, gray: bool, max_side: int) -> str:
    """One page as a JPEG data: URI, upright as a PDF viewer shows it (/Rotate applied)."""
    page = doc[index]
    try:
        width, height = page.get_size()
        scale = max_side / max(width, height, 1.0)
        bitmap = page.render(scale=scale, grayscale=gray)
        try:
            image = bitmap.to_pil()
        finally:
            bitmap.close()
    finally:
        page.close()
    return jpeg_data_uri(image.convert("L" if gray else "RGB"))


def jpeg_data_uri(image: Any, quality: int = JPEG_QUALITY) -> str:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
