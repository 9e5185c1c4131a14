"""Colour management of the renditions (issue 9): files that state a wide-gamut colour space without
an embedded ICC profile come out in sRGB.

The files are in ``tests/files`` (``make_colour_fixtures.py``, ``README-colour.md``): a camera JPEG
in Adobe RGB said only by EXIF, HEIFs whose colour is nclx code points (Display P3, BT.2020) and a
JPEG 2000 whose ``colr`` box holds an ICC profile. The reference is built without the code under
test: each file's raw decoded values (Pillow / pillow-heif, no colour management) converted by
colour-science from the standard's colour space definition to sRGB. Distances are CIEDE2000
(colour-science), per colour patch (the mean of its inner 16x16 pixels).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jobs.convert.renditions import make_renditions
from jobs.identify import identify, validate
from pipeline.settings import Settings

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # "Matplotlib related API features are not available"
    import colour

FILES = Path(__file__).parent / "files"
PATCH = 32

CASES = {
    # file: (colour-science colour space of its values, how the file says so)
    "adobe_rgb_exif_only.jpg": ("Adobe RGB (1998)", "EXIF ColorSpace=0xFFFF + InteropIndex R03"),
    "display_p3_nclx.heic": ("Display P3", "nclx primaries 12, transfer 13"),
    "bt2020_nclx.heic": ("ITU-R BT.2020", "nclx primaries 9, transfer 1"),
    "adobe_rgb_icc.jp2": ("Adobe RGB (1998)", "JP2 colr box, ICC profile"),
}


def raw_values(path: Path) -> np.ndarray:
    """The file's decoded 8-bit values as they are stored (no profile applied), float 0..1."""
    if path.suffix == ".heic":
        import pillow_heif

        pillow_heif.register_heif_opener()
    with Image.open(path) as img:
        assert "icc_profile" not in img.info or not img.info["icc_profile"]  # stated another way
        return np.asarray(img.convert("RGB"), dtype=np.float64) / 255.0


def patch_means(pixels: np.ndarray) -> np.ndarray:
    rows, cols = pixels.shape[0] // PATCH, pixels.shape[1] // PATCH
    inner = slice(8, PATCH - 8)
    return np.array([pixels[r * PATCH:(r + 1) * PATCH, c * PATCH:(c + 1) * PATCH][inner, inner].reshape(-1, 3)
                     .mean(axis=0) for r in range(rows) for c in range(cols)])


def lab(srgb: np.ndarray) -> np.ndarray:
    return colour.XYZ_to_Lab(colour.sRGB_to_XYZ(srgb))


def reference_srgb(path: Path, space: str) -> np.ndarray:
    """Patch colours of ``path`` converted to sRGB by colour-science (clipped to the sRGB gamut)."""
    values = patch_means(raw_values(path))
    srgb = colour.RGB_to_RGB(values, space, "sRGB", apply_cctf_decoding=True, apply_cctf_encoding=True,
                             chromatic_adaptation_transform="Bradford")
    return np.clip(srgb, 0.0, 1.0)


def rendition_patches(path: Path, tmp_path: Path, settings: Settings, name: str) -> np.ndarray:
    out = tmp_path / "out"
    results = {r.name: r for r in make_renditions(path, identify(path, settings), out, settings)}
    with Image.open(out / "renditions" / results[name].filename) as img:
        assert img.size == (192, 160)  # small: no resampling blurs the patches
        assert "icc_profile" not in img.info  # untagged sRGB
        return patch_means(np.asarray(img.convert("RGB"), dtype=np.float64) / 255.0)


@pytest.mark.parametrize("name", sorted(CASES))
def test_renditions_match_the_srgb_reference(name: str, tmp_path: Path) -> None:
    space, _ = CASES[name]
    path = FILES / name
    settings = Settings(data_dir=tmp_path / "data")  # the default renditions: thumbnail, preview, web
    kind = identify(path, settings)
    assert validate(path, kind, settings) == 1
    reference = lab(reference_srgb(path, space))

    as_if_srgb = colour.delta_E(lab(patch_means(raw_values(path))), reference, method="CIE 2000")
    # Ignoring the colour space would be visible: 4.5 to 9.5 on the most saturated patches.
    assert as_if_srgb.max() > 4.0 and np.percentile(as_if_srgb, 90) > 3.0, as_if_srgb.max()

    for rendition in ("web", "preview"):  # lossy: JPEG q85 4:2:0 and WebP q82 (method 2)
        got = lab(rendition_patches(path, tmp_path / rendition, settings, rendition))
        delta = colour.delta_E(got, reference, method="CIE 2000")
        assert delta.mean() < 1.0 and delta.max() < 2.0, (rendition, delta.mean(), delta.max())


@pytest.mark.parametrize("name", ["adobe_rgb_exif_only.jpg", "display_p3_nclx.heic"])
def test_lossless_copy_matches_within_rounding(name: str, tmp_path: Path) -> None:
    space, _ = CASES[name]
    path = FILES / name
    settings = Settings(data_dir=tmp_path / "data", renditions="lossless")
    got = lab(rendition_patches(path, tmp_path, settings, "png"))
    delta = colour.delta_E(got, lab(reference_srgb(path, space)), method="CIE 2000")
    assert delta.mean() < 0.5 and delta.max() < 1.0, (delta.mean(), delta.max())


def test_srgb_exif_is_left_alone(tmp_path: Path) -> None:
    """InteropIndex R98 (sRGB) with the same values: the pixels are not converted."""
    from PIL import ExifTags

    src = FILES / "adobe_rgb_exif_only.jpg"
    with Image.open(src) as img:
        exif = img.getexif()
        exif[ExifTags.IFD.Exif] = {0xA001: 1, ExifTags.IFD.Interop: {0x0001: "R98"}}
        path = tmp_path / "srgb.jpg"
        img.save(path, "JPEG", quality=95, subsampling=0, exif=exif)
    settings = Settings(data_dir=tmp_path / "data", renditions="lossless")
    got = lab(rendition_patches(path, tmp_path, settings, "png"))
    delta = colour.delta_E(got, lab(patch_means(raw_values(path))), method="CIE 2000")
    assert delta.max() < 0.5


@pytest.mark.parametrize("primaries, transfer, converted", [
    (1, 13, False), (2, 2, False), (1, 1, False),  # sRGB / unspecified / BT.709 on sRGB primaries: as is
    (12, 13, True), (9, 1, True), (9, 14, True), (11, 13, True),  # wide gamut: converted
    (9, 16, False), (9, 18, False), (99, 13, False),  # PQ / HLG (HDR: needs tone mapping), unknown
])
def test_which_nclx_colour_is_converted(primaries: int, transfer: int, converted: bool) -> None:
    from jobs.convert.colour import nclx_profile

    profile = nclx_profile({"color_primaries": primaries, "transfer_characteristics": transfer})
    assert (profile is not None) == converted
