"""S3 and SNS fault drills: 5xx, throttling, timeouts and unreachable endpoints, injected for real.

Faults go into real boto3 calls on their way to moto's real HTTP server (tests/faults.py): a
botocore ``before-send`` hook answers attempts with error responses that never reach the server,
raises a read timeout after really forwarding the request, or a connect timeout without sending;
worker processes are reached through a fault-injecting HTTP proxy. Checked: the retries are
bounded (attempt counts and elapsed time printed), a job that cannot reach S3 is a retried
transient failure (exit 75) and not a rejection, and a notice that cannot be sent now is sent
later, exactly once.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import boto3
import pytest
from conftest import FILES, REPO, read_notices
from faults import FaultProxy, Faults, free_port, moto_url  # noqa: F401 - moto_url is a fixture

from pipeline import database, repository
from pipeline.errors import ExitCode, TransientError
from pipeline.events import UploadRef
from pipeline.notify import SNS_TRIES, SnsNotifier, flush_outbox
from pipeline.store import S3_MAX_ATTEMPTS, S3Store

REGION = "us-east-1"


@pytest.fixture
def aws(moto_url, monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    bucket = f"drill-{time.time_ns()}"
    boto3.client("s3", region_name=REGION).create_bucket(Bucket=bucket)
    return {"url": moto_url, "bucket": bucket}


def s3_store(settings, aws, endpoint: str | None = None) -> S3Store:
    return S3Store(settings.replace(store_backend="s3", bucket=aws["bucket"], aws_region=REGION,
                                    s3_endpoint_url=endpoint or aws["url"]))


# ---- S3 -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("fault", [("status", "SlowDown", 503), ("read_timeout_after_send",), ("connect_timeout",)])
def test_s3_faults_are_retried_within_bounds(settings, aws, fault):
    store = s3_store(settings, aws)
    put = Faults("s3", [fault] * 2, operation="PutObject").install(store.client)
    get = Faults("s3", [fault] * 2, operation="GetObject").install(store.client)
    t0 = time.monotonic()
    store.put_bytes("results/x/text.txt", b"hello")
    assert store.get_bytes("results/x/text.txt") == b"hello"
    took = time.monotonic() - t0
    assert (put.attempts, get.attempts) == (3, 3)  # 2 faults, then the 3rd attempt went through
    print(f"\n[drill S3 {fault[1] if len(fault) > 1 else fault[0]}] 2 injected per call on PUT and GET: "
          f"3 attempts each, both succeeded, {took:.1f} s including backoff")


def test_a_job_that_cannot_reach_s3_exits_transient_not_rejected(settings, aws):
    """A worker process whose S3 is down exits 75 (retried by every job definition), not 65."""
    s = settings.replace(store_backend="s3", bucket=aws["bucket"], aws_region=REGION, s3_endpoint_url=aws["url"])
    database.upgrade(s)
    store = S3Store(s)
    store.put_file("uploads/ab/referral.pdf", FILES / "digital_referral.pdf")
    doc, _ = repository.register_document(s, UploadRef(aws["bucket"], "uploads/ab/referral.pdf", None, None, 1))
    unreachable = f"http://127.0.0.1:{free_port()}"  # nothing listens: connection refused
    env = {**os.environ, **s.replace(s3_endpoint_url=unreachable).to_env(), "PYTHONPATH": str(REPO)}
    t0 = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "jobs", "extract", "--document-id", doc.id, "--attempt", "1"],
                         env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    took = time.monotonic() - t0
    assert run.returncode == ExitCode.TRANSIENT, run.stderr[-2000:]
    assert "S3 unreachable (EndpointConnectionError)" in run.stderr and "referral" not in run.stderr
    assert repository.get_document(s, doc.id).status == "RECEIVED"  # no rejection recorded
    print(f"\n[drill job without S3] extract with S3 unreachable exited {run.returncode} (TRANSIENT, "
          f"S3 unreachable (EndpointConnectionError)) after {took:.1f} s of bounded retries")


def test_a_job_that_loses_s3_for_a_while_is_retried_and_completes(settings, aws):
    """Through the whole local pipeline on S3: every GET of the original answers SlowDown until
    the compute environment retries a job (its first try exhausted the SDK's retries, exit 75)."""
    from compute.runtime import LocalRuntime
    from pipeline.batch_events import parse_job_state_change

    outage = {"on": True, "failed": 0}

    def gets_of_uploads(method: str, path: str) -> bool:
        if outage["on"] and method == "GET" and "/uploads/" in path:
            outage["failed"] += 1
            return True
        return False

    def end_outage_on_retry(event: dict) -> None:
        change = parse_job_state_change(event)
        if change is not None and change.tries >= 1 and change.status in ("RUNNABLE", "STARTING", "RUNNING"):
            outage["on"] = False

    with FaultProxy(aws["url"], rule=gets_of_uploads) as proxy:
        s = settings.replace(store_backend="s3", bucket=aws["bucket"], aws_region=REGION, s3_endpoint_url=proxy.url)
        t0 = time.monotonic()
        with LocalRuntime(s, listeners=[end_outage_on_retry]) as runtime:
            doc_id = runtime.submit(FILES / "digital_referral.pdf").document_id
            runtime.run_until_final([doc_id], max_seconds=300)
        took = time.monotonic() - t0
    assert outage["failed"] >= S3_MAX_ATTEMPTS and not outage["on"]
    assert repository.get_document(s, doc_id).status == "COMPLETED"
    jobs = repository.jobs_for(s, doc_id, 1)
    retried = [j for j in jobs if j.tries > 1]
    assert retried and all(j.status == "SUCCEEDED" for j in jobs)  # failed try retried, not rejected
    assert [n["document_id"] for n in read_notices(s)] == [doc_id]
    print(f"\n[drill S3 outage in a job] {outage['failed']} GETs of the original answered SlowDown: "
          f"{', '.join(j.kind for j in retried)} exited 75 and was retried; document COMPLETED in {took:.1f} s, "
          f"1 notice")


# ---- SNS ----------------------------------------------------------------------------------------

def sns_topic(aws, fifo: bool = False) -> tuple[str, str]:
    sns, sqs = boto3.client("sns", region_name=REGION), boto3.client("sqs", region_name=REGION)
    name = f"faults-{time.time_ns()}" + (".fifo" if fifo else "")
    arn = sns.create_topic(Name=name, Attributes={"FifoTopic": "true"} if fifo else {})["TopicArn"]
    url = sqs.create_queue(QueueName=name.replace(".fifo", "") + "-sub" + (".fifo" if fifo else ""),
                           Attributes={"FifoQueue": "true"} if fifo else {})["QueueUrl"]
    qarn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=qarn, Attributes={"RawMessageDelivery": "true"})
    return arn, url


def delivered(queue_url: str) -> list[str]:
    sqs = boto3.client("sqs", region_name=REGION)
    out = []
    while msgs := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", []):
        for m in msgs:
            out.append(json.loads(m["Body"])["notice_id"])
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
    return out


def notice_for(settings, key: str):
    doc, _ = repository.register_document(settings, UploadRef("bucket", key, "v1", "e", 1))
    payload = {"version": 1, "event_type": "document.completed", "notice_id": f"{doc.id}:1", "document_id": doc.id,
               "attempt": 1, "status": "COMPLETED", "reason_code": None, "outputs": {}, "counts": {}}
    return repository.finalize(settings, doc.id, 1, "COMPLETED", None, payload)


def sns_settings(settings, arn):
    s = settings.replace(notifier="sns", sns_topic_arn=arn, aws_region=REGION)
    database.upgrade(s)
    return s


@pytest.mark.parametrize("fault", [("status", "Throttling", 400), ("status", "InternalError", 500),
                                   ("connect_timeout",)])
def test_sns_definite_failures_are_retried_and_sent_once(settings, aws, fault):
    arn, queue = sns_topic(aws)
    s = sns_settings(settings, arn)
    notice = notice_for(s, "uploads/a.pdf")
    notifier = SnsNotifier(s)
    faults = Faults("sns", [fault] * (SNS_TRIES - 1), operation="Publish").install(notifier.client)
    assert flush_outbox(s, notifier) == 1
    assert faults.attempts == SNS_TRIES and delivered(queue) == [notice.payload["notice_id"]]
    print(f"\n[drill SNS {fault[1] if len(fault) > 1 else fault[0]}] {SNS_TRIES - 1} injected: "
          f"{faults.attempts} attempts, 1 delivery")


def test_sns_down_now_sends_later_exactly_once(settings, aws, monkeypatch):
    arn, queue = sns_topic(aws)
    s = sns_settings(settings, arn)
    notice = notice_for(s, "uploads/b.pdf")
    with monkeypatch.context() as m:
        m.setenv("AWS_ENDPOINT_URL_SNS", f"http://127.0.0.1:{free_port()}")  # nothing listens there
        down = SnsNotifier(s)
    with pytest.raises(TransientError):
        flush_outbox(s, down)  # unreachable: nothing was sent, the row is pending again
    busy = SnsNotifier(s)
    Faults("sns", [("status", "Throttling", 400)] * SNS_TRIES, operation="Publish").install(busy.client)
    with pytest.raises(TransientError):
        flush_outbox(s, busy)  # throttled on every try
    (row,) = repository.notices(s)
    assert row.state == "pending" and row.publish_tries == 2 and "Throttling" in row.last_error
    assert delivered(queue) == []
    well = SnsNotifier(s)
    assert flush_outbox(s, well) == 1 and flush_outbox(s, well) == 0
    assert delivered(queue) == [notice.payload["notice_id"]]
    print("\n[drill SNS down, then throttled, then up] 2 failed flushes, notice pending; "
          "third flush sent it: 1 delivery, a fourth sent nothing")


def test_sns_read_timeout_after_send_is_not_resent_on_a_standard_topic(settings, aws):
    arn, queue = sns_topic(aws)
    s = sns_settings(settings, arn)
    notice = notice_for(s, "uploads/c.pdf")
    notifier = SnsNotifier(s)
    faults = Faults("sns", [("read_timeout_after_send",)], operation="Publish").install(notifier.client)
    assert flush_outbox(s, notifier) == 0  # no exception: other notices still go out
    assert faults.attempts == 1  # not retried by botocore nor by us
    (row,) = repository.notices(s)
    assert row.state == "unconfirmed" and "ReadTimeoutError" in row.last_error
    assert delivered(queue) == [notice.payload["notice_id"]]  # SNS did get it: a resend would double
    flush_outbox(s, SnsNotifier(s))
    assert delivered(queue) == []
    print("\n[drill SNS read timeout, standard topic] 1 attempt, 1 delivery, notice unconfirmed, never re-sent")


def test_sns_read_timeout_after_send_is_resent_safely_on_a_fifo_topic(settings, aws):
    arn, queue = sns_topic(aws, fifo=True)
    s = sns_settings(settings, arn)
    notice = notice_for(s, "uploads/d.pdf")
    notifier = SnsNotifier(s)
    faults = Faults("sns", [("read_timeout_after_send",)], operation="Publish").install(notifier.client)
    assert flush_outbox(s, notifier) == 1
    assert faults.attempts == 2 and delivered(queue) == [notice.payload["notice_id"]]  # deduplicated
    print("\n[drill SNS read timeout, FIFO topic] 2 attempts (same deduplication id), 1 delivery, sent")


def test_s3_slowdown_in_the_dispatcher_lambda_redelivers_the_record(tmp_path, monkeypatch):
    """AWS path (moto): the dispatcher Lambda cannot write the array job's manifest to S3 (SlowDown on
    all 5 attempts): the SQS record is reported failed, the document stays RECEIVED (not REJECTED),
    and the redelivered record submits exactly one job."""
    from conftest import batch_queue
    from moto import mock_aws

    from pipeline import aws_lambda
    from pipeline.events import s3_notification, sqs_envelope
    from pipeline.settings import Settings
    from conftest import deploy_steps

    region = "eu-west-1"
    with mock_aws(config={"batch": {"use_docker": False}}):
        s3 = boto3.client("s3", region_name=region)
        s3.create_bucket(Bucket="drill-up", CreateBucketConfiguration={"LocationConstraint": region})
        batch = batch_queue(region, "drill-q", "drill-ce")
        topic = boto3.client("sns", region_name=region).create_topic(Name="n")["TopicArn"]
        for k, v in {"MEDINTAKE_DATA_DIR": str(tmp_path / "data"), "MEDINTAKE_STORE_BACKEND": "s3",
                     "MEDINTAKE_BUCKET": "drill-up", "MEDINTAKE_COMPUTE_BACKEND": "batch",
                     "MEDINTAKE_JOB_QUEUE": "drill-q", "MEDINTAKE_WORKER_IMAGE": "img:1", "MEDINTAKE_NOTIFIER": "sns",
                     "MEDINTAKE_SNS_TOPIC_ARN": topic, "MEDINTAKE_AWS_REGION": region,
                     "MEDINTAKE_JOB_SHAPE": "array"}.items():
            monkeypatch.setenv(k, v)
        aws_lambda.reset()
        try:
            deploy_steps(Settings.load())
            body = (FILES / "digital_referral.pdf").read_bytes()
            resp = s3.put_object(Bucket="drill-up", Key="uploads/r.pdf", Body=body)
            ref = UploadRef("drill-up", "uploads/r.pdf", resp.get("VersionId"), resp["ETag"].strip('"'), len(body))
            event = sqs_envelope(s3_notification(ref), message_id="m-1")
            parts = aws_lambda._parts()
            faults = Faults("s3", [("status", "SlowDown", 503)] * S3_MAX_ATTEMPTS,
                            operation="PutObject").install(parts["dispatcher"].store.client)
            t0 = time.monotonic()
            first = aws_lambda.dispatch_handler(event)
            took = time.monotonic() - t0
            attempts = faults.attempts
            doc = repository.get_document(parts["settings"], ref.document_id)
            assert first == {"batchItemFailures": [{"itemIdentifier": "m-1"}]} and doc.status == "RECEIVED"
            assert attempts == S3_MAX_ATTEMPTS and took < 16  # standard mode: at most 1 + 2 + 4 + 8 s of backoff
            second = aws_lambda.dispatch_handler(event)  # SQS redelivers the record
            assert second == {"batchItemFailures": []}
            assert repository.get_document(parts["settings"], ref.document_id).status == "QUEUED"
            submitted = batch.list_jobs(jobQueue="drill-q", filters=[{"name": "JOB_NAME", "values": ["medintake-*"]}])
            assert len(submitted["jobSummaryList"]) == 1
        finally:
            aws_lambda.reset()
    print(f"\n[drill S3 SlowDown in the dispatcher Lambda] {attempts} attempts in {took:.1f} s, record reported "
          f"failed, document RECEIVED; redelivery: QUEUED, 1 Batch job")
