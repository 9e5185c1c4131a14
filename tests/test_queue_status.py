"""`medintake queue status`: counts, stuck detection and its causes, failures, latency, back-off.

Three sources of truth are used, each for what it can really show:
- the local compute environment: documents really processed (compute.runtime.LocalRuntime on
  tests/files), plus rows inserted for states a short test cannot reach (RUNNABLE for 45 minutes);
- moto's Batch (in process, without Docker): real ListJobs/DescribeJobs answers for finished
  jobs across more than 100 of them;
- botocore's Stubber on a real boto3 Batch client for RUNNABLE/stuck scenarios, throttling and
  paging. moto cannot hold a RUNNABLE job (without Docker it marks every job SUCCEEDED, or FAILED
  with MOTO_SIMPLE_BATCH_FAIL_AFTER, inside SubmitJob) and, in moto 5.2, ListJobs ignores
  maxResults/nextToken ("Pagination is not yet implemented" in moto/batch/models.py), so paging
  is exercised by the Stubber (documented answer shapes, validated by botocore against the
  service model) and by a pager put in front of moto.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber
from click.testing import CliRunner
from moto import mock_aws

from compute.batch_status import ALL_STATES, BatchStatusClient, collect
from compute.queue_status import (UNKNOWN_CAUSE, document_metrics, fargate_problem, format_duration, gather,
                                  parse_duration, percentile)
from compute.queue_view import render
from conftest import batch_queue, FakeClock, FILES, REPO
from pipeline import database
from pipeline.database import transaction
from pipeline.errors import ConfigError, TransientError
from pipeline.models import Document, Job, JobEvent, Notice
from pipeline.settings import Settings

REGION = "eu-west-1"
ACCOUNT = "123456789012"
NOW = 1_790_000_000.0  # a fixed "now" for the Batch scenarios (epoch seconds)


# ---------------------------------------------------------------------------------------------
# The local compute environment's database
# ---------------------------------------------------------------------------------------------

#: A fixed clock for the rows (Unix time), set by a test that also passes it as `queue status --now`,
#: so ages print exactly (45m, not 45m01s on a loaded machine); None: the real clock.
CLOCK: float | None = None


def _utc(seconds_ago: float) -> datetime:
    now = datetime.now(timezone.utc) if CLOCK is None else datetime.fromtimestamp(CLOCK, tz=timezone.utc)
    return now - timedelta(seconds=seconds_ago)


def _doc(s, doc_id: str | None = None, created_ago: float = 60.0, status: str = "QUEUED") -> str:
    doc_id = doc_id or uuid.uuid4().hex
    s.add(Document(id=doc_id, bucket="uploads", object_key=f"uploads/x/{doc_id}.pdf", status=status, attempt=1,
                   created_at=_utc(created_ago), updated_at=_utc(created_ago)))
    return doc_id


def _job(s, doc_id: str, status: str, kind: str = "extract", ago: float = 60.0, reason: str | None = None,
         exit_code: int | None = None) -> str:
    job_id = str(uuid.uuid4())
    s.add(Job(id=job_id, document_id=doc_id, attempt=1, kind=kind, name=f"medintake-{kind}-{doc_id}-a1",
              status=status, tries=1, exit_code=exit_code, status_reason=reason, depends_on=[],
              created_at=_utc(ago), updated_at=_utc(ago),
              stopped_at=_utc(ago) if status in ("SUCCEEDED", "FAILED") else None))
    if status == "RUNNABLE":
        s.add(JobEvent(event_id=str(uuid.uuid4()), job_id=job_id, document_id=doc_id, status="RUNNABLE",
                       received_at=_utc(ago)))
    return job_id


@pytest.fixture(scope="module")
def processed(tmp_path_factory):
    """Three real uploads run end to end once: one completed, two rejected (exit 65)."""
    from compute.runtime import LocalRuntime

    # Module scope runs before conftest's per-test pin of the shape these views count jobs by.
    settings = Settings.load(data_dir=tmp_path_factory.mktemp("processed") / "data", workers=2,
                             job_shape="per_document")
    with LocalRuntime(settings) as runtime:
        ids = [runtime.submit(FILES / name).document_id
               for name in ("digital_referral.pdf", "empty.pdf", "corrupt.pdf")]
        runtime.run_until_final(ids, max_seconds=240)
    database.dispose_engines()
    return settings


@pytest.fixture
def local(processed, tmp_path) -> Settings:
    """A private copy of the processed data folder, so each test may add rows."""
    target = tmp_path / "data"
    shutil.copytree(processed.data_dir, target, ignore=shutil.ignore_patterns(".lock"))
    return Settings.load(data_dir=target, workers=2)


def _holding_lock(settings: Settings):
    """Stand in for a running `medintake process`: hold the data folder's lock."""
    fh = (settings.data_dir / ".lock").open("a")
    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fh


def test_local_counts_and_failures_match_what_really_ran(local):
    with transaction(local) as s:
        by_status = {}
        for job in s.query(Job).all():
            by_status[job.status] = by_status.get(job.status, 0) + 1
    report = gather(local)
    q = report.queues[0]
    assert (q.source, q.region, q.queue) == ("local", "local", "medintake")
    assert q.counts == {**{st: 0 for st in ALL_STATES}, **by_status}
    assert q.counts["SUCCEEDED"] == 3 and q.counts["FAILED"] == 6  # 3 completed jobs; 2 rejected graphs
    groups = {(f.status_reason, f.exit_code): f.count for f in q.failures}
    # extract and convert of each rejected upload exit 65; entities never ran (its dependency failed)
    assert groups == {("Essential container in task exited", 65): 4, ("Dependent Job failed", None): 2}
    assert not q.stuck and q.cause is None and report.exit_code == 0
    d = report.documents
    assert d.finished == 3 and d.by_status == {"COMPLETED": 1, "REJECTED": 2} and d.latency_samples == 3
    assert 0 < d.p50_seconds <= d.p95_seconds < 240


def test_local_window_and_more_than_100_rows(local):
    with transaction(local) as s:
        doc = _doc(s)
        for _ in range(150):
            _job(s, doc, "SUCCEEDED", ago=600)
        for _ in range(120):
            _job(s, doc, "PENDING", kind="entities")
        for _ in range(7):
            _job(s, doc, "FAILED", ago=2 * 3600, reason="OutOfMemoryError: Container killed due to memory usage",
                 exit_code=137)
    q = gather(local).queues[0]
    assert q.counts["SUCCEEDED"] == 153 and q.counts["PENDING"] == 120 and q.counts["FAILED"] == 6
    wide = gather(local, window=parse_duration("1d")).queues[0]
    assert wide.counts["FAILED"] == 13
    assert wide.failures[0].count == 7 and wide.failures[0].exit_code == 137  # largest group first
    assert gather(local, window=parse_duration("30m")).queues[0].counts["SUCCEEDED"] == 153


def _stuck_rows(settings: Settings) -> None:
    """Two long RUNNING extract jobs fill both local vCPUs; the next has waited 45 minutes."""
    with transaction(settings) as s:
        for _ in range(2):
            _job(s, _doc(s, created_ago=3000), "RUNNING", ago=2900)
        _job(s, _doc(s, created_ago=2700), "RUNNABLE", ago=45 * 60)
        _job(s, _doc(s, created_ago=60), "RUNNABLE", ago=60)


def test_local_stuck_at_the_vcpu_cap_while_the_runner_lives(local):
    _stuck_rows(local)
    lock = _holding_lock(local)
    try:
        report = gather(local)
    finally:
        lock.close()
    q = report.queues[0]
    assert q.stuck and 45 * 60 - 5 < q.oldest_runnable_seconds < 45 * 60 + 60
    assert q.cause.code == "vcpu_cap" and "use 2 of 2 vCPUs" in q.cause.message
    assert report.exit_code == 3 and "likely cause" in report.warnings[0]
    assert q.environments[0].used_vcpus == 2.0
    # Below the threshold nothing is stuck.
    assert not gather(local, stuck_after=parse_duration("1h")).queues[0].stuck


def test_local_stuck_because_no_process_runs_the_folder(local):
    with transaction(local) as s:
        _job(s, _doc(s, created_ago=4000), "RUNNABLE", ago=3600)
    q = gather(local).queues[0]
    assert q.cause.code == "runner_gone"


def test_latency_is_upload_to_notice_over_the_last_hour(tmp_path):
    settings = Settings.load(data_dir=tmp_path / "data")
    database.upgrade(settings)
    now = time.time()
    with transaction(settings) as s:
        for i, took in enumerate([10, 20, 30, 40, 50, 60, 70, 80, 90, 600]):
            doc = _doc(s, created_ago=1000 + took, status="COMPLETED")
            s.flush()
            s.get(Document, doc).updated_at = _utc(5)  # updated_at is not the notice time
            s.add(Notice(document_id=doc, attempt=1, status="COMPLETED", payload={}, created_at=_utc(1000)))
        doc = _doc(s, created_ago=100, status="FAILED")  # no notice row: documents.updated_at ends it
        s.flush()
        s.get(Document, doc).updated_at = _utc(40)
        old = _doc(s, created_ago=9000, status="COMPLETED")  # finished two hours ago: not counted
        s.flush()
        s.get(Document, old).updated_at = _utc(7200)
        _doc(s, status="PROCESSING")  # not final
    d = document_metrics(settings, now)
    assert d.finished == 11 and d.by_status == {"COMPLETED": 10, "FAILED": 1}
    # 11 samples (the FAILED one took 60 s): nearest rank 6 and 11
    assert d.p50_seconds == pytest.approx(60, abs=2) and d.p95_seconds == pytest.approx(600, abs=2)
    assert percentile([3, 1, 2], 50) == 2 and percentile([], 95) is None


def test_durations():
    assert [parse_duration(t) for t in ("30m", "2h", "1d", "90s", "45")] == [1800, 7200, 86400, 90, 45]
    for bad in ("", "x", "-5m", "0h"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert format_duration(2712) == "45m12s" and format_duration(3600) == "1h"


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------

def _cli(settings: Settings, *args: str):
    from cli import main

    return CliRunner().invoke(main, ["--data-dir", str(settings.data_dir), "queue", "status", *args],
                              env={"MEDINTAKE_WORKERS": "2"})


def test_cli_exit_codes_json_and_plain_text(local):
    ok = _cli(local)
    assert ok.exit_code == 0, ok.output
    lines = ok.output.splitlines()
    header = next(line for line in lines if line.startswith("REGION\t"))
    assert header.split("\t")[2:9] == ["SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING",
                                       "SUCCEEDED/1h", "FAILED/1h"]
    assert "local\tmedintake\t0\t0\t0\t0\t0\t3\t6\t-\tOK" in lines
    assert "uploads/" not in ok.output and ".pdf" not in ok.output  # no key, no file name
    _stuck_rows(local)
    lock = _holding_lock(local)
    try:
        stuck = _cli(local, "--json")
    finally:
        lock.close()
    assert stuck.exit_code == 3
    data = json.loads(stuck.output)
    assert data["healthy"] is False and data["exit_code"] == 3
    assert data["queues"][0]["cause"]["code"] == "vcpu_cap" and data["queues"][0]["counts"]["RUNNABLE"] == 2
    burst = _cli(local, "--max-failures", "3")
    assert burst.exit_code == 3 and "6 jobs FAILED over 1h (more than 3)" in burst.output
    assert _cli(local, "--window", "soon").exit_code == 2
    assert _cli(local, "--region", "eu-west-1").exit_code == 2  # --region is for AWS Batch
    empty = _cli(Settings.load(data_dir=local.data_dir.parent / "nothing"))
    assert empty.exit_code == 78 and "no database" in empty.output


def test_cli_watch_redraws_and_ctrl_c_exits_0(local, monkeypatch):
    import click

    import cli

    draws = []
    monkeypatch.setattr(click, "clear", lambda: draws.append("clear"))

    def fake_sleep(seconds):
        if len(draws) >= 3:
            raise KeyboardInterrupt
    monkeypatch.setattr(cli.time, "sleep", fake_sleep)
    result = _cli(local, "--watch", "2")
    assert result.exit_code == 0
    assert len(draws) == 3 and result.output.count("medintake queue status") == 3


# ---------------------------------------------------------------------------------------------
# AWS Batch: moto
# ---------------------------------------------------------------------------------------------

class Pager:
    """moto's Batch client with the paging moto lacks: ListJobs answers 100 at a time (nextToken).

    Every other call goes to moto as it is; DescribeJobs refuses more than 100 ids, as Batch does.
    """

    def __init__(self, client) -> None:
        self.client = client
        self.pages = 0

    def list_jobs(self, nextToken=None, **kwargs):
        everything = self.client.list_jobs(**kwargs)["jobSummaryList"]
        start = int(nextToken or 0)
        self.pages += 1
        page = {"jobSummaryList": everything[start:start + 100]}
        if start + 100 < len(everything):
            page["nextToken"] = str(start + 100)
        return page

    def describe_jobs(self, **kwargs):
        assert len(kwargs["jobs"]) <= 100
        return self.client.describe_jobs(**kwargs)

    def __getattr__(self, name):
        return getattr(self.client, name)


@pytest.fixture
def moto_batch(tmp_path):
    with mock_aws(config={"batch": {"use_docker": False}}):
        batch = batch_queue(REGION, "medintake-dev", "medintake-dev-spot")
        batch.register_job_definition(jobDefinitionName="medintake-dev-extract", type="container",
                                      containerProperties={"image": "w:1", "command": ["true"],
                                                           "resourceRequirements": [
                                                               {"type": "VCPU", "value": "1"},
                                                               {"type": "MEMORY", "value": "3072"}]})
        database.upgrade(Settings.load(data_dir=tmp_path / "data"))
        yield batch, Settings.load(data_dir=tmp_path / "data", compute_backend="batch", job_queue="medintake-dev",
                                   aws_region=REGION)


def test_moto_counts_across_pages(moto_batch, monkeypatch):
    batch, settings = moto_batch
    for i in range(230):
        batch.submit_job(jobName=f"medintake-extract-{i:032x}-a1", jobQueue="medintake-dev",
                         jobDefinition="medintake-dev-extract")
    monkeypatch.setenv("MOTO_SIMPLE_BATCH_FAIL_AFTER", "0")
    for i in range(12):
        batch.submit_job(jobName=f"medintake-convert-{i:032x}-a1", jobQueue="medintake-dev",
                         jobDefinition="medintake-dev-extract")
    # moto ignores maxResults: every job on one page (why the Pager exists).
    assert len(batch.list_jobs(jobQueue="medintake-dev", jobStatus="SUCCEEDED", maxResults=100)
               ["jobSummaryList"]) == 230
    pager = Pager(batch)
    report = gather(settings, client_factory=lambda region: pager, max_failures=20)
    q = report.queues[0]
    assert (q.region, q.queue, q.state, q.status) == (REGION, "medintake-dev", "ENABLED", "VALID")
    assert q.counts == {"SUBMITTED": 0, "PENDING": 0, "RUNNABLE": 0, "STARTING": 0, "RUNNING": 0,
                        "SUCCEEDED": 230, "FAILED": 12}
    assert pager.pages == 5 + 3 + 1  # five empty states, SUCCEEDED on 3 pages, FAILED on 1
    assert [(f.exit_code, f.count) for f in q.failures] == [(None, 12)]
    assert report.exit_code == 0 and q.environments[0].name == "medintake-dev-spot"
    assert gather(settings, client_factory=lambda region: pager).exit_code == 3  # 12 > 10 failures
    # The client the command makes itself (botocore's retries off) reaches moto the same way.
    plain = gather(settings, max_failures=20).queues[0]
    assert plain.counts == q.counts and plain.failures == q.failures


def test_batch_source_without_a_database_creates_none(moto_batch, tmp_path):
    _, settings = moto_batch
    elsewhere = settings.replace(data_dir=tmp_path / "nowhere")
    report = gather(elsewhere)
    assert report.documents.error and not (tmp_path / "nowhere").exists()
    assert "unavailable: our database is not readable from here (no database in the data folder)" in render(report)


def test_moto_unknown_queue_is_a_config_error(moto_batch):
    _, settings = moto_batch
    with pytest.raises(ConfigError):
        gather(settings.replace(job_queue="nope"), client_factory=lambda region: boto3.client("batch", region))


# ---------------------------------------------------------------------------------------------
# AWS Batch: Stubber (RUNNABLE jobs, paging, throttling)
# ---------------------------------------------------------------------------------------------

def _client():
    return boto3.client("batch", region_name=REGION)


def _ce(name: str, ce_type: str = "FARGATE_SPOT", state: str = "ENABLED", status: str = "VALID",
        reason: str = "ComputeEnvironment Healthy", max_vcpus: int = 256) -> dict:
    return {"computeEnvironmentName": name,
            "computeEnvironmentArn": f"arn:aws:batch:{REGION}:{ACCOUNT}:compute-environment/{name}",
            "ecsClusterArn": f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/{name}-cluster",
            "type": "MANAGED", "state": state, "status": status, "statusReason": reason,
            "computeResources": {"type": ce_type, "maxvCpus": max_vcpus, "subnets": ["subnet-1"],
                                 "securityGroupIds": ["sg-1"]}}


def _summary(job_id: str, status: str, created: float, **extra) -> dict:
    return {"jobId": job_id, "jobName": f"medintake-extract-{job_id[-32:]}-a1", "status": status,
            "createdAt": int(created * 1000), **extra}


def _detail(job_id: str, status: str, created: float, vcpus: str = "1", memory: str = "3072",
            cluster: str | None = None) -> dict:
    container: dict = {"resourceRequirements": [{"type": "VCPU", "value": vcpus}, {"type": "MEMORY", "value": memory}]}
    if cluster:
        container["taskArn"] = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/{cluster}/{job_id[-12:]}"
    return {"jobName": f"medintake-extract-{job_id[-32:]}-a1", "jobId": job_id, "jobQueue": "medintake-dev",
            "status": status, "createdAt": int(created * 1000), "jobDefinition": "medintake-dev-extract-abc:1",
            "startedAt": int(created * 1000), "container": container}


def stub_queue(stubber: Stubber, ces: list[dict], pages: dict[str, list[list[dict]]], details: list[dict],
               queue_state: str = "ENABLED", queue_status: str = "VALID",
               queue_reason: str = "JobQueue Healthy") -> None:
    """Queue answers for one collect(): DescribeJobQueues, DescribeComputeEnvironments, ListJobs per
    state (each page in turn, nextToken expected back), DescribeJobs in batches of 100."""
    stubber.add_response("describe_job_queues", {"jobQueues": [{
        "jobQueueName": "medintake-dev", "jobQueueArn": f"arn:aws:batch:{REGION}:{ACCOUNT}:job-queue/medintake-dev",
        "state": queue_state, "status": queue_status, "statusReason": queue_reason, "priority": 1,
        "computeEnvironmentOrder": [{"order": i + 1, "computeEnvironment": c["computeEnvironmentArn"]}
                                    for i, c in enumerate(ces)]}]}, {"jobQueues": ["medintake-dev"]})
    if ces:
        stubber.add_response("describe_compute_environments", {"computeEnvironments": ces},
                             {"computeEnvironments": [c["computeEnvironmentArn"] for c in ces]})
    for status in ALL_STATES:
        state_pages = pages.get(status) or [[]]
        for n, page in enumerate(state_pages):
            answer: dict = {"jobSummaryList": page}
            expected = {"jobQueue": "medintake-dev", "jobStatus": status}
            if n:
                expected["nextToken"] = f"{status}-{n}"
            if n + 1 < len(state_pages):
                answer["nextToken"] = f"{status}-{n + 1}"
            stubber.add_response("list_jobs", answer, expected)
    for i in range(0, len(details), 100):
        chunk = details[i:i + 100]
        stubber.add_response("describe_jobs", {"jobs": chunk}, {"jobs": [d["jobId"] for d in chunk]})


def _collect(stubber_client, settings_queue="medintake-dev", **kw):
    api = BatchStatusClient(stubber_client, sleep=lambda s: None)
    return collect(api, settings_queue, REGION, NOW - 3600)


def test_stubbed_paging_and_describe_batches_of_100():
    client = _client()
    runnable = [_summary(f"job-r{i:04d}", "RUNNABLE", NOW - 600 - i) for i in range(250)]
    failed = [_summary(f"job-f{i:04d}", "FAILED", NOW - 900, stoppedAt=int((NOW - 300) * 1000),
                       statusReason="Essential container in task exited", container={"exitCode": 1})
              for i in range(130)]
    old = [_summary("job-old", "FAILED", NOW - 9000, stoppedAt=int((NOW - 8000) * 1000))]
    details = [_detail(s["jobId"], "RUNNABLE", s["createdAt"] / 1000) for s in runnable]
    with Stubber(client) as stubber:
        stub_queue(stubber, [_ce("medintake-dev-spot"), _ce("medintake-dev-ondemand", "FARGATE")],
                   {"RUNNABLE": [runnable[:100], runnable[100:200], runnable[200:]],
                    "FAILED": [failed[:100], failed[100:] + old]}, details)
        facts = _collect(client)
        stubber.assert_no_pending_responses()
    from compute.queue_status import build_queue_report

    q = build_queue_report(facts, NOW, 1800, 10)
    assert q.counts["RUNNABLE"] == 250 and q.counts["FAILED"] == 130  # the 2-hour-old one is outside 1h
    assert [(f.status_reason, f.exit_code, f.count) for f in q.failures] == [
        ("Essential container in task exited", 1, 130)]
    assert q.oldest_runnable_id == "job-r0249" and not q.stuck  # 10 minutes: not yet stuck


SPOT, OD = "SpotComputeEnvironment-Xk2eQ9", "OnDemandComputeEnvironment-Lm7tR4"
SCENARIOS = {
    # name: (queue (state, status, reason), environments, the stuck job's (vCPU, MiB), running, expected cause)
    "queue disabled": (("DISABLED", "VALID", "JobQueue Healthy"), [_ce(SPOT), _ce(OD, "FARGATE")],
                       ("1", "3072"), 0, "queue_disabled", "DISABLED"),
    "queue invalid": (("ENABLED", "INVALID", "CLIENT_ERROR - compute environment does not exist"),
                      [_ce(SPOT)], ("1", "3072"), 0, "queue_invalid", "does not exist"),
    "every environment unusable": (
        ("ENABLED", "VALID", "JobQueue Healthy"),
        [_ce(SPOT, status="INVALID", reason="CLIENT_ERROR - The security group 'sg-1' does not exist"),
         _ce(OD, "FARGATE", state="DISABLED")],
        ("1", "3072"), 0, "environments_unusable", "The security group 'sg-1' does not exist"),
    "more than any Fargate size": (("ENABLED", "VALID", "ok"), [_ce(SPOT), _ce(OD, "FARGATE")],
                                   ("32", "245760"), 0, "job_too_large", "16 vCPU / 120 GiB"),
    "memory over 120 GiB": (("ENABLED", "VALID", "ok"), [_ce(SPOT), _ce(OD, "FARGATE")],
                            ("16", "131072"), 0, "job_too_large", "largest Fargate task"),
    "invalid Fargate combination": (("ENABLED", "VALID", "ok"), [_ce(SPOT), _ce(OD, "FARGATE")],
                                    ("1", "1024"), 0, "invalid_fargate_size", "1 vCPU takes 2048-8192 MiB"),
    "more vCPUs than the environment allows": (("ENABLED", "VALID", "ok"), [_ce(OD, "FARGATE", max_vcpus=4)],
                                               ("8", "16384"), 0, "larger_than_environment", "allows 4"),
    "vCPU cap reached": (("ENABLED", "VALID", "ok"), [_ce(SPOT, max_vcpus=16), _ce(OD, "FARGATE", max_vcpus=16)],
                         ("1", "3072"), 32, "vcpu_cap", "use 32 of 32 vCPUs"),
    "Fargate Spot capacity": (("ENABLED", "VALID", "ok"), [_ce(SPOT), _ce(OD, "FARGATE", state="DISABLED",
                                                                          reason="disabled by an operator")],
                              ("1", "3072"), 0, "spot_capacity", f"nothing runs on {SPOT}"),
    # Spot idle but an On-Demand environment follows it: not blamed on Spot.
    "unknown": (("ENABLED", "VALID", "ok"), [_ce(SPOT), _ce(OD, "FARGATE")], ("1", "3072"), 0,
                "unknown", UNKNOWN_CAUSE),
}


def stub_scenario(stubber: Stubber, name: str, now: float) -> None:
    """One stuck job (3 h RUNNABLE), one fresh one, and the scenario's queue, environments and load."""
    (q_state, q_status, q_reason), ces, (vcpus, memory), running, _, _ = SCENARIOS[name]
    stuck = _summary("job-stuck-0001", "RUNNABLE", now - 3 * 3600)
    fresh = _summary("job-fresh-0002", "RUNNABLE", now - 60)
    run = [_summary(f"job-run-{i:04d}", "RUNNING", now - 4000) for i in range(running)]
    details = ([_detail(fresh["jobId"], "RUNNABLE", now - 60),
                _detail(stuck["jobId"], "RUNNABLE", now - 3 * 3600, vcpus, memory)]
               + [_detail(r["jobId"], "RUNNING", now - 4000,
                          cluster=ces[i % len(ces)]["computeEnvironmentName"] + "-cluster")
                  for i, r in enumerate(run)])
    stub_queue(stubber, ces, {"RUNNABLE": [[fresh, stuck]], "RUNNING": [run]}, details,
               queue_state=q_state, queue_status=q_status, queue_reason=q_reason)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_stuck_detection_names_each_cause(name):
    code, text = SCENARIOS[name][-2:]
    client = _client()
    with Stubber(client) as stubber:
        stub_scenario(stubber, name, NOW)
        settings = Settings.load(compute_backend="batch", job_queue="medintake-dev", aws_region=REGION,
                                 database_url="sqlite:///:memory:")
        report = gather(settings, now=NOW, client_factory=lambda region: client)
        stubber.assert_no_pending_responses()
    q = report.queues[0]
    assert q.stuck and q.oldest_runnable_id == "job-stuck-0001" and q.oldest_runnable_seconds == 3 * 3600
    assert q.cause.code == code, q.cause
    assert text in q.cause.message
    assert report.exit_code == 3 and report.warnings[0].startswith("medintake-dev (eu-west-1): oldest RUNNABLE")
    screen = render(report)
    assert f"likely cause [{code}]" in screen and "uploads/" not in screen


def test_several_regions_one_report():
    clients = {r: boto3.client("batch", region_name=r) for r in (REGION, "us-east-1")}
    stubbers = {r: Stubber(c) for r, c in clients.items()}
    stub_scenario(stubbers[REGION], "vCPU cap reached", NOW)
    stub_queue(stubbers["us-east-1"], [_ce(SPOT), _ce(OD, "FARGATE")], {}, [])
    for st in stubbers.values():
        st.activate()
    settings = Settings.load(compute_backend="batch", job_queue="medintake-dev", aws_region=REGION,
                             database_url="sqlite:///:memory:")
    report = gather(settings, regions=(REGION, "us-east-1"), now=NOW, client_factory=clients.__getitem__)
    assert [(q.region, q.stuck) for q in report.queues] == [(REGION, True), ("us-east-1", False)]
    assert report.exit_code == 3 and len(report.warnings) == 1
    rows = [line.split("\t")[:2] for line in render(report).splitlines() if line.startswith(("eu-", "us-"))]
    assert rows == [[REGION, "medintake-dev"], ["us-east-1", "medintake-dev"]]


def test_fargate_task_sizes():
    assert fargate_problem(0.25, 512) is None and fargate_problem(16, 122880) is None
    assert fargate_problem(8, 20000).code == "invalid_fargate_size"  # 8 vCPU: 16384 + n*4096 only
    assert fargate_problem(None, None) is None


def test_a_queue_arn_is_used_by_name_in_other_regions():
    from compute.queue_status import _queue_for_region

    arn = f"arn:aws:batch:{REGION}:{ACCOUNT}:job-queue/medintake-prod"
    assert _queue_for_region(arn, REGION) == arn
    assert _queue_for_region(arn, "us-east-1") == "medintake-prod"
    with pytest.raises(ConfigError):
        gather(Settings.load(compute_backend="batch"), client_factory=lambda region: None)


@pytest.mark.parametrize("code,http", [("ThrottlingException", 400), ("TooManyRequestsException", 429),
                                       ("InternalServerError", 500), ("ServiceUnavailable", 503)])
def test_back_off_on_throttling_and_5xx_with_a_fake_clock(code, http):
    client = _client()
    clock = FakeClock()
    api = BatchStatusClient(client, sleep=clock.sleep, rand=lambda: 1.0)  # the jitter's upper bound
    with Stubber(client) as stubber:
        for _ in range(3):
            stubber.add_client_error("list_jobs", service_error_code=code, http_status_code=http)
        stubber.add_response("list_jobs", {"jobSummaryList": [_summary("job-1", "RUNNABLE", NOW)]})
        assert len(api.list_jobs("medintake-dev", "RUNNABLE")) == 1
    assert clock.sleeps == [0.5, 1.0, 2.0] and api.calls == 4
    jittered = BatchStatusClient(client, sleep=clock.sleep, rand=lambda: 0.25)
    with Stubber(client) as stubber:
        stubber.add_client_error("list_jobs", service_error_code=code, http_status_code=http)
        stubber.add_response("list_jobs", {"jobSummaryList": []})
        jittered.list_jobs("medintake-dev", "RUNNABLE")
    assert clock.sleeps[-1] == 0.125


def test_throttling_gives_up_after_max_attempts_as_a_transient_error():
    client = _client()
    clock = FakeClock()
    api = BatchStatusClient(client, sleep=clock.sleep, rand=lambda: 1.0)  # defaults: 8 attempts, 0.5 s to 20 s
    with Stubber(client) as stubber:
        for _ in range(8):
            stubber.add_client_error("describe_jobs", service_error_code="ThrottlingException", http_status_code=400)
        with pytest.raises(TransientError) as err:
            api.describe_jobs(["job-1"])
    assert api.calls == 8 and err.value.exit_code == 75
    assert clock.sleeps == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 20.0]  # doubling, capped; none after the last try


@pytest.mark.parametrize("code,http,error", [("ClientException", 400, ConfigError),
                                             ("AccessDeniedException", 403, ConfigError),
                                             ("ValidationException", 400, ConfigError)])
def test_other_errors_are_not_retried(code, http, error):
    client = _client()
    clock = FakeClock()
    api = BatchStatusClient(client, sleep=clock.sleep)
    with Stubber(client) as stubber:
        stubber.add_client_error("describe_job_queues", service_error_code=code, http_status_code=http,
                                 service_message="queue arn:aws:batch:... not found")
        with pytest.raises(error) as err:
            api.describe_job_queue("medintake-dev")
    assert api.calls == 1 and clock.sleeps == []
    assert "arn:" not in err.value.message  # AWS's message is not repeated (it may name anything)


# ---------------------------------------------------------------------------------------------
# In a terminal, as an operator sees it (tmux)
# ---------------------------------------------------------------------------------------------

TMUX = shutil.which("tmux")
SCREENS = os.environ.get("MEDINTAKE_RECORD_SCREENS")  # a folder: keep the captures (docs/operators.md)


class Terminal:
    """A tmux session on its own socket: a shell, keys typed, the pane captured as text."""

    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.socket = f"medintake-test-{uuid.uuid4().hex[:8]}"
        self.tmux = [TMUX, "-L", self.socket, "-f", "/dev/null"]
        env_args = [a for k, v in env.items() for a in ("-e", f"{k}={v}")]
        subprocess.run([*self.tmux, "new-session", "-d", "-x", "150", "-y", "45", *env_args,
                        "bash --norc --noprofile"], check=True, cwd=REPO)
        self.run("export PS1='$ ' PATH=" + str(REPO / ".venv" / "bin") + ":$PATH && clear")

    def run(self, command: str) -> None:
        subprocess.run([*self.tmux, "send-keys", "-t", "0", command, "Enter"], check=True)

    def keys(self, *keys: str) -> None:
        subprocess.run([*self.tmux, "send-keys", "-t", "0", *keys], check=True)

    def capture(self) -> str:
        out = subprocess.run([*self.tmux, "capture-pane", "-p", "-t", "0"], check=True, capture_output=True, text=True)
        return "\n".join(line.rstrip() for line in out.stdout.rstrip().splitlines())

    def wait_for(self, text: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.capture()
            if text in screen:
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{text!r} never appeared:\n{self.capture()}")

    def command(self, command: str, timeout: float = 60.0) -> tuple[str, int]:
        """Run ``command`` on a cleared screen; its screen (without the marker line) and exit status.

        The marker is unique per run and its typed form ($?) never matches its printed form, so
        neither the previous screen nor the echoed command line can be mistaken for the end.
        """
        marker = f"done-{uuid.uuid4().hex[:6]}"
        self.run(f"clear; {command}; echo {marker} $?")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.capture()
            found = re.search(rf"^{marker} (\d+)$", screen, re.M)
            if found:
                return screen[:found.start()].rstrip(), int(found.group(1))
            time.sleep(0.2)
        raise AssertionError(f"{command!r} did not finish:\n{self.capture()}")

    def close(self) -> None:
        subprocess.run([*self.tmux, "kill-server"], check=False)


@pytest.fixture
def terminal(tmp_path):
    if TMUX is None:
        pytest.skip("tmux is not installed (.ci/test-packages.txt lists it)")
    term = Terminal(tmp_path, {"MEDINTAKE_WORKERS": "2", "COLUMNS": "150"})
    yield term
    term.close()


def _record(name: str, screen: str) -> None:
    if SCREENS:
        Path(SCREENS).mkdir(parents=True, exist_ok=True)
        (Path(SCREENS) / f"{name}.txt").write_text(screen + "\n")


def test_three_screens_in_a_terminal(local, terminal, monkeypatch):
    at = float(int(time.time()))  # one fixed clock for the rows and the three screens
    monkeypatch.setattr(sys.modules[__name__], "CLOCK", at)
    cmd = f"medintake --data-dir {local.data_dir} queue status --now {at:.0f}"
    healthy, code = terminal.command(cmd)
    assert code == 0 and healthy.endswith("healthy") and "\t" not in healthy  # aligned, not tab-separated
    assert re.search(r"^local +medintake +0 +0 +0 +0 +0 +3 +6 +- +OK$", healthy, re.M)
    _record("healthy", healthy)

    _stuck_rows(local)
    lock = _holding_lock(local)
    try:
        stuck, code = terminal.command(cmd)
    finally:
        lock.close()
    assert code == 3 and re.search(r"^local +medintake +0 +0 +2 +0 +2 +3 +6 +45m +STUCK$", stuck, re.M)
    assert "likely cause [vcpu_cap]: vCPU cap reached: STARTING/RUNNING jobs use 2 of 2 vCPUs" in stuck
    _record("stuck", stuck)

    with transaction(local) as s:
        doc = _doc(s)
        for i in range(9):
            _job(s, doc, "FAILED", ago=120 + i, reason="OutOfMemoryError: Container killed due to memory usage",
                 exit_code=137)
        for i in range(4):
            _job(s, doc, "FAILED", ago=300 + i, kind="entities", reason="Job attempt duration exceeded timeout")
        # the stuck jobs have run since
        for job in s.query(Job).filter(Job.status.in_(("RUNNABLE", "RUNNING"))):
            job.status, job.stopped_at, job.exit_code = "SUCCEEDED", _utc(5), 0
    burst, code = terminal.command(cmd)
    assert code == 3 and "WARN   medintake (local): 19 jobs FAILED over 1h (more than 10)" in burst
    assert re.search(r"^medintake +9 +137 +OutOfMemoryError: Container killed due to memory usage$", burst, re.M)
    assert re.search(r"^medintake +4 +- +Job attempt duration exceeded timeout$", burst, re.M)
    _record("failures", burst)


def test_watch_redraws_in_place_and_ctrl_c_exits_0(local, terminal):
    terminal.run(f"clear; medintake --data-dir {local.data_dir} queue status --watch 1; echo watch-ended $?")
    first = terminal.wait_for("healthy")
    stamp = next(line for line in first.splitlines() if line.startswith("medintake queue status"))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # redrawn in place: a new time stamp, still one screen
        screen = terminal.capture()
        if stamp not in screen and screen.count("medintake queue status") == 1 and "healthy" in screen:
            break
        time.sleep(0.2)
    else:
        raise AssertionError(terminal.capture())
    terminal.keys("C-c")
    assert re.search(r"watch-ended 0$", terminal.wait_for("watch-ended 0"), re.M)  # after the ^C echo


AWS_SCREEN = """\
import sys, time
sys.path.insert(0, {tests!r})
from botocore.stub import Stubber
import compute.batch_status
import test_queue_status as t
client = t._client()
stubber = Stubber(client)
t.stub_scenario(stubber, {scenario!r}, time.time())
stubber.activate()
compute.batch_status.status_client = lambda region, endpoint_url=None: client
import cli
cli.main(["queue", "status"], prog_name="medintake")
"""


@pytest.mark.parametrize("scenario,name", [("vCPU cap reached", "aws-stuck-vcpu-cap"),
                                           ("Fargate Spot capacity", "aws-stuck-spot")])
def test_aws_stuck_screen_in_a_terminal(local, terminal, tmp_path, scenario, name):
    """The real command in a terminal, its Batch answers from the Stubber (moto cannot hold a
    RUNNABLE job): what an operator sees when the stack's queue is stuck."""
    script = tmp_path / "aws_screen.py"
    script.write_text(AWS_SCREEN.format(tests=str(REPO / "tests"), scenario=scenario))
    env = (f"MEDINTAKE_COMPUTE_BACKEND=batch MEDINTAKE_JOB_QUEUE=medintake-dev MEDINTAKE_AWS_REGION={REGION} "
           f"MEDINTAKE_DATABASE_URL={local.effective_database_url}")
    screen, code = terminal.command(f"{env} python {script}")
    code_name = SCENARIOS[scenario][-2]
    assert code == 3, screen
    assert re.search(rf"^{REGION} +medintake-dev +0 +0 +2 +0 +\d+ +0 +0 +3h +STUCK$", screen, re.M), screen
    assert f"likely cause [{code_name}]" in screen and "job-stuck-0001" in screen
    _record(name, screen)


@pytest.mark.parametrize("errors,code,text", [
    ([("ThrottlingException", 400)] * 8, 75, "still failing after 8 attempts (ThrottlingException)"),
    ([("ServiceUnavailable", 503)] * 8, 75, "still failing after 8 attempts"),
    ([("AccessDeniedException", 403)], 78, "AWS Batch refused describe_job_queues (AccessDeniedException)"),
])
def test_cli_exit_codes_for_aws_errors(monkeypatch, tmp_path, errors, code, text):
    import compute.batch_status as batch_status
    from cli import main

    client = _client()
    stubber = Stubber(client)
    for error, http in errors:
        stubber.add_client_error("describe_job_queues", service_error_code=error, http_status_code=http)
    stubber.activate()
    slept = []
    monkeypatch.setattr(time, "sleep", slept.append)  # the back-off, counted instead of waited
    monkeypatch.setattr(batch_status, "status_client", lambda region, endpoint_url=None: client)
    result = CliRunner().invoke(main, ["--data-dir", str(tmp_path), "queue", "status", "--region", REGION],
                                env={"MEDINTAKE_COMPUTE_BACKEND": "batch", "MEDINTAKE_JOB_QUEUE": "medintake-dev"})
    assert result.exit_code == code, result.output
    assert text in result.output and len(slept) == len(errors) - 1
    stubber.assert_no_pending_responses()


def test_an_array_job_counts_as_its_children_and_its_runnable_children_can_be_stuck():
    """The array shape on AWS: ListJobs lists the array job (PENDING while its children run), not
    the children; the report counts the children by state (DescribeJobs' statusSummary), so a
    queue whose children wait 3 h is STUCK, and failed children are failures."""
    client = _client()
    parent = "0f0e0d0c-aaaa-bbbb-cccc-000000000001"
    size = {"size": 25}
    summary = _summary(parent, "PENDING", NOW - 3 * 3600, arrayProperties=size)
    summary["jobName"] = "medintake-batch-" + "ab" * 16
    detail = {**_detail(parent, "PENDING", NOW - 3 * 3600, vcpus="2", memory="4096"), "jobName": summary["jobName"],
              "arrayProperties": {**size, "statusSummary": {"RUNNABLE": 20, "RUNNING": 2, "SUCCEEDED": 1,
                                                              "FAILED": 2, "PENDING": 0}}}
    with Stubber(client) as stubber:
        stub_queue(stubber, [_ce(SPOT, max_vcpus=4)], {"PENDING": [[summary]]}, [detail])
        facts = _collect(client)
        stubber.assert_no_pending_responses()
    from compute.queue_status import build_queue_report

    q = build_queue_report(facts, NOW, 1800, 1)
    assert {k: v for k, v in q.counts.items() if v} == {"RUNNABLE": 20, "RUNNING": 2, "SUCCEEDED": 1, "FAILED": 2}
    assert q.stuck and q.oldest_runnable_id == parent and q.oldest_runnable_seconds == 3 * 3600
    assert [(f.status_reason, f.count) for f in q.failures] == [(f"Array child failed: medintake jobs show {parent}", 2)]
    from compute.queue_status import DocumentMetrics, build_report

    screen = render(build_report([facts], DocumentMetrics(), NOW, 3600, 1800, 1))
    assert f"job {parent} ({summary['jobName']}: a child) RUNNABLE for 3h" in screen


def _unit(s, unit: str, statuses: list[str], ago: float, events: list[tuple[str, float]]) -> list[str]:
    """An array child (or plain process job) of the array shape: one row per document, its events."""
    docs = []
    for pos, status in enumerate(statuses):
        doc = _doc(s, created_ago=ago)
        s.add(Job(id=f"{unit}#{pos}", document_id=doc, attempt=1, kind="process",
                  name=f"medintake-process-{doc}-a1-t1", status=status, tries=0, depends_on=[],
                  created_at=_utc(ago), updated_at=_utc(ago),
                  stopped_at=_utc(ago) if status in ("SUCCEEDED", "FAILED") else None))
        docs.append(doc)
    for status, when in events:
        s.add(JobEvent(event_id=str(uuid.uuid4()), job_id=unit, document_id=None, status=status,
                       received_at=_utc(when)))
    return docs


def test_local_array_children_count_once_and_a_waiting_child_is_stuck(local, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "CLOCK", float(int(time.time())))
    before = gather(local, now=CLOCK).queues[0].counts
    parent = str(uuid.uuid4())
    with transaction(local) as s:
        # Two children hold both local vCPUs; a third has waited 45 minutes with 3 documents;
        # a finished child settled one document FAILED (rejected) yet succeeded itself, as Batch sees it.
        for i in (0, 1):
            _unit(s, f"{parent}:{i}", ["RUNNING", "SUCCEEDED"], 2900, [("RUNNABLE", 2900), ("RUNNING", 2800)])
        _unit(s, f"{parent}:2", ["RUNNABLE"] * 3, 45 * 60, [("RUNNABLE", 45 * 60)])
        _unit(s, f"{parent}:3", ["SUCCEEDED", "FAILED"], 600, [("RUNNING", 700), ("SUCCEEDED", 600)])
    lock = _holding_lock(local)
    try:
        report = gather(local, now=CLOCK)
    finally:
        lock.close()
    q = report.queues[0]
    added = {k: q.counts[k] - before[k] for k in q.counts if q.counts[k] != before[k]}
    assert added == {"RUNNING": 2, "RUNNABLE": 1, "SUCCEEDED": 1}  # children, not documents
    assert q.stuck and q.oldest_runnable_id == f"{parent}:2" and q.oldest_runnable_seconds == 45 * 60
    assert q.oldest_runnable_name == "medintake-process (3 documents)"
    assert q.cause.code == "vcpu_cap" and q.environments[0].used_vcpus == 2.0
    assert not q.failures or all("process" not in (f.status_reason or "") for f in q.failures)
