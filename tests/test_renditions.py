"""Tests for the renditions stage (SPEC 5.3).

Every input is a real encoded file made here with Pillow / pillow_heif, carrying metadata that must
not survive: a marker string (standing in for a patient's name) in EXIF, GPS, XMP, comments and
PNG text, plus GPS coordinates. The input files are named with the marker too, so the tests also
prove that no message or log line carries a file name.
"""
from __future__ import annotations

import hashlib
import io
import logging
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageFile

from jobs.convert import renditions
from jobs.convert.renditions import RenditionResult, make_renditions
from jobs.identify import identify, validate
from pipeline.errors import CorruptFile, ExitCode
from pipeline.settings import Settings

MARKER = "PATIENT-JANE-DOE"
MARKER_BYTES = MARKER.encode()
EXPECTED = {
    # name: (filename, Pillow format, mime, box or None for full size)
    "thumbnail": ("thumbnail.jpg", "JPEG", "image/jpeg", 256),
    "preview": ("preview.webp", "WEBP", "image/webp", 1024),
    "web": ("web.jpg", "JPEG", "image/jpeg", 2048),
    "png": ("full.png", "PNG", "image/png", None),
    "archival": ("archival.tiff", "TIFF", "image/tiff", None),
}
# Tags an image-only TIFF needs; anything else would be metadata leaking through.
BASIC_TIFF_TAGS = {256, 257, 258, 259, 262, 273, 277, 278, 279, 282, 283, 284, 296, 317, 338, 339}
PNG_IMAGE_CHUNKS = {b"IHDR", b"PLTE", b"tRNS", b"IDAT", b"IEND"}
WEBP_IMAGE_CHUNKS = {b"VP8 ", b"VP8L", b"VP8X", b"ALPH"}


# --- input builders -----------------------------------------------------------------------------


def exif_with_gps(orientation: int | None = None) -> Image.Exif:
    """EXIF carrying identifying text and GPS coordinates (and optionally an orientation)."""
    exif = Image.Exif()
    exif[0x010E] = f"{MARKER} rash on left arm"  # ImageDescription
    exif[0x010F] = "PhoneMaker"  # Make
    exif[0x013B] = MARKER  # Artist
    if orientation is not None:
        exif[0x0112] = orientation
    exif[0x8825] = {1: "N", 2: (51.0, 30.0, 12.5), 3: "W", 4: (0.0, 7.0, 39.0)}  # GPS IFD
    return exif


XMP = (
    '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    f'<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:creator>{MARKER}</dc:creator>'
    "</rdf:Description></rdf:RDF></x:xmpmeta>"
).encode()


def landscape_with_marker_block(size: tuple[int, int] = (400, 300)) -> Image.Image:
    """Grey image with a red block in the stored top-left corner, to check orientation."""
    img = Image.new("RGB", size, (128, 128, 128))
    img.paste((255, 0, 0), (0, 0, size[0] // 4, size[1] // 4))
    return img


def icc_profile_bytes(description: str, rgb_xyz: tuple[tuple[float, float, float], ...], gamma: float) -> bytes:
    """A minimal ICC v2 matrix/TRC RGB display profile (enough for LittleCMS)."""

    def s15(v: float) -> bytes:
        return struct.pack(">i", round(v * 65536))

    def xyz(x: float, y: float, z: float) -> bytes:
        return b"XYZ \0\0\0\0" + s15(x) + s15(y) + s15(z)

    desc_ascii = description.encode() + b"\0"
    desc = (b"desc\0\0\0\0" + struct.pack(">I", len(desc_ascii)) + desc_ascii
            + struct.pack(">II", 0, 0) + struct.pack(">HB", 0, 0) + b"\0" * 67)
    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256)) + b"\0\0"
    tags = [
        (b"desc", desc),
        (b"cprt", b"text\0\0\0\0" + b"No copyright, test data\0"),
        (b"wtpt", xyz(0.9642, 1.0, 0.8249)),
        (b"rXYZ", xyz(*rgb_xyz[0])),
        (b"gXYZ", xyz(*rgb_xyz[1])),
        (b"bXYZ", xyz(*rgb_xyz[2])),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for sig, body in tags:
        body += b"\0" * (-len(body) % 4)
        table += sig + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = offset + len(data)
    header = (struct.pack(">I", size) + b"\0\0\0\0" + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ "
              + b"\0" * 12 + b"acsp" + b"\0" * 24 + struct.pack(">I", 0) + s15(0.9642) + s15(1.0) + s15(0.8249))
    header += b"\0" * (128 - len(header))
    return header + struct.pack(">I", len(tags)) + table + data


ADOBE_RGB_LIKE = icc_profile_bytes(
    "Wide gamut test RGB",
    ((0.6097, 0.3111, 0.0195), (0.2053, 0.6257, 0.0609), (0.1492, 0.0632, 0.7446)),
    2.19921875,
)
WIDE_GAMUT_PIXEL = (90, 160, 70)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_rgb16_bytes(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A 48-bit (16 bits per channel) RGB PNG with a tEXt chunk; Pillow cannot write these."""
    row = b"\0" + struct.pack(">HHH", *rgb) * width
    return (b"\x89PNG\r\n\x1a\n"
            + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0))
            + png_chunk(b"tEXt", b"Author\0" + MARKER_BYTES)
            + png_chunk(b"IDAT", zlib.compress(row * height))
            + png_chunk(b"IEND", b""))


def make_input(name: str, folder: Path) -> Path:
    """Write the named test input into ``folder``; the file name itself carries the marker."""
    from PIL import PngImagePlugin

    path = folder / f"{MARKER}-{name}"
    if name == "jpeg_exif_orientation6.jpg":
        landscape_with_marker_block().save(path, "JPEG", quality=95, exif=exif_with_gps(6), xmp=XMP,
                                           comment=MARKER_BYTES)
    elif name == "jpeg_cmyk.jpg":
        Image.new("CMYK", (320, 240), (0, 255, 255, 0)).save(path, "JPEG", quality=95, exif=exif_with_gps())
    elif name == "jpeg_icc_wide.jpg":
        Image.new("RGB", (300, 200), WIDE_GAMUT_PIXEL).save(path, "JPEG", quality=100, subsampling=0,
                                                            icc_profile=ADOBE_RGB_LIKE, exif=exif_with_gps())
    elif name == "jpeg_icc_srgb.jpg":
        srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
        Image.new("RGB", (300, 200), WIDE_GAMUT_PIXEL).save(path, "JPEG", quality=100, subsampling=0,
                                                            icc_profile=srgb, exif=exif_with_gps())
    elif name == "png_alpha.png":
        img = Image.new("RGBA", (300, 200), (0, 0, 255, 255))
        img.paste((0, 0, 0, 0), (0, 0, 150, 200))  # left half fully transparent
        info = PngImagePlugin.PngInfo()
        info.add_text("Comment", MARKER)
        info.add_itxt("XML:com.adobe.xmp", XMP.decode())
        img.save(path, "PNG", pnginfo=info, exif=exif_with_gps())
    elif name == "png_grey16.png":
        ramp = np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (64, 1))
        ramp[:, :8] = 32768  # a band of exact mid-grey for the scaling check
        Image.fromarray(ramp).save(path, "PNG")
    elif name == "png_rgb16.png":
        path.write_bytes(png_rgb16_bytes(64, 48, (65535, 32768, 0)))
    elif name == "png_la.png":
        img = Image.new("LA", (200, 100), (60, 255))
        img.paste((0, 0), (0, 0, 100, 100))
        img.save(path, "PNG")
    elif name == "gif_palette.gif":
        img = Image.new("P", (200, 150), 1)
        img.putpalette([0, 0, 0, 0, 128, 0, 255, 255, 255] + [0] * (256 - 3) * 3)
        img.paste(0, (0, 0, 100, 150))
        img.save(path, "GIF", transparency=0, comment=MARKER_BYTES)
    elif name == "gif_animated.gif":
        frames = [Image.new("RGB", (160, 120), colour) for colour in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
        frames[0].save(path, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    elif name == "tiff_multipage.tiff":
        pages = [Image.new("RGB", (240, 180), (0, 160, 0)), Image.new("RGB", (240, 180), (0, 0, 255))]
        exif = exif_with_gps()
        exif[700] = XMP  # TIFF keeps XMP in its own tag
        pages[0].save(path, "TIFF", save_all=True, append_images=pages[1:],  # raw: libtiff rejects GPS IFDs
                      exif=exif.tobytes(), icc_profile=ADOBE_RGB_LIKE)
    elif name == "webp.webp":
        landscape_with_marker_block().save(path, "WEBP", quality=90, exif=exif_with_gps(), xmp=XMP)
    elif name == "bmp.bmp":
        Image.new("RGB", (210, 130), (10, 200, 30)).save(path, "BMP")
    elif name == "heic.heic":
        import pillow_heif

        pillow_heif.register_heif_opener()
        landscape_with_marker_block().save(path, "HEIF", quality=90, exif=exif_with_gps(6).tobytes(), xmp=XMP)
    elif name == "heic_icc_wide.heic":
        import pillow_heif

        pillow_heif.register_heif_opener()
        Image.new("RGB", (300, 200), WIDE_GAMUT_PIXEL).save(path, "HEIF", quality=100, icc_profile=ADOBE_RGB_LIKE,
                                                            chroma=444)
    elif name == "pdf_1page.pdf":
        Image.new("RGB", (600, 800), (200, 30, 30)).save(path, "PDF", resolution=100.0, title=MARKER,
                                                         author=MARKER)
    elif name == "pdf_2pages.pdf":
        first, second = Image.new("RGB", (600, 800), (200, 30, 30)), Image.new("RGB", (600, 800), (0, 0, 200))
        first.save(path, "PDF", resolution=100.0, save_all=True, append_images=[second])
    elif name == "jpeg_large.jpg":
        landscape_with_marker_block((3000, 2000)).save(path, "JPEG", quality=90, exif=exif_with_gps())
    elif name == "jpeg_tiny.jpg":
        Image.new("RGB", (100, 80), (0, 0, 0)).save(path, "JPEG")
    else:  # pragma: no cover - a typo in a test
        raise AssertionError(name)
    return path


ALL_INPUTS = [
    "jpeg_exif_orientation6.jpg", "jpeg_cmyk.jpg", "jpeg_icc_wide.jpg", "jpeg_icc_srgb.jpg",
    "png_alpha.png", "png_grey16.png", "png_rgb16.png", "png_la.png", "gif_palette.gif",
    "gif_animated.gif", "tiff_multipage.tiff", "webp.webp", "bmp.bmp", "heic.heic", "heic_icc_wide.heic",
    "pdf_1page.pdf", "pdf_2pages.pdf", "jpeg_large.jpg", "jpeg_tiny.jpg",
]


WITH_METADATA = [
    "jpeg_exif_orientation6.jpg", "jpeg_cmyk.jpg", "jpeg_icc_wide.jpg", "jpeg_icc_srgb.jpg", "png_alpha.png",
    "png_rgb16.png", "gif_palette.gif", "tiff_multipage.tiff", "webp.webp", "heic.heic", "jpeg_large.jpg",
]


@pytest.mark.parametrize("name", WITH_METADATA)
def test_inputs_really_carry_the_metadata_to_strip(name: str, tmp_path: Path) -> None:
    """Guards the stripping tests: the marker must be in the input for its absence to mean anything."""
    assert MARKER_BYTES in make_input(name, tmp_path).read_bytes()


# --- helpers ------------------------------------------------------------------------------------


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The lossless set on, so that the full-size PNG shows the exact pixels each test checks."""
    return Settings(data_dir=tmp_path / "data", renditions="lossless")


def run(path: Path, out_dir: Path, settings: Settings) -> dict[str, RenditionResult]:
    """Identify and validate like the job runner does, then make the renditions."""
    kind = identify(path, settings)
    validate(path, kind, settings)
    results = make_renditions(path, kind, out_dir, settings)
    return {r.name: r for r in results}


def open_rendition(out_dir: Path, name: str) -> Image.Image:
    img = Image.open(out_dir / "renditions" / EXPECTED[name][0])
    img.load()
    return img


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def jpeg_segments(data: bytes) -> list[tuple[int, bytes]]:
    """(marker, payload) of every JPEG segment before the scan data."""
    assert data[:2] == b"\xff\xd8"
    pos, segments = 2, []
    while pos < len(data):
        assert data[pos] == 0xFF
        marker = data[pos + 1]
        if marker == 0xDA:  # start of scan: entropy-coded data follows
            break
        length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        segments.append((marker, data[pos + 4:pos + 2 + length]))
        pos += 2 + length
    return segments


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    pos, chunks = 8, []
    while pos < len(data):
        length = struct.unpack(">I", data[pos:pos + 4])[0]
        chunks.append((data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]))
        pos += 12 + length
    return chunks


def webp_chunks(data: bytes) -> list[bytes]:
    assert data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    pos, kinds = 12, []
    while pos + 8 <= len(data):
        kind, length = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        kinds.append(kind)
        pos += 8 + length + (length & 1)
    return kinds


def assert_no_metadata(path: Path) -> None:
    """Nothing but pixels: checked through Pillow and at the byte level of each container."""
    data = path.read_bytes()
    assert MARKER_BYTES not in data
    with Image.open(path) as img:
        exif = img.getexif()
        if img.format == "TIFF":  # a TIFF's own IFD0 is its "EXIF": only structural tags allowed
            assert set(exif) <= BASIC_TIFF_TAGS, set(exif) - BASIC_TIFF_TAGS
            assert not exif.get_ifd(0x8769) and not exif.get_ifd(0x8825)  # no EXIF or GPS sub-IFD
        else:
            assert len(exif) == 0
        for key in ("exif", "xmp", "XML:com.adobe.xmp", "comment", "icc_profile", "photoshop"):
            assert key not in img.info, key
        if img.format != "TIFF":  # Pillow always writes TIFF's required resolution (1/1, no unit)
            assert "dpi" not in img.info
        fmt = img.format
        if fmt == "PNG":
            assert not img.text
        if fmt == "TIFF":
            assert set(img.tag_v2) <= BASIC_TIFF_TAGS, set(img.tag_v2) - BASIC_TIFF_TAGS
    if fmt == "JPEG":
        for marker, payload in jpeg_segments(data):
            assert marker not in (0xE1, 0xE2, 0xED, 0xFE), hex(marker)  # APP1 EXIF/XMP, ICC, IPTC, COM
            assert b"Exif" not in payload and b"GPS" not in payload and b"http://ns.adobe.com" not in payload
    elif fmt == "PNG":
        assert {kind for kind, _ in png_chunks(data)} <= PNG_IMAGE_CHUNKS
    elif fmt == "WEBP":
        assert set(webp_chunks(data)) <= WEBP_IMAGE_CHUNKS


# --- the contract for every input ---------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_INPUTS)
def test_every_input_gives_five_clean_renditions(name: str, tmp_path: Path, settings: Settings) -> None:
    src = make_input(name, tmp_path)
    before = sha256(src)
    out_dir = tmp_path / "out"

    results = run(src, out_dir, settings)

    assert sha256(src) == before  # the original upload is never modified
    assert list(results) == ["thumbnail", "preview", "web", "png", "archival"]
    full = open_rendition(out_dir, "png").size
    for rname, (filename, fmt, mime, box) in EXPECTED.items():
        result = results[rname]
        path = out_dir / "renditions" / filename
        assert (result.filename, result.format, result.mime) == (filename, fmt, mime)
        assert result.bytes == path.stat().st_size > 0
        with Image.open(path) as img:
            assert img.format == fmt
            assert img.size == (result.width, result.height)
            assert img.mode in (("RGB", "L") if fmt == "JPEG" else ("RGB", "RGBA", "L", "LA"))
        if box is None:
            assert (result.width, result.height) == full
        else:
            assert max(result.width, result.height) <= box
            assert max(result.width, result.height) == min(box, max(full))  # fits tightly, no upscaling
            assert abs(result.width / result.height - full[0] / full[1]) < 0.02
        assert_no_metadata(path)
    assert sorted(p.name for p in (out_dir / "renditions").iterdir()) == sorted(v[0] for v in EXPECTED.values())


@pytest.mark.parametrize("name, width", [("jpeg_icc_wide.jpg", 300), ("tiff_multipage.tiff", 240)])
def test_default_set_is_thumbnail_preview_web(name: str, width: int, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """No lossless copies unless asked for: the original is kept, they would only duplicate it."""
    monkeypatch.delenv("MEDINTAKE_RENDITIONS", raising=False)
    src = make_input(name, tmp_path)
    default = Settings.load(data_dir=tmp_path / "data")
    assert default.renditions == "standard"
    results = run(src, tmp_path / "out", default)
    assert list(results) == ["thumbnail", "preview", "web"]
    assert sorted(p.name for p in (tmp_path / "out" / "renditions").iterdir()) == [
        "preview.webp", "thumbnail.jpg", "web.jpg"]
    assert results["web"].width == width  # full size fits the 2048 box: never upscaled, never lost

    monkeypatch.setenv("MEDINTAKE_RENDITIONS", "lossless")  # environment > default
    assert list(run(src, tmp_path / "out2", Settings.load(data_dir=tmp_path / "data"))) == list(EXPECTED)
    # argument > environment
    assert list(run(src, tmp_path / "out3", Settings.load(data_dir=tmp_path / "data", renditions="standard"))) == [
        "thumbnail", "preview", "web"]
    with pytest.raises(Exception, match="renditions must be one of"):
        Settings.load(data_dir=tmp_path / "data", renditions="all")


# --- geometry -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["jpeg_exif_orientation6.jpg", "heic.heic"])
def test_exif_orientation_is_applied(name: str, tmp_path: Path, settings: Settings) -> None:
    """Stored 400x300 with Orientation=6 (rotate 90 clockwise): shown portrait, block top-right."""
    out_dir = tmp_path / "out"
    run(make_input(name, tmp_path), out_dir, settings)
    for rname in EXPECTED:
        img = open_rendition(out_dir, rname).convert("RGB")
        width, height = img.size
        assert height > width, rname
        top_right = img.getpixel((width - 1 - width // 16, height // 16))
        top_left = img.getpixel((width // 16, height // 16))
        assert top_right[0] > 200 and top_right[1] < 60, (rname, top_right)
        assert abs(top_left[0] - 128) < 20, (rname, top_left)


def test_large_image_bounds(tmp_path: Path, settings: Settings) -> None:
    out_dir = tmp_path / "out"
    results = run(make_input("jpeg_large.jpg", tmp_path), out_dir, settings)
    sizes = {name: (r.width, r.height) for name, r in results.items()}
    assert sizes == {
        "thumbnail": (256, 171), "preview": (1024, 683), "web": (2048, 1365),
        "png": (3000, 2000), "archival": (3000, 2000),
    }


def _big_scan(path: Path, stored: tuple[int, int], orientation: int) -> Path:
    """A JPEG 'scan' of ``stored`` pixels: lines of dark strokes on off-white, EXIF orientation set."""
    width, height = stored
    pixels = np.full((height, width, 3), 238, np.uint8)
    rng = np.random.default_rng(7)
    for top in range(200, height - 200, 90):
        for left in rng.integers(100, width - 400, 12):
            pixels[top:top + 40, left:left + int(rng.integers(60, 300)), :] = (30, 30, 90)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, quality=90, exif=exif)
    return path


def test_big_jpeg_is_decoded_smaller_with_the_same_sizes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The standard set decodes a 26 MP JPEG at half scale (the 2048 px web image is still met)
    and the renditions have exactly the sizes a full decode gives, close to its pixels."""
    from PIL.JpegImagePlugin import JpegImageFile

    src = _big_scan(tmp_path / "scan.jpg", (6000, 4400), 6)  # stored landscape, shown portrait
    drafted: list[tuple[int, int]] = []
    real_draft = JpegImageFile.draft

    def spy(self, mode, size):
        out = real_draft(self, mode, size)
        drafted.append(self.size)
        return out

    standard = Settings(data_dir=tmp_path / "data")
    kind = identify(src, standard)
    validate(src, kind, standard)  # (validation drafts its own small decode)
    monkeypatch.setattr(JpegImageFile, "draft", spy)
    results = make_renditions(src, kind, tmp_path / "out", standard)
    assert drafted == [(3000, 2200)]
    sizes = {r.name: (r.width, r.height) for r in results}
    assert sizes == {name: renditions.fitted_size((4400, 6000), EXPECTED[name][3])
                     for name in ("thumbnail", "preview", "web")}
    full = renditions.load_normalised(src, kind, standard)  # no draft: full decode
    assert full.size == (4400, 6000)
    reference = np.asarray(full.resize(sizes["web"], Image.Resampling.LANCZOS, reducing_gap=2.0), np.int16)
    web = np.asarray(open_rendition(tmp_path / "out", "web").convert("RGB"), np.int16)
    assert float(np.abs(web - reference).mean()) < 3.0


def test_lossless_set_decodes_at_full_size(tmp_path: Path, settings: Settings,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL.JpegImagePlugin import JpegImageFile

    src = _big_scan(tmp_path / "scan.jpg", (4400, 3000), 1)
    kind = identify(src, settings)
    validate(src, kind, settings)
    called: list[int] = []
    monkeypatch.setattr(JpegImageFile, "draft", lambda self, mode, size: called.append(1))
    results = {r.name: r for r in make_renditions(src, kind, tmp_path / "out", settings)}
    assert not called and (results["png"].width, results["png"].height) == (4400, 3000)


def test_small_image_is_never_upscaled(tmp_path: Path, settings: Settings) -> None:
    results = run(make_input("jpeg_tiny.jpg", tmp_path), tmp_path / "out", settings)
    assert {(r.width, r.height) for r in results.values()} == {(100, 80)}


def test_fitted_size_keeps_aspect_and_bounds() -> None:
    assert renditions.fitted_size((4608, 3456), 256) == (256, 192)
    assert renditions.fitted_size((3456, 4608), 2048) == (1536, 2048)
    assert renditions.fitted_size((10000, 3), 256) == (256, 1)
    assert renditions.fitted_size((200, 100), 256) == (200, 100)


# --- colour -------------------------------------------------------------------------------------


def mean_pixel(img: Image.Image) -> tuple[float, ...]:
    return tuple(float(v) for v in np.asarray(img.convert("RGB")).reshape(-1, 3).mean(axis=0))


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path, settings: Settings) -> None:
    out_dir = tmp_path / "out"
    run(make_input("jpeg_cmyk.jpg", tmp_path), out_dir, settings)
    for rname in EXPECTED:
        img = open_rendition(out_dir, rname)
        assert img.mode in ("RGB", "RGBA")
        r, g, b = mean_pixel(img)
        assert r > 230 and g < 30 and b < 30, (rname, (r, g, b))  # CMYK (0,100,100,0) is red


@pytest.mark.parametrize("name", ["jpeg_icc_wide.jpg", "heic_icc_wide.heic"])
def test_wide_gamut_icc_is_converted_to_srgb(name: str, tmp_path: Path, settings: Settings) -> None:
    """Pixels tagged with a wide-gamut profile must come out as the same colour in sRGB."""
    expected_img = ImageCms.profileToProfile(
        Image.new("RGB", (1, 1), WIDE_GAMUT_PIXEL),
        ImageCms.ImageCmsProfile(io.BytesIO(ADOBE_RGB_LIKE)), ImageCms.createProfile("sRGB"),
    )
    expected = expected_img.getpixel((0, 0))
    assert max(abs(a - b) for a, b in zip(expected, WIDE_GAMUT_PIXEL)) > 15  # the test is meaningful

    out_dir = tmp_path / "out"
    run(make_input(name, tmp_path), out_dir, settings)
    for rname in ("png", "archival", "web", "preview"):
        got = mean_pixel(open_rendition(out_dir, rname))
        assert max(abs(a - b) for a, b in zip(got, expected)) <= 3, (rname, got, expected)


def test_srgb_icc_keeps_pixels(tmp_path: Path, settings: Settings) -> None:
    out_dir = tmp_path / "out"
    run(make_input("jpeg_icc_srgb.jpg", tmp_path), out_dir, settings)
    got = mean_pixel(open_rendition(out_dir, "png"))
    assert max(abs(a - b) for a, b in zip(got, WIDE_GAMUT_PIXEL)) <= 2


def test_tiff_page_icc_is_converted(tmp_path: Path, settings: Settings) -> None:
    """First TIFF page carries the wide-gamut profile too: green (0,160,0) shifts in sRGB."""
    out_dir = tmp_path / "out"
    run(make_input("tiff_multipage.tiff", tmp_path), out_dir, settings)
    r, g, b = mean_pixel(open_rendition(out_dir, "png"))
    assert g > 120 and b < 60  # still page 1's green, not page 2's blue
    assert (r, g, b) != (0.0, 160.0, 0.0)  # and converted, not copied


def test_16bit_is_scaled_not_clipped(tmp_path: Path, settings: Settings) -> None:
    out_dir = tmp_path / "out"
    run(make_input("png_grey16.png", tmp_path), out_dir, settings)
    full = open_rendition(out_dir, "png")
    assert full.mode == "L"
    assert abs(full.getpixel((2, 2)) - 128) <= 1  # 32768/65535 of full scale
    assert full.getpixel((255, 2)) == 255 and full.getpixel((9, 2)) < 20

    run(make_input("png_rgb16.png", tmp_path), tmp_path / "out16", settings)
    r, g, b = mean_pixel(open_rendition(tmp_path / "out16", "archival"))
    assert r > 250 and abs(g - 128) <= 1 and b < 3


# --- alpha and frames ---------------------------------------------------------------------------


def test_alpha_kept_for_lossless_and_webp_flattened_on_white_for_jpeg(tmp_path: Path, settings: Settings) -> None:
    out_dir = tmp_path / "out"
    run(make_input("png_alpha.png", tmp_path), out_dir, settings)
    for rname in ("png", "archival", "preview"):
        img = open_rendition(out_dir, rname)
        assert img.mode == "RGBA", rname
        w, h = img.size
        assert img.getpixel((w // 8, h // 2))[3] == 0 and img.getpixel((w - 1 - w // 8, h // 2))[3] == 255
    for rname in ("web", "thumbnail"):
        img = open_rendition(out_dir, rname)
        assert img.mode == "RGB"
        w, h = img.size
        left, right = img.getpixel((w // 8, h // 2)), img.getpixel((w - 1 - w // 8, h // 2))
        assert min(left) > 245, (rname, left)  # transparent -> white
        assert right[2] > 240 and right[0] < 15, (rname, right)


@pytest.mark.parametrize("name", ["gif_palette.gif", "png_la.png"])
def test_palette_and_grey_alpha(name: str, tmp_path: Path, settings: Settings) -> None:
    out_dir = tmp_path / "out"
    run(make_input(name, tmp_path), out_dir, settings)
    lossless = open_rendition(out_dir, "png")
    assert lossless.mode in ("RGBA", "LA")
    w, h = lossless.size
    assert lossless.getpixel((w // 8, h // 2))[-1] == 0
    jpeg = open_rendition(out_dir, "web").convert("RGB")
    assert min(jpeg.getpixel((w // 8, h // 2))) > 245  # transparent -> white
    assert max(jpeg.getpixel((w - 1 - w // 8, h // 2))) < 140  # opaque part kept


def test_neutral_rgb_becomes_grey_and_colour_stays_colour(tmp_path: Path, settings: Settings) -> None:
    grey = Image.new("RGB", (300, 200), (200, 200, 200))
    grey.paste((20, 20, 20), (10, 10, 290, 30))  # "text"
    grey.save(tmp_path / "grey.png")
    run(tmp_path / "grey.png", tmp_path / "grey", settings)
    assert {open_rendition(tmp_path / "grey", n).mode for n in EXPECTED if n != "preview"} == {"L"}  # WebP: RGB
    assert open_rendition(tmp_path / "grey", "png").getpixel((100, 20)) == 20  # lossless

    colour = grey.copy()
    colour.putpixel((299, 199), (200, 200, 201))  # one barely coloured pixel in the last strip
    colour.save(tmp_path / "colour.png")
    run(tmp_path / "colour.png", tmp_path / "colour", settings)
    assert open_rendition(tmp_path / "colour", "png").getpixel((299, 199)) == (200, 200, 201)


def test_opaque_alpha_is_dropped(tmp_path: Path, settings: Settings) -> None:
    path = tmp_path / "opaque.png"
    Image.new("RGBA", (50, 40), (1, 2, 3, 255)).save(path)
    run(path, tmp_path / "out", settings)
    assert open_rendition(tmp_path / "out", "png").mode == "RGB"


@pytest.mark.parametrize("name, colour", [("gif_animated.gif", (255, 0, 0)), ("tiff_multipage.tiff", None)])
def test_multi_frame_uses_frame_one(name: str, colour: tuple[int, int, int] | None, tmp_path: Path,
                                    settings: Settings) -> None:
    out_dir = tmp_path / "out"
    run(make_input(name, tmp_path), out_dir, settings)
    r, g, b = mean_pixel(open_rendition(out_dir, "png"))
    if colour is None:  # TIFF page 1 is green (colour-converted, see test_tiff_page_icc_is_converted)
        assert g > 120 and b < 60
    else:
        assert max(abs(a - e) for a, e in zip((r, g, b), colour)) < 10


@pytest.mark.parametrize("name, colours", [
    ("tiff_multipage.tiff", [(0, 160, 0), (0, 0, 255)]),
    ("pdf_2pages.pdf", [(200, 30, 30), (0, 0, 200)]),
])
def test_archival_tiff_keeps_every_page(name: str, colours: list[tuple[int, int, int]], tmp_path: Path,
                                        settings: Settings) -> None:
    """The archival copy is the whole upload: page 2 of a fax or a PDF must not be dropped."""
    out_dir = tmp_path / "out"
    results = run(make_input(name, tmp_path), out_dir, settings)
    with Image.open(out_dir / "renditions" / "archival.tiff") as tiff:
        assert tiff.n_frames == len(colours)
        for index, colour in enumerate(colours):
            tiff.seek(index)
            assert set(tiff.tag_v2) <= BASIC_TIFF_TAGS  # no EXIF, XMP or ICC on any page
            assert tiff.tag_v2[259] == 5  # LZW
            page = tiff.convert("RGB")
            if name.endswith(".pdf"):
                assert max(abs(a - e) for a, e in zip(mean_pixel(page), colour)) < 12
            else:  # TIFF pages carry a wide-gamut profile: converted, so compare the dominant channel
                assert max(range(3), key=lambda c: mean_pixel(page)[c]) == max(range(3), key=lambda c: colour[c])
    assert (results["archival"].width, results["archival"].height) == (results["png"].width, results["png"].height)


def test_archival_tiff_of_a_real_fax(tmp_path: Path, settings: Settings) -> None:
    src = Path(__file__).parent / "files" / "fax_two_pages.tiff"
    run(src, tmp_path / "out", settings)
    with Image.open(src) as original, Image.open(tmp_path / "out" / "renditions" / "archival.tiff") as tiff:
        assert tiff.n_frames == original.n_frames == 2
        for index in range(2):
            original.seek(index)
            tiff.seek(index)
            assert tiff.size == original.size
            # Lossless: the same page, pixel for pixel (a 1-bit fax stored as 8-bit grey).
            assert np.array_equal(np.asarray(tiff.convert("L")), np.asarray(original.convert("L")))


# --- PDF ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["pdf_1page.pdf", "pdf_2pages.pdf"])
def test_pdf_page_one_is_rendered(name: str, tmp_path: Path, settings: Settings) -> None:
    out_dir = tmp_path / "out"
    results = run(make_input(name, tmp_path), out_dir, settings)
    # 600x800 px at 100 dpi = 6x8 inch; rendered at PDF_DPI.
    scale = renditions.PDF_DPI / 100
    assert (results["png"].width, results["png"].height) == (round(600 * scale), round(800 * scale))
    r, g, b = mean_pixel(open_rendition(out_dir, "png"))
    assert r > 180 and g < 60 and b < 60  # page 1 is red; page 2 (blue) is not used


def test_pdf_scale_is_bounded() -> None:
    poster = renditions.pdf_scale(72 * 100, 72 * 50, 10**9)  # 100 x 50 inch
    assert 72 * 100 * poster == pytest.approx(renditions.PDF_MAX_SIDE)
    a4 = renditions.pdf_scale(595, 842, 10**9)
    assert a4 == pytest.approx(renditions.PDF_DPI / 72)
    tight = renditions.pdf_scale(595, 842, 100_000)
    assert math.ceil(595 * tight) * math.ceil(842 * tight) <= 100_000 < 595 * 842 * (tight * 1.03) ** 2


# --- errors, logging, rerun ---------------------------------------------------------------------


def test_truncated_jpeg_is_corrupt(tmp_path: Path, settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    assert not ImageFile.LOAD_TRUNCATED_IMAGES
    good = make_input("jpeg_large.jpg", tmp_path)
    bad = tmp_path / f"{MARKER}-truncated.jpg"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    kind = identify(bad, settings)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(CorruptFile) as info:
        make_renditions(bad, kind, tmp_path / "out", settings)
    assert info.value.exit_code == ExitCode.REJECTED_INPUT
    assert info.value.reason_code == "corrupt_file"
    assert MARKER not in str(info.value) and str(tmp_path) not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no chained path-bearing error
    assert MARKER not in caplog.text
    assert not list((tmp_path / "out" / "renditions").glob("*"))  # nothing half-written


def test_pixel_limit_is_enforced(tmp_path: Path) -> None:
    from pipeline.errors import DecompressionBomb

    strict = Settings(data_dir=tmp_path / "data", max_image_pixels=1000, renditions="lossless")
    src = make_input("jpeg_tiny.jpg", tmp_path)  # 8000 pixels > 2 x 1000
    with pytest.raises(DecompressionBomb):
        make_renditions(src, identify(src, strict), tmp_path / "out", strict)


def test_pdf_render_respects_pixel_limit(tmp_path: Path) -> None:
    strict = Settings(data_dir=tmp_path / "data", max_image_pixels=200_000, renditions="lossless")
    src = make_input("pdf_1page.pdf", tmp_path)
    results = {r.name: r for r in make_renditions(src, identify(src, strict), tmp_path / "out", strict)}
    assert results["png"].width * results["png"].height <= 200_000


def test_broken_exif_does_not_reject_the_photo(tmp_path: Path, settings: Settings) -> None:
    """A damaged EXIF block (common on edited phone photos) keeps the stored orientation."""
    good = io.BytesIO()
    Image.new("RGB", (120, 90), (0, 128, 0)).save(good, "JPEG")
    junk = b"Exif\0\0MM\0*\0\0\0\x08\0\x05\x01\x12\0\x03" + MARKER_BYTES  # IFD cut short
    app1 = b"\xff\xe1" + struct.pack(">H", len(junk) + 2) + junk
    path = tmp_path / "broken-exif.jpg"
    path.write_bytes(good.getvalue()[:2] + app1 + good.getvalue()[2:])
    results = run(path, tmp_path / "out", settings)
    assert (results["png"].width, results["png"].height) == (120, 90)
    for name in EXPECTED:
        assert_no_metadata(tmp_path / "out" / "renditions" / EXPECTED[name][0])


def test_corrupt_pdf_is_corrupt(tmp_path: Path, settings: Settings) -> None:
    good = make_input("pdf_1page.pdf", tmp_path)
    bad = tmp_path / "bad.pdf"
    bad.write_bytes(good.read_bytes()[:200])
    with pytest.raises(CorruptFile):
        make_renditions(bad, identify(bad, settings), tmp_path / "out", settings)


def test_no_file_names_in_logs(tmp_path: Path, settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("jpeg_exif_orientation6.jpg", "pdf_1page.pdf", "heic.heic"):
        run(make_input(name, tmp_path), tmp_path / "out" / name, settings)
    assert MARKER not in caplog.text and str(tmp_path) not in caplog.text


def test_rerun_replaces_outputs_and_leaves_no_temp_files(tmp_path: Path, settings: Settings) -> None:
    out_dir = tmp_path / "out"
    run(make_input("jpeg_large.jpg", tmp_path), out_dir, settings)
    second = run(make_input("png_alpha.png", tmp_path), out_dir, settings)
    assert open_rendition(out_dir, "png").size == (second["png"].width, second["png"].height) == (300, 200)
    assert sorted(p.name for p in (out_dir / "renditions").iterdir()) == sorted(v[0] for v in EXPECTED.values())


def test_write_failure_is_transient(tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.errors import TransientError

    src = make_input("jpeg_tiny.jpg", tmp_path)
    kind = identify(src, settings)

    def fail(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(renditions.os, "replace", fail)
    with pytest.raises(TransientError):
        make_renditions(src, kind, tmp_path / "out", settings)
    assert not list((tmp_path / "out" / "renditions").iterdir())
