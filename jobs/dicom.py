"""DICOM uploads: identification, validation and rendering of frames to 8-bit page images.

Clinics send DICOM: X-rays, ultrasound stills, scanned documents as Secondary Capture, reports as
Encapsulated PDF. What this module gives the jobs:

* :func:`looks_like_dicom` - from the first bytes: the 128-byte preamble + ``DICM``, or a
  preamble-less file that starts with a file-meta (0002) or identifying (0008) group element;
* :func:`inspect` - open with pydicom and classify: an image (frames become pages), an Encapsulated
  PDF (processed as a PDF), or a rejection with its own reason: a DICOMDIR (``dicomdir``), no pixel
  data (``dicom_without_image``: SR, encapsulated CDA...), a compression no installed decoder reads
  (``unsupported_dicom_compression``), too many frames or pixels, or damage (``corrupt_file``);
* :func:`frame_image` - one frame decoded (pydicom with the pylibjpeg / Pillow decoders) and rendered
  to an 8-bit ``L`` or ``RGB`` image: Modality LUT / rescale, then the file's VOI LUT or window
  (per-frame values of enhanced multi-frame objects included), or a robust 0.5-99.5 percentile
  window when the file has none; MONOCHROME1 inverted; YBR converted to RGB; PALETTE COLOR
  expanded; colour samples over 8 bits scaled;
* :func:`write_pdf` - the PDF of an Encapsulated PDF object.

PHI: the header holds the patient's name, ID and birth date. **No element value is ever copied**
into an output, a log line, an exception message or a notice: images are built from the pixel
array alone (a new ``PIL.Image`` with empty ``info``), pages.json gets pixel-derived data only (no
dpi from Pixel Spacing either), and rejection messages are fixed sentences of ours (a transfer
syntax is named only from pydicom's own table of standard names). pydicom's warnings and log
records can quote element values, so they are silenced around every call here and its logger is
kept quiet. pydicom and numpy are imported lazily (worker-side only).
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import (
    CorruptFile,
    DecompressionBomb,
    DicomDirectory,
    DicomWithoutImage,
    MedintakeError,
    TooLarge,
    UnsupportedDicomCompression,
)
from pipeline.settings import Settings

if TYPE_CHECKING:
    from PIL import Image as PILImage

log = logging.getLogger(__name__)

ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
PERCENTILES = (0.5, 99.5)  # the robust window when the file has none

# Explicit VR codes (PS3.5 6.2): a preamble-less explicit-VR file shows one at bytes 4-5.
_VRS = {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"OB", b"OD",
        b"OF", b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM", b"UC", b"UI",
        b"UL", b"UN", b"UR", b"US", b"UT", b"UV"}
# First elements seen in preamble-less implicit-VR files (group 0008).
_IMPLICIT_FIRST = {0x0000, 0x0005, 0x0008, 0x0012, 0x0013, 0x0016, 0x0018, 0x0020}


def looks_like_dicom(head: bytes) -> bool:
    """Whether these leading bytes start a DICOM file (Part 10, or a bare preamble-less dataset)."""
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True
    if len(head) < 8:
        return False
    if head[0] == 0 and head[1] in (0x02, 0x08) and head[4:6] in _VRS:  # explicit VR big endian
        return int.from_bytes(head[2:4], "big") < 0x0200
    if head[1] != 0 or head[0] not in (0x02, 0x08):
        return False
    element = int.from_bytes(head[2:4], "little")
    if head[4:6] in _VRS:  # explicit VR little endian
        return element < 0x0200
    length = int.from_bytes(head[4:8], "little")  # implicit VR little endian
    return head[0] == 0x08 and element in _IMPLICIT_FIRST and length < 256


# --------------------------------------------------------------------------------------------
# Reading, quietly
# --------------------------------------------------------------------------------------------

_configured = False


def _configure() -> None:
    """Lenient reading (never raise or warn over a badly formed value) and a silent logger."""
    global _configured
    if _configured:
        return
    import pydicom.config

    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    # pydicom's records can quote element values (names, IDs): none may reach a log line.
    for name in ("pydicom", "pylibjpeg"):
        quiet = logging.getLogger(name)
        quiet.setLevel(logging.CRITICAL + 10)
        quiet.propagate = False
    _configured = True


class _quiet(warnings.catch_warnings):
    """Every warning suppressed inside (pydicom's warnings quote values)."""

    def __enter__(self):  # type: ignore[override]
        result = super().__enter__()
        warnings.simplefilter("ignore")
        return result


_CACHE: dict[tuple[str, int, int], Any] = {}


def read_dataset(path: Path) -> Any:
    """The whole dataset (pixel data included), cached for the next frame of the same file."""
    _configure()
    import pydicom

    st = path.stat()
    key = (str(path), st.st_mtime_ns, st.st_size)
    if key in _CACHE:
        return _CACHE[key]
    try:
        with _quiet():
            ds = pydicom.dcmread(str(path), force=True)
            _ensure_transfer_syntax(ds)
            list(ds.keys())  # every top-level element parsed now: damage surfaces here
    except MedintakeError:
        raise
    except MemoryError:
        raise
    except Exception:  # pydicom raises many types on damaged files; none of their messages is kept
        raise CorruptFile("the DICOM file cannot be parsed") from None
    _CACHE.clear()
    _CACHE[key] = ds
    return ds


def _ensure_transfer_syntax(ds: Any) -> None:
    """Preamble-less files have no file meta: record the encoding pydicom found, for the decoders."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    if meta is None:
        meta = ds.file_meta = FileMetaDataset()
    if "TransferSyntaxUID" in meta:
        return
    implicit, little = ds.original_encoding if ds.original_encoding != (None, None) else (True, True)
    meta.TransferSyntaxUID = (ImplicitVRLittleEndian if implicit else
                              ExplicitVRLittleEndian if little else ExplicitVRBigEndian)


def _get(ds: Any, keyword: str, default: Any = None) -> Any:
    """An element's value, or ``default`` when absent or unreadable (lenient on damaged headers)."""
    try:
        with _quiet():
            value = ds.get(keyword, default)
            return default if value is None or value == "" else value
    except Exception:
        return default


def _int(ds: Any, keyword: str, default: int | None = None) -> int | None:
    value = _get(ds, keyword)
    try:
        return int(value) if value is not None else default
    except (TypeError, ValueError):
        return default


# --------------------------------------------------------------------------------------------
# What the file is
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DicomInfo:
    """The part of a DICOM file the jobs act on (never any identifying value)."""

    content: str  # "image" | "pdf"
    frames: int  # image frames; for a PDF, 0 (its pages are counted by the PDF engine)


def _sop_class(ds: Any) -> str:
    meta = getattr(ds, "file_meta", None)
    return str(_get(ds, "SOPClassUID") or (_get(meta, "MediaStorageSOPClassUID") if meta is not None else "") or "")


def inspect(path: Path, settings: Settings) -> DicomInfo:
    """Classify and check the file; raises the matching RejectedInput."""
    ds = read_dataset(path)
    sop = _sop_class(ds)
    if sop == DICOMDIR_CLASS or "DirectoryRecordSequence" in ds:
        raise DicomDirectory("the upload is a DICOMDIR (the index of a DICOM disc), not an image")
    if "EncapsulatedDocument" in ds:
        if sop == ENCAPSULATED_PDF or _encapsulated_bytes(ds)[:1024].find(b"%PDF-") != -1:
            return DicomInfo("pdf", 0)
        raise DicomWithoutImage("the DICOM file holds an encapsulated document that is not a PDF")
    if not any(k in ds for k in PIXEL_KEYWORDS):
        if sop.startswith("1.2.840.10008.5.1.4.1.1.88."):
            raise DicomWithoutImage("the DICOM file is a structured report, with no image")
        raise DicomWithoutImage("the DICOM file has no pixel data")
    rows, cols = _int(ds, "Rows", 0) or 0, _int(ds, "Columns", 0) or 0
    if rows <= 0 or cols <= 0:
        raise CorruptFile("the DICOM image has no size")
    if rows * cols > settings.max_image_pixels:
        raise DecompressionBomb(f"the DICOM image declares more than {settings.max_image_pixels} pixels")
    frames = _int(ds, "NumberOfFrames", 1) or 1
    if frames < 1:
        raise CorruptFile("the DICOM image declares no frames")
    if frames > settings.max_pages:
        raise TooLarge(f"the DICOM image has {frames} frames; the limit is {settings.max_pages}")
    _check_decoder(ds)
    return DicomInfo("image", frames)


def _check_decoder(ds: Any) -> None:
    """A compressed transfer syntax needs an installed decoder (pylibjpeg's, Pillow's or pydicom's)."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID

    try:
        ts = UID(str(ds.file_meta.TransferSyntaxUID).strip())
        known = bool(ts.is_transfer_syntax)
        if known and not ts.is_compressed:
            return
    except (TypeError, ValueError, AttributeError):
        ts, known = None, False
    try:
        available = known and get_decoder(ts).is_available
    except (NotImplementedError, ValueError):
        available = False
    if not available:
        # The name comes from pydicom's fixed table of standard transfer syntaxes, never from the file.
        label = ts.name if known and ts is not None and ts.name else "an unknown or private transfer syntax"
        raise UnsupportedDicomCompression(f"the DICOM pixel data is compressed as {label}, which no installed "
                                          "decoder reads")


# --------------------------------------------------------------------------------------------
# Encapsulated PDF
# --------------------------------------------------------------------------------------------

def _encapsulated_bytes(ds: Any) -> bytes:
    data = bytes(_get(ds, "EncapsulatedDocument", b"") or b"")
    length = _int(ds, "EncapsulatedDocumentLength")
    if length and 0 < length <= len(data):
        data = data[:length]  # drop the padding to even length
    return data


def write_pdf(path: Path, dest: Path) -> Path:
    """Write the PDF of an Encapsulated PDF object to ``dest``."""
    data = _encapsulated_bytes(read_dataset(path))
    if data[:1024].find(b"%PDF-") == -1:
        raise CorruptFile("the DICOM file's encapsulated PDF is not a PDF")
    dest.write_bytes(data)
    return dest


# --------------------------------------------------------------------------------------------
# Frames to 8-bit images
# --------------------------------------------------------------------------------------------

def frame_image(path: Path, index: int, settings: Settings) -> "PILImage.Image":
    """Frame ``index`` (0-based) as a new 8-bit L or RGB image carrying nothing but pixels."""
    from PIL import Image

    ds = read_dataset(path)
    frames = _int(ds, "NumberOfFrames", 1) or 1
    if not 0 <= index < frames:
        raise CorruptFile("a DICOM frame is missing")
    _check_decoder(ds)
    arr = _decode(ds, index)
    try:
        with _quiet():
            out = _render(ds, arr, index)
    except MedintakeError:
        raise
    except (ValueError, TypeError, IndexError, KeyError, AttributeError, OverflowError):
        raise CorruptFile("the DICOM pixel data cannot be rendered") from None
    image = Image.fromarray(out, "RGB" if out.ndim == 3 else "L")
    image.info = {}
    return image


def _decode(ds: Any, index: int) -> Any:
    import numpy as np
    from pydicom.pixels import pixel_array

    try:
        with _quiet():
            arr = pixel_array(ds, index=index)
    except (MedintakeError, MemoryError, KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException:
        # Decoders raise anything on damaged data, including pyo3's PanicException (a BaseException,
        # from pylibjpeg-rle's Rust decoder on a short RLE segment); their messages are not kept.
        raise CorruptFile("the DICOM pixel data cannot be decoded") from None
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)) or arr.size == 0:
        raise CorruptFile("the DICOM pixel data has an unexpected shape")
    return arr


def _render(ds: Any, arr: Any, index: int) -> Any:
    """8-bit pixels: colour scaled or expanded, greyscale through modality + VOI (or percentiles)."""
    import numpy as np

    photometric = str(_get(ds, "PhotometricInterpretation", "") or "").strip().upper()
    if photometric == "PALETTE COLOR" and arr.ndim == 2:
        return _palette(ds, arr)
    if arr.ndim == 3:
        rgb = arr[..., :3]
        if rgb.dtype == np.uint8:
            return np.ascontiguousarray(rgb)
        bits = _int(ds, "BitsStored") or int(np.iinfo(rgb.dtype).bits if rgb.dtype.kind in "ui" else 8)
        return _scale(rgb.astype(np.float64), 0.0, float(2 ** min(bits, 32) - 1))
    grey = _grey(ds, arr, index)
    if photometric == "MONOCHROME1":
        grey = 255 - grey
    return grey


def _palette(ds: Any, arr: Any) -> Any:
    import numpy as np
    from pydicom.pixels import apply_color_lut

    try:
        rgb = np.asarray(apply_color_lut(arr, ds))
    except Exception:
        raise CorruptFile("the DICOM palette cannot be applied") from None
    if rgb.dtype == np.uint8:
        return np.ascontiguousarray(rgb[..., :3])
    peak = 255.0 if float(rgb.max(initial=0)) <= 255 else 65535.0
    return _scale(rgb[..., :3].astype(np.float64), 0.0, peak)


def _scale(values: Any, low: float, high: float) -> Any:
    """Linear map of [low, high] to 0..255, clipped."""
    import numpy as np

    span = high - low
    if not np.isfinite(span) or span <= 0:
        return np.zeros(values.shape, np.uint8)
    out = (values - low) * (255.0 / span)
    return np.clip(np.nan_to_num(out, nan=0.0, posinf=255.0, neginf=0.0) + 0.5, 0, 255).astype(np.uint8)


def _frame_view(ds: Any, index: int) -> Any:
    """A small dataset with the elements the LUTs need for one frame (enhanced objects' functional
    groups flattened in: shared, then this frame's). Only pixel-transform elements, never others."""
    from pydicom.dataset import Dataset

    view = Dataset()
    for kw in ("PhotometricInterpretation", "BitsStored", "BitsAllocated", "PixelRepresentation", "RescaleSlope",
               "RescaleIntercept", "RescaleType", "ModalityLUTSequence", "WindowCenter", "WindowWidth",
               "VOILUTFunction", "VOILUTSequence"):
        if kw in ds:
            try:
                view[kw] = ds[kw]
            except Exception:
                continue
    groups = []
    for seq_kw, item_index in (("SharedFunctionalGroupsSequence", 0), ("PerFrameFunctionalGroupsSequence", index)):
        seq = _get(ds, seq_kw)
        try:
            if seq is not None and len(seq) > item_index:
                groups.append(seq[item_index])
        except Exception:
            continue
    for group in groups:
        for seq_kw in ("PixelValueTransformationSequence", "FrameVOILUTSequence"):
            seq = _get(group, seq_kw)
            try:
                item = seq[0] if seq else None
            except Exception:
                item = None
            if item is None:
                continue
            for kw in ("RescaleSlope", "RescaleIntercept", "RescaleType", "WindowCenter", "WindowWidth",
                       "VOILUTFunction"):
                if kw in item:
                    try:
                        view[kw] = item[kw]
                    except Exception:
                        continue
    return view


def _first_float(value: Any) -> float | None:
    try:
        if isinstance(value, (list, tuple)) or (hasattr(value, "__len__") and not isinstance(value, (str, bytes))):
            value = value[0]
        result = float(value)
    except (TypeError, ValueError, IndexError, KeyError):
        return None
    return result if result == result and abs(result) != float("inf") else None


def _grey(ds: Any, arr: Any, index: int) -> Any:
    """Greyscale values to 8 bits: Modality LUT / rescale, then VOI LUT, window or percentiles."""
    import numpy as np
    from pydicom.pixels import apply_modality_lut

    view = _frame_view(ds, index)
    try:
        data = np.asarray(apply_modality_lut(arr, view), dtype=np.float32)  # float32: half of float64's memory
    except Exception:  # a broken Modality LUT: the stored values are still an image
        data = arr.astype(np.float32)
    if "VOILUTSequence" in view:
        out = _voi_lut(view, data)
        if out is not None:
            return out
    center = _first_float(_get(view, "WindowCenter"))
    width = _first_float(_get(view, "WindowWidth"))
    if center is not None and width is not None and width > 0:
        function = str(_get(view, "VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
        return _window(data, center, width, function)
    return _percentile_window(data)


def _voi_lut(view: Any, data: Any) -> Any | None:
    """The first VOI LUT (PS3.3 C.11.2.1.1) applied and scaled to 0..255; None when unusable."""
    import numpy as np

    try:
        item = view.VOILUTSequence[0]
        entries, first, bits = (int(v) for v in item.LUTDescriptor)
        raw = item.LUTData
        if isinstance(raw, (bytes, bytearray)):
            lut = np.frombuffer(bytes(raw)[: len(raw) - len(raw) % 2], "<u2")
        else:
            lut = np.asarray(raw if isinstance(raw, (list, tuple)) else list(raw), dtype=np.float64)
    except Exception:
        return None
    entries = entries or 65536
    lut = np.asarray(lut[:entries], dtype=np.float64)
    if lut.size == 0:
        return None
    index = np.clip(np.nan_to_num(np.rint(data) - first), 0, lut.size - 1).astype(np.intp)
    high = float(2 ** bits - 1) if 1 <= bits <= 16 and float(lut.max()) <= 2 ** bits - 1 else float(lut.max())
    return _scale(lut[index], 0.0, high) if high > 0 else None


def _window(data: Any, center: float, width: float, function: str) -> Any:
    """PS3.3 C.11.2.1.2: LINEAR, LINEAR_EXACT and SIGMOID VOI functions, to 0..255."""
    import numpy as np

    if function == "SIGMOID":
        with np.errstate(over="ignore"):
            out = 255.0 / (1.0 + np.exp(-4.0 * (data - center) / width))
        return np.clip(out + 0.5, 0, 255).astype(np.uint8)
    if function == "LINEAR_EXACT":
        return _scale(data, center - width / 2.0, center + width / 2.0)
    if width < 1:  # LINEAR needs width >= 1; treat a smaller one as the exact form
        return _scale(data, center - width / 2.0, center + width / 2.0)
    c, w = center - 0.5, width - 1.0
    if w <= 0:
        return np.where(data <= c, 0, 255).astype(np.uint8)
    return _scale(data, c - w / 2.0, c + w / 2.0)


def _percentile_window(data: Any) -> Any:
    """No window in the file: 0.5-99.5 percentile of the values (a sample of at most ~1 M)."""
    import numpy as np

    finite = data[np.isfinite(data)] if data.dtype.kind == "f" else data.ravel()
    if finite.size == 0:
        return np.zeros(data.shape, np.uint8)
    step = max(1, finite.size // 1_000_000)
    sample = finite.ravel()[::step]
    low, high = (float(v) for v in np.percentile(sample, PERCENTILES))
    if high <= low:
        low, high = float(sample.min()), float(sample.max())
    if high <= low:
        return np.zeros(data.shape, np.uint8)
    return _scale(data, low, high)
