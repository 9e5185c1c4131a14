"""Renditions of PDFs with the standard set: page 1 drawn by pdfium at each rendition's own size.

Why these tests: the standard set (thumbnail, preview, web) no longer renders page 1 at 200 dpi
and resamples it; pdfium draws the page straight at each size (jobs/convert/renditions.py,
``pdf_page_renditions``). The outputs must keep what the cascade gave: the same sizes, page 1
only however long the PDF, the page's /Rotate applied, grey pages stored grey and colour kept,
no metadata, bad PDFs rejected; and they must look like the cascade's (compared pixel by pixel
with the lossless set, which still goes through the cascade).
"""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageStat

from conftest import fixture_makers
from jobs.convert import renditions
from jobs.convert.renditions import make_renditions
from jobs.identify import identify
from pipeline.errors import CorruptFile
from pipeline.settings import Settings


def text_pdf(pages: int, *, colour_first: bool = False, rotate: int = 0, size: tuple[int, int] = (612, 792)) -> bytes:
    """A born-digital PDF: Helvetica text on every page; page 1 optionally with a red block.

    Pages after the first carry a blue block, so a rendition made from any page but the first
    would show blue.
    """
    font_id = 3 + 2 * pages
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>",
               ("<< /Type /Pages /Kids [" + " ".join(f"{3 + 2 * i} 0 R" for i in range(pages))
                + f"] /Count {pages} >>").encode()]
    for i in range(pages):
        ops = ["BT /F1 14 Tf 72 700 Td (Discharge summary page %d) Tj ET" % (i + 1)]
        ops += [f"BT /F1 10 Tf 72 {680 - 14 * k} Td (Line {k} of the fabricated letter, no patient.) Tj ET"
                for k in range(30)]
        if i == 0 and colour_first:
            ops.append("1 0 0 rg 300 300 200 150 re f")
        elif i > 0:
            ops.append("0 0 1 rg 0 0 612 792 re f")
        stream = ("\n".join(ops) + "\n").encode("latin-1")
        rot = f" /Rotate {rotate}" if rotate else ""
        objects.append((f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {size[0]} {size[1]}]{rot} "
                        f"/Resources << /Font << /F1 {font_id} 0 R >> >> /Contents {4 + 2 * i} 0 R >>").encode())
        objects.append(f"<< /Length {len(stream)} >>\nstream\n".encode() + stream + b"endstream")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    return fixture_makers().write_pdf(objects)


def run(src: Path, out: Path, settings: Settings) -> dict[str, renditions.RenditionResult]:
    return {r.name: r for r in make_renditions(src, identify(src, settings), out, settings)}


@pytest.fixture
def standard(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", renditions="standard")


@pytest.fixture
def lossless(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", renditions="lossless")


def test_thirty_page_pdf_gives_three_renditions_of_page_one(tmp_path: Path, standard: Settings) -> None:
    src = tmp_path / "long.pdf"
    src.write_bytes(text_pdf(30, colour_first=True))
    out = tmp_path / "out"
    results = run(src, out, standard)
    assert list(results) == ["thumbnail", "preview", "web"]
    assert sorted(p.name for p in (out / "renditions").iterdir()) == ["preview.webp", "thumbnail.jpg", "web.jpg"]
    with Image.open(out / "renditions" / "web.jpg") as web:
        assert web.mode == "RGB"  # the red block: colour kept
        # page 1 is white paper with a red block; every later page is solid blue
        r, g, b = ImageStat.Stat(web.convert("RGB")).mean
        assert r > 200 and b > 150 and g > 150
        assert web.getpixel((round(400 / 612 * web.width), round((792 - 375) / 792 * web.height)))[0] > 200


def test_sizes_and_pixels_match_the_cascade(tmp_path: Path, standard: Settings, lossless: Settings) -> None:
    """Same sizes as the 200 dpi render resampled, and the same picture within anti-aliasing."""
    src = tmp_path / "letter.pdf"
    src.write_bytes(text_pdf(2, colour_first=True))
    direct = run(src, tmp_path / "direct", standard)
    cascade = run(src, tmp_path / "cascade", lossless)
    assert (cascade["png"].width, cascade["png"].height) == (1700, 2200)  # 8.5 x 11 in at PDF_DPI
    for name in ("thumbnail", "preview", "web"):
        assert (direct[name].width, direct[name].height) == (cascade[name].width, cascade[name].height), name
        assert direct[name].format == cascade[name].format
        with Image.open(tmp_path / "direct" / "renditions" / direct[name].filename) as a, \
                Image.open(tmp_path / "cascade" / "renditions" / cascade[name].filename) as b:
            diff = ImageStat.Stat(ImageChops.difference(a.convert("RGB"), b.convert("RGB"))).mean
            assert max(diff) < 4.5, (name, diff)  # mean per channel of 255: lossy codecs + AA only


def test_grey_page_is_stored_grey(tmp_path: Path, standard: Settings) -> None:
    src = tmp_path / "grey.pdf"
    src.write_bytes(text_pdf(3))
    out = tmp_path / "out"
    results = run(src, out, standard)
    for name in ("thumbnail", "web"):
        with Image.open(out / "renditions" / results[name].filename) as img:
            assert img.mode == "L", name  # exactly-grey pixels: one channel, same picture
    with Image.open(out / "renditions" / "preview.webp") as img:
        assert img.mode == "RGB"  # WebP has no grey mode


@pytest.mark.parametrize("rotate", [90, 270])
def test_page_rotation_is_applied(tmp_path: Path, standard: Settings, rotate: int) -> None:
    src = tmp_path / "turned.pdf"
    src.write_bytes(text_pdf(1, rotate=rotate))
    results = run(src, tmp_path / "out", standard)
    assert (results["web"].width, results["web"].height) == (2048, 1583)  # 2200x1700 fitted in 2048
    assert results["thumbnail"].width == 256 and results["thumbnail"].height < 256


def test_small_page_is_not_enlarged(tmp_path: Path, standard: Settings) -> None:
    src = tmp_path / "label.pdf"
    src.write_bytes(text_pdf(1, size=(144, 72)))  # 2 x 1 inch: 400 x 200 at PDF_DPI
    results = run(src, tmp_path / "out", standard)
    assert (results["web"].width, results["web"].height) == (400, 200)
    assert (results["preview"].width, results["preview"].height) == (400, 200)
    assert (results["thumbnail"].width, results["thumbnail"].height) == (256, 128)


def test_outputs_carry_no_metadata(tmp_path: Path, standard: Settings) -> None:
    src = tmp_path / "meta.pdf"
    data = text_pdf(1).replace(b"/Root 1 0 R >>", b"/Root 1 0 R /Info << /Title (Jane Doe MRN 123) >> >>")
    src.write_bytes(data)
    out = tmp_path / "out"
    run(src, out, standard)
    for path in (out / "renditions").iterdir():
        raw = path.read_bytes()
        assert b"Jane" not in raw and b"Exif" not in raw and b"ICC_PROFILE" not in raw
        with Image.open(path) as img:
            assert not {"exif", "icc_profile", "xmp", "comment"} & set(img.info)


def test_pixel_limit_bounds_the_drawn_sizes(tmp_path: Path) -> None:
    strict = Settings(data_dir=tmp_path / "data", max_image_pixels=200_000)
    src = tmp_path / "letter.pdf"
    src.write_bytes(text_pdf(1))
    results = run(src, tmp_path / "out", strict)
    assert results["web"].width * results["web"].height <= 200_000


def test_broken_pdf_is_corrupt_and_leaves_nothing(tmp_path: Path, standard: Settings) -> None:
    good = text_pdf(2)
    bad = tmp_path / "bad.pdf"
    bad.write_bytes(good[:200] + b"\x00" * 50)
    good_path = tmp_path / "good.pdf"
    good_path.write_bytes(good)
    kind = identify(good_path, standard)  # the upload passed identification; its bytes then fail to parse
    with pytest.raises(CorruptFile):
        make_renditions(bad, kind, tmp_path / "out", standard)
    assert not list((tmp_path / "out" / "renditions").glob("*"))

