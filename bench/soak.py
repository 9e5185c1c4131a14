"""Soak: the reliability drills at the issue's full size, too long for CI (bench/README-soak.md).

    python bench/soak.py                       # 500 local + 200 AWS-path uploads, 30 s outages
    python bench/soak.py --only local --local 500 --rounds 3
    python bench/soak.py --only outage --outage 30 --outage-documents 20

The drills are the CI tests' own code (tests/drills/, tests/test_drills_outage.py) with the counts
and the stop length raised: the same checks run (every upload final, one notice each, no duplicate
document, job, Batch job, page or notice row) and the figures are printed, one line per drill, and
written as JSON with ``--json``. The AWS-path burst and the outage drill need the machine's MariaDB
(the burst's database) and the MariaDB/PostgreSQL server binaries (private instances).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]


def local(count: int, rounds: int, workers: int) -> list[dict]:
    from drills.burst import run_local_burst
    from drills.documents import percentile

    out = []
    for r in range(rounds):
        with tempfile.TemporaryDirectory(prefix="medintake-soak-") as tmp:
            figures, _ = run_local_burst(Path(tmp), count, workers=workers, max_seconds=6 * 3600)
        print(figures.line(f"burst (local, round {r + 1}/{rounds})"), flush=True)
        out.append({"drill": "burst-local", "round": r + 1, "documents": count, "seconds": round(figures.seconds, 1),
                    "per_minute": round(figures.per_minute, 1), "by_kind": figures.by_kind,
                    "p50": round(percentile(figures.latencies, 50), 1),
                    "p95": round(percentile(figures.latencies, 95), 1), "statuses": figures.statuses})
    return out


def aws(count: int) -> list[dict]:
    from conftest import MYSQL_URL, _server_database
    from drills.aws_burst import run_aws_burst
    from drills.documents import percentile

    db = _server_database(MYSQL_URL, "mysql")
    url = next(db)
    try:
        with tempfile.TemporaryDirectory(prefix="medintake-soak-") as tmp:
            figures = run_aws_burst(Path(tmp), count, url)
    finally:
        next(db, None)
    print(figures.line("burst (AWS path on moto)"), flush=True)
    return [{"drill": "burst-aws", "documents": count, "seconds": round(figures.seconds, 1),
             "per_minute": round(figures.per_minute, 1), "by_kind": figures.by_kind,
             "p50": round(percentile(figures.latencies, 50), 1), "p95": round(percentile(figures.latencies, 95), 1),
             "statuses": figures.statuses}]


def outage(seconds: float, documents: int) -> list[dict]:
    from drills.servers import private_server
    from pipeline import database
    from test_drills_outage import run_outage_drill

    out = []
    for dialect in ("mariadb", "postgres"):
        server = private_server(dialect)
        try:
            with tempfile.TemporaryDirectory(prefix="medintake-soak-") as tmp:
                figures = run_outage_drill(server, Path(tmp), seconds, documents)
        finally:
            database.dispose_engines()
            server.close()
        print(f"outage ({dialect}): {json.dumps(figures, sort_keys=True)}", flush=True)
        out.append({"drill": f"outage-{dialect}", **figures})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["local", "aws", "outage"], action="append",
                        help="run only these drills (repeatable); default all")
    parser.add_argument("--local", type=int, default=500, help="local burst size (default 500)")
    parser.add_argument("--rounds", type=int, default=1, help="local bursts one after the other (default 1)")
    parser.add_argument("--workers", type=int, default=2, help="local worker processes (default 2)")
    parser.add_argument("--aws", type=int, default=200, help="AWS-path burst size (default 200)")
    parser.add_argument("--outage", type=float, default=30.0, help="seconds each database server is down (default 30)")
    parser.add_argument("--outage-documents", type=int, default=20, help="documents in flight in the outage drill")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    only = set(args.only or ["local", "aws", "outage"])
    t0 = time.monotonic()
    results: list[dict] = []
    if "local" in only:
        results += local(args.local, args.rounds, args.workers)
    if "aws" in only:
        results += aws(args.aws)
    if "outage" in only:
        results += outage(args.outage, args.outage_documents)
    print(f"soak done in {time.monotonic() - t0:.0f} s", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":  # the local compute's forkserver re-imports __main__: keep the guard
    raise SystemExit(main())
