"""The processing Lambda (design E, docs/scale.md): one small document per SQS message, every stage.

It runs in the worker image (a container-image function) and does for one document what an array
child does for each of its slice (``jobs.runner.run_document``): the outcome on the document's row,
then the tracker's decision at once (no Batch event will come): COMPLETED or REJECTED with its one
notice, or, for a transient failure, the document resubmitted alone to Batch as the attempt's
next try. A message delivered again (the earlier invocation was killed: timeout, out of memory)
is not run here a second time: its row is failed and the tracker sends the document to Batch, so
a document the Lambda cannot finish falls back to design C. A message whose handling raises
(database or store trouble) is reported in ``batchItemFailures`` and redelivered.
"""
from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("medintake.jobs.lambda")
_parts: dict[str, Any] = {}


def _wired() -> dict[str, Any]:
    if not _parts:
        from compute import open_compute
        from pipeline.dispatcher import Dispatcher
        from pipeline.logs import configure_logging
        from pipeline.notify import open_notifier
        from pipeline.settings import Settings
        from pipeline.store import open_store
        from pipeline.tracker import Tracker

        settings = Settings.load()
        configure_logging(settings.log_level)
        store = open_store(settings)
        notifier = open_notifier(settings)
        dispatcher = Dispatcher(settings, open_compute(settings), store, notifier)
        _parts.update(settings=settings, store=store, notifier=notifier,
                      tracker=Tracker(settings, store, notifier, dispatcher=dispatcher))
    return _parts


def reset() -> None:
    _parts.clear()


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    failures = []
    for record in event.get("Records", []):
        try:
            handle_message(record["body"], int((record.get("attributes") or {}).get("ApproximateReceiveCount", 1)),
                           getattr(context, "aws_request_id", "") or "local")
        except Exception as exc:
            log.warning("processing message failed (%s); left for redelivery", type(exc).__name__)
            failures.append({"itemIdentifier": record["messageId"]})
    return {"batchItemFailures": failures}


def handle_message(body: str, receive_count: int, request_id: str) -> str | None:
    """Run one document; returns its final status if this decided it."""
    from jobs.runner import run_document
    from pipeline import batching, repository
    from pipeline.errors import ExitCode
    from pipeline.models import FINAL_STATUSES, Job
    from pipeline.notify import flush_outbox
    from pipeline.processing import parse_message

    parts = _wired()
    settings, tracker = parts["settings"], parts["tracker"]
    rid, item = parse_message(body)
    repository.add_unit_rows(settings, [Job(id=rid, document_id=item.document_id, attempt=item.attempt,
                                            kind=batching.PROCESS_KIND, name=batching.row_name(item),
                                            status="SUBMITTED", tries=0, depends_on=[])])
    (row,) = repository.unit_rows(settings, [rid])
    doc = repository.get_document(settings, item.document_id)
    if doc.attempt != item.attempt or doc.status in FINAL_STATUSES:
        return None
    if row.status not in ("SUCCEEDED", "FAILED"):
        if receive_count > 1:  # killed last time: Batch takes the document (the tracker resubmits it)
            repository.settle_row(settings, rid, "FAILED", int(ExitCode.TRANSIENT),
                                  "The processing Lambda did not finish the document")
        else:
            repository.claim(settings, doc.id, doc.attempt, "QUEUED", "PROCESSING")
            run_document(settings, parts["store"], rid, item, f"lambda:{request_id}")
    status = tracker.evaluate(repository.get_document(settings, item.document_id))
    flush_outbox(settings, parts["notifier"])
    return status
