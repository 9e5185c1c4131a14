"""Image formats and pixel modes people upload (issue 9), each through identify -> validate ->
extract (OCR) -> convert (the default renditions).

Every file is a real encoded file made here by the real encoders (Pillow's libjpeg, libpng, libtiff,
OpenJPEG and libavif): a line of medication text, so that the OCR path proves it decoded the pixels,
in each format and mode. JPEG 2000 (.jp2 and .j2k codestreams, .jpf), BigTIFF and AVIF image
sequences used to be ``unsupported_type``; the others are checked so they stay read.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont, ImageSequence

from jobs.convert.renditions import make_renditions
from jobs.extract.text import extract_text
from jobs.identify import identify, validate
from pipeline.settings import Settings

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
TEXT = "Aspirin 81 mg daily"


def text_mask() -> Image.Image:
    """L image, 255 where the text is: black text on white paper once drawn."""
    mask = Image.new("L", (900, 140), 0)
    ImageDraw.Draw(mask).text((30, 35), TEXT, font=ImageFont.truetype(FONT, 60), fill=255)
    return mask


def page(mode: str) -> Image.Image:
    """The text page in ``mode``: black on white, or black on transparent for the alpha modes."""
    mask = text_mask()
    grey = Image.eval(mask, lambda v: 255 - v)
    if mode == "L":
        return grey
    if mode == "RGB":
        return Image.merge("RGB", (grey, grey, grey))
    if mode == "LA":
        return Image.merge("LA", (Image.new("L", mask.size, 0), mask))  # transparent paper
    if mode == "RGBA":
        black = Image.new("L", mask.size, 0)
        return Image.merge("RGBA", (black, black, black, mask))
    if mode in ("I;16", "I"):
        return Image.fromarray(np.asarray(grey).astype(np.uint16) * 257)  # full 16-bit range
    if mode == "CMYK":
        zero = Image.new("L", mask.size, 0)
        return Image.merge("CMYK", (zero, zero, zero, mask))  # K ink where the text is
    if mode == "P":
        return grey.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    raise AssertionError(mode)


def encode(name: str, folder: Path) -> Path:
    """Write the named file; returns its path (named without extension: identification is by bytes)."""
    path = folder / name.replace(".", "_")
    fmt, mode = FILES[name]
    if name.endswith(".avifs"):  # an AVIF image sequence: the text is frame 1
        frames = [page("RGB"), Image.new("RGB", (900, 140), (0, 90, 200)), Image.new("RGB", (900, 140), "white")]
        frames[0].save(path, "AVIF", save_all=True, append_images=frames[1:], duration=200, quality=90)
        return path
    img = page(mode)
    if fmt == "JPEG2000":
        img.save(path, "JPEG2000", no_jp2=name.endswith(".j2k"), irreversible=name.endswith("lossy.jp2"))
        if name.endswith(".jpf"):  # the JPX brand (JPEG 2000 part 2 writers), same JP2 layout
            data = path.read_bytes()
            path.write_bytes(data.replace(b"ftypjp2 ", b"ftypjpx ", 1))
    elif fmt == "BigTIFF":
        img.save(path, "TIFF", big_tiff=True, compression="tiff_deflate")
    elif fmt == "TIFF" and name.startswith("multipage"):
        img.save(path, "TIFF", save_all=True, append_images=[page("L").rotate(180)], compression="tiff_lzw")
    else:
        img.save(path, fmt)
    return path


FILES = {
    # name: (how it is written, mode)
    "rgb.jp2": ("JPEG2000", "RGB"),
    "rgb-lossy.jp2": ("JPEG2000", "RGB"),
    "grey.jp2": ("JPEG2000", "L"),
    "grey-alpha.jp2": ("JPEG2000", "LA"),
    "rgba.jp2": ("JPEG2000", "RGBA"),
    "grey16.jp2": ("JPEG2000", "I;16"),
    "grey16.j2k": ("JPEG2000", "I;16"),
    "rgb.j2k": ("JPEG2000", "RGB"),
    "rgb.jpf": ("JPEG2000", "RGB"),
    "rgb-big.tif": ("BigTIFF", "RGB"),
    "grey16-big.tif": ("BigTIFF", "I;16"),
    "sequence.avifs": ("AVIF", "RGB"),
    "grey16.png": ("PNG", "I;16"),
    "grey16.tif": ("TIFF", "I;16"),
    "palette.png": ("PNG", "P"),
    "grey-alpha.png": ("PNG", "LA"),
    "rgba.webp": ("WEBP", "RGBA"),
    "cmyk.jpg": ("JPEG", "CMYK"),
    "cmyk.tif": ("TIFF", "CMYK"),
    "multipage.tif": ("TIFF", "L"),
}
KINDS = {"JPEG2000": "JPEG2000", "BigTIFF": "TIFF"}


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(data_dir=tmp_path_factory.mktemp("data"))


@pytest.mark.parametrize("name", sorted(FILES))
def test_read_ocrd_and_rendered(name: str, tmp_path: Path, settings: Settings) -> None:
    path = encode(name, tmp_path)
    fmt, mode = FILES[name]
    kind = identify(path, settings)
    assert (kind.kind, kind.format) == ("image", KINDS.get(fmt, fmt))
    with Image.open(path) as img:
        assert img.mode == mode or (mode == "RGB" and fmt == "AVIF")  # really that mode
    frames = validate(path, kind, settings)
    assert frames == {"sequence.avifs": 3, "multipage.tif": 2}.get(name, 1)

    out = tmp_path / "out"
    out.mkdir()
    extract_text(path, kind, out, settings)
    text = (out / "text.txt").read_text().lower()
    assert "aspirin 81 mg" in text, text

    results = {r.name: r for r in make_renditions(path, kind, out, settings)}
    assert list(results) == ["thumbnail", "preview", "web"]
    with Image.open(out / "renditions" / results["web"].filename) as web:
        assert web.size == (900, 140)
        grey = np.asarray(web.convert("L"))
    # Black text on white paper (alpha flattened on white, 16-bit scaled, CMYK converted).
    assert np.median(grey) > 240 and grey.min() < 40, (np.median(grey), grey.min())
    dark = grey < 128
    assert np.array_equal(dark.any(axis=0).nonzero()[0][[0, -1]] // 20,
                          (np.asarray(text_mask()) > 128).any(axis=0).nonzero()[0][[0, -1]] // 20)



@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_truncated_jpeg2000_is_corrupt_not_unsupported(cut: float, tmp_path: Path, settings: Settings) -> None:
    """A damaged JPEG 2000 is now a JPEG 2000: ``corrupt_file``, not ``unsupported_type``, never a crash."""
    from pipeline.errors import CorruptFile

    path = encode("rgb.jp2", tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * cut)])
    kind = identify(path, settings)
    assert kind.format == "JPEG2000"
    with pytest.raises(CorruptFile) as err:
        validate(path, kind, settings)
    assert err.value.reason_code == "corrupt_file"


def test_tiff_palette_page_then_float_page(tmp_path: Path, settings: Settings) -> None:
    """Pillow carries page 1's palette to page 2 (an F page) and fails to load it; both pages are read.

    Seen in Pillow's ``no_rows_per_strip.tif`` (P, F and L pages): ``corrupt_file`` before.
    """
    paper = page("L").convert("P")
    scan = Image.fromarray(np.asarray(page("L"), dtype=np.float32) / 255.0, "F")
    path = tmp_path / "mixed"
    paper.save(path, "TIFF", save_all=True, append_images=[scan], compression="tiff_lzw")
    with Image.open(path) as img:
        assert [img.mode for _ in ImageSequence.Iterator(img)] == ["P", "F"]
    kind = identify(path, settings)
    assert validate(path, kind, settings) == 2
    out = tmp_path / "out"
    out.mkdir()
    extract_text(path, kind, out, settings)
    pages = (out / "text.txt").read_text().lower().split("\f")
    assert len(pages) == 2 and all("aspirin 81 mg" in text for text in pages), pages
