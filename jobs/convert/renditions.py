"""Renditions stage: the images the apps show, made from an upload (SPEC section 5.3).

From one image (frame 1 of a multi-frame file, or page 1 of a PDF rendered with pypdfium2) this
writes into ``out_dir/renditions/`` the three lossy renditions the apps show (the *standard* set,
the default) and, with the setting ``renditions = "lossless"`` (``MEDINTAKE_RENDITIONS``), the two
full-size lossless copies too. They are off by default because the original upload is kept
unchanged next to them, so they only duplicate it, and they were most of the stage's CPU and of
the stored bytes (``bench/README-archival.md`` has the figures and the PDF/A comparison):

=========== ================ ====== ============================ ===================================
name        file             format size                         why
=========== ================ ====== ============================ ===================================
thumbnail   thumbnail.jpg    JPEG   fits 256x256                 lists and search results
preview     preview.webp     WebP   fits 1024x1024               the in-app viewer; keeps alpha
web         web.jpg          JPEG   fits 2048x2048               full-screen / download for the web
png         full.png         PNG    full size, lossless          ``lossless`` only: exact pixels
archival    archival.tiff    TIFF   full size, lossless LZW      ``lossless`` only: every page
=========== ================ ====== ============================ ===================================

No rendition is ever upscaled: a small image keeps its own size in every output.

Pixel pipeline, decided once for all outputs (one decode, then a cascade of downscales):

1. decode frame 1 (or render PDF page 1 at ``PDF_DPI``, bounded to ``PDF_MAX_SIDE`` pixels);
2. apply the EXIF orientation (``ImageOps.exif_transpose``; HEIF is already oriented by libheif);
3. normalise to 8-bit ``L``/``LA``/``RGB``/``RGBA``: palette and transparency keys become alpha,
   16-bit and float samples are *scaled* (Pillow's own ``I;16 -> L`` clips), CMYK and LAB are
   converted, an all-opaque alpha channel is dropped, and RGB whose pixels are all exactly grey
   (most scans) is stored as ``L`` - identical pixels, a third of the work;
4. convert colour to sRGB with LittleCMS when the file embeds an ICC profile that is not sRGB
   (wide-gamut phone photos, Adobe RGB, CMYK press profiles) or states its colour space another
   way (:mod:`jobs.convert.colour`: Adobe RGB given only in EXIF, HEIF nclx such as Display P3 or
   BT.2020, a JPEG 2000 ``colr`` ICC profile); an unusable profile is ignored rather than
   rejecting the upload;
5. write full size (PNG, TIFF; lossless set only), then downscale the *previous* rendition for the next smaller one
   (2048 -> 1024 -> 256) with ``reducing_gap`` (integer box ``reduce`` first, then LANCZOS), so the
   full-size image is resampled once and never more than two full-size buffers exist at a time.

PDFs with the standard set (no full-size output) skip steps 1 and 5: pdfium draws page 1 straight
at each rendition's size (:func:`pdf_page_renditions`; same sizes as the cascade, a third of its
CPU on born-digital pages), and each drawn image goes through step 3 on its own.

JPEG decoded smaller (``Image.draft``): with the standard set (no full-size output) a JPEG is
decoded at the smallest DCT scale (1/2, 1/4, 1/8) that is still at least the largest rendition's
size, so a 16 MP phone photo or a 35 MP scan at 600 dpi is decoded at a quarter of its pixels
(0.58 -> ~0.2 CPU s); a 12 MP photo (4032 x 3024) only reaches 2048 px at full scale and is decoded
as before. Output sizes are computed from the file's own size, so they do not change. With the
lossless set two outputs are full size and everything is decoded at full size. (A second,
DCT-scaled decode for the small outputs only, next to a full one, measured within noise of the
single decode; ``bench/README-renditions.md``.)

Metadata: every output is written from a fresh pixel-only image with empty ``info``, and no
metadata is passed to any encoder. No EXIF, GPS, XMP, IPTC, comments, PNG text chunks, dpi or
extra TIFF tags survive, and **no ICC profile is attached**: the pixels are sRGB and untagged
images are sRGB by convention (CSS Color 4, PNG, WebP, Exif DCF), which keeps thumbnails small.

Alpha is flattened on white for the JPEG outputs and kept for WebP, PNG and TIFF.

Each file is written to a temporary name and renamed into place, so a rerun replaces outputs
atomically and a crash never leaves a half-written rendition under its final name.

Errors: anything that goes wrong while *decoding* is the upload's fault and raises ``CorruptFile``
(never retried); failing to *write* is the worker's trouble and raises ``TransientError``
(retried). Messages and logs carry no file names or paths.
"""
from __future__ import annotations

import logging
import math
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from jobs.convert.colour import stated_profile
from jobs.convert.pixels import normalise
from jobs.identify import DECODE_ERRORS, FileKind
from pipeline.errors import CorruptFile, DecompressionBomb, TransientError
from pipeline.settings import Settings

if TYPE_CHECKING:  # Pillow is a worker-side dependency, imported lazily at call time.
    from PIL import Image as PILImage

log = logging.getLogger(__name__)

RENDITIONS_DIR = "renditions"
SOURCE_PAGE = 1  # the page (PDF, document) or frame (image) every rendition shows; archival: all of them
PDF_DPI = 200  # page 1 of a PDF: A4 -> 1654x2339, sharp enough for the 2048 web image
PDF_MAX_SIDE = 4096  # bound for oversized pages (posters, drawings): longest side in pixels
RESAMPLE_GAP = 2.0  # reducing_gap: box-reduce to within 2x of the target, then LANCZOS
JPEG_WHITE = 255  # background for flattening alpha into JPEG


@dataclass(frozen=True)
class RenditionResult:
    """One written rendition: out_dir/renditions/<filename>."""

    name: str  # thumbnail | preview | web | png | archival
    filename: str
    format: str  # JPEG | PNG | WEBP | TIFF
    mime: str
    width: int
    height: int
    bytes: int


@dataclass(frozen=True)
class RenditionSpec:
    """One output: where it goes, how it is encoded, and the box it must fit (None = full size)."""

    name: str
    filename: str
    format: str
    mime: str
    max_side: int | None
    save_options: tuple[tuple[str, Any], ...]

    @property
    def keeps_alpha(self) -> bool:
        return self.format != "JPEG"


#: The default set; the others are written only with ``renditions = "lossless"``.
STANDARD = ("thumbnail", "preview", "web")

# Ordered largest first: each downscaled rendition is made from the one before it.
RENDITIONS: tuple[RenditionSpec, ...] = (
    RenditionSpec(
        "archival", "archival.tiff", "TIFF", "image/tiff", None,
        # LZW + horizontal predictor: as small as deflate+predictor within ~10 %, 4x faster to
        # write, and the most widely readable lossless TIFF compression. 1 MiB strips instead of
        # Pillow's 64 KiB: LZW restarts its dictionary per strip (-30 % bytes on wide scans).
        (("compression", "tiff_lzw"), ("tiffinfo", {317: 2}), ("strip_size", 1 << 20)),  # 317: Predictor=2
    ),
    RenditionSpec(
        "png", "full.png", "PNG", "image/png", None,
        # zlib level 3: ~2.5x faster than the default 6 for ~5 % more bytes on photos.
        (("compress_level", 3),),
    ),
    RenditionSpec(
        "web", "web.jpg", "JPEG", "image/jpeg", 2048,
        # Baseline, not progressive: progressive took 2.4x the encoding CPU for 7-9 % fewer bytes
        # (bench/README-pipeline.md, 2026-11-28), the largest single cost of a born-digital page.
        (("quality", 85), ("optimize", True), ("subsampling", "4:2:0")),
    ),
    RenditionSpec(
        "preview", "preview.webp", "WEBP", "image/webp", 1024,
        # method 2 at q82: half the CPU of method 4 at q80 for ~7 % more bytes, and the same colour
        # fidelity (tests/test_colour.py: CIEDE2000 < 2 on every patch; q80 at method 2 reached 2.07).
        (("quality", 82), ("method", 2)),
    ),
    RenditionSpec(
        "thumbnail", "thumbnail.jpg", "JPEG", "image/jpeg", 256,
        (("quality", 80), ("optimize", True), ("subsampling", "4:2:0")),
    ),
)


def make_renditions(src: Path, kind: FileKind, out_dir: Path, settings: Settings) -> list[RenditionResult]:
    """Write the configured renditions of ``src`` into ``out_dir/renditions/`` and describe them.

    ``kind`` comes from ``detect.identify`` and the file has passed ``detect.validate``; the source
    is only read, never modified. Returns results in the order thumbnail, preview, web (then png,
    archival with the lossless set): smallest first, the order apps usually want them.
    """
    quiet_pillow_debug_logging()
    target = out_dir / RENDITIONS_DIR
    target.mkdir(parents=True, exist_ok=True)
    specs = selected(settings)
    if kind.kind == "pdf" and all(spec.max_side is not None for spec in specs):
        # No full-size output: pdfium draws page 1 straight at each rendition's size.
        return list(reversed(pdf_page_renditions(src, specs, target, settings)))
    largest = None if any(spec.max_side is None for spec in specs) else max(spec.max_side for spec in specs)
    current, full_size = load_for_renditions(src, kind, settings, largest)
    results: list[RenditionResult] = []
    for spec in specs:
        # Sizes come from the full size (no rounding drift along the cascade); rebinding
        # ``current`` releases the full-size buffer once the first downscale exists.
        current = fit_within(current, full_size, spec.max_side)
        if spec.name == "archival":  # every page, not page 1 only (jobs.convert.archival)
            from jobs.convert.archival import write_archival

            results.append(write_archival(current, src, kind, spec, target, settings))
        else:
            results.append(write_rendition(current, spec, target))
    log.debug("renditions written: %d", len(results))
    return list(reversed(results))


def selected(settings: Settings) -> tuple[RenditionSpec, ...]:
    """The specs the ``renditions`` setting asks for, largest first."""
    if settings.renditions == "lossless":
        return RENDITIONS
    return tuple(spec for spec in RENDITIONS if spec.name in STANDARD)


def quiet_pillow_debug_logging() -> None:
    """Keep Pillow's DEBUG records out of the logs: they print EXIF/TIFF tag values (names, GPS).

    The worker may run at DEBUG; PHI must still never reach a log line (SPEC section 6). Only
    raises the "PIL" logger to INFO when it is unset or more verbose; nothing else is touched.
    """
    pil_logger = logging.getLogger("PIL")
    if pil_logger.getEffectiveLevel() < logging.INFO:
        pil_logger.setLevel(logging.INFO)


# --- decoding -----------------------------------------------------------------------------------


def load_normalised(src: Path, kind: FileKind, settings: Settings) -> "PILImage.Image":
    """Decode the source into a fresh, oriented, 8-bit sRGB image with no metadata at all."""
    return load_for_renditions(src, kind, settings, None)[0]


def load_for_renditions(src: Path, kind: FileKind, settings: Settings,
                        fit: int | None) -> tuple["PILImage.Image", tuple[int, int]]:
    """:func:`load_normalised`, and the full (oriented) size the renditions' sizes come from.

    ``fit``: the largest rendition's box; a JPEG may then be decoded smaller, down to that box
    (never below it), and the image returned is smaller than the full size."""
    if kind.kind == "pdf":
        image = render_pdf_page(src, settings)
    elif kind.kind == "dicom":
        image = render_dicom(src, settings)
    elif kind.kind == "document":
        from jobs import office

        _, pages = office.document_pages(src, kind.format, settings)
        image = office.render_page(pages[0])  # a new L image: pixels only
    else:
        return decode_image(src, settings, fit)
    return image, image.size


def render_dicom(src: Path, settings: Settings) -> "PILImage.Image":
    """Frame 1 of a DICOM image (pixels only, never a header value), or page 1 of its encapsulated PDF."""
    from jobs import dicom

    info = dicom.inspect(src, settings)
    if info.content == "pdf":
        with tempfile.TemporaryDirectory(prefix="medintake-dcmpdf-") as tmp:
            return render_pdf_page(dicom.write_pdf(src, Path(tmp) / "document.pdf"), settings)
    return normalise(dicom.frame_image(src, 0, settings), None)


def decode_image(src: Path, settings: Settings, fit: int | None = None) -> tuple["PILImage.Image", tuple[int, int]]:
    """Frame 1 of an image file, oriented and normalised, and its full oriented size; decoding
    failures become CorruptFile. ``fit``: see :func:`load_for_renditions`."""

    from jobs.identify import open_image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Corrupt EXIF data": parsed at open for JPEG
        img = open_image(src, settings)
    try:
        full = img.size
        if fit is not None and img.format in ("JPEG", "MPO"):
            # libjpeg's DCT scaling: the smallest of 1/1, 1/2, 1/4, 1/8 at least this size.
            img.draft(img.mode, fitted_size(full, fit))
        decode_first_frame(img, settings)
        # The embedded ICC profile, else the colour space the file states another way (EXIF-only
        # Adobe RGB, HEIF nclx, a JPEG 2000 colr box): read before orient() rewrites the EXIF.
        icc = img.info.get("icc_profile") or stated_profile(img, src)
        stored = img.size
        orient(img)
        if img.size != stored:  # turned by 90 or 270 degrees
            full = (full[1], full[0])
        try:
            return normalise(img, icc), full
        except DECODE_ERRORS:
            raise CorruptFile("the image's pixel format cannot be converted") from None
    finally:
        img.close()


def decode_first_frame(img: "PILImage.Image", settings: Settings) -> None:
    """Decode frame 1 (TIFF page 1, first GIF frame); any decoder failure becomes CorruptFile."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            warnings.simplefilter("ignore", UserWarning)  # Pillow's chatter about odd metadata
            if img.tell() != 0:  # (not n_frames: counting GIF frames reads the whole file)
                img.seek(0)
            img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DecompressionBomb(f"the image declares more than {settings.max_image_pixels} pixels") from None
    except DECODE_ERRORS:
        # Broad on purpose, and only around the decoders: a damaged file surfaces as any of these.
        raise CorruptFile("the image cannot be decoded") from None


def orient(img: "PILImage.Image") -> None:
    """Apply the EXIF orientation in place; broken EXIF means 'as stored', not a rejection."""
    from PIL import ImageOps

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Truncated File Read" and the like
            ImageOps.exif_transpose(img, in_place=True)
    except DECODE_ERRORS:  # struct.error: truncated EXIF
        log.info("EXIF orientation unreadable; keeping the stored orientation")


def render_pdf_page(src: Path, settings: Settings) -> "PILImage.Image":
    """Page 1 of a PDF as an RGB image at ``PDF_DPI``, no larger than the pixel limits."""
    import pypdfium2 as pdfium

    from jobs.identify import open_pdfium

    pdf = open_pdfium(src)
    try:
        if len(pdf) == 0:
            raise CorruptFile("the PDF has no pages")
        page = pdf[0]
        try:
            width_pt, height_pt = page.get_size()
            scale = pdf_scale(width_pt, height_pt, settings.max_image_pixels)
            bitmap = page.render(scale=scale, fill_color=(255, 255, 255, 255), draw_annots=True,
                                 rev_byteorder=True)
            rendered = bitmap.to_pil()
            image = rendered.convert("RGB")  # a copy that owns its pixels, independent of pdfium
            image.info = {}
            return image
        finally:
            page.close()
    except pdfium.PdfiumError:
        raise CorruptFile("the PDF page cannot be rendered") from None
    finally:
        pdf.close()


def pdf_page_renditions(src: Path, specs: tuple[RenditionSpec, ...], target: Path,
                        settings: Settings) -> list[RenditionResult]:
    """Page 1 of a PDF drawn by pdfium at each rendition's own size (sets without a full-size output).

    Each output has exactly the size the cascade would give it (the ``PDF_DPI`` page, bounded,
    fitted in the spec's box), but is rasterised there instead of being rendered at ``PDF_DPI``
    and resampled: drawing a 2048-px page costs about what the 200 dpi one does, and drawing the
    1024 and 256 px ones costs less than resampling to them (``bench/README-pipeline.md``: the
    stage went from ~0.23 to ~0.07 CPU s per born-digital document). pdfium anti-aliases text and
    vectors at the target size, so the small renditions are at least as sharp as a LANCZOS
    reduction. Every output is normalised on its own (a grey page becomes ``L``).
    """
    import pypdfium2 as pdfium

    from jobs.identify import open_pdfium

    pdf = open_pdfium(src)
    try:
        if len(pdf) == 0:
            raise CorruptFile("the PDF has no pages")
        try:
            page = pdf[0]
        except pdfium.PdfiumError:
            raise CorruptFile("the PDF page cannot be rendered") from None
        try:
            width_pt, height_pt = page.get_size()
            scale = pdf_scale(width_pt, height_pt, settings.max_image_pixels)
            full = (math.ceil(width_pt * scale), math.ceil(height_pt * scale))  # what render() at scale gives
            results = []
            for spec in specs:
                assert spec.max_side is not None
                image = draw_pdf_page(page, fitted_size(full, spec.max_side))
                results.append(write_rendition(normalise(image, None), spec, target))
            return results
        finally:
            page.close()
    finally:
        pdf.close()


def draw_pdf_page(page: Any, size: tuple[int, int]) -> "PILImage.Image":
    """The page (its /Rotate applied, annotations drawn, on white) stretched to exactly ``size``, as RGB."""
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    width, height = size
    try:
        bitmap = pdfium.PdfBitmap.new_native(width, height, pdfium_c.FPDFBitmap_BGR, rev_byteorder=True)
        try:
            bitmap.fill_rect((255, 255, 255, 255), 0, 0, width, height)
            pdfium_c.FPDF_RenderPageBitmap(bitmap, page, 0, 0, width, height, 0,
                                           pdfium_c.FPDF_ANNOT | pdfium_c.FPDF_REVERSE_BYTE_ORDER)
            rendered = bitmap.to_pil()
            # Pillow's frombuffer maps only L/P/RGBX/RGBA/CMYK/I;16 buffers; an RGB one is copied,
            # so the image owns its pixels once the bitmap is closed. Anything else: copy it.
            image = rendered if rendered.mode == "RGB" else rendered.convert("RGB")
        finally:
            bitmap.close()
    except pdfium.PdfiumError:
        raise CorruptFile("the PDF page cannot be rendered") from None
    image.info = {}
    return image


def pdf_scale(width_pt: float, height_pt: float, max_pixels: int) -> float:
    """Scale (pixels per point) for ``PDF_DPI``, reduced so the bitmap stays within the bounds."""
    if width_pt <= 0 or height_pt <= 0:
        raise CorruptFile("the PDF page has no area")
    scale = PDF_DPI / 72.0
    longest = max(width_pt, height_pt) * scale
    if longest > PDF_MAX_SIDE:
        scale *= PDF_MAX_SIDE / longest
    pixels = width_pt * height_pt * scale * scale
    if pixels > max_pixels:
        scale *= (max_pixels / pixels) ** 0.5
    # pdfium rounds the bitmap size up: leave room for the partial pixels.
    while (math.ceil(width_pt * scale) * math.ceil(height_pt * scale)) > max_pixels and scale > 1e-3:
        scale *= 0.99
    return scale


# --- resampling and writing ---------------------------------------------------------------------


def fit_within(img: "PILImage.Image", full_size: tuple[int, int], max_side: int | None) -> "PILImage.Image":
    """``img`` resized to ``full_size`` fitted in a ``max_side`` square; ``img`` itself if it is so."""
    if max_side is None:
        return img
    size = fitted_size(full_size, max_side)
    if size == img.size:
        return img
    from PIL import Image

    return img.resize(size, Image.Resampling.LANCZOS, reducing_gap=RESAMPLE_GAP)


def fitted_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """Largest size with the same aspect ratio inside ``max_side`` x ``max_side``; never larger."""
    width, height = size
    if width <= max_side and height <= max_side:
        return size
    ratio = min(max_side / width, max_side / height)
    return max(1, min(max_side, round(width * ratio))), max(1, min(max_side, round(height * ratio)))


def flatten(img: "PILImage.Image") -> "PILImage.Image":
    """Composite an image with alpha onto white (JPEG has no alpha)."""
    from PIL import Image

    if img.mode not in ("LA", "RGBA"):
        return img
    base_mode = img.mode[:-1]
    background = Image.new(base_mode, img.size, JPEG_WHITE if base_mode == "L" else (JPEG_WHITE,) * 3)
    background.paste(img.convert(base_mode), mask=img.getchannel("A"))
    return background


def encodable(img: "PILImage.Image", spec: RenditionSpec) -> "PILImage.Image":
    """The image in a mode the spec's format stores: flattened for JPEG, RGB(A) for WebP."""
    if not spec.keeps_alpha:
        return flatten(img)
    if spec.format == "WEBP" and img.mode in ("L", "LA"):
        return img.convert("RGBA" if img.mode == "LA" else "RGB")
    return img


def write_rendition(img: "PILImage.Image", spec: RenditionSpec, target: Path) -> RenditionResult:
    """Encode ``img`` per ``spec`` into ``target`` atomically, with no metadata; describe the file."""
    out = encodable(img, spec)
    out.info = {}

    def encode(fh: Any) -> None:
        out.save(fh, spec.format, **dict(spec.save_options))

    final = write_atomically(target, spec, encode)
    return RenditionResult(
        name=spec.name,
        filename=spec.filename,
        format=spec.format,
        mime=spec.mime,
        width=out.width,
        height=out.height,
        bytes=final.stat().st_size,
    )


def write_atomically(target: Path, spec: RenditionSpec, encode: Callable[[Any], None]) -> Path:
    """Run ``encode(file)`` into a temporary file, then rename it to its final name.

    A rerun replaces the output atomically and a crash never leaves half a file under the final
    name; failing to write is the worker's trouble (``TransientError``, retried), never the upload's.
    """
    final = target / spec.filename
    fd, tmp_name = tempfile.mkstemp(prefix=f".{spec.name}-", suffix=".tmp", dir=target)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w+b") as fh:
            encode(fh)
        os.replace(tmp, final)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise TransientError(f"writing the {spec.name} rendition failed") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return final
