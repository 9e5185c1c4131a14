"""Imported last by the warm server (compute/warm.py): moves everything loaded so far out of the GC.

Why: after the preload the server holds the job code and, where a job definition asks for it, large
engines (tens of thousands of objects). ``gc.freeze()`` puts them in the permanent generation, so a
forked worker's collections never walk them (about 0.1 s per full collection with the entities
engines loaded) and never write to their pages, which then stay shared with the server instead of
being copied into every worker (the reason CPython documents for calling it before fork()).
"""
from __future__ import annotations

import gc

gc.freeze()
