"""Loads the local entities engines at import: for a warm server to fork workers from.

A job definition lists this module in ``MEDINTAKE_WARM_PRELOAD`` (compute/warm.py); the local
compute environment's warm server then imports it once, and every worker forked afterwards finds
the lexicons, the CRF model with its dictionaries and the ICD-10-CM index already in memory
(shared copy-on-write) instead of loading them itself: ~0.5 CPU s per worker process, paid once
per ``medintake process`` command instead. The settings are the environment's, which the server
gets from the first attempt (``MEDINTAKE_*``), so the engines are those the workers would load;
any other cache folder or backend is simply loaded by the worker as before.

Never raises: a server whose preload fails must still fork workers (multiprocessing's forkserver
ignores only ImportError), and those workers then load what they need themselves.
"""
from __future__ import annotations

LOADED: tuple[str, ...] = ()

try:
    from jobs.entities.detect import warm
    from pipeline.settings import Settings

    LOADED = warm(Settings.load())
except Exception:  # noqa: BLE001 - see the docstring: the server must come up whatever happens here
    LOADED = ()
