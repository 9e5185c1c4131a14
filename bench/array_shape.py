"""The two job shapes on the local compute environment: per_document (three jobs per document) vs
array (one array job whose children each run every stage for a slice), same files, same run.

    nice -n 10 .venv/bin/python bench/array_shape.py [--copies 3] [--workers 2]

Each run is a fresh `medintake process` of the same files in its own data folder, in a child
process whose CPU time (user + system, its waited-for descendants included) comes from wait4.
With worker_start=exec every job attempt is a process the CLI waits for, so its CPU is counted;
with fork (the default) attempts are children of the forkserver and only wall time is reported.
Prints one line per (shape, start) and the ratios. Not a test: figures go to
bench/README-array_shape.md.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FILES = REPO / "tests" / "files"
NAMES = ("digital_referral.pdf", "screenshot_labs.png", "phone_photo_exif6.jpg", "scanned_discharge.pdf")


def make_inputs(folder: Path, copies: int) -> list[Path]:
    """``copies`` variants of each file (a trailing comment byte apart: distinct documents)."""
    out = []
    for n in range(copies):
        for name in NAMES:
            dest = folder / f"{n}-{name}"
            shutil.copy(FILES / name, dest)
            with dest.open("ab") as fh:
                fh.write(f"\n%{n}\n".encode())
            out.append(dest)
    return out


def run(shape: str, start: str, inputs: list[Path], workers: int, root: Path) -> dict:
    data = root / f"data-{shape}-{start}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDINTAKE_")}
    env.update(MEDINTAKE_JOB_SHAPE=shape, MEDINTAKE_WORKER_START=start, MEDINTAKE_LOG_LEVEL="WARNING",
               XDG_CACHE_HOME=str(root / "cache"))
    cmd = [sys.executable, "-c", "import cli; cli.main()", "--data-dir", str(data), "process", "--json",
           "--workers", str(workers), *map(str, inputs)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    rows = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    jobs = sum(1 for _ in (data / "logs").glob("*.log"))
    return {"shape": shape, "start": start, "wall_s": round(wall, 2), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "documents": len(rows), "completed": sum(r["status"] == "COMPLETED" for r in rows),
            "job_attempt_logs": jobs, "exit": os.waitstatus_to_exitcode(status)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="medintake-bench-") as tmp:
        root = Path(tmp)
        (root / "in").mkdir()
        inputs = make_inputs(root / "in", args.copies)
        # Warm the ICD-10-CM index cache once so neither shape pays its build.
        run("per_document", "fork", inputs[:1], args.workers, root)
        results = []
        for start in ("exec", "fork"):
            for shape in ("per_document", "array"):
                r = run(shape, start, inputs, args.workers, root)
                results.append(r)
                print(json.dumps(r), flush=True)
        by = {(r["shape"], r["start"]): r for r in results}
        for start in ("exec", "fork"):
            a, b = by[("per_document", start)], by[("array", start)]
            print(f"{start}: per_document/array wall {a['wall_s'] / b['wall_s']:.2f}x"
                  + (f", CPU {a['cpu_s'] / b['cpu_s']:.2f}x" if start == "exec" else "")
                  + f"; job attempts {a['job_attempt_logs']} vs {b['job_attempt_logs']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
