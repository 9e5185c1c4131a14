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

A job definition may name more modules for the server to import once, comma-separated in its
environment variable ``MEDINTAKE_WARM_PRELOAD`` (the entities engines' loader, say: ~0.5 s per
worker otherwise). Compute still names no job code: the list is the definition's. The server
starts with the first attempt's settings in its environment (``MEDINTAKE_*``, the definition's
variables such as ``OPENBLAS_NUM_THREADS``), so what it preloads is what that attempt would load.
If the server nevertheless has more than one thread once it is up (a preloaded module started
one), every attempt is started as a new interpreter instead, with a warning: slower, never unsafe.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import multiprocessing
import os
import runpy
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger("medintake.compute.warm")

#: Libraries most jobs decode with, thread-free at import (added to the command's own module).
PRELOAD_LIBRARIES = ["PIL.Image", "pypdfium2"]
#: The job definition's variable naming more modules to preload (comma-separated).
PRELOAD_ENV = "MEDINTAKE_WARM_PRELOAD"
#: Imported after everything else: freezes the preloaded objects out of the workers' GC.
FREEZE_MODULE = "compute.warm_freeze"
#: Per-attempt variables the server must not inherit from the first attempt.
_ATTEMPT_ONLY = ("AWS_BATCH_JOB_ID", "AWS_BATCH_JOB_ATTEMPT", "AWS_BATCH_JOB_ARRAY_INDEX", "TMPDIR")

_context: Any = None
_unsafe = False  # the server turned out to have threads: attempts are started with exec instead


def preload_modules(module: str, env: dict[str, str]) -> list[str]:
    """What the server imports: the libraries, the command's module, the definition's list, the freeze."""
    extra = [m.strip() for m in env.get(PRELOAD_ENV, "").split(",") if m.strip()]
    return [*PRELOAD_LIBRARIES, _main_module(module), *extra, FREEZE_MODULE]


_forked_here = False  # the running server was forked from this process (compute/warm_fork.py)


def prestart(module: str, env: dict[str, str]) -> bool:
    """Start the server now, as a fork of this process (compute/warm_fork.py) when that is safe.

    For the local runtime to call before it takes its lock or opens the database, with the
    module and environment its first attempt will have: the server then skips the imports this
    process has already made. True when the server was forked from here.
    """
    if _context is not None:
        return False
    _forkserver(module, env, from_here=True)
    return _forked_here


def _forkserver(module: str, env: dict[str, str], from_here: bool = False) -> Any:
    """The forkserver context, started now with the first attempt's module, preload list and settings."""
    global _context, _unsafe, _forked_here
    if _context is None:
        ctx = multiprocessing.get_context("forkserver")
        preload = preload_modules(module, env)
        ctx.set_forkserver_preload(preload)
        if from_here:
            from compute.warm_fork import start_from_here

            _forked_here = start_from_here(preload, _server_env(env))
        try:
            with _server_environment(env):
                probe = ctx.Process(target=os._exit, args=(0,))  # starts the server; the preload runs now
                probe.start()
                probe.join()
        except (OSError, EOFError) as exc:  # the server died in its preload (a module raised)
            log.warning("warm server did not start (%s): starting workers with exec", type(exc).__name__)
            _unsafe = True
        threads = server_threads()
        if not _unsafe and threads is not None and threads > 1:
            log.warning("warm server has %d threads after its preload: starting workers with exec", threads)
            _unsafe = True
        _context = ctx
    return _context


def _server_env(env: dict[str, str]) -> dict[str, str]:
    """The server's environment: this process's with the attempt's on top, minus per-attempt values."""
    return {**os.environ, **{k: v for k, v in env.items() if k not in _ATTEMPT_ONLY}}


@contextlib.contextmanager
def _server_environment(env: dict[str, str]) -> Iterator[None]:
    """This process's environment, for the moment the server starts, is the attempt's (minus per-attempt values)."""
    saved = dict(os.environ)
    try:
        os.environ.update(_server_env(env))
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def server_threads() -> int | None:
    """OS threads of the running forkserver (Linux /proc), or None when that cannot be read."""
    from multiprocessing import forkserver

    pid = getattr(forkserver._forkserver, "_forkserver_pid", None)
    try:
        return len(os.listdir(f"/proc/{pid}/task")) if pid else None
    except OSError:
        return None


def _database_scheme() -> str:
    """The configured database's scheme (``sqlite`` by default), from the settings the server has."""
    try:
        from pipeline.settings import Settings

        return Settings.load().effective_database_url.split(":", 1)[0].split("+", 1)[0]
    except Exception:  # noqa: BLE001 - a preload never stops the server
        return ""


def complete_lazy_loads(modules: dict | None = None) -> list[str]:
    """Load the lazily loaded parts of libraries already imported; returns what was loaded."""
    modules = sys.modules if modules is None else modules
    loaded: list[str] = []
    wanted: list[str] = []
    if "numpy" in modules:
        wanted.append("numpy.ma")
    if "sqlalchemy" in modules and _database_scheme() == "sqlite":
        wanted.append("sqlalchemy.dialects.sqlite")
    for name in wanted:
        try:
            importlib.import_module(name)
            loaded.append(name)
        except Exception:  # noqa: BLE001
            pass
    if "PIL.Image" in modules:
        try:
            modules["PIL.Image"].init()
            loaded.append("PIL.Image.init")
        except Exception:  # noqa: BLE001
            pass
    return loaded


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
        ctx = _forkserver(module, env)
        self._popen: subprocess.Popen[bytes] | None = None
        if _unsafe:
            with log_path.open("wb") as log_fh:
                self._popen = subprocess.Popen(
                    [sys.executable, "-m", module, *argv], env=env, stdin=subprocess.DEVNULL, stdout=log_fh,
                    stderr=subprocess.STDOUT, start_new_session=True, cwd=cwd)
            self.pid = self._popen.pid
            return
        self._process = ctx.Process(target=_child, args=(module, argv, env, str(log_path), cwd))
        self._process.start()
        self.pid = self._process.pid

    def poll(self) -> int | None:
        if self._popen is not None:
            return self._popen.poll()
        return self._process.exitcode  # negative: killed by that signal, like Popen.returncode

    def wait(self) -> int | None:
        if self._popen is not None:
            return self._popen.wait()
        self._process.join()
        return self._process.exitcode
