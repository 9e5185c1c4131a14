"""Per-page language choice (ocr_languages=auto) with the real Tesseract and its language packs.

Pages are rendered here from the ground-truth paragraphs of bench/lang_texts.py with the fonts CI
installs (DejaVu Sans, WenQuanYi Micro Hei), with mild scan noise. Each accuracy assertion is
paired with the English-only reading of the same page, which must fail the same threshold, so the
test shows that the right traineddata was used and not only that some text came out.
"""
from __future__ import annotations

import pytest
from PIL import Image

from jobs.extract import languages as lang
from jobs.extract import tesseract
from jobs.extract.ocr import ocr_image
from conftest import load_bench_module
from pipeline.settings import Settings

lang_pages = load_bench_module("lang_pages")
lang_texts = load_bench_module("lang_texts")


def _cer(reference: str, hypothesis: str, no_spaces: bool) -> float:
    import numpy as np

    def fold(s: str) -> str:
        return "".join(s.split()) if no_spaces else " ".join(s.split())

    a, b = fold(reference), fold(hypothesis)
    prev = np.arange(len(b) + 1)
    for i, ch in enumerate(a, 1):
        cur = np.empty_like(prev)
        cur[0] = i
        for j, other in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ch != other))
        prev = cur
    return float(prev[-1]) / max(1, len(a))


def _page(code: str, sentences: int = 3) -> tuple[Image.Image, str]:
    text = lang_texts.TEXTS[code]
    sep = "。" if code in lang_pages.NO_SPACES else ". "
    parts = text.split(sep)[:sentences]
    short = sep.join(parts) + (sep.strip() if not parts[-1].endswith(sep.strip()) else "")
    return lang_pages.render_page(code, short, seed=3, width_px=1800)


@pytest.fixture
def calls(monkeypatch):
    """The pytesseract functions started, in order (the real calls still run)."""
    seen: list[str] = []
    real = tesseract.call

    def counting(function, settings, **kwargs):
        seen.append(function.__name__ + ":" + str(kwargs.get("lang", "")))
        return real(function, settings, **kwargs)

    monkeypatch.setattr(tesseract, "call", counting)
    return seen


def test_german_page_is_read_with_deu_without_pinning(calls):
    image, reference = _page("deu")
    page = ocr_image(image, Settings(), dpi=300, want_pdf=False)
    assert page.recognition.languages == "deu"
    assert not any(c.startswith("image_to_osd") for c in calls)  # a Latin page that reads well: no OSD
    english = ocr_image(image, Settings(ocr_languages="eng"), dpi=300, want_pdf=False)
    auto_cer = _cer(reference, page.recognition.text, False)
    eng_cer = _cer(reference, english.recognition.text, False)
    assert auto_cer <= 0.005 < eng_cer  # umlauts and sharp s: only deu reads them


def test_japanese_page_is_read_with_jpn_and_osd_runs_once(calls):
    image, reference = _page("jpn", 2)
    page = ocr_image(image, Settings(), dpi=300, want_pdf=False)
    assert page.recognition.languages == "jpn" and page.rotation == 0
    assert sum(c.startswith("image_to_osd") for c in calls) == 1
    assert _cer(reference, page.recognition.text, True) <= 0.03


def test_pinned_languages_are_honoured(calls):
    image, reference = _page("jpn", 2)
    page = ocr_image(image, Settings(ocr_languages="eng"), dpi=300, want_pdf=False)
    assert page.recognition.languages == "eng"
    assert all(c.endswith(":eng") or c.startswith("image_to_osd") for c in calls)
    assert _cer(reference, page.recognition.text, True) > 0.5  # what the wrong pin costs


def test_english_page_costs_one_call(calls):
    image, _ = _page("eng")
    page = ocr_image(image, Settings(), dpi=300, want_pdf=False)
    assert page.recognition.languages == "eng" and len(calls) == 1


def test_too_little_text_keeps_the_first_pass():
    image, _ = lang_pages.render_page("deu", "Größe 172 cm", seed=1, width_px=900)
    page = ocr_image(image, Settings(), dpi=300, want_pdf=False)
    assert page.recognition.languages == "eng"  # no function words to go on, OSD cannot tell
    assert "172" in page.recognition.text


def test_choice_rules():
    auto = Settings()
    assert lang.first_pass(auto) == "eng"
    assert lang.first_pass(Settings(ocr_auto_languages="chi_sim+deu+eng")) == "deu"
    assert lang.first_pass(Settings(ocr_languages="deu+eng")) == "deu+eng"
    assert lang.for_script("Han", auto) == "chi_sim+chi_tra"
    assert lang.for_script("Korean", auto) == "kor"
    assert lang.for_script("Cyrillic", auto) is None  # not listed: no pack to use
    assert lang.for_script("Han", Settings(ocr_languages="eng")) is None
    french = "Elle a été admise pour une douleur et le médecin a demandé des examens de la fonction du coeur."
    assert lang.latin_guess(french, "eng", auto) == "fra"
    assert lang.latin_guess(french, "eng", Settings(ocr_languages="eng")) is None
    assert lang.latin_guess(french, "jpn", auto) is None
    assert lang.latin_guess("The patient was seen and the pain was treated with rest.", "eng", auto) is None
    # An English receipt's labels ("Invoice No", "Tel No", an e-mail address) are not Portuguese.
    receipt = ("Invoice No: 8812 Tel No: 03-7845 Fax No: 03-7846 Member No: 1120 Table No: 4 "
               "Cheque No: 55 sales@shop.com Are prices in RM not returnable")
    assert lang.latin_guess(receipt, "eng", auto) is None
    portuguese = ("O paciente foi internado para uma dor no peito e a equipe da cardiologia fez os exames "
                  "que foram pedidos pelo médico com uma dose do remédio ao dia.")
    assert lang.latin_guess(portuguese, "eng", auto) == "por"


def test_traditional_chinese_page_gets_both_han_models():
    image, reference = _page("chi_tra", 2)
    page = ocr_image(image, Settings(), dpi=300, want_pdf=False)
    assert page.recognition.languages == "chi_sim+chi_tra"
    simplified_only = ocr_image(image, Settings(ocr_languages="chi_sim"), dpi=300, want_pdf=False)
    auto_cer = _cer(reference, page.recognition.text, True)
    assert auto_cer <= 0.05 < _cer(reference, simplified_only.recognition.text, True)
