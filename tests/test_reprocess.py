"""`medintake reprocess` by ids and filters, on both compute environments.

Local: real worker processes on real files (a genuinely FAILED upload whose original was missing,
a REJECTED encrypted PDF, a COMPLETED one that no filter picks), a dry run that changes nothing,
and a document left mid-flight by a dead process. AWS Batch: moto in-process (no Docker; jobs are
accepted and finished at once), the database on SQLite, 1,000 FAILED documents reprocessed with
each graph submitted exactly once and the SubmitJob calls paced by the token bucket on a fake
clock; stuck documents have their old jobs terminated before the new attempt; the confirmation.
"""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from datetime import timedelta

import boto3
import pytest
from click.testing import CliRunner
from moto import mock_aws
from sqlalchemy import select, update

import cli
from compute.batch import BatchComputeEnvironment
from compute.ratelimit import TokenBucket
from conftest import FakeClock, FILES, deploy_steps, read_notices
from pipeline import database, repository
from pipeline import reprocess as rp
from pipeline.dispatcher import Dispatcher
from pipeline.events import s3_notification
from pipeline.models import Document, Job, JobEvent, Notice, utcnow
from pipeline.notify import open_notifier
from pipeline.settings import Settings
from pipeline.store import open_store

REGION = "eu-west-1"
QUEUE = "medintake-q"


def invoke(*args, input=None):
    return CliRunner().invoke(cli.main, [str(a) for a in args], input=input, catch_exceptions=False)


def json_lines(result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def snapshot(settings: Settings) -> dict[str, list[tuple]]:
    """Every row of the tables reprocessing could touch, as plain tuples."""
    out = {}
    with database.transaction(settings) as s:
        for model in (Document, Job, JobEvent, Notice):
            cols = [c.name for c in model.__table__.columns]
            rows = s.scalars(select(model)).all()
            out[model.__tablename__] = sorted(tuple(str(getattr(r, c)) for c in cols) for r in rows)
    return out


def backdate(settings: Settings, doc_id: str, hours: float) -> None:
    """Time passing for a document and its jobs (what a dead process or a stuck queue leaves)."""
    then = utcnow() - timedelta(hours=hours)
    with database.transaction(settings) as s:
        s.execute(update(Document).where(Document.id == doc_id).values(updated_at=then))
        s.execute(update(Job).where(Job.document_id == doc_id).values(updated_at=then, created_at=then))


# ---- parsing -----------------------------------------------------------------------------------

def test_times_and_durations():
    now = utcnow()
    assert rp.parse_when("2h", now) == now - timedelta(hours=2)
    assert rp.parse_when("3d", now) == now - timedelta(days=3)
    assert rp.parse_when("2026-11-28T09:00").isoformat() == "2026-11-28T09:00:00+00:00"
    assert rp.parse_when("2026-11-28T09:00+01:00").utcoffset() == timedelta(hours=1)
    assert rp.parse_duration("90s") == timedelta(seconds=90)
    for bad in ("yesterday", "2 fortnights", ""):
        with pytest.raises(ValueError):
            rp.parse_when(bad)
    with pytest.raises(ValueError, match="document ids or --status"):
        rp.Filters(prefix="uploads/")


# ---- local compute environment: real workers, real files ---------------------------------------

@pytest.fixture
def local_docs(settings):
    """One FAILED (its original was missing), one REJECTED (encrypted), one COMPLETED document."""
    from compute.runtime import LocalRuntime

    with LocalRuntime(settings) as runtime:
        ref = runtime.upload(FILES / "screenshot_labs.png")
        runtime.store.delete_prefix(ref.key)  # the original vanished (an outage): every try fails
        runtime.dispatcher.handle_event(s3_notification(ref))
        rejected = runtime.submit(FILES / "encrypted.pdf").document_id
        completed = runtime.submit(FILES / "digital_referral.pdf").document_id
        runtime.run_until_final([ref.document_id, rejected, completed], max_seconds=300)
    docs = repository.find_documents(settings, [ref.document_id, rejected, completed])
    assert [docs[i].status for i in (ref.document_id, rejected, completed)] == ["FAILED", "REJECTED", "COMPLETED"]
    return {"failed": ref.document_id, "rejected": rejected, "completed": completed, "failed_key": ref.key}


def test_local_dry_run_lists_and_changes_nothing(settings, local_docs, monkeypatch):
    import compute.runtime

    before = snapshot(settings)
    notices_before = read_notices(settings)
    logs_before = sorted((settings.data_dir / "logs").rglob("*"))

    def no_backend(*args, **kwargs):
        raise AssertionError("a dry run must not start the compute environment")

    monkeypatch.setattr(compute.runtime.LocalRuntime, "__init__", no_backend)
    result = invoke("--data-dir", settings.data_dir, "reprocess", "--status", "failed", "--status", "rejected",
                    "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    rows = {r["document_id"]: r for r in json_lines(result)}
    assert set(rows) == {local_docs["failed"], local_docs["rejected"]}
    assert (rows[local_docs["failed"]]["status"], rows[local_docs["failed"]]["reason_code"]) == ("FAILED", "job_failed")
    assert rows[local_docs["rejected"]]["reason_code"] == "encrypted_pdf"
    assert {(r["attempt"], r["next_attempt"], r["action"]) for r in rows.values()} == {(1, 2, "would-reprocess")}
    table = invoke("--data-dir", settings.data_dir, "reprocess", "--status", "failed", "--dry-run")
    assert table.exit_code == 0
    header, line = table.stdout.splitlines()
    assert header.split("\t") == ["document", "status", "reason", "attempt", "action", "note"]
    assert line.split("\t")[:5] == [local_docs["failed"], "FAILED", "job_failed", "1 -> 2", "would-reprocess"]
    assert "nothing was changed" in table.stderr
    assert local_docs["failed_key"] not in table.output  # keys may hold a name: never printed
    assert snapshot(settings) == before
    assert read_notices(settings) == notices_before
    assert sorted((settings.data_dir / "logs").rglob("*")) == logs_before


def test_local_reprocess_by_filter_new_attempt_one_notice_each(settings, local_docs):
    from pipeline.store import open_store

    store = open_store(settings)
    store.put_file(local_docs["failed_key"], FILES / "screenshot_labs.png")  # the outage is over
    result = invoke("--data-dir", settings.data_dir, "reprocess", "--status", "failed", "--status", "rejected",
                    "--json")
    assert result.exit_code == 1, result.output  # the encrypted PDF is rejected again
    rows = {r["document_id"]: r for r in json_lines(result)}
    assert set(rows) == {local_docs["failed"], local_docs["rejected"]}
    failed, rejected = rows[local_docs["failed"]], rows[local_docs["rejected"]]
    assert (failed["action"], failed["previous_attempt"], failed["attempt"]) == ("submitted", 1, 2)
    assert (failed["previous_status"], failed["status"], failed["reason_code"]) == ("FAILED", "COMPLETED", None)
    assert (rejected["attempt"], rejected["status"], rejected["reason_code"]) == (2, "REJECTED", "encrypted_pdf")
    assert repository.get_document(settings, local_docs["completed"]).attempt == 1  # no filter picked it
    # One notice per attempt, the attempt number going up.
    notices = Counter((n["document_id"], n["attempt"], n["status"]) for n in read_notices(settings))
    assert notices == Counter({
        (local_docs["failed"], 1, "FAILED"): 1, (local_docs["failed"], 2, "COMPLETED"): 1,
        (local_docs["rejected"], 1, "REJECTED"): 1, (local_docs["rejected"], 2, "REJECTED"): 1,
        (local_docs["completed"], 1, "COMPLETED"): 1,
    })
    # Same id, outputs (re)written for the new attempt.
    manifest = json.loads(store.get_bytes(f"{settings.results_prefix}{local_docs['failed']}/manifest.json"))
    assert (manifest["attempt"], manifest["status"]) == (2, "COMPLETED")
    # Nothing is left to pick up: the same command again selects nothing and exits 0.
    again = invoke("--data-dir", settings.data_dir, "reprocess", "--status", "failed", "--json")
    assert (again.exit_code, again.stdout) == (0, "")


def test_local_stuck_document_gets_a_new_attempt_and_completes(settings):
    """A document left QUEUED by a process that died (its jobs died with it): stuck after an hour."""
    from compute.runtime import LocalRuntime

    with LocalRuntime(settings) as runtime:
        stuck = runtime.submit(FILES / "digital_referral.pdf").document_id
        fresh = runtime.submit(FILES / "screenshot_labs.png").document_id
    # ... the process exits before any job ran
    backdate(settings, stuck, hours=2)
    assert repository.get_document(settings, stuck).status == "QUEUED"
    plan = invoke("--data-dir", settings.data_dir, "reprocess", "--status", "stuck", "--dry-run", "--json")
    (row,) = json_lines(plan)
    assert (row["document_id"], row["stuck"], row["terminate_jobs"]) == (stuck, True, 3)
    result = invoke("--data-dir", settings.data_dir, "reprocess", "--status", "stuck", "--json")
    assert result.exit_code == 0, result.output
    (row,) = json_lines(result)
    assert (row["document_id"], row["terminated_jobs"], row["attempt"], row["status"]) == (stuck, 3, 2, "COMPLETED")
    assert repository.get_document(settings, fresh).attempt == 1  # in flight for minutes: not stuck
    assert [(n["attempt"], n["status"]) for n in read_notices(settings) if n["document_id"] == stuck] == \
        [(2, "COMPLETED")]
    # Named by id, a document in flight that is not stuck is reported and left alone.
    named = invoke("--data-dir", settings.data_dir, "reprocess", "--no-wait", "--json", fresh)
    assert named.exit_code == 1
    assert [(r["document_id"], r["action"]) for r in json_lines(named)] == [(fresh, "skipped")]
    unknown = invoke("--data-dir", settings.data_dir, "reprocess", "0" * 32)
    assert unknown.exit_code == 2 and "no document with id" in unknown.stderr


# ---- AWS Batch (moto), database on SQLite -------------------------------------------------------

@pytest.fixture
def batch_env(tmp_path, monkeypatch):
    with mock_aws(config={"batch": {"use_docker": False}}):
        iam = boto3.client("iam", region_name=REGION)
        role = iam.create_role(RoleName="batch", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        batch = boto3.client("batch", region_name=REGION)
        ce = batch.create_compute_environment(computeEnvironmentName="medintake-ce", type="UNMANAGED",
                                              state="ENABLED", serviceRole=role)["computeEnvironmentArn"]
        batch.create_job_queue(jobQueueName=QUEUE, state="ENABLED", priority=1,
                               computeEnvironmentOrder=[{"order": 1, "computeEnvironment": ce}])
        env = {"MEDINTAKE_DATA_DIR": str(tmp_path / "data"), "MEDINTAKE_COMPUTE_BACKEND": "batch",
               "MEDINTAKE_JOB_QUEUE": QUEUE, "MEDINTAKE_AWS_REGION": REGION,
               "MEDINTAKE_WORKER_IMAGE": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/medintake-worker:1",
               "MEDINTAKE_BATCH_JOB_ROLE_ARN": role}
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        settings = Settings.load()
        deploy_steps(settings)  # what `medintake deploy` does after the stack
        yield settings, batch


def insert_failed(settings: Settings, n: int, hours_ago: float = 3.0, status: str = "FAILED") -> list[str]:
    """``n`` documents as a burst of failures leaves them (rows only: no files are needed on Batch)."""
    then = utcnow() - timedelta(hours=hours_ago)
    ids = [hashlib.sha256(f"doc-{status}-{i}".encode()).hexdigest()[:32] for i in range(n)]
    with database.transaction(settings) as s:
        s.add_all(Document(id=d, bucket="uploads", object_key=f"uploads/clinic-{i % 2}/Patient {i}.pdf",
                           etag=d[:16], size=1000, status=status, attempt=1,
                           reason_code="job_failed" if status == "FAILED" else None,
                           reason_message="The extract job failed." if status == "FAILED" else None,
                           created_at=then, updated_at=then)
                  for i, d in enumerate(ids))
    return ids


def batch_dispatcher(settings: Settings, limiter: TokenBucket) -> Dispatcher:
    return Dispatcher(settings, BatchComputeEnvironment(settings, limiter=limiter), open_store(settings),
                      open_notifier(settings))


def record_calls(client, *operations: str) -> list[tuple[str, dict]]:
    """Every call of ``operations`` made through ``client``, in order, with its API parameters."""
    calls: list[tuple[str, dict]] = []
    for op in operations:
        client.meta.events.register(f"before-parameter-build.batch.{op}",
                                    lambda params, model, **kw: calls.append((model.name, params)))
    return calls


def list_all_jobs(client) -> list[dict]:
    """ListJobs, following nextToken (moto answers in one page; real Batch pages by 100)."""
    jobs, token = [], None
    while True:
        kwargs = {"jobQueue": QUEUE, "filters": [{"name": "JOB_NAME", "values": ["medintake-*"]}]}
        if token:
            kwargs["nextToken"] = token
        page = client.list_jobs(**kwargs)
        jobs.extend(page["jobSummaryList"])
        token = page.get("nextToken")
        if not token:
            return jobs


def test_batch_1000_documents_each_graph_submitted_once_under_the_rate(batch_env):
    settings, batch = batch_env
    ids = insert_failed(settings, 1000)
    assert len(set(ids)) == 1000
    selection = rp.select(settings, rp.Filters(statuses=("failed",)))
    assert [c.document_id for c in selection.documents] == sorted(ids)  # same updated_at: by id

    clock = FakeClock()
    limiter = TokenBucket(settings.submit_rate, clock=clock, sleep=clock.sleep)
    dispatcher = batch_dispatcher(settings, limiter)
    calls = record_calls(dispatcher.compute.client, "SubmitJob", "TerminateJob")
    stamps: list[float] = []
    dispatcher.compute.client.meta.events.register("before-call.batch.SubmitJob",
                                                   lambda **kw: stamps.append(clock.now))
    progress: list[str] = []
    outcomes = rp.reprocess(settings, dispatcher, selection.documents, limiter,
                            on_progress=lambda o: progress.append(o.action))

    assert Counter(o.action for o in outcomes) == {"submitted": 1000} and len(progress) == 1000
    names = [params["jobName"] for op, params in calls if op == "SubmitJob"]
    assert len(names) == 3000 and len(set(names)) == 3000  # 3,000 SubmitJob calls, each job name once
    assert not [op for op, _ in calls if op == "TerminateJob"]
    expected = {f"medintake-{k}-{d}-a2" for d in ids for k in ("extract", "entities", "convert")}
    assert set(names) == expected
    listed = list_all_jobs(batch)
    assert Counter(j["jobName"] for j in listed) == Counter(expected)  # Batch holds each job once
    docs = repository.find_documents(settings, ids)
    assert {(d.attempt, d.status, d.reason_code) for d in docs.values()} == {(2, "QUEUED", None)}
    assert len(repository.jobs_for(settings, ids[0], 2)) == 3

    # Under the rate, on the fake clock: no 1-second window holds more than rate + burst calls
    # (9 + 9 by default; Batch allows ~50/s per account), and the whole run took at least
    # (calls - burst) / rate seconds of fake time.
    rate, burst = settings.submit_rate, limiter.capacity
    elapsed = stamps[-1] - stamps[0]
    start = 0
    busiest = 0
    for i, t in enumerate(stamps):
        while stamps[start] <= t - 1.0:
            start += 1
        busiest = max(busiest, i - start + 1)
    assert busiest <= rate + burst < 50
    assert elapsed >= (3000 - burst) / rate - 1e-6
    assert elapsed == pytest.approx(sum(clock.sleeps)) and elapsed == pytest.approx((3000 - burst) / rate, rel=0.01)
    print(f"\n1,000 documents: {len(names)} SubmitJob calls, {len(set(names))} names, fake elapsed "
          f"{elapsed:.1f} s, mean {len(names) / elapsed:.2f}/s, busiest 1 s window {busiest} calls")

    # Exactly once: the same selection run again finds nothing (they are QUEUED now).
    assert rp.select(settings, rp.Filters(statuses=("failed",))).documents == []


def test_batch_filters_reason_prefix_and_time_window(batch_env):
    settings, _ = batch_env
    old = insert_failed(settings, 4, hours_ago=30)
    with database.transaction(settings) as s:
        s.execute(update(Document).where(Document.id == old[3]).values(reason_code="job_timeout", updated_at=Document.updated_at))
    recent = insert_failed(settings, 2, hours_ago=1, status="REJECTED")
    f = rp.Filters
    assert {c.document_id for c in rp.select(settings, f(statuses=("failed",), reasons=("job_timeout",))).documents} \
        == {old[3]}
    assert {c.document_id for c in rp.select(settings, f(statuses=("failed",), prefix="uploads/clinic-1/")).documents} \
        == {old[1], old[3]}
    assert {c.document_id for c in rp.select(settings, f(statuses=("failed", "rejected"),
                                                          since=rp.parse_when("2h"))).documents} == set(recent)
    assert {c.document_id for c in rp.select(settings, f(statuses=("failed", "rejected"),
                                                          until=rp.parse_when("1d"))).documents} == set(old)
    # "%" and "_" in a prefix are literal characters, not LIKE wildcards.
    assert rp.select(settings, f(statuses=("failed",), prefix="uploads/clinic-_")).documents == []
    sel = rp.select(settings, f(document_ids=(old[0], recent[0], "f" * 32), statuses=("failed",)))
    assert [c.document_id for c in sel.documents] == [old[0]] and sel.missing == ["f" * 32]


def test_batch_stuck_documents_have_old_jobs_terminated_before_the_new_attempt(batch_env):
    settings, batch = batch_env
    clock = FakeClock()
    limiter = TokenBucket(settings.submit_rate, clock=clock, sleep=clock.sleep)
    dispatcher = batch_dispatcher(settings, limiter)
    stuck, fresh, wedged = insert_failed(settings, 3, status="RECEIVED")
    for doc_id in (stuck, fresh, wedged):
        assert dispatcher.submit_graph(doc_id, 1)  # attempt 1: jobs sit in RUNNABLE, say
    for doc_id in (stuck, wedged):
        backdate(settings, doc_id, hours=2)
    old_jobs = {d: [j.id for j in repository.jobs_for(settings, d, 1)] for d in (stuck, wedged)}

    # The dry run (through the command) shows them and touches neither the database nor Batch.
    before, listed_before = snapshot(settings), list_all_jobs(batch)
    plan = invoke("reprocess", "--status", "stuck", "--dry-run", "--json")
    assert plan.exit_code == 0, plan.output
    assert {(r["document_id"], r["terminate_jobs"], r["next_attempt"]) for r in json_lines(plan)} == \
        {(stuck, 3, 2), (wedged, 3, 2)}
    assert snapshot(settings) == before and list_all_jobs(batch) == listed_before

    class WedgedBackend:  # TerminateJob refused for one document's jobs
        def __init__(self, inner):
            self.inner = inner

        def submit(self, sub):
            return self.inner.submit(sub)

        def cancel(self, job_id, reason):
            if job_id in old_jobs[wedged]:
                from pipeline.errors import TransientError

                raise TransientError("AWS Batch error (500)")
            self.inner.cancel(job_id, reason)

    calls = record_calls(dispatcher.compute.client, "SubmitJob", "TerminateJob")
    dispatcher.compute = WedgedBackend(dispatcher.compute)
    selection = rp.select(settings, rp.Filters(statuses=("stuck",)))
    assert [c.document_id for c in selection.documents] == sorted([stuck, wedged])
    by_id = {o.candidate.document_id: o for o in rp.reprocess(settings, dispatcher, selection.documents, limiter)}

    assert by_id[stuck].action == "submitted" and sorted(by_id[stuck].terminated) == sorted(old_jobs[stuck])
    ops = [(op, p.get("jobId") or p.get("jobName")) for op, p in calls]
    terminated_at = [i for i, (op, job) in enumerate(ops) if op == "TerminateJob" and job in old_jobs[stuck]]
    submitted_at = [i for i, (op, name) in enumerate(ops) if op == "SubmitJob" and name.endswith(f"{stuck}-a2")]
    assert len(terminated_at) == 3 and len(submitted_at) == 3 and max(terminated_at) < min(submitted_at)
    assert all(p["reason"].startswith("medintake reprocess: replaced by attempt 2")
               for op, p in calls if op == "TerminateJob")
    assert repository.get_document(settings, stuck).attempt == 2
    # A document whose old jobs could not be terminated is not restarted (they may still run) ...
    assert by_id[wedged].action == "error" and repository.get_document(settings, wedged).attempt == 1
    assert not any(name.endswith(f"{wedged}-a2") for op, name in ops if op == "SubmitJob")
    # ... and a document making progress is not stuck at all.
    assert repository.get_document(settings, fresh).attempt == 1


def test_batch_submission_failure_puts_the_document_back(batch_env):
    """No event redelivers an operator's reprocess: a graph Batch refused leaves the document as it
    was (the same command picks it up again), and the rest of the run is not started."""
    settings, batch = batch_env
    ids = insert_failed(settings, 3)
    dispatcher = batch_dispatcher(settings, TokenBucket(1000.0))
    real_submit = dispatcher.compute.submit
    seen = {"n": 0}

    def flaky(sub):
        seen["n"] += 1
        if seen["n"] == 5:  # the second document's second job
            from pipeline.errors import TransientError

            raise TransientError("AWS Batch error (503)")
        return real_submit(sub)

    dispatcher.compute.submit = flaky
    selection = rp.select(settings, rp.Filters(statuses=("failed",)))
    actions = [o.action for o in rp.reprocess(settings, dispatcher, selection.documents)]
    assert actions == ["submitted", "error", "not-started"]
    second = repository.get_document(settings, selection.documents[1].document_id)
    assert (second.attempt, second.status, second.reason_code) == (1, "FAILED", "job_failed")
    assert rp.select(settings, rp.Filters(statuses=("failed",))).documents[0].document_id == second.id
    assert set(ids) >= {c.document_id for c in selection.documents}


def test_batch_confirmation_above_the_threshold(batch_env, monkeypatch):
    settings, batch = batch_env
    ids = insert_failed(settings, 3)
    args = ("reprocess", "--status", "failed", "--confirm-above", "2", "--json")

    refused = invoke(*args)  # no terminal to ask (a script, a pipe): refused, not assumed
    assert refused.exit_code == 2 and "refused: 3 document(s)" in refused.stderr and "--yes" in refused.stderr
    monkeypatch.setattr(cli, "_stdin_is_terminal", lambda: True)
    before = snapshot(settings)
    declined = invoke(*args, input="n\n")
    assert declined.exit_code == 2 and "Reprocess 3 document(s) (failed 3)?" in declined.stderr
    assert snapshot(settings) == before and list_all_jobs(batch) == []

    accepted = invoke(*args, input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert {(r["document_id"], r["action"], r["attempt"], r["status"]) for r in json_lines(accepted)} == \
        {(d, "submitted", 2, "QUEUED") for d in ids}
    assert len(list_all_jobs(batch)) == 9

    more = insert_failed(settings, 3, status="REJECTED")
    skipped_prompt = invoke("reprocess", "--status", "rejected", "--confirm-above", "2", "--yes", "--json",
                            input="n\n")
    assert skipped_prompt.exit_code == 0 and "Reprocess" not in skipped_prompt.stderr
    assert {r["document_id"] for r in json_lines(skipped_prompt)} == set(more)
    assert len(list_all_jobs(batch)) == 18


def test_progress_bar_on_a_terminal_only(settings, local_docs):
    """On a terminal: a table and click's progress bars (submitting, then processing); piped: none."""
    import os
    import pty
    import subprocess
    import sys

    from conftest import REPO

    open_store(settings).put_file(local_docs["failed_key"], FILES / "screenshot_labs.png")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDINTAKE_")}
    env.update(COLUMNS="120", LINES="40", TERM="xterm")
    command = [sys.executable, "-m", "cli", "--data-dir", str(settings.data_dir), "reprocess", "--status", "failed"]
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdin=terminal, stdout=terminal, stderr=terminal)
    os.close(terminal)
    chunks = []
    while True:
        try:
            data = os.read(controller, 4096)
        except OSError:  # the terminal closed: the command exited
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(timeout=300) == 0
    os.close(controller)
    screen = b"".join(chunks).decode(errors="replace")
    assert "submitting" in screen and "processing" in screen and "1/1" in screen
    assert local_docs["failed"] in screen and "1 -> 2" in screen and "1 of 1 submitted; 1 completed" in screen
    # Piped (CliRunner is not a terminal): no bar, the table tab-separated.
    again = invoke("--data-dir", settings.data_dir, "reprocess", "--no-wait", local_docs["failed"])
    assert "submitting" not in again.output and "processing" not in again.output
    assert again.stdout.splitlines()[1].split("\t")[:4] == [local_docs["failed"], "COMPLETED", "2 -> 3", "submitted"]


def test_usage_errors_exit_2(tmp_path):
    data = tmp_path / "data"
    for args, message in ((("reprocess",), "document ids or --status"),
                          (("reprocess", "--status", "failed", "--since", "last week"), "--since"),
                          (("reprocess", "--status", "stuck", "--stuck-after", "soon"), "--stuck-after"),
                          (("reprocess", "--status", "lost"), "--status")):
        result = invoke("--data-dir", data, *args)
        assert result.exit_code == 2 and message in result.output, (args, result.output)
    assert not data.exists()  # refused before anything was opened
    help_text = invoke("reprocess", "--help").output
    assert "Exit status:" in help_text and "refused" in help_text
