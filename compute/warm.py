"""Warm starts for local worker attempts: fork them from a server that has the job code imported.

Starting ``python -m jobs`` costs about 0.35 s of interpreter start and imports (SQLAlchemy alone
is 0.3 s) before a job does any work, three times per document; on small uploads that was most of
the pipeline's CPU. A job definition's command ``python -m MODULE ARGS...`` names the module to
run; the multiprocessing forkserver imports that module once (never by a name written here: the
compute layer knows job definitions, not job code), and every attempt is a fresh fork of it that
runs the module as ``python -m`` would (``runpy``): still one process per attempt, in its own
session (process group), with its own environment, working directory, log file and exit status,
so kills, timeouts and retries behave exactly as with a new interpreter. Modules that start
threads at import (numpy's BLAS pool, OpenCV) are not preloaded, since forking a process that has
threads is unsafe.
"""
from __future__ import annotations

import importlib.util
import multiprocessing
import os
import runpy
import sys
import warnings
from pathlib import Path
from typing import Any

#: Libraries most jobs decode with, thread-free at import (added to the command's own module).
PRELOAD_LIBRARIES = ["PIL.Image", "pypdfium2"]

_context: Any = None


def _forkserver(module: str) -> Any:
    """The forkserver context; the first command's module is preloaded with the libraries."""
    global _context
    if _context is None:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload([*PRELOAD_LIBRARIES, _main_module(module)])
        _context = ctx
    return _context


def _main_module(module: str) -> str:
    """What ``python -m module`` executes: the module, or a package's ``__main__``."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return module
    return f"{module}.__main__" if spec is not None and spec.submodule_search_locations else module


def python_module_command(cmd: list[str]) -> tuple[str, list[str]] | None:
    """``(module, arguments)`` when ``cmd`` is ``python -m MODULE ARGS...``, else None."""
    if len(cmd) >= 3 and Path(cmd[0]).name.startswith("python") and cmd[1] == "-m":
        return cmd[2], cmd[3:]
    return None


def _child(module: str, argv: list[str], env: dict[str, str], log_path: str, cwd: str) -> None:
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
    sys.argv = [module, *argv]
    with warnings.catch_warnings():
        # runpy notes that the preloaded module is already imported: that is the point here.
        warnings.filterwarnings("ignore", category=RuntimeWarning, module="runpy")
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    sys.exit(0)


class WarmProcess:
    """The subset of ``subprocess.Popen`` the local compute environment uses."""

    def __init__(self, module: str, argv: list[str], env: dict[str, str], log_path: Path, cwd: str) -> None:
        self._process = _forkserver(module).Process(target=_child, args=(module, argv, env, str(log_path), cwd))
        self._process.start()
        self.pid = self._process.pid

    def poll(self) -> int | None:
        return self._process.exitcode  # negative: killed by that signal, like Popen.returncode

    def wait(self) -> int | None:
        self._process.join()
        return self._process.exitcode
