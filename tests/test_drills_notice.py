"""Double-notice drill: a tracker SIGKILLed inside a publish, on moto's SNS server.

The window: SNS accepted the Publish, the tracker dies before ``mark_sent`` commits, its lease
expires, another tracker looks at the outbox. Before issue 11 it published again (a second e-mail
on a standard topic). Now the row says "publishing" (committed before the call), so the other
tracker knows the outcome is unknown: on a standard topic the notice is parked ``unconfirmed``
(counted, alarmed, listed; an operator resends or confirms it), on a FIFO topic it is re-sent
with the same deduplication id while SNS's window still covers the first try.
"""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from datetime import timedelta

import boto3
import pytest
from click.testing import CliRunner
from conftest import REPO
from faults import moto_url  # noqa: F401 - a fixture
from sqlalchemy import update

from pipeline import database, repository
from pipeline.events import UploadRef
from pipeline.models import Notice, utcnow
from pipeline.notify import SnsNotifier, flush_outbox

REGION = "us-east-1"

# The tracker process: flushes the outbox through a real SnsNotifier and stops at the chosen
# point of the Publish call, where the parent SIGKILLs it.
CHILD = r"""
import sys, time
from pipeline.settings import Settings
from pipeline import notify
settings = Settings.load()
notifier = notify.SnsNotifier(settings)
def hold(**kwargs):
    sys.stdout.write("at-kill-point\n"); sys.stdout.flush()
    time.sleep(120)
notifier.client.meta.events.register(sys.argv[1], hold)
notify.flush_outbox(settings, notifier)
sys.stdout.write("survived\n")
"""


@pytest.fixture
def sns(moto_url, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    return {"url": moto_url, "sns": boto3.client("sns", region_name=REGION),
            "sqs": boto3.client("sqs", region_name=REGION)}


def topic_with_subscriber(sns, name: str, fifo: bool) -> tuple[str, str]:
    """A topic and an SQS queue subscribed to it (raw delivery): every delivery is one message."""
    suffix = ".fifo" if fifo else ""
    attrs = {"FifoTopic": "true"} if fifo else {}
    arn = sns["sns"].create_topic(Name=name + suffix, Attributes=attrs)["TopicArn"]
    qattrs = {"FifoQueue": "true"} if fifo else {}
    url = sns["sqs"].create_queue(QueueName=name + "-sub" + suffix, Attributes=qattrs)["QueueUrl"]
    qarn = sns["sqs"].get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns["sns"].subscribe(TopicArn=arn, Protocol="sqs", Endpoint=qarn, Attributes={"RawMessageDelivery": "true"})
    return arn, url


def deliveries(sns, queue_url: str) -> list[dict]:
    """Every message the subscriber has received so far (received once, then deleted)."""
    out = []
    while True:
        msgs = sns["sqs"].receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10,
                                          WaitTimeSeconds=0).get("Messages", [])
        if not msgs:
            return out
        for m in msgs:
            out.append(json.loads(m["Body"]))
            sns["sqs"].delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])


def final_notice(settings, key: str) -> Notice:
    doc, _ = repository.register_document(settings, UploadRef("bucket", key, "v1", "etag", 1))
    payload = {"version": 1, "event_type": "document.completed", "notice_id": f"{doc.id}:1",
               "document_id": doc.id, "attempt": 1, "status": "COMPLETED", "reason_code": None,
               "outputs": {}, "counts": {}, "time": "2026-11-28T00:00:00+00:00"}
    notice = repository.finalize(settings, doc.id, 1, "COMPLETED", None, payload)
    assert notice is not None
    return notice


def kill_tracker_inside_publish(settings, moto_url: str, kill_point: str) -> float:
    """Run a tracker process, SIGKILL it at ``kill_point``; returns seconds from start to kill."""
    env = {**os.environ, **settings.to_env(), "AWS_ENDPOINT_URL": moto_url, "PYTHONPATH": str(REPO)}
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", CHILD, kill_point], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=REPO)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready, "the tracker never reached the kill point"
        line = proc.stdout.readline().decode()
        assert line.strip() == "at-kill-point", line + proc.stderr.read().decode()
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return time.monotonic() - t0


def row(settings, notice_id: int) -> Notice:
    return next(n for n in repository.notices(settings) if n.id == notice_id)


def test_killed_after_publish_on_a_standard_topic_is_never_sent_twice_blindly(db_settings, sns, monkeypatch):
    arn, queue = topic_with_subscriber(sns, f"std-{db_settings.effective_database_url[:5]}-{time.time_ns()}", False)
    settings = db_settings.replace(notifier="sns", sns_topic_arn=arn, aws_region=REGION)
    notice = final_notice(settings, "uploads/drill.pdf")
    took = kill_tracker_inside_publish(settings, sns["url"], "after-call.sns.Publish")
    got = deliveries(sns, queue)
    assert [m["notice_id"] for m in got] == [notice.payload["notice_id"]]  # SNS had it when we killed
    n = row(settings, notice.id)
    assert n.state == "publishing" and n.sent_at is None and n.publisher  # recorded before the call

    other = SnsNotifier(settings)
    assert flush_outbox(settings, other) == 0  # lease still held by the dead tracker: hands off
    time.sleep(0.6)
    assert flush_outbox(settings, other, lease_seconds=0.5) == 0  # lease expired: outcome unknown
    n = row(settings, notice.id)
    assert n.state == "unconfirmed" and n.unknown_since is not None and n.sent_at is None
    assert deliveries(sns, queue) == []  # not re-sent
    assert repository.count_notices(settings, "unconfirmed") == 1
    flush_outbox(settings, other, lease_seconds=0.5)  # and not on any later flush either
    assert deliveries(sns, queue) == []
    print(f"\n[drill double-notice standard {settings.effective_database_url.split(':')[0]}] tracker killed "
          f"{took:.2f} s after start, right after SNS accepted the publish; deliveries 1, after lease expiry "
          f"and two more flushes still 1; notice unconfirmed")


def test_killed_before_the_request_left_is_unconfirmed_too(settings, sns):
    """The price: the database cannot tell "died before sending" from "died after"; both park."""
    database.upgrade(settings)
    arn, queue = topic_with_subscriber(sns, f"before-{time.time_ns()}", False)
    settings = settings.replace(notifier="sns", sns_topic_arn=arn, aws_region=REGION)
    notice = final_notice(settings, "uploads/before.pdf")
    kill_tracker_inside_publish(settings, sns["url"], "before-send.sns.Publish")
    time.sleep(0.6)
    flush_outbox(settings, SnsNotifier(settings), lease_seconds=0.5)
    assert deliveries(sns, queue) == []
    assert row(settings, notice.id).state == "unconfirmed"
    print("\n[drill double-notice before-send] tracker killed before the request left: deliveries 0, "
          "notice unconfirmed (an operator resends it)")


def unconfirmed_gauge(capsys) -> float:
    """The NoticesUnconfirmed value the tracker Lambda writes as EMF (settings from the environment)."""
    from pipeline import aws_lambda

    aws_lambda.reset()
    capsys.readouterr()
    try:
        aws_lambda.tracker_handler({"source": "aws.batch", "detail-type": "Something Else", "detail": {}})
    finally:
        aws_lambda.reset()
    for line in capsys.readouterr().out.splitlines():
        if line.startswith("{") and "NoticesUnconfirmed" in line:
            value = json.loads(line)["NoticesUnconfirmed"]
            return value[0] if isinstance(value, list) else value
    raise AssertionError("no NoticesUnconfirmed metric written")


def test_operator_lists_resends_and_confirms_unconfirmed_notices(settings, sns, monkeypatch, capsys):
    import cli

    database.upgrade(settings)
    arn, queue = topic_with_subscriber(sns, f"ops-{time.time_ns()}", False)
    settings = settings.replace(notifier="sns", sns_topic_arn=arn, aws_region=REGION)
    first = final_notice(settings, "uploads/Jane Roe 1.pdf")
    second = final_notice(settings, "uploads/Jane Roe 2.pdf")
    for n in (first, second):
        kill_tracker_inside_publish(settings, sns["url"], "after-call.sns.Publish")
    assert len(deliveries(sns, queue)) == 2
    time.sleep(0.6)
    flush_outbox(settings, SnsNotifier(settings), lease_seconds=0.5)
    for k, v in settings.to_env().items():
        monkeypatch.setenv(k, v)
    runner = CliRunner()
    listed = runner.invoke(cli.main, ["notices", "list", "--state", "unconfirmed", "--json"], catch_exceptions=False)
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output)
    assert [r["id"] for r in rows] == [first.id, second.id]
    assert all(r["state"] == "unconfirmed" and r["document_id"] for r in rows)
    assert "Jane" not in listed.output
    text = runner.invoke(cli.main, ["notices", "list"], catch_exceptions=False).output
    assert "unconfirmed" in text and "2 unconfirmed" in text

    assert unconfirmed_gauge(capsys) == 2  # what the alarm watches
    shown = runner.invoke(cli.main, ["documents", "show", first.document_id], catch_exceptions=False).output
    assert f"UNCONFIRMED (may not have reached subscribers: medintake notices list, notice {first.id})" in shown

    resent = runner.invoke(cli.main, ["notices", "resend", str(first.id)], catch_exceptions=False)
    assert resent.exit_code == 0, resent.output
    assert [m["notice_id"] for m in deliveries(sns, queue)] == [first.payload["notice_id"]]
    confirmed = runner.invoke(cli.main, ["notices", "confirm", str(second.id)], catch_exceptions=False)
    assert confirmed.exit_code == 0, confirmed.output
    assert deliveries(sns, queue) == []
    assert {n.id: n.state for n in repository.notices(settings)} == {first.id: "sent", second.id: "sent"}
    assert unconfirmed_gauge(capsys) == 0
    again = runner.invoke(cli.main, ["notices", "resend", str(first.id)])  # only unconfirmed ones
    assert again.exit_code != 0 and deliveries(sns, queue) == []


def test_killed_after_publish_on_a_fifo_topic_is_resent_once_inside_the_window(settings, sns):
    database.upgrade(settings)
    arn, queue = topic_with_subscriber(sns, f"fifo-{time.time_ns()}", True)
    settings = settings.replace(notifier="sns", sns_topic_arn=arn, aws_region=REGION)
    inside = final_notice(settings, "uploads/fifo-in.pdf")
    kill_tracker_inside_publish(settings, sns["url"], "after-call.sns.Publish")
    time.sleep(0.6)
    assert flush_outbox(settings, SnsNotifier(settings), lease_seconds=0.5) == 1  # re-sent, same dedup id
    assert row(settings, inside.id).state == "sent"
    got = deliveries(sns, queue)
    assert [m["notice_id"] for m in got] == [inside.payload["notice_id"]]  # the resend was deduplicated

    outside = final_notice(settings, "uploads/fifo-out.pdf")
    kill_tracker_inside_publish(settings, sns["url"], "after-call.sns.Publish")
    with database.transaction(settings) as s:  # the dead tracker's try is now 5 minutes old
        s.execute(update(Notice).where(Notice.id == outside.id).values(claimed_at=utcnow() - timedelta(minutes=5)))
    assert flush_outbox(settings, SnsNotifier(settings), lease_seconds=0.5) == 0
    assert row(settings, outside.id).state == "unconfirmed"
    assert [m["notice_id"] for m in deliveries(sns, queue)] == [outside.payload["notice_id"]]
    print("\n[drill double-notice FIFO] killed after publish: re-sent automatically inside the window, "
          "1 delivery (deduplicated); first try 5 min old: unconfirmed, 1 delivery")


FILE_CHILD = r"""
import sys, time
from pipeline.settings import Settings
from pipeline import notify
settings = Settings.load()
notifier = notify.FileNotifier(settings.effective_notices_path)
real = notifier.publish
def publish(payload):
    if sys.argv[1] == "after":
        real(payload)
    sys.stdout.write("at-kill-point\n"); sys.stdout.flush()
    time.sleep(120)
notifier.publish = publish
notify.flush_outbox(settings, notifier)
"""


@pytest.mark.parametrize("kill_point", ["before", "after"])
def test_killed_inside_a_file_publish_is_settled_by_looking(settings, kill_point):
    """The local notices file can be read: an unknown outcome there is settled, never parked."""
    from conftest import read_notices

    from pipeline.notify import FileNotifier

    database.upgrade(settings)
    notice = final_notice(settings, "uploads/local.pdf")
    env = {**os.environ, **settings.to_env(), "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", FILE_CHILD, kill_point], stdout=subprocess.PIPE, env=env, cwd=REPO)
    ready, _, _ = select.select([proc.stdout], [], [], 60)
    assert ready and proc.stdout.readline().strip() == b"at-kill-point"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    assert row(settings, notice.id).state == "publishing"
    time.sleep(0.6)
    sent = flush_outbox(settings, FileNotifier(settings.effective_notices_path), lease_seconds=0.5)
    assert row(settings, notice.id).state == "sent"
    assert [n["notice_id"] for n in read_notices(settings)] == [notice.payload["notice_id"]]
    assert sent == (1 if kill_point == "before" else 0)
    print(f"\n[drill double-notice file, killed {kill_point} the write] settled by reading the file: 1 line, "
          f"{'sent now' if sent else 'found there, not written again'}")
