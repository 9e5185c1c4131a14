"""`medintake deploy` against moto's server, then a document from upload API to SNS notice.

Real parts: moto's server (HTTP, real boto3 calls) for CloudFormation, S3, SQS, SNS, Batch,
Lambda, Secrets Manager, STS; the real MariaDB on the machine as the database; the real worker code
and Tesseract. Stand-ins, each named where it is made:
- moto's CloudFormation skips some resource types (``MOTO_SKIPPED_TYPES`` in
  test_stack_template.py says which and what stands in); the test checks that list is exact;
- the database secret (a skipped type) is created by the test under the stack's name, pointing at
  the local MariaDB, which stands in for RDS;
- moto's CloudFormation ignores the bucket's versioning and event notification: the test applies
  the template's own values through the S3 API;
- API Gateway + Cognito: the upload API handler is called with the event API Gateway sends after
  the Cognito authorizer accepted the user (the claims);
- Lambda's runtime: each handler runs in this process with the environment moto holds for that
  function (the stack's), as the SQS event source mapping and EventBridge would invoke it;
- Batch's runtime: tests/batch_emulator.py runs each submitted job's command in this process.
"""
from __future__ import annotations

import json
import os
import socket
import uuid
from contextlib import contextmanager
from pathlib import Path

import boto3
import pytest
import requests
from click.testing import CliRunner

from conftest import FILES, MYSQL_URL, REPO, _server_database
from batch_emulator import BatchEmulator
from test_stack_template import MOTO_SKIPPED_TYPES, apply_moto_stand_ins, load_template

pytestmark = pytest.mark.mariadb

REGION = "eu-central-1"  # no Comprehend Medical here: the local extractor runs, PHI stays in region
ENV = "test"
ACCOUNT = "123456789012"
IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/medintake-{ENV}-worker:0a1b2c3"
TEMPLATE = REPO / "compute" / "cloudformation" / "medintake.yaml"
PHI = ("Jane", "Doé", "référence", "Müller")


class LambdaContext:
    """The attributes Powertools reads from Lambda's context object."""

    def __init__(self, name: str) -> None:
        self.function_name = name
        self.memory_limit_in_mb = 512
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"
        self.aws_request_id = str(uuid.uuid4())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The stack deployed by the CLI into moto's server, with the stand-ins applied."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    requests.post(f"{url}/moto-api/config", json={"batch": {"use_docker": False}},
                  timeout=10)
    db = _server_database(MYSQL_URL, "mysql")
    db_url = next(db)
    work = tmp_path_factory.mktemp("deploy")
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith("MEDINTAKE_") and not name.startswith("MEDINTAKE_TEST_"):
                mp.delenv(name)
        for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                     "AWS_DEFAULT_REGION": REGION, "AWS_ENDPOINT_URL": url}.items():
            mp.setenv(k, v)
        mp.setenv("XDG_CACHE_HOME", str(work / "cache"))
        clients = {n: boto3.client(n, region_name=REGION) for n in
                   ("cloudformation", "s3", "sqs", "sns", "batch", "lambda", "secretsmanager")}
        # Stand-in: the secret the stack's AWS::SecretsManager::Secret would hold (plus the
        # SecretTargetAttachment's host and port), pointing at the local MariaDB.
        from sqlalchemy.engine import make_url

        u = make_url(db_url)
        clients["secretsmanager"].create_secret(Name=f"medintake/{ENV}/database", SecretString=json.dumps(
            {"username": u.username, "password": u.password, "host": u.host, "port": u.port, "dbname": u.database}))
        import cli

        # The three-jobs-per-document shape, which these tests follow job by job; the array shape
        # (the template's default) has its own test below, with the function's setting switched.
        args = ["deploy", "--region", REGION, "--env", ENV, "--worker-image", IMAGE, "--cost-centre", "cc-42",
                "--endpoint-url", url, "--migrate-with", "direct", "--no-lambda-dependencies", "--json",
                "--parameter", "JobShape=per_document"]
        result = CliRunner().invoke(cli.main, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        deployed = json.loads(result.stdout)[0]
        outputs = deployed["outputs"]
        # Stand-in: moto's CloudFormation ignores the bucket's versioning and notification;
        # test_stack_template applies the template's own values through the S3 API.
        apply_moto_stand_ins(outputs, REGION)
        template = load_template(TEMPLATE)
        # Stand-in: moto's SQS event source mapping would take the upload events and fail to run
        # the dispatcher (it needs Docker); the tests invoke the handler as the mapping does.
        lam = clients["lambda"]
        (mapping,) = lam.list_event_source_mappings(FunctionName=outputs["DispatcherFunctionName"])["EventSourceMappings"]
        lam.delete_event_source_mapping(UUID=mapping["UUID"])
        # S3 announced the notification with an s3:TestEvent; the dispatcher takes and ignores it.
        stack_so_far = {"outputs": outputs, "clients": clients,
                        "functions": {"DispatcherFunctionName": lam.get_function_configuration(
                            FunctionName=outputs["DispatcherFunctionName"])}}
        test_events = receive_upload_events(stack_so_far)
        assert all("s3:TestEvent" in m["Body"] for m in test_events)
        assert dispatch(stack_so_far, test_events) == {"batchItemFailures": []}
        # The operator's subscriber: an SQS queue on the notices topic.
        notices_url = clients["sqs"].create_queue(QueueName="notice-subscriber")["QueueUrl"]
        notices_arn = clients["sqs"].get_queue_attributes(QueueUrl=notices_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        clients["sns"].subscribe(TopicArn=outputs["NoticesTopicArn"], Protocol="sqs", Endpoint=notices_arn)
        functions = {key: clients["lambda"].get_function_configuration(FunctionName=outputs[key])
                     for key in ("DispatcherFunctionName", "TrackerFunctionName", "UploadApiFunctionName")}
        yield {"url": url, "deployed": deployed, "outputs": outputs, "clients": clients, "db_url": db_url,
               "template": template, "functions": functions, "notices_url": notices_url, "work": work,
               "cli_args": args, "mapping": mapping}
    server.stop()
    next(db, None)


@contextmanager
def as_lambda(stack, key: str):
    """This process as the function's container: its environment, nothing of the test's."""
    from pipeline import aws_lambda, upload_api

    env = stack["functions"][key]["Environment"]["Variables"]
    saved = dict(os.environ)
    for name in list(os.environ):
        if name.startswith("MEDINTAKE_"):
            del os.environ[name]
    os.environ.update(env)
    aws_lambda.reset()
    upload_api.reset()
    try:
        yield LambdaContext(stack["functions"][key]["FunctionName"])
    finally:
        aws_lambda.reset()
        upload_api.reset()
        os.environ.clear()
        os.environ.update(saved)


def upload_as(stack, sub: str, path: Path, name: str, content_type: str) -> dict:
    """The app's upload: ask the API for a presigned POST, then POST the file to S3 with it."""
    from pipeline import upload_api
    from test_upload_api import event as api_event

    with as_lambda(stack, "UploadApiFunctionName") as ctx:
        answer = upload_api.handler(api_event("POST", "/uploads", body={
            "file_name": name, "content_type": content_type, "size": path.stat().st_size}, sub=sub), ctx)
    assert answer["statusCode"] == 201, answer
    grant = json.loads(answer["body"])
    posted = requests.post(grant["url"], data=grant["fields"], files={"file": (name, path.read_bytes(), content_type)},
                           timeout=30)
    assert posted.status_code in (200, 201, 204), posted.text[:200]
    return grant


def status_as(stack, sub: str, resource: str, params: dict) -> dict:
    from pipeline import upload_api
    from test_upload_api import event as api_event

    with as_lambda(stack, "UploadApiFunctionName") as ctx:
        answer = upload_api.handler(api_event("GET", resource, params=params, sub=sub), ctx)
    return {**json.loads(answer["body"]), "http": answer["statusCode"]}


def receive_upload_events(stack) -> list[dict]:
    sqs = stack["clients"]["sqs"]
    out = []
    while True:
        got = sqs.receive_message(QueueUrl=stack["outputs"]["UploadEventsQueueUrl"], MaxNumberOfMessages=10,
                                  AttributeNames=["All"], WaitTimeSeconds=0).get("Messages", [])
        if not got:
            return out
        out.extend(got)


def dispatch(stack, messages: list[dict]) -> dict:
    """Invoke the dispatcher as the SQS event source mapping does; delete what it did not report."""
    from pipeline import aws_lambda

    queue_arn = stack["clients"]["sqs"].get_queue_attributes(
        QueueUrl=stack["outputs"]["UploadEventsQueueUrl"], AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    event = {"Records": [{
        "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
        "attributes": m.get("Attributes", {}), "messageAttributes": {}, "md5OfBody": m["MD5OfBody"],
        "eventSource": "aws:sqs", "eventSourceARN": queue_arn, "awsRegion": REGION} for m in messages]}
    with as_lambda(stack, "DispatcherFunctionName") as ctx:
        response = aws_lambda.dispatch_handler(event, ctx)
    failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
    for m in messages:
        if m["MessageId"] not in failed:
            stack["clients"]["sqs"].delete_message(QueueUrl=stack["outputs"]["UploadEventsQueueUrl"],
                                                   ReceiptHandle=m["ReceiptHandle"])
    return response


def emulator(stack) -> BatchEmulator:
    from pipeline import aws_lambda

    def to_tracker(event: dict) -> None:
        with as_lambda(stack, "TrackerFunctionName") as ctx:
            aws_lambda.tracker_handler(event, ctx)
            aws_lambda.tracker_handler(event, ctx)  # EventBridge delivers at least once

    return BatchEmulator(stack["clients"]["batch"], to_tracker, str(stack["work"]), REGION, ACCOUNT)


def notices(stack) -> list[dict]:
    sqs, out = stack["clients"]["sqs"], []
    while True:
        got = sqs.receive_message(QueueUrl=stack["notices_url"], MaxNumberOfMessages=10).get("Messages", [])
        if not got:
            return out
        for m in got:
            envelope = json.loads(m["Body"])
            out.append({"raw": m["Body"], "message": json.loads(envelope["Message"]),
                        "attributes": envelope.get("MessageAttributes", {})})
            sqs.delete_message(QueueUrl=stack["notices_url"], ReceiptHandle=m["ReceiptHandle"])


def document_jobs(stack, document_id: str) -> list:
    from pipeline import repository
    from pipeline.settings import Settings

    return repository.jobs_for(Settings.load(database_url=stack["db_url"]), document_id, 1)


def db_document(stack, document_id: str):
    from pipeline import repository
    from pipeline.settings import Settings

    return repository.get_document(Settings.load(database_url=stack["db_url"]), document_id)


def upload_and_dispatch(stack, sub: str, path: Path, name: str, content_type: str) -> tuple[dict, str, dict]:
    grant = upload_as(stack, sub, path, name, content_type)
    messages = receive_upload_events(stack)
    assert len(messages) == 1
    assert dispatch(stack, messages) == {"batchItemFailures": []}
    owner = status_as(stack, sub, "/uploads/{upload_id}", {"upload_id": grant["upload_id"]})
    (doc,) = owner["documents"]
    return grant, doc["document_id"], messages[0]


# ---------------------------------------------------------------------------------------------

def test_deploy_creates_the_stack_registers_definitions_and_migrates(stack):
    cfn, batch = stack["clients"]["cloudformation"], stack["clients"]["batch"]
    deployed, outputs = stack["deployed"], stack["outputs"]
    assert deployed["action"] == "created" and deployed["stack_name"] == f"medintake-{ENV}"
    for key in ("UploadApiUrl", "UploadsBucketName", "JobQueueArn", "NoticesTopicArn"):
        assert outputs[key], key
    # Every resource type of the template is created by moto, or named with its stand-in.
    declared = {r["Type"] for r in stack["template"]["Resources"].values()}
    created = {r.get("ResourceType") for r in cfn.describe_stack_resources(StackName=f"medintake-{ENV}")["StackResources"]}
    assert declared - created == set(MOTO_SKIPPED_TYPES) & declared
    # Tags on the stack (CloudFormation propagates them to every resource that takes tags).
    tags = {t["Key"]: t["Value"] for t in cfn.describe_stacks(StackName=f"medintake-{ENV}")["Stacks"][0]["Tags"]}
    assert tags["medintake:environment"] == ENV and tags["medintake:cost-centre"] == "cc-42"
    # Job definitions: hash-named under the environment's prefix, for the stack's image and roles.
    defs = {d["jobDefinitionName"]: d for d in batch.describe_job_definitions(status="ACTIVE")["jobDefinitions"]}
    kinds = sorted(n.rsplit("-", 1)[0] for n in defs)
    assert kinds == [f"medintake-{ENV}-{k}" for k in ("convert", "entities", "extract", "migrate", "pages",
                                                         "process")]
    for d in defs.values():
        props = d["containerProperties"]
        assert props["image"] == IMAGE and d["platformCapabilities"] == ["FARGATE"]
        assert props["jobRoleArn"] == outputs["WorkerJobRoleArn"]
        assert props["executionRoleArn"] == outputs["BatchExecutionRoleArn"]
        env = {e["name"]: e["value"] for e in props["environment"]}
        assert env["MEDINTAKE_DATABASE_SECRET"] == f"medintake/{ENV}/database"
        assert env.get("MEDINTAKE_ENTITIES_BACKEND", "local") == "local"  # eu-central-1 (the default is not written)
        assert not any("password" in k.lower() for k in env) and stack["db_url"].split("@")[0] not in json.dumps(env)
    assert set(deployed["job_definitions"].values()) == {d["jobDefinitionArn"] for d in defs.values()}
    # The schema was migrated into the database the secret names.
    from sqlalchemy import create_engine, inspect

    engine = create_engine(stack["db_url"])
    assert {"documents", "jobs", "alembic_version"} <= set(inspect(engine).get_table_names())
    engine.dispose()
    # A second deploy changes nothing and registers nothing new.
    import cli

    again = CliRunner().invoke(cli.main, stack["cli_args"], catch_exceptions=False)
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)[0]["action"] in ("unchanged", "updated")
    assert len(batch.describe_job_definitions(status="ACTIVE")["jobDefinitions"]) == len(defs)


def test_upload_to_notice_through_the_deployed_stack(stack):
    owner, stranger = "user-owner-1", "user-other-2"
    name = "Jane Doé référence 2026.pdf"
    grant, doc_id, message = upload_and_dispatch(stack, owner, FILES / "digital_referral.pdf", name, "application/pdf")
    assert grant["key"].endswith("/Jane Doé référence 2026.pdf")  # spaces and letters kept
    batch = stack["clients"]["batch"]
    jobs = {j.kind: j for j in document_jobs(stack, doc_id)}
    assert set(jobs) == {"extract", "convert", "entities"}
    described = {j["jobName"].split("-")[1]: j for j in batch.describe_jobs(jobs=[j.id for j in jobs.values()])["jobs"]}
    for kind, job in described.items():
        assert job["jobDefinition"].split("/")[-1].startswith(f"medintake-{ENV}-{kind}-")
        assert job["parameters"] == {"document_id": doc_id, "attempt": "1"}
        assert job["jobQueue"] == stack["outputs"]["JobQueueArn"]
    assert [d["jobId"] for d in described["entities"]["dependsOn"]] == [jobs["extract"].id]
    assert described["extract"]["dependsOn"] == [] and described["convert"]["dependsOn"] == []
    # The same S3 event delivered again: no second submission.
    count = len(batch.list_jobs(jobQueue=stack["outputs"]["JobQueueArn"], jobStatus="SUCCEEDED")["jobSummaryList"])
    bucket = stack["outputs"]["UploadsBucketName"]
    stack["clients"]["sqs"].send_message(  # S3 delivers at least once: the same notification again
        QueueUrl=stack["outputs"]["UploadEventsQueueUrl"], MessageBody=message["Body"])
    (again,) = receive_upload_events(stack)
    assert dispatch(stack, [again]) == {"batchItemFailures": []}
    assert len(batch.list_jobs(jobQueue=stack["outputs"]["JobQueueArn"], jobStatus="SUCCEEDED")["jobSummaryList"]) == count
    # Batch runs the jobs; their state changes reach the tracker.
    finished = emulator(stack).run_graph([j.id for j in jobs.values()])
    assert {k: v["status"] for k, v in finished.items()} == dict.fromkeys(("extract", "convert", "entities"), "SUCCEEDED")
    doc = db_document(stack, doc_id)
    assert doc.status == "COMPLETED" and doc.page_count >= 1
    keys = {o["Key"] for o in stack["clients"]["s3"].list_objects_v2(Bucket=bucket, Prefix=f"results/{doc_id}/")["Contents"]}
    assert {f"results/{doc_id}/{n}" for n in ("manifest.json", "text.txt", "pages.json", "entities.json")} <= keys
    assert any(k.startswith(f"results/{doc_id}/renditions/") for k in keys)
    # The results never re-trigger the dispatcher: nothing new on the upload-events queue.
    assert receive_upload_events(stack) == []
    (notice,) = notices(stack)
    assert notice["message"]["document_id"] == doc_id and notice["message"]["status"] == "COMPLETED"
    assert notice["attributes"]["status"]["Value"] == "COMPLETED"
    assert not any(p in notice["raw"] for p in PHI) and "referral" not in notice["raw"].lower()
    # The owner sees the status; another user sees nothing of it.
    mine = status_as(stack, owner, "/documents/{document_id}", {"document_id": doc_id})
    assert (mine["http"], mine["document_id"], mine["status"]) == (200, doc_id, "COMPLETED")
    assert status_as(stack, stranger, "/documents/{document_id}", {"document_id": doc_id})["http"] == 404
    assert status_as(stack, stranger, "/uploads/{upload_id}", {"upload_id": grant["upload_id"]})["http"] == 404


def test_a_rejected_upload_ends_rejected_and_is_never_retried(stack):
    _, doc_id, _ = upload_and_dispatch(stack, "user-owner-1", FILES / "corrupt.pdf", "Müller scan.pdf", "application/pdf")
    emu = emulator(stack)
    finished = emu.run_graph([j.id for j in document_jobs(stack, doc_id)])
    assert len(finished["extract"]["attempts"]) == 1 and ("medintake-extract-" + doc_id + "-a1", "EXIT") in emu.decisions
    assert finished["entities"]["statusReason"] == "Dependent Job failed"
    doc = db_document(stack, doc_id)
    assert (doc.status, doc.reason_code) == ("REJECTED", "corrupt_file")
    (notice,) = notices(stack)
    assert notice["message"]["status"] == "REJECTED" and notice["attributes"]["reason_code"]["Value"] == "corrupt_file"
    assert not any(p in notice["raw"] for p in PHI)


def test_a_lost_spot_host_is_retried_and_the_document_completes(stack):
    _, doc_id, _ = upload_and_dispatch(stack, "user-owner-1", FILES / "screenshot_labs.png", "labs.png", "image/png")
    emu = emulator(stack)
    finished = emu.run_graph([j.id for j in document_jobs(stack, doc_id)], faults={"extract": ["host_terminated"]})
    assert finished["extract"]["status"] == "SUCCEEDED" and len(finished["extract"]["attempts"]) == 2
    assert (f"medintake-extract-{doc_id}-a1", "RETRY") in emu.decisions
    assert db_document(stack, doc_id).status == "COMPLETED"
    (notice,) = notices(stack)
    assert notice["message"]["status"] == "COMPLETED"


@pytest.mark.parametrize("fault, reason_code", [("oom", "job_failed"), ("timeout", "job_timeout")])
def test_out_of_memory_or_timeout_ends_failed_with_one_notice(stack, fault, reason_code):
    _, doc_id, _ = upload_and_dispatch(stack, "user-owner-1", FILES / "digital_referral.pdf",
                                    f"{fault}.pdf", "application/pdf")
    emu = emulator(stack)
    finished = emu.run_graph([j.id for j in document_jobs(stack, doc_id)], faults={"extract": [fault] * 5})
    expected_attempts = 3 if fault == "oom" else 1  # OOM exits 137: retried up to the definition's 3
    assert finished["extract"]["status"] == "FAILED" and len(finished["extract"]["attempts"]) == expected_attempts
    doc = db_document(stack, doc_id)
    assert (doc.status, doc.reason_code) == ("FAILED", reason_code)
    (notice,) = notices(stack)
    assert notice["message"]["status"] == "FAILED" and notice["message"]["reason_code"] == reason_code


def test_the_array_shape_through_the_deployed_stack(stack):
    """The template's default shape (JobShape=array), switched on in the functions' environment:
    one SQS batch -> one array job of the process definition -> children emulated (one loses its
    Spot host and is retried) -> one notice per document."""
    import copy

    saved = copy.deepcopy(stack["functions"])
    for key in ("DispatcherFunctionName", "TrackerFunctionName"):
        stack["functions"][key]["Environment"]["Variables"].update(
            {"MEDINTAKE_JOB_SHAPE": "array", "MEDINTAKE_ARRAY_CHILD_DOCUMENTS": "1"})
    try:
        upload_as(stack, "user-owner-1", FILES / "digital_referral.pdf", "Jane Doe array.pdf", "application/pdf")
        upload_as(stack, "user-owner-1", FILES / "corrupt.pdf", "Müller array.pdf", "application/pdf")
        messages = receive_upload_events(stack)
        assert len(messages) == 2 and dispatch(stack, messages) == {"batchItemFailures": []}
        parents = stack["clients"]["batch"].list_jobs(
            jobQueue=stack["outputs"]["JobQueueArn"], filters=[{"name": "JOB_NAME", "values": ["medintake-batch-*"]}])
        (parent,) = [j for j in parents["jobSummaryList"] if ":" not in j["jobId"]]
        described = stack["clients"]["batch"].describe_jobs(jobs=[parent["jobId"]])["jobs"][0]
        assert described["arrayProperties"]["size"] == 2
        assert described["jobDefinition"].split("/")[-1].startswith(f"medintake-{ENV}-process-")
        final = emulator(stack).run(parent["jobId"], faults={1: ["host_terminated"]})
        assert final["status"] == "SUCCEEDED"
        got = notices(stack)
        assert sorted(n["message"]["status"] for n in got) == ["COMPLETED", "REJECTED"]
        assert len({n["message"]["notice_id"] for n in got}) == 2
        assert not any(p in n["raw"] for n in got for p in PHI)
    finally:
        stack["functions"].clear()
        stack["functions"].update(saved)


@contextmanager
def batch_refuses_submissions_of(kind: str):
    """SubmitJob answers as Batch does for a definition it no longer has (400 ClientException).

    moto still accepts a deregistered definition, so the refusal is made at the wire: a botocore
    before-send hook on the default session, which the Lambda's clients are made from.
    """
    from botocore.awsrequest import AWSResponse

    class Raw:
        def __init__(self, data: bytes) -> None:
            self.data = data

        def stream(self, **_):
            yield self.data

    def refuse(request, **_):
        if f"-{kind}-" in json.loads(request.body or b"{}").get("jobDefinition", ""):
            body = json.dumps({"__type": "ClientException", "message": "Job definition not found"}).encode()
            return AWSResponse(request.url, 400, {"x-amzn-ErrorType": "ClientException"}, Raw(body))
        return None

    events = boto3._get_default_session().events
    events.register("before-send.batch.SubmitJob", refuse, unique_id="refuse-submissions")
    try:
        yield
    finally:
        events.unregister("before-send.batch.SubmitJob", unique_id="refuse-submissions")


def test_a_half_submitted_graph_is_terminated_and_redelivery_submits_it_once(stack):
    """SubmitJob fails for the second job: the first is terminated and retired before the claim is
    undone; the redelivered event then submits the whole graph, once."""
    from sqlalchemy import select

    from pipeline.database import transaction
    from pipeline.models import Job
    from pipeline.settings import Settings

    batch = stack["clients"]["batch"]
    upload_as(stack, "user-owner-1", FILES / "digital_referral.pdf", "half.pdf", "application/pdf")
    (message,) = receive_upload_events(stack)
    with batch_refuses_submissions_of("convert"):
        assert dispatch(stack, [message]) == {"batchItemFailures": [{"itemIdentifier": message["MessageId"]}]}
    settings = Settings.load(database_url=stack["db_url"])
    with transaction(settings) as s:
        retired = list(s.scalars(select(Job).where(Job.attempt == 0)))
    assert [j.name.split("-")[1] for j in retired] == ["extract"]
    doc_id = retired[0].document_id
    terminated = batch.describe_jobs(jobs=[retired[0].id])["jobs"][0]
    assert terminated["jobName"] == f"medintake-extract-{doc_id}-a1"
    assert terminated["statusReason"] == "medintake: the document's job graph was not fully submitted"  # TerminateJob
    assert db_document(stack, doc_id).status == "RECEIVED"  # the claim was given back
    # SQS redelivers the message (the mapping reported it failed); Batch takes submissions again.
    stack["clients"]["sqs"].send_message(QueueUrl=stack["outputs"]["UploadEventsQueueUrl"], MessageBody=message["Body"])
    assert dispatch(stack, receive_upload_events(stack)) == {"batchItemFailures": []}
    live = document_jobs(stack, doc_id)
    assert sorted(j.kind for j in live) == ["convert", "entities", "extract"]
    assert retired[0].id not in {j.id for j in live}
    # The terminated job's late FAILED event changes nothing; the live graph completes once.
    emu = emulator(stack)
    emu.listener({"source": "aws.batch", "detail-type": "Batch Job State Change", "id": str(uuid.uuid4()),
                  "detail": {**terminated, "status": "FAILED", "attempts": [],
                             "statusReason": "medintake: the document's job graph was not fully submitted"}})
    assert db_document(stack, doc_id).status == "QUEUED"
    emu.run_graph([j.id for j in live])
    assert db_document(stack, doc_id).status == "COMPLETED"
    (notice,) = notices(stack)
    assert notice["message"]["document_id"] == doc_id and notice["message"]["status"] == "COMPLETED"


def test_deploy_migrates_with_a_one_off_batch_job(stack):
    """The default: the `migrate` definition runs `python -m pipeline.database upgrade` in the VPC;
    deploy waits for it. Here the emulator is Batch, running the registered command in-process."""
    from compute.deploy import DeployError, DeploySpec, deploy

    spec = DeploySpec(regions=(REGION,), environment=ENV, worker_image=IMAGE, cost_centre="cc-42",
                      endpoint_url=stack["url"], migrate_with="batch", lambda_dependencies=False)
    emu = emulator(stack)
    emu.listener = lambda event: None  # the tracker ignores jobs that are not a document's
    (result,) = deploy(spec, run_job=lambda batch, job_id: emu.run(job_id))
    assert result.migration.startswith("batch:")
    assert emu.commands_run == [["python", "-m", "pipeline.database", "upgrade"]]
    job = stack["clients"]["batch"].describe_jobs(jobs=[result.migration.split(":", 1)[1]])["jobs"][0]
    assert job["jobDefinition"].split("/")[-1].startswith(f"medintake-{ENV}-migrate-")
    # A migration that cannot reach its database fails the deploy with the job's reason.
    with pytest.raises(DeployError, match="ended FAILED"):
        deploy(spec, run_job=lambda batch, job_id: {**emu.describe(job_id), "status": "FAILED",
                                                    "statusReason": "Essential container in task exited"})


def test_each_region_gets_its_own_stack_and_keeps_phi_in_region(stack):
    """Two more regions in one run: each its own bucket, queue and database secret; Comprehend
    Medical only where it is offered (eu-west-1), the local extractor elsewhere (ap-southeast-1)."""
    import cli

    args = ["deploy", "--region", "eu-west-1", "--region", "ap-southeast-1", "--env", ENV, "--worker-image", "0a1b2c3",
            "--endpoint-url", stack["url"], "--migrate-with", "skip", "--no-lambda-dependencies", "--json"]
    result = CliRunner().invoke(cli.main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    by_region = {r["region"]: r for r in json.loads(result.stdout)}
    assert set(by_region) == {"eu-west-1", "ap-southeast-1"}
    for region, backend in (("eu-west-1", "comprehendmedical"), ("ap-southeast-1", "local")):
        outputs = by_region[region]["outputs"]
        assert region in outputs["UploadsBucketName"] and f":{region}:" in outputs["JobQueueArn"]
        env = boto3.client("lambda", region_name=region).get_function_configuration(
            FunctionName=outputs["DispatcherFunctionName"])["Environment"]["Variables"]
        assert env["MEDINTAKE_ENTITIES_BACKEND"] == backend and env["MEDINTAKE_AWS_REGION"] == region
        assert env["MEDINTAKE_WORKER_IMAGE"] == f"{ACCOUNT}.dkr.ecr.{region}.amazonaws.com/medintake-{ENV}-worker:0a1b2c3"
    # An image in another region's registry is refused before anything is created.
    refused = CliRunner().invoke(cli.main, ["deploy", "--region", "eu-west-2", "--env", ENV, "--worker-image", IMAGE,
                                            "--endpoint-url", stack["url"], "--no-lambda-dependencies"])
    assert refused.exit_code == 78 and "another region's ECR" in refused.output
