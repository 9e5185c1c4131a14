"""What the review page shows, read through the configured database and store.

Everything goes through ``pipeline.database`` and ``pipeline.store.open_store``, so the same code
reads SQLite and a bucket folder on one machine, or RDS and S3 for an operator on AWS. Missing
outputs are not errors: a REJECTED or FAILED document still has a job timeline worth seeing.
Reads only; nothing here writes to the store or the database.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import ConfigError, DocumentNotFound, MedintakeError
from pipeline.settings import Settings

#: results/<id>/<name> objects the page reads (others are listed by the manifest only).
TEXT, PAGES, ENTITIES, MANIFEST, SEARCHABLE = "text.txt", "pages.json", "entities.json", "manifest.json", "searchable.pdf"
#: Code sets written beside entities.json (InferICD10CM / InferRxNorm shapes): their concepts are
#: shown on the entity with the same offsets.
CONCEPT_FILES = {"icd10cm.json": "ICD10CMConcepts", "rxnorm.json": "RxNormConcepts"}


@dataclass
class ReviewData:
    """One document as plain data (no ORM objects, no open sessions)."""

    document: dict[str, Any]
    jobs: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    renditions: list[dict[str, Any]] = field(default_factory=list)
    manifest: dict[str, Any] | None = None
    pages: list[dict[str, Any]] | None = None
    text: str | None = None
    entities: dict[str, Any] | None = None
    results_prefix: str = ""


_DOC_FIELDS = ("id", "bucket", "object_key", "size", "sha256", "file_format", "page_count", "language",
               "status", "reason_code", "reason_message", "attempt", "created_at", "updated_at")
_JOB_FIELDS = ("id", "attempt", "kind", "name", "status", "tries", "exit_code", "status_reason",
               "depends_on", "reason_code", "reason_message", "created_at", "started_at", "stopped_at", "result")
_EVENT_FIELDS = ("id", "job_id", "status", "tries", "exit_code", "status_reason", "received_at")
_RENDITION_FIELDS = ("name", "object_key", "format", "mime", "width", "height", "bytes")


def _row(obj: Any, names: tuple[str, ...]) -> dict[str, Any]:
    return {n: getattr(obj, n) for n in names}


def _no_database(settings: Settings) -> bool:
    """A local SQLite database that does not exist yet: nothing can be found, and none is created."""
    from sqlalchemy.engine import make_url

    from pipeline.database import normalise_url

    url = make_url(normalise_url(settings.effective_database_url))
    if not url.drivername.startswith("sqlite") or url.database in (None, "", ":memory:"):
        return False
    from pathlib import Path

    return not Path(url.database).is_file()


def load_rows(settings: Settings, document_id: str) -> ReviewData:
    """The document's rows: the document, every job of every attempt, their events, renditions.

    Raises DocumentNotFound for an unknown id (the id is not echoed: ids are not PHI, but the
    message stays uniform with the rest of the library).
    """
    from sqlalchemy import select
    from sqlalchemy.exc import DBAPIError

    from pipeline.database import transaction
    from pipeline.models import Document, Job, JobEvent, Rendition

    fix = "Check the id (`medintake process --json` prints it) and --data-dir / MEDINTAKE_DATABASE_URL."
    if _no_database(settings):
        raise DocumentNotFound("no document with that id (this data folder has no database)", fix=fix)
    try:
        with transaction(settings) as s:
            doc = s.get(Document, document_id)
            if doc is None:
                raise DocumentNotFound("no document with that id", fix=fix)
            data = ReviewData(document=_row(doc, _DOC_FIELDS))
            jobs = s.scalars(select(Job).where(Job.document_id == document_id)
                             .order_by(Job.attempt, Job.created_at, Job.id))
            data.jobs = [_row(j, _JOB_FIELDS) for j in jobs]
            # The array shape: a document's row ``<unit>#<position>`` has no events of its own;
            # its child's (or plain job's) state changes are recorded under the unit's id.
            units = sorted({j["id"].rpartition("#")[0] for j in data.jobs
                            if j["kind"] == "process" and "#" in j["id"]})
            where = JobEvent.document_id == document_id
            events = s.scalars(select(JobEvent).where(where | JobEvent.job_id.in_(units) if units else where)
                               .order_by(JobEvent.received_at, JobEvent.id))
            data.events = [_row(e, _EVENT_FIELDS) for e in events]
            rends = s.scalars(select(Rendition).where(Rendition.document_id == document_id)
                              .order_by(Rendition.bytes))
            data.renditions = [_row(r, _RENDITION_FIELDS) for r in rends]
    except MedintakeError:
        raise
    except DBAPIError:
        raise ConfigError("the database cannot be read (no schema yet?)",
                          fix="Run `medintake db upgrade`, or check --data-dir / MEDINTAKE_DATABASE_URL.") from None
    return data


def load(settings: Settings, document_id: str, store: Any | None = None) -> ReviewData:
    """Rows plus the result objects (text, pages, entities, manifest) from the store."""
    from pipeline.store import open_store

    data = load_rows(settings, document_id)
    store = store or open_store(settings)
    data.results_prefix = f"{settings.results_prefix}{document_id}/"
    data.manifest = _json(get_optional(store, data.results_prefix + MANIFEST))
    named = manifest_keys(data.manifest)

    def read(name: str) -> bytes | None:
        # A final document's results are what its manifest names, nothing else: objects left by
        # a killed attempt of a stage that then failed for good stay in the folder, unnamed, and
        # must not be shown as the document's text (docs/reliability.md, killed workers).
        key = data.results_prefix + name
        if named is not None and key not in named:
            return None
        return get_optional(store, key)

    raw = {name: read(name) for name in (TEXT, PAGES, ENTITIES)}
    data.text = raw[TEXT].decode("utf-8") if raw[TEXT] is not None else None
    data.pages = _json(raw[PAGES])
    data.entities = _json(raw[ENTITIES])
    if isinstance(data.entities, dict):
        for name, key in CONCEPT_FILES.items():
            attach_concepts(data.entities, _json(read(name)), key)
    return data


def manifest_keys(manifest: Any) -> set[str] | None:
    """The object keys a final document's manifest names; None before there is a manifest."""
    if not isinstance(manifest, dict):
        return None
    outputs = manifest.get("outputs")
    if not isinstance(outputs, dict):
        return None
    return {key for key in outputs.values() if isinstance(key, str)}


def attach_concepts(entities: dict[str, Any], coded: Any, key: str) -> int:
    """Copy ``key`` concept lists from a code-set response onto entities with the same offsets.

    InferICD10CM and InferRxNorm number their entities on their own, so offsets are the only
    join; an entity that already carries the list keeps it. Returns how many entities got one.
    """
    if not isinstance(coded, dict):
        return 0
    by_span = {(c.get("BeginOffset"), c.get("EndOffset")): c.get(key) for c in coded.get("Entities", [])
               if isinstance(c, dict) and c.get(key)}
    n = 0
    for e in entities.get("Entities", []):
        found = by_span.get((e.get("BeginOffset"), e.get("EndOffset")))
        if found and not e.get(key):
            e[key] = found
            n += 1
    return n


def get_optional(store: Any, key: str) -> bytes | None:
    """An object's bytes, or None when it does not exist (a rejected document has few outputs)."""
    try:
        return store.get_bytes(key)
    except KeyError:
        return None


def _json(data: bytes | None) -> Any:
    if data is None:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return None  # shown as missing; the page is for looking, not for validating
