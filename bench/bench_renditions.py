"""Benchmark: time and peak memory to make all five renditions of real photos and scans.

Compares, in the same run and on the same files:

* ``medintake`` - ``jobs.convert.renditions.make_renditions`` (one decode, cascade of downscales);
* ``naive``     - what users usually write: per rendition ``Image.open`` + ``exif_transpose`` +
  ``thumbnail`` + ``save`` (exif_transpose loads the image, so JPEG ``draft`` never kicks in);
* ``draft``     - a variant of ours that decodes a second time with ``Image.draft`` (JPEG DCT
  scaling) for the three downscaled renditions; it answers "would draft pay here?";
* ``vips``      - libvips through pyvips, the idiomatic way (``thumbnail`` with shrink-on-load for
  the downscaled outputs, one decode for the full-size ones), single-threaded like our workers.

All approaches use the same encoders settings (JPEG quality, PNG level, TIFF LZW + predictor,
WebP quality) so the comparison is about the pipeline, not about the encoder knobs.

Each approach runs in its own fresh Python process so that its peak RSS (``ru_maxrss``) is its
own; the baseline RSS after imports and a warm-up is reported too. Times are the median of
``--repeat`` runs per file of the process CPU time (user+sys, all threads): on a shared machine
wall time mostly measures the neighbours; the median wall time is reported beside it.

Usage (from the repository root)::

    python bench/bench_renditions.py                 # corpus at ../shared/corpus
    python bench/bench_renditions.py --receipts 8 --repeat 3 --json /tmp/renditions.json

The corpus is read in place and never copied; outputs go to a temporary folder that is removed.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = REPO.parent / "shared" / "corpus"
APPROACHES = ("medintake", "naive", "draft", "vips")

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


# --- the approaches (run inside a worker process) -----------------------------------------------


def run_medintake(src: Path, out: Path) -> None:
    from jobs.convert.renditions import make_renditions
    from jobs.identify import identify
    from pipeline.settings import Settings

    settings = Settings()
    make_renditions(src, identify(src, settings), out, settings)


def run_naive(src: Path, out: Path) -> None:
    """Open, orient, (thumbnail), save - once per rendition, as most code does it."""
    from PIL import Image, ImageOps

    from jobs.convert.renditions import RENDITIONS

    target = out / "renditions"
    target.mkdir(parents=True, exist_ok=True)
    for spec in RENDITIONS:
        with Image.open(src) as opened:
            img = ImageOps.exif_transpose(opened)
            if spec.format == "JPEG" and img.mode != "RGB":
                img = img.convert("RGB")
            if spec.max_side:
                img.thumbnail((spec.max_side, spec.max_side), Image.Resampling.LANCZOS)
            img.save(target / spec.filename, spec.format, **dict(spec.save_options))


def run_draft(src: Path, out: Path) -> None:
    """Ours, but the downscaled renditions come from a second, DCT-scaled (draft) JPEG decode."""
    from jobs.convert import renditions as r
    from jobs.identify import identify, open_image
    from pipeline.settings import Settings

    settings = Settings()
    kind = identify(src, settings)
    target = out / "renditions"
    target.mkdir(parents=True, exist_ok=True)
    full = r.load_normalised(src, kind, settings)
    full_size = full.size
    for spec in r.RENDITIONS[:2]:
        r.write_rendition(full, spec, target)
    del full
    img = open_image(src, settings)
    try:
        want = r.fitted_size(full_size, r.RENDITIONS[2].max_side or 0)
        if img.getexif().get(0x0112, 1) in (5, 6, 7, 8):
            want = (want[1], want[0])  # draft works in stored orientation
        img.draft("RGB", want)
        r.decode_first_frame(img, settings)
        icc = img.info.get("icc_profile") or None
        r.orient(img)
        current = r.normalise(img, icc)
    finally:
        img.close()
    for spec in r.RENDITIONS[2:]:
        current = r.fit_within(current, full_size, spec.max_side)
        r.write_rendition(current, spec, target)


def run_vips(src: Path, out: Path) -> None:
    """libvips: decode once for the full-size outputs, shrink-on-load thumbnails for the rest."""
    import pyvips

    target = out / "renditions"
    target.mkdir(parents=True, exist_ok=True)
    full = pyvips.Image.new_from_file(str(src)).autorot()
    if full.get_typeof("icc-profile-data"):
        full = full.icc_transform("srgb", embedded=True)
    full.tiffsave(str(target / "archival.tiff"), compression="lzw", predictor="horizontal", strip=True)
    # filter="all" = Pillow's per-row adaptive filtering (vips' default "none" is ~30 % bigger).
    full.pngsave(str(target / "full.png"), compression=3, filter="all", strip=True)
    del full
    jpeg = dict(optimize_coding=True, strip=True, subsample_mode="on")
    for side, name, save in (
        (2048, "web.jpg", lambda im, p: im.jpegsave(p, Q=85, interlace=True, **jpeg)),
        (1024, "preview.webp", lambda im, p: im.webpsave(p, Q=80, effort=4, strip=True)),
        (256, "thumbnail.jpg", lambda im, p: im.jpegsave(p, Q=80, **jpeg)),
    ):
        thumb = pyvips.Image.thumbnail(str(src), side, height=side, size="down", export_profile="srgb")
        save(thumb, str(target / name))


RUNNERS: dict[str, Callable[[Path, Path], None]] = {
    "medintake": run_medintake, "naive": run_naive, "draft": run_draft, "vips": run_vips,
}


def rss_mb() -> float:
    """Current resident set size in MiB (Linux)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def worker(approach: str, files: list[Path], repeat: int) -> dict:
    """Time one approach on all files in this (fresh) process; report times, sizes, memory."""
    runner = RUNNERS[approach]
    with tempfile.TemporaryDirectory(prefix="bench-renditions-") as tmp:
        smallest = min(files, key=lambda p: p.stat().st_size)
        runner(smallest, Path(tmp) / "warmup")  # imports, codec initialisation
        base = rss_mb()
        results = {}
        for index, src in enumerate(files):
            walls, cpus = [], []
            for attempt in range(repeat):
                out = Path(tmp) / f"{index}-{attempt}"
                start_wall, start_cpu = time.perf_counter(), time.process_time()
                runner(src, out)
                cpus.append(time.process_time() - start_cpu)
                walls.append(time.perf_counter() - start_wall)
            sizes = {p.name: p.stat().st_size for p in sorted((out / "renditions").iterdir())}
            results[src.name] = {"seconds": statistics.median(cpus), "wall_seconds": statistics.median(walls),
                                 "bytes": sizes}
            for attempt in range(repeat):
                shutil.rmtree(Path(tmp) / f"{index}-{attempt}", ignore_errors=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"approach": approach, "files": results, "base_rss_mb": base, "peak_rss_mb": peak}


# --- the driver ---------------------------------------------------------------------------------


def corpus_files(corpus: Path, receipts: int) -> dict[str, list[Path]]:
    photos = sorted((corpus / "ocr" / "phone-photos-no-gt").glob("*.jpg"))
    scans = sorted((corpus / "ocr" / "sroie-dev").glob("*.jpg"))
    step = max(1, len(scans) // max(1, receipts))
    return {"phone photos": photos, "receipts": scans[::step][:receipts]}


def vips_available() -> bool:
    try:
        import pyvips  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


def run_worker_process(approach: str, files: list[Path], repeat: int) -> dict:
    env = dict(os.environ, VIPS_CONCURRENCY="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", approach, "--repeat", str(repeat),
           *map(str, files)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def summarise(groups: dict[str, list[Path]], reports: dict[str, dict]) -> str:
    """A markdown table: per group, total median seconds per approach and the ratio to ours."""
    lines = ["| approach | " + " | ".join(f"{g} (CPU s, {len(f)} files)" for g, f in groups.items())
             + " | all CPU s | vs medintake | all wall s | peak RSS MiB (base) | output MiB |",
             "|---" * (len(groups) + 6) + "|"]
    ours_total = sum(v["seconds"] for v in reports["medintake"]["files"].values())
    for approach, report in reports.items():
        cells, total = [], 0.0
        for files in groups.values():
            secs = sum(report["files"][f.name]["seconds"] for f in files)
            total += secs
            cells.append(f"{secs:.2f}")
        out_mb = sum(sum(v["bytes"].values()) for v in report["files"].values()) / 2**20
        wall = sum(v["wall_seconds"] for v in report["files"].values())
        lines.append(f"| {approach} | " + " | ".join(cells)
                     + f" | {total:.2f} | {total / ours_total:.2f}x | {wall:.2f} | "
                     f"{report['peak_rss_mb']:.0f} ({report['base_rss_mb']:.0f}) | {out_mb:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--receipts", type=int, default=6)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--approaches", default=",".join(APPROACHES))
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("files", nargs="*", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        print(json.dumps(worker(args.worker, args.files, args.repeat)))
        return 0

    groups = corpus_files(args.corpus, args.receipts)
    if not all(groups.values()):
        parser.error(f"no corpus images under {args.corpus}; see ../shared/corpus/README.md")
    approaches = [a for a in args.approaches.split(",") if a]
    if "vips" in approaches and not vips_available():
        print("pyvips/libvips not installed: skipping vips", file=sys.stderr)
        approaches.remove("vips")
    files = [f for group in groups.values() for f in group]
    reports = {}
    for approach in approaches:
        print(f"running {approach} ...", file=sys.stderr)
        reports[approach] = run_worker_process(approach, files, args.repeat)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, repeat={args.repeat} (median per file)")
    print(summarise(groups, reports))
    if args.json:
        args.json.write_text(json.dumps(reports, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
