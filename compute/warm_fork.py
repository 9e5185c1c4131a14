"""The warm server as a fork of the command itself, not a new interpreter (compute/warm.py).

Why: multiprocessing starts its fork server by executing a new Python, which then imports again
what the ``medintake`` command has already imported (SQLAlchemy, the ORM models, the pipeline
package: ~0.3-0.5 CPU s of every command, a large part of the fixed cost of a short
``medintake process``). Forked from the command *before* it takes its data-folder lock or opens
the database, the server starts with those modules in memory and only imports the job code.

When it is done: only at that early point (:func:`compute.warm.prestart`, called by the local
runtime before anything else), only when this process has exactly one thread (forking a process
with threads is unsafe), and only on the multiprocessing version this was written against (the
fork server's private state is filled in by hand: ``ForkServer`` without an authentication key,
``forkserver.main(listener_fd, alive_r, preload)``). Anything else returns False and the caller
starts the server as multiprocessing does. The server process then behaves as multiprocessing's
own: it serves forks until the command closes its end of the "alive" pipe, its workers restore
the signal handlers it found (here: a new interpreter's), and every exit is ``os._exit``.
"""
from __future__ import annotations

import inspect
import os
import signal
import socket
import sys
import threading

_EXPECTED_MAIN = ["listener_fd", "alive_r", "preload", "main_path", "sys_path"]


def supported() -> bool:
    """Whether multiprocessing's fork server is the one this module knows how to fill in."""
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    try:
        params = list(inspect.signature(forkserver.main).parameters)
    except (TypeError, ValueError):
        return False
    return (server is not None and params == _EXPECTED_MAIN and not hasattr(server, "_forkserver_authkey")
            and all(hasattr(server, a) for a in ("_forkserver_address", "_forkserver_alive_fd",
                                                 "_forkserver_pid", "_lock")))


def single_threaded() -> bool:
    """One Python thread and (on Linux) one OS thread: a fork copies no lock held by another."""
    if threading.active_count() != 1:
        return False
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return True  # no /proc: the Python count is all we can know


def start_from_here(preload: list[str], env: dict[str, str]) -> bool:
    """Fork this process into multiprocessing's fork server, preloading ``preload`` under ``env``.

    True when the server runs (the caller then probes it as usual); False, with nothing changed,
    when it cannot be done safely here.
    """
    from multiprocessing import connection, forkserver, resource_tracker, util

    if not supported() or not single_threaded():
        return False
    server = forkserver._forkserver
    with server._lock:
        if server._forkserver_pid is not None:
            return False  # already running (started the usual way): leave it
        resource_tracker.ensure_running()  # the workers' resource tracker, as ensure_running does first
        listener = socket.socket(socket.AF_UNIX)
        address = connection.arbitrary_address("AF_UNIX")
        listener.bind(address)
        if not util.is_abstract_socket_namespace(address):
            os.chmod(address, 0o600)
        listener.listen()
        alive_r, alive_w = os.pipe()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()  # no buffered output of the command is written again by a worker
            except (AttributeError, OSError, ValueError):
                pass
        pid = os.fork()
        if pid == 0:  # the server
            try:
                os.close(alive_w)
                _become_server(env)
                forkserver.main(listener.fileno(), alive_r, preload)
            except BaseException:  # noqa: BLE001 - SystemExit when the command goes; never unwind into it
                pass
            finally:
                os._exit(0)
        os.close(alive_r)
        listener.close()
        server._forkserver_address = address
        server._forkserver_alive_fd = alive_w
        server._forkserver_pid = pid
    return True


def _become_server(env: dict[str, str]) -> None:
    """In the forked child: the environment and signal handlers a new interpreter would have."""
    os.environ.clear()
    os.environ.update(env)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for name in ("SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGCHLD"):
        sig = getattr(signal, name, None)
        if sig is not None:
            signal.signal(sig, signal.SIG_DFL)
    import tempfile

    tempfile.tempdir = None
