"""Private MariaDB and PostgreSQL servers for the outage drill: started, stopped and restarted at will.

The machine's shared servers (127.0.0.1:3306 and :5432) are used by everyone's tests and must never
be stopped, so the drill starts its own instance of each from the installed binaries, in a fresh
data folder, on a free port and its own socket: ``mariadb-install-db`` + ``mariadbd``, and
``initdb`` + ``pg_ctl`` (as the ``postgres`` user when running as root: initdb refuses root).
``stop()`` is a real shutdown (SIGTERM to mariadbd; ``pg_ctl stop -m fast``, which is PostgreSQL's
SIGINT shutdown, because a SIGTERM "smart" shutdown waits for the pool's idle sessions to leave);
``start()`` brings the same data folder back on the same port.

With ``tls`` (:func:`make_tls_files`: a test CA and a server certificate for ``localhost``) the
server speaks TLS and refuses plain connections (MariaDB ``require_secure_transport``, PostgreSQL
``hostnossl ... reject``), as the stack's RDS instance does (tests/test_database_tls.py).
"""
from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from sqlalchemy import create_engine, text


@dataclass(frozen=True)
class TlsFiles:
    ca: Path  # the test CA's certificate (what a client verifies against)
    cert: Path  # the server's certificate, signed by the CA
    key: Path


def make_tls_files(folder: Path, names: tuple[str, ...] = ("localhost",)) -> TlsFiles:
    """A throw-away CA and a server certificate for ``names`` (DNS names only, so that a client
    reaching the server as 127.0.0.1 sees a name mismatch), valid for a day."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)

    def builder(subject: str, issuer: x509.Name, public_key) -> x509.CertificateBuilder:  # noqa: ANN001
        return (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                .issuer_name(issuer).public_key(public_key).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1)))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "medintake test CA")])
    ca = (builder("medintake test CA", ca_name, ca_key.public_key())
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (builder(names[0], ca_name, key.public_key())
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    files = TlsFiles(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    files.key.chmod(0o600)
    return files


def _admin_ssl() -> ssl.SSLContext:
    """The fixtures' own administrative connections to a TLS-only server: encrypted, unverified."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


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

    def __init__(self, tls: TlsFiles | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="medintake-drill-mariadb-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.tls = tls
        self.proc: subprocess.Popen | None = None
        install = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
        if install is None or not Path("/usr/sbin/mariadbd").exists():
            raise FileNotFoundError("mariadb-install-db / mariadbd not installed")
        subprocess.run([install, "--no-defaults", f"--datadir={self.data}", "--auth-root-authentication-method=normal",
                        "--skip-test-db", *(["--user=root"] if os.geteuid() == 0 else [])],
                       check=True, capture_output=True, timeout=180)
        self.start()
        engine = self._admin_engine()
        with engine.connect() as conn:
            conn.execute(text("CREATE DATABASE drill"))
        engine.dispose()

    def _admin_engine(self):  # noqa: ANN202
        return create_engine(f"mysql+pymysql://root@127.0.0.1:{self.port}/", isolation_level="AUTOCOMMIT",
                             connect_args={"ssl": _admin_ssl()} if self.tls else {})

    @property
    def url(self) -> str:
        return f"mysql+pymysql://root@127.0.0.1:{self.port}/drill"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["/usr/sbin/mariadbd", "--no-defaults", f"--datadir={self.data}", f"--port={self.port}",
             "--bind-address=127.0.0.1", f"--socket={self.dir / 'mysqld.sock'}", f"--pid-file={self.dir / 'mysqld.pid'}",
             "--skip-log-bin", "--innodb-buffer-pool-size=32M", "--max-connections=200",
             *(["--user=root"] if os.geteuid() == 0 else []),
             *([f"--ssl-ca={self.tls.ca}", f"--ssl-cert={self.tls.cert}", f"--ssl-key={self.tls.key}",
                "--require-secure-transport=ON"] if self.tls else [])],
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
        engine = self._admin_engine()
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

    def __init__(self, tls: TlsFiles | None = None) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not found:
            raise FileNotFoundError("PostgreSQL server binaries not installed")
        self.bin = Path(found[-1]).parent
        self.dir = Path(tempfile.mkdtemp(prefix="medintake-drill-postgres-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.tls = None
        if tls is not None:  # the server's own copies, in its folder: it reads them as its user, the
            # key only from a file no one else may read
            self.tls = TlsFiles(tls.ca, self.dir / "server.pem", self.dir / "server.key")
            shutil.copyfile(tls.cert, self.tls.cert)
            shutil.copyfile(tls.key, self.tls.key)
            self.tls.key.chmod(0o600)
        self.user: list[str] = []
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            pw = pwd.getpwnam("postgres")
            for path in (self.dir, *((self.tls.cert, self.tls.key) if self.tls else ())):
                os.chown(path, pw.pw_uid, pw.pw_gid)
            self.user = ["runuser", "-u", "postgres", "--"]
        subprocess.run([*self.user, str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                        "--no-sync"], check=True, capture_output=True, timeout=180)
        if tls is not None:  # TCP only over TLS (the socket stays open to the fixture itself)
            hba = self.data / "pg_hba.conf"
            hba.write_text("local all all trust\nhostssl all all 127.0.0.1/32 trust\n"
                           "hostnossl all all 127.0.0.1/32 reject\n")
        self.start()
        engine = self._admin_engine()
        with engine.connect() as conn:
            conn.execute(text("CREATE DATABASE drill"))
        engine.dispose()

    def _admin_engine(self):  # noqa: ANN202
        return create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres",
                             isolation_level="AUTOCOMMIT", connect_args={"sslmode": "require"} if self.tls else {})

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/drill"

    def _ctl(self, *args: str) -> None:
        subprocess.run([*self.user, str(self.bin / "pg_ctl"), "-D", str(self.data), *args],
                       check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        ssl_options = (f" -c ssl=on -c ssl_cert_file={self.tls.cert} -c ssl_key_file={self.tls.key}"
                       if self.tls else "")
        self._ctl("start", "-w", "-l", str(self.dir / "server.log"), "-o",
                  f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
                  + ssl_options)
        _wait_port(self.port, up=True, timeout=60)

    def stop(self) -> None:
        """A real shutdown (fast: sessions are terminated, as on a failover or a restart)."""
        self._ctl("stop", "-w", "-m", "fast")
        _wait_port(self.port, up=False, timeout=10)

    def drop_connections(self) -> int:
        """pg_terminate_backend every client session of the drill database but this one."""
        engine = self._admin_engine()
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


def private_server(dialect: str, tls: TlsFiles | None = None) -> PrivateMariaDB | PrivatePostgres:
    return PrivateMariaDB(tls) if dialect == "mariadb" else PrivatePostgres(tls)


@contextlib.contextmanager
def serving(dialect: str, tls: TlsFiles | None = None) -> Iterator[PrivateMariaDB | PrivatePostgres]:
    """A private server for a fixture: skipped where the machine has no such server (or the tests
    are told to leave servers alone), closed afterwards with the engines that reached it."""
    import pytest

    from pipeline import database

    if os.environ.get("MEDINTAKE_TEST_SKIP_SERVERS") == "1":
        pytest.skip("MEDINTAKE_TEST_SKIP_SERVERS=1")
    try:
        srv = private_server(dialect, tls)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    try:
        yield srv
    finally:
        database.dispose_engines()
        srv.close()
