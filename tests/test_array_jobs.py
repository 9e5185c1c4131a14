"""The array shape (issue 13, docs/scale.md): one Batch array job per dispatcher batch, each child
running every stage for its slice of documents.

On the local compute environment: Batch's array semantics (children ``<parent>:<index>`` with
AWS_BATCH_JOB_ARRAY_INDEX, their own events, the parent's summed-up state, dependsOn the parent),
a rejected document and a transiently failing one in a batch (REJECTED alone; retried alone as the
attempt's next try), one notice per document attempt. Through moto with real boto3 and the Batch
emulator: the dispatcher Lambda's SQS batch becomes one SubmitJob with ``arrayProperties``, a
Spot-retried child skips what it finished, a child that dies for good has its documents resubmitted
alone, duplicated and shuffled events give one notice per document; a 10,000-document burst stays
under the SubmitJob rate on a fake clock.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from conftest import FILES, FakeClock, batch_path_on_moto, read_notices
from compute.batch import BatchComputeEnvironment
from compute.local import LocalComputeEnvironment
from compute.ratelimit import TokenBucket
from compute.runtime import LocalRuntime
from pipeline import aws_lambda, batching, database, repository
from pipeline.batch_events import DEPENDENCY_REASON, job_state_change_event
from pipeline.compute_api import JobSubmission
from pipeline.dispatcher import Dispatcher
from pipeline.events import UploadRef, s3_notification
from pipeline.jobdefs import JobDefinition, load_job_definitions
from pipeline.notify import open_notifier
from pipeline.settings import Settings
from pipeline.store import open_store

REGION = "eu-west-1"


def array_settings(tmp_path: Path, **kw) -> Settings:
    return Settings.load(data_dir=tmp_path / "data", workers=2, job_shape="array", **kw)


def tiny_definition(command: list[str], attempts: int = 1) -> JobDefinition:
    raw = {"jobDefinitionName": "tiny", "containerProperties": {"command": command}}
    return JobDefinition(kind="tiny", name="tiny", command=tuple(command), vcpus=1, memory_mib=128,
                         timeout_seconds=60, attempts=attempts, evaluate_on_exit=(), raw=raw)


# ---- the local compute environment behaves as Batch does with array jobs ------------------------

def test_local_array_job_children_parent_state_and_depends_on(tmp_path):
    settings = Settings.load(data_dir=tmp_path / "data", workers=2, worker_start="exec")
    events: list[dict] = []
    env = LocalComputeEnvironment(settings, listeners=[events.append])
    # Child 1 fails (twice: its own Batch retry), the others succeed.
    script = ("import os, sys; i = int(os.environ['AWS_BATCH_JOB_ARRAY_INDEX']); "
              "assert os.environ['AWS_BATCH_JOB_ID'].endswith(f':{i}'); sys.exit(3 if i == 1 else 0)")
    parent = env.submit(JobSubmission("arr", "tiny", tiny_definition(["python", "-c", script], attempts=2), {},
                                      array_size=3))
    after = env.submit(JobSubmission("after", "tiny", tiny_definition(["python", "-c", "pass"]), {},
                                     depends_on=(parent,)))
    env.run(max_seconds=60)
    status = {j: env.describe(j)["status"] for j in env.jobs}
    assert status == {parent: "FAILED", f"{parent}:0": "SUCCEEDED", f"{parent}:1": "FAILED",
                      f"{parent}:2": "SUCCEEDED", after: "FAILED"}
    assert len(env.describe(f"{parent}:1")["attempts"]) == 2 and env.describe(after)["statusReason"] == DEPENDENCY_REASON
    parent_events = [e["detail"] for e in events if e["detail"]["jobId"] == parent]
    assert [d["status"] for d in parent_events] == ["SUBMITTED", "PENDING", "FAILED"]
    assert parent_events[-1]["arrayProperties"] == {
        "size": 3, "statusSummary": {"SUBMITTED": 0, "PENDING": 0, "RUNNABLE": 0, "STARTING": 0, "RUNNING": 0,
                                     "SUCCEEDED": 2, "FAILED": 1}}
    # The parent went PENDING only once a child was RUNNABLE, and FAILED only once all were terminal.
    order = [(e["detail"]["jobId"], e["detail"]["status"]) for e in events]
    assert order.index((parent, "PENDING")) > order.index((f"{parent}:0", "RUNNABLE"))
    assert order.index((parent, "FAILED")) > max(order.index((f"{parent}:{i}", s))
                                                  for i, s in ((0, "SUCCEEDED"), (1, "FAILED"), (2, "SUCCEEDED")))
    for i in range(3):
        child = [e["detail"] for e in events if e["detail"]["jobId"] == f"{parent}:{i}"]
        assert {d["arrayProperties"]["index"] for d in child} == {i} and child[0]["jobName"] == "arr"
    # All children succeed: the dependent job waits for every one of them, then runs.
    ok = env.submit(JobSubmission("arr2", "tiny", tiny_definition(["python", "-c", "pass"]), {}, array_size=2))
    then = env.submit(JobSubmission("then", "tiny", tiny_definition(["python", "-c", "pass"]), {}, depends_on=(ok,)))
    assert env.describe(then)["status"] == "PENDING"
    env.run(max_seconds=60)
    assert env.describe(ok)["status"] == "SUCCEEDED" and env.describe(then)["status"] == "SUCCEEDED"
    with pytest.raises(ValueError):
        env.submit(JobSubmission("one", "tiny", tiny_definition(["python", "-c", "pass"]), {}, array_size=1))


def test_process_runs_a_batch_as_one_array_job_and_a_poisoned_document_is_rejected_alone(tmp_path):
    settings = array_settings(tmp_path, array_child_documents=2)
    events: list[dict] = []
    files = [FILES / n for n in ("digital_referral.pdf", "corrupt.pdf", "screenshot_labs.png")]
    with LocalRuntime(settings, listeners=[events.append]) as rt:
        subs = rt.submit_many([(f.name, f) for f in files])
        rt.run_until_final([s.document_id for s in subs], max_seconds=240)
        ids = [s.document_id for s in subs]
        docs = repository.find_documents(settings, ids)
        assert [(docs[i].status, docs[i].reason_code) for i in ids] == [
            ("COMPLETED", None), ("REJECTED", "corrupt_file"), ("COMPLETED", None)]
        outputs = rt.outputs(ids[0])
    parents = {e["detail"]["jobId"] for e in events if "size" in e["detail"].get("arrayProperties", {})}
    (parent,) = parents  # one submission for the three uploads
    rows = {i: repository.jobs_for(settings, i, 1) for i in ids}
    assert [[r.id for r in rows[i]] for i in ids] == [[f"{parent}:0#0"], [f"{parent}:0#1"], [f"{parent}:1#0"]]
    assert rows[ids[1]][0].exit_code == 65 and rows[ids[1]][0].reason_code == "corrupt_file"
    # The child that held the rejected document still succeeded: its batch mate was unaffected.
    finals = {e["detail"]["jobId"]: e["detail"]["status"] for e in events}
    assert finals == {parent: "SUCCEEDED", f"{parent}:0": "SUCCEEDED", f"{parent}:1": "SUCCEEDED"}
    notices = read_notices(settings)
    assert sorted(n["notice_id"] for n in notices) == sorted(f"{i}:1" for i in ids)
    manifest = json.loads(Path(outputs["manifest"]).read_text())
    assert set(manifest["timings"]) == {"extract", "entities", "convert"} and manifest["type"]["format"] == "PDF"
    assert {"text", "entities", "renditions/thumbnail"} <= set(outputs)


def test_a_transiently_failing_document_is_retried_alone_and_its_batch_mates_finish_once(tmp_path):
    # One worker: the local dispatcher cuts a batch into one child per worker slot, and the two
    # documents must share a child here.
    settings = Settings.load(data_dir=tmp_path / "data", workers=1, job_shape="array", array_child_documents=5,
                             document_retries=1)
    files = [FILES / n for n in ("digital_referral.pdf", "screenshot_labs.png")]
    restored: list[bool] = []
    lost: dict[str, bytes] = {}

    def restore_after_first_failure(_event: dict) -> None:
        # A compute listener: called with each job event right after the tracker, which records the
        # document's failed row and resubmits it, so the retry cannot start before the upload is
        # back, however fast the workers. (Restoring from run_until_final's on_step raced the retry:
        # on_step runs at most twice a second.)
        rows = repository.jobs_for(settings, refs[0].document_id, 1)
        if not restored and rows and rows[0].status == "FAILED":
            rt.store.put_bytes(refs[0].key, lost["bytes"])
            restored.append(True)

    with LocalRuntime(settings, listeners=[restore_after_first_failure]) as rt:
        refs = [rt.upload(f) for f in files]
        lost["bytes"] = rt.store.get_bytes(refs[0].key)
        rt.store.delete_prefix(refs[0].key)  # the first upload cannot be read: a transient failure
        rt.dispatcher.handle_event({"Records": [r for ref in refs for r in s3_notification(ref)["Records"]]})
        ids = [ref.document_id for ref in refs]
        rt.run_until_final(ids, max_seconds=240)
    assert restored == [True]
    docs = repository.find_documents(settings, ids)
    assert [docs[i].status for i in ids] == ["COMPLETED", "COMPLETED"]
    first = repository.jobs_for(settings, ids[0], 1)
    assert [(r.name.rsplit("-", 1)[1], r.status, r.exit_code, r.reason_code) for r in first] == [
        ("t1", "FAILED", 70, batching.RETRIED), ("t2", "SUCCEEDED", 0, None)]
    unit_first, unit_retry = (r.id.split("#")[0] for r in first)
    assert unit_first == repository.jobs_for(settings, ids[1], 1)[0].id.split("#")[0]  # were batch mates
    assert ":" not in unit_retry  # resubmitted alone: a plain job
    assert [r.status for r in repository.jobs_for(settings, ids[1], 1)] == ["SUCCEEDED"]
    notices = read_notices(settings)
    assert sorted((n["notice_id"], n["status"]) for n in notices) == sorted((f"{i}:1", "COMPLETED") for i in ids)


def test_retries_are_bounded_and_end_failed_with_one_notice(tmp_path):
    settings = array_settings(tmp_path, document_retries=1)
    with LocalRuntime(settings) as rt:
        ref = rt.upload(FILES / "screenshot_labs.png")
        rt.store.delete_prefix(ref.key)
        rt.dispatcher.handle_event(s3_notification(ref))
        rt.run_until_final([ref.document_id], max_seconds=120)
    doc = repository.get_document(settings, ref.document_id)
    assert (doc.status, doc.reason_code) == ("FAILED", "job_failed")
    assert [r.status for r in repository.jobs_for(settings, doc.id, 1)] == ["FAILED", "FAILED"]
    assert [(n["notice_id"], n["status"]) for n in read_notices(settings)] == [(f"{doc.id}:1", "FAILED")]


# ---- the AWS path through moto: SQS batch -> one array job -> emulated Batch -> tracker ----------

@pytest.fixture
def aws(tmp_path, monkeypatch):
    with batch_path_on_moto(tmp_path, monkeypatch, REGION, MEDINTAKE_ARRAY_CHILD_DOCUMENTS="2") as world:
        yield world


def put_upload(aws, name: str, key: str) -> UploadRef:
    body = (FILES / name).read_bytes()
    resp = aws["s3"].put_object(Bucket="medintake-uploads-eu", Key=key, Body=body)
    return UploadRef("medintake-uploads-eu", key, resp.get("VersionId"), resp["ETag"].strip('"'), len(body))


def sqs_batch(refs: list[UploadRef]) -> dict:
    return {"Records": [{
        "messageId": f"m-{i}", "receiptHandle": "r", "body": json.dumps(s3_notification(ref, region=REGION)),
        "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {}, "eventSource": "aws:sqs",
        "eventSourceARN": f"arn:aws:sqs:{REGION}:123456789012:medintake-upload-events", "awsRegion": REGION}
        for i, ref in enumerate(refs)]}


def sns_notices(aws) -> list[dict]:
    out = []
    while True:
        got = aws["sqs"].receive_message(QueueUrl=aws["queue_url"], MaxNumberOfMessages=10).get("Messages", [])
        if not got:
            return out
        for m in got:
            out.append(json.loads(json.loads(m["Body"])["Message"]))
            aws["sqs"].delete_message(QueueUrl=aws["queue_url"], ReceiptHandle=m["ReceiptHandle"])


def only_parent(aws) -> dict:
    jobs = aws["batch"].list_jobs(jobQueue="medintake-eu", filters=[{"name": "JOB_NAME", "values": ["medintake-*"]}])
    parents = [j for j in jobs["jobSummaryList"] if ":" not in j["jobId"]]
    assert len(parents) == 1, [(j["jobName"], j["createdAt"], j["status"]) for j in parents]
    return aws["batch"].describe_jobs(jobs=[parents[0]["jobId"]])["jobs"][0]


def test_sqs_batch_is_one_array_job_spot_rerun_skips_finished_and_one_notice_each(aws):
    from batch_emulator import BatchEmulator

    refs = [put_upload(aws, "digital_referral.pdf", "uploads/a/Jane Doe.pdf"),
            put_upload(aws, "corrupt.pdf", "uploads/b/scan.pdf"),
            put_upload(aws, "screenshot_labs.png", "uploads/c/labs.png")]
    submits: list[dict] = []
    boto3._get_default_session().events.register(
        "provide-client-params.batch.SubmitJob", lambda params, **_: submits.append(params), unique_id="count-submits")
    try:
        assert aws_lambda.dispatch_handler(sqs_batch(refs)) == {"batchItemFailures": []}
    finally:
        boto3._get_default_session().events.unregister("provide-client-params.batch.SubmitJob",
                                                       unique_id="count-submits")
    assert len(submits) == 1 and submits[0]["arrayProperties"] == {"size": 2}
    parent = only_parent(aws)
    assert parent["arrayProperties"]["size"] == 2 and parent["jobName"].startswith(batching.BATCH_PREFIX)
    assert parent["jobDefinition"].split("/")[-1].startswith("medintake-process-")
    settings = aws["settings"]
    delivered: list[dict] = []
    decided: list[str] = []
    snapshot: dict[str, object] = {}

    def to_tracker(event: dict) -> None:
        d = event["detail"]
        if d["jobId"].endswith(":0") and d["status"] == "RUNNABLE" and d["attempts"]:  # the Spot retry
            snapshot.update({r.id: r.stopped_at for r in repository.unit_rows(settings, [f"{d['jobId']}#0",
                                                                                        f"{d['jobId']}#1"])})
        delivered.append(event)
        aws_lambda.tracker_handler(event)
        decided.extend(aws_lambda._parts()["tracker"].decided)  # what the Documents* metrics count
        aws_lambda.tracker_handler(event)  # EventBridge delivers at least once

    emu = BatchEmulator(aws["batch"], to_tracker, aws["workdir"], REGION)
    final = emu.run(parent["jobId"], faults={0: ["spot_after_run"]})
    assert final["status"] == "SUCCEEDED"
    child0 = emu.finished[f"{parent['jobId']}:0"]
    assert child0["status"] == "SUCCEEDED" and len(child0["attempts"]) == 2  # Spot-retried once
    # The rerun found both of its documents settled and ran neither again.
    rerun = {r.id: r.stopped_at for r in repository.unit_rows(settings, list(snapshot))}
    assert len(snapshot) == 2 and rerun == snapshot
    docs = repository.find_documents(settings, [r.document_id for r in refs])
    assert [(docs[r.document_id].status, docs[r.document_id].reason_code) for r in refs] == [
        ("COMPLETED", None), ("REJECTED", "corrupt_file"), ("COMPLETED", None)]
    assert sorted(decided) == ["COMPLETED", "COMPLETED", "REJECTED"]  # child 0 decided two at once
    # Every event again, shuffled, some twice: still one notice per document attempt.
    replay = delivered + delivered[::3]
    random.Random(13).shuffle(replay)
    for event in replay:
        aws_lambda.tracker_handler(event)
    got = sns_notices(aws)
    assert sorted(n["notice_id"] for n in got) == sorted(f"{r.document_id}:1" for r in refs)
    assert all("Jane" not in json.dumps(n) for n in got)


def test_a_child_that_dies_for_good_has_its_documents_resubmitted_each_alone_in_one_job(aws):
    from batch_emulator import BatchEmulator

    refs = [put_upload(aws, "digital_referral.pdf", "uploads/a/one.pdf"),
            put_upload(aws, "screenshot_labs.png", "uploads/b/two.png"),
            put_upload(aws, "digital_referral.pdf", "uploads/c/three.pdf")]
    assert aws_lambda.dispatch_handler(sqs_batch(refs)) == {"batchItemFailures": []}
    parent = only_parent(aws)
    emu = BatchEmulator(aws["batch"], aws_lambda.tracker_handler, aws["workdir"], REGION)
    # Child 0 (documents one and two) is killed out of memory on every attempt.
    final = emu.run(parent["jobId"], faults={0: ["oom", "oom", "oom"]})
    assert final["status"] == "FAILED" and final["arrayProperties"]["statusSummary"]["FAILED"] == 1
    settings = aws["settings"]
    assert repository.get_document(settings, refs[2].document_id).status == "COMPLETED"  # the other child
    retries = []
    for ref in refs[:2]:
        rows = repository.jobs_for(settings, ref.document_id, 1)
        assert [r.name.rsplit("-", 1)[1] for r in rows] == ["t1", "t2"]
        assert rows[0].status == "FAILED" and rows[0].reason_code == batching.RETRIED and rows[1].status == "SUBMITTED"
        retries.append(rows[1].id.split("#")[0])
    # One SubmitJob for the dead child's documents: an array whose children each hold one of them.
    parents = {batching.unit_of(u)[0] for u in retries}
    assert len(parents) == 1 and sorted(batching.unit_of(u)[1] for u in retries) == [0, 1]
    (again,) = aws["batch"].describe_jobs(jobs=list(parents))["jobs"]
    assert again["arrayProperties"]["size"] == 2 and again["parameters"]["per_child"] == "1"
    assert emu.run(again["jobId"])["status"] == "SUCCEEDED"
    docs = repository.find_documents(settings, [r.document_id for r in refs])
    assert {d.status for d in docs.values()} == {"COMPLETED"}
    assert sorted(n["notice_id"] for n in sns_notices(aws)) == sorted(f"{r.document_id}:1" for r in refs)


# ---- a 10,000-document burst through the dispatcher, on a fake clock ----------------------------

def test_a_10000_document_burst_stays_under_the_submission_rate(tmp_path):
    """Twenty SQS batches of 500 (the template's DispatcherBatchSize): twenty SubmitJob calls, each an
    array job of 25 children of 20 documents, taken from the dispatcher's token bucket on a fake
    clock. The old shape would need 30,000 calls: 750 s at the stack's 5 containers x 8/s."""
    with mock_aws(config={"batch": {"use_docker": False}}):
        from conftest import batch_queue

        batch_queue(REGION, "medintake-eu", "medintake-ce")
        settings = Settings.load(data_dir=tmp_path / "data", job_shape="array", compute_backend="batch",
                                 job_queue="medintake-eu", aws_region=REGION, submit_rate=8.0)
        database.upgrade(settings)
        clock = FakeClock()
        compute = BatchComputeEnvironment(settings, limiter=TokenBucket(settings.submit_rate, clock=clock,
                                                                        sleep=clock.sleep))
        for definition in load_job_definitions(settings.job_definitions_dir).values():
            compute.ensure_job_definition(definition)
        store = open_store(settings)
        dispatcher = Dispatcher(settings, compute, store, open_notifier(settings))
        calls: list[float] = []
        events = compute.client.meta.events
        events.register("before-call.batch.SubmitJob", lambda **_: calls.append(clock()), unique_id="t")
        sizes = []
        events.register("provide-client-params.batch.SubmitJob",
                        lambda params, **_: sizes.append(params["arrayProperties"]["size"]), unique_id="s")
        refs = [UploadRef("uploads", f"uploads/{n:05d}/scan.pdf", None, f"{n:032x}", 250_000) for n in range(10_000)]
        for start in range(0, len(refs), 500):
            result = dispatcher.handle_event(sqs_batch(refs[start:start + 500]))
            assert result["batchItemFailures"] == []
        assert len(calls) == 20 and sizes == [25] * 20
        # The token bucket's contract: in any window of w seconds, at most 8 (its burst) + 8 x w calls.
        for i, t in enumerate(calls):
            for j in range(i, len(calls)):
                assert j - i + 1 <= 8 + 8 * (calls[j] - t) + 1e-9
        assert clock.now - 1000.0 == pytest.approx((20 - 8) / 8)
        # Times the template's DispatcherConcurrency (5): 40/s at most, under Batch's 50/s.
        assert 5 * settings.submit_rate < 50
    queued = repository.find_documents(settings, [r.document_id for r in refs])
    assert len(queued) == 10_000 and {d.status for d in queued.values()} == {"QUEUED"}


# ---- the CLI on the default shape ------------------------------------------------------------------

def test_cli_process_reprocess_and_watch_in_the_default_array_shape(tmp_path, monkeypatch):
    import shutil

    from click.testing import CliRunner

    import cli

    monkeypatch.delenv("MEDINTAKE_JOB_SHAPE")  # the default, not the old shape the other tests pin
    assert Settings.load().job_shape == "array"
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for name in ("digital_referral.pdf", "corrupt.pdf"):
        shutil.copy(FILES / name, inbox / name)
    data = str(tmp_path / "d")
    run = lambda *a: CliRunner().invoke(cli.main, ["--data-dir", data, *a], catch_exceptions=False)  # noqa: E731
    result = run("process", "--json", str(inbox))
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [(r["input"].rsplit("/", 1)[-1], r["status"]) for r in rows] == [
        ("corrupt.pdf", "REJECTED"), ("digital_referral.pdf", "COMPLETED")]
    settings = Settings.load(data_dir=Path(data))
    units = {j.id.split(":")[0].split("#")[0] for r in rows for j in repository.jobs_for(settings, r["document_id"], 1)}
    assert len(units) == 1  # both files in one job (an array of one child here: a plain job)
    again = run("reprocess", "--json", rows[1]["document_id"])
    assert again.exit_code == 0, again.output
    doc = repository.get_document(settings, rows[1]["document_id"])
    assert (doc.attempt, doc.status) == (2, "COMPLETED")
    assert [j.kind for j in repository.jobs_for(settings, doc.id, 2)] == ["process"]
    watched = CliRunner().invoke(cli.main, ["--data-dir", str(tmp_path / "w"), "watch", "--once", str(inbox)],
                                 catch_exceptions=False)
    assert sorted(json.loads(line)["status"] for line in watched.stdout.splitlines() if line.startswith("{")) == [
        "COMPLETED", "REJECTED"]
    notices = read_notices(Settings.load(data_dir=tmp_path / "w"))
    assert len(notices) == 2


# ---- design E: small uploads on the processing Lambda while its queue is short ---------------------

@pytest.fixture
def processing_queue(aws, monkeypatch):
    from jobs import lambda_handler

    url = aws["sqs"].create_queue(QueueName="medintake-processing")["QueueUrl"]
    monkeypatch.setenv("MEDINTAKE_PROCESSING_QUEUE_URL", url)
    monkeypatch.setenv("MEDINTAKE_LAMBDA_MAX_SECONDS", "2.05")  # the two 2 KB PDFs, not the 57 KB scan
    monkeypatch.setenv("MEDINTAKE_PROCESSING_QUEUE_LIMIT", "1")
    aws_lambda.reset()
    lambda_handler.reset()
    yield url
    lambda_handler.reset()


def lambda_messages(aws, url: str) -> list[dict]:
    got = aws["sqs"].receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"])
    return got.get("Messages", [])


def as_mapping_event(messages: list[dict]) -> dict:
    return {"Records": [{"messageId": m["MessageId"], "body": m["Body"], "attributes": m["Attributes"],
                         "eventSource": "aws:sqs"} for m in messages]}


def test_small_uploads_run_on_the_processing_lambda_and_the_rest_as_an_array_job(aws, processing_queue):
    from batch_emulator import BatchEmulator

    from jobs import lambda_handler

    refs = [put_upload(aws, "digital_referral.pdf", "uploads/a/small.pdf"),
            put_upload(aws, "corrupt.pdf", "uploads/b/small-too.pdf"),
            put_upload(aws, "scanned_discharge.pdf", "uploads/c/large.pdf")]
    assert aws_lambda.dispatch_handler(sqs_batch(refs)) == {"batchItemFailures": []}
    # The queue's limit (1) took the first small document; the second overflowed to Batch with the large one.
    (message,) = lambda_messages(aws, processing_queue)
    assert json.loads(message["Body"])["document_id"] == refs[0].document_id
    batch_job = only_parent(aws)
    assert lambda_handler.handler(as_mapping_event([message])) == {"batchItemFailures": []}
    settings = aws["settings"]
    assert repository.get_document(settings, refs[0].document_id).status == "COMPLETED"
    (row,) = repository.jobs_for(settings, refs[0].document_id, 1)
    assert row.id.startswith("lambda-") and row.status == "SUCCEEDED"
    BatchEmulator(aws["batch"], aws_lambda.tracker_handler, aws["workdir"], REGION).run(batch_job["jobId"])
    docs = repository.find_documents(settings, [r.document_id for r in refs])
    assert [docs[r.document_id].status for r in refs] == ["COMPLETED", "REJECTED", "COMPLETED"]
    assert sorted(n["notice_id"] for n in sns_notices(aws)) == sorted(f"{r.document_id}:1" for r in refs)


def test_a_document_the_lambda_could_not_finish_falls_back_to_batch_alone(aws, processing_queue):
    from batch_emulator import BatchEmulator

    from jobs import lambda_handler

    ref = put_upload(aws, "digital_referral.pdf", "uploads/a/killed.pdf")
    assert aws_lambda.dispatch_handler(sqs_batch([ref])) == {"batchItemFailures": []}
    (message,) = lambda_messages(aws, processing_queue)
    # The first invocation was killed (timeout, memory): SQS delivers the message a second time.
    message["Attributes"]["ApproximateReceiveCount"] = "2"
    assert lambda_handler.handler(as_mapping_event([message])) == {"batchItemFailures": []}
    settings = aws["settings"]
    first, retry = repository.jobs_for(settings, ref.document_id, 1)
    assert (first.status, first.reason_code) == ("FAILED", batching.RETRIED) and retry.name.endswith("-t2")
    job_id = retry.id.split("#")[0]
    assert BatchEmulator(aws["batch"], aws_lambda.tracker_handler, aws["workdir"], REGION).run(job_id)["status"] == "SUCCEEDED"
    assert repository.get_document(settings, ref.document_id).status == "COMPLETED"
    assert [n["notice_id"] for n in sns_notices(aws)] == [f"{ref.document_id}:1"]


def test_a_refused_array_submission_is_redelivered_whole_and_then_submitted_once(aws):
    """SubmitJob answers 400 ClientException: every record that brought a document is reported for
    redelivery and the claims are undone; the redelivered batch is submitted once, and a third
    delivery of the same batch submits nothing."""
    from botocore.awsrequest import AWSResponse

    def refuse(**_):  # before-call: answered before moto (or AWS) sees the request
        parsed = {"Error": {"Code": "ClientException", "Message": "Job definition not found"},
                  "ResponseMetadata": {"HTTPStatusCode": 400}}
        return AWSResponse("https://batch", 400, {}, None), parsed

    refs = [put_upload(aws, "digital_referral.pdf", f"uploads/r/{n}.pdf") for n in range(3)]
    event = sqs_batch(refs)
    events = boto3._get_default_session().events
    events.register("before-call.batch.SubmitJob", refuse, unique_id="refuse-array")
    try:
        answer = aws_lambda.dispatch_handler(event)
    finally:
        events.unregister("before-call.batch.SubmitJob", unique_id="refuse-array")
        aws_lambda.reset()  # a client keeps the hooks it was made with: the next delivery, a new container
    assert sorted(f["itemIdentifier"] for f in answer["batchItemFailures"]) == ["m-0", "m-1", "m-2"]
    settings = aws["settings"]
    docs = repository.find_documents(settings, [r.document_id for r in refs])
    assert {d.status for d in docs.values()} == {"RECEIVED"}
    assert all(repository.jobs_for(settings, r.document_id, 1) == [] for r in refs)
    jobs = aws["batch"].list_jobs(jobQueue="medintake-eu", filters=[{"name": "JOB_NAME", "values": ["medintake-*"]}])
    assert jobs["jobSummaryList"] == []
    assert aws_lambda.dispatch_handler(event) == {"batchItemFailures": []}
    assert aws_lambda.dispatch_handler(event) == {"batchItemFailures": []}
    only_parent(aws)  # exactly one job in Batch for the three documents
    docs = repository.find_documents(settings, [r.document_id for r in refs])
    assert {d.status for d in docs.values()} == {"QUEUED"}
