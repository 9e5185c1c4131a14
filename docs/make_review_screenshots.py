"""Remake docs/review-*.png: process three fixtures, write their review pages, photograph them.

    .venv/bin/python docs/make_review_screenshots.py

Headless Debian Chromium through Playwright (the test extra), 1280 px wide, PNGs quantised to
128 colours so each stays a few hundred KB at most. The fixtures are fabricated (no real PHI).
"""
from __future__ import annotations

import io
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FILES = REPO / "tests" / "files"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def medintake(data: Path, *args: str) -> str:
    cmd = [sys.executable, "-c", "import cli; cli.main()", "--data-dir", str(data), *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True).stdout


def save(png: bytes, name: str) -> None:
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT)
    image.save(REPO / "docs" / name, optimize=True)


def main() -> None:
    import json

    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        names = ("scanned_discharge.pdf", "phone_photo_exif6.jpg", "digital_referral.pdf")
        out = medintake(data, "process", "--json", *(str(FILES / n) for n in names))
        ids = [json.loads(line)["document_id"] for line in out.splitlines()]
        pages = [Path(medintake(data, "show", doc_id).strip()) for doc_id in ids]
        scroll = "id => window.scrollTo(0, document.getElementById(id).getBoundingClientRect().top + window.scrollY - {})"
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.goto(pages[0].as_uri())
            page.evaluate(scroll.format(260), "p-1")
            page.locator("mark.ent.neg").first.focus()  # the tooltip of a negated condition
            page.wait_for_timeout(300)
            save(page.screenshot(), "review-page.png")
            page.goto(pages[1].as_uri())
            page.evaluate(scroll.format(50), "p-1")
            page.wait_for_timeout(300)
            save(page.screenshot(), "review-photo.png")
            page.set_viewport_size({"width": 1280, "height": 900})
            page.goto(pages[2].as_uri())
            page.evaluate(scroll.format(60), "entities")
            page.wait_for_timeout(300)
            save(page.screenshot(), "review-entities.png")
            browser.close()


if __name__ == "__main__":
    main()
