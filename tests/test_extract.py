"""Tests for the text/OCR stage (SPEC 5.1) with the real tesseract program and real files.

Fixtures come from tests/files/make_fixtures.py (fabricated content). Each input is copied to a
temporary file whose name carries a marker, so the tests can prove that no message or log line
carries a file name.
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pdfplumber
import pytest

from jobs.extract import ocr, preprocess, tessapi, tesseract
from jobs.extract import pdf as pdfmod
from jobs.extract.results import ExtractResult
from jobs.extract.text import PAGE_SEPARATOR, extract_text
from jobs.identify import identify, validate
from pipeline.errors import CorruptFile, EncryptedPdf, ExitCode, ToolFailed, ToolMissing
from pipeline.settings import Settings

FILES = Path(__file__).resolve().parent / "files"
MARKER = "PATIENT-JANE-DOE"


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings()


@pytest.fixture
def tesseract_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every OCR start of tesseract (the pytesseract function called; version queries for
    the manifest left out) while still running the real program."""
    calls: list[str] = []
    real = tesseract.call

    def counting(function: Any, settings: Settings, **kw: Any):
        if function.__name__ != "get_tesseract_version":
            calls.append(function.__name__)
        return real(function, settings, **kw)

    monkeypatch.setattr(tesseract, "call", counting)
    return calls


def stage(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """Copy a fixture under a PHI-like name (read-only) and make an output folder."""
    src = tmp_path / f"{MARKER}-{name}"
    shutil.copyfile(FILES / name, src)
    src.chmod(0o444)
    out = tmp_path / "out"
    out.mkdir()
    return src, out


def run(tmp_path: Path, name: str, settings: Settings) -> tuple[ExtractResult, Path]:
    src, out = stage(tmp_path, name)
    kind = identify(src, settings)
    validate(src, kind, settings)
    before = src.read_bytes()
    result = extract_text(src, kind, out, settings)
    assert src.read_bytes() == before, "the original upload must never change"
    return result, out


def read_outputs(out: Path) -> tuple[str, list[dict[str, Any]]]:
    return (out / "text.txt").read_text(encoding="utf-8"), json.loads((out / "pages.json").read_text(encoding="utf-8"))


def folded(text: str) -> str:
    return " ".join(text.lower().split())


# ---------------------------------------------------------------------------------------------
# Digital PDFs
# ---------------------------------------------------------------------------------------------

def test_digital_pdf_uses_text_layer_and_never_tesseract(tmp_path, settings, tesseract_calls):
    result, out = run(tmp_path, "digital_referral.pdf", settings)
    text, pages = read_outputs(out)
    assert tesseract_calls == []
    assert [p.source for p in result.pages] == ["text-layer", "text-layer"]
    assert result.ocr_pages == 0 and result.searchable_pdf is False
    assert not (out / "searchable.pdf").exists()
    assert text.count(PAGE_SEPARATOR) == 1
    page1, page2 = text.split(PAGE_SEPARATOR)
    assert "Patient was started on metformin 500 mg by mouth" in page1
    assert "type 2 diabetes mellitus." in page1
    assert "No history of hypertension." in page1
    assert "Atorvastatin 20 mg PO once daily at night" in page2
    # Reading order: the letter's lines come in the order they were written.
    assert page1.index("Dear Dr. Sample") < page1.index("metformin") < page1.index("HbA1c")
    assert pages[0]["units"] == "pt" and pages[0]["width"] == 612 and pages[0]["height"] == 792
    assert pages[0]["dpi"] is None
    assert result.pages[0].width == 612.0 and result.pages[0].dpi is None


def test_pdfplumber_engine_gives_the_same_text(tmp_path, settings, tesseract_calls):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _, out_default = run(tmp_path / "a", "mixed_digital_scanned.pdf", settings)
    result, out_plumber = run(tmp_path / "b", "mixed_digital_scanned.pdf", settings.replace(text_engine="pdfplumber"))
    assert [p.source for p in result.pages] == ["text-layer", "ocr"]
    assert read_outputs(out_default)[0] == read_outputs(out_plumber)[0]
    words_default = [w["text"] for w in read_outputs(out_default)[1][0]["words"]]
    words_plumber = [w["text"] for w in read_outputs(out_plumber)[1][0]["words"]]
    assert words_default == words_plumber


def test_digital_pdf_works_without_tesseract_installed(tmp_path, settings):
    result, _ = run(tmp_path, "digital_referral.pdf", settings.replace(tesseract_cmd="/nonexistent/tesseract"))
    assert result.ocr_pages == 0
    assert result.tool_versions["tesseract"] == "missing"


def test_garbage_text_layer_is_not_usable():
    assert not pdfmod.is_usable_text("")
    assert not pdfmod.is_usable_text("  \n\t ")
    assert not pdfmod.is_usable_text("(cid:3)(cid:17)(cid:44)(cid:9) (cid:12)(cid:3)")
    assert not pdfmod.is_usable_text("\ufffd\ufffd\ufffd\ufffd ab")
    assert pdfmod.is_usable_text("Metformin 500 mg")


# ---------------------------------------------------------------------------------------------
# Scanned input
# ---------------------------------------------------------------------------------------------

def test_scanned_pdf_is_ocrd_and_searchable(tmp_path, settings, tesseract_calls):
    result, out = run(tmp_path, "scanned_discharge.pdf", settings)
    text, pages = read_outputs(out)
    assert [p.source for p in result.pages] == ["ocr"]
    assert len(tesseract_calls) >= 1
    t = folded(text)
    for word in ("metformin", "diabetes", "hypertension", "twice daily", "discharge summary"):
        assert word in t
    assert pages[0]["dpi"] == settings.ocr_dpi and pages[0]["units"] == "px"
    assert abs(pages[0]["skew"]) > 0.5  # the fixture is scanned 1.5 degrees off
    assert result.pages[0].mean_confidence and result.pages[0].mean_confidence > 70
    assert result.searchable_pdf and (out / "searchable.pdf").is_file()
    with pdfplumber.open(out / "searchable.pdf") as pdf:
        assert len(pdf.pages) == 1
        layer = folded(pdf.pages[0].extract_text())
        assert pdf.pages[0].images, "the page picture is kept"
        src_w, src_h = pdf.pages[0].width, pdf.pages[0].height
    assert "metformin" in layer and "diabetes" in layer
    with pdfplumber.open(FILES / "scanned_discharge.pdf") as orig:
        assert abs(orig.pages[0].width - src_w) < 3 and abs(orig.pages[0].height - src_h) < 3


def test_scan_with_a_stamped_page_number_is_still_ocrd(tmp_path, settings):
    result, out = run(tmp_path, "scanned_with_page_number.pdf", settings)
    assert [p.source for p in result.pages] == ["ocr"]
    assert "metformin" in folded(read_outputs(out)[0])


def test_mixed_pdf_ocrs_only_the_scanned_page(tmp_path, settings, tesseract_calls):
    result, out = run(tmp_path, "mixed_digital_scanned.pdf", settings)
    text, pages = read_outputs(out)
    assert [p.source for p in result.pages] == ["text-layer", "ocr"]
    assert tesseract_calls == ["run_tesseract"]  # one recognition (TSV + PDF layer) for the one scanned page
    page1, page2 = text.split(PAGE_SEPARATOR)
    assert "metformin 500 mg by mouth" in page1
    assert "metformin" in folded(page2)
    with pdfplumber.open(out / "searchable.pdf") as pdf:
        assert len(pdf.pages) == 2
        assert "Referral Letter" in pdf.pages[0].extract_text()
        assert "diabetes" in folded(pdf.pages[1].extract_text())


def test_phone_photo_with_exif_rotation_is_readable(tmp_path, settings):
    result, out = run(tmp_path, "phone_photo_exif6.jpg", settings)
    text, pages = read_outputs(out)
    t = folded(text)
    for word in ("prescription", "amoxicillin", "three times daily", "otitis media"):
        assert word in t
    assert result.pages[0].rotation == 90  # from the EXIF Orientation tag
    assert pages[0]["perspective_corrected"] is True
    assert result.searchable_pdf and (out / "searchable.pdf").is_file()


def test_png_screenshot(tmp_path, settings):
    result, out = run(tmp_path, "screenshot_labs.png", settings)
    text, pages = read_outputs(out)
    t = folded(text)
    for word in ("glucose", "creatinine", "8.1", "diabetes mellitus"):
        assert word in t
    # White text on the coloured header bar survives illumination normalisation, read once.
    assert t.count("results portal") == 1
    assert pages[0]["scale"] > 1.5  # small screen text is upscaled before OCR


def test_multipage_tiff_gives_one_page_per_frame(tmp_path, settings):
    result, out = run(tmp_path, "fax_two_pages.tiff", settings)
    text, _ = read_outputs(out)
    assert len(result.pages) == 2 and text.count(PAGE_SEPARATOR) == 1
    first, second = text.split(PAGE_SEPARATOR)
    assert "fax cover sheet" in folded(first) and "glargine" in folded(second)
    with pdfplumber.open(out / "searchable.pdf") as pdf:
        assert len(pdf.pages) == 2


def test_heic_and_lying_extension(tmp_path, settings):
    (tmp_path / "heic").mkdir()
    result, out = run(tmp_path / "heic", "insurance_card.heic", settings)
    assert result.pages[0].source == "ocr"
    assert "insurance card" in folded(read_outputs(out)[0])
    src, out2 = stage(tmp_path, "lying_extension.pdf")
    kind = identify(src, settings)
    assert kind.format == "JPEG"
    extract_text(src, kind, out2, settings)
    assert "lisinopril" in folded(read_outputs(out2)[0])


# ---------------------------------------------------------------------------------------------
# pages.json schema and offsets
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["mixed_digital_scanned.pdf", "fax_two_pages.tiff"])
def test_pages_json_schema_and_offsets(tmp_path, settings, name):
    result, out = run(tmp_path, name, settings)
    text, pages = read_outputs(out)
    page_texts = text.split(PAGE_SEPARATOR)
    assert len(pages) == len(page_texts) == len(result.pages)
    for i, (page, page_text) in enumerate(zip(pages, page_texts)):
        assert page["page_no"] == i + 1
        assert page["source"] in ("text-layer", "ocr", "empty")
        assert page["units"] == ("pt" if page["source"] == "text-layer" else "px")
        assert text[page["text_offset"]:page["text_offset"] + len(page_text)] == page_text
        assert page["rotation"] in (0, 90, 180, 270)
        assert page["words"] and page["lines"]
        for item in page["words"] + page["lines"]:
            assert set(item) >= {"text", "bbox", "confidence", "offset"}
            x0, y0, x1, y1 = item["bbox"]
            assert 0 <= x0 <= x1 <= page["width"] + 1 and 0 <= y0 <= y1 <= page["height"] + 1
            assert 0 <= item["confidence"] <= 100
            if item["offset"] is not None:
                start = page["text_offset"] + item["offset"]
                assert text[start:start + len(item["text"])] == item["text"]
        placed = [w for w in page["words"] if w["offset"] is not None]
        assert len(placed) >= 0.9 * len(page["words"])


# ---------------------------------------------------------------------------------------------
# Failures
# ---------------------------------------------------------------------------------------------

def test_tesseract_missing_raises_tool_missing(tmp_path, settings, monkeypatch):
    """No tesseract program: the library helper (same version as the program, which cannot be
    asked) is not used either, and the program's absence is the error."""
    tessapi.stop()
    tesseract._version_for.cache_clear()
    monkeypatch.setattr(tessapi, "_unusable_reason", None)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    src, out = stage(tmp_path, "scanned_discharge.pdf")
    with pytest.raises(ToolMissing) as err:
        extract_text(src, identify(src, settings), out, settings)
    assert err.value.exit_code == ExitCode.TOOL_MISSING
    assert MARKER not in str(err.value)
    assert sorted(p.name for p in out.iterdir()) == []  # no partial outputs
    tesseract._version_for.cache_clear()


def test_tesseract_timeout_raises_tool_failed(tmp_path, settings):
    src, out = stage(tmp_path, "scanned_discharge.pdf")
    with pytest.raises(ToolFailed) as err:
        extract_text(src, identify(src, settings), out, settings.replace(ocr_timeout=0.001))
    assert err.value.exit_code == ExitCode.TRANSIENT


def test_corrupt_pdf_raises_corrupt_file_without_phi(tmp_path, settings, caplog):
    caplog.set_level(logging.DEBUG)
    src, out = stage(tmp_path, "corrupt.pdf")
    with pytest.raises(CorruptFile) as err:
        extract_text(src, identify(src, settings), out, settings)
    assert err.value.exit_code == ExitCode.REJECTED_INPUT
    assert MARKER not in str(err.value) and str(tmp_path) not in str(err.value)
    assert MARKER not in caplog.text
    assert list(out.iterdir()) == []


def test_encrypted_pdf_raises_encrypted(tmp_path, settings):
    src, out = stage(tmp_path, "encrypted.pdf")
    with pytest.raises(EncryptedPdf):
        extract_text(src, identify(src, settings), out, settings)


def test_logs_carry_no_text_or_names(tmp_path, settings, caplog):
    caplog.set_level(logging.DEBUG)
    run(tmp_path, "mixed_digital_scanned.pdf", settings)
    assert MARKER not in caplog.text
    for word in ("metformin", "diabetes", "Jane"):
        assert word not in caplog.text


def test_rerun_replaces_outputs(tmp_path, settings):
    src, out = stage(tmp_path, "scanned_discharge.pdf")
    extract_text(src, identify(src, settings), out, settings)
    assert (out / "searchable.pdf").exists()
    digital = tmp_path / "d.pdf"
    shutil.copyfile(FILES / "digital_referral.pdf", digital)
    extract_text(digital, identify(digital, settings), out, settings)
    assert not (out / "searchable.pdf").exists()
    assert sorted(p.name for p in out.iterdir()) == ["pages.json", "text.txt"]


def test_result_metadata(tmp_path, settings):
    result, _ = run(tmp_path, "scanned_discharge.pdf", settings)
    assert result.language == "eng"
    assert set(result.tool_versions) >= {"tesseract", "pdfium", "pdfplumber"}
    assert result.tool_versions["tesseract"][0].isdigit()
    assert {"ocr", "preprocess", "render", "total"} <= set(result.timings)
    d = result.to_dict()
    assert d["ocr_pages"] == 1


# ---------------------------------------------------------------------------------------------
# Preprocessing guards
# ---------------------------------------------------------------------------------------------

def _page_image(lines: int = 12) -> np.ndarray:
    import cv2

    img = np.full((1400, 1000), 255, np.uint8)
    for i in range(lines):
        cv2.putText(img, f"Line {i} metformin 500 mg twice daily", (60, 100 + i * 90),
                    cv2.FONT_HERSHEY_SIMPLEX, 1.1, 0, 2)
    return img


def test_flat_scan_is_not_perspective_warped():
    img = _page_image()
    cv2 = pytest.importorskip("cv2")
    cv2.rectangle(img, (40, 60), (960, 1200), 0, 3)  # a table border must not be taken for the page
    warped, changed = preprocess.correct_perspective(img)
    assert changed is False and warped is img


def test_skew_is_measured_and_upright_pages_left_alone():
    import cv2

    img = _page_image()
    assert preprocess.estimate_skew(img) == 0.0
    m = cv2.getRotationMatrix2D((500, 700), 3.0, 1.0)
    tilted = cv2.warpAffine(img, m, (1000, 1400), borderValue=255)
    assert abs(preprocess.estimate_skew(tilted) + 3.0) < 0.4


def test_illumination_normalisation_keeps_white_pages_white():
    img = _page_image()
    out = preprocess.normalise_illumination(img)
    assert np.mean(np.abs(out.astype(int) - img.astype(int))) < 2.0


def test_bad_language_setting_is_a_config_error(settings):
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError):
        tesseract.check_languages("eng; rm -rf /")


# ---------------------------------------------------------------------------------------------
# Pages in parallel (opt-in: ``ocr_page_workers``; the runner reads it when Settings has it)
# ---------------------------------------------------------------------------------------------

def test_parallel_pages_give_the_same_outputs_in_page_order(tmp_path, settings):
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument.new()
    scanned = pdfium.PdfDocument(str(FILES / "scanned_discharge.pdf"))
    digital = pdfium.PdfDocument(str(FILES / "digital_referral.pdf"))
    for i in range(4):
        doc.import_pages(digital if i == 1 else scanned, [0])
    src = tmp_path / "four.pdf"
    doc.save(str(src))
    for d in (doc, scanned, digital):
        d.close()
    outs = []
    for name, st in (("serial", settings), ("parallel", settings.replace(ocr_page_workers=2))):
        out = tmp_path / name
        out.mkdir()
        result = extract_text(src, identify(src, st), out, st)
        assert [p.source for p in result.pages] == ["ocr", "text-layer", "ocr", "ocr"]
        outs.append(read_outputs(out))
        with pdfplumber.open(out / "searchable.pdf") as pdf:
            assert len(pdf.pages) == 4
    assert outs[0] == outs[1]


def test_huge_pdf_pages_are_rendered_within_the_pixel_limit():
    assert pdfmod.safe_dpi((612, 792), 300, 178_956_970) == 300
    dpi = pdfmod.safe_dpi((14400, 14400), 300, 178_956_970)  # a 200 x 200 inch page
    assert dpi < 300 and (200 * dpi) ** 2 <= 178_956_970


@pytest.mark.parametrize("turn", [90, 180, 270])
def test_sparse_rotated_page_is_turned_upright(settings, turn):
    """OSD gives up on a single line; the rotations are then tried and scored directly."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("L", (700, 200), 255)
    font = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", 48)
    ImageDraw.Draw(img).text((40, 60), "Metformin 500 mg", font=font, fill=0)
    page = ocr.ocr_image(img.rotate(turn, expand=True), settings, dpi=300, want_pdf=False)
    assert page.recognition.text == "Metformin 500 mg"
    assert page.rotation == turn and page.width > page.height


@pytest.mark.parametrize("fmt", ["WEBP", "GIF", "BMP"])
def test_other_image_formats(tmp_path, settings, fmt):
    from PIL import Image

    src = tmp_path / f"{MARKER}.img"
    with Image.open(FILES / "screenshot_labs.png") as img:
        img.convert("RGB").save(src, fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    kind = identify(src, settings)
    assert kind.format == fmt
    validate(src, kind, settings)
    out = tmp_path / "out"
    out.mkdir()
    result = extract_text(src, kind, out, settings)
    assert result.pages[0].source == "ocr" and result.searchable_pdf
    assert "creatinine" in folded(read_outputs(out)[0])
