"""``python -m jobs.pages --plan KEY``: a child of a long document's ``pages`` array job.

The entry point of job_definitions/pages.json; the work is in jobs/extract/ranges.py (a module of
its own here so that running it never re-executes a module the worker already imported).
"""
from __future__ import annotations

import sys

from jobs.extract.ranges import main

if __name__ == "__main__":
    sys.exit(main())
