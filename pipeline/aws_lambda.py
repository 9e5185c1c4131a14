"""Lambda entry points for the AWS deployment: the dispatcher and the tracker.

Both are light (no OpenCV, Tesseract, Pillow or PDF engine on their import path) and configured
only by MEDINTAKE_* environment variables. The dispatcher reports SQS records it could not handle
as ``batchItemFailures`` (enable ReportBatchItemFailures on the event source mapping), so one bad
message is redelivered alone; idempotency on the document id makes redelivery harmless.
"""
from __future__ import annotations

from typing import Any

from pipeline.logs import configure_logging
from pipeline.settings import Settings

_cache: dict[str, Any] = {}


def _parts() -> dict[str, Any]:
    """Built once per Lambda container and reused across invocations."""
    if not _cache:
        from compute import open_compute
        from pipeline import database
        from pipeline.dispatcher import Dispatcher
        from pipeline.notify import open_notifier
        from pipeline.store import open_store
        from pipeline.tracker import Tracker

        settings = Settings.load()
        configure_logging(settings.log_level)
        database.upgrade(settings)
        store = open_store(settings)
        notifier = open_notifier(settings)
        _cache.update(
            settings=settings,
            dispatcher=Dispatcher(settings, open_compute(settings), store, notifier),
            tracker=Tracker(settings, store, notifier),
        )
    return _cache


def dispatch_handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    result = _parts()["dispatcher"].handle_event(event)
    return {"batchItemFailures": result["batchItemFailures"]}


def tracker_handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    status = _parts()["tracker"].handle(event)
    return {"final_status": status}


def reset() -> None:
    """Forget the cached parts (tests; a new configuration)."""
    _cache.clear()
