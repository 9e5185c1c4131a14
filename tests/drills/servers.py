"""Private MariaDB and PostgreSQL servers for the outage drill: started, stopped and restarted at will.

The machine's shared servers (127.0.0.1:3306 and :5432) are used by everyone's tests and must never
be stopped, so the drill starts its own instance of each from the installed binaries, in a fresh
data folder, on a free port and its own socket: ``mariadb-install-db`` + ``mariadbd``, and
``initdb`` + ``pg_ctl`` (as the ``postgres`` user when running as root: initdb refuses root).
``stop()`` is a real shutdown (SIGTERM to mariadbd; ``pg_ctl stop -m fast``, which is PostgreSQL's
SIGINT shutdown, because a SIGTERM "smart" shutdown waits for the pool's idle sessions to leave);
``start()`` brings the same data folder back on the same port.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from sqlalchemy import create_engine, text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, up: bool, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.2)
            is_up = s.connect_ex(("127.0.0.1", port)) == 0
        if is_up == up:
            return
        time.sleep(0.1)
    raise TimeoutError(f"port {port} still {'down' if up else 'up'} after {timeout} s")


class PrivateMariaDB:
    dialect = "mariadb"

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="medintake-drill-mariadb-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        install = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
        if install is None or not Path("/usr/sbin/mariadbd").exists():
            raise FileNotFoundError("mariadb-install-db / mariadbd not installed")
        subprocess.run([install, "--no-defaults", f"--datadir={self.data}", "--auth-root-authentication-method=normal",
                        "--skip-test-db", *(["--user=root"] if os.geteuid() == 0 else [])],
                       check=True, capture_output=True, timeout=180)
        self.start()
        engine = create_engine(f"mysql+pymysql://root@127.0.0.1:{self.port}/", isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text("CREATE DATABASE drill"))
        engine.dispose()

    @property
    def url(self) -> str:
        return f"mysql+pymysql://root@127.0.0.1:{self.port}/drill"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["/usr/sbin/mariadbd", "--no-defaults", f"--datadir={self.data}", f"--port={self.port}",
             "--bind-address=127.0.0.1", f"--socket={self.dir / 'mysqld.sock'}", f"--pid-file={self.dir / 'mysqld.pid'}",
             "--skip-log-bin", "--innodb-buffer-pool-size=32M", "--max-connections=200",
             *(["--user=root"] if os.geteuid() == 0 else [])],
            stdout=(self.dir / "server.log").open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
        _wait_port(self.port, up=True, timeout=60)

    def stop(self, patience: float = 30.0) -> None:
        """A real shutdown: SIGTERM, as systemd or an operator stops the server.

        mariadbd ignores SIGTERM until its signal thread runs, the last step of its start-up; a
        start that stalls before it (seen here once under load: the main thread parked in the
        deadlock-handler start-up, no "ready for connections") would ignore it for good, so after
        ``patience`` seconds the server is killed, as systemd would after TimeoutStopSec.
        """
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=patience)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.proc = None
        _wait_port(self.port, up=False, timeout=10)

    def drop_connections(self) -> int:
        """KILL CONNECTION every client session but this one; returns how many."""
        engine = create_engine(f"mysql+pymysql://root@127.0.0.1:{self.port}/", isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                ids = [r[0] for r in conn.execute(text(
                    "SELECT id FROM information_schema.processlist WHERE db = 'drill' AND id <> CONNECTION_ID()"))]
                for i in ids:
                    try:
                        conn.execute(text(f"KILL CONNECTION {int(i)}"))
                    except Exception:  # noqa: BLE001 - it may have ended on its own meanwhile
                        pass
            return len(ids)
        finally:
            engine.dispose()

    def close(self) -> None:
        if self.proc is not None:
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class PrivatePostgres:
    dialect = "postgres"

    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not found:
            raise FileNotFoundError("PostgreSQL server binaries not installed")
        self.bin = Path(found[-1]).parent
        self.dir = Path(tempfile.mkdtemp(prefix="medintake-drill-postgres-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.user: list[str] = []
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self.user = ["runuser", "-u", "postgres", "--"]
        subprocess.run([*self.user, str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                        "--no-sync"], check=True, capture_output=True, timeout=180)
        self.start()
        engine = create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres",
                               isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text("CREATE DATABASE drill"))
        engine.dispose()

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/drill"

    def _ctl(self, *args: str) -> None:
        subprocess.run([*self.user, str(self.bin / "pg_ctl"), "-D", str(self.data), *args],
                       check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        self._ctl("start", "-w", "-l", str(self.dir / "server.log"), "-o",
                  f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200")
        _wait_port(self.port, up=True, timeout=60)

    def stop(self) -> None:
        """A real shutdown (fast: sessions are terminated, as on a failover or a restart)."""
        self._ctl("stop", "-w", "-m", "fast")
        _wait_port(self.port, up=False, timeout=10)

    def drop_connections(self) -> int:
        """pg_terminate_backend every client session of the drill database but this one."""
        engine = create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres",
                               isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                return len(list(conn.execute(text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = 'drill' AND pid <> pg_backend_pid()"))))
        finally:
            engine.dispose()

    def close(self) -> None:
        try:
            self._ctl("stop", "-w", "-m", "immediate")
        except subprocess.CalledProcessError:
            pass  # already stopped
        shutil.rmtree(self.dir, ignore_errors=True)


def private_server(dialect: str) -> PrivateMariaDB | PrivatePostgres:
    return PrivateMariaDB() if dialect == "mariadb" else PrivatePostgres()
