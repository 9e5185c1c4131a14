"""The cheap "already at head?" check in front of alembic (pipeline/database.py: head_revision, at_head).

Every ``medintake`` command calls ``database.upgrade``; a database already at head must be recognised
without importing alembic, and anything else (new, older, unknown revision) must still be migrated
by alembic exactly as before, on SQLite, MariaDB and PostgreSQL.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sqlalchemy import inspect

from pipeline import database
from pipeline.settings import Settings

REPO = Path(__file__).resolve().parents[1]


def test_head_read_from_the_files_is_alembics_head(tmp_path):
    from alembic.script import ScriptDirectory

    settings = Settings.load(data_dir=tmp_path / "data")
    heads = ScriptDirectory.from_config(database.alembic_config(settings)).get_heads()
    assert [database.head_revision()] == heads


def test_unclear_migration_files_leave_the_decision_to_alembic(tmp_path, monkeypatch):
    versions = tmp_path / "versions"
    versions.mkdir()
    (versions / "a.py").write_text('revision = "a"\ndown_revision = None\n')
    (versions / "b.py").write_text('revision = "b"\ndown_revision = "a"\n')
    monkeypatch.setattr(database, "_MIGRATIONS", versions)
    assert database.head_revision() == "b"
    (versions / "c.py").write_text('revision = "c"\ndown_revision = "a"\n')  # two heads
    assert database.head_revision() is None
    (versions / "c.py").write_text('revision = "c"\ndown_revision = ("a", "b")\n')  # a merge
    assert database.head_revision() is None


def test_a_new_database_is_not_at_head_and_is_migrated(tmp_path):
    settings = Settings.load(data_dir=tmp_path / "data")
    assert not database.at_head(settings)
    database.upgrade(settings)
    assert database.at_head(settings)
    assert database.current_revision(settings) == database.head_revision()
    assert {"documents", "jobs", "notices"} <= set(inspect(database.get_engine(settings)).get_table_names())


def test_an_older_database_is_upgraded_by_alembic(empty_db_settings):
    assert not database.at_head(empty_db_settings)  # no alembic_version table yet
    database.upgrade(empty_db_settings, "0001")
    assert database.current_revision(empty_db_settings) == "0001"
    assert not database.at_head(empty_db_settings)
    database.upgrade(empty_db_settings)
    assert database.at_head(empty_db_settings)
    assert database.current_revision(empty_db_settings) == database.head_revision()
    database.upgrade(empty_db_settings)  # at head: nothing to do, still at head
    assert database.current_revision(empty_db_settings) == database.head_revision()


def _upgrade_imports_alembic(data: Path) -> bool:
    """Whether ``database.upgrade`` on this data folder imports alembic, in a fresh interpreter."""
    probe = (
        "import sys\n"
        "from pipeline import database\n"
        "from pipeline.settings import Settings\n"
        f"database.upgrade(Settings.load(data_dir={str(data)!r}))\n"
        "print('alembic' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    return out.stdout.strip() == "True"


def test_a_database_at_head_is_not_migrated_and_alembic_is_not_imported(tmp_path):
    data = tmp_path / "data"
    database.upgrade(Settings.load(data_dir=data))
    assert not _upgrade_imports_alembic(data)


def _schema(settings: Settings) -> dict:
    """The database's schema as reflected: what a query, an index or a constraint can see."""
    engine = database.get_engine(settings)
    insp = inspect(engine)
    out = {}
    for table in sorted(insp.get_table_names()):
        cols = {c["name"]: (str(c["type"].compile(dialect=engine.dialect)), c["nullable"],
                            str(c.get("default")).strip("'()") if c.get("default") is not None else None)
                for c in insp.get_columns(table)}
        out[table] = {
            "columns": cols,
            "pk": sorted(insp.get_pk_constraint(table)["constrained_columns"]),
            "indexes": sorted((i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in insp.get_indexes(table)),
            "unique": sorted(tuple(u["column_names"]) for u in insp.get_unique_constraints(table)),
            "fks": sorted((tuple(f["constrained_columns"]), f["referred_table"], tuple(f["referred_columns"]),
                           (f.get("options") or {}).get("ondelete")) for f in insp.get_foreign_keys(table)),
        }
    return out


def _drop_everything(settings: Settings) -> None:
    from sqlalchemy import text

    from pipeline.models import Base

    engine = database.get_engine(settings)
    with engine.begin() as conn:
        Base.metadata.drop_all(conn)
        conn.execute(text("DROP TABLE alembic_version"))
    assert inspect(engine).get_table_names() == []


def test_a_new_database_is_created_from_the_models_with_the_migrations_schema(empty_db_settings):
    """The fast path for a new database (create_all + stamp, no alembic) gives exactly the schema
    the migrations build, on each real database; and alembic then finds it at head."""
    assert database.create_at_head(empty_db_settings)
    assert database.at_head(empty_db_settings)
    assert database.current_revision(empty_db_settings) == database.head_revision()
    fast = _schema(empty_db_settings)
    assert {"documents", "jobs", "notices", "alembic_version"} <= set(fast)
    _drop_everything(empty_db_settings)
    from alembic import command

    cfg = database.alembic_config(empty_db_settings)
    with database.get_engine(empty_db_settings).begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    migrated = _schema(empty_db_settings)
    assert fast == migrated
    # A database holding anything is never touched by the fast path.
    assert not database.create_at_head(empty_db_settings)


def test_the_fast_path_leaves_a_database_with_tables_to_alembic(empty_db_settings):
    from sqlalchemy import text

    with database.get_engine(empty_db_settings).begin() as conn:
        conn.execute(text("CREATE TABLE unrelated (id INTEGER PRIMARY KEY)"))
    assert not database.create_at_head(empty_db_settings)
    database.upgrade(empty_db_settings)  # alembic builds the schema beside the foreign table
    assert database.current_revision(empty_db_settings) == database.head_revision()


def test_a_new_database_is_created_without_importing_alembic(tmp_path):
    assert not _upgrade_imports_alembic(tmp_path / "data")
    assert database.at_head(Settings.load(data_dir=tmp_path / "data"))


def test_a_forked_child_never_uses_its_parents_connections(empty_db_settings):
    """A fork (the warm server, its workers) starts with no engine: its queries go over its own
    connections, and the parent's pooled connection still works afterwards."""
    import os

    from sqlalchemy import text

    database.upgrade(empty_db_settings)
    engine = database.get_engine(empty_db_settings)
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))  # a pooled connection now exists in this process
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        code = 1
        try:
            child_engine = database.get_engine(empty_db_settings)
            with child_engine.begin() as conn:
                n = conn.execute(text("SELECT COUNT(*) FROM documents")).scalar()
            code = 0 if child_engine is not engine and n == 0 else 2
        finally:
            os.write(w, bytes([code]))
            os._exit(0)
    os.close(w)
    result = os.read(r, 1)
    os.close(r)
    os.waitpid(pid, 0)
    assert result == b"\x00"
    assert database.get_engine(empty_db_settings) is engine
    with engine.connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar() == 1
