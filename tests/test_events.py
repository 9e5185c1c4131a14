"""Upload events in all four envelopes parse to the same decoded UploadRef."""
from __future__ import annotations

import json

import pytest

from conftest import CORPUS, EVENTS
from pipeline.events import (
    UploadRef,
    document_id,
    eventbridge_object_created,
    parse_event,
    s3_notification,
    sns_envelope,
    sqs_envelope,
)

KEY = "uploads/Jane Doe's referral (2) + labs.pdf"
SHAPES = ["s3_put.json", "sqs_s3.json", "sns_s3.json", "sqs_sns_s3.json", "eventbridge_object_created.json"]


def load(name: str) -> dict:
    return json.loads((EVENTS / name).read_text())


@pytest.mark.parametrize("name", SHAPES)
def test_every_envelope_gives_the_same_decoded_upload(name):
    records = parse_event(load(name))
    assert len(records) == 1 and records[0].error is None
    (ref,) = records[0].uploads
    assert ref.bucket == "medintake-uploads-eu"
    assert ref.key == KEY  # '+' is a space, '%2B' a plus, '%27' a quote
    assert ref.version_id == "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY"
    assert ref.etag == "9b2cf535f27731c974343645a3985328"
    assert ref.size == 48213


def test_same_upload_same_document_id_in_every_envelope():
    ids = {parse_event(load(n))[0].uploads[0].document_id for n in SHAPES}
    assert len(ids) == 1


def test_document_id_is_deterministic_and_version_sensitive():
    a = document_id("b", "uploads/x.pdf", "v1")
    assert a == document_id("b", "uploads/x.pdf", "v1") and len(a) == 32
    assert a != document_id("b", "uploads/x.pdf", "v2")
    assert a != document_id("b", "uploads/y.pdf", "v1")
    assert document_id("b", "k", '"etag"') == document_id("b", "k", "etag")  # ETag quotes ignored


def test_sqs_record_ids_are_kept_for_partial_batch_failure():
    records = parse_event(load("sqs_s3.json"))
    assert records[0].record_id == "5d1c9a2e-2f7b-4a0e-9c7c-0c1e8a1f3b11"


def test_bad_sqs_body_fails_only_its_record():
    event = load("sqs_s3.json")
    good = event["Records"][0]
    bad = {**good, "messageId": "bad-1", "body": "not json"}
    records = parse_event({"Records": [bad, good]})
    assert records[0].error and not records[0].uploads
    assert records[1].error is None and records[1].uploads[0].key == KEY


def test_test_event_and_deletions_yield_no_uploads():
    assert parse_event(load("s3_test_event.json")) == []
    event = load("s3_put.json")
    event["Records"][0]["eventName"] = "ObjectRemoved:Delete"
    assert parse_event(event)[0].uploads == ()


@pytest.mark.parametrize("key", ["uploads/a b+c%d.pdf", "uploads/Zoë Øster/scan 1.JPG", "uploads/100%.png"])
def test_built_events_round_trip(key):
    ref = UploadRef("bucket", key, None, "abc", 10)
    for event in (
        s3_notification(ref),
        sqs_envelope(s3_notification(ref)),
        sns_envelope(s3_notification(ref)),
        eventbridge_object_created(ref),
    ):
        (record,) = parse_event(event)
        assert record.uploads[0].key == key


def test_unknown_shapes_are_refused():
    from pipeline.events import EventError

    with pytest.raises(EventError):
        parse_event({"hello": "world"})
    with pytest.raises(EventError):
        parse_event({"Records": [{"eventSource": "aws:kinesis"}]})


CAPTURED = CORPUS / "events"


@pytest.mark.skipif(not CAPTURED.exists(), reason="shared corpus not present")
@pytest.mark.parametrize(
    "path,bucket,key",
    [
        ("powertools/s3EventDecodedKey.json", "sourcebucket", "Happy Face.jpg"),
        ("powertools/s3SqsEvent.json", "xxx", "test.pdf"),
        ("powertools/s3EventBridgeNotificationObjectCreatedEvent.json", "example-bucket", "IMG_m7fzo3.jpg"),
        ("aws-lambda-go/s3-event.json", "sourcebucket", "Happy Face.jpg"),
        ("awsdocs/s3_ev-events_1.json", "DOC-EXAMPLE-BUCKET1", "example-key"),
    ],
)
def test_real_captured_events(path, bucket, key):
    records = parse_event(json.loads((CAPTURED / path).read_text()))
    uploads = [u for r in records for u in r.uploads]
    assert [(u.bucket, u.key) for u in uploads] == [(bucket, key)]


@pytest.mark.skipif(not CAPTURED.exists(), reason="shared corpus not present")
def test_real_non_upload_events_yield_nothing():
    for path in ("powertools/s3EventDeleteObject.json", "powertools/s3EventBridgeNotificationObjectDeletedEvent.json",
                 "aws-lambda-go/s3-lifecycle-event.json"):
        assert [u for r in parse_event(json.loads((CAPTURED / path).read_text())) for u in r.uploads] == []
