"""Long documents (issue 10): peak memory of a 500-page scan vs a 5-page one, and pages/s with 2
workers vs 1, through the whole local pipeline (``medintake process``'s LocalRuntime, array shape).

Documents are built once into ``~/.cache/medintake/long/`` from the real scanned page of
``tests/files/scanned_discharge.pdf`` (1500 x 700 px at 300 dpi, five text lines): each page
holds its lines in a different order with its own speckle noise (seeded), so every page is a
distinct image (no object shared between pages) and OCRs in a fraction of a second. Real
tesseract reads every page; nothing is skipped or cheapened.

Each case runs in its own Python process (``--case``); the parent reads the process tree's peak
RSS from ``wait4`` (the largest process of the tree that ended: Linux keeps the maximum over the
waited-for descendants) and, sampling ``/proc/*/status`` VmHWM every 0.2 s, which kind of process
it was. Workers are started with exec for the memory runs (every job a plain child process, so
every one is waited for and counted) and fork (the default) for the speed runs.

    nice -n 10 .venv/bin/python bench/bench_long.py                # everything (README-long.md)
    nice -n 10 .venv/bin/python bench/bench_long.py --only rss     # 5 vs 500 pages
    nice -n 10 .venv/bin/python bench/bench_long.py --only speed --speed-pages 60 --repeat 3
    nice -n 10 .venv/bin/python bench/bench_long.py --only unsplit  # 500 pages in one job (split_pages=0)
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "medintake" / "long"
BANDS = [(92, 148), (150, 212), (215, 280), (282, 345), (348, 412)]


def build(pages: int, letter: bool = False) -> Path:
    """``pages`` distinct scanned pages as one PDF (made once, one page image at a time); with
    ``letter``, US Letter pages at 300 dpi (2550 x 3300 px) holding the five lines 8 times over."""
    import pypdfium2 as pdfium
    from PIL import Image

    dest = CACHE / f"scan-{pages}p{'-letter' if letter else ''}.pdf"
    if dest.exists():
        return dest
    CACHE.mkdir(parents=True, exist_ok=True)
    doc = pdfium.PdfDocument(REPO / "tests" / "files" / "scanned_discharge.pdf")
    scan = list(doc[0].get_objects())[0].get_bitmap().to_pil().convert("L")
    doc.close()
    bands = [scan.crop((0, a, 1500, b)) for a, b in BANDS]
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for k in range(pages):
            rng = random.Random(k)
            order = list(range(5))
            rng.shuffle(order)
            size = (2550, 3300) if letter else scan.size
            page = Image.new("L", size, 255)
            y = 90
            for _ in range(8 if letter else 1):
                for i in order:
                    page.paste(bands[i], (150, y) if letter else (0, y))
                    y += bands[i].height + 6
                rng.shuffle(order)
                y += 40
            px = page.load()
            for _ in range(1500 * (8 if letter else 1)):  # this page's own speckles: no two pages alike
                px[rng.randrange(size[0]), rng.randrange(size[1])] = rng.randrange(0, 120)
            path = Path(tmp) / f"{k:05d}.pdf"
            page.save(path, resolution=300)
            files.append(str(path))
        subprocess.run(["qpdf", "--empty", "--pages", *files, "--", str(dest)], check=True)
    return dest


# ---- one case, in its own process ---------------------------------------------------------------

def run_case(pdf: Path, workers: int, split_pages: int, worker_start: str) -> dict:
    from compute.runtime import LocalRuntime
    from pipeline import repository
    from pipeline.settings import Settings

    data = Path(tempfile.mkdtemp(prefix="bench-long-"))
    try:
        settings = Settings.load(data_dir=data, workers=workers, job_shape="array", split_pages=split_pages,
                                 worker_start=worker_start, log_level="WARNING")
        with LocalRuntime(settings) as rt:
            t0 = time.perf_counter()
            sub = rt.submit(pdf)
            marks: dict[str, float] = {}

            def watch() -> None:  # first range start, last range end (the OCR phase)
                for job in rt.compute.jobs.values():
                    if job.sub.kind == "pages" and job.array_index is not None:
                        if job.status == "RUNNING":
                            marks.setdefault("ranges_start", time.perf_counter())
                        if job.status == "SUCCEEDED":
                            marks["ranges_end"] = time.perf_counter()

            rt.run_until_final([sub.document_id], on_step=watch, max_seconds=7200)
            wall = time.perf_counter() - t0
            doc = repository.get_document(settings, sub.document_id)
            ranges = sum(1 for j in rt.compute.jobs.values() if j.sub.kind == "pages" and not j.children)
        return {"pages": doc.page_count, "status": doc.status, "wall_s": round(wall, 2), "ranges": ranges,
                "ranges_wall_s": round(marks["ranges_end"] - marks["ranges_start"], 2) if len(marks) == 2 else None}
    finally:
        shutil.rmtree(data, ignore_errors=True)


# ---- the parent: memory and timing of a case -----------------------------------------------------

def _load() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def _role(cmdline: str) -> str:
    for key, name in (("jobs pages", "range child"), ("jobs process", "process child / merge"),
                      ("tessapi_child", "tesseract library helper"), ("tesseract", "tesseract"), ("qpdf", "qpdf"), ("--case", "runtime (dispatcher, tracker)")):
        if key in cmdline:
            return name
    return "other"


def _descendants(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    out, frontier = [], {root}
    while frontier:
        kids = {p for p, pp in parents.items() if pp in frontier}
        out += list(kids)
        frontier = kids
    return out


def measure(pdf: Path, workers: int, split_pages: int, worker_start: str) -> dict:
    cmd = [sys.executable, __file__, "--case", str(pdf), "--workers", str(workers), "--split-pages",
           str(split_pages), "--worker-start", worker_start]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    peaks: dict[str, int] = {}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for pid in [proc.pid, *_descendants(proc.pid)]:
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    continue
                hwm = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0)
                role = _role(cmdline)
                peaks[role] = max(peaks.get(role, 0), hwm)
            stop.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    stop.set()
    sampler.join()
    result = json.loads(out.strip().splitlines()[-1])
    result.update(peak_rss_mib=round(usage.ru_maxrss / 1024, 1), cpu_s=round(usage.ru_utime + usage.ru_stime, 1),
                  sampled_peak_mib={k: round(v / 1024, 1) for k, v in sorted(peaks.items())},
                  workers=workers, split_pages=split_pages, worker_start=worker_start)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=("rss", "speed", "unsplit"))
    parser.add_argument("--big-pages", type=int, default=500)
    parser.add_argument("--letter", action="store_true", help="rss: US Letter pages (40 lines each) instead")
    parser.add_argument("--small-pages", type=int, default=5)
    parser.add_argument("--speed-pages", type=int, default=60)
    parser.add_argument("--split-pages", type=int, default=None, help="default: the Settings default")
    parser.add_argument("--repeat", type=int, default=1, help="speed: pairs of runs (1 worker, 2 workers)")
    parser.add_argument("--speed-start", default="exec", choices=("exec", "fork"),
                        help="speed: worker start (exec: every job waited for, its CPU counted)")
    parser.add_argument("--case", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=2, help=argparse.SUPPRESS)
    parser.add_argument("--worker-start", default="fork", help=argparse.SUPPRESS)
    args = parser.parse_args()
    from pipeline.settings import Settings

    split = Settings().split_pages if args.split_pages is None else args.split_pages
    if args.case:
        print(json.dumps(run_case(args.case, args.workers, split, args.worker_start)))
        return
    print("load:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(), flush=True)
    rows = []
    if args.only in (None, "rss"):
        small, big = build(args.small_pages, args.letter), build(args.big_pages, args.letter)
        for pdf in (small, big):
            rows.append(("rss", measure(pdf, 2, split, "exec")))
            print(json.dumps(rows[-1][1]), flush=True)
        a, b = rows[0][1], rows[1][1]
        print(f"peak RSS {b['pages']} pages / {a['pages']} pages = {b['peak_rss_mib'] / a['peak_rss_mib']:.2f}x "
              f"(target <= 1.5x)", flush=True)
    if args.only == "unsplit":  # the big document read by one job (split_pages=0), as per_document does
        print(json.dumps(measure(build(args.big_pages), 2, 0, "exec")), flush=True)
    if args.only in (None, "speed"):
        pdf = build(args.speed_pages)
        ratios, bounds = [], []
        for _ in range(args.repeat):  # interleaved: 1, 2, 1, 2 ... so both see the same load on average
            one = measure(pdf, 1, split, args.speed_start)
            print(json.dumps({**one, "loadavg_1min": _load()}), flush=True)
            two = measure(pdf, 2, split, args.speed_start)
            print(json.dumps({**two, "loadavg_1min": _load()}), flush=True)
            ratios.append(one["wall_s"] / two["wall_s"])
            # Amdahl: the 1-worker run's serial part (before the first range, after the last) stays,
            # its ranges phase halves on two free cores.
            serial = one["wall_s"] - (one["ranges_wall_s"] or 0)
            bounds.append(one["wall_s"] / (serial + (one["ranges_wall_s"] or 0) / 2))
            print(f"pages/s 2 workers / 1 worker = {ratios[-1]:.2f}x end to end"
                  + (f", {one['ranges_wall_s'] / two['ranges_wall_s']:.2f}x over the OCR phase (first range start "
                     f"to last range end)" if one["ranges_wall_s"] and two["ranges_wall_s"] else "")
                  + f"; two free cores would give {bounds[-1]:.2f}x (target >= 1.8x)", flush=True)
        ratios.sort()
        print(f"speed-up over {len(ratios)} pair(s): median {ratios[len(ratios) // 2]:.2f}x, best {ratios[-1]:.2f}x, "
              f"worst {ratios[0]:.2f}x", flush=True)
    print("load:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(), flush=True)


if __name__ == "__main__":
    main()
