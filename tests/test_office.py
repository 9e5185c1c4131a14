"""Letters as DOCX, ODT, RTF and plain text (issue 9): identified from bytes, text and entities out,
pages laid out like a text layer (source "text"), a page image for the renditions, and every
unreadable file REJECTED with its reason. The documents are written by the tests themselves
(python-docx, odfpy, RTF and text by hand); all names in them are fabricated.
"""
from __future__ import annotations

import codecs
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from compute.runtime import LocalRuntime
from conftest import read_notices
from jobs import office
from jobs.convert.renditions import make_renditions
from jobs.extract.text import PAGE_SEPARATOR, extract_text
from jobs.identify import identify, validate
from pipeline import repository
from pipeline.errors import CorruptFile, DecompressionBomb, UnsupportedType
from pipeline.settings import Settings

LETTER = [
    "Northfield Family Practice",
    "Re: Jane Example, DOB 01/02/1960",
    "Dear Dr. Sample,",
    "Patient was started on metformin 500 mg twice daily for type 2 diabetes mellitus.",
    "No history of hypertension. Denies chest pain.",
    "Kind regards, Dr. Placeholder",
]


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings()


def make_docx(path: Path) -> Path:
    import docx

    document = docx.Document()
    document.sections[0].header.paragraphs[0].text = "Northfield Family Practice letterhead"
    document.add_heading(LETTER[0], level=1)
    for line in LETTER[1:4]:
        document.add_paragraph(line)
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "Medication", "Dose"
    table.cell(1, 0).text, table.cell(1, 1).text = "Atorvastatin", "20 mg at night"
    for line in LETTER[4:]:
        document.add_paragraph(line)
    document.core_properties.author = "Author Placeholder"
    document.save(str(path))
    return path


def make_odt(path: Path) -> Path:
    from odf.opendocument import OpenDocumentText
    from odf.table import Table, TableCell, TableColumn, TableRow
    from odf.text import H, P

    document = OpenDocumentText()
    document.text.addElement(H(outlinelevel=1, text=LETTER[0]))
    for line in LETTER[1:4]:
        document.text.addElement(P(text=line))
    table = Table(name="Medications")
    table.addElement(TableColumn(numbercolumnsrepeated=2))
    for cells in (("Medication", "Dose"), ("Atorvastatin", "20 mg at night")):
        row = TableRow()
        for value in cells:
            cell = TableCell()
            cell.addElement(P(text=value))
            row.addElement(cell)
        table.addElement(row)
    document.text.addElement(table)
    for line in LETTER[4:]:
        document.text.addElement(P(text=line))
    document.save(str(path))
    return path


def make_rtf(path: Path) -> Path:
    body = "\\par\n".join(line.replace("\\", "\\\\").replace("{", "\\{").replace("}", "\\}") for line in LETTER)
    path.write_text("{\\rtf1\\ansi\\ansicpg1252\\deff0{\\fonttbl{\\f0\\fswiss Helvetica;}}\\f0\\fs22 "
                    + body + "\\par\nCaf\\'e9 \\'b5g dose noted.\\par\n}", encoding="ascii")
    return path


def folded(text: str) -> str:
    return " ".join(text.lower().split())


def stage(path: Path, settings: Settings, tmp_path: Path) -> tuple[str, list[dict]]:
    kind = identify(path, settings)
    assert kind.kind == "document"
    validate(path, kind, settings)
    out = tmp_path / f"out-{path.name}"
    out.mkdir()
    extract_text(path, kind, out, settings)
    return (out / "text.txt").read_text(encoding="utf-8"), json.loads((out / "pages.json").read_text())


# ---------------------------------------------------------------------------------------------
# Identification from bytes
# ---------------------------------------------------------------------------------------------

def test_formats_are_identified_from_bytes_not_names(tmp_path, settings):
    files = {
        "DOCX": make_docx(tmp_path / "a.pdf"),
        "ODT": make_odt(tmp_path / "b.jpg"),
        "RTF": make_rtf(tmp_path / "c.docx"),
    }
    (tmp_path / "d.bin").write_text("\n".join(LETTER), encoding="utf-8")
    files["TXT"] = tmp_path / "d.bin"
    for fmt, path in files.items():
        kind = identify(path, settings)
        assert (kind.kind, kind.format) == ("document", fmt)


@pytest.mark.parametrize("data", [
    bytes(np.random.default_rng(7).integers(0, 256, 5000, dtype=np.uint8)),  # random binary
    b"\x00\x01\x02 some text with NUL bytes \x00",
    b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(600),  # OLE: legacy .doc or encrypted Office
    b"text\x1b[31m" + b"\x01\x02\x03\x04\x05\x06" * 40,  # mostly control characters
])
def test_binary_files_are_not_called_text(data, tmp_path, settings):
    path = tmp_path / "blob.txt"
    path.write_bytes(data)
    with pytest.raises(UnsupportedType):
        identify(path, settings)


def test_other_zip_is_unsupported_and_damaged_docx_is_corrupt(tmp_path, settings):
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(UnsupportedType) as err:
        identify(other, settings)
    assert "ZIP" in err.value.message
    good = make_docx(tmp_path / "good.docx").read_bytes()
    cut = tmp_path / "cut.docx"
    cut.write_bytes(good[: len(good) // 2])
    with pytest.raises(CorruptFile):
        validate(cut, identify(cut, settings), settings)
    # A valid ZIP that names word/document.xml but holds no XML in it.
    broken = tmp_path / "broken.docx"
    with zipfile.ZipFile(broken, "w") as zf:
        zf.writestr("[Content_Types].xml", "<Types")
        zf.writestr("word/document.xml", "not xml")
    kind = identify(broken, settings)
    with pytest.raises(CorruptFile) as err:
        validate(broken, kind, settings)
    assert err.value.reason_code == "corrupt_file"


def test_zip_bomb_is_refused(tmp_path, settings, monkeypatch):
    monkeypatch.setattr(office, "MAX_EXPANDED_BYTES", 100_000)
    bomb = tmp_path / "bomb.docx"
    good = make_docx(tmp_path / "g.docx")
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            dst.writestr(item, src.read(item))
        dst.writestr("word/media/zeros.bin", bytes(200_000))
    with pytest.raises(DecompressionBomb):
        validate(bomb, identify(bomb, settings), settings)


# ---------------------------------------------------------------------------------------------
# Text, encodings, pages
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-16-be", "cp1252", "latin-1"])
def test_plain_text_encodings(encoding, tmp_path, settings):
    bom = codecs.BOM_UTF16_BE if encoding == "utf-16-be" else b""
    content = "\r\n".join(LETTER + ["Café, naïve, 37.5 °C"])
    path = tmp_path / "letter.txt"
    path.write_bytes(bom + content.encode(encoding))
    text, pages = stage(path, settings, tmp_path)
    assert text == "\n".join(LETTER + ["Café, naïve, 37.5 °C"])
    assert pages[0]["source"] == "text"


def test_docx_odt_rtf_text_in_document_order(tmp_path, settings):
    docx_text, _ = stage(make_docx(tmp_path / "l.docx"), settings, tmp_path)
    odt_text, _ = stage(make_odt(tmp_path / "l.odt"), settings, tmp_path)
    rtf_text, _ = stage(make_rtf(tmp_path / "l.rtf"), settings, tmp_path)
    for text in (docx_text, odt_text, rtf_text):
        for line in LETTER:
            assert line in text
        assert text.index(LETTER[3]) < text.index(LETTER[4])
    for text in (docx_text, odt_text):
        assert "Atorvastatin\t20 mg at night" in text
        assert text.index(LETTER[3]) < text.index("Atorvastatin") < text.index(LETTER[4])
    assert docx_text.startswith("Northfield Family Practice letterhead")
    assert "Author Placeholder" not in docx_text  # document properties are not content
    assert "Café µg dose noted." in rtf_text


def test_long_text_is_paged_without_changing_a_character(tmp_path, settings):
    rng = np.random.default_rng(5)
    words = ["metformin", "500", "mg", "twice", "daily", "patient", "reviewed", "blood", "pressure",
             "a-very-long-hyphenated-word-that-keeps-going-and-going-past-the-margin-of-the-page-" * 2]
    paragraphs = [" ".join(rng.choice(words, size=int(rng.integers(1, 90)))) for _ in range(120)]
    original = "\n".join(paragraphs)
    path = tmp_path / "long.txt"
    path.write_text(original, encoding="utf-8")
    text, pages = stage(path, settings, tmp_path)
    assert len(pages) > 2
    pos = 0  # each page is the next slice of the original; a space or newline between becomes "\f"
    for page_text in text.split(PAGE_SEPARATOR):
        assert original.startswith(page_text, pos)
        pos += len(page_text)
        if pos < len(original) and original[pos] in " \n":
            pos += 1
    assert pos == len(original)
    for page in pages:
        assert page["units"] == "pt" and page["source"] == "text"
        for item in page["words"] + page["lines"]:
            x0, y0, x1, y1 = item["bbox"]
            assert 0 <= x0 <= x1 <= page["width"] and 0 <= y0 <= y1 <= page["height"]
            start = page["text_offset"] + item["offset"]
            assert text[start:start + len(item["text"])] == item["text"]
        assert page["words"]


def test_empty_document_gives_an_empty_page(tmp_path, settings):
    import docx

    path = tmp_path / "empty.docx"
    docx.Document().save(str(path))
    text, pages = stage(path, settings, tmp_path)
    assert text == "" and len(pages) == 1 and pages[0]["words"] == []


def test_page_image_for_the_renditions(tmp_path, settings):
    path = make_odt(tmp_path / "letter.odt")
    out = tmp_path / "r"
    results = {r.name: r for r in make_renditions(path, identify(path, settings), out, settings)}
    assert results["thumbnail"].height == 256 and results["thumbnail"].width < 256  # portrait page
    from PIL import Image

    with Image.open(out / "renditions" / "web.jpg") as img:
        pixels = np.asarray(img.convert("L"))
    assert pixels.min() < 60 and np.median(pixels) == 255  # black text on a white page


# ---------------------------------------------------------------------------------------------
# End to end: text and entities out of each letter
# ---------------------------------------------------------------------------------------------

def test_letters_end_to_end_with_entities(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    make_docx(inputs / "letter.docx")
    make_odt(inputs / "letter.odt")
    make_rtf(inputs / "letter.rtf")
    (inputs / "letter.txt").write_bytes(codecs.BOM_UTF8 + "\n".join(LETTER).encode("utf-8"))
    settings = Settings.load(data_dir=tmp_path / "data", workers=2)
    with LocalRuntime(settings) as runtime:
        ids = {p.suffix: runtime.submit(p).document_id for p in sorted(inputs.iterdir())}
        runtime.run_until_final(list(ids.values()), max_seconds=600)
        for suffix, doc_id in ids.items():
            doc = repository.get_document(settings, doc_id)
            assert doc.status == "COMPLETED", suffix
            assert doc.file_format == suffix[1:].upper()
            outputs = runtime.outputs(doc_id)
            text = Path(outputs["text"]).read_text(encoding="utf-8")
            assert "metformin 500 mg twice daily" in folded(text)
            entities = json.loads(Path(outputs["entities"]).read_text())["Entities"]
            meds = [e for e in entities if e["Category"] == "MEDICATION" and e["Text"].lower() == "metformin"]
            assert meds, suffix
            assert text[meds[0]["BeginOffset"]:meds[0]["EndOffset"]].lower() == "metformin"
            assert any(e["Category"] == "MEDICAL_CONDITION" and "diabetes" in e["Text"].lower() for e in entities)
            assert {"renditions/thumbnail", "renditions/preview", "pages"} <= set(outputs)
            assert "searchable_pdf" not in outputs
    assert {n["status"] for n in read_notices(settings)} == {"COMPLETED"}


def test_macro_enabled_docm_is_read_from_its_xml(tmp_path, settings):
    """python-docx opens only the .docx content type; a .docm's text comes from word/document.xml."""
    docx_path = make_docx(tmp_path / "letter.docx")
    docm = tmp_path / "letter.docm"
    with zipfile.ZipFile(docx_path) as src, zipfile.ZipFile(docm, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "[Content_Types].xml":
                data = data.replace(b"wordprocessingml.document.main+xml", b"ms-word.document.macroEnabled.main+xml")
            dst.writestr(item, data)
    text, _ = stage(docm, settings, tmp_path)
    assert LETTER[3] in text and "Atorvastatin\t20 mg at night" in text


def test_postscript_is_not_a_text_letter(tmp_path, settings):
    path = tmp_path / "page.ps"
    path.write_text("%!PS-Adobe-3.0\n/Helvetica findfont 12 scalefont setfont\n72 720 moveto (Hello) show\nshowpage\n")
    with pytest.raises(UnsupportedType) as err:
        identify(path, settings)
    assert "PostScript" in err.value.message


@pytest.mark.parametrize("data", [b"P1\n# a comment\n4 2\n0 1 0 1\n1 0 1 0\n", b"P3 2 1 255 255 0 0 0 255 0\n",
                                  b"#define dot_width 8\n#define dot_height 1\nstatic char dot_bits[] = {0x01};\n",
                                  b"/* XPM */\nstatic char *dot[] = {\"1 1 1 1\", \"a c #000000\", \"a\"};\n"])
def test_images_written_as_text_are_not_letters(data, tmp_path, settings):
    path = tmp_path / "image.txt"
    path.write_bytes(data)
    with pytest.raises(UnsupportedType) as err:
        identify(path, settings)
    assert "stored as text" in err.value.message


def test_a_letter_starting_like_a_code_is_still_text(tmp_path, settings):
    path = tmp_path / "letter.txt"
    path.write_text("P1 results are normal.\nPatient was started on metformin 500 mg twice daily.\n")
    assert identify(path, settings).format == "TXT"


def test_medintake_process_takes_a_docx_and_a_binary_blob(tmp_path):
    """The `medintake process` path: a letter completes, an unknown binary is rejected with its reason."""
    from click.testing import CliRunner

    import cli

    inbox = tmp_path / "in"
    inbox.mkdir()
    make_docx(inbox / "a-letter.docx")
    (inbox / "b-blob.txt").write_bytes(bytes(np.random.default_rng(3).integers(0, 256, 4000, dtype=np.uint8)))
    result = CliRunner().invoke(cli.main, ["--data-dir", str(tmp_path / "d"), "process", "--json", str(inbox)])
    rows = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    assert [(r["status"], r["reason_code"]) for r in rows] == [("COMPLETED", None), ("REJECTED", "unsupported_type")]


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16"])
def test_long_text_whose_sniffed_head_ends_inside_a_character(encoding, tmp_path, settings):
    line = "Metformin 500 mg twice daily \U0001F48A é\n"  # a surrogate pair in UTF-16, 4 bytes in UTF-8
    path = tmp_path / "long.txt"
    data = (line * 4000).encode(encoding)
    for shift in range(4):  # put the 64 KiB cut at each position within a character
        path.write_bytes(data[:2] + b" " * (shift * 2 if encoding == "utf-16" else shift) + data[2:]
                         if encoding == "utf-16" else b" " * shift + data)
        assert identify(path, settings).format == "TXT", shift
