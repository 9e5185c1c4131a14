"""The burst drill on the AWS path, shared by tests/test_drills_burst.py and bench/soak.py.

Real parts: moto's server over HTTP (S3 with its event notification to an SQS queue, SQS, Batch,
SNS with an SQS subscriber) and real boto3 calls; a fresh database on the machine's MariaDB (RDS's
stand-in); the real dispatcher and tracker Lambda handlers (``pipeline.aws_lambda``); the real
worker code and Tesseract, run by tests/batch_emulator.py as Batch would run the containers (moto
runs nothing without Docker). Every upload is PUT to the bucket first; then the upload-events
queue is drained in batches of ten into the dispatcher handler, as the event source mapping does;
then the emulator runs every submitted job, each state change delivered twice to the tracker
(EventBridge is at-least-once). The subscriber queue is read after every terminal event, which
times each notice's arrival for the upload-to-notice latency.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections import Counter
from pathlib import Path
from typing import Any

from drills.burst import BurstFigures, check_job_rows
from drills.documents import write_mixed

REGION = "eu-central-1"  # no Comprehend Medical here: the local entity extractor runs
ACCOUNT = "123456789012"
BUCKET = "medintake-burst-uploads"
QUEUE = "medintake-burst"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sqs_arn(sqs: Any, url: str) -> str:
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


def run_aws_burst(tmp: Path, count: int, database_url: str) -> BurstFigures:
    """``count`` mixed uploads through S3 -> SQS -> dispatcher -> Batch -> tracker -> SNS on moto."""
    import requests
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per HTTP request otherwise
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    saved = dict(os.environ)
    try:
        requests.post(f"{url}/moto-api/config", json={"batch": {"use_docker": False}}, timeout=10)
        for name in list(os.environ):
            if name.startswith("MEDINTAKE_") and not name.startswith("MEDINTAKE_TEST_"):
                del os.environ[name]
        os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                           "AWS_DEFAULT_REGION": REGION, "AWS_ENDPOINT_URL": url})
        return _run(tmp, count, database_url, url)
    finally:
        from pipeline import aws_lambda, database

        aws_lambda.reset()
        database.dispose_engines()
        os.environ.clear()
        os.environ.update(saved)
        server.stop()


def _run(tmp: Path, count: int, database_url: str, url: str) -> BurstFigures:
    import boto3

    from batch_emulator import BatchEmulator
    from compute.batch import BatchComputeEnvironment
    from conftest import batch_queue
    from pipeline import aws_lambda, database, repository
    from pipeline.batch_events import TERMINAL
    from pipeline.jobdefs import load_job_definitions
    from pipeline.settings import Settings

    s3 = boto3.client("s3", region_name=REGION)
    sqs = boto3.client("sqs", region_name=REGION)
    sns = boto3.client("sns", region_name=REGION)
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    events_url = sqs.create_queue(QueueName="upload-events")["QueueUrl"]
    s3.put_bucket_notification_configuration(Bucket=BUCKET, NotificationConfiguration={"QueueConfigurations": [{
        "QueueArn": _sqs_arn(sqs, events_url), "Events": ["s3:ObjectCreated:*"],
        "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "uploads/"}]}}}]})
    batch = batch_queue(REGION, QUEUE, "medintake-burst-ce")
    topic = sns.create_topic(Name="medintake-notices")["TopicArn"]
    notices_url = sqs.create_queue(QueueName="notice-subscriber")["QueueUrl"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=_sqs_arn(sqs, notices_url))
    os.environ.update({
        "MEDINTAKE_DATA_DIR": str(tmp / "data"), "MEDINTAKE_DATABASE_URL": database_url,
        "MEDINTAKE_STORE_BACKEND": "s3", "MEDINTAKE_BUCKET": BUCKET, "MEDINTAKE_S3_ENDPOINT_URL": url,
        "MEDINTAKE_COMPUTE_BACKEND": "batch", "MEDINTAKE_JOB_QUEUE": QUEUE,
        "MEDINTAKE_WORKER_IMAGE": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/medintake-worker:1",
        "MEDINTAKE_NOTIFIER": "sns", "MEDINTAKE_SNS_TOPIC_ARN": topic, "MEDINTAKE_AWS_REGION": REGION,
        # The stack's dispatcher concurrency x rate; moto does not throttle, so no waiting here.
        "MEDINTAKE_SUBMIT_RATE": "1000",
    })
    settings = Settings.load()
    database.upgrade(settings)  # what `medintake deploy` does after the stack
    compute = BatchComputeEnvironment(settings)
    for definition in load_job_definitions(settings.job_definitions_dir).values():
        compute.ensure_job_definition(definition)
    aws_lambda.reset()

    # ---- the burst: every upload PUT at once --------------------------------------------------
    files = write_mixed(tmp / "inbox", count)
    t0 = time.monotonic()
    put_at: dict[str, float] = {}
    for path, _ in files:
        key = f"uploads/burst/{path.name}"
        put_at[key] = time.monotonic()
        s3.put_object(Bucket=BUCKET, Key=key, Body=path.read_bytes())
    # ---- the event source mapping: batches of ten into the dispatcher -------------------------
    events_arn = _sqs_arn(sqs, events_url)
    deliveries = 0
    while True:
        got = sqs.receive_message(QueueUrl=events_url, MaxNumberOfMessages=10, AttributeNames=["All"],
                                  WaitTimeSeconds=0, VisibilityTimeout=60).get("Messages", [])
        if not got:
            break
        event = {"Records": [{"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                              "attributes": m.get("Attributes", {}), "messageAttributes": {},
                              "md5OfBody": m["MD5OfBody"], "eventSource": "aws:sqs", "eventSourceARN": events_arn,
                              "awsRegion": REGION} for m in got]}
        response = aws_lambda.dispatch_handler(event)
        assert response["batchItemFailures"] == [], response
        deliveries += sum(1 for m in got if "Records" in json.loads(m["Body"]))  # not the s3:TestEvent
        for m in got:
            sqs.delete_message(QueueUrl=events_url, ReceiptHandle=m["ReceiptHandle"])
    assert deliveries == count, f"{deliveries} upload events for {count} uploads"
    from sqlalchemy import select

    from pipeline.database import transaction
    from pipeline.models import Document

    with transaction(settings) as s:
        rows = list(s.execute(select(Document.id, Document.object_key)))
    doc_of_key = {key: doc_id for doc_id, key in rows}
    assert set(doc_of_key) == set(put_at), "an upload was not registered, or registered twice"

    # ---- Batch runs the jobs; EventBridge delivers each change twice to the tracker -----------
    arrived: dict[str, list[float]] = {}

    def read_notices() -> None:
        while True:
            got = sqs.receive_message(QueueUrl=notices_url, MaxNumberOfMessages=10).get("Messages", [])
            if not got:
                return
            for m in got:
                message = json.loads(json.loads(m["Body"])["Message"])
                arrived.setdefault(message["document_id"], []).append(time.monotonic())
                sqs.delete_message(QueueUrl=notices_url, ReceiptHandle=m["ReceiptHandle"])

    def to_tracker(event: dict) -> None:
        aws_lambda.tracker_handler(event)
        aws_lambda.tracker_handler(event)
        if event["detail"]["status"] in TERMINAL:
            read_notices()

    emulator = BatchEmulator(batch, to_tracker, str(tmp), REGION, ACCOUNT)
    batch_jobs: set[str] = set()
    if settings.job_shape == "per_document":  # three jobs per document, run as a graph
        for doc_id in doc_of_key.values():
            jobs = repository.jobs_for(settings, doc_id, 1)
            batch_jobs.update(j.id for j in jobs)
            emulator.run_graph([j.id for j in jobs])
    else:  # one array job per dispatcher batch; a document's row is <job>[:<child>]#<position>
        for doc_id in doc_of_key.values():
            for row in repository.jobs_for(settings, doc_id, 1):
                batch_jobs.add(row.id.split("#")[0].split(":")[0])
        for job_id in sorted(batch_jobs):
            emulator.run(job_id)
    read_notices()
    seconds = time.monotonic() - t0

    # ---- the end state ------------------------------------------------------------------------
    from sqlalchemy import func

    from pipeline.models import Job, Notice

    with transaction(settings) as s:
        statuses = dict(Counter(s.scalars(select(Document.status))))
        attempts = Counter(s.scalars(select(Document.attempt)))
        rows = list(s.execute(select(Job.document_id, Job.name, Job.status)))
        notice_rows = Counter(s.scalars(select(Notice.document_id)))
        unsent = s.scalar(select(func.count()).select_from(Notice).where(Notice.sent_at.is_(None)))
    listed = [j for page in batch.get_paginator("list_jobs").paginate(
        jobQueue=QUEUE, filters=[{"name": "JOB_NAME", "values": ["medintake-*"]}]) for j in page["jobSummaryList"]]
    assert statuses == {"COMPLETED": count}, statuses
    assert attempts == {1: count}, "a document was processed twice"
    check_job_rows(settings, rows, list(doc_of_key.values()))
    parents = {j["jobId"].split(":")[0] for j in listed}
    assert batch_jobs <= parents, "a Batch job the rows name was never submitted"
    if settings.job_shape == "per_document":
        assert len(listed) == 3 * count == len({j["jobName"] for j in listed}), "a duplicate or missing Batch job"
    else:  # one job per dispatcher batch of ten upload events at most, never one per document kind
        assert len(parents) <= -(-count // 10) + 1, f"{len(parents)} Batch jobs for {count} documents"
    assert set(notice_rows.values()) == {1} and len(notice_rows) == count and unsent == 0
    assert set(arrived) == set(doc_of_key.values()) and all(len(v) == 1 for v in arrived.values()), \
        "a document got no notice on the topic, or two"
    latencies = [arrived[doc_of_key[key]][0] - at for key, at in put_at.items()]
    by_kind = dict(Counter(kind for _, kind in files))
    return BurstFigures(count, seconds, statuses, by_kind, latencies)
