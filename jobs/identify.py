"""Identify and validate an upload from its bytes.

The file name and the declared content type are never trusted (a file's extension can lie, and a
name can hold PHI). ``identify`` reads only magic bytes, so it is cheap; ``validate`` opens the file
with the engine that will process it and turns every way it can be unreadable into a specific
``RejectedInput``. Both the extract and the convert job call these first, so a bad upload gets the
same reason code whichever job sees it first; both open their input through :func:`open_image` and
:func:`open_pdfium`, so a file is refused the same way wherever it is opened. Worker-side module
shared by the job kinds: imports Pillow and pypdfium2 lazily.

Kinds: "pdf", "image", "dicom" (:mod:`jobs.dicom`: a preamble + ``DICM`` or a bare dataset; checked
first, since a DICOM preamble may hold a TIFF header) and "document" (:mod:`jobs.office`: a ZIP
holding ``word/document.xml`` is DOCX, one whose ``mimetype`` is OpenDocument text is ODT,
``{\\rtf`` is RTF, and anything else that is plainly text - no NUL byte, almost no control
characters, decodes - is TXT; other ZIPs, OLE files and PostScript are ``unsupported_type``).
"""
from __future__ import annotations

import re
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import (
    CorruptFile,
    DecompressionBomb,
    EmptyFile,
    EncryptedPdf,
    TooLarge,
    UnsupportedType,
)
from pipeline.settings import Settings


@dataclass(frozen=True)
class FileKind:
    """What an upload really is, from its bytes (never from its name)."""

    kind: str  # "pdf" | "image" | "dicom" | "document"
    format: str  # PDF, JPEG, PNG, TIFF, WEBP, GIF, BMP, HEIF, AVIF, JPEG2000, DICOM, DOCX, ODT, RTF, TXT
    mime: str
    extension: str  # canonical, with the dot: ".pdf", ".jpg" ...


PDF = FileKind("pdf", "PDF", "application/pdf", ".pdf")
_IMAGES = {
    "JPEG": FileKind("image", "JPEG", "image/jpeg", ".jpg"),
    "PNG": FileKind("image", "PNG", "image/png", ".png"),
    "TIFF": FileKind("image", "TIFF", "image/tiff", ".tiff"),
    "WEBP": FileKind("image", "WEBP", "image/webp", ".webp"),
    "GIF": FileKind("image", "GIF", "image/gif", ".gif"),
    "BMP": FileKind("image", "BMP", "image/bmp", ".bmp"),
    "HEIF": FileKind("image", "HEIF", "image/heif", ".heic"),
    "AVIF": FileKind("image", "AVIF", "image/avif", ".avif"),
    "JPEG2000": FileKind("image", "JPEG2000", "image/jp2", ".jp2"),
}
DICOM = FileKind("dicom", "DICOM", "application/dicom", ".dcm")
DOCUMENTS = {
    "DOCX": FileKind("document", "DOCX", "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
                     ".docx"),
    "ODT": FileKind("document", "ODT", "application/vnd.oasis.opendocument.text", ".odt"),
    "RTF": FileKind("document", "RTF", "application/rtf", ".rtf"),
    "TXT": FileKind("document", "TXT", "text/plain", ".txt"),
}
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}
#: AVIF stills and AVIF image sequences (``avis``, e.g. animated stickers); Pillow's own AVIF plugin
#: reads both, every frame of a sequence.
_AVIF_BRANDS = {b"avif", b"avis"}
#: JPEG 2000 (scanners, PACS exports): the JP2 signature box (.jp2 and .jpf/.jpx files) or a bare
#: codestream (.j2k/.j2c) starting with SOC + SIZ. Pillow reads both through OpenJPEG.
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
_J2K_CODESTREAM = b"\xff\x4f\xff\x51"


def sniff(head: bytes) -> FileKind | None:
    """The kind of file these leading bytes start, or None when unknown (ZIP and text need the file)."""
    from jobs.dicom import looks_like_dicom

    if looks_like_dicom(head):  # first: a DICOM preamble may hold a TIFF header, its header "%PDF-"
        return DICOM
    if head[:1024].find(b"%PDF-") != -1:  # PDF allows junk before the header (within 1 KiB)
        return PDF
    if head.startswith(b"\xff\xd8\xff"):
        return _IMAGES["JPEG"]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return _IMAGES["PNG"]
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):  # classic TIFF, then BigTIFF
        return _IMAGES["TIFF"]
    if head.startswith(_JP2_SIGNATURE) or head.startswith(_J2K_CODESTREAM):
        return _IMAGES["JPEG2000"]
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return _IMAGES["WEBP"]
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return _IMAGES["GIF"]
    if head[:2] == b"BM" and len(head) >= 26:
        return _IMAGES["BMP"]
    if head[4:8] == b"ftyp" and head[8:12] in _AVIF_BRANDS:
        return _IMAGES["AVIF"]
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        return _IMAGES["HEIF"]
    if head.startswith(b"{\\rtf"):
        return DOCUMENTS["RTF"]
    return None


#: Image formats written as text, which must not be taken for a letter: plain Netpbm (P1-P3 and a
#: number), X BitMap and X PixMap.
_TEXT_IMAGE = re.compile(rb"(P[123]\s+(#[^\n]*\s+)*\d|#define \w+_width |/\* XPM \*/)")


def identify(path: Path, settings: Settings) -> FileKind:
    """Cheap identification by size and magic bytes; raises a RejectedInput subclass."""
    size = path.stat().st_size
    if size == 0:
        raise EmptyFile("the upload is empty (0 bytes)")
    if size > settings.max_upload_bytes:
        raise TooLarge(f"the upload is {size} bytes; the limit is {settings.max_upload_bytes}")
    with path.open("rb") as fh:
        head = fh.read(2048)
    kind = sniff(head)
    if kind is None and head.startswith(b"PK\x03\x04"):
        from jobs.office import sniff_zip

        fmt = sniff_zip(path)
        if fmt is None:
            raise UnsupportedType("the upload is a ZIP archive that is not a DOCX or ODT document")
        kind = DOCUMENTS[fmt]
    if kind is None and head.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        raise UnsupportedType("the upload is an OLE compound file (a legacy .doc/.xls or a password-protected "
                              "Office document), which is not supported")
    if kind is None and head.lstrip(b"\xef\xbb\xbf").startswith((b"%!PS", b"\xc5\xd0\xd3\xc6")):
        raise UnsupportedType("the upload is PostScript/EPS, which is not supported; print it to PDF instead")
    if kind is None and _TEXT_IMAGE.match(head):
        raise UnsupportedType("the upload is an image stored as text (Netpbm, XBM or XPM), which is not supported")
    if kind is None:
        from jobs.office import looks_like_text

        if looks_like_text(path):
            kind = DOCUMENTS["TXT"]
    if kind is None:
        raise UnsupportedType("the upload is not a PDF, a supported image, DICOM, or a DOCX/ODT/RTF/text document")
    return kind


def validate(path: Path, kind: FileKind, settings: Settings) -> int:
    """Open the file with its engine; return its page (or frame) count. Raises RejectedInput."""
    if kind.kind == "pdf":
        return _validate_pdf(path, settings)
    if kind.kind == "dicom":
        return _validate_dicom(path, settings)
    if kind.kind == "document":
        from jobs.office import document_pages

        return len(document_pages(path, kind.format, settings)[1])
    return _validate_image(path, settings)


def _validate_dicom(path: Path, settings: Settings) -> int:
    """Frames of a DICOM image; pages of the PDF an Encapsulated PDF object carries."""
    import tempfile

    from jobs import dicom

    info = dicom.inspect(path, settings)
    if info.content == "image":
        return info.frames
    with tempfile.TemporaryDirectory(prefix="medintake-dcmpdf-") as tmp:
        return _validate_pdf(dicom.write_pdf(path, Path(tmp) / "document.pdf"), settings)


def _validate_pdf(path: Path, settings: Settings) -> int:
    pdf = open_pdfium(path)
    try:
        pages = len(pdf)
        if pages == 0:
            raise CorruptFile("the PDF has no pages")
        if pages > settings.max_pages:
            raise TooLarge(f"the PDF has {pages} pages; the limit is {settings.max_pages}")
        return pages
    finally:
        pdf.close()


def open_pdfium(path: Path) -> Any:
    """Open with pdfium; a password or damage becomes the matching RejectedInput."""
    import pypdfium2 as pdfium

    try:
        return pdfium.PdfDocument(str(path))
    except pdfium.PdfiumError as exc:
        if "password" in str(exc).lower():
            raise EncryptedPdf("the PDF is password-protected") from None
        raise CorruptFile("the PDF cannot be parsed") from None


#: What Pillow's plugins raise on a damaged file, at open, while counting frames (GIF and TIFF seek
#: through the file) or decoding: all of them mean "this upload cannot be read" (found by mutating
#: Pillow's own test images: IndexError and struct.error from GIF, KeyError and TypeError from TIFF
#: frame headers, RuntimeError from the AVIF/HEIF decoders).
DECODE_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, SyntaxError, EOFError, IndexError, KeyError,
                                                 TypeError, RuntimeError, struct.error, ZeroDivisionError)


def open_image(path: Path, settings: Settings):
    """Open an image with Pillow under the pixel limit; HEIF support registered on demand."""
    from PIL import Image, UnidentifiedImageError

    with path.open("rb") as fh:
        is_heif = fh.read(12)[4:8] == b"ftyp"
    if is_heif:
        import pillow_heif

        pillow_heif.register_heif_opener()
    Image.MAX_IMAGE_PIXELS = settings.max_image_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DecompressionBomb(
            f"the image declares more than {settings.max_image_pixels} pixels"
        ) from None
    except (UnidentifiedImageError, *DECODE_ERRORS):
        raise CorruptFile("the image cannot be decoded") from None


def _validate_image(path: Path, settings: Settings) -> int:
    from PIL import Image

    img = open_image(path, settings)
    try:
        frames = getattr(img, "n_frames", 1) or 1
        if frames > settings.max_pages:
            raise TooLarge(f"the image has {frames} frames; the limit is {settings.max_pages}")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if img.format == "JPEG":
                # Scaled decoding still reads every entropy-coded byte (a truncated or damaged
                # stream fails the same way) but skips most of the inverse DCT, colour conversion
                # and the full-size buffer: 31 -> 6 ms CPU on an 8.7 MP receipt.
                img.draft(img.mode, (max(1, img.width // 8), max(1, img.height // 8)))
            img.load()  # decodes the first frame: truncated or damaged data fails here
        return frames
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DecompressionBomb(f"the image declares more than {settings.max_image_pixels} pixels") from None
    except DECODE_ERRORS:
        raise CorruptFile("the image cannot be decoded") from None
    finally:
        img.close()
