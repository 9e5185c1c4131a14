"""Lambda entry points for the AWS deployment: dispatcher, tracker and queue metrics.

All are light (no OpenCV, Tesseract, Pillow or PDF engine on their import path) and configured
only by MEDINTAKE_* environment variables (docs/deploy.md lists them). Powertools for AWS Lambda
does what it is made for: JSON logs with the request id (our ``medintake.*`` loggers included),
CloudWatch metrics as EMF, and SQS partial batch failure reporting: the dispatcher reports the
records it could not handle as ``batchItemFailures`` (the event source mapping enables
ReportBatchItemFailures), so one bad message is redelivered alone; idempotency on the document id
makes redelivery harmless. The schema is migrated by ``medintake deploy`` (a one-off Batch job),
never on a cold start.
"""
from __future__ import annotations

import functools
import logging
import os
import time
from typing import Any, Callable

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response

from pipeline.events import EventError, parse_event
from pipeline.settings import Settings

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "medintake"), log_record_order=["level", "message"])
metrics = Metrics(
    namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "medintake"),
    service=os.environ.get("POWERTOOLS_SERVICE_NAME", "medintake"),
)
_cache: dict[str, Any] = {}
_saved_logging: dict[str, Any] = {}


def _entry(handler: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """Powertools' Lambda context in the logs and EMF metrics flushed per invocation.

    Without a context (a direct call: tests, the CLI) the handler runs with metrics only.
    """
    with_context = metrics.log_metrics(logger.inject_lambda_context(handler, clear_state=True))
    without = metrics.log_metrics(handler)

    @functools.wraps(handler)
    def wrapper(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
        return (with_context if context is not None else without)(event, context)

    return wrapper


def _parts() -> dict[str, Any]:
    """Built once per Lambda container and reused across invocations."""
    if not _cache:
        from compute import open_compute
        from pipeline.dispatcher import Dispatcher
        from pipeline.notify import open_notifier
        from pipeline.store import open_store
        from pipeline.tracker import Tracker

        settings = Settings.load()
        logger.setLevel(settings.log_level)
        # Our modules log to "medintake.*"; give them Powertools' JSON format and Lambda context.
        ours = logging.getLogger("medintake")
        _saved_logging.setdefault("state", (ours.level, list(ours.handlers), ours.propagate))
        ours.setLevel(settings.log_level)
        copy_config_to_registered_loggers(source_logger=logger, include={"medintake"})
        store = open_store(settings)
        notifier = open_notifier(settings)
        dispatcher = Dispatcher(settings, open_compute(settings), store, notifier)
        # The tracker resubmits a document that failed inside an array child, alone (array shape).
        _cache.update(settings=settings, dispatcher=dispatcher,
                      tracker=Tracker(settings, store, notifier, dispatcher=dispatcher))
    return _cache


def _dispatch_record(record: Any) -> None:
    """One SQS message: every upload in it is dispatched, or the message is reported failed."""
    dispatcher = _parts()["dispatcher"]
    for parsed in parse_event({"Records": [record.raw_event]}):
        if parsed.error:
            raise EventError(parsed.error)
        for ref in parsed.uploads:
            result = dispatcher.dispatch(ref)
            if result is None:
                metrics.add_metric(name="IgnoredEvents", unit=MetricUnit.Count, value=1)
            elif result.submitted:
                metrics.add_metric(name="DocumentsDispatched", unit=MetricUnit.Count, value=1)
            elif not result.created:
                metrics.add_metric(name="DuplicateEvents", unit=MetricUnit.Count, value=1)


@_entry
def dispatch_handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    records = event.get("Records") if isinstance(event, dict) else None
    parts = _parts()
    if parts["settings"].job_shape == "array":
        # The whole SQS batch becomes one array job (docs/scale.md); records that could not be
        # taken are reported one by one, as the partial batch response below does.
        result = parts["dispatcher"].handle_event(event)
        submitted = sum(1 for r in result["results"] if r is not None and r.submitted)
        if submitted:
            metrics.add_metric(name="DocumentsDispatched", unit=MetricUnit.Count, value=submitted)
        return {"batchItemFailures": result["batchItemFailures"]}
    if records and all(isinstance(r, dict) and r.get("eventSource") == "aws:sqs" for r in records):
        # A whole batch failing is reported record by record too: SQS redelivers each alone.
        processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
        response = process_partial_response(event, _dispatch_record, processor, context)
        return {"batchItemFailures": response.get("batchItemFailures", [])}
    # Direct S3 notification, SNS or EventBridge delivery: the dispatcher's own loop.
    result = _parts()["dispatcher"].handle_event(event)
    return {"batchItemFailures": result["batchItemFailures"]}


@_entry
def tracker_handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    from pipeline import repository

    status = _parts()["tracker"].handle(event)
    # A gauge for the unconfirmed-notices alarm (pipeline/notify.py): notices whose publish
    # outcome is unknown wait for an operator; one indexed count per invocation.
    unconfirmed = repository.count_notices(_parts()["settings"], "unconfirmed")
    metrics.add_metric(name="NoticesUnconfirmed", unit=MetricUnit.Count, value=unconfirmed)
    # One child event of the array shape can decide several documents: count each.
    for decided in _parts()["tracker"].decided or ([status] if status else []):
        metrics.add_metric(name=f"Documents{decided.title()}", unit=MetricUnit.Count, value=1)
    return {"final_status": status}


@_entry
def queue_metrics_handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Every few minutes: RUNNABLE jobs and the oldest one's age, for the stuck-queue alarm.

    Batch publishes no such metric; a job RUNNABLE for long means the compute environment cannot
    place it (vCPU cap, INVALID environment, no capacity, a job larger than any Fargate size).
    """
    from compute.batch import batch_client

    settings = Settings.load()
    client = batch_client(settings)
    now_ms = time.time() * 1000
    count, oldest_ms = 0, None
    for page in client.get_paginator("list_jobs").paginate(jobQueue=settings.job_queue, jobStatus="RUNNABLE"):
        for job in page.get("jobSummaryList", []):
            count += 1
            created = job.get("createdAt")
            if created is not None and (oldest_ms is None or created < oldest_ms):
                oldest_ms = created
    age = max(0.0, (now_ms - oldest_ms) / 1000) if oldest_ms is not None else 0.0
    metrics.add_metric(name="JobsRunnable", unit=MetricUnit.Count, value=count)
    metrics.add_metric(name="OldestRunnableSeconds", unit=MetricUnit.Seconds, value=age)
    return {"runnable": count, "oldest_runnable_seconds": round(age, 1)}


def reset() -> None:
    """Forget the cached parts and give the ``medintake`` loggers back their configuration."""
    _cache.clear()
    if "state" in _saved_logging:
        level, handlers, propagate = _saved_logging.pop("state")
        ours = logging.getLogger("medintake")
        ours.setLevel(level)
        ours.handlers[:] = handlers
        ours.propagate = propagate
