"""The database layer on SQLite, MariaDB and PostgreSQL: migrations and idempotency rules."""
from __future__ import annotations

import threading
import uuid

import pytest
from sqlalchemy import inspect

from pipeline import database, repository
from pipeline.batch_events import JobStateChange
from pipeline.events import UploadRef
from pipeline.models import Entity, Job, Page


def ref(key: str = "uploads/Jane Doe.pdf", version: str = "v1") -> UploadRef:
    return UploadRef("bucket", key, version, "etag", 123)


def change(job_id: str, status: str, tries: int = 0, exit_code=None, event_id=None, reason=None):
    return JobStateChange(event_id or str(uuid.uuid4()), job_id, "medintake-extract-x-a1", status, reason, tries,
                          exit_code, None, {}, None, None)


def test_migrations_create_the_schema_and_are_idempotent(db_settings):
    database.upgrade(db_settings)  # second run: nothing to do
    from alembic.script import ScriptDirectory

    heads = ScriptDirectory.from_config(database.alembic_config(db_settings)).get_heads()
    assert len(heads) == 1  # one chain of migrations, however many helpers added one
    assert database.current_revision(db_settings) == heads[0]
    tables = set(inspect(database.get_engine(db_settings)).get_table_names())
    assert {"documents", "jobs", "events", "pages", "entities", "renditions", "notices"} <= tables


def test_registration_is_idempotent(db_settings):
    doc, created = repository.register_document(db_settings, ref())
    again, created_again = repository.register_document(db_settings, ref())
    assert created and not created_again and again.id == doc.id
    other, created_other = repository.register_document(db_settings, ref(version="v2"))
    assert created_other and other.id != doc.id


def test_concurrent_registration_creates_one_document(db_settings):
    results = []

    def go():
        results.append(repository.register_document(db_settings, ref(key="uploads/race.pdf")))

    threads = [threading.Thread(target=go) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(1 for _, created in results if created) == 1
    assert len({d.id for d, _ in results}) == 1


def test_claim_is_conditional(db_settings):
    doc, _ = repository.register_document(db_settings, ref())
    assert repository.claim(db_settings, doc.id, 1, "RECEIVED", "QUEUED")
    assert not repository.claim(db_settings, doc.id, 1, "RECEIVED", "QUEUED")
    assert repository.get_document(db_settings, doc.id).status == "QUEUED"


def _job(db_settings, doc_id, kind="extract"):
    job = Job(id=str(uuid.uuid4()), document_id=doc_id, attempt=1, kind=kind, name=f"medintake-{kind}-{doc_id}-a1",
              status="SUBMITTED", tries=0, depends_on=[])
    repository.add_job(db_settings, job)
    return job


def test_job_events_are_recorded_once_and_never_go_backwards(db_settings):
    doc, _ = repository.register_document(db_settings, ref())
    job = _job(db_settings, doc.id)
    running = change(job.id, "RUNNING", event_id="e-1")
    assert repository.record_job_event(db_settings, running).status == "RUNNING"
    assert repository.record_job_event(db_settings, running) is None  # duplicate delivery
    assert repository.record_job_event(db_settings, change(job.id, "RUNNABLE", 0)).status == "RUNNING"  # stale
    retried = repository.record_job_event(db_settings, change(job.id, "RUNNABLE", 1, exit_code=137))
    assert retried.status == "RUNNABLE" and retried.tries == 1  # a retry is newer
    done = repository.record_job_event(db_settings, change(job.id, "SUCCEEDED", 2, exit_code=0))
    assert done.status == "SUCCEEDED" and done.exit_code == 0
    assert repository.record_job_event(db_settings, change("unknown-job", "RUNNING")) is None


def test_event_before_insert_creates_the_job(db_settings):
    doc, _ = repository.register_document(db_settings, ref())
    job_id = str(uuid.uuid4())
    c = JobStateChange("e-x", job_id, f"medintake-convert-{doc.id}-a1", "RUNNABLE", None, 0, None, None,
                       {"document_id": doc.id, "attempt": "1"}, None, None)
    job = repository.record_job_event(db_settings, c)
    assert job.kind == "convert" and job.status == "RUNNABLE"
    late = Job(id=job_id, document_id=doc.id, attempt=1, kind="convert", name=c.job_name, status="SUBMITTED",
               tries=0, depends_on=["x"])
    repository.add_job(db_settings, late)  # the dispatcher's insert arrives second: no error
    assert repository.get_job(db_settings, job_id).status == "RUNNABLE"


def test_finalize_once_per_attempt_with_one_notice(db_settings):
    doc, _ = repository.register_document(db_settings, ref())
    first = repository.finalize(db_settings, doc.id, 1, "COMPLETED", None, {"n": 1})
    second = repository.finalize(db_settings, doc.id, 1, "FAILED", ("x", "y"), {"n": 2})
    assert first is not None and second is None
    assert repository.get_document(db_settings, doc.id).status == "COMPLETED"
    assert len(repository.unsent_notices(db_settings)) == 1
    attempt = repository.start_new_attempt(db_settings, doc.id)
    assert attempt == 2
    assert repository.finalize(db_settings, doc.id, 2, "REJECTED", ("empty_file", "empty"), {}) is not None
    assert len(repository.unsent_notices(db_settings)) == 2


def test_notice_lease(db_settings):
    doc, _ = repository.register_document(db_settings, ref())
    notice = repository.finalize(db_settings, doc.id, 1, "COMPLETED", None, {})
    assert repository.claim_notice(db_settings, notice.id)
    assert not repository.claim_notice(db_settings, notice.id)  # held by the first publisher
    # An expired lease is not retaken blindly (the publish's outcome is unknown) unless asked.
    assert not repository.claim_notice(db_settings, notice.id, lease_seconds=-1)
    assert repository.claim_notice(db_settings, notice.id, lease_seconds=-1, resend_unknown=True)
    repository.mark_sent(db_settings, notice.id)
    assert repository.unsent_notices(db_settings) == []


def test_results_are_replaced_not_mixed(db_settings):
    doc, _ = repository.register_document(db_settings, ref())
    pages = [Page(document_id=doc.id, page_no=i, source="ocr", width=1.0, height=1.0, chars=1, words=1) for i in (1, 2, 3)]
    repository.replace_pages(db_settings, doc.id, pages)
    repository.replace_pages(db_settings, doc.id, [Page(document_id=doc.id, page_no=1, source="text-layer",
                                                        width=1.0, height=1.0, chars=5, words=1)])
    ents = [Entity(document_id=doc.id, entity_no=0, category="MEDICATION", type="GENERIC_NAME", text="metformin ü",
                   begin_offset=0, end_offset=9, score=0.9, traits=[], attributes=[{"Type": "DOSAGE"}])]
    repository.replace_entities(db_settings, doc.id, ents)
    counts = repository.counts_for(db_settings, doc.id)
    assert counts == {"pages": 1, "entities": 1, "renditions": 0}


def test_a_database_without_our_tables_says_to_migrate_it(empty_db_settings):
    """An operator pointing a read command at a server database nobody migrated gets the fix, not a
    traceback (the local SQLite folder is migrated by the commands themselves)."""
    from pipeline.errors import ConfigError
    from pipeline.history import DocumentFilters, list_documents

    if empty_db_settings.effective_database_url.startswith("sqlite"):
        assert list_documents(empty_db_settings, DocumentFilters()).rows == []  # made on first use
        return
    with pytest.raises(ConfigError, match="medintake db upgrade"):
        list_documents(empty_db_settings, DocumentFilters())
    database.upgrade(empty_db_settings)
    assert list_documents(empty_db_settings, DocumentFilters()).rows == []


def test_the_folder_digest_migration_fills_in_existing_documents(empty_db_settings):
    """0003: documents registered before it get their key's folder digest, so the upload API's
    indexed status lookup finds them too."""
    from sqlalchemy import select, text

    from pipeline.models import Document, folder_digest

    database.upgrade(empty_db_settings, "0002_notice_states")
    keys = {f"d{i:031d}": f"uploads/user-{i % 2}/upload-{i}/scan {i}.pdf" for i in range(3)}
    with database.get_engine(empty_db_settings).begin() as conn:
        for doc_id, key in keys.items():
            conn.execute(text("INSERT INTO documents (id, bucket, object_key, status, attempt, created_at, updated_at)"
                              " VALUES (:id, 'b', :key, 'COMPLETED', 1, :now, :now)"),
                         {"id": doc_id, "key": key, "now": "2026-11-29 00:00:00"})
    database.upgrade(empty_db_settings)
    with database.transaction(empty_db_settings) as s:
        found = {d.id: d.key_folder_sha256 for d in s.scalars(select(Document))}
        assert found == {doc_id: folder_digest(key) for doc_id, key in keys.items()}
        hit = s.scalars(select(Document.id).where(Document.bucket == "b", Document.key_folder_sha256 ==
                                                 folder_digest("uploads/user-1/upload-1/"))).all()
        assert hit == ["d" + "1".zfill(31)]
