"""Engine, sessions and migrations for SQLite, MariaDB/MySQL (PyMySQL) and PostgreSQL (psycopg).

SQLite is shared by the dispatcher, the tracker and several worker processes on one machine, so it
runs in WAL mode with a busy timeout: writers queue instead of failing with "database is locked".
A server that goes away (restart, failover, connections killed) is waited out, bounded, when a
transaction starts; a connection lost during one is a retryable error (tests/test_drills_outage.py).
"""
from __future__ import annotations

import logging
import os
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from sqlalchemy import create_engine, event
from sqlalchemy import text as sql_text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from pipeline.errors import ConfigError, TransientError
from pipeline.settings import Settings

log = logging.getLogger("medintake.database")

_ENGINES: dict[str, Engine] = {}
_FACTORIES: dict[Engine, sessionmaker[Session]] = {}  # one per engine (session_factory)
_SECRETS: dict[str, dict] = {}


def normalise_url(url: str) -> str:
    """Pick the drivers we ship: ``mysql://`` -> PyMySQL, ``postgresql://`` -> psycopg 3."""
    u = make_url(url)
    if u.drivername in ("mysql", "mariadb"):
        u = u.set(drivername="mysql+pymysql")
    elif u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")
    if u.drivername.startswith("mysql") and "charset" not in u.query:
        u = u.update_query_dict({"charset": "utf8mb4"})
    return u.render_as_string(hide_password=False)


def database_url(settings: Settings) -> str:
    """The URL to connect with: the settings' URL with the credentials from the database secret.

    On AWS the URL names only the RDS endpoint; the username and password live in Secrets Manager
    (read once per process) so that no credential sits in a Lambda's or a job's environment.
    """
    url = settings.effective_database_url
    if not settings.database_secret:
        return url
    secret = _read_secret(settings)
    u = make_url(url)
    u = u.set(username=str(secret["username"]), password=str(secret["password"]))
    if secret.get("host"):
        u = u.set(host=str(secret["host"]))
    if secret.get("port"):
        u = u.set(port=int(secret["port"]))
    if secret.get("dbname"):
        u = u.set(database=str(secret["dbname"]))
    return u.render_as_string(hide_password=False)


def _read_secret(settings: Settings) -> dict:
    name = settings.database_secret
    if name not in _SECRETS:
        import json

        import boto3
        from botocore.exceptions import BotoCoreError, ClientError

        client = boto3.client("secretsmanager", region_name=settings.aws_region or None)
        try:
            # AWSCURRENT named (the service's default too): the version a finished rotation set
            value = json.loads(client.get_secret_value(SecretId=name, VersionStage="AWSCURRENT")["SecretString"])
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("ResourceNotFoundException", "AccessDeniedException", "DecryptionFailure"):
                raise ConfigError(f"the database secret cannot be read ({code})") from None
            raise TransientError(f"Secrets Manager error ({code})") from None
        except BotoCoreError as exc:
            raise TransientError(f"Secrets Manager unreachable ({type(exc).__name__})") from None
        except (ValueError, TypeError):
            raise ConfigError("the database secret is not a JSON object") from None
        if not isinstance(value, dict) or not value.get("username") or "password" not in value:
            raise ConfigError("the database secret lacks username or password")
        _SECRETS[name] = value
    return _SECRETS[name]


def get_engine(settings: Settings) -> Engine:
    url = normalise_url(database_url(settings))
    key = _engine_key(url, settings)
    engine = _ENGINES.get(key)
    if engine is None:
        engine = _make_engine(url, settings)
        _ENGINES[key] = engine
    return engine


def _engine_key(url: str, settings: Settings) -> str:
    return f"{url} {settings.database_tls} {settings.database_ca_file}"


def _make_engine(url: str, settings: Settings) -> Engine:
    if url.startswith("sqlite"):
        path = make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            # Owner-only whatever the umask (it holds object keys and entity text: PHI); SQLite
            # gives its -wal and -shm files the database file's mode.
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        # hide_parameters: SQLAlchemy's error messages (and SQL logs) otherwise carry the bound
        # values, e.g. an object key with a patient's name, into a Lambda's logged traceback.
        engine = create_engine(url, connect_args={"timeout": 60}, hide_parameters=True)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001
            # pysqlite opens a transaction only before the first write, so a read-then-write
            # (``with_for_update`` is a no-op here) would decide on a stale read: two trackers
            # then overwrite each other's job state and neither decides the document (the race
            # drill found it). Take the write lock at BEGIN instead: transactions are short and
            # the busy timeout queues the others.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn) -> None:  # noqa: ANN001
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    from pipeline.database_tls import connect_args

    engine = create_engine(url, connect_args=connect_args(settings, url), pool_pre_ping=True, pool_recycle=300,
                           hide_parameters=True)

    @event.listens_for(engine, "handle_error")
    def _tls_refused_is_config(context) -> None:  # noqa: ANN001
        # Every path that connects (a transaction, the schema check, a migration) sees it this
        # way: not an outage to wait out, and no driver text (host names) in the message.
        if _tls_refused(context.original_exception):
            raise ConfigError("the database server's TLS certificate was not accepted (its CA is not "
                              "database_ca_file's or the host name differs): check database_tls and "
                              "database_ca_file") from None

    return engine


# Engines a forked child found in its parent: kept referenced, never used (see _forget_engines).
_INHERITED: list[dict[str, Engine]] = []


def _forget_engines() -> None:
    """In a forked child: start with no engine, so nothing talks over the parent's connections.

    A pooled connection copied by fork() is the parent's socket or SQLite handle; a child that
    used it (or closed it on garbage collection) would interleave with the parent's traffic. The
    warm server is a fork of the local command (compute/warm_fork.py) and forks every worker, so
    each child drops the inherited engines from its cache and keeps them referenced so that no
    finalizer ever touches their connections; the child opens its own on first use.
    """
    if _ENGINES:
        _INHERITED.append(dict(_ENGINES))
        _ENGINES.clear()
    _FACTORIES.clear()


os.register_at_fork(after_in_child=_forget_engines)


def dispose_engines() -> None:
    for engine in _ENGINES.values():
        engine.dispose()
    _ENGINES.clear()
    _FACTORIES.clear()
    _SECRETS.clear()


def session_factory(settings: Settings) -> sessionmaker[Session]:
    """One sessionmaker per engine: each new one builds a Session subclass and its event
    dispatch, which cost more than the short transaction it was made for (the tracker runs
    ~36 transactions per document)."""
    engine = get_engine(settings)
    factory = _FACTORIES.get(engine)
    if factory is None:
        factory = _FACTORIES[engine] = sessionmaker(engine, expire_on_commit=False)
    return factory


# Connect-time failures that no wait will cure: wrong credentials or database name.
_MYSQL_PERMANENT = {1044, 1045, 1049}  # access denied to database / for user, unknown database
_POSTGRES_PERMANENT = {"28000", "28P01", "3D000"}  # invalid authorization / password, no such database


def _codes(exc: DBAPIError) -> tuple[int | None, str | None]:
    """The driver's error code: MySQL/MariaDB's number (PyMySQL's first argument), PostgreSQL's SQLSTATE."""
    args = getattr(exc.orig, "args", ())
    errno = args[0] if args and isinstance(args[0], int) else None
    return errno, getattr(exc.orig, "sqlstate", None)


def _permanent(exc: OperationalError) -> bool:
    errno, state = _codes(exc)
    if errno in _MYSQL_PERMANENT or state in _POSTGRES_PERMANENT:
        return True
    text = str(exc.orig)
    return "password authentication failed" in text or ("database" in text and "does not exist" in text)


def _refused_login(exc: OperationalError) -> bool:
    """Wrong user name or password: MySQL 1045, PostgreSQL invalid_password."""
    errno, state = _codes(exc)
    return errno == 1045 or state == "28P01" or "password authentication failed" in str(exc.orig)


def _forget_secret(settings: Settings) -> None:
    """Drop the cached secret and the engine built with its credentials (its pool is closed)."""
    url = normalise_url(database_url(settings))  # still the old credentials: the engine's key
    _SECRETS.pop(settings.database_secret, None)
    key = _engine_key(url, settings)
    engine = _ENGINES.pop(key, None)
    if engine is not None:
        _FACTORIES.pop(engine, None)
        engine.dispose()


def _no_schema(exc: DBAPIError) -> bool:
    """A table of ours is missing: MySQL 1146, PostgreSQL undefined_table, SQLite "no such table"."""
    errno, state = _codes(exc)
    return errno == 1146 or state == "42P01" or "no such table" in str(exc.orig)


def _tls_refused(exc: BaseException) -> bool:
    """A server whose certificate failed verification (not an outage: waiting will not help)."""
    text = str(exc)
    return "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text or (
        "server certificate" in text and "does not match host name" in text)


def _open(settings: Settings, sleep: Callable[[float], None] = time.sleep) -> Session:
    """A session whose transaction has begun on a live connection, waiting out an outage.

    The connection is taken before the caller's work runs (the pool pings it first and replaces a
    dead one), so a server that is restarting or failing over (the outage drill stops MariaDB and
    PostgreSQL mid-run) is retried here with back-off, 0.2 s doubling to 5 s, for at most
    ``database_retry_seconds``; then a retryable TransientError (a worker's exit code says retry,
    the tracker's event is redelivered). Nothing has been done yet, so retrying is always safe.
    """
    factory = session_factory(settings)
    waited, delay = 0.0, 0.2
    secret_reread = False
    while True:
        session = factory()
        try:
            session.connection()  # autobegin: BEGIN (IMMEDIATE on SQLite) on a checked-out connection
            return session
        except OperationalError as exc:
            session.close()
            if _refused_login(exc) and settings.database_secret and not secret_reread:
                # The password was rotated since this process read the secret (a long-lived Lambda
                # container or worker): read it again, once, and connect with the new one.
                secret_reread = True
                _forget_secret(settings)
                factory = session_factory(settings)
                continue
            if _permanent(exc) or waited + delay > settings.database_retry_seconds:
                raise TransientError(f"database unavailable ({type(exc.orig).__name__})") from None
            log.warning("database unavailable (%s); retrying in %.1f s", type(exc.orig).__name__, delay)
            sleep(delay)
            waited += delay
            delay = min(5.0, delay * 2)


@contextmanager
def transaction(settings: Settings) -> Iterator[Session]:
    """A session in one transaction, committed at the end; database outages become retryable
    TransientErrors: waited out (bounded) before the work starts, raised if the connection is lost
    during it (the work is rolled back; its caller's retry starts over)."""
    session = _open(settings)
    try:
        yield session
        session.commit()
    except DBAPIError as exc:
        if _no_schema(exc):  # a server database nobody migrated: say so instead of a traceback
            raise ConfigError("the database has no medintake tables: run `medintake db upgrade` "
                              "(or `medintake deploy`, which migrates) first") from None
        if isinstance(exc, OperationalError):
            raise TransientError(f"database unavailable ({type(exc.orig).__name__})") from None
        raise
    finally:
        session.close()  # rolls back whatever was not committed


def alembic_config(settings: Settings):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.set_main_option("sqlalchemy.url", normalise_url(database_url(settings)).replace("%", "%%"))
    return cfg


_MIGRATIONS = Path(__file__).parent / "migrations" / "versions"
_REVISION_LINE = re.compile(r"""^(revision|down_revision)\s*(?::[^=]*)?=\s*(?:"([^"]*)"|'([^']*)'|(None))\s*$""",
                            re.MULTILINE)


def head_revision() -> str | None:
    """The one head revision of the migrations, read from their files' text; None when unclear.

    Why not alembic: importing it costs ~0.1 CPU s (its dialect helpers import much of SQLAlchemy's
    DDL), paid by every ``medintake`` command only to learn that the database is already at head.
    Anything this simple reading does not understand (a merge's tuple of down revisions, a file
    without one plain ``revision = "..."``, several heads) answers None: then alembic decides.
    """
    revisions: set[str] = set()
    downs: set[str] = set()
    for path in _MIGRATIONS.glob("*.py"):
        found: dict[str, list[str | None]] = {"revision": [], "down_revision": []}
        for m in _REVISION_LINE.finditer(path.read_text(encoding="utf-8")):
            found[m.group(1)].append(m.group(2) if m.group(2) is not None else m.group(3))
        if len(found["revision"]) != 1 or len(found["down_revision"]) != 1 or found["revision"][0] is None:
            return None
        revisions.add(found["revision"][0])
        if found["down_revision"][0] is not None:
            downs.add(found["down_revision"][0])
    heads = revisions - downs
    return heads.pop() if len(heads) == 1 else None


def at_head(settings: Settings) -> bool:
    """Whether the database's ``alembic_version`` holds exactly the migrations' head (one query)."""
    head = head_revision()
    if head is None:
        return False
    try:
        with get_engine(settings).connect() as conn:
            rows = conn.execute(sql_text("SELECT version_num FROM alembic_version")).fetchall()
    except DBAPIError:  # no such table yet (a new database), or no access: alembic decides
        return False
    return [r[0] for r in rows] == [head]


def upgrade(settings: Settings, revision: str = "head") -> None:
    """Create or upgrade the schema (idempotent; safe to call on every start).

    A database already at head is recognised with one query and no alembic import (``at_head``):
    every ``medintake`` command calls this, and most find nothing to do. A new, empty database is
    created at head from the models (``create_at_head``); any other state is alembic's to migrate.
    """
    if revision == "head" and (at_head(settings) or create_at_head(settings)):
        return
    from alembic import command

    cfg = alembic_config(settings)
    with get_engine(settings).begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def create_at_head(settings: Settings) -> bool:
    """Create the schema of a new, empty database straight from the models, stamped at head.

    Why: importing alembic and replaying every migration costs ~0.5 CPU s, the largest part of
    a first ``medintake process`` on one machine (a new SQLite file) and of every new test
    database; the models are the migrations' result (tests/test_database_head.py compares the
    two schemas on SQLite, MariaDB and PostgreSQL), which is alembic's documented way to build
    a database from scratch ("create_all, then stamp head"). False, and nothing done, when the
    database already holds any table (or the migration files have no single head): then alembic
    decides, as before.
    """
    head = head_revision()
    if head is None:
        return False
    from sqlalchemy import inspect

    from pipeline.models import Base

    with get_engine(settings).begin() as conn:
        if inspect(conn).get_table_names():
            return False
        Base.metadata.create_all(conn)
        conn.execute(sql_text(
            "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
            "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"))
        conn.execute(sql_text("INSERT INTO alembic_version (version_num) VALUES (:v)"), {"v": head})
    return True


def current_revision(settings: Settings) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with get_engine(settings).connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def main(argv: list[str] | None = None) -> int:
    """``python -m pipeline.database upgrade``: the one-off migration job ``medintake deploy`` runs."""
    import sys

    from pipeline.logs import configure_logging

    args = sys.argv[1:] if argv is None else argv
    if args != ["upgrade"]:
        print("usage: python -m pipeline.database upgrade", file=sys.stderr)
        return 64
    from pipeline.errors import MedintakeError

    try:
        settings = Settings.load()
        configure_logging(settings.log_level)
        upgrade(settings)
        print(f"database schema at revision {current_revision(settings)}")
    except MedintakeError as exc:
        print(f"migration failed: {exc.message}", file=sys.stderr)
        return int(exc.exit_code)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
