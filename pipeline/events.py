"""Parse upload events into UploadRefs, and build events of the same shapes locally.

S3 tells us about an upload in four envelopes: the notification itself (direct Lambda trigger),
inside an SQS message body, inside an SNS message (and SNS inside SQS), and as an EventBridge
"Object Created" event. All four carry the key URL-encoded with ``+`` for a space, so every key is
decoded once, here, and nowhere else. Light module: the dispatcher's import path.
"""
from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterator
from urllib.parse import quote_plus, unquote_plus


class EventError(ValueError):
    """An event that is not in any shape we understand (no PHI in the message)."""


@dataclass(frozen=True)
class UploadRef:
    bucket: str
    key: str  # decoded
    version_id: str | None = None
    etag: str | None = None
    size: int | None = None
    sequencer: str | None = None
    event_time: str | None = None

    @property
    def document_id(self) -> str:
        return document_id(self.bucket, self.key, self.version_id or self.etag or "")


def document_id(bucket: str, key: str, version: str) -> str:
    """SPEC 4: deterministic from (bucket, key, version id or ETag); a duplicate maps to it too."""
    digest = hashlib.sha256("\0".join((bucket, key, version.strip('"'))).encode("utf-8"))
    return digest.hexdigest()[:32]


@dataclass(frozen=True)
class EventRecord:
    """One deliverable unit of an event: an SQS message id (for partial batch failure) or None."""

    record_id: str | None
    uploads: tuple[UploadRef, ...]
    error: str | None = None  # why this record could not be read (its delivery is reported failed)


def parse_event(event: dict[str, Any]) -> list[EventRecord]:
    """Every upload in ``event``, grouped by the record that carried it."""
    if not isinstance(event, dict):
        raise EventError("event is not a JSON object")
    if event.get("detail-type") is not None:
        return [EventRecord(event.get("id"), tuple(_from_eventbridge(event)))]
    records = event.get("Records")
    if not isinstance(records, list):
        if event.get("Event") == "s3:TestEvent":
            return []
        raise EventError("event has neither Records nor detail-type")
    out: list[EventRecord] = []
    for record in records:
        if not isinstance(record, dict):
            raise EventError("a record is not a JSON object")
        source = record.get("eventSource") or record.get("EventSource")
        if source in ("aws:sqs", "aws:sns"):
            out.append(_wrapped_record(source, record))
        elif source == "aws:s3":
            out.append(EventRecord(None, tuple(_from_s3_record(record))))
        else:
            raise EventError("record has an unknown eventSource")
    return out


def _wrapped_record(source: str, record: dict[str, Any]) -> EventRecord:
    """One SQS or SNS record; a bad body fails that record only, never its siblings."""
    if source == "aws:sqs":
        record_id, body = record.get("messageId"), record.get("body")
    else:
        sns = record.get("Sns") or {}
        record_id, body = sns.get("MessageId"), sns.get("Message")
    try:
        return EventRecord(record_id, tuple(_from_body(body)))
    except EventError as exc:
        return EventRecord(record_id, (), str(exc))


def _from_body(body: Any) -> Iterator[UploadRef]:
    """An SQS body or SNS message: an S3 notification, an SNS envelope or an EventBridge event."""
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except json.JSONDecodeError:
            raise EventError("message body is not JSON") from None
    if not isinstance(body, dict):
        raise EventError("message body is not a JSON object")
    if body.get("Type") == "Notification" and "Message" in body:  # SNS -> SQS, raw delivery off
        yield from _from_body(body["Message"])
        return
    for record in parse_event(body):
        yield from record.uploads


def _from_s3_record(record: dict[str, Any]) -> Iterator[UploadRef]:
    name = str(record.get("eventName", ""))
    if not name.startswith("ObjectCreated:"):
        return  # deletions, restores, lifecycle: not uploads
    s3 = record.get("s3") or {}
    obj = s3.get("object") or {}
    try:
        bucket, raw_key = s3["bucket"]["name"], obj["key"]
    except (KeyError, TypeError):
        raise EventError("S3 record lacks bucket name or object key") from None
    yield UploadRef(
        bucket=bucket,
        key=unquote_plus(raw_key),
        version_id=obj.get("versionId") or None,
        etag=obj.get("eTag") or obj.get("etag") or None,
        size=obj.get("size"),
        sequencer=obj.get("sequencer"),
        event_time=record.get("eventTime"),
    )


def _from_eventbridge(event: dict[str, Any]) -> Iterator[UploadRef]:
    if event.get("source") != "aws.s3" or event.get("detail-type") != "Object Created":
        return
    detail = event.get("detail") or {}
    obj = detail.get("object") or {}
    try:
        bucket, raw_key = detail["bucket"]["name"], obj["key"]
    except (KeyError, TypeError):
        raise EventError("EventBridge S3 event lacks bucket name or object key") from None
    yield UploadRef(
        bucket=bucket,
        key=unquote_plus(raw_key),
        version_id=obj.get("version-id") or None,
        etag=obj.get("etag") or None,
        size=obj.get("size"),
        sequencer=obj.get("sequencer"),
        event_time=event.get("time"),
    )


# ---- building events locally, in the exact shapes AWS sends ------------------------------------


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def s3_notification(ref: UploadRef, region: str = "local") -> dict[str, Any]:
    """An S3 ``ObjectCreated:Put`` notification for ``ref`` (key URL-encoded as S3 does)."""
    obj: dict[str, Any] = {"key": quote_plus(ref.key, safe="/"), "size": ref.size or 0}
    if ref.etag:
        obj["eTag"] = ref.etag
    if ref.version_id:
        obj["versionId"] = ref.version_id
    obj["sequencer"] = ref.sequencer or uuid.uuid4().hex[:18].upper()
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": region,
                "eventTime": ref.event_time or _now(),
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "bucket": {"name": ref.bucket, "arn": f"arn:aws:s3:::{ref.bucket}"},
                    "object": obj,
                },
            }
        ]
    }


def sqs_envelope(body: dict[str, Any], message_id: str | None = None) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": message_id or str(uuid.uuid4()),
                "receiptHandle": "local",
                "body": json.dumps(body),
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:local:000000000000:medintake-uploads",
                "awsRegion": "local",
            }
        ]
    }


def sns_envelope(body: dict[str, Any], message_id: str | None = None) -> dict[str, Any]:
    return {
        "Records": [
            {
                "EventSource": "aws:sns",
                "EventVersion": "1.0",
                "EventSubscriptionArn": "arn:aws:sns:local:000000000000:medintake-uploads:sub",
                "Sns": {
                    "Type": "Notification",
                    "MessageId": message_id or str(uuid.uuid4()),
                    "TopicArn": "arn:aws:sns:local:000000000000:medintake-uploads",
                    "Subject": None,
                    "Message": json.dumps(body),
                    "Timestamp": _now(),
                    "MessageAttributes": {},
                },
            }
        ]
    }


def eventbridge_object_created(ref: UploadRef, event_id: str | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {"key": quote_plus(ref.key, safe="/"), "size": ref.size or 0}
    if ref.etag:
        obj["etag"] = ref.etag
    if ref.version_id:
        obj["version-id"] = ref.version_id
    obj["sequencer"] = ref.sequencer or uuid.uuid4().hex[:18].upper()
    return {
        "version": "0",
        "id": event_id or str(uuid.uuid4()),
        "detail-type": "Object Created",
        "source": "aws.s3",
        "account": "000000000000",
        "time": ref.event_time or _now(),
        "region": "local",
        "resources": [f"arn:aws:s3:::{ref.bucket}"],
        "detail": {"version": "0", "bucket": {"name": ref.bucket}, "object": obj, "reason": "PutObject"},
    }
