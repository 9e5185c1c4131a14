"""Worker entry point: the boundary where our exceptions become exit codes (SPEC 4).

0 success; 65 rejected input (never retried; the reason is saved on the job row first so the
tracker can report it); any other code is retried by the job definition's retry strategy.
``process --manifest KEY`` is a child of the array shape (docs/scale.md): it runs every stage for
each document of its slice and exits 0 once the slice ran, each document's outcome on its row.
``pages --plan KEY`` is a child of a long document's page-range array job (docs/scale.md, "Long
documents"): it reads range ``AWS_BATCH_JOB_ARRAY_INDEX`` of the plan (jobs/extract/ranges.py).
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import traceback
import os
from pathlib import Path

from jobs.runner import KINDS, run_job, run_slice
from pipeline.errors import ExitCode, MedintakeError
from pipeline.logs import configure_logging
from pipeline.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs", description="Run one medintake worker job.")
    parser.add_argument("kind", choices=sorted([*KINDS, "process", "pages"]))
    parser.add_argument("--document-id")
    parser.add_argument("--attempt", type=int, default=1)
    parser.add_argument("--manifest", help="process: the store key of the array job's manifest")
    parser.add_argument("--plan", help="pages: the store key of the document's page-range plan")
    args = parser.parse_args(argv)
    if ((args.kind == "process") != bool(args.manifest) or (args.kind == "pages") != bool(args.plan)
            or (args.kind not in ("process", "pages") and not args.document_id)):
        parser.error("process takes --manifest, pages takes --plan; the other kinds take --document-id")
    # Batch stops a job with SIGTERM (timeout, termination): unwind so scratch files are removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    log = logging.getLogger("medintake.jobs")
    try:
        settings = Settings.load()
        configure_logging(settings.log_level)
        if args.kind == "process":
            run_slice(settings, args.manifest)
        elif args.kind == "pages":
            from jobs.extract.ranges import run_range  # the extract stage's imports, only for this kind

            run_range(settings, args.plan, int(os.environ.get("AWS_BATCH_JOB_ARRAY_INDEX", "0")))
        else:
            run_job(settings, args.kind, args.document_id, args.attempt)
        return ExitCode.OK
    except MedintakeError as exc:
        # Messages are PHI-free by construction (see pipeline.errors).
        log.error("%s job failed: %s [%s] exit=%d", args.kind, exc.message, type(exc).__name__, exc.exit_code)
        return int(exc.exit_code)
    except Exception as exc:  # a bug: retryable. The message may hold PHI: log type and frames only
        frames = " < ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}"
                            for f in reversed(traceback.extract_tb(exc.__traceback__)))
        log.error("%s job crashed: %s at %s", args.kind, type(exc).__name__, frames)
        return int(ExitCode.INTERNAL)


if __name__ == "__main__":
    sys.exit(main())
