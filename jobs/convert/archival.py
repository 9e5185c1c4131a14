"""The archival TIFF of the ``lossless`` rendition set: every page of the upload, not just page 1.

The other renditions show page 1; an archival copy that dropped pages 2..N of a fax or a scanned
bundle would not be one. Pages are decoded, normalised and written one at a time through Pillow's
``AppendingTiffWriter`` (``Image.save(save_all=True)`` would first hold every page in memory), so
peak memory is about two pages whatever the page count. Page 1 is the image the other renditions
were made from; pages 2..N go through the same normalisation (orientation, 8-bit, sRGB), at the
same resolution rules (PDF pages at ``PDF_DPI``), up to ``settings.max_pages``.

Decoding errors on a later page are the upload's fault (``CorruptFile``, as for page 1); failing
to write is the worker's (``TransientError``). No metadata is written, as for every rendition.
"""
from __future__ import annotations

import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobs.convert.colour import stated_profile
from jobs.convert.pixels import normalise
from jobs.identify import DECODE_ERRORS, FileKind
from pipeline.errors import CorruptFile
from pipeline.settings import Settings

if TYPE_CHECKING:
    from PIL import Image as PILImage

    from jobs.convert.renditions import RenditionResult, RenditionSpec


def write_archival(first: "PILImage.Image", src: Path, kind: FileKind, spec: "RenditionSpec", target: Path,
                   settings: Settings) -> "RenditionResult":
    """Write ``first`` and the upload's later pages into ``target/spec.filename``, atomically."""
    from PIL import TiffImagePlugin

    from jobs.convert.renditions import RenditionResult, encodable, write_atomically

    def encode(fh: Any) -> None:
        with TiffImagePlugin.AppendingTiffWriter(fh) as writer:
            for page in _pages(first, src, kind, settings):
                out = encodable(page, spec)
                out.info = {}
                out.save(writer, format=spec.format, **dict(spec.save_options))
                writer.newFrame()

    final = write_atomically(target, spec, encode)
    return RenditionResult(name=spec.name, filename=spec.filename, format=spec.format, mime=spec.mime,
                           width=first.width, height=first.height, bytes=final.stat().st_size)


def _pages(first: "PILImage.Image", src: Path, kind: FileKind, settings: Settings) -> Iterator["PILImage.Image"]:
    yield first
    limit = max(0, settings.max_pages - 1)
    for count, page in enumerate(later_pages(src, kind, settings)):
        if count >= limit:
            break
        yield page


def later_pages(src: Path, kind: FileKind, settings: Settings) -> Iterator["PILImage.Image"]:
    """Pages 2..N of the upload, each normalised like page 1; nothing for a one-page upload."""
    if kind.kind == "pdf":
        yield from _pdf_pages(src, settings, start=1)
    elif kind.kind == "dicom":
        from jobs import dicom

        info = dicom.inspect(src, settings)
        if info.content == "pdf":
            with tempfile.TemporaryDirectory(prefix="medintake-dcmpdf-") as tmp:
                yield from _pdf_pages(dicom.write_pdf(src, Path(tmp) / "document.pdf"), settings, start=1)
            return
        for index in range(1, info.frames):
            yield normalise(dicom.frame_image(src, index, settings), None)
    elif kind.kind == "document":
        from jobs import office

        _, layouts = office.document_pages(src, kind.format, settings)
        for layout in layouts[1:]:
            yield office.render_page(layout)
    else:
        yield from _image_frames(src, settings)


def _image_frames(src: Path, settings: Settings) -> Iterator["PILImage.Image"]:
    """TIFF pages 2..N (the multi-page format scanners and fax servers write), as extract reads them."""
    from PIL import ImageOps

    from jobs.identify import open_image

    img = open_image(src, settings)
    try:
        if img.format != "TIFF":
            return
        try:
            frames = getattr(img, "n_frames", 1) or 1
        except DECODE_ERRORS:
            raise CorruptFile("the image's frames cannot be counted") from None
        for index in range(1, frames):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    img.seek(index)
                    if img.mode not in ("P", "PA"):
                        img.palette = None  # see jobs.extract.text._load_frame
                    img.load()
                    icc = img.info.get("icc_profile") or stated_profile(img, src)
                    frame = ImageOps.exif_transpose(img)
            except EOFError:
                raise CorruptFile("an image frame is missing") from None
            except DECODE_ERRORS:
                raise CorruptFile("the image cannot be decoded") from None
            try:
                yield normalise(frame, icc)
            except DECODE_ERRORS:
                raise CorruptFile("the image's pixel format cannot be converted") from None
    finally:
        img.close()


def _pdf_pages(src: Path, settings: Settings, start: int) -> Iterator["PILImage.Image"]:
    """PDF pages from ``start`` (0-based) rendered as page 1 is, one at a time."""
    import pypdfium2 as pdfium

    from jobs.convert.renditions import pdf_scale
    from jobs.identify import open_pdfium

    pdf = open_pdfium(src)
    try:
        for index in range(start, len(pdf)):
            page = pdf[index]
            try:
                width_pt, height_pt = page.get_size()
                bitmap = page.render(scale=pdf_scale(width_pt, height_pt, settings.max_image_pixels),
                                     fill_color=(255, 255, 255, 255), draw_annots=True, rev_byteorder=True)
                image = bitmap.to_pil().convert("RGB")
                image.info = {}
            except pdfium.PdfiumError:
                raise CorruptFile("a PDF page cannot be rendered") from None
            finally:
                page.close()
            yield image
    finally:
        pdf.close()
