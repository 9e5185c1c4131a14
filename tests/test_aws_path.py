"""The AWS path through moto with real boto3 calls: S3 upload event -> dispatcher Lambda ->
AWS Batch jobs (definitions registered by content hash) -> Batch state change events -> tracker
Lambda -> one SNS notice."""
from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws

from conftest import FILES, batch_queue, subscribed_topic
from compute.batch import BatchComputeEnvironment
from pipeline import aws_lambda, database, repository
from pipeline.jobdefs import load_job_definitions
from pipeline.settings import Settings
from pipeline.batch_events import job_state_change_event
from pipeline.events import UploadRef, eventbridge_object_created, s3_notification, sqs_envelope

REGION = "eu-west-1"


@pytest.fixture
def aws(tmp_path, monkeypatch):
    with mock_aws(config={"batch": {"use_docker": False}}):
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket="medintake-uploads-eu", CreateBucketConfiguration={"LocationConstraint": REGION})
        batch = batch_queue(REGION, "medintake-eu", "medintake-ce")
        topic, sqs, queue_url = subscribed_topic(REGION, "medintake-notices", "notices")
        env = {
            "MEDINTAKE_DATA_DIR": str(tmp_path / "data"),
            "MEDINTAKE_STORE_BACKEND": "s3",
            "MEDINTAKE_BUCKET": "medintake-uploads-eu",
            "MEDINTAKE_COMPUTE_BACKEND": "batch",
            "MEDINTAKE_JOB_QUEUE": "medintake-eu",
            "MEDINTAKE_WORKER_IMAGE": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/medintake-worker:1",
            "MEDINTAKE_NOTIFIER": "sns",
            "MEDINTAKE_SNS_TOPIC_ARN": topic,
            "MEDINTAKE_AWS_REGION": REGION,
        }
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        aws_lambda.reset()
        deploy_steps(Settings.load())
        yield {"s3": s3, "batch": batch, "sqs": sqs, "queue_url": queue_url}
        aws_lambda.reset()


def deploy_steps(settings: Settings) -> None:
    """What `medintake deploy` does after the stack: migrate the schema, register the definitions."""
    database.upgrade(settings)
    batch = BatchComputeEnvironment(settings)
    for definition in load_job_definitions(settings.job_definitions_dir).values():
        batch.ensure_job_definition(definition)


def upload(aws, key="uploads/Jane Doe referral.pdf") -> UploadRef:
    body = (FILES / "digital_referral.pdf").read_bytes()
    resp = aws["s3"].put_object(Bucket="medintake-uploads-eu", Key=key, Body=body)
    return UploadRef("medintake-uploads-eu", key, resp.get("VersionId"), resp["ETag"].strip('"'), len(body))


def notices(aws) -> list[dict]:
    out = []
    while True:
        msgs = aws["sqs"].receive_message(QueueUrl=aws["queue_url"], MaxNumberOfMessages=10).get("Messages", [])
        if not msgs:
            return out
        for m in msgs:
            envelope = json.loads(m["Body"])
            out.append({"message": json.loads(envelope["Message"]), "attributes": envelope["MessageAttributes"]})
            aws["sqs"].delete_message(QueueUrl=aws["queue_url"], ReceiptHandle=m["ReceiptHandle"])


def test_dispatch_submits_the_job_graph_to_batch(aws):
    ref = upload(aws)
    result = aws_lambda.dispatch_handler(sqs_envelope(s3_notification(ref), message_id="m-1"))
    assert result == {"batchItemFailures": []}
    jobs = aws["batch"].list_jobs(jobQueue="medintake-eu", filters=[{"name": "JOB_NAME", "values": ["medintake-*"]}])
    names = sorted(j["jobName"] for j in jobs["jobSummaryList"])
    assert names == sorted(f"medintake-{k}-{ref.document_id}-a1" for k in ("convert", "entities", "extract"))
    defs = aws["batch"].describe_job_definitions(status="ACTIVE")["jobDefinitions"]
    assert sorted(d["jobDefinitionName"].rsplit("-", 1)[0] for d in defs) == [
        "medintake-convert", "medintake-entities", "medintake-extract", "medintake-migrate", "medintake-pages",
        "medintake-process"]
    assert all(d["containerProperties"]["image"].endswith("medintake-worker:1") for d in defs)
    # A second upload registers no new definition revision.
    ref2 = upload(aws, key="uploads/other.pdf")
    aws_lambda.reset()
    aws_lambda.dispatch_handler(eventbridge_object_created(ref2))
    assert len(aws["batch"].describe_job_definitions(status="ACTIVE")["jobDefinitions"]) == 6  # + migrate, process, pages
    entities = next(j for j in repository.jobs_for(aws_lambda._parts()["settings"], ref.document_id, 1)
                    if j.kind == "entities")
    extract = next(j for j in repository.jobs_for(aws_lambda._parts()["settings"], ref.document_id, 1)
                   if j.kind == "extract")
    assert entities.depends_on == [extract.id]


def test_tracker_turns_batch_events_into_one_sns_notice(aws):
    ref = upload(aws)
    aws_lambda.dispatch_handler(s3_notification(ref))
    settings = aws_lambda._parts()["settings"]
    jobs = repository.jobs_for(settings, ref.document_id, 1)
    described = aws["batch"].describe_jobs(jobs=[j.id for j in jobs])["jobs"]
    for job in described:  # what EventBridge delivers when each job finishes
        event = job_state_change_event({**job, "status": "SUCCEEDED", "attempts": [{"container": {"exitCode": 0}}]},
                                       region=REGION, account="123456789012")
        aws_lambda.tracker_handler(event)
        aws_lambda.tracker_handler(event)  # EventBridge delivers at least once
    doc = repository.get_document(settings, ref.document_id)
    assert doc.status == "COMPLETED"
    got = notices(aws)
    assert len(got) == 1
    message = got[0]["message"]
    assert message["document_id"] == ref.document_id and message["status"] == "COMPLETED"
    assert got[0]["attributes"]["status"]["Value"] == "COMPLETED"
    assert "Jane" not in json.dumps(got)
    manifest = json.loads(aws["s3"].get_object(Bucket="medintake-uploads-eu",
                                               Key=f"results/{ref.document_id}/manifest.json")["Body"].read())
    assert manifest["status"] == "COMPLETED"


def test_rejected_exit_from_batch_is_reported_as_rejected(aws):
    ref = upload(aws)
    aws_lambda.dispatch_handler(s3_notification(ref))
    settings = aws_lambda._parts()["settings"]
    jobs = {j.kind: j for j in repository.jobs_for(settings, ref.document_id, 1)}
    repository.save_job_result(settings, jobs["extract"].id, reason=("encrypted_pdf", "the PDF is password-protected"))
    described = {j["jobId"]: j for j in aws["batch"].describe_jobs(jobs=[j.id for j in jobs.values()])["jobs"]}
    outcome = {"extract": ("FAILED", 65, "Essential container in task exited"),
               "convert": ("FAILED", 65, "Essential container in task exited"),
               "entities": ("FAILED", None, "Dependent Job failed")}
    for kind, (status, code, reason) in outcome.items():
        attempts = [{"container": {"exitCode": code}}] if code is not None else []
        job = {**described[jobs[kind].id], "status": status, "statusReason": reason, "attempts": attempts}
        aws_lambda.tracker_handler(job_state_change_event(job, region=REGION))
    doc = repository.get_document(settings, ref.document_id)
    assert (doc.status, doc.reason_code) == ("REJECTED", "encrypted_pdf")
    (notice,) = notices(aws)
    assert notice["attributes"]["reason_code"]["Value"] == "encrypted_pdf"
