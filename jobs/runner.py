"""Run one job for one document attempt: fetch the original, run the stage, store the results.

Stages read local files and write local files; only this module talks to the store and the
database. The original is downloaded to a scratch folder under a neutral name (never the upload's
file name, which may hold a patient's name) and is only ever read. Every output is uploaded under
``results/<document_id>/`` with one atomic PUT each, and the job's rows are replaced in one
transaction, so a rerun replaces results rather than mixing two runs.
"""
from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from pipeline import repository
from pipeline.errors import RejectedInput
from pipeline.models import Entity, Page, Rendition
from pipeline.settings import Settings
from pipeline.store import Store, open_store

log = logging.getLogger("medintake.jobs")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class JobContext:
    def __init__(self, settings: Settings, store: Store, document_id: str, attempt: int, work: Path) -> None:
        self.settings = settings
        self.store = store
        self.document_id = document_id
        self.attempt = attempt
        self.work = work
        self.doc = repository.get_document(settings, document_id)
        self.prefix = f"{settings.results_prefix}{document_id}/"

    def fetch_original(self) -> Path:
        dest = self.work / "original"
        self.store.download(self.doc.object_key, dest)
        return dest

    def upload(self, name: str, path: Path, content_type: str) -> str:
        key = self.prefix + name
        self.store.put_file(key, path, content_type)
        return key

    def identify(self, src: Path):
        from pipeline.detect import identify, validate

        kind = identify(src, self.settings)
        pages = validate(src, kind, self.settings)
        return kind, pages


def run_extract(ctx: JobContext) -> dict[str, Any]:
    from pipeline.extract import extract_text

    t0 = time.perf_counter()
    src = ctx.fetch_original()
    # Recorded before identification, so a rejected upload's manifest still names its exact bytes.
    repository.update_document(ctx.settings, ctx.document_id, sha256=_sha256(src), size=src.stat().st_size)
    kind, _ = ctx.identify(src)
    out = ctx.work / "out"
    out.mkdir()
    result = extract_text(src, kind, out, ctx.settings)
    outputs = {
        "text": ctx.upload("text.txt", out / "text.txt", "text/plain; charset=utf-8"),
        "pages": ctx.upload("pages.json", out / "pages.json", "application/json"),
    }
    if (out / "searchable.pdf").exists():
        outputs["searchable_pdf"] = ctx.upload("searchable.pdf", out / "searchable.pdf", "application/pdf")
    else:
        ctx.store.delete_prefix(ctx.prefix + "searchable.pdf")  # a rerun must not keep a stale one
    repository.replace_pages(
        ctx.settings,
        ctx.document_id,
        [Page(document_id=ctx.document_id, page_no=p.page_no, source=p.source, width=p.width, height=p.height,
              rotation=p.rotation, dpi=p.dpi, chars=p.chars, words=p.words, mean_confidence=p.mean_confidence)
         for p in result.pages],
    )
    repository.update_document(ctx.settings, ctx.document_id, file_format=kind.format, language=result.language,
                               page_count=len(result.pages))
    return {
        "outputs": outputs,
        "type": {"format": kind.format, "mime": kind.mime, "kind": kind.kind},
        "ocr_pages": result.ocr_pages,
        "pages": len(result.pages),
        "timings": {**result.timings, "total": round(time.perf_counter() - t0, 3)},
        "tool_versions": result.tool_versions,
    }


def run_entities(ctx: JobContext) -> dict[str, Any]:
    from pipeline.entities import detect_entities

    t0 = time.perf_counter()
    text = ctx.store.get_bytes(ctx.prefix + "text.txt").decode("utf-8")
    response = detect_entities(text, ctx.settings)
    path = ctx.work / "entities.json"
    path.write_text(json.dumps(response, ensure_ascii=False, indent=1), encoding="utf-8")
    outputs = {"entities": ctx.upload("entities.json", path, "application/json")}
    repository.replace_entities(
        ctx.settings,
        ctx.document_id,
        [Entity(document_id=ctx.document_id, entity_no=int(e.get("Id", i)), category=e["Category"], type=e["Type"],
                text=e["Text"], begin_offset=e["BeginOffset"], end_offset=e["EndOffset"], score=float(e["Score"]),
                traits=e.get("Traits", []), attributes=e.get("Attributes", []))
         for i, e in enumerate(response.get("Entities", []))],
    )
    return {
        "outputs": outputs,
        "entities": len(response.get("Entities", [])),
        "timings": {"entities": round(time.perf_counter() - t0, 3)},
        "tool_versions": {"entities": str(response.get("ModelVersion", ""))},
    }


def run_convert(ctx: JobContext) -> dict[str, Any]:
    from pipeline.renditions import make_renditions

    t0 = time.perf_counter()
    src = ctx.fetch_original()
    kind, _ = ctx.identify(src)
    out = ctx.work / "out"
    out.mkdir()
    renditions = make_renditions(src, kind, out, ctx.settings)
    ctx.store.delete_prefix(ctx.prefix + "renditions/")
    outputs = {}
    rows = []
    for r in renditions:
        key = ctx.upload(f"renditions/{r.filename}", out / "renditions" / r.filename, r.mime)
        outputs[f"renditions/{r.name}"] = key
        rows.append(Rendition(document_id=ctx.document_id, name=r.name, object_key=key, format=r.format,
                              mime=r.mime, width=r.width, height=r.height, bytes=r.bytes))
    repository.replace_renditions(ctx.settings, ctx.document_id, rows)
    return {"outputs": outputs, "renditions": len(rows), "timings": {"convert": round(time.perf_counter() - t0, 3)}}


KINDS: dict[str, Callable[[JobContext], dict[str, Any]]] = {
    "extract": run_extract,
    "entities": run_entities,
    "convert": run_convert,
}


def run_job(settings: Settings, kind: str, document_id: str, attempt: int) -> dict[str, Any]:
    import os

    store = open_store(settings)
    job_id = os.environ.get("AWS_BATCH_JOB_ID", "")
    with tempfile.TemporaryDirectory(prefix="medintake-") as tmp:
        ctx = JobContext(settings, store, document_id, attempt, Path(tmp))
        try:
            result = KINDS[kind](ctx)
        except RejectedInput as exc:
            if job_id:
                repository.save_job_result(settings, job_id, reason=(exc.reason_code, exc.message))
            raise
    if job_id:
        repository.save_job_result(settings, job_id, result=result)
    log.info("%s job done for document %s attempt %d", kind, document_id, attempt)
    return result
