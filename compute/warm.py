"""Warm starts for local worker attempts: fork them from a server that has the job code imported.

Starting ``python -m jobs`` costs about 0.35 s of interpreter start and imports (SQLAlchemy alone
is 0.3 s) before a job does any work, three times per document; on small uploads that was most of
the pipeline's CPU. The multiprocessing forkserver imports the job modules once; every attempt is a
fresh fork of it: still one process per attempt, in its own session (process group), with its own
environment, working directory, log file and exit status, so kills, timeouts and retries behave
exactly as with a new interpreter. Modules that start threads at import (numpy's BLAS pool,
OpenCV) are not preloaded, since forking a process that has threads is unsafe.
"""
from __future__ import annotations

import multiprocessing
import os
import sys
from pathlib import Path
from typing import Any

PRELOAD = [
    "jobs.__main__",
    "jobs.runner",
    "pipeline.repository",
    "pipeline.store",
    "pipeline.detect",
    "pipeline.database",
    "PIL.Image",
    "pypdfium2",
]

_context: Any = None


def _forkserver() -> Any:
    global _context
    if _context is None:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        _context = ctx
    return _context


def jobs_argv(cmd: list[str]) -> list[str] | None:
    """The arguments after ``python -m jobs`` when ``cmd`` is our worker command, else None."""
    if len(cmd) >= 3 and Path(cmd[0]).name.startswith("python") and cmd[1:3] == ["-m", "jobs"]:
        return cmd[3:]
    return None


def _child(argv: list[str], env: dict[str, str], log_path: str, cwd: str) -> None:
    os.setsid()  # own process group, as start_new_session gives a subprocess
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    import tempfile

    tempfile.tempdir = None  # honour this attempt's TMPDIR, not a value cached before the fork
    from jobs.__main__ import main

    sys.exit(main(argv))


class WarmProcess:
    """The subset of ``subprocess.Popen`` the local compute environment uses."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path, cwd: str) -> None:
        self._process = _forkserver().Process(target=_child, args=(argv, env, str(log_path), cwd))
        self._process.start()
        self.pid = self._process.pid

    def poll(self) -> int | None:
        return self._process.exitcode  # negative: killed by that signal, like Popen.returncode

    def wait(self) -> int | None:
        self._process.join()
        return self._process.exitcode
