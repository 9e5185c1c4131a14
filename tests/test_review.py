"""The review page (`medintake show`), opened in a real browser: headless Chromium via Playwright.

Three documents are processed once for the module: a scanned letter (named like a patient's file,
"Jane Doe discharge.pdf"), a sideways phone photo and a 30-page PDF (page 1 scanned, the rest
born-digital, one of them with /Rotate 90). In Chromium the tests check that word boxes sit where
pages.json puts them (DOM rectangles against the JSON after scaling, and ink under the boxes in a
screenshot), that every highlight covers exactly text[begin:end] of text.txt, that details show on
hover and on keyboard focus, that colours pass WCAG AA, that pages load lazily, and that the page
makes no request but its own file. Also: 0600, a clear error for an unknown id, and no file name
in any log line.

Chromium is Debian's package (.ci/test-packages.txt), never a Playwright download.
"""
from __future__ import annotations

import json
import os
import shutil
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import FILES, REPO

import cli
from pipeline.review import spans as spanmod

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
PATIENT_NAME = "Jane Doe"
TOLERANCE_PX = 1.5

needs_browser = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                   reason="chromium not installed (.ci/test-packages.txt lists it)")


# ---------------------------------------------------------------------------------------------
# Fixtures: three documents processed once, one browser for the module
# ---------------------------------------------------------------------------------------------

def make_thirty_page_pdf(dest: Path) -> Path:
    """Page 1 the scanned letter (OCR), pages 2-30 the born-digital referral; page 5 has /Rotate 90."""
    import pypdfium2 as pdfium

    out = pdfium.PdfDocument.new()
    scanned = pdfium.PdfDocument(str(FILES / "scanned_discharge.pdf"))
    digital = pdfium.PdfDocument(str(FILES / "digital_referral.pdf"))
    try:
        out.import_pages(scanned, [0])
        for i in range(29):
            out.import_pages(digital, [i % 2])
        page = out[4]
        page.set_rotation(90)
        page.close()
        out.save(str(dest))
    finally:
        for doc in (out, scanned, digital):
            doc.close()
    return dest


def run_cli(*args: str, shape: str = "per_document") -> subprocess.CompletedProcess:
    """The command in its own interpreter, so its real stderr (log lines) is captured."""
    return subprocess.run([sys.executable, "-c", "import cli; cli.main()", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600, check=False,
                          # The per-stage job shape by default (three jobs a document); the array
                          # shape's page is tested on its own documents below.
                          env={**{k: v for k, v in os.environ.items() if not k.startswith("MEDINTAKE_")},
                               "MEDINTAKE_JOB_SHAPE": shape})


@pytest.fixture(scope="module")
def processed(tmp_path_factory):
    """{'letter'|'photo'|'thirty': document id}, the data dir and the process command's stderr."""
    root = tmp_path_factory.mktemp("review")
    inbox = root / "in"
    inbox.mkdir()
    letter = inbox / f"{PATIENT_NAME} discharge.pdf"
    shutil.copyfile(FILES / "scanned_discharge.pdf", letter)
    photo = inbox / "phone_photo_exif6.jpg"
    shutil.copyfile(FILES / "phone_photo_exif6.jpg", photo)
    thirty = make_thirty_page_pdf(inbox / "thirty_pages.pdf")
    empty = inbox / "empty.pdf"
    shutil.copyfile(FILES / "empty.pdf", empty)
    data = root / "data"
    result = run_cli("--data-dir", str(data), "-v", "process", "--json", "--workers", "2",
                     str(letter), str(photo), str(thirty), str(empty))
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["status"] for r in rows] == ["COMPLETED"] * 3 + ["REJECTED"], result.stderr[-2000:]
    ids = dict(zip(("letter", "photo", "thirty", "rejected"), (r["document_id"] for r in rows)))
    return {"ids": ids, "data": data, "process_stderr": result.stderr}


def results(processed, name: str) -> Path:
    return processed["data"] / "buckets" / "uploads" / "results" / processed["ids"][name]


@pytest.fixture(scope="module")
def shown(processed):
    """The review page of each document, written by `medintake show -v` (stdout, stderr kept)."""
    out = {}
    for name, doc_id in processed["ids"].items():
        started = time.perf_counter()
        result = run_cli("--data-dir", str(processed["data"]), "-v", "show", doc_id)
        assert result.returncode == 0, result.stderr[-2000:]
        out[name] = {"path": Path(result.stdout.strip()), "stderr": result.stderr,
                     "seconds": time.perf_counter() - started}
    return out


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not os.path.exists(CHROMIUM):
        pytest.skip("chromium not installed (.ci/test-packages.txt lists it)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Opened:
    """A review page open in Chromium, with every request and every console error it made."""

    def __init__(self, browser, path: Path) -> None:
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.url = path.as_uri()
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.goto(self.url, wait_until="load")

    def fill(self, page_no: int) -> dict:
        """Scroll page ``page_no`` into view, wait for its picture and boxes; their DOM geometry."""
        frame = self.page.locator(f'.frame[data-page="{page_no}"]')
        frame.scroll_into_view_if_needed()
        self.page.wait_for_function(
            "n => { const f = document.querySelector(`.frame[data-page=\"${n}\"]`);"
            " const img = f.querySelector('img'); return f.dataset.ready === '2' && (!img || img.complete); }",
            arg=page_no)
        return frame.evaluate(
            """f => {
                 const r = f.getBoundingClientRect(), img = f.querySelector('img');
                 const ir = img ? img.getBoundingClientRect() : null;
                 return {frame: [r.x, r.y, r.width, r.height],
                         img: ir ? [ir.x, ir.y, ir.width, ir.height, img.naturalWidth] : null,
                         boxes: [...f.querySelectorAll('.box')].map(b => {
                           const q = b.getBoundingClientRect(); return [+b.dataset.i, q.x, q.y, q.width, q.height]; })};
               }""")

    def close(self) -> None:
        self.page.close()


@pytest.fixture
def opened(browser):
    pages: list[Opened] = []

    def open_(path: Path) -> Opened:
        pages.append(Opened(browser, path))
        return pages[-1]

    yield open_
    for p in pages:
        p.close()


# ---------------------------------------------------------------------------------------------
# Helpers checked against the JSON outputs
# ---------------------------------------------------------------------------------------------

def upright(page: dict) -> dict:
    """pages.json's page as shown: a text-layer page's boxes are in the unrotated crop box, and the
    page is shown turned by its /Rotate (clockwise), as a PDF viewer shows it."""
    turn = page["rotation"] % 360 if page["source"] == "text-layer" else 0
    if not turn:
        return page
    w, h = page["width"], page["height"]
    words = []
    for word in page["words"]:
        x0, y0, x1, y1 = word["bbox"]
        corners = [(x0, y0), (x1, y1)]
        for _ in range(turn // 90):  # a quarter turn clockwise maps (x, y) to (h - y, x)
            corners = [(h - y, x) for x, y in corners]
            w, h = h, w
        w, h = page["width"], page["height"]
        (a, b), (c, d) = corners
        words.append({**word, "bbox": [min(a, c), min(b, d), max(a, c), max(b, d)]})
    size = (h, w) if turn in (90, 270) else (w, h)
    return {**page, "width": size[0], "height": size[1], "words": words}


def assert_boxes_match(geometry: dict, page: dict) -> int:
    """Every word of pages.json has a box where its bbox says, after scaling to the frame."""
    page = upright(page)
    fx, fy, fw, fh = geometry["frame"]
    sx, sy = fw / page["width"], fh / page["height"]
    assert abs(sx - sy) < 0.01 * sx, "the frame keeps the page's aspect ratio"
    if geometry["img"] is not None:
        ix, iy, iw, ih, natural = geometry["img"]
        assert natural > 0, "the picture decoded"
        assert max(abs(ix - fx), abs(iy - fy), abs(iw - fw), abs(ih - fh)) <= 1, "the picture fills the frame"
    words = {i: w for i, w in enumerate(page["words"]) if w.get("bbox")}
    boxes = {b[0]: b[1:] for b in geometry["boxes"]}
    assert set(boxes) == set(words)
    for i, (x, y, w, h) in boxes.items():
        x0, y0, x1, y1 = words[i]["bbox"]
        expected = (fx + x0 * sx, fy + y0 * sy, fx + x1 * sx, fy + y1 * sy)
        got = (x, y, x + w, y + h)
        assert max(abs(a - b) for a, b in zip(got, expected)) <= TOLERANCE_PX, (i, words[i]["text"], got, expected)
    return len(boxes)


def assert_ink_under_boxes(opened_page: Opened, page_no: int, geometry: dict, page: dict) -> None:
    """The picture and the boxes agree: with boxes hidden, the boxed areas hold the ink."""
    import io

    from PIL import Image

    page = upright(page)
    page_ = opened_page.page
    page_.uncheck("#boxes-toggle")
    page_.evaluate("document.querySelector('.toolbar').style.position = 'static'")  # not over the frame
    try:
        assert page_.locator(f'.frame[data-page="{page_no}"] .boxes').is_hidden()
        shot = Image.open(io.BytesIO(page_.locator(f'.frame[data-page="{page_no}"]').screenshot())).convert("L")
    finally:
        page_.evaluate("document.querySelector('.toolbar').style.position = ''")
        page_.check("#boxes-toggle")
    sx, sy = shot.width / page["width"], shot.height / page["height"]
    inside = bytearray(shot.width * shot.height)
    for w in page["words"]:
        x0, y0, x1, y1 = w["bbox"]
        for y in range(max(0, int(y0 * sy)), min(shot.height, int(y1 * sy) + 1)):
            row = y * shot.width
            lo, hi = row + max(0, int(x0 * sx)), row + min(shot.width, int(x1 * sx) + 1)
            inside[lo:hi] = b"\x01" * max(0, hi - lo)
    ink_in = ink_out = n_in = n_out = 0
    for flag, value in zip(inside, shot.tobytes()):
        if flag:
            n_in += 1
            ink_in += 255 - value
        else:
            n_out += 1
            ink_out += 255 - value
    mean_in, mean_out = ink_in / max(n_in, 1), ink_out / max(n_out, 1)
    assert mean_in > 20 and mean_in > 4 * mean_out, (mean_in, mean_out)  # ink is where the boxes are


def assert_highlights_cover_offsets(opened_page: Opened, text: str, entities: dict) -> list[dict]:
    marks = opened_page.page.eval_on_selector_all(
        "mark.ent", "ms => ms.map(m => ({id: m.id, b: +m.dataset.begin, e: +m.dataset.end, text: m.textContent,"
                    " cls: m.className}))")
    for m in marks:
        assert m["text"] == text[m["b"]:m["e"]], m
    by_id = {m["id"]: m for m in marks}
    for ent in entities["Entities"]:
        m = by_id[f"m-{ent['Id']}"]
        assert (m["b"], m["e"]) == (ent["BeginOffset"], ent["EndOffset"])
        assert ("neg" in m["cls"].split()) == any(t["Name"] == "NEGATION" for t in ent["Traits"])
    return marks


def assert_no_network(opened_page: Opened) -> None:
    assert opened_page.requests, "the page load itself is seen"
    for url in opened_page.requests:
        assert url == opened_page.url or url.startswith("data:"), url
    assert opened_page.errors == []


def _luminance(rgb: tuple[float, ...]) -> float:
    def channel(c: float) -> float:
        c /= 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in rgb[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(fg: str, bg: str) -> float:
    parse = lambda s: tuple(float(v) for v in s[s.index("(") + 1:s.index(")")].split(",")[:3])
    a, b = sorted((_luminance(parse(fg)), _luminance(parse(bg))), reverse=True)
    return (a + 0.05) / (b + 0.05)


def load(processed, name: str) -> tuple[str, list, dict, dict]:
    base = results(processed, name)
    return ((base / "text.txt").read_text(encoding="utf-8"), json.loads((base / "pages.json").read_text()),
            json.loads((base / "entities.json").read_text()), json.loads((base / "manifest.json").read_text()))


# ---------------------------------------------------------------------------------------------
# In the browser
# ---------------------------------------------------------------------------------------------

@needs_browser
def test_scanned_letter_boxes_highlights_and_no_network(processed, shown, opened):
    text, pages, entities, _ = load(processed, "letter")
    view = opened(shown["letter"]["path"])
    geometry = view.fill(1)
    assert assert_boxes_match(geometry, pages[0]) == len(pages[0]["words"]) > 20
    assert_ink_under_boxes(view, 1, geometry, pages[0])
    marks = assert_highlights_cover_offsets(view, text, entities)
    assert {m["text"] for m in marks} >= {"metformin", "500 mg", "hypertension"}
    tinted = view.page.eval_on_selector_all(".frame .box", "bs => bs.filter(b => /\\bon-/.test(b.className))"
                                                          ".map(b => [+b.dataset.i, b.className])")
    words = pages[0]["words"]
    expected = {}
    for ent in entities["Entities"]:  # words overlapping an entity are tinted with its category
        for i, w in enumerate(words):
            if w["offset"] < ent["EndOffset"] and ent["BeginOffset"] < w["offset"] + len(w["text"]):
                expected.setdefault(i, ent["Category"].lower().replace("_", "-"))
    assert {i: c.split("on-")[1] for i, c in tinted} == expected
    assert_no_network(view)


@needs_browser
def test_phone_photo_boxes_sit_on_the_corrected_image(processed, shown, opened):
    """The photo was turned (EXIF 6) and perspective-corrected: the boxes follow what OCR read."""
    text, pages, entities, _ = load(processed, "photo")
    assert pages[0]["rotation"] == 90
    view = opened(shown["photo"]["path"])
    geometry = view.fill(1)
    assert assert_boxes_match(geometry, pages[0]) > 10
    assert_ink_under_boxes(view, 1, geometry, pages[0])
    assert_highlights_cover_offsets(view, text, entities)
    assert_no_network(view)


@needs_browser
def test_thirty_pages_load_lazily_and_line_up(processed, shown, opened):
    text, pages, entities, _ = load(processed, "thirty")
    assert len(pages) == 30 and pages[0]["source"] == "ocr" and pages[4]["source"] == "text-layer"
    view = opened(shown["thirty"]["path"])
    assert view.page.locator("section.page").count() == 30
    assert view.page.locator(".frame img").count() < 30, "far pages wait in their <template>"
    assert view.page.locator('.frame[data-page="30"]').get_attribute("data-ready") is None
    for page_no in (1, 2, 5, 30):  # OCR, text layer, text layer with /Rotate 90, the last
        geometry = view.fill(page_no)
        assert assert_boxes_match(geometry, pages[page_no - 1]) > 10, page_no
    assert_ink_under_boxes(view, 2, view.fill(2), pages[1])
    assert_ink_under_boxes(view, 5, view.fill(5), pages[4])
    marks = assert_highlights_cover_offsets(view, text, entities)
    assert {text.count("\f", 0, m["b"]) for m in marks} > {0, 29}, "highlights on the pages they belong to"
    assert_no_network(view)


@needs_browser
def test_details_show_on_hover_and_on_keyboard_focus(processed, shown, opened):
    _, _, entities, _ = load(processed, "letter")
    negated = [e for e in entities["Entities"] if any(t["Name"] == "NEGATION" for t in e["Traits"])]
    assert negated, "the letter says 'No history of hypertension'"
    view = opened(shown["letter"]["path"])
    tip = "el => { const s = getComputedStyle(el, '::after'); return [s.display, s.content]; }"
    first = view.page.locator("mark.ent").first
    assert first.evaluate(tip)[0] == "none"
    for _ in range(60):  # keyboard only: Tab until a highlight has the focus
        view.page.keyboard.press("Tab")
        if view.page.evaluate("document.activeElement.matches('mark.ent')"):
            break
    else:
        pytest.fail("no highlight reachable with Tab")
    active = view.page.evaluate_handle("document.activeElement")
    display, content = active.evaluate(tip)
    assert display == "block" and "score" in content
    described = active.evaluate("el => document.getElementById(el.getAttribute('aria-describedby')).textContent")
    assert active.evaluate("el => el.textContent") in described
    mark = view.page.locator(f"#m-{negated[0]['Id']}")
    mark.hover()
    display, content = mark.evaluate(tip)
    assert display == "block" and "NEGATED" in content and negated[0]["Type"] in content
    row = view.page.locator(f"#e-{negated[0]['Id']}")
    assert "Negated: stated as absent" in row.inner_text()
    medication = next(e for e in entities["Entities"] if e["Category"] == "MEDICATION")
    row = view.page.locator(f"#e-{medication['Id']}").inner_text()
    for attr in medication["Attributes"]:
        assert attr["Text"] in row  # dose, route, frequency on the medication's row
    icd = results(processed, "letter") / "icd10cm.json"
    if icd.exists():  # ICD-10-CM codes (InferICD10CM shape) shown on the condition with the same offsets
        coded = [c for c in json.loads(icd.read_text())["Entities"] if c.get("ICD10CMConcepts")]
        assert coded
        for c in coded:
            ent = next(e for e in entities["Entities"]
                       if (e["BeginOffset"], e["EndOffset"]) == (c["BeginOffset"], c["EndOffset"]))
            code = c["ICD10CMConcepts"][0]["Code"]
            assert code in view.page.locator(f"#e-{ent['Id']}").inner_text()
            assert code in view.page.locator(f"#m-{ent['Id']}").get_attribute("data-tip")


@needs_browser
def test_colours_pass_wcag_aa(processed, shown, opened):
    view = opened(shown["letter"]["path"])
    pairs = view.page.evaluate(
        """() => {
             const out = [];
             const bgOf = el => { for (; el; el = el.parentElement) { const c = getComputedStyle(el).backgroundColor;
                                    if (c !== 'rgba(0, 0, 0, 0)' && c !== 'transparent') return c; } return 'rgb(255, 255, 255)'; };
             for (const el of document.querySelectorAll('mark.ent, .chip, a, td, th, dt, dd, .meta, .text, .phi, .st, .neg-label, h1, h2, h3'))
               out.push([el.tagName + '.' + el.className, getComputedStyle(el).color, bgOf(el)]);
             const m = document.querySelector('mark.ent');
             const after = getComputedStyle(m, '::after');
             out.push(['tooltip', after.color, after.backgroundColor]);
             return out;
           }""")
    assert len(pairs) > 30
    low = [(name, round(contrast(fg, bg), 2)) for name, fg, bg in pairs if contrast(fg, bg) < 4.5]
    assert low == []


@needs_browser
def test_sections_show_renditions_manifest_and_job_timeline(processed, shown, opened):
    _, _, _, manifest = load(processed, "letter")
    view = opened(shown["letter"]["path"])
    renditions = view.page.locator("#renditions img")
    assert renditions.count() >= 3
    assert all(renditions.nth(i).evaluate("img => img.complete && img.naturalWidth > 0")
               for i in range(renditions.count()))
    manifest_text = view.page.locator("#manifest").inner_text()
    for tool, version in manifest["tool_versions"].items():
        assert tool in manifest_text and version in manifest_text
    timeline = view.page.locator("#timeline").inner_text()
    assert "Attempt 1" in timeline
    for kind in ("extract", "convert", "entities"):
        assert kind in timeline
    assert timeline.count("SUCCEEDED") >= 3
    assert view.page.locator("header").inner_text().count(f"{PATIENT_NAME} discharge.pdf") == 1  # the page may show it
    assert "Content-Security-Policy" in shown["letter"]["path"].read_text(encoding="utf-8")[:2000]


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------

def test_page_is_owner_only_at_its_default_path(processed, shown):
    for name, doc_id in processed["ids"].items():
        path = shown[name]["path"]
        assert path == (processed["data"] / "review" / f"{doc_id}.html").resolve()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((processed["data"] / "review").stat().st_mode) == 0o700


def test_out_replaces_a_readable_file_with_an_owner_only_one_and_open_opens_it(processed, tmp_path, monkeypatch):
    opened_urls: list[str] = []
    monkeypatch.setattr("webbrowser.open", lambda url, *a, **k: opened_urls.append(url) or True)
    out = tmp_path / "page.html"
    out.write_text("old")
    out.chmod(0o644)
    result = CliRunner().invoke(cli.main, ["show", processed["ids"]["photo"], "--out", str(out), "--open",
                                           "--data-dir", str(processed["data"])])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out.resolve())
    assert stat.S_IMODE(out.stat().st_mode) == 0o600 and out.read_text(encoding="utf-8").startswith("<!doctype html>")
    assert opened_urls == [out.resolve().as_uri()]


@needs_browser
def test_a_rejected_document_shows_why(processed, shown, opened):
    view = opened(shown["rejected"]["path"])
    assert "REJECTED" in view.page.locator("header").inner_text()
    assert "empty_file" in view.page.locator("header").inner_text()
    assert view.page.locator("section.page").count() == 0
    assert "extract" in view.page.locator("#timeline").inner_text()
    assert_no_network(view)


def test_objects_the_manifest_does_not_name_are_not_shown(processed):
    """A killed attempt of a stage that then failed for good leaves its objects in the results
    folder, unnamed by the final manifest: the page shows what the manifest names, never those."""
    from pipeline.review import collect
    from pipeline.settings import Settings

    settings = Settings(data_dir=processed["data"])
    folder = results(processed, "rejected")
    leftovers = {"text.txt": b"LEFTOVER OF A KILLED ATTEMPT", "pages.json": b"[]", "entities.json": b"{}"}
    try:
        for name, data in leftovers.items():
            (folder / name).write_bytes(data)
        data = collect.load(settings, processed["ids"]["rejected"])
        assert data.manifest is not None and data.manifest["status"] == "REJECTED"
        assert (data.text, data.pages, data.entities) == (None, None, None)
        # The COMPLETED letter's own objects, which its manifest names, are read as before.
        letter = collect.load(settings, processed["ids"]["letter"])
        assert letter.text and letter.pages and isinstance(letter.entities, dict)
    finally:
        for name in leftovers:
            (folder / name).unlink(missing_ok=True)


@pytest.fixture(scope="module")
def shown_array(tmp_path_factory):
    """The array shape (the default): a letter and an empty PDF as one array job, and their pages."""
    root = tmp_path_factory.mktemp("review-array")
    letter = root / f"{PATIENT_NAME} discharge.pdf"
    shutil.copyfile(FILES / "scanned_discharge.pdf", letter)
    empty = root / "empty.pdf"
    shutil.copyfile(FILES / "empty.pdf", empty)
    data = root / "data"
    result = run_cli("--data-dir", str(data), "process", "--json", "--workers", "2", str(letter), str(empty),
                     shape="array")
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["status"] for r in rows] == ["COMPLETED", "REJECTED"], result.stderr[-2000:]
    out = {}
    for name, row in zip(("letter", "rejected"), rows):
        shown = run_cli("--data-dir", str(data), "show", row["document_id"], shape="array")
        assert shown.returncode == 0, shown.stderr[-2000:]
        out[name] = {"path": Path(shown.stdout.strip()), "document_id": row["document_id"], "data": data}
    return out


def test_array_shape_timeline_shows_the_child_each_stage_and_its_state_changes(shown_array, opened):
    from pipeline import repository
    from pipeline.settings import Settings

    settings = Settings.load(data_dir=shown_array["letter"]["data"], job_shape="array")
    (row,) = repository.jobs_for(settings, shown_array["letter"]["document_id"], 1)
    parent, index = row.id.split("#")[0].split(":")
    view = opened(shown_array["letter"]["path"])
    timeline = view.page.locator("#timeline").inner_text()
    assert "Attempt 1" in timeline and f"try 1: child {index} of array job {parent}" in timeline
    for kind in ("extract", "entities", "convert"):  # the stages the child ran, each with its seconds
        assert re.search(rf"\u203a {kind}\s+SUCCEEDED\s+\d+\.\d\d", timeline), timeline
    assert timeline.count("SUCCEEDED") >= 4
    view.page.locator("#timeline details summary").first.click()  # the child's state changes
    changes = view.page.locator("#timeline details").first.inner_text()
    assert "RUNNING" in changes and f"process ({parent}:{index})" in changes
    manifest = view.page.locator("#manifest").inner_text()
    assert all(kind in manifest for kind in ("extract", "entities", "convert"))

    rejected = opened(shown_array["rejected"]["path"])
    assert "empty_file" in rejected.page.locator("header").inner_text()
    timeline = rejected.page.locator("#timeline").inner_text()
    assert re.search(r"\u203a extract\s+FAILED", timeline) and "process" in timeline
    assert_no_network(rejected)


def test_the_same_page_from_s3(processed):
    """Through the configured store: the results copied to (moto's) S3 give the very same page."""
    from moto import mock_aws

    from pipeline import review
    from pipeline.settings import Settings
    from pipeline.store import S3Store

    local = Settings.load(data_dir=processed["data"])
    doc_id = processed["ids"]["letter"]
    expected = review.build(local, doc_id)
    bucket = processed["data"] / "buckets" / "uploads"
    with mock_aws():
        import boto3

        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="uploads")
        s3 = local.replace(store_backend="s3", aws_region="us-east-1")
        store = S3Store(s3)
        for path in bucket.rglob("*"):
            if path.is_file():
                store.put_file(path.relative_to(bucket).as_posix(), path)
        assert review.build(s3, doc_id) == expected
        assert "searchable.pdf" in {k.rsplit("/", 1)[-1] for k in store.list(f"results/{doc_id}/")}


def test_rows_from_every_database(db_settings):
    """SQLite here, MariaDB (RDS MySQL) and PostgreSQL: every attempt's jobs, their events in order."""
    from datetime import datetime, timedelta, timezone

    from pipeline import repository
    from pipeline.database import transaction
    from pipeline.events import UploadRef
    from pipeline.models import Job, JobEvent, Rendition
    from pipeline.review.collect import load_rows

    doc, _ = repository.register_document(db_settings, UploadRef("uploads", f"uploads/x/{PATIENT_NAME}.pdf", etag="e"))
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)  # noqa: UP017 (python_requires >= 3.10)
    with transaction(db_settings) as s:
        for attempt in (2, 1):
            s.add(Job(id=f"job-{attempt}", document_id=doc.id, attempt=attempt, kind="extract",
                      name=f"medintake-extract-{attempt}", status="FAILED" if attempt == 1 else "SUCCEEDED",
                      tries=1, exit_code=137 if attempt == 1 else 0, depends_on=[], created_at=t0 + timedelta(hours=attempt)))
        for n, (job, status) in enumerate([("job-1", "RUNNING"), ("job-1", "FAILED"), ("job-2", "SUCCEEDED")]):
            s.add(JobEvent(event_id=f"ev-{n}", job_id=job, document_id=doc.id, status=status, tries=1,
                           received_at=t0 + timedelta(minutes=n)))
        s.add(Rendition(document_id=doc.id, name="thumbnail", object_key="k", format="JPEG", mime="image/jpeg",
                        width=1, height=1, bytes=10))
    data = load_rows(db_settings, doc.id)
    assert [(j["attempt"], j["status"], j["exit_code"]) for j in data.jobs] == [(1, "FAILED", 137), (2, "SUCCEEDED", 0)]
    assert [e["status"] for e in data.events] == ["RUNNING", "FAILED", "SUCCEEDED"]
    assert [r["name"] for r in data.renditions] == ["thumbnail"]
    assert data.document["object_key"].endswith(f"{PATIENT_NAME}.pdf")


def test_unknown_document_is_a_clear_error(processed, tmp_path):
    result = run_cli("--data-dir", str(processed["data"]), "show", "0" * 32)
    assert result.returncode == 2
    assert "no document with that id" in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""
    empty = tmp_path / "empty"
    result = run_cli("--data-dir", str(empty), "show", "0" * 32)
    assert result.returncode == 2 and "no document with that id" in result.stderr
    assert not (empty / "medintake.db").exists(), "looking does not create a database"


def test_no_log_line_names_the_file(processed, shown):
    logs = [processed["process_stderr"], *(s["stderr"] for s in shown.values())]
    logs += [p.read_text(errors="replace") for p in (processed["data"] / "logs").glob("*")]
    assert any('"level"' in chunk for chunk in logs), "-v did log"
    for chunk in logs:
        assert "jane" not in chunk.lower()
    assert PATIENT_NAME in shown["letter"]["path"].read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# Highlights that cannot nest (no browser)
# ---------------------------------------------------------------------------------------------

def test_crossing_spans_and_page_breaks_are_left_out_not_misplaced():
    text = "aspirin daily\fno fever today"
    ranges = spanmod.page_ranges(text, None)
    assert ranges == [(1, 0, 13), (2, 14, 28)]
    span = lambda b, e, a: spanmod.Span(b, e, a, "ent", "tip", "e-" + a)
    given = [span(0, 7, "a"), span(0, 13, "outer"), span(3, 10, "cross"), span(10, 17, "break"),
             span(17, 22, "fever"), span(14, 22, "nofever"), span(20, 40, "beyond")]
    placed, left_out = spanmod.place(given, ranges, len(text))
    assert left_out == {"cross", "break", "beyond"}
    page1 = spanmod.render_text(text, 0, 13, placed)
    assert page1 == ('<mark id="outer" class="ent" tabindex="0" data-begin="0" data-end="13" data-tip="tip" '
                     'aria-describedby="e-outer"><mark id="a" class="ent" tabindex="0" data-begin="0" data-end="7" '
                     'data-tip="tip" aria-describedby="e-a">aspirin</mark> daily</mark>')
    page2 = spanmod.render_text(text, 14, 28, placed)
    assert page2.count("<mark") == 2 and page2.endswith("</mark></mark> today")


@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
def test_text_layer_boxes_turn_with_the_page(rotation):
    """The page's boxes turned as its picture is, checked against turning corner by corner."""
    from pipeline.review import render

    page = {"source": "text-layer", "rotation": rotation, "width": 600.0, "height": 800.0,
            "words": [{"text": "w", "bbox": [10.0, 20.0, 110.0, 45.0], "confidence": 100.0, "offset": 0}]}
    turned = upright(page)
    assert render.display_size(page) == (turned["width"], turned["height"])
    (box,) = render.word_boxes(page)
    x0, y0, x1, y1 = turned["words"][0]["bbox"]
    expected = [100 * x0 / turned["width"], 100 * y0 / turned["height"],
                100 * (x1 - x0) / turned["width"], 100 * (y1 - y0) / turned["height"]]
    assert box[:4] == pytest.approx(expected, abs=1e-3)
    assert box[4] == "t"


def test_estimated_cost_is_shown_when_the_manifest_has_one():
    from pipeline.review import render

    manifest = {"timings": {"entities": {"seconds": 1.5, "status": "SUCCEEDED", "tries": 1, "stages": {"entities": 1.2}}},
                "tool_versions": {"tesseract": "5.3.0"},
                "usage": {"entities": {"estimated_cost_usd": 0.0123, "operations": {
                    "DetectEntitiesV2": {"units": 3, "estimated_cost_usd": 0.0003}}}}}
    out = render.manifest_html(manifest)
    assert "usage.entities.estimated_cost_usd" in out and "0.0123" in out
    assert "usage.entities.operations.DetectEntitiesV2.estimated_cost_usd" in out
    assert "No cost estimate" in render.manifest_html({"tool_versions": {}, "status": "COMPLETED"})
