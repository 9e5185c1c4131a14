"""Curved-page benchmark: CER of real photos of curved pages with and without dewarping.

For every photo with a transcription in ``bench/data/curved`` (README there: where each photo comes
from and how to fetch it), in the same run:

- ``tesseract``: the plain ``tesseract IMG stdout`` command (one thread), on the same pixels;
- ``ours``: ``jobs.extract.ocr.ocr_image`` as the pipeline runs it today;
- ``ours+dewarp``: ``ocr_image`` with the hook requested for ``preprocess()`` in place
  (``dewarp_if_curved`` right before ``correct_perspective``, emulated in-process by :func:`hook`).

Then the gate on flat pages (the corpus's Tesseract test pages and this repository's flat
fixtures): pages flattened (must be 0), whether the text is identical with the hook, and the
gate's CPU against ``ocr_image``'s; and the gate alone on the corpus's receipts (``sroie-dev``:
real, often curled thermal paper), which it must leave alone too.

    python bench/bench_dewarp.py                    # from the repository root
    python bench/bench_dewarp.py --curved-dir ~/.cache/medintake/curved --json out.json

CER and folding are bench/bench_ocr.py's. Photos are read in place and never copied into the repo.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_ocr import cer, word_recall  # noqa: E402

DATA = REPO / "bench" / "data" / "curved"


@dataclass(frozen=True)
class Photo:
    name: str
    relpath: str  # under the curved-photos folder, or "corpus:" + path under the corpus
    crop: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)  # x0, y0, x1, y1 fractions


# The transcribed region is the whole photo, except for book.jpg where only the right-hand page is
# transcribed (the crop, applied before every system, drops the other page's cut-off lines), and
# the textbook page, of which the caption and the two paragraphs under the figure are.
PHOTOS = [
    Photo("boston_cooking_a", "boston_cooking_a.jpg"),
    Photo("boston_cooking_b", "boston_cooking_b.jpg"),
    Photo("linguistics_thesis_a", "corpus:ocr/phone-photos-no-gt/linguistics_thesis_a.jpg"),
    Photo("docunet_1_1", "docunet_1_1.png"),
    Photo("book_right_page", "book.jpg", (0.15, 0.0, 1.0, 1.0)),
    Photo("machine_vision_p329", "pkhamchuai_IMG_0336.jpg", (0.15, 0.39, 0.90, 0.815)),
]

FLAT = [
    "corpus:ocr/tesseract/phototest.tif",
    "corpus:ocr/tesseract/phototestrot.tif",
    "corpus:ocr/tesseract/phototest-rotated-R.png",
    "corpus:ocr/tesseract/phototest-rotated-180.png",
    "corpus:ocr/tesseract/eurotext.tif",
    "corpus:ocr/tesseract/unlv_8071_093.3B.tif",
    "corpus:ocr/tesseract/unlv_8087_054.3B.tif",
    "repo:tests/files/screenshot_labs.png",
    "repo:tests/files/phone_photo_exif6.jpg",
    "repo:tests/files/scanned_discharge.pdf",
]


def cpu() -> float:
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def resolve(rel: str, curved_dir: Path, corpus: Path) -> Path:
    if rel.startswith("corpus:"):
        return corpus / rel[len("corpus:"):]
    if rel.startswith("repo:"):
        return REPO / rel[len("repo:"):]
    return curved_dir / rel


def load(path: Path, crop: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)):
    from PIL import Image, ImageOps

    if path.suffix.lower() == ".pdf":
        import pypdfium2 as pdfium

        doc = pdfium.PdfDocument(str(path))
        image = doc[0].render(scale=300 / 72).to_pil()
        doc.close()
    else:
        image = ImageOps.exif_transpose(Image.open(path))
        image.load()
    if crop != (0.0, 0.0, 1.0, 1.0):
        w, h = image.size
        image = image.crop((round(crop[0] * w), round(crop[1] * h), round(crop[2] * w), round(crop[3] * h)))
    return image


def tesseract_text(image) -> str:
    with tempfile.TemporaryDirectory(prefix="bench-dewarp-") as tmp:
        png = Path(tmp) / "page.png"
        image.save(png)
        env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
        proc = subprocess.run(["tesseract", str(png), "stdout"], capture_output=True, env=env, check=True)
        return proc.stdout.decode("utf-8", "replace")


@contextlib.contextmanager
def hook():
    """``ocr_image`` with the requested preprocess() hook in place, without editing preprocess.py.

    The patch (/work/notes/requests/dewarp-preprocess.patch) calls ``dewarp_if_curved`` right
    before ``correct_perspective`` on the photo path; wrapping that module global does the same
    in-process, so re-preprocessing after an orientation fix is dewarped too, as it would be.
    Yields the list of (Dewarped, CPU seconds) of every call.
    """
    from jobs.extract import preprocess as pre
    from jobs.extract.dewarp import dewarp_if_curved

    original = pre.correct_perspective
    calls: list = []

    def dewarp_then_perspective(gray):
        t0 = time.process_time()
        result = dewarp_if_curved(gray)
        calls.append((result, time.process_time() - t0))
        return original(result.gray)

    pre.correct_perspective = dewarp_then_perspective
    try:
        yield calls
    finally:
        pre.correct_perspective = original


def run(curved_dir: Path, corpus: Path, verbose: bool) -> dict:
    from jobs.extract.ocr import ocr_image
    from pipeline.settings import Settings

    settings = Settings()
    rows = []
    for photo in PHOTOS:
        path = resolve(photo.relpath, curved_dir, corpus)
        gt_path = DATA / f"{photo.name}.gt.txt"
        if not path.exists():
            print(f"skip {photo.name}: {path} missing (see bench/data/curved/README.md)", file=sys.stderr)
            continue
        reference = gt_path.read_text(encoding="utf-8")
        image = load(path, photo.crop)
        row: dict = {"photo": photo.name, "pixels": f"{image.size[0]}x{image.size[1]}"}

        c0 = cpu()
        text = tesseract_text(image)
        row["tesseract_cpu"] = cpu() - c0
        row["cer_tesseract"] = cer(reference, text)

        c0 = cpu()
        text = ocr_image(image, settings, dpi=None, want_pdf=False).recognition.text
        row["ours_cpu"] = cpu() - c0
        row["cer_ours"] = cer(reference, text)
        row["recall_ours"] = word_recall(reference, text)

        c0 = cpu()
        with hook() as calls:
            text = ocr_image(image, settings, dpi=None, want_pdf=False).recognition.text
        row["ours_dewarp_cpu"] = cpu() - c0
        row["dewarp_cpu"] = sum(c[1] for c in calls)
        row["cer_ours_dewarp"] = cer(reference, text)
        row["recall_ours_dewarp"] = word_recall(reference, text)
        result = calls[0][0]
        row["curvature"] = result.curvature
        row["applied"] = result.applied
        rows.append(row)
        if verbose:
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)

    flat = []
    for rel in FLAT:
        path = resolve(rel, curved_dir, corpus)
        if not path.exists():
            continue
        image = load(path)
        c0 = cpu()
        plain = ocr_image(image, settings, dpi=None, want_pdf=False).recognition.text
        ocr_cpu = cpu() - c0
        with hook() as calls:
            hooked = ocr_image(image, settings, dpi=None, want_pdf=False).recognition.text
        # No call at all: the page is 1-bit or evenly lit paper, which preprocess never measures.
        entry = {"page": Path(rel).name, "measured": bool(calls),
                 "curvature": max((c[0].curvature for c in calls), default=0.0),
                 "applied": any(c[0].applied for c in calls), "same_text": hooked == plain,
                 "gate_cpu": sum(c[1] for c in calls), "ocr_image_cpu": ocr_cpu}
        flat.append(entry)
        if verbose:
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in entry.items()}), flush=True)

    # Receipts (real photos and scans of thermal paper, often curled): the gate alone, no OCR.
    receipts = []
    for path in sorted((corpus / "ocr" / "sroie-dev").glob("*.jpg")):
        from jobs.extract.dewarp import dewarp_if_curved
        from jobs.extract.preprocess import to_gray

        gray = to_gray(load(path))
        t0 = time.process_time()
        result = dewarp_if_curved(gray)
        receipts.append({"curvature": result.curvature, "applied": result.applied,
                         "gate_cpu": time.process_time() - t0})

    summary = {}
    if receipts:
        summary["receipts"] = len(receipts)
        summary["receipts_flattened"] = sum(1 for r in receipts if r["applied"])
        summary["receipts_max_curvature"] = max(r["curvature"] for r in receipts)
        summary["receipts_gate_cpu_s_mean"] = statistics.fmean(r["gate_cpu"] for r in receipts)
    if rows:
        summary |= {
            "photos": len(rows),
            "cer_tesseract_mean": statistics.fmean(r["cer_tesseract"] for r in rows),
            "cer_ours_mean": statistics.fmean(r["cer_ours"] for r in rows),
            "cer_ours_dewarp_mean": statistics.fmean(r["cer_ours_dewarp"] for r in rows),
            "dewarp_cpu_share_of_ours": sum(r["dewarp_cpu"] for r in rows) / sum(r["ours_cpu"] for r in rows),
            "ours_dewarp_cpu_over_ours": sum(r["ours_dewarp_cpu"] for r in rows) / sum(r["ours_cpu"] for r in rows),
        }
    if flat:
        summary["flat_pages"] = len(flat)
        summary["flat_flattened"] = sum(1 for f in flat if f["applied"])
        summary["flat_measured"] = sum(1 for f in flat if f["measured"])
        summary["flat_same_text"] = sum(1 for f in flat if f["same_text"])
        summary["flat_gate_cpu_share"] = sum(f["gate_cpu"] for f in flat) / sum(f["ocr_image_cpu"] for f in flat)
        summary["flat_max_curvature"] = max(f["curvature"] for f in flat)
    return {"photos": rows, "flat": flat, "receipts": receipts, "summary": summary}


def print_table(report: dict) -> None:
    print("| photo | curvature | tesseract CER | ours CER | ours+dewarp CER | dewarp CPU s | ours CPU s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in report["photos"]:
        print(f"| {r['photo']} | {r['curvature']:.2f} | {r['cer_tesseract']:.3f} | {r['cer_ours']:.3f} | "
              f"{r['cer_ours_dewarp']:.3f} | {r['dewarp_cpu']:.2f} | {r['ours_cpu']:.2f} |")
    print()
    print("| flat page | curvature | flattened | same text | gate CPU / ocr_image CPU |")
    print("| --- | --- | --- | --- | --- |")
    for f in report["flat"]:
        print(f"| {f['page']} | {f['curvature']:.2f} | {f['applied']} | {f['same_text']} | "
              f"{f['gate_cpu'] / f['ocr_image_cpu']:.3f} |")
    print()
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in report["summary"].items()}, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--curved-dir", type=Path,
                    default=Path(os.environ.get("MEDINTAKE_CURVED_DIR", Path.home() / ".cache/medintake/curved")))
    ap.add_argument("--corpus", type=Path, default=REPO.parent / "shared" / "corpus")
    ap.add_argument("--json", type=Path)
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args()
    t0 = time.perf_counter()
    report = run(args.curved_dir, args.corpus, not args.quiet)
    report["summary"]["wall_s"] = time.perf_counter() - t0
    print_table(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
