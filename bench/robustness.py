"""Robustness run: public test suites from registry packages through what a worker does.

    .venv/bin/python bench/robustness.py --jobs 2 --json /tmp/robustness.json --md /tmp/robustness.md

1. Corpora (never copied into the repository): the sdists of pillow (``Tests/images``), pypdf and
   pikepdf (their PDFs), python-docx, odfpy and striprtf (their DOCX/ODT/RTF files) are fetched
   with ``pip download --no-binary :all: --no-deps`` into ``--cache`` (default
   ``~/.cache/medintake/robustness``) and unpacked there once; pydicom's ``get_testdata_files()``
   are read in place from the installed package.
2. Every file goes, one at a time in a worker process (``--jobs N`` of them), through the steps of
   the extract and convert jobs, in-process: ``identify`` + ``validate``, ``extract_text``, then
   ``make_renditions`` (stopping at the first rejection, as the pipeline does), under a per-file
   time limit (``--timeout``). The outcome is what the worker boundary (``jobs/__main__.py``) would
   turn into an exit code: ``ok`` (0), ``rejected:<reason_code>`` (65, never retried),
   ``error:<Type>`` (another ``MedintakeError``: its own exit code, retried), ``crash`` (any other
   exception: exit 70, retried, i.e. a FAILED risk), ``timeout``. A worker process that dies
   (signal) is recorded as ``crash`` for the file it was on and restarted.
3. Counts per suite x outcome, time per file (median, p95, max), every crash/timeout with its file,
   exception type and frames (never the message: it may quote the file), and for ``unsupported_type``
   image-suite files the format and mode Pillow sees. Printed, and written with ``--json``/``--md``.

``--suite pillow pydicom`` and ``--limit N`` (first N files of each suite, sorted) run a subset.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = Path.home() / ".cache" / "medintake" / "robustness"
SDISTS = {  # suite -> (package, file selector)
    "pillow": ("pillow",),
    "pypdf": ("pypdf",),
    "pikepdf": ("pikepdf",),
    "office": ("python-docx", "odfpy", "striprtf"),
}
SUITES = ["pillow", "pypdf", "pikepdf", "pydicom", "office"]
OFFICE_EXT = {".docx", ".odt", ".rtf", ".doc"}


# ---------------------------------------------------------------------------------------- corpora
def _unpack(archive: Path, dest: Path) -> Path:
    marker = dest / (archive.name + ".unpacked")
    if not marker.exists():
        if archive.name.endswith(".zip"):
            with zipfile.ZipFile(archive) as z:
                z.extractall(dest)
        else:
            with tarfile.open(archive) as t:
                t.extractall(dest, filter="data")
        marker.write_text("ok\n")
    name = archive.name
    for suffix in (".tar.gz", ".tgz", ".zip", ".tar.bz2"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return dest / name


def fetch_sdist(package: str, cache: Path) -> Path:
    """Download (once) and unpack the newest sdist of ``package``; returns the unpacked folder."""
    dl = cache / "sdist"
    dl.mkdir(parents=True, exist_ok=True)
    norm = package.replace("-", "_").lower()
    found = [p for p in dl.iterdir() if p.is_file() and p.name.lower().replace("-", "_").startswith(norm + "_")
             or p.is_file() and p.name.lower().startswith(package.lower() + "-")]
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-binary", ":all:",
                        "--no-deps", "-d", str(dl), package], check=True)
        found = [p for p in dl.iterdir() if p.is_file() and (
            p.name.lower().replace("-", "_").startswith(norm + "_") or p.name.lower().startswith(package.lower() + "-"))]
    archive = sorted(f for f in found if not f.name.endswith(".unpacked"))[-1]
    return _unpack(archive, dl)


def gather(suites: list[str], cache: Path) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    for suite in suites:
        if suite == "pydicom":
            from pydicom.data import get_testdata_files
            files = [Path(f) for f in get_testdata_files() if Path(f).is_file()]
        elif suite == "pillow":
            root = fetch_sdist("pillow", cache) / "Tests" / "images"
            files = [p for p in root.rglob("*") if p.is_file()]
        elif suite in ("pypdf", "pikepdf"):
            root = fetch_sdist(suite, cache)
            files = [p for p in root.rglob("*") if p.is_file() and p.suffix.lower() == ".pdf"]
        elif suite == "office":
            files = []
            for pkg in SDISTS["office"]:
                root = fetch_sdist(pkg, cache)
                files += [p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in OFFICE_EXT]
        else:
            raise SystemExit(f"unknown suite {suite}")
        out[suite] = sorted(files)
    return out


# ----------------------------------------------------------------------------------------- worker
def _frames(exc: BaseException) -> str:
    import traceback
    return " < ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}"
                      for f in reversed(traceback.extract_tb(exc.__traceback__)))


def _pillow_view(path: Path) -> dict:
    """Format and mode as Pillow sees them (for the rejected image-suite files)."""
    try:
        from PIL import Image
        with Image.open(path) as im:
            return {"pil_format": im.format, "pil_mode": im.mode,
                    "pil_frames": int(getattr(im, "n_frames", 1) or 1)}
    except Exception as exc:  # noqa: BLE001 - only a description
        return {"pil_format": None, "pil_error": type(exc).__name__}


def worker_main(timeout: int) -> None:
    """Read ``suite<TAB>path`` lines on stdin; write one JSON line per file on stdout."""
    import signal
    import shutil
    import warnings
    import logging
    warnings.simplefilter("ignore")
    logging.disable(logging.CRITICAL)
    sys.path.insert(0, str(REPO))
    from jobs.identify import identify, validate
    from jobs.extract.text import extract_text
    from jobs.convert.renditions import make_renditions
    from pipeline.errors import MedintakeError, RejectedInput
    from pipeline.settings import Settings

    class Timeout(BaseException):
        pass

    def on_alarm(*_):
        raise Timeout()

    signal.signal(signal.SIGALRM, on_alarm)
    settings = Settings()
    out = sys.stdout
    sys.stdout = sys.stderr  # library prints never mix with the results
    for line in sys.stdin:
        suite, _, f = line.rstrip("\n").partition("\t")
        src = Path(f)
        rec: dict = {"suite": suite, "file": f, "bytes": src.stat().st_size}
        print(json.dumps({"start": f}), file=out, flush=True)
        work = Path(tempfile.mkdtemp(prefix="robust-"))
        stage = "identify"
        t0 = time.perf_counter()
        signal.alarm(timeout)
        try:
            kind = identify(src, settings)
            validate(src, kind, settings)
            rec["kind"] = kind.kind if hasattr(kind, "kind") else None
            rec["format"] = getattr(kind, "format", None)
            stage = "extract"
            ex_dir = work / "extract"
            ex_dir.mkdir()
            result = extract_text(src, kind, ex_dir, settings)
            rec["pages"] = len(result.pages)
            stage = "convert"
            cv_dir = work / "convert"
            cv_dir.mkdir()
            make_renditions(src, kind, cv_dir, settings)
            rec["outcome"] = "ok"
            rec["exit"] = 0
        except RejectedInput as exc:
            rec["outcome"] = "rejected:" + exc.reason_code
            rec["exit"] = int(exc.exit_code)
        except MedintakeError as exc:
            rec["outcome"] = "error:" + type(exc).__name__
            rec["exit"] = int(exc.exit_code)
            rec["where"] = _frames(exc)
        except Timeout:
            rec["outcome"] = "timeout"
        except Exception as exc:  # noqa: BLE001 - what the worker boundary would call a crash
            rec["outcome"] = "crash"
            rec["exit"] = 70
            rec["exception"] = type(exc).__name__
            rec["where"] = _frames(exc)
        finally:
            signal.alarm(0)
        rec["seconds"] = round(time.perf_counter() - t0, 3)
        rec["stage"] = stage
        shutil.rmtree(work, ignore_errors=True)
        if rec["outcome"] == "rejected:unsupported_type" or (suite == "pillow" and rec["outcome"] != "ok"):
            rec.update(_pillow_view(src))
        print(json.dumps(rec), file=out, flush=True)


# ------------------------------------------------------------------------------------------ parent
class Shard:
    """One worker process, fed one file at a time; restarted if it dies."""

    def __init__(self, timeout: int, nice: int):
        self.timeout, self.nice = timeout, nice
        self.proc: subprocess.Popen | None = None
        self.current: tuple[str, str] | None = None

    def start(self) -> None:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--timeout", str(self.timeout)]
        env = dict(os.environ, OMP_THREAD_LIMIT="1", PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, cwd=REPO, env=env,
                                     preexec_fn=(lambda: os.nice(self.nice)) if self.nice else None)

    def run(self, suite: str, path: str) -> dict:
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        assert self.proc and self.proc.stdin and self.proc.stdout
        t0 = time.perf_counter()
        try:
            self.proc.stdin.write(f"{suite}\t{path}\n")
            self.proc.stdin.flush()
            while True:
                line = self.proc.stdout.readline()
                if not line:
                    break
                rec = json.loads(line)
                if "start" not in rec:
                    return rec
        except BrokenPipeError:
            pass
        code = self.proc.wait()
        self.proc = None
        return {"suite": suite, "file": path, "outcome": "crash", "exit": code,
                "exception": f"worker died (exit {code})", "where": "",
                "seconds": round(time.perf_counter() - t0, 3)}

    def close(self) -> None:
        if self.proc and self.proc.poll() is None:
            assert self.proc.stdin
            self.proc.stdin.close()
            self.proc.wait()


def run_all(files: dict[str, list[Path]], jobs: int, timeout: int, nice: int, progress: bool) -> list[dict]:
    import threading
    queue = [(s, str(p)) for s, ps in files.items() for p in ps]
    lock = threading.Lock()
    results: list[dict] = []
    total = len(queue)

    def loop():
        shard = Shard(timeout, nice)
        try:
            while True:
                with lock:
                    if not queue:
                        return
                    suite, path = queue.pop(0)
                rec = shard.run(suite, path)
                with lock:
                    results.append(rec)
                    if progress and (len(results) % 50 == 0 or rec["outcome"] in ("crash", "timeout")):
                        print(f"  {len(results)}/{total} {rec['outcome']} {Path(path).name}",
                              file=sys.stderr, flush=True)
        finally:
            shard.close()

    threads = [threading.Thread(target=loop) for _ in range(max(1, jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    order = {(s, str(p)): i for i, (s, p) in enumerate((s, p) for s, ps in files.items() for p in ps)}
    results.sort(key=lambda r: order.get((r["suite"], r["file"]), 0))
    return results


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    if not xs:
        return 0.0
    k = min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))
    return xs[k]


def summarise(results: list[dict], cache: Path) -> dict:
    suites = list(dict.fromkeys(r["suite"] for r in results))
    counts = {s: dict(collections.Counter(r["outcome"] for r in results if r["suite"] == s).most_common())
              for s in suites}
    times = {}
    for s in suites + ["all"]:
        xs = [r["seconds"] for r in results if s == "all" or r["suite"] == s]
        times[s] = {"files": len(xs), "median_s": round(statistics.median(xs), 3) if xs else 0,
                    "p95_s": round(_pct(xs, 0.95), 3), "max_s": round(max(xs, default=0), 3),
                    "total_s": round(sum(xs), 1)}
    home = str(Path.home())

    def short(f: str) -> str:
        for root, label in ((str(cache), "<cache>"), (home, "~")):
            if f.startswith(root):
                return label + f[len(root):]
        return f
    bad = [{"suite": r["suite"], "file": short(r["file"]), "outcome": r["outcome"],
            "stage": r.get("stage"), "exception": r.get("exception"), "where": r.get("where"),
            "exit": r.get("exit")}
           for r in results if r["outcome"] in ("crash", "timeout") or r["outcome"].startswith("error:")]
    unsup = collections.Counter()
    for r in results:
        if r["suite"] == "pillow" and r["outcome"] == "rejected:unsupported_type":
            unsup[f"{r.get('pil_format') or 'unreadable by Pillow'} {r.get('pil_mode') or ''}".strip()] += 1
    rejected_pillow = collections.Counter()
    for r in results:
        if r["suite"] == "pillow" and r["outcome"].startswith("rejected:") and r.get("pil_format"):
            rejected_pillow[f"{r['outcome'][9:]}: {r['pil_format']} {r.get('pil_mode')}"] += 1
    slowest = sorted(results, key=lambda r: -r["seconds"])[:5]
    return {
        "files": len(results),
        "counts": counts,
        "times": times,
        "crashes_timeouts_errors": bad,
        "pillow_unsupported_type_by_format_mode": dict(unsup.most_common()),
        "pillow_rejected_readable_by_pillow": dict(rejected_pillow.most_common()),
        "slowest": [{"suite": r["suite"], "file": short(r["file"]), "seconds": r["seconds"],
                     "outcome": r["outcome"]} for r in slowest],
    }


def markdown(summary: dict, meta: dict) -> str:
    outcomes = sorted({o for c in summary["counts"].values() for o in c},
                      key=lambda o: (o != "ok", o.startswith("rejected"), o))
    lines = [f"Run {meta['date']} on {meta['machine']}; `{meta['command']}`", "",
             "| suite | files | " + " | ".join(outcomes) + " |",
             "| --- | ---: | " + " | ".join("---:" for _ in outcomes) + " |"]
    totals = collections.Counter()
    for s, c in summary["counts"].items():
        n = sum(c.values())
        totals.update(c)
        lines.append(f"| {s} | {n} | " + " | ".join(str(c.get(o, 0)) for o in outcomes) + " |")
    lines.append(f"| **all** | {sum(totals.values())} | " + " | ".join(str(totals.get(o, 0)) for o in outcomes) + " |")
    lines += ["", "| suite | files | median s | p95 s | max s | total s |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for s, t in summary["times"].items():
        lines.append(f"| {s} | {t['files']} | {t['median_s']} | {t['p95_s']} | {t['max_s']} | {t['total_s']} |")
    lines += ["", f"Crashes, timeouts and other errors: {len(summary['crashes_timeouts_errors'])}"]
    for b in summary["crashes_timeouts_errors"]:
        lines.append(f"* {b['suite']} `{b['file']}`: {b['outcome']} at {b['stage']} "
                     f"{b.get('exception') or ''} {b.get('where') or ''}")
    if summary["pillow_unsupported_type_by_format_mode"]:
        lines += ["", "Pillow suite, `unsupported_type`, by format and mode as Pillow reads them:", "",
                  "| format mode | files |", "| --- | ---: |"]
        for k, n in summary["pillow_unsupported_type_by_format_mode"].items():
            lines.append(f"| {k} | {n} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--suite", nargs="+", choices=SUITES, default=SUITES)
    ap.add_argument("--limit", type=int, default=0, help="first N files of each suite (0: all)")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--timeout", type=int, default=180, help="seconds per file")
    ap.add_argument("--nice", type=int, default=0, help="niceness of the worker processes")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--md", type=Path)
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker_main(args.timeout)
        return 0
    files = gather(args.suite, args.cache.expanduser())
    if args.limit:
        files = {s: ps[: args.limit] for s, ps in files.items()}
    if not args.quiet:
        print("files: " + ", ".join(f"{s} {len(p)}" for s, p in files.items()), file=sys.stderr)
    t0 = time.time()
    results = run_all(files, args.jobs, args.timeout, args.nice, not args.quiet)
    wall = time.time() - t0
    summary = summarise(results, args.cache.expanduser())
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": f"{platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}",
            "command": "python bench/robustness.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "wall_s": round(wall, 1), "jobs": args.jobs, "timeout_s": args.timeout}
    md = markdown(summary, meta)
    if not args.quiet:
        print(md)
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "summary": summary, "results": results}, indent=1))
    if args.md:
        args.md.write_text(md)
    return 1 if summary["crashes_timeouts_errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
