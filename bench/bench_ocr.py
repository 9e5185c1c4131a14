"""OCR and text-layer benchmark for the extract stage (SPEC 5.1 and 6).

Accuracy and speed of ``jobs.extract.text.extract_text`` against the plain ``tesseract IMG stdout``
command (and OCRmyPDF when it is installed) on the same files in the same run, plus a text-layer
comparison of pdfplumber and pypdfium2. Corpus files are read in place, never copied.

    python bench/bench_ocr.py                       # corpus at ../shared/corpus from the repo root
    python bench/bench_ocr.py --sroie 20 --ocrmypdf /path/to/ocrmypdf --json results.json

Metrics: CER = Levenshtein distance / reference length after folding whitespace (case kept);
bag-of-words recall = share of reference words (lower-cased, edge punctuation stripped) found in
the output, counted with multiplicity; precision = share of output words found in the reference
(same rule); F1 = their harmonic mean per file (figures are means over files). Throughput: pages per wall-clock second and CPU seconds per
page (the process's and its children's user+system time), since the machine may be shared.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp", ".gif"}


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------

def fold(text: str) -> str:
    """Whitespace folded to single spaces (the corpus README's comparison rule)."""
    return " ".join(text.split())


def levenshtein(a: str, b: str) -> int:
    """Edit distance, row by row with numpy (insertions via a running minimum)."""
    if not a:
        return len(b)
    if not b:
        return len(a)
    bb = np.frombuffer(b.encode("utf-32-le"), dtype=np.uint32)
    prev = np.arange(len(b) + 1, dtype=np.int64)
    idx = np.arange(len(b) + 1, dtype=np.int64)
    for i, ch in enumerate(a, start=1):
        cost = (bb != ord(ch)).astype(np.int64)
        cur = np.empty_like(prev)
        cur[0] = i
        cur[1:] = np.minimum(prev[1:] + 1, prev[:-1] + cost)
        # insertion: cur[j] = min(cur[j], cur[j-1] + 1)  ==  j + cummin(cur[k] - k)
        cur = np.minimum.accumulate(cur - idx) + idx
        prev = cur
    return int(prev[-1])


def cer(reference: str, hypothesis: str) -> float:
    ref, hyp = fold(reference), fold(hypothesis)
    return levenshtein(ref, hyp) / max(1, len(ref))


_EDGE = re.compile(r"^\W+|\W+$")


def bag(text: str) -> collections.Counter:
    words = (_EDGE.sub("", w.lower()) for w in text.split())
    return collections.Counter(w for w in words if w)


def word_recall(reference: str, hypothesis: str) -> float:
    ref, hyp = bag(reference), bag(hypothesis)
    total = sum(ref.values())
    return sum(min(n, hyp[w]) for w, n in ref.items()) / max(1, total)


def word_precision(reference: str, hypothesis: str) -> float:
    """Share of output words (same folding, with multiplicity) that are in the reference: what
    recall cannot see (noise words read from logos, ruled lines and texture)."""
    ref, hyp = bag(reference), bag(hypothesis)
    total = sum(hyp.values())
    return sum(min(n, ref[w]) for w, n in hyp.items()) / max(1, total)


def word_f1(reference: str, hypothesis: str) -> float:
    """Harmonic mean of bag-of-words precision and recall (0 when both are 0)."""
    p, r = word_precision(reference, hypothesis), word_recall(reference, hypothesis)
    return 2 * p * r / (p + r) if p + r else 0.0


# --------------------------------------------------------------------------------------------
# Systems under test
# --------------------------------------------------------------------------------------------

@dataclass
class Run:
    text: str
    pages: int
    wall: float
    cpu: float


def cpu_seconds() -> float:
    """This process, its reaped children and the live tesseract library helper (counted in
    RUSAGE_CHILDREN only when it exits)."""
    from jobs.extract.tessapi import helper_cpu_seconds

    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime + helper_cpu_seconds()


def timed(fn: Callable[[], tuple[str, int]]) -> Run:
    c0, t0 = cpu_seconds(), time.perf_counter()
    text, pages = fn()
    return Run(text, pages, time.perf_counter() - t0, cpu_seconds() - c0)


def run_ours(path: Path) -> tuple[str, int]:
    from jobs.extract.text import extract_text
    from jobs.identify import identify, validate
    from pipeline.settings import Settings

    settings = Settings.load()  # the environment's MEDINTAKE_* settings, e.g. MEDINTAKE_OCR_ENGINE=program
    with tempfile.TemporaryDirectory(prefix="bench-ours-") as tmp:
        kind = identify(path, settings)
        validate(path, kind, settings)
        result = extract_text(path, kind, Path(tmp), settings)
        return (Path(tmp) / "text.txt").read_text(encoding="utf-8"), len(result.pages)


def make_tesseract_runner(one_thread: bool) -> Callable[[Path], tuple[str, int]]:
    """The plain command; by default with the environment as it is (OpenMP threads included)."""
    env = dict(os.environ)
    if one_thread:
        env["OMP_THREAD_LIMIT"] = "1"
    else:
        env.pop("OMP_THREAD_LIMIT", None)

    def run(path: Path) -> tuple[str, int]:
        proc = subprocess.run(["tesseract", str(path), "stdout"], capture_output=True, env=env, check=True)
        return proc.stdout.decode("utf-8", "replace"), 1

    return run


def make_ocrmypdf_runner(exe: str) -> Callable[[Path], tuple[str, int]]:
    """OCRmyPDF on the image (its own defaults plus rotate/deskew, which our stage also does)."""

    def run(path: Path) -> tuple[str, int]:
        with tempfile.TemporaryDirectory(prefix="bench-ocrmypdf-") as tmp:
            out_pdf, sidecar = Path(tmp) / "out.pdf", Path(tmp) / "out.txt"
            cmd = [exe, "--quiet", "--jobs", "1", "--output-type", "pdf", "--rotate-pages", "--deskew",
                   "--image-dpi", "300", "--sidecar", str(sidecar), str(path), str(out_pdf)]
            subprocess.run(cmd, capture_output=True, check=True, env={**os.environ, "OMP_THREAD_LIMIT": "1"})
            return sidecar.read_text(encoding="utf-8", errors="replace"), 1

    return run


# --------------------------------------------------------------------------------------------
# OCR benchmark
# --------------------------------------------------------------------------------------------

@dataclass
class Score:
    cer: list[float] = field(default_factory=list)
    recall: list[float] = field(default_factory=list)
    precision: list[float] = field(default_factory=list)
    f1: list[float] = field(default_factory=list)
    pages: int = 0
    wall: float = 0.0
    cpu: float = 0.0
    failures: int = 0

    def summary(self) -> dict[str, float]:
        return {
            "files": len(self.cer),
            "failures": self.failures,
            "cer_mean": round(statistics.fmean(self.cer), 4) if self.cer else float("nan"),
            "cer_median": round(statistics.median(self.cer), 4) if self.cer else float("nan"),
            "word_recall_mean": round(statistics.fmean(self.recall), 4) if self.recall else float("nan"),
            "word_precision_mean": round(statistics.fmean(self.precision), 4) if self.precision else float("nan"),
            "word_f1_mean": round(statistics.fmean(self.f1), 4) if self.f1 else float("nan"),
            "pages_per_s": round(self.pages / self.wall, 3) if self.wall else float("nan"),
            "cpu_s_per_page": round(self.cpu / self.pages, 3) if self.pages else float("nan"),
        }


def ocr_files(corpus: Path, sroie: int) -> dict[str, list[tuple[Path, Path]]]:
    """(image, ground truth) pairs per set; files without ground truth are left out."""
    sets: dict[str, list[tuple[Path, Path]]] = {}
    tess = corpus / "ocr" / "tesseract"
    sets["tesseract"] = [(p, p.with_name(p.name[: -len(p.suffix)] + ".gt.txt")) for p in sorted(tess.iterdir())
                         if p.suffix.lower() in IMAGE_SUFFIXES
                         and p.with_name(p.name[: -len(p.suffix)] + ".gt.txt").exists()]
    receipts = corpus / "ocr" / "sroie-dev"
    pairs = [(p, p.with_name(p.stem + ".gt.txt")) for p in sorted(receipts.glob("*.jpg"))
             if p.with_name(p.stem + ".gt.txt").exists()]
    sets["sroie"] = pairs[:sroie]
    return sets


def bench_ocr(corpus: Path, sroie: int, systems: dict[str, Callable[[Path], tuple[str, int]]],
              verbose: bool) -> dict[str, dict[str, dict[str, float]]]:
    report: dict[str, dict[str, dict[str, float]]] = {}
    for set_name, pairs in ocr_files(corpus, sroie).items():
        scores = {name: Score() for name in systems}
        for image, gt_path in pairs:
            reference = gt_path.read_text(encoding="utf-8", errors="replace")
            line = [f"{image.name:34s}"]
            for name, fn in systems.items():  # same file, one system after the other
                try:
                    run = timed(lambda: fn(image))
                except Exception as exc:  # a failing system is counted, not fatal
                    scores[name].failures += 1
                    line.append(f"{name}: FAILED ({type(exc).__name__})")
                    continue
                s = scores[name]
                s.cer.append(cer(reference, run.text))
                s.recall.append(word_recall(reference, run.text))
                s.precision.append(word_precision(reference, run.text))
                s.f1.append(word_f1(reference, run.text))
                s.pages += run.pages
                s.wall += run.wall
                s.cpu += run.cpu
                line.append(f"{name}: cer {s.cer[-1]:.3f} rec {s.recall[-1]:.3f} f1 {s.f1[-1]:.3f} "
                            f"{run.wall:5.2f}s {run.cpu:5.2f}cpu")
            if verbose:
                print("  ".join(line), flush=True)
        report[set_name] = {name: sc.summary() for name, sc in scores.items()}
    return report


# --------------------------------------------------------------------------------------------
# Text-layer benchmark
# --------------------------------------------------------------------------------------------

def text_pdfplumber(path: Path, max_pages: int) -> tuple[list[str], int]:
    """What our stage does per page: pdfplumber lines (reading order) and words with boxes."""
    import pdfplumber

    from jobs.extract.pdf import read_text_layer

    texts = []
    with pdfplumber.open(str(path)) as pdf:
        for page in pdf.pages[:max_pages]:
            texts.append(read_text_layer(page).text)
            page.close()
    return texts, len(texts)


def text_pypdfium2(path: Path, max_pages: int) -> tuple[list[str], int]:
    """What our stage does by default: pdfium characters with boxes, lines and words."""
    import pypdfium2 as pdfium

    from jobs.extract.pdf import read_text_layer_pdfium

    texts = []
    pdf = pdfium.PdfDocument(str(path))
    try:
        for i in range(min(len(pdf), max_pages)):
            page = pdf[i]
            texts.append(read_text_layer_pdfium(page).text)
            page.close()
    finally:
        pdf.close()
    return texts, len(texts)


def text_pypdfium2_plain(path: Path, max_pages: int) -> tuple[list[str], int]:
    """pdfium's plain text call (no boxes): the engine's own speed limit."""
    import pypdfium2 as pdfium

    texts = []
    pdf = pdfium.PdfDocument(str(path))
    try:
        for i in range(min(len(pdf), max_pages)):
            page = pdf[i]
            tp = page.get_textpage()
            texts.append(tp.get_text_range().replace("\r\n", "\n"))
            tp.close()
            page.close()
    finally:
        pdf.close()
    return texts, len(texts)


def bench_text_layer(corpus: Path, max_pages: int) -> dict[str, object]:
    """Speed on every corpus PDF, and agreement on the strings pdfplumber's own tests expect."""
    root = corpus / "pdf-text" / "pdfplumber"
    pdfs = sorted((root / "pdfs").glob("*.pdf"))
    engines = {"pdfplumber": text_pdfplumber, "pypdfium2": text_pypdfium2,
               "pypdfium2_plain": text_pypdfium2_plain}
    speed = {name: {"pages": 0, "wall": 0.0, "failures": 0} for name in engines}
    texts: dict[str, dict[str, str]] = {name: {} for name in engines}
    for path in pdfs:
        for name, fn in engines.items():
            t0 = time.perf_counter()
            try:
                pages, n = fn(path, max_pages)
            except Exception:
                speed[name]["failures"] += 1
                continue
            speed[name]["wall"] += time.perf_counter() - t0
            speed[name]["pages"] += n
            texts[name][path.name] = fold("\n".join(pages))
    # Expected strings: keep those that pdfplumber's extract_text finds (others are not page text).
    found = {name: 0 for name in engines}
    checked = 0
    for line in (root / "expected_strings.jsonl").read_text(encoding="utf-8").splitlines():
        item = json.loads(line)
        names = [Path(f).name for f in item["files"]]
        for s in item["expected_strings"]:
            needle = fold(s)
            if not needle or not any(needle in texts["pdfplumber"].get(n, "") for n in names):
                continue
            checked += 1
            for name in engines:
                found[name] += any(needle in texts[name].get(n, "") for n in names)
    # Full-page comparison files (pdfplumber's extract_text of a page).
    comp = {}
    scotus = root / "comparisons" / "scotus-transcript-p1.txt"
    if scotus.exists() and (root / "pdfs" / "scotus-transcript-p1.pdf").exists():
        ref = scotus.read_text(encoding="utf-8")
        for name, fn in engines.items():
            comp[name] = round(cer(ref, "\n".join(fn(root / "pdfs" / "scotus-transcript-p1.pdf", 1)[0])), 4)
    return {
        "pdfs": len(pdfs),
        "max_pages_per_pdf": max_pages,
        "speed": {n: {"pages": v["pages"], "failures": v["failures"],
                      "pages_per_s": round(v["pages"] / v["wall"], 1) if v["wall"] else None}
                  for n, v in speed.items()},
        "expected_strings_checked": checked,
        "expected_strings_found": found,
        "scotus_p1_cer_vs_pdfplumber_reference": comp,
    }


# --------------------------------------------------------------------------------------------

def ratios(report: dict[str, dict[str, dict[str, float]]], base: str) -> dict[str, dict[str, float]]:
    out = {}
    for set_name, per_system in report.items():
        ours, ref = per_system.get("ours"), per_system.get(base)
        if not ours or not ref:
            continue
        out[set_name] = {
            "speed_ratio_ours_over_" + base: round(ours["pages_per_s"] / ref["pages_per_s"], 3),
            "cpu_ratio_ours_over_" + base: round(ours["cpu_s_per_page"] / ref["cpu_s_per_page"], 3),
            "cer_ours_minus_" + base: round(ours["cer_mean"] - ref["cer_mean"], 4),
            "recall_ours_minus_" + base: round(ours["word_recall_mean"] - ref["word_recall_mean"], 4),
            "f1_ours_minus_" + base: round(ours["word_f1_mean"] - ref["word_f1_mean"], 4),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=REPO.parent / "shared" / "corpus")
    ap.add_argument("--sroie", type=int, default=12, help="number of SROIE receipts (sorted order)")
    ap.add_argument("--ocrmypdf", default=shutil.which("ocrmypdf"), help="ocrmypdf executable (optional)")
    ap.add_argument("--no-default-threads", action="store_true",
                    help="skip plain tesseract with its default OpenMP threads (slow on shared cores)")
    ap.add_argument("--skip-text-layer", action="store_true")
    ap.add_argument("--text-layer-pages", type=int, default=20, help="pages per PDF in the text-layer run")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args(argv)
    corpus = args.corpus.resolve()
    systems: dict[str, Callable[[Path], tuple[str, int]]] = {
        "ours": run_ours,
        "tesseract_1thread": make_tesseract_runner(one_thread=True),
    }
    if not args.no_default_threads:
        systems["tesseract"] = make_tesseract_runner(one_thread=False)
    if args.ocrmypdf:
        systems["ocrmypdf"] = make_ocrmypdf_runner(args.ocrmypdf)
    run_ours(REPO / "tests" / "files" / "screenshot_labs.png")  # warm imports outside the timings
    report: dict[str, object] = {"corpus": str(corpus), "cpus": os.cpu_count()}
    ocr_report = bench_ocr(corpus, args.sroie, systems, verbose=not args.quiet)
    report["ocr"] = ocr_report
    report["ratios"] = {base: ratios(ocr_report, base) for base in systems if base != "ours"}
    if not args.skip_text_layer:
        report["text_layer"] = bench_text_layer(corpus, args.text_layer_pages)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
