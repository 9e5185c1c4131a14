"""Notices: one per document attempt, from an outbox row, to SNS or a JSON-lines file.

The payload carries ids, statuses, reason codes, output keys and counts only: no text, no entity
values, no object key or file name (a file name can carry a patient's name). The outbox row is
written in the same transaction that sets the final status; publishing happens after commit and is
retried from the outbox until it succeeds, so a crash between the two loses no notice.
"""
from __future__ import annotations

import fcntl
import json
import logging
from pathlib import Path
from typing import Any, Protocol

from pipeline import repository
from pipeline.errors import TransientError
from pipeline.settings import Settings

log = logging.getLogger("medintake.notify")


class Notifier(Protocol):
    def publish(self, payload: dict[str, Any]) -> None: ...


def attributes(payload: dict[str, Any]) -> dict[str, str]:
    """SNS message attributes for subscription filter policies."""
    attrs = {"event_type": payload["event_type"], "status": payload["status"]}
    if payload.get("reason_code"):
        attrs["reason_code"] = payload["reason_code"]
    return attrs


class FileNotifier:
    """Appends one JSON line per notice; a lock keeps concurrent writers' lines whole."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def publish(self, payload: dict[str, Any]) -> None:
        line = json.dumps({**payload, "attributes": attributes(payload)}, sort_keys=True) + "\n"
        with self.path.open("a", encoding="utf-8") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            fh.write(line)
            fh.flush()
            fcntl.flock(fh, fcntl.LOCK_UN)


class SnsNotifier:
    def __init__(self, settings: Settings, client=None) -> None:
        import boto3

        self.topic_arn = settings.sns_topic_arn
        self.client = client or boto3.client("sns", region_name=settings.aws_region or None)

    def publish(self, payload: dict[str, Any]) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        kwargs: dict[str, Any] = {
            "TopicArn": self.topic_arn,
            "Message": json.dumps(payload, sort_keys=True),
            "MessageAttributes": {
                k: {"DataType": "String", "StringValue": v} for k, v in attributes(payload).items()
            },
        }
        if self.topic_arn.endswith(".fifo"):  # exactly-once delivery window on FIFO topics
            kwargs["MessageGroupId"] = payload["document_id"]
            kwargs["MessageDeduplicationId"] = payload["notice_id"].replace(":", "-")
        try:
            self.client.publish(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise TransientError(f"SNS publish failed ({type(exc).__name__})") from None


def open_notifier(settings: Settings) -> Notifier:
    if settings.notifier == "sns":
        return SnsNotifier(settings)
    return FileNotifier(settings.effective_notices_path)


def flush_outbox(settings: Settings, notifier: Notifier) -> int:
    """Publish every notice not yet sent; returns how many went out."""
    sent = 0
    for notice in repository.unsent_notices(settings):
        if not repository.claim_notice(settings, notice.id):
            continue  # another tracker is publishing it
        try:
            notifier.publish(notice.payload)
        except Exception:
            repository.release_notice(settings, notice.id)
            raise
        repository.mark_sent(settings, notice.id)
        sent += 1
    return sent
