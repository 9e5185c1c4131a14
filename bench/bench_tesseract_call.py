"""What starting Tesseract through pytesseract costs, against starting the program directly.

The extract stage used to run ``tesseract`` with its own subprocess wrapper; it now goes through
pytesseract (``jobs/extract/tesseract.py``). This measures, on the same preprocessed pages in the
same run, interleaved page by page and round by round:

* ``direct``     - ``subprocess.run([tesseract, page.pgm, out, ... tsv pdf])`` + reading and parsing
                   the TSV and PDF: the former wrapper;
* ``program``    - ``jobs.extract.tesseract.recognise`` with ``ocr_engine=program`` (pytesseract's
                   ``run_tesseract`` for the TSV, the PGM path handed over as is, our own text layer);
* ``library``    - the same with ``ocr_engine=library`` (the default): the words from Tesseract's
                   library kept loaded in a helper process (``jobs/extract/tessapi.py``; its CPU read
                   from /proc while it lives, its one start-up counted in the first call);
* ``data-path``  - ``pytesseract.image_to_data`` given the PGM path (TSV only);
* ``data-array`` - ``pytesseract.image_to_data`` given the numpy array, which pytesseract encodes
                   to PNG first: why the stage hands over a path.

CPU is the process's and its children's user+system time (``getrusage``); the machine is shared,
so the ratios against ``direct`` are the figures to read, not the seconds.

    python bench/bench_tesseract_call.py                  # corpus at ../shared/corpus
    python bench/bench_tesseract_call.py --sroie 8 --rounds 3 --json /tmp/tess-call.json
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff"}


def cpu() -> float:
    from jobs.extract.tessapi import helper_cpu_seconds

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime + helper_cpu_seconds()


def pages(corpus: Path, sroie: int) -> list[Path]:
    found = sorted(p for p in (corpus / "ocr" / "tesseract").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    receipts = sorted(p for p in (corpus / "ocr" / "sroie-dev").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    return found + receipts[:sroie]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=REPO.parent / "shared" / "corpus")
    ap.add_argument("--sroie", type=int, default=6, help="receipts added to the tesseract test pages")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    os.environ.setdefault("OMP_THREAD_LIMIT", "1")
    import cv2
    import pytesseract
    from PIL import Image

    from jobs.extract import tesseract
    from jobs.extract.preprocess import preprocess, to_gray
    from pipeline.settings import Settings

    settings = Settings(ocr_languages="eng")  # the calls compared are English-only; "auto" is not a -l value
    prepared = []
    for path in pages(args.corpus, args.sroie):
        with Image.open(path) as img:
            prep = preprocess(to_gray(img), img.info.get("dpi", (None,))[0])
        prepared.append((path.name, prep.gray, prep.dpi))
    print(f"{len(prepared)} pages, {args.rounds} rounds, tesseract {tesseract.tesseract_version()}")

    def direct(gray, dpi: int, work: Path) -> int:
        cv2.imwrite(str(work / "page.pgm"), gray)
        subprocess.run([settings.tesseract_cmd, "page.pgm", "out", "-l", "eng", "--psm", "3", "--dpi", str(dpi),
                        "-c", "tessedit_create_tsv=1", "-c", "textonly_pdf=1", "pdf"],
                       cwd=work, stdin=subprocess.DEVNULL, capture_output=True, check=True)
        rec = tesseract.parse_tsv((work / "out.tsv").read_text(encoding="utf-8"))
        rec.pdf = (work / "out.pdf").read_bytes()
        return len(rec.words)

    program_settings = settings.replace(ocr_engine="program")

    def program(gray, dpi: int, work: Path) -> int:
        return len(tesseract.recognise(gray, program_settings, dpi=dpi, want_pdf=True, workdir=work).words)

    def library(gray, dpi: int, work: Path) -> int:
        return len(tesseract.recognise(gray, settings, dpi=dpi, want_pdf=True, workdir=work).words)

    def data_path(gray, dpi: int, work: Path) -> int:
        path = tesseract.write_pgm(gray, work / "page.pgm")
        tsv = pytesseract.image_to_data(path, lang="eng", config=f"--psm 3 --dpi {dpi}")
        return len(tesseract.parse_tsv(tsv).words)

    def data_array(gray, dpi: int, work: Path) -> int:
        tsv = pytesseract.image_to_data(gray, lang="eng", config=f"--psm 3 --dpi {dpi}")
        return len(tesseract.parse_tsv(tsv).words)

    systems: dict[str, Callable] = {"direct": direct, "program": program, "library": library, "data-path": data_path,
                                    "data-array": data_array}
    totals = {name: {"cpu": 0.0, "wall": 0.0, "words": 0, "calls": 0} for name in systems}
    for _ in range(args.rounds):
        for name_, gray, dpi in prepared:
            for name, fn in systems.items():
                with tempfile.TemporaryDirectory(prefix="bench-tess-") as tmp:
                    c0, w0 = cpu(), time.perf_counter()
                    words = fn(gray, dpi, Path(tmp))
                    totals[name]["cpu"] += cpu() - c0
                    totals[name]["wall"] += time.perf_counter() - w0
                    totals[name]["words"] += words
                    totals[name]["calls"] += 1

    base = totals["direct"]
    print(f"{'system':<12} {'CPU s/page':>10} {'wall s/page':>11} {'CPU vs direct':>14} {'wall vs direct':>15} "
          f"{'overhead ms/page':>17} {'words':>7}")
    for name, t in totals.items():
        n = t["calls"]
        print(f"{name:<12} {t['cpu'] / n:>10.3f} {t['wall'] / n:>11.3f} {t['cpu'] / base['cpu']:>14.3f} "
              f"{t['wall'] / base['wall']:>15.3f} {1000 * (t['cpu'] - base['cpu']) / n:>17.1f} {t['words']:>7}")
    if args.json:
        args.json.write_text(json.dumps({"pages": len(prepared), "rounds": args.rounds, "totals": totals}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
