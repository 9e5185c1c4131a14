"""The array child's per-document overhead (jobs/runner.py, pipeline/repository.py).

In the array shape one process runs every stage of a document, so the original is fetched once
per document and shared by the stages (on AWS each fetch is an S3 GET), and its scratch copy is
gone when the document ends, also when it fails. Page, entity and rendition rows go in as Core
executemany INSERTs and must come out as the ORM wrote them on every database.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from conftest import FILES
from jobs import runner
from pipeline import batching, database, repository
from pipeline.errors import RejectedInput
from pipeline.events import UploadRef
from pipeline.models import Entity, Page, Rendition
from pipeline.settings import Settings
from pipeline.store import open_store


def _counting_store(settings: Settings):
    """The real folder store, with its reads of each key counted (the reads still happen)."""
    store = open_store(settings)
    reads: dict[str, list[Path]] = {}
    real_download = store.download

    def download(key: str, dest: Path) -> Path:
        reads.setdefault(key, []).append(Path(dest))
        return real_download(key, dest)

    store.download = download  # type: ignore[method-assign]
    return store, reads


def _upload(settings: Settings, store, src: Path, key: str) -> str:
    info = store.put_file(key, src, "application/octet-stream")
    doc, _ = repository.register_document(settings, UploadRef(settings.bucket, key, None, info.etag, src.stat().st_size))
    return doc.id


def test_array_child_fetches_the_original_once_per_document_and_removes_it(tmp_path):
    settings = Settings.load(data_dir=tmp_path / "data", workers=1, job_shape="array")
    database.upgrade(settings)
    store, reads = _counting_store(settings)
    doc_id = _upload(settings, store, FILES / "digital_referral.pdf", "in/referral.pdf")
    stages: dict = {}
    seconds: dict = {}
    runner.run_stages(settings, store, batching.Item(doc_id, 1), stages, seconds)
    assert set(stages) == {"extract", "entities", "convert"}
    assert stages["convert"]["renditions"] >= 3 and stages["extract"]["pages"] >= 1
    assert len(reads["in/referral.pdf"]) == 1, "the original was fetched more than once for one document"
    assert not reads["in/referral.pdf"][0].exists(), "the shared original outlived its document"
    # Two documents in one child: one fetch each, no sharing across documents.
    other = _upload(settings, store, FILES / "mixed_digital_scanned.pdf", "in/mixed.pdf")
    runner.run_stages(settings, store, batching.Item(other, 1), {}, {})
    runner.run_stages(settings, store, batching.Item(doc_id, 1), {}, {})
    assert len(reads["in/mixed.pdf"]) == 1 and len(reads["in/referral.pdf"]) == 2


def test_a_rejected_document_leaves_no_scratch_copy(tmp_path):
    settings = Settings.load(data_dir=tmp_path / "data", workers=1, job_shape="array")
    database.upgrade(settings)
    store, reads = _counting_store(settings)
    doc_id = _upload(settings, store, FILES / "corrupt.pdf", "in/corrupt.pdf")
    try:
        runner.run_stages(settings, store, batching.Item(doc_id, 1), {}, {})
    except RejectedInput:
        pass
    else:
        raise AssertionError("a corrupt PDF was accepted")
    assert len(reads["in/corrupt.pdf"]) == 1
    assert not reads["in/corrupt.pdf"][0].exists()


def test_per_document_jobs_still_fetch_their_own_copy(tmp_path):
    settings = Settings.load(data_dir=tmp_path / "data", workers=1)
    database.upgrade(settings)
    store, reads = _counting_store(settings)
    doc_id = _upload(settings, store, FILES / "digital_referral.pdf", "in/referral.pdf")
    work = tmp_path / "work"
    for kind in ("extract", "convert"):
        (work / kind).mkdir(parents=True)
        ctx = runner.JobContext(settings, store, doc_id, 1, work / kind)
        runner.job_function(kind)(ctx)
        assert (work / kind / "original").exists()
    assert len(reads["in/referral.pdf"]) == 2
    shutil.rmtree(work)


def test_core_inserts_write_the_rows_the_orm_wrote(db_settings):
    doc, _ = repository.register_document(db_settings, UploadRef("bucket", "in/x.pdf", None, "etag", 1))
    for _ in range(2):  # a rerun (new objects, as the jobs make them) replaces, never adds
        ents = [Entity(document_id=doc.id, entity_no=i, category="MEDICATION", type="GENERIC_NAME", text=f"t{i}",
                       begin_offset=i, end_offset=i + 2, score=0.5, traits=[{"Name": "NEGATION"}] if i % 2 else [])
                for i in range(130)]
        ents.append(Entity(document_id=doc.id, entity_no=130, category="X", type="Y", text="z", begin_offset=0,
                           end_offset=1, score=1.0))  # traits/attributes left to their defaults
        ents.append(dict(document_id=doc.id, entity_no=131, category="X", type="Y", text="d", begin_offset=0,
                         end_offset=1, score=1.0, traits=[{"Name": "SIGN"}]))  # a plain dict, as a job may pass
        repository.replace_entities(db_settings, doc.id, ents)
        repository.replace_pages(db_settings, doc.id, [
            Page(document_id=doc.id, page_no=n, source="text", width=612.0, height=792.0) for n in (1, 2)])
        repository.replace_renditions(db_settings, doc.id, [
            Rendition(document_id=doc.id, name="thumbnail", object_key="k", format="webp", mime="image/webp",
                      width=1, height=2, bytes=3)])
    from sqlalchemy import select

    with database.transaction(db_settings) as s:
        got = s.execute(select(Entity).where(Entity.document_id == doc.id).order_by(Entity.entity_no)).scalars().all()
        assert len(got) == 132 and len({e.id for e in got}) == 132 and all(e.id for e in got)
        assert got[1].traits == [{"Name": "NEGATION"}] and got[2].traits == []
        assert got[130].traits == [] and got[130].attributes == []
        assert (got[131].text, got[131].traits, got[131].attributes) == ("d", [{"Name": "SIGN"}], [])
        pages = s.execute(select(Page).where(Page.document_id == doc.id).order_by(Page.page_no)).scalars().all()
        assert [(p.page_no, p.rotation, p.chars, p.words, p.dpi) for p in pages] == [(1, 0, 0, 0, None), (2, 0, 0, 0, None)]
        rend = s.execute(select(Rendition).where(Rendition.document_id == doc.id)).scalars().all()
        assert [(r.name, r.bytes) for r in rend] == [("thumbnail", 3)]


def test_a_misspelt_column_in_a_row_dict_is_an_error(settings):
    import pytest

    database.upgrade(settings)
    doc, _ = repository.register_document(settings, UploadRef("bucket", "in/y.pdf", None, "etag", 1))
    with pytest.raises(ValueError, match="scroe"):
        repository.replace_entities(settings, doc.id, [dict(document_id=doc.id, entity_no=0, category="X", type="Y",
                                                            text="z", begin_offset=0, end_offset=1, scroe=1.0)])
