"""Make the colour-management and image-format fixtures (tests/files/README-colour.md lists them).

Run from the repository root: ``.venv/bin/python tests/files/make_colour_fixtures.py``. Deterministic
(no randomness; the encoders are Pillow's libjpeg/OpenJPEG and pillow-heif's x265 at fixed
settings). The colours are the 24 patches of the classic colour checker (sRGB values as published
by BabelColor, rounded), re-expressed in each file's colour space with colour-science, plus a row of
saturated colours that only the wide-gamut spaces hold, so that reading these files as if they were
sRGB gives visibly wrong colours.
"""
from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image

HERE = Path(__file__).resolve().parent
PATCH = 32  # pixels per patch side
COLUMNS = 6

#: Colour checker classic, sRGB 8-bit (BabelColor averages, rounded).
CHECKER_SRGB = [
    (115, 82, 68), (194, 150, 130), (98, 122, 157), (87, 108, 67), (133, 128, 177), (103, 189, 170),
    (214, 126, 44), (80, 91, 166), (193, 90, 99), (94, 60, 108), (157, 188, 64), (224, 163, 46),
    (56, 61, 150), (70, 148, 73), (175, 54, 60), (231, 199, 31), (187, 86, 149), (8, 133, 161),
    (243, 243, 242), (200, 200, 200), (160, 160, 160), (122, 122, 121), (85, 85, 85), (52, 52, 52),
]


def patches_in(space: str, wide_row: list[tuple[int, int, int]]) -> np.ndarray:
    """The chart as 8-bit values in ``space`` (colour-science's name), with a row of wide-gamut colours."""
    import colour

    srgb = np.array(CHECKER_SRGB, dtype=np.float64) / 255.0
    values = colour.RGB_to_RGB(srgb, "sRGB", space, apply_cctf_decoding=True, apply_cctf_encoding=True,
                               chromatic_adaptation_transform="Bradford")
    values = np.clip(np.round(values * 255.0), 0, 255).astype(np.uint8)
    values = np.concatenate([values, np.array(wide_row, dtype=np.uint8)])
    rows = len(values) // COLUMNS
    img = np.zeros((rows * PATCH, COLUMNS * PATCH, 3), dtype=np.uint8)
    for i, rgb in enumerate(values):
        r, c = divmod(i, COLUMNS)
        img[r * PATCH:(r + 1) * PATCH, c * PATCH:(c + 1) * PATCH] = rgb
    return img


WIDE = [(230, 40, 40), (40, 200, 60), (30, 60, 220), (30, 200, 220), (220, 40, 200), (240, 220, 20)]


def adobe_rgb_exif_only() -> Path:
    """A camera JPEG in Adobe RGB, said only by EXIF (ColorSpace 0xFFFF + InteroperabilityIndex R03)."""
    exif = Image.Exif()
    exif[0x010F] = "Fixture Camera"  # Make
    exif[0x0110] = "AdobeRGB mode"  # Model
    exif[ExifTags.IFD.Exif] = {0xA001: 0xFFFF, ExifTags.IFD.Interop: {0x0001: "R03", 0x0002: b"0100"}}
    path = HERE / "adobe_rgb_exif_only.jpg"
    Image.fromarray(patches_in("Adobe RGB (1998)", WIDE)).save(path, "JPEG", quality=95, subsampling=0,
                                                                 exif=exif)
    return path


def heif_nclx(name: str, space: str, primaries: int, transfer: int) -> Path:
    """A HEIF whose colour is given as nclx code points only (no ICC profile), as phones write it."""
    import pillow_heif

    pillow_heif.register_heif_opener()
    path = HERE / name
    Image.fromarray(patches_in(space, WIDE)).save(
        path, "HEIF", quality=95, chroma=444, color_primaries=primaries, transfer_characteristics=transfer,
        matrix_coefficients=6, full_range_flag=1)
    return path


def jp2_with_icc() -> Path:
    """A JPEG 2000 (JP2) whose ``colr`` box carries an Adobe RGB compatible ICC profile (method 2).

    Pillow writes an enumerated sRGB ``colr`` box; it is replaced by a restricted-ICC one, the way
    scanner and PACS software (Kakadu, OpenJPEG's ``-jp2_colr``) tag wide-gamut images.
    """
    from jobs.convert.colour import adobe_rgb_profile

    buf = io.BytesIO()
    Image.fromarray(patches_in("Adobe RGB (1998)", WIDE)).save(buf, "JPEG2000", irreversible=False)
    data = buf.getvalue()
    at = data.index(b"colr") - 4
    length = struct.unpack(">I", data[at:at + 4])[0]
    icc = adobe_rgb_profile()
    colr = struct.pack(">I", 8 + 3 + len(icc)) + b"colr" + bytes([2, 0, 0]) + icc
    grown = len(colr) - length
    jp2h = data.index(b"jp2h") - 4
    jp2h_len = struct.unpack(">I", data[jp2h:jp2h + 4])[0]
    data = (data[:jp2h] + struct.pack(">I", jp2h_len + grown) + data[jp2h + 4:at] + colr
            + data[at + length:])
    path = HERE / "adobe_rgb_icc.jp2"
    path.write_bytes(data)
    return path


def main() -> None:
    for path in (adobe_rgb_exif_only(), heif_nclx("display_p3_nclx.heic", "Display P3", 12, 13),
                 heif_nclx("bt2020_nclx.heic", "ITU-R BT.2020", 9, 1), jp2_with_icc()):
        print(path.name, path.stat().st_size)


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(HERE.parent.parent))
    main()
