"""Which colour space an image's pixels are in, when the file says so without an ICC profile.

:func:`jobs.convert.pixels.to_srgb` converts pixels to sRGB with LittleCMS from an ICC profile.
Most files that are not sRGB embed one; three common cases state their colour space another way,
and ignoring them shows every photo washed out (Adobe RGB, Display P3) or strongly desaturated
(BT.2020) once displayed as sRGB:

* **EXIF only** (DCF / Exif 2.3 "option file" convention, cameras set to Adobe RGB): EXIF
  ColorSpace (0xA001) is 0xFFFF "uncalibrated" and the Interoperability IFD's InteroperabilityIndex
  (0x0001) is ``R03``. ``R98`` (or ColorSpace 1) is sRGB.
* **HEIF nclx** (ISO/IEC 23091-2 / ITU-T H.273 code points, what iPhones write: Display P3
  primaries with the sRGB transfer curve): pillow-heif gives the colour primaries and transfer
  characteristics in ``info["nclx_profile"]``; the YCbCr matrix is already applied by libheif.
* **JPEG 2000** ``colr`` box with a (restricted) ICC profile, which Pillow does not expose.

For the first two the standard's primaries, white point and transfer curve are turned into a
matrix/TRC ICC profile here (the colorants Bradford-adapted to the D50 connection space, as ICC
requires), so the conversion itself stays LittleCMS's, the same path as an embedded profile.
HDR transfer curves (PQ, HLG) would need tone mapping: those pixels are kept as they are.
Nothing here reads or logs a value other than colour code points.
"""
from __future__ import annotations

import functools
import logging
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image as PILImage

log = logging.getLogger(__name__)

D65 = (0.3127, 0.3290)
D50_XYZ = (0.9642, 1.0, 0.8249)  # the ICC profile connection space's white

#: Primaries (red, green, blue xy) and white point xy by H.273 ColourPrimaries code point.
PRIMARIES: dict[int, tuple[tuple[tuple[float, float], ...], tuple[float, float]]] = {
    1: (((0.640, 0.330), (0.300, 0.600), (0.150, 0.060)), D65),  # BT.709 / sRGB
    5: (((0.640, 0.330), (0.290, 0.600), (0.150, 0.060)), D65),  # BT.470 B/G, BT.601 625
    6: (((0.630, 0.340), (0.310, 0.595), (0.155, 0.070)), D65),  # BT.601 525 / SMPTE 170M
    7: (((0.630, 0.340), (0.310, 0.595), (0.155, 0.070)), D65),  # SMPTE 240M
    9: (((0.708, 0.292), (0.170, 0.797), (0.131, 0.046)), D65),  # BT.2020 / BT.2100
    11: (((0.680, 0.320), (0.265, 0.690), (0.150, 0.060)), (0.314, 0.351)),  # DCI-P3 (theatre white)
    12: (((0.680, 0.320), (0.265, 0.690), (0.150, 0.060)), D65),  # Display P3 (SMPTE EG 432-1)
}
ADOBE_RGB = (((0.640, 0.330), (0.210, 0.710), (0.150, 0.060)), D65)  # Adobe RGB (1998)
ADOBE_RGB_GAMMA = 563 / 256  # 2.19921875, the specification's value

#: H.273 TransferCharacteristics code point -> a curve from the signal to linear light.
#: ("srgb"), ("bt709": the inverse of the BT.709 OETF), ("gamma", g) or ("linear").
TRANSFERS: dict[int, tuple[Any, ...]] = {
    1: ("bt709",), 6: ("bt709",), 14: ("bt709",), 15: ("bt709",),
    4: ("gamma", 2.2), 5: ("gamma", 2.8), 8: ("linear",), 13: ("srgb",),
    2: ("srgb",),  # unspecified: sRGB, what a viewer assumes
}
SRGB_CODES = (1, 2)  # primaries that are sRGB's own (2 = unspecified)


# --- what the file states -------------------------------------------------------------------------


def stated_profile(img: "PILImage.Image", src: Path) -> bytes | None:
    """An ICC profile for the colour space the file states without embedding one; None for sRGB/unknown."""
    nclx = img.info.get("nclx_profile")
    if isinstance(nclx, dict):
        return nclx_profile(nclx)
    if img.format in ("JPEG", "TIFF", "WEBP", "PNG") and exif_says_adobe_rgb(img):
        return adobe_rgb_profile()
    if img.format == "JPEG2000":
        return jp2_icc(src)
    return None


def exif_says_adobe_rgb(img: "PILImage.Image") -> bool:
    """EXIF ColorSpace = 0xFFFF (uncalibrated) with InteroperabilityIndex ``R03`` (DCF Adobe RGB)."""
    from PIL import ExifTags

    try:
        exif = img.getexif()
        exif_ifd = exif.get_ifd(ExifTags.IFD.Exif)
        if exif_ifd.get(0xA001) != 0xFFFF:
            return False
        index = exif.get_ifd(ExifTags.IFD.Interop).get(0x0001)  # Pillow finds it inside the Exif IFD
    except Exception:  # noqa: BLE001 - damaged EXIF says nothing about colour; keep the pixels
        return False
    if isinstance(index, bytes):
        index = index.decode("ascii", "replace")
    return isinstance(index, str) and index.strip("\0 ").upper() == "R03"


def nclx_profile(nclx: dict[str, Any]) -> bytes | None:
    """A profile for HEIF nclx code points; None for sRGB, unknown or HDR (PQ/HLG) colour."""
    try:
        primaries = int(nclx.get("color_primaries", 2))
        transfer = int(nclx.get("transfer_characteristics", 2))
    except (TypeError, ValueError):
        return None
    if primaries in SRGB_CODES and (transfer in (2, 13) or TRANSFERS.get(transfer) == ("bt709",)):
        # sRGB's own primaries; a BT.709 camera curve on them is shown as sRGB by browsers and
        # viewers alike (some encoders write 1/1/1 for plain sRGB pictures), so nothing to convert.
        return None
    if primaries in SRGB_CODES:
        primaries = 1
    if primaries not in PRIMARIES or transfer not in TRANSFERS:
        log.info("nclx colour (primaries %d, transfer %d) not converted; pixels kept", primaries, transfer)
        return None
    return rgb_profile(primaries, transfer)


@functools.lru_cache(maxsize=None)
def rgb_profile(primaries: int, transfer: int) -> bytes:
    rgb, white = PRIMARIES[primaries]
    return matrix_trc_profile(f"medintake nclx {primaries}/{transfer}", rgb, white, TRANSFERS[transfer])


@functools.lru_cache(maxsize=1)
def adobe_rgb_profile() -> bytes:
    rgb, white = ADOBE_RGB
    return matrix_trc_profile("medintake Adobe RGB (1998) compatible", rgb, white, ("gamma", ADOBE_RGB_GAMMA))


def jp2_icc(src: Path) -> bytes | None:
    """The ICC profile of a JP2 file's ``jp2h/colr`` box (method 2 or 3), which Pillow ignores."""
    try:
        with src.open("rb") as fh:
            data = fh.read(1 << 20)  # the header boxes come before the codestream
    except OSError:
        return None
    header = _box(data, b"jp2h")
    colr = _box(header, b"colr") if header is not None else None
    if colr is None or len(colr) < 4 or colr[0] not in (2, 3):
        return None
    return colr[3:]


def _box(data: bytes, kind: bytes) -> bytes | None:
    """The payload of the first ``kind`` box among the boxes in ``data`` (ISO base media layout)."""
    pos = 0
    while pos + 8 <= len(data):
        length, tbox = struct.unpack(">I4s", data[pos:pos + 8])
        start = pos + 8
        if length == 1:
            if pos + 16 > len(data):
                return None
            length = struct.unpack(">Q", data[pos + 8:pos + 16])[0]
            start = pos + 16
        elif length == 0:
            length = len(data) - pos
        if length < start - pos:
            return None
        if tbox == kind:
            return data[start:pos + length]
        pos += length
    return None


# --- building a matrix/TRC profile --------------------------------------------------------------


def _xyz(xy: tuple[float, float]) -> list[float]:
    x, y = xy
    return [x / y, 1.0, (1 - x - y) / y]


def colorants_d50(rgb: tuple[tuple[float, float], ...], white: tuple[float, float]) -> list[list[float]]:
    """The red, green and blue colorants (XYZ of each primary at full value), adapted to D50 (Bradford)."""
    import numpy as np

    prim = np.array([_xyz(p) for p in rgb]).T  # columns: XYZ of each primary with Y = 1
    white_xyz = np.array(_xyz(white))
    scale = np.linalg.solve(prim, white_xyz)
    rgb_to_xyz = prim * scale  # RGB -> XYZ under the source white
    bradford = np.array([[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]])
    src_cone = bradford @ white_xyz
    dst_cone = bradford @ np.array(D50_XYZ)
    adapt = np.linalg.inv(bradford) @ np.diag(dst_cone / src_cone) @ bradford
    d50 = adapt @ rgb_to_xyz
    return [list(map(float, d50[:, i])) for i in range(3)]


def _curve(transfer: tuple[Any, ...]) -> bytes:
    """An ICC ``curv`` tag body: a pure gamma as one u8.8 value, other curves sampled (1024 points)."""
    kind = transfer[0]
    if kind == "gamma":
        return b"curv\0\0\0\0" + struct.pack(">IH", 1, round(transfer[1] * 256)) + b"\0\0"
    if kind == "linear":
        return b"curv\0\0\0\0" + struct.pack(">I", 0)
    samples = []
    for i in range(1024):
        v = i / 1023
        if kind == "srgb":
            lin = v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4
        else:  # bt709: the inverse of the camera curve V = 1.099 L^0.45 - 0.099 (4.5 L below 0.018)
            lin = v / 4.5 if v < 0.081 else ((v + 0.099) / 1.099) ** (1 / 0.45)
        samples.append(round(min(1.0, max(0.0, lin)) * 65535))
    return b"curv\0\0\0\0" + struct.pack(">I", len(samples)) + struct.pack(f">{len(samples)}H", *samples)


def matrix_trc_profile(description: str, rgb: tuple[tuple[float, float], ...], white: tuple[float, float],
                       transfer: tuple[Any, ...]) -> bytes:
    """An ICC v2 RGB display profile (matrix/TRC): what LittleCMS needs to convert to sRGB."""

    def s15(v: float) -> bytes:
        return struct.pack(">i", round(v * 65536))

    def xyz(values: list[float] | tuple[float, ...]) -> bytes:
        return b"XYZ \0\0\0\0" + b"".join(s15(v) for v in values)

    desc_ascii = description.encode("ascii") + b"\0"
    desc = (b"desc\0\0\0\0" + struct.pack(">I", len(desc_ascii)) + desc_ascii
            + struct.pack(">II", 0, 0) + struct.pack(">HB", 0, 0) + b"\0" * 67)
    red, green, blue = colorants_d50(rgb, white)
    curve = _curve(transfer)
    tags = [
        (b"desc", desc),
        (b"cprt", b"text\0\0\0\0No copyright, use freely\0"),
        (b"wtpt", xyz(D50_XYZ)),
        (b"rXYZ", xyz(red)), (b"gXYZ", xyz(green)), (b"bXYZ", xyz(blue)),
        (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    shared: dict[bytes, int] = {}
    for sig, data in tags:
        if data not in shared:
            shared[data] = offset + len(body)
            body += data + b"\0" * (-len(data) % 4)
        table += sig + struct.pack(">II", shared[data], len(data))
    size = offset + len(body)
    header = (struct.pack(">I", size) + b"\0\0\0\0" + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ "
              + struct.pack(">6H", 2026, 1, 1, 0, 0, 0) + b"acsp" + b"\0" * 24 + struct.pack(">I", 0)
              + s15(D50_XYZ[0]) + s15(D50_XYZ[1]) + s15(D50_XYZ[2]))
    header += b"\0" * (128 - len(header))
    return header + struct.pack(">I", len(tags)) + table + body
