"""Engine, sessions and migrations for SQLite, MariaDB/MySQL (PyMySQL) and PostgreSQL (psycopg).

SQLite is shared by the dispatcher, the tracker and several worker processes on one machine, so it
runs in WAL mode with a busy timeout: writers queue instead of failing with "database is locked".
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from pipeline.errors import TransientError
from pipeline.settings import Settings

_ENGINES: dict[str, Engine] = {}


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


def get_engine(settings: Settings) -> Engine:
    url = normalise_url(settings.effective_database_url)
    engine = _ENGINES.get(url)
    if engine is None:
        engine = _make_engine(url)
        _ENGINES[url] = engine
    return engine


def _make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_recycle=300)


def dispose_engines() -> None:
    for engine in _ENGINES.values():
        engine.dispose()
    _ENGINES.clear()


def session_factory(settings: Settings) -> sessionmaker[Session]:
    return sessionmaker(get_engine(settings), expire_on_commit=False)


@contextmanager
def transaction(settings: Settings) -> Iterator[Session]:
    """A session in one transaction; database outages become retryable TransientErrors."""
    factory = session_factory(settings)
    try:
        with factory() as session, session.begin():
            yield session
    except OperationalError as exc:
        raise TransientError(f"database unavailable ({type(exc.orig).__name__})") from None


def alembic_config(settings: Settings):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.set_main_option("sqlalchemy.url", normalise_url(settings.effective_database_url).replace("%", "%%"))
    return cfg


def upgrade(settings: Settings, revision: str = "head") -> None:
    """Create or upgrade the schema (idempotent; safe to call on every start)."""
    from alembic import command

    cfg = alembic_config(settings)
    with get_engine(settings).begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def current_revision(settings: Settings) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with get_engine(settings).connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
