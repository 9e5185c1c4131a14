"""Imported last by the warm server (compute/warm.py): finishes the libraries' lazy loads, then moves
everything loaded so far out of the GC.

Why the lazy loads: a library the server imported may still load parts of itself on first use, in
every forked worker again. Measured in the workers of a ``medintake process`` command (2026-11-28):
Pillow's full plugin registry (``Image.init()``, 0.03 s: saving WebP is not in its ``preinit``),
``numpy.ma`` (0.02 s, loaded lazily by numpy 2) and SQLAlchemy's SQLite dialect (0.03 s with its
aiosqlite/pysqlcipher modules, loaded by ``create_engine``). Each is loaded here only when its
library is already in the server, and only what every worker then loads anyway; none starts a
thread. A failure only means the workers load it themselves.

Why the freeze: after the preload the server holds the job code and, where a job definition asks
for it, large engines (tens of thousands of objects). ``gc.freeze()`` puts them in the permanent
generation, so a forked worker's collections never walk them (about 0.1 s per full collection with
the entities engines loaded) and never write to their pages, which then stay shared with the server
instead of being copied into every worker (the reason CPython documents for calling it before fork()).
"""
from __future__ import annotations

import gc

from compute.warm import complete_lazy_loads


LOADED = complete_lazy_loads()
gc.freeze()
