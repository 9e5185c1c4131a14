"""Design E (docs/scale.md): small uploads on a processing Lambda while its queue is short.

The dispatcher sends a claimed document whose estimated work is at most ``lambda_max_seconds``
to the processing Lambda's SQS queue (``processing_queue_url``) instead of the array job, as long
as that queue holds fewer than ``processing_queue_limit`` messages (visible + in flight: about
twice the function's reserved concurrency). Everything else (large documents, a burst's
overflow, any send that fails, and every retry) goes to Batch as in design C, so the Lambda only
ever takes work it can start at once; the backlog stays in Batch's queue, never in ours.

The function (``jobs/lambda_handler.py``) runs the same per-document sequence an array child runs
and records the outcome on the same kind of row (``lambda-<id>#0``); the tracker's decision,
notice and lone-resubmission rules are the ones of the array shape. Light module (boto3 only).
"""
from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from pipeline import batching
from pipeline.settings import Settings

log = logging.getLogger("medintake.processing")

LAMBDA_UNIT_PREFIX = "lambda-"


def enabled(settings: Settings) -> bool:
    return bool(settings.processing_queue_url) and settings.lambda_max_seconds > 0


class ProcessingQueue:
    """The processing Lambda's SQS queue: its depth, and sending documents to it."""

    def __init__(self, settings: Settings, client: Any = None) -> None:
        self.settings = settings
        if client is None:
            import boto3
            from botocore.config import Config

            client = boto3.client("sqs", region_name=settings.aws_region or None,
                                  config=Config(retries={"mode": "standard", "max_attempts": 4}))
        self.client = client

    def free_slots(self) -> int:
        """How many more documents the Lambda can take now; 0 when the depth cannot be read."""
        try:
            attrs = self.client.get_queue_attributes(
                QueueUrl=self.settings.processing_queue_url,
                AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
            )["Attributes"]
        except Exception as exc:  # Batch takes them: never lose a document to a monitoring call
            log.warning("processing queue depth unreadable (%s); sending to Batch", type(exc).__name__)
            return 0
        depth = int(attrs.get("ApproximateNumberOfMessages", 0)) + int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0))
        return max(0, self.settings.processing_queue_limit - depth)

    def send(self, entries: list[tuple[str, batching.Item]]) -> set[str]:
        """Send (row id, item) messages; returns the row ids SQS accepted."""
        sent: set[str] = set()
        for chunk in batching.chunked(entries, 10):
            batch = [{"Id": str(n), "MessageBody": json.dumps(
                {"row": rid, "document_id": i.document_id, "attempt": i.attempt, "try": i.tries})}
                for n, (rid, i) in enumerate(chunk)]
            try:
                answer = self.client.send_message_batch(QueueUrl=self.settings.processing_queue_url, Entries=batch)
            except Exception as exc:
                log.warning("processing queue send failed (%s); those documents go to Batch", type(exc).__name__)
                continue
            ok = {e["Id"] for e in answer.get("Successful", [])}
            sent.update(rid for n, (rid, _) in enumerate(chunk) if str(n) in ok)
        return sent


def lambda_row_id() -> str:
    return batching.row_id(f"{LAMBDA_UNIT_PREFIX}{uuid.uuid4().hex}", 0)


def parse_message(body: str) -> tuple[str, batching.Item]:
    raw = json.loads(body)
    return str(raw["row"]), batching.Item(str(raw["document_id"]), int(raw["attempt"]), int(raw.get("try", 1)))
