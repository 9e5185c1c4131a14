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


def test_a_database_at_head_is_not_migrated_and_alembic_is_not_imported(tmp_path):
    data = tmp_path / "data"
    database.upgrade(Settings.load(data_dir=data))
    probe = (
        "import sys\n"
        "from pipeline import database\n"
        "from pipeline.settings import Settings\n"
        f"database.upgrade(Settings.load(data_dir={str(data)!r}))\n"
        "print('alembic' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
