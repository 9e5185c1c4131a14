"""Our invisible text layer (jobs.extract.textlayer): real tesseract on real fixture images,
checked with pdfplumber and pypdfium2 the way a reader of searchable.pdf would see it."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pdfplumber
import pypdfium2 as pdfium
import pytest
from PIL import Image

from jobs.extract import ocr, textlayer
from jobs.extract import pdf as pdfmod
from jobs.extract.ocr import ocr_image
from jobs.extract.text import extract_text
from jobs.identify import identify
from conftest import load_bench_module
from pipeline.settings import Settings

FILES = Path(__file__).resolve().parent / "files"

pytestmark = pytest.mark.skipif(textlayer.glyphless_font() is None, reason="tesseract's pdf.ttf is not installed")


@pytest.fixture(scope="module")
def labs() -> ocr.OcrPage:
    with Image.open(FILES / "screenshot_labs.png") as img:
        return ocr_image(img.convert("RGB"), Settings(), dpi=None, want_pdf=True)


def _layer(page: ocr.OcrPage) -> bytes:
    rec = page.recognition
    return textlayer.build_text_layer(rec.words, rec.lines, page.width, page.height, page.dpi)


def _pdf_words(data: bytes) -> list[dict]:
    with pdfplumber.open(__import__("io").BytesIO(data)) as pdf:
        return pdf.pages[0].extract_words(use_text_flow=True, keep_blank_chars=False)


def test_words_come_out_in_order(labs):
    words = [w["text"] for w in labs.recognition.words]
    assert len(words) > 10
    searchable = pdfmod.build_ocr_page_pdf(ocr.encode_jpeg(labs.gray), labs.recognition.pdf,
                                           labs.width * 72 / labs.dpi, labs.height * 72 / labs.dpi)
    assert [w["text"] for w in _pdf_words(searchable)] == words


def test_word_boxes_match_ocr_boxes(labs):
    scale = 72.0 / labs.dpi
    rec = labs.recognition
    line_of = {}
    for w in rec.words:
        line_of[id(w)] = max((ln for ln in rec.lines if ln["offset"] <= w["offset"]), key=lambda ln: ln["offset"])
    found = _pdf_words(_layer(labs))
    assert len(found) == len(rec.words)
    for got, want in zip(found, rec.words):
        x0, y0, x1, y1 = (v * scale for v in want["bbox"])
        line = [v * scale for v in line_of[id(want)]["bbox"]]
        assert abs(got["x0"] - x0) <= 2 and abs(got["x1"] - x1) <= 2
        # the word stands on its line's bottom and is as tall as the line (covers its OCR box)
        assert abs(got["bottom"] - line[3]) <= 2 and abs(got["top"] - line[1]) <= 2
        assert got["top"] - 2 <= y0 and y1 <= got["bottom"] + 2


def test_layer_is_invisible(labs):
    doc = pdfium.PdfDocument(_layer(labs))
    try:
        pixels = np.asarray(doc[0].render(scale=1).to_pil().convert("L"))
    finally:
        doc.close()
    assert pixels.size and pixels.min() == 255


def test_cjk_text_survives(tmp_path):
    lang_pages, lang_texts = load_bench_module("lang_pages"), load_bench_module("lang_texts")
    text = lang_texts.TEXTS["chi_sim"]
    image, _ = lang_pages.render_page("chi_sim", "。".join(text.split("。")[:2]) + "。", seed=3, width_px=1800)
    page = ocr_image(image, Settings(), dpi=300, want_pdf=True)
    rec = page.recognition
    han = [ch for ch in rec.text if "\u4e00" <= ch <= "\u9fff"]
    assert len(han) > 10
    with pdfplumber.open(__import__("io").BytesIO(rec.pdf)) as pdf:
        got = pdf.pages[0].extract_text()
    assert [ch for ch in got if "\u4e00" <= ch <= "\u9fff"] == han
    doc = pdfium.PdfDocument(rec.pdf)  # pdfium (copy and search in viewers) agrees
    try:
        pdfium_text = doc[0].get_textpage().get_text_range()
    finally:
        doc.close()
    assert [ch for ch in pdfium_text if "\u4e00" <= ch <= "\u9fff"] == han


def test_multipage_searchable_pdf_has_text_on_every_page(tmp_path):
    src = tmp_path / "fax.tiff"
    shutil.copyfile(FILES / "fax_two_pages.tiff", src)
    out = tmp_path / "out"
    out.mkdir()
    settings = Settings()
    extract_text(src, identify(src, settings), out, settings)
    with pdfplumber.open(out / "searchable.pdf") as pdf:
        texts = [" ".join((p.extract_text() or "").lower().split()) for p in pdf.pages]
    assert len(texts) == 2
    assert "fax cover sheet" in texts[0] and "glargine" in texts[1]


def test_empty_page_is_a_valid_pdf():
    data = textlayer.build_text_layer([], [], 850, 1100, 100)
    doc = pdfium.PdfDocument(data)
    try:
        assert doc.get_page_size(0) == pytest.approx((612, 792), abs=0.01)
    finally:
        doc.close()
