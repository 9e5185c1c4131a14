"""The local compute environment with AWS Batch semantics, the dispatcher and the tracker,
with real worker processes running the real jobs."""
from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest
from sqlalchemy import select

from compute.runtime import LocalRuntime
from conftest import FILES, REPO, read_notices
from pipeline import database, repository
from pipeline.batch_events import parse_job_state_change
from pipeline.events import eventbridge_object_created, s3_notification, sns_envelope, sqs_envelope
from pipeline.models import JobEvent


def jobs_by_kind(settings, doc_id):
    doc = repository.get_document(settings, doc_id)
    return {j.kind: j for j in repository.jobs_for(settings, doc_id, doc.attempt)}


def process(runtime: LocalRuntime, path: Path) -> str:
    doc_id = runtime.submit(path).document_id
    runtime.run_until_final([doc_id], max_seconds=300)
    return doc_id


ENVELOPES = {
    "s3": lambda ref: s3_notification(ref),
    "sqs": lambda ref: sqs_envelope(s3_notification(ref)),
    "sns": lambda ref: sns_envelope(s3_notification(ref)),
    "eventbridge": lambda ref: eventbridge_object_created(ref),
}


@pytest.mark.parametrize("shape", sorted(ENVELOPES))
def test_duplicate_event_yields_one_document_and_one_notice(settings, shape):
    runtime = LocalRuntime(settings)
    ref = runtime.upload(FILES / "digital_referral.pdf")
    make = ENVELOPES[shape]
    first = runtime.dispatcher.handle_event(make(ref))
    runtime.run_until_final([ref.document_id], max_seconds=300)
    second = runtime.dispatcher.handle_event(make(ref))  # redelivered after completion
    third = runtime.dispatcher.handle_event(make(ref))
    runtime.run_until_final([ref.document_id], max_seconds=60)
    assert first["batchItemFailures"] == second["batchItemFailures"] == []
    assert [r.submitted for r in first["results"]] == [True]
    assert [r.submitted for r in second["results"] + third["results"]] == [False, False]
    assert len(repository.jobs_for(settings, ref.document_id, 1)) == 3
    notices = read_notices(settings)
    assert [(n["document_id"], n["status"]) for n in notices] == [(ref.document_id, "COMPLETED")]


def test_the_same_upload_in_all_four_envelopes_at_once(settings):
    runtime = LocalRuntime(settings)
    ref = runtime.upload(FILES / "digital_referral.pdf")
    for make in ENVELOPES.values():  # all delivered before any job ran
        runtime.dispatcher.handle_event(make(ref))
    runtime.run_until_final([ref.document_id], max_seconds=300)
    assert len(repository.jobs_for(settings, ref.document_id, 1)) == 3
    assert len(read_notices(settings)) == 1


def test_sqs_partial_batch_failure(settings):
    runtime = LocalRuntime(settings)
    ref = runtime.upload(FILES / "digital_referral.pdf")
    good = sqs_envelope(s3_notification(ref), message_id="good-1")["Records"][0]
    bad = {**good, "messageId": "bad-1", "body": "{not json"}
    result = runtime.dispatcher.handle_event({"Records": [bad, good]})
    assert result["batchItemFailures"] == [{"itemIdentifier": "bad-1"}]
    runtime.run_until_final([ref.document_id], max_seconds=300)
    assert repository.get_document(settings, ref.document_id).status == "COMPLETED"


def test_failed_submission_is_undone_and_redelivery_succeeds(settings):
    runtime = LocalRuntime(settings)
    ref = runtime.upload(FILES / "digital_referral.pdf")
    real_submit = runtime.compute.submit
    calls = {"n": 0}

    def flaky_submit(sub):  # the Batch API failing once (throttled, say)
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionError("SubmitJob failed")
        return real_submit(sub)

    runtime.compute.submit = flaky_submit
    with pytest.raises(ConnectionError):  # direct S3 trigger: the error goes back to Lambda
        runtime.dispatcher.handle_event(s3_notification(ref))
    assert repository.get_document(settings, ref.document_id).status == "RECEIVED"
    runtime.dispatcher.handle_event(s3_notification(ref))  # Lambda's retry
    runtime.run_until_final([ref.document_id], max_seconds=300)
    assert repository.get_document(settings, ref.document_id).status == "COMPLETED"
    assert len(read_notices(settings)) == 1


def test_keys_outside_the_uploads_prefix_are_ignored(settings):
    runtime = LocalRuntime(settings)
    info = runtime.store.put_bytes("results/x/text.txt", b"hello")
    from pipeline.events import UploadRef

    result = runtime.dispatcher.handle_event(s3_notification(UploadRef("uploads", "results/x/text.txt", None, info.etag, 5)))
    assert result["results"] == [None]
    assert read_notices(settings) == []


def test_unsafe_key_is_rejected_with_one_notice(settings):
    runtime = LocalRuntime(settings)
    from pipeline.events import UploadRef

    ref = UploadRef("uploads", "uploads/../../etc/passwd", None, "abc", 5)
    runtime.dispatcher.handle_event(s3_notification(ref))
    doc = repository.get_document(settings, ref.document_id)
    assert (doc.status, doc.reason_code) == ("REJECTED", "unsafe_key")
    assert [n["reason_code"] for n in read_notices(settings)] == ["unsafe_key"]


def test_job_states_follow_batch(settings):
    events: list[dict] = []
    runtime = LocalRuntime(settings, listeners=[events.append])
    doc_id = process(runtime, FILES / "digital_referral.pdf")
    by_job: dict[str, list[str]] = {}
    for e in events:
        change = parse_job_state_change(e)
        assert change is not None and e["detail"]["parameters"]["document_id"] == doc_id
        by_job.setdefault(change.job_name.split("-")[1], []).append(change.status)
    assert by_job["extract"] == ["SUBMITTED", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED"]
    assert by_job["entities"] == ["SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED"]


@pytest.mark.parametrize("start", ["fork", "exec"])
def test_killed_worker_is_retried_per_its_job_definition(settings, start):
    settings = settings.replace(worker_start=start)
    killed: list[int] = []

    def kill_first_extract(event):
        d = event["detail"]
        if d["jobName"].startswith("medintake-extract-") and d["status"] == "RUNNING" and not d["attempts"]:
            pid = runtime.compute.running_pids()[d["jobId"]]
            os.kill(pid, signal.SIGKILL)  # the container is killed (OOM killer, Spot, operator)
            killed.append(pid)

    runtime = LocalRuntime(settings, listeners=[kill_first_extract])
    doc_id = process(runtime, FILES / "scanned_discharge.pdf")
    assert killed
    jobs = jobs_by_kind(settings, doc_id)
    assert jobs["extract"].status == "SUCCEEDED" and jobs["extract"].tries == 2
    with database.transaction(settings) as s:
        codes = [e.exit_code for e in s.scalars(select(JobEvent).where(JobEvent.job_id == jobs["extract"].id))]
    assert 137 in codes  # 128 + SIGKILL, as a container reports it
    assert not any((settings.data_dir / "work").iterdir())  # the killed attempt's scratch is gone
    assert repository.get_document(settings, doc_id).status == "COMPLETED"
    assert len(read_notices(settings)) == 1


@pytest.mark.parametrize("start", ["fork", "exec"])
def test_job_past_its_timeout_ends_failed_without_retry(settings, tmp_path, start):
    settings = settings.replace(worker_start=start)
    defs = tmp_path / "job_definitions"
    shutil.copytree(REPO / "job_definitions", defs)
    raw = json.loads((defs / "extract.json").read_text())
    raw["timeout"]["attemptDurationSeconds"] = 0.1  # locally any value; Batch's floor is 60 s
    (defs / "extract.json").write_text(json.dumps(raw))
    runtime = LocalRuntime(settings.replace(job_definitions_dir=defs))
    runtime.compute.grace_seconds = 0.5
    doc_id = process(runtime, FILES / "scanned_discharge.pdf")
    jobs = jobs_by_kind(settings, doc_id)
    assert jobs["extract"].status == "FAILED" and jobs["extract"].tries == 1
    assert jobs["extract"].status_reason == "Job attempt duration exceeded timeout"
    assert jobs["entities"].status_reason == "Dependent Job failed"
    doc = repository.get_document(settings, doc_id)
    assert (doc.status, doc.reason_code) == ("FAILED", "job_timeout")
    assert [n["status"] for n in read_notices(settings)] == ["FAILED"]


@pytest.mark.parametrize("start", ["fork", "exec"])
def test_rejected_input_is_never_retried(settings, start):
    settings = settings.replace(worker_start=start)
    runtime = LocalRuntime(settings)
    doc_id = process(runtime, FILES / "encrypted.pdf")
    jobs = jobs_by_kind(settings, doc_id)
    assert jobs["extract"].tries == 1 and jobs["extract"].exit_code == 65
    assert jobs["convert"].tries == 1 and jobs["convert"].exit_code == 65
    assert jobs["entities"].status_reason == "Dependent Job failed" and jobs["entities"].tries == 0
    assert repository.get_document(settings, doc_id).reason_code == "encrypted_pdf"


def test_retryable_failure_ends_failed_when_retries_are_exhausted(settings):
    runtime = LocalRuntime(settings)
    ref = runtime.upload(FILES / "digital_referral.pdf")
    runtime.store.delete_prefix(ref.key)  # the original vanished: every attempt fails
    runtime.dispatcher.handle_event(s3_notification(ref))
    runtime.run_until_final([ref.document_id], max_seconds=300)
    jobs = jobs_by_kind(settings, ref.document_id)
    assert jobs["extract"].tries == 3 and jobs["extract"].status == "FAILED"
    doc = repository.get_document(settings, ref.document_id)
    assert (doc.status, doc.reason_code) == ("FAILED", "job_failed")
    assert len(read_notices(settings)) == 1


def test_reprocess_adds_an_attempt_and_one_more_notice(settings):
    runtime = LocalRuntime(settings)
    doc_id = process(runtime, FILES / "digital_referral.pdf")
    assert runtime.reprocess(doc_id) == 2
    runtime.run_until_final([doc_id], max_seconds=300)
    doc = repository.get_document(settings, doc_id)
    assert (doc.attempt, doc.status) == (2, "COMPLETED")
    assert [(n["attempt"], n["status"]) for n in read_notices(settings)] == [(1, "COMPLETED"), (2, "COMPLETED")]
