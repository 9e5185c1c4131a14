"""End-to-end benchmark of ``medintake process`` against what users would otherwise run (SPEC 6).

The whole local pipeline (upload to the folder bucket, dispatcher, local Batch-like compute with
worker processes, extract / entities / convert jobs, SQLite rows, manifest and notice) is run as
one ``medintake --data-dir TMP process --json --workers 2 FILES...`` command per set, and compared,
on the same files in the same run, with:

* OCR sets (corpus ``ocr/tesseract`` pages with ground truth, first N ``ocr/sroie-dev`` receipts):
  OCRmyPDF (searchable PDF + sidecar text, ``--rotate-pages --deskew --image-dpi 300``), and the
  plain ``tesseract IMG stdout`` with ``OMP_THREAD_LIMIT=1`` and with its default threads;
* born-digital PDFs (10 of ``pdf-text/pdfplumber/pdfs``): ``pdftotext`` (poppler) and pdfplumber's
  ``extract_text`` in-process; medintake must read their text layer, never OCR them.

    python bench/bench_pipeline.py --sroie 12 --ocrmypdf /tmp/ocrmypdf-venv/bin/ocrmypdf

Per system and set: wall seconds, CPU seconds (user+system of the whole process tree, from
``getrusage(RUSAGE_CHILDREN)`` taken in a tiny wrapper process around each command, so parallel
commands do not mix), documents per minute, CPU seconds per page, peak RSS of the largest process
of the tree, and for OCR sets the CER and bag-of-words recall of ``bench_ocr.py`` (imported from
there). For medintake the per-job and per-stage seconds of every document's ``manifest.json``
("timings") are summed, so the reader sees where the time goes. Corpus files are read in place.
No document text is printed.
"""
from __future__ import annotations

import argparse
import collections
import concurrent.futures
import json
import os
import platform
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

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))

from bench_ocr import cer, ocr_files, word_recall  # noqa: E402  (shared metrics and OCR file sets)

#: The born-digital PDFs (real documents with a text layer on every page; 47 pages in all).
DEFAULT_PDFS = [
    "150109DSP-Milw-505-90D.pdf",
    "2023-06-20-PV.pdf",
    "WARN-Report-for-7-1-2015-to-03-25-2016.pdf",
    "cupertino_usd_4-6-16.pdf",
    "federal-register-2020-17221.pdf",
    "la-precinct-bulletin-2014-p1.pdf",
    "nics-background-checks-2015-11-rotated.pdf",
    "pdffill-demo.pdf",
    "scotus-transcript-p1.pdf",
    "senate-expenditures.pdf",
]

# Runs CMD (JSON argv[1]) with inherited stdio and writes wall seconds, the user+system CPU and the
# max RSS of its process tree (getrusage of the reaped children) as JSON to argv[2].
# The wrapper is a child subreaper (Linux prctl), so descendants orphaned by the command (e.g. a
# multiprocessing forkserver that outlives the CLI for a moment) are reparented to it and reaped
# here: their CPU is counted too.
_WRAPPER = r"""
import ctypes, json, os, resource, subprocess, sys, time
ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
cmd = json.loads(sys.argv[1])
t0 = time.perf_counter()
rc = subprocess.call(cmd)
wall = time.perf_counter() - t0
while True:  # reap every orphaned descendant, so its usage lands in RUSAGE_CHILDREN
    try:
        os.waitpid(-1, 0)
    except ChildProcessError:
        break
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(sys.argv[2], "w") as fh:
    json.dump({"rc": rc, "wall": wall, "cpu": ru.ru_utime + ru.ru_stime, "maxrss_kib": ru.ru_maxrss}, fh)
sys.exit(0)
"""


# --------------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------------

@dataclass
class Measured:
    """One command's outcome: exit code, stdout, wall and tree CPU seconds, peak RSS (KiB)."""

    rc: int
    stdout: bytes
    stderr: bytes
    wall: float
    cpu: float
    maxrss_kib: int


def measure(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> Measured:
    """Run ``cmd`` inside the rusage wrapper; the figures cover its whole (reaped) process tree."""
    with tempfile.NamedTemporaryFile(prefix="bench-pipeline-ru-", suffix=".json", delete=False) as fh:
        ru_path = Path(fh.name)
    try:
        proc = subprocess.run([sys.executable, "-c", _WRAPPER, json.dumps(cmd), str(ru_path)],
                              capture_output=True, env=env, cwd=cwd)
        ru = json.loads(ru_path.read_text())
    finally:
        ru_path.unlink(missing_ok=True)
    return Measured(ru["rc"], proc.stdout, proc.stderr, ru["wall"], ru["cpu"], ru["maxrss_kib"])


def self_cpu() -> float:
    """User+system CPU seconds of this process (for the in-process pdfplumber baseline)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


@dataclass
class DocResult:
    """What one system produced for one input file."""

    name: str
    pages: int
    text: str | None
    ok: bool
    detail: str = ""
    wall: float = 0.0


@dataclass
class SystemRun:
    """One system over one set: per-document results plus the set's totals."""

    docs: list[DocResult] = field(default_factory=list)
    wall: float = 0.0
    cpu: float = 0.0
    maxrss_kib: int = 0
    extra: dict[str, object] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Systems
# --------------------------------------------------------------------------------------------

def run_medintake(cmd_prefix: list[str], files: list[Path], workers: int) -> SystemRun:
    """One ``medintake process --json`` over all files of a set, in a fresh data dir."""
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-data-") as data_dir:
        cmd = [*cmd_prefix, "--data-dir", data_dir, "process", "--json", "--workers", str(workers),
               *[str(f) for f in files]]
        m = measure(cmd, cwd=REPO)
        rows = [json.loads(line) for line in m.stdout.decode("utf-8").splitlines() if line.startswith("{")]
        if len(rows) != len(files):
            raise RuntimeError(f"medintake printed {len(rows)} rows for {len(files)} files "
                               f"(exit {m.rc}); stderr tail: {m.stderr.decode(errors='replace')[-400:]}")
        run = SystemRun(wall=m.wall, cpu=m.cpu, maxrss_kib=m.maxrss_kib)
        jobs: dict[str, float] = collections.defaultdict(float)
        stages: dict[str, float] = collections.defaultdict(float)
        tries: dict[str, int] = collections.defaultdict(int)
        overhead: dict[str, float] = collections.defaultdict(float)
        ocr_pages = 0
        ocr_docs: list[str] = []
        for path, row in zip(files, rows):
            outputs = row.get("outputs") or {}
            manifest = {}
            if outputs.get("manifest") and Path(outputs["manifest"]).exists():
                manifest = json.loads(Path(outputs["manifest"]).read_text(encoding="utf-8"))
            for job, t in (manifest.get("timings") or {}).items():
                jobs[job] += float(t.get("seconds") or 0.0)
                tries[job] += int(t.get("tries") or 0)
                st = t.get("stages") or {}
                for stage, sec in st.items():
                    stages[f"{job}.{stage}"] += float(sec)
                # job seconds not spent in the stage itself: process start, imports, download, DB rows
                # (``*_cpu`` entries are the stage's CPU seconds, not a part of its wall time)
                inside = float(st["total"]) if "total" in st else sum(float(v) for k, v in st.items()
                                                                      if not k.endswith("_cpu"))
                overhead[job] += float(t.get("seconds") or 0.0) - inside
            n_ocr = int(manifest.get("ocr_pages") or 0)
            ocr_pages += n_ocr
            if n_ocr:
                ocr_docs.append(path.name)
            ok = row["status"] == "COMPLETED" and bool(outputs.get("text"))
            text = Path(outputs["text"]).read_text(encoding="utf-8") if ok else None
            detail = "" if ok else f"{row['status']} reason_code={row.get('reason_code')}"
            run.docs.append(DocResult(path.name, int(manifest.get("pages") or 1), text, ok, detail))
        run.extra = {
            "exit_code": m.rc,
            "job_seconds": {k: round(v, 3) for k, v in sorted(jobs.items())},
            "stage_seconds": {k: round(v, 3) for k, v in sorted(stages.items())},
            "job_overhead_seconds": {k: round(v, 3) for k, v in sorted(overhead.items())},
            "job_tries": dict(sorted(tries.items())),
            "ocr_pages": ocr_pages,
            "ocr_docs": ocr_docs,
        }
        return run


def distinct_copies(files: list[Path], copies: int, dest: Path) -> list[list[Path]]:
    """``copies`` sets of the files under ``dest``, each copy's bytes made distinct by a trailing comment.

    Why: a long batch must be processed document by document as real uploads are; identical bytes
    would give identical hashes. PDF readers ignore bytes after ``%%EOF`` (and image decoders after
    the image's end), so every copy reads as the original. Copies live in a temporary folder, never
    in the repository, and are removed after the run.
    """
    sets = []
    for i in range(copies):
        group = []
        for path in files:
            target = dest / f"c{i:03d}-{path.name}"
            target.write_bytes(path.read_bytes() + f"\n%medintake-bench-copy-{i}\n".encode())
            group.append(target)
        sets.append(group)
    return sets


def run_long_batch(cmd_prefix: list[str], files: list[Path], pages: dict[Path, int], copies: int,
                   workers: int) -> dict[str, object]:
    """Fixed and marginal cost of ``medintake process``: the same command on 1x and on ``copies``x the files.

    At AWS Batch scale an array child runs many documents, so what matters is the steady-state
    (marginal) CPU per page: the slope between the two runs. The intercept is the fixed cost of one
    command (interpreter, imports, warm server, per-child engine loads, database set-up).
    """
    n_pages = sum(pages[p] for p in files)
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-copies-") as tmp:
        sets = distinct_copies(files, copies, Path(tmp))
        small = run_medintake(cmd_prefix, sets[0], workers)
        large = run_medintake(cmd_prefix, [p for group in sets for p in group], workers)
    pages_small, pages_large = n_pages, n_pages * copies
    failed = [d.name for d in small.docs + large.docs if not d.ok]
    slope = (large.cpu - small.cpu) / (pages_large - pages_small)
    return {
        "copies": copies,
        "docs": [len(files), len(files) * copies],
        "pages": [pages_small, pages_large],
        "cpu_s": [round(small.cpu, 2), round(large.cpu, 2)],
        "wall_s": [round(small.wall, 2), round(large.wall, 2)],
        "cpu_s_per_page": [round(small.cpu / pages_small, 4), round(large.cpu / pages_large, 4)],
        "marginal_cpu_s_per_page": round(slope, 4),
        "marginal_cpu_s_per_doc": round((large.cpu - small.cpu) / (len(files) * (copies - 1)), 4),
        "fixed_cpu_s_per_command": round(small.cpu - slope * pages_small, 2),
        "ocr_pages": [small.extra.get("ocr_pages"), large.extra.get("ocr_pages")],
        "stage_seconds_large": large.extra.get("stage_seconds"),
        "failed": failed,
    }


def run_commands(make_cmd: Callable[[Path, Path], tuple[list[str], Callable[[Measured], str]]],
                 files: list[Path], pages: dict[Path, int], jobs: int,
                 env: dict[str, str] | None = None) -> SystemRun:
    """One command per file, ``jobs`` at a time (like ``xargs -P``); the set's wall is end to end."""

    def one(path: Path) -> tuple[DocResult, Measured]:
        with tempfile.TemporaryDirectory(prefix="bench-pipeline-out-") as tmp:
            cmd, read_text = make_cmd(path, Path(tmp))
            m = measure(cmd, env=env)
            if m.rc != 0:
                tail = m.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
                return DocResult(path.name, pages[path], None, False, f"exit {m.rc}: {tail[0][:160]}", m.wall), m
            return DocResult(path.name, pages[path], read_text(m), True, "", m.wall), m

    run = SystemRun()
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        for doc, m in pool.map(one, files):
            run.docs.append(doc)
            run.cpu += m.cpu
            run.maxrss_kib = max(run.maxrss_kib, m.maxrss_kib)
    run.wall = time.perf_counter() - t0
    return run


def tesseract_cmd(path: Path, tmp: Path) -> tuple[list[str], Callable[[Measured], str]]:
    """The plain command, text to stdout."""
    return ["tesseract", str(path), "stdout"], lambda m: m.stdout.decode("utf-8", "replace")


def make_ocrmypdf_cmd(exe: str) -> Callable[[Path, Path], tuple[list[str], Callable[[Measured], str]]]:
    """OCRmyPDF: searchable PDF plus sidecar text; images get ``--image-dpi 300``."""

    def make(path: Path, tmp: Path) -> tuple[list[str], Callable[[Measured], str]]:
        out_pdf, sidecar = tmp / "out.pdf", tmp / "out.txt"
        cmd = [exe, "--quiet", "--jobs", "1", "--output-type", "pdf", "--rotate-pages", "--deskew"]
        if path.suffix.lower() != ".pdf":
            cmd += ["--image-dpi", "300"]
        cmd += ["--sidecar", str(sidecar), str(path), str(out_pdf)]
        return cmd, lambda m: sidecar.read_text(encoding="utf-8", errors="replace")

    return make


def pdftotext_cmd(path: Path, tmp: Path) -> tuple[list[str], Callable[[Measured], str]]:
    """poppler's pdftotext, all pages, text to stdout."""
    return ["pdftotext", str(path), "-"], lambda m: m.stdout.decode("utf-8", "replace")


def run_pdfplumber(files: list[Path], pages: dict[Path, int]) -> SystemRun:
    """pdfplumber's ``extract_text`` per page, in this process (no process start-up to pay)."""
    import pdfplumber

    run = SystemRun()
    c0, t0 = self_cpu(), time.perf_counter()
    for path in files:
        d0 = time.perf_counter()
        with pdfplumber.open(str(path)) as pdf:
            texts = []
            for page in pdf.pages:
                texts.append(page.extract_text() or "")
                page.close()
        run.docs.append(DocResult(path.name, pages[path], "\f".join(texts), True, "", time.perf_counter() - d0))
    run.wall, run.cpu = time.perf_counter() - t0, self_cpu() - c0
    return run


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------

def summarise(run: SystemRun, references: dict[str, str] | None) -> dict[str, object]:
    """Throughput and (with references) accuracy of one system over one set."""
    done = [d for d in run.docs if d.ok]
    pages = sum(d.pages for d in run.docs)
    out: dict[str, object] = {
        "docs": len(run.docs),
        "failed": [f"{d.name}: {d.detail}" for d in run.docs if not d.ok],
        "pages": pages,
        "wall_s": round(run.wall, 2),
        "cpu_s": round(run.cpu, 2),
        "docs_per_min": round(60 * len(run.docs) / run.wall, 1) if run.wall else None,
        "cpu_s_per_page": round(run.cpu / pages, 3) if pages else None,
        "peak_rss_mib": round(run.maxrss_kib / 1024, 1) if run.maxrss_kib else None,
    }
    if references is not None:
        scored = [(cer(references[d.name], d.text or ""), word_recall(references[d.name], d.text or ""))
                  for d in done]
        out["cer_mean"] = round(statistics.fmean(c for c, _ in scored), 4) if scored else None
        out["cer_median"] = round(statistics.median(c for c, _ in scored), 4) if scored else None
        out["word_recall"] = round(statistics.fmean(r for _, r in scored), 4) if scored else None
        out["per_doc"] = {d.name: {"cer": round(c, 4), "recall": round(r, 4)} for d, (c, r) in zip(done, scored)}
    out.update(run.extra)
    return out


def agreement(run: SystemRun, other: SystemRun) -> float | None:
    """Mean bag-of-words recall of ``other``'s words in ``run``'s text (text-layer sets: no truth)."""
    mine = {d.name: d.text for d in run.docs if d.ok}
    vals = [word_recall(d.text or "", mine[d.name]) for d in other.docs if d.ok and d.name in mine]
    return round(statistics.fmean(vals), 4) if vals else None


def merge(runs: list[SystemRun]) -> SystemRun:
    """Repeats of one system: the first run's texts, the mean of the totals."""
    first = runs[0]
    n = len(runs)
    return SystemRun(first.docs, sum(r.wall for r in runs) / n, sum(r.cpu for r in runs) / n,
                     max(r.maxrss_kib for r in runs), first.extra)


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


# --------------------------------------------------------------------------------------------

def pdf_pages(path: Path) -> int:
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(str(path))
    try:
        return len(pdf)
    finally:
        pdf.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=REPO.parent / "shared" / "corpus")
    ap.add_argument("--sroie", type=int, default=12, help="number of SROIE receipts (sorted order)")
    ap.add_argument("--pdfs", nargs="*", default=DEFAULT_PDFS, help="names in pdf-text/pdfplumber/pdfs")
    ap.add_argument("--ocrmypdf", default=shutil.which("ocrmypdf"), help="ocrmypdf executable (optional)")
    ap.add_argument("--medintake", default=f"{sys.executable} -c 'import cli; cli.main()'",
                    help="how to start medintake (run from the repo root); default: this Python")
    ap.add_argument("--workers", type=int, default=2, help="medintake --workers")
    ap.add_argument("--baseline-jobs", type=int, default=1,
                    help="baseline commands run at once (1: one file after the other)")
    ap.add_argument("--no-default-threads", action="store_true",
                    help="skip plain tesseract with its default OpenMP threads")
    ap.add_argument("--sets", nargs="*", default=["tesseract", "sroie", "pdf"])
    ap.add_argument("--repeat", type=int, default=1, help="runs per system (mean of the timings)")
    ap.add_argument("--long-batch", type=int, default=0, metavar="K",
                    help="also run medintake on K distinct copies of each long-batch set's files and on 1 copy: "
                         "marginal (steady-state) CPU per page = the slope, fixed cost per command = the intercept")
    ap.add_argument("--long-batch-sets", nargs="*", default=["pdf"], help="sets measured with --long-batch")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)
    corpus = args.corpus.resolve()
    import shlex

    medintake = shlex.split(args.medintake)
    tess_env = {k: v for k, v in os.environ.items() if k != "OMP_THREAD_LIMIT"}
    one_thread_env = {**os.environ, "OMP_THREAD_LIMIT": "1"}

    sets: dict[str, tuple[list[Path], dict[str, str] | None]] = {}
    for name, pairs in ocr_files(corpus, args.sroie).items():
        sets[name] = ([p for p, _ in pairs], {p.name: g.read_text(encoding="utf-8", errors="replace") for p, g in pairs})
    pdf_dir = corpus / "pdf-text" / "pdfplumber" / "pdfs"
    sets["pdf"] = ([pdf_dir / n for n in args.pdfs], None)

    import pdfplumber  # noqa: F401  (imports warmed outside the timings)

    report: dict[str, object] = {
        "date": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(), "machine": platform.platform(),
        "loadavg_start": os.getloadavg(), "corpus": str(corpus),
        "git": subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True,
                              text=True).stdout.strip(),
        "sets": {},
    }
    for set_name in args.sets:
        files, refs = sets[set_name]
        pages = {p: (pdf_pages(p) if p.suffix.lower() == ".pdf" else 1) for p in files}
        systems: dict[str, Callable[[], SystemRun]] = {
            "medintake": lambda: run_medintake(medintake, files, args.workers)}
        if refs is not None:
            if args.ocrmypdf:
                systems["ocrmypdf"] = lambda: run_commands(make_ocrmypdf_cmd(args.ocrmypdf), files, pages,
                                                           args.baseline_jobs, one_thread_env)
            systems["tesseract_1thread"] = lambda: run_commands(tesseract_cmd, files, pages, args.baseline_jobs,
                                                                one_thread_env)
            if not args.no_default_threads:
                systems["tesseract"] = lambda: run_commands(tesseract_cmd, files, pages, args.baseline_jobs, tess_env)
        else:
            if shutil.which("pdftotext"):
                systems["pdftotext"] = lambda: run_commands(pdftotext_cmd, files, pages, args.baseline_jobs)
            systems["pdfplumber"] = lambda: run_pdfplumber(files, pages)
        runs: dict[str, list[SystemRun]] = collections.defaultdict(list)
        for _ in range(args.repeat):
            for name, fn in systems.items():  # same files, one system after the other
                print(f"[{set_name}] {name} on {len(files)} files ...", file=sys.stderr, flush=True)
                runs[name].append(fn())
        merged = {name: merge(rs) for name, rs in runs.items()}
        summary = {name: summarise(run, refs) for name, run in merged.items()}
        if refs is None:
            for name in merged:
                if name != "medintake":
                    summary[name]["medintake_word_recall_of_this"] = agreement(merged["medintake"], merged[name])
        me = summary["medintake"]
        summary["ratios_medintake_over"] = {
            name: {"wall": ratio(me["wall_s"], s["wall_s"]), "cpu_per_page": ratio(me["cpu_s_per_page"],
                                                                                  s["cpu_s_per_page"]),
                   "docs_per_min": ratio(me["docs_per_min"], s["docs_per_min"])}
            for name, s in summary.items() if name != "medintake" and isinstance(s, dict) and "wall_s" in s}
        if args.long_batch > 1 and set_name in args.long_batch_sets:
            print(f"[{set_name}] medintake long batch: 1x and {args.long_batch}x {len(files)} files ...",
                  file=sys.stderr, flush=True)
            lb = run_long_batch(medintake, files, pages, args.long_batch, args.workers)
            summary["medintake_long_batch"] = lb
            print(f"[{set_name}] long batch: {lb['pages'][0]} pages {lb['cpu_s'][0]} cpu s, {lb['pages'][1]} pages "
                  f"{lb['cpu_s'][1]} cpu s: marginal {lb['marginal_cpu_s_per_page']} cpu s/page, fixed "
                  f"{lb['fixed_cpu_s_per_command']} cpu s per command, failed {len(lb['failed'])}",
                  file=sys.stderr, flush=True)
        report["sets"][set_name] = summary
        for name, s in summary.items():
            if name.startswith("ratios") or name == "medintake_long_batch":
                continue
            acc = f" cer {s['cer_mean']} recall {s['word_recall']}" if "cer_mean" in s else ""
            print(f"[{set_name}] {name:18s} wall {s['wall_s']:7.2f}s cpu {s['cpu_s']:7.2f}s "
                  f"{s['docs_per_min']} docs/min {s['cpu_s_per_page']} cpu s/page{acc} failed {len(s['failed'])}",
                  file=sys.stderr, flush=True)
    report["loadavg_end"] = os.getloadavg()
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
