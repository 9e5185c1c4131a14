"""The AWS path through moto with real boto3 calls: S3 upload event -> dispatcher Lambda ->
AWS Batch jobs (definitions registered by content hash) -> Batch state change events -> tracker
Lambda -> one SNS notice."""
from __future__ import annotations

import json

import pytest

from conftest import FILES, batch_path_on_moto
from pipeline import aws_lambda, repository
from pipeline.batch_events import job_state_change_event
from pipeline.events import UploadRef, eventbridge_object_created, s3_notification, sqs_envelope

REGION = "eu-west-1"


@pytest.fixture
def aws(tmp_path, monkeypatch):
    # The per-document job graph (three jobs per upload): what these tests check job by job.
    with batch_path_on_moto(tmp_path, monkeypatch, REGION, MEDINTAKE_JOB_SHAPE="per_document") as world:
        yield world


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
