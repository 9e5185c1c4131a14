"""Pixel normalisation for the renditions: any decoded image to 8-bit L/LA/RGB/RGBA in sRGB.

Step 3 and 4 of :mod:`jobs.convert.renditions`' pipeline: palette and transparency keys become
alpha, 16-bit and float samples are scaled (Pillow's own conversion clips), CMYK and L*a*b* are
converted, an embedded ICC profile other than sRGB is applied with LittleCMS, an all-opaque alpha
channel is dropped and exactly-grey RGB becomes L. The result shares no metadata with the file, so
nothing of it can reach an encoder. Pillow and numpy are imported lazily (worker-side only; numpy
only for 16-bit and float samples).
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image as PILImage

log = logging.getLogger(__name__)


def normalise(img: "PILImage.Image", icc: bytes | None) -> "PILImage.Image":
    """A new 8-bit L/LA/RGB/RGBA sRGB image, sharing nothing (pixels or metadata) with ``img``."""
    out = to_8bit(img)
    out = to_srgb(out, icc)
    out = drop_opaque_alpha(out)
    out = grey_if_neutral(out)
    if out is img:
        out = detach_pixels(img)  # never hand the file-backed image (and its tags/info) to an encoder
    out.info = {}
    return out


def grey_if_neutral(img: "PILImage.Image") -> "PILImage.Image":
    """RGB(A) whose every pixel has R == G == B becomes L(A): same pixels, a third of the work.

    Most scanned receipts and letters are grey content stored as RGB (48 of the 79 SROIE scans);
    as L every later resample and encode is ~3x cheaper and the lossless copies ~2x smaller.
    The check is exact, so no colour is ever lost; colour photos exit on the first strip.
    """
    if img.mode not in ("RGB", "RGBA") or not is_neutral(img):
        return img
    return img.convert("LA" if img.mode == "RGBA" else "L")


def is_neutral(img: "PILImage.Image") -> bool:
    """Whether R == G == B everywhere, checked in ~4 MiB strips to bound memory and exit early.

    Numpy-free: each strip's channels are split by Pillow and compared as bytes (memcmp), about
    3x faster than comparing numpy views on a grey page, and no numpy import for a process that
    has no other use for it.
    """
    width, height = img.size
    rows = max(1, (4 << 20) // (width * 4))
    for top in range(0, height, rows):
        strip = img if rows >= height else img.crop((0, top, width, min(height, top + rows)))
        red, green, blue = strip.split()[:3]
        if not (red.tobytes() == green.tobytes() == blue.tobytes()):
            return False
    return True


def detach_pixels(img: "PILImage.Image") -> "PILImage.Image":
    """A plain ``Image`` over the same decoded pixels, without the file object, tags or info.

    Sharing the pixel core instead of ``copy()`` saves one full-size buffer (48 MiB for a 16 MP
    photo) in the common case of an RGB JPEG that needs no conversion. ``_new`` is Pillow's own
    constructor for derived images; a read-only (memory-mapped file) core is copied, so that no
    output ever depends on the upload's mapping.
    """
    if img.readonly or not hasattr(img, "_new"):
        out = img.copy()
    else:
        out = img._new(img.im)
    out.info = {}
    return out


def to_8bit(img: "PILImage.Image") -> "PILImage.Image":
    """Convert any decoded mode to L, LA, RGB, RGBA or CMYK (CMYK is left for the ICC step)."""
    mode = img.mode
    if mode in ("L", "LA", "RGB", "RGBA", "CMYK"):
        return img
    if mode in ("1",):
        return img.convert("L")
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in img.info
        return img.convert("RGBA" if has_alpha else "RGB")
    if mode in ("La", "RGBa"):
        return img.convert(mode.upper())
    if mode in ("RGBX", "YCbCr", "HSV", "LAB"):
        return lab_to_rgb(img) if mode == "LAB" else img.convert("RGB")
    if mode.startswith("I") or mode == "F":
        return scale_to_l(img)
    return img.convert("RGBA" if "A" in mode else "RGB")


def scale_to_l(img: "PILImage.Image") -> "PILImage.Image":
    """16-bit / 32-bit / float greyscale to 8-bit by scaling the range (Pillow's convert clips)."""
    import numpy as np
    from PIL import Image

    arr = np.asarray(img)
    if img.mode.startswith("I;16") or arr.dtype == np.uint16:
        full = 65535.0
    elif img.mode == "F":
        full = 1.0 if float(arr.max(initial=0)) <= 1.0 else max(255.0, float(arr.max(initial=0)))
    else:  # "I": 16-bit PNG/TIFF data decoded to 32-bit, or genuine 8-bit values
        peak = int(arr.max(initial=0))
        full = 255.0 if peak <= 255 else 65535.0 if peak <= 65535 else float(peak)
    scaled = np.clip(arr.astype(np.float32) * (255.0 / full) + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(scaled, "L")


def lab_to_rgb(img: "PILImage.Image") -> "PILImage.Image":
    """CIE L*a*b* (rare: some TIFFs) to sRGB through LittleCMS."""
    from PIL import ImageCms

    try:
        return ImageCms.profileToProfile(img, ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"),
                                         outputMode="RGB")
    except ImageCms.PyCMSError:
        raise ValueError("L*a*b* conversion failed") from None


def to_srgb(img: "PILImage.Image", icc: bytes | None) -> "PILImage.Image":
    """Convert to sRGB with the embedded profile; CMYK without one uses Pillow's plain formula."""
    profile = read_profile(icc) if icc else None
    if profile is not None and not is_srgb(profile) and profile_matches(profile, img.mode):
        converted = convert_with_profile(img, profile)
        if converted is not None:
            return converted
    if img.mode == "CMYK":
        return img.convert("RGB")
    return img


def read_profile(icc: bytes) -> Any | None:
    """The embedded ICC profile, or None when it cannot be parsed (then the pixels are kept)."""
    import io

    from PIL import ImageCms

    try:
        return ImageCms.ImageCmsProfile(io.BytesIO(icc))
    except (OSError, ImageCms.PyCMSError, ValueError, TypeError):
        log.info("embedded ICC profile unreadable; assuming sRGB")
        return None


def is_srgb(profile: Any) -> bool:
    """True for the usual sRGB profiles: converting them is an identity costing a full pass."""
    desc = (profile.profile.profile_description or "").lower()
    return "srgb" in desc.replace(" ", "") and "p3" not in desc


_PROFILE_SPACES = {"L": "GRAY", "LA": "GRAY", "RGB": "RGB", "RGBA": "RGB", "CMYK": "CMYK"}


def profile_matches(profile: Any, mode: str) -> bool:
    """Whether the profile describes the pixels' colour space (a mismatch would garble colours)."""
    space = (profile.profile.xcolor_space or "").strip().upper()
    return _PROFILE_SPACES.get(mode) == space


def convert_with_profile(img: "PILImage.Image", profile: Any) -> "PILImage.Image | None":
    """Embedded profile -> sRGB (perceptual intent); None if LittleCMS refuses the transform."""
    from PIL import ImageCms

    srgb = ImageCms.createProfile("sRGB")
    try:
        if img.mode == "LA":  # LittleCMS has no grey+alpha type: convert grey, then re-attach alpha
            rgb = ImageCms.profileToProfile(img.convert("L"), profile, srgb,
                                            renderingIntent=ImageCms.Intent.PERCEPTUAL, outputMode="RGB")
            rgb.putalpha(img.getchannel("A"))
            return rgb
        out_mode = "RGBA" if img.mode == "RGBA" else "RGB"
        return ImageCms.profileToProfile(img, profile, srgb,
                                         renderingIntent=ImageCms.Intent.PERCEPTUAL, outputMode=out_mode)
    except (ImageCms.PyCMSError, ValueError, OSError):
        log.info("ICC conversion refused; keeping the decoded pixels")
        return None


def drop_opaque_alpha(img: "PILImage.Image") -> "PILImage.Image":
    """Remove an alpha channel that is fully opaque: smaller files, identical pixels."""
    if img.mode not in ("LA", "RGBA"):
        return img
    if img.getchannel("A").getextrema() == (255, 255):
        return img.convert(img.mode[:-1])
    return img
