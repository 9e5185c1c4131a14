"""`medintake documents list|show` and `medintake jobs show`: history from our own database.

Local: real files (named with a fake patient's name, "Jane Doe ...") processed by real workers
through compute.runtime.LocalRuntime: one COMPLETED and reprocessed (two attempts, two notices),
one REJECTED (corrupt PDF, exit 65), one FAILED after three tries (its original vanished). The
commands run through click's CliRunner against that data folder. PHI (the name, the object key,
any extracted text) is in no output without --show-phi and is there with it.

Filters (status, reason, time window, key prefix, limit and order) also run on MariaDB and
PostgreSQL with inserted rows (the db_settings fixture).

The array shape (job_shape=array, the default: docs/scale.md): the same kinds of documents plus
one whose original vanished, dispatched as one event, so one array job ran them (children of two
documents each); the failing one is resubmitted alone (a plain job) and fails again. The same
commands then show, per document, the array job and child index of each try, the stage timings the
child recorded, the document's part of the child's log, and `jobs show` on a child and on the
array job meaning what Batch means by them.

CloudWatch: moto in-process. moto's DescribeJobs does carry ``attempts[].container.logStreamName``
for its simple (no Docker) Batch jobs, so the whole path is exercised: a Batch job run by moto,
its stream created and written, our job row pointing at it, `jobs show` printing the tail.
"""
from __future__ import annotations

import json
import shutil
import time
import uuid
from datetime import datetime, timedelta, timezone

import boto3
import pytest
from click.testing import CliRunner
from moto import mock_aws

import cli
from compute import job_logs
from conftest import batch_queue, FILES
from pipeline import database, history, repository
from pipeline.database import transaction
from pipeline.events import s3_notification
from pipeline.models import Document, Job, JobEvent
from pipeline.settings import Settings

NAME = "Jane"
REGION = "eu-west-1"


def run(settings: Settings, *args: str, env: dict[str, str] | None = None):
    base = {"MEDINTAKE_DATABASE_URL": settings.database_url} if settings.database_url else {}
    return CliRunner().invoke(cli.main, ["--data-dir", str(settings.data_dir), *map(str, args)],
                              env={**base, **(env or {})}, catch_exceptions=False)


# ---- real documents, processed once for the module ----------------------------------------------

@pytest.fixture(scope="module")
def processed(tmp_path_factory):
    from compute.runtime import LocalRuntime

    root = tmp_path_factory.mktemp("views")
    inbox = root / "inbox"
    inbox.mkdir()
    referral = inbox / "Jane Doe referral.pdf"
    corrupt = inbox / "Jane Doe corrupt.pdf"
    labs = inbox / "Jane Doe labs.png"
    shutil.copy(FILES / "digital_referral.pdf", referral)
    shutil.copy(FILES / "corrupt.pdf", corrupt)
    shutil.copy(FILES / "screenshot_labs.png", labs)
    # Module scope runs before conftest's per-test pin: the shape these views follow, chosen here.
    settings = Settings.load(data_dir=root / "data", workers=2, job_shape="per_document")
    with LocalRuntime(settings) as runtime:
        completed = runtime.submit(referral).document_id
        rejected = runtime.submit(corrupt).document_id
        ref = runtime.upload(labs)
        runtime.store.delete_prefix(ref.key)  # the original vanished: every try of extract fails
        runtime.dispatcher.handle_event(s3_notification(ref))
        runtime.run_until_final([completed, rejected, ref.document_id], max_seconds=300)
        assert runtime.reprocess(completed) == 2
        runtime.run_until_final([completed], max_seconds=300)
    docs = repository.find_documents(settings, [completed, rejected, ref.document_id])
    assert [docs[i].status for i in (completed, rejected, ref.document_id)] == ["COMPLETED", "REJECTED", "FAILED"]
    keys = {d.id: d.object_key for d in docs.values()}
    text = runtime.store.get_bytes(f"results/{completed}/text.txt").decode()
    database.dispose_engines()
    return {"settings": settings, "completed": completed, "rejected": rejected, "failed": ref.document_id,
            "keys": keys, "text": text}


@pytest.fixture
def local(processed, tmp_path):
    """A private copy of the processed data folder."""
    target = tmp_path / "data"
    shutil.copytree(processed["settings"].data_dir, target, ignore=shutil.ignore_patterns(".lock"))
    return {**processed, "settings": Settings.load(data_dir=target, workers=2)}


def phi_strings(local) -> list[str]:
    """What must never be printed without --show-phi: the name, every key, lines of the text."""
    lines = [line.strip() for line in local["text"].splitlines() if len(line.strip()) > 12][:5]
    assert any(NAME in key for key in local["keys"].values())
    return [NAME, *local["keys"].values(), *lines]


def assert_no_phi(output: str, local) -> None:
    for s in phi_strings(local):
        assert s not in output, f"PHI in output: {s[:20]!r}"


def job_of(settings, doc_id: str, kind: str, attempt: int | None = None) -> Job:
    doc = repository.get_document(settings, doc_id)
    return next(j for j in repository.jobs_for(settings, doc_id, attempt or doc.attempt) if j.kind == kind)


def test_documents_list_plain_and_json_without_phi(local):
    s = local["settings"]
    result = run(s, "documents", "list")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split("\t") == ["document", "status", "attempt", "reason", "format", "pages", "created",
                                    "updated", "duration"]
    rows = {line.split("\t")[0]: line.split("\t") for line in lines[1:]}
    assert rows[local["completed"]][1:3] == ["COMPLETED", "2"]
    assert rows[local["completed"]][4:6] == ["PDF", "2"]
    assert rows[local["rejected"]][1:4] == ["REJECTED", "1", "corrupt_file"]
    assert rows[local["failed"]][1:4] == ["FAILED", "1", "job_failed"]
    assert all(r[8].endswith("s") for r in rows.values())  # final: a duration
    assert_no_phi(result.output, local)

    as_json = run(s, "documents", "list", "--json")
    data = json.loads(as_json.stdout)
    assert {d["document_id"] for d in data} == set(rows)
    assert all("object_key" not in d for d in data)
    assert_no_phi(as_json.output, local)
    # newest change first: the reprocessed document finished last
    assert data[0]["document_id"] == local["completed"]


def test_documents_list_with_show_phi_adds_the_key(local):
    result = run(local["settings"], "documents", "list", "--show-phi")
    assert result.stdout.splitlines()[0].endswith("\tkey")
    for doc_id, key in local["keys"].items():
        assert f"{doc_id}\t" in result.stdout and key in result.stdout
    data = json.loads(run(local["settings"], "documents", "list", "--show-phi", "--json").stdout)
    assert {d["object_key"] for d in data} == set(local["keys"].values())


def test_documents_list_filters_on_real_documents(local):
    s = local["settings"]

    def ids(*args):
        result = run(s, "documents", "list", "--json", *args)
        assert result.exit_code == 0, result.output
        return {d["document_id"] for d in json.loads(result.stdout)}

    assert ids("--status", "failed", "--status", "REJECTED") == {local["failed"], local["rejected"]}
    assert ids("--reason", "corrupt_file") == {local["rejected"]}
    assert ids("--since", "1h") == set(local["keys"])
    assert ids("--until", "1h") == set()
    key = local["keys"][local["rejected"]]
    prefix = key[: key.rindex("/") + 1]  # uploads/<hash>/: matches, never printed
    result = run(s, "documents", "list", "--prefix", prefix)
    assert [line.split("\t")[0] for line in result.stdout.splitlines()[1:]] == [local["rejected"]]
    assert prefix not in result.output
    assert ids("--prefix", "uploads/nothing-here/") == set()
    limited = run(s, "documents", "list", "--limit", "1")
    assert len(limited.stdout.splitlines()) == 2 and "1 of 3 shown" in limited.stderr
    bad = run(s, "documents", "list", "--since", "yesterday-ish")
    assert bad.exit_code == 2
    assert run(s, "documents", "list", "--status", "stuck").exit_code == 2


def test_documents_show_attempts_jobs_timings_outputs_counts(local):
    s = local["settings"]
    doc_id = local["completed"]
    result = run(s, "documents", "show", doc_id)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "status\tCOMPLETED" in out and "attempt\t2" in out
    assert "# attempt 1\n" in out and "# attempt 2 (current)" in out
    assert out.count("notice: COMPLETED") == 2  # one notice per attempt
    for kind in ("extract", "convert", "entities"):
        assert job_of(s, doc_id, kind, 1).id in out and job_of(s, doc_id, kind, 2).id in out
    assert "extract\ttext_layer\t" in out and "convert\tconvert\t" in out
    assert f"text\tresults/{doc_id}/text.txt" in out and f"manifest\tresults/{doc_id}/manifest.json" in out
    assert "pages\t2" in out and "renditions\t3" in out  # the default set: thumbnail, preview, web
    assert "text (first" not in out
    assert_no_phi(result.output, local)

    data = json.loads(run(s, "documents", "show", doc_id, "--json").stdout)
    assert [a["attempt"] for a in data["attempts"]] == [1, 2]
    assert [j["status"] for j in data["attempts"][1]["jobs"]] == ["SUCCEEDED"] * 3
    assert data["attempts"][1]["notice"]["status"] == "COMPLETED"
    assert set(data["timings"]) == {"extract", "convert", "entities"}
    assert data["timings"]["extract"]["stages"]["total"] >= 0
    assert data["counts"]["entities"] > 0 and data["counts"]["pages"] == 2
    assert "object_key" not in data and "text_excerpt" not in data
    assert_no_phi(json.dumps(data), local)


def test_documents_show_rejected_and_failed(local):
    s = local["settings"]
    rejected = json.loads(run(s, "documents", "show", local["rejected"], "--json").stdout)
    assert rejected["status"] == "REJECTED" and rejected["reason_code"] == "corrupt_file"
    jobs = {j["kind"]: j for j in rejected["attempts"][0]["jobs"]}
    assert jobs["extract"]["exit_code"] == 65 and jobs["entities"]["status_reason"] == "Dependent Job failed"
    assert list(rejected["outputs"]) == ["manifest"]
    failed = json.loads(run(s, "documents", "show", local["failed"], "--json").stdout)
    extract = next(j for j in failed["attempts"][0]["jobs"] if j["kind"] == "extract")
    assert (extract["status"], extract["tries"]) == ("FAILED", 3)
    assert failed["reason_code"] == "job_failed"


def test_documents_show_with_show_phi(local):
    s = local["settings"]
    doc_id = local["completed"]
    result = run(s, "documents", "show", doc_id, "--show-phi")
    assert f"key\t{local['keys'][doc_id]}" in result.stdout
    assert local["text"][:200] in result.stdout
    data = json.loads(run(s, "documents", "show", doc_id, "--show-phi", "--json").stdout)
    assert data["object_key"] == local["keys"][doc_id]
    assert data["text_excerpt"] == local["text"][:history.TEXT_EXCERPT_CHARS]
    assert NAME in result.stdout


def test_jobs_show_a_rejected_job_with_its_local_log(local):
    s = local["settings"]
    job = job_of(s, local["rejected"], "extract")
    result = run(s, "jobs", "show", job.id)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "exit code\t65" in out and "reason\tcorrupt_file" in out
    log = s.data_dir.resolve() / "logs" / f"extract-{job.id}-1.log"
    assert log.is_file()
    # one compute attempt: exit 65, FAILED, its log file
    attempts = out.split("# attempts\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert attempts[1].split("\t")[0] == "1" and attempts[1].split("\t")[4:6] == ["65", "FAILED"]
    assert attempts[1].endswith(str(log))
    changes = out.split("# state changes\n", 1)[1].split("\n\n", 1)[0].splitlines()[1:]
    assert [c.split("\t")[1] for c in changes] == ["SUBMITTED", "RUNNABLE", "STARTING", "RUNNING", "FAILED"]
    tail = out.split(f"last 40 lines: {log}\n", 1)[1]
    assert tail.strip().splitlines() == log.read_text().strip().splitlines()[-40:]
    assert "CorruptFile" in tail and "exit=65" in tail
    assert_no_phi(result.output, local)
    data = json.loads(run(s, "jobs", "show", job.id, "--json").stdout)
    assert data["exit_code"] == 65 and data["log"]["source"] == "local" and data["log"]["attempt"] == 1
    by_name = json.loads(run(s, "jobs", "show", job.name, "--json").stdout)  # as Batch's console shows it
    assert by_name["job_id"] == job.id and by_name["log"]["lines"] == data["log"]["lines"]
    assert [t["exit_code"] for t in data["tries_detail"]] == [65]


def test_jobs_show_three_tries_each_with_its_log(local):
    s = local["settings"]
    job = job_of(s, local["failed"], "extract")
    data = json.loads(run(s, "jobs", "show", job.id, "--json").stdout)
    tries = data["tries_detail"]
    assert [t["number"] for t in tries] == [1, 2, 3]
    assert [t["outcome"] for t in tries] == ["RUNNABLE", "RUNNABLE", "FAILED"]  # retried twice, then failed
    assert all(t["exit_code"] not in (None, 0, 65) for t in tries)
    assert all(t["started_at"] and t["stopped_at"] for t in tries)
    assert sorted(data["log"]["attempts"]) == ["1", "2", "3"] and data["log"]["attempt"] == 3
    first = run(s, "jobs", "show", job.id, "--attempt", "1", "--lines", "1")
    log1 = s.data_dir.resolve() / "logs" / f"extract-{job.id}-1.log"
    assert first.stdout.rstrip().endswith(log1.read_text().strip().splitlines()[-1])
    assert f"log, attempt 1, last 1 lines: {log1}" in first.stdout
    missing = run(s, "jobs", "show", job.id, "--attempt", "9")
    assert missing.exit_code == 0 and "(no log file for attempt 9)" in missing.stdout
    # a job that never ran (its dependency failed): no tries, no log, said so
    never = run(s, "jobs", "show", job_of(s, local["failed"], "entities").id)
    assert "Dependent Job failed" in never.stdout and "(no log file" in never.stdout


def test_unknown_ids_exit_2(local, tmp_path):
    s = local["settings"]
    doc = run(s, "documents", "show", "0" * 32)
    assert doc.exit_code == 2 and "no document with that id" in doc.stderr
    job = run(s, "jobs", "show", str(uuid.uuid4()))
    assert job.exit_code == 2 and "no job with that id" in job.stderr
    assert run(s, "jobs", "show", f"medintake-extract-{'0' * 32}-a1").exit_code == 2
    empty = Settings.load(data_dir=tmp_path / "never-used")
    assert run(empty, "jobs", "show", "abc").exit_code == 2
    assert run(empty, "documents", "show", "abc").exit_code == 2
    listed = run(empty, "documents", "list", "--json")
    assert listed.exit_code == 0 and json.loads(listed.stdout) == []
    assert not (tmp_path / "never-used" / "medintake.db").exists()


def test_tail_file_reads_backwards_across_blocks(tmp_path):
    path = tmp_path / "big.log"
    path.write_text("".join(f"line {i} " + "x" * 300 + "\n" for i in range(1000)))
    tail = job_logs.tail_file(path, 40)
    assert len(tail) == 40 and tail[0].startswith("line 960 ") and tail[-1].startswith("line 999 ")
    assert job_logs.tail_file(path, 0) == []
    (tmp_path / "short.log").write_text("a\nb")
    assert job_logs.tail_file(tmp_path / "short.log", 40) == ["a", "b"]


# ---- filters on every database, with inserted rows ----------------------------------------------

def _insert(s, doc_id: str, status: str, key: str, updated: datetime, reason: str | None = None,
            attempt: int = 1) -> None:
    s.add(Document(id=doc_id, bucket="uploads", object_key=key, status=status, attempt=attempt,
                   reason_code=reason, created_at=updated - timedelta(minutes=5), updated_at=updated))
    s.flush()
    s.add(Job(id=str(uuid.uuid4()), document_id=doc_id, attempt=attempt, kind="extract",
              name=f"medintake-extract-{doc_id}-a{attempt}", status="SUCCEEDED", tries=1, depends_on=[],
              created_at=updated - timedelta(seconds=30)))


def test_list_filters_on_each_database(db_settings):
    now = datetime.now(timezone.utc).replace(microsecond=0)
    rows = [  # id, status, key, updated (minutes ago), reason
        ("a" * 32, "COMPLETED", "uploads/u1/Jane Doe a.pdf", 5, None),
        ("b" * 32, "FAILED", "uploads/u1/Jane Doe b.pdf", 30, "job_failed"),
        ("c" * 32, "FAILED", "uploads/u2/c.pdf", 90, "job_timeout"),
        ("d" * 32, "REJECTED", "uploads/u_x/d.pdf", 200, "corrupt_file"),
        ("e" * 32, "PROCESSING", "uploads/uAx/e.pdf", 3000, None),
        ("f" * 32, "QUEUED", "uploads/u2/f.pdf", 1, None),
    ]
    with transaction(db_settings) as s:
        for doc_id, status, key, ago, reason in rows:
            _insert(s, doc_id, status, key, now - timedelta(minutes=ago), reason)

    def ids(**kw) -> list[str]:
        return [r.document_id for r in history.list_documents(db_settings, history.DocumentFilters(**kw)).rows]

    assert ids() == ["f" * 32, "a" * 32, "b" * 32, "c" * 32, "d" * 32, "e" * 32]  # most recent change first
    assert ids(statuses=("failed", "rejected")) == ["b" * 32, "c" * 32, "d" * 32]
    assert ids(reasons=("job_timeout", "corrupt_file")) == ["c" * 32, "d" * 32]
    assert ids(statuses=("failed",), reasons=("job_timeout",)) == ["c" * 32]
    assert ids(since=now - timedelta(hours=1)) == ["f" * 32, "a" * 32, "b" * 32]
    assert ids(since=now - timedelta(hours=4), until=now - timedelta(hours=1)) == ["c" * 32, "d" * 32]
    assert ids(prefix="uploads/u1/") == ["a" * 32, "b" * 32]
    assert ids(prefix="uploads/u_x/") == ["d" * 32]  # _ is a character, not LIKE's wildcard
    assert ids(limit=2) == ["f" * 32, "a" * 32]
    page = history.list_documents(db_settings, history.DocumentFilters(limit=2))
    assert page.total == 6
    by_id = {r.document_id: r for r in history.list_documents(db_settings, history.DocumentFilters()).rows}
    assert by_id["a" * 32].duration_seconds == pytest.approx(30, abs=1)  # first job -> final
    assert by_id["e" * 32].duration_seconds is None  # in flight
    assert by_id["a" * 32].object_key is None
    phi = history.list_documents(db_settings, history.DocumentFilters(prefix="uploads/u1/"), show_phi=True)
    assert {r.object_key for r in phi.rows} == {"uploads/u1/Jane Doe a.pdf", "uploads/u1/Jane Doe b.pdf"}

    listed = run(db_settings, "documents", "list", "--status", "failed", "--since", "2h", "--json")
    assert listed.exit_code == 0, listed.output
    assert [d["document_id"] for d in json.loads(listed.stdout)] == ["b" * 32, "c" * 32]
    plain = run(db_settings, "documents", "list", "--prefix", "uploads/u1/")
    assert NAME not in plain.output and "uploads/u1" not in plain.output
    assert len(plain.stdout.splitlines()) == 3


def test_job_changes_and_tries_on_each_database(db_settings):
    now = datetime.now(timezone.utc).replace(microsecond=0)
    with transaction(db_settings) as s:
        _insert(s, "9" * 32, "FAILED", "uploads/x/y.pdf", now, "job_failed")
        s.add(Job(id="job-1", document_id="9" * 32, attempt=1, kind="convert", name="medintake-convert-x-a1",
                  status="FAILED", tries=2, exit_code=137, status_reason="Essential container in task exited",
                  depends_on=[], started_at=now - timedelta(seconds=50), stopped_at=now))
        for i, (status, tries, code) in enumerate([("SUBMITTED", 0, None), ("RUNNABLE", 0, None),
                                                   ("RUNNING", 0, None), ("RUNNABLE", 1, 1),
                                                   ("RUNNING", 1, None), ("FAILED", 2, 137)]):
            s.add(JobEvent(event_id=str(uuid.uuid4()), job_id="job-1", document_id="9" * 32, status=status,
                           tries=tries, exit_code=code, received_at=now - timedelta(seconds=60 - 10 * i)))
    job = history.show_job(db_settings, "job-1")
    assert [c.status for c in job.changes] == ["SUBMITTED", "RUNNABLE", "RUNNING", "RUNNABLE", "RUNNING", "FAILED"]
    assert [(t.number, t.exit_code, t.outcome, t.duration_seconds) for t in job.tries_detail] == [
        (1, 1, "RUNNABLE", 10.0), (2, 137, "FAILED", 10.0)]
    assert job.duration_seconds == 50.0
    with pytest.raises(history.JobNotFound):
        history.show_job(db_settings, "job-2")


# ---- AWS Batch + CloudWatch Logs (moto in-process) -----------------------------------------------

@pytest.fixture
def moto_job(tmp_path):
    with mock_aws(config={"batch": {"use_docker": False}}):
        batch = batch_queue(REGION, "medintake-dev", "medintake-dev-spot")
        batch.register_job_definition(jobDefinitionName="medintake-dev-extract-0123abcd", type="container",
                                      containerProperties={"image": "w:1", "command": ["true"],
                                                           "vcpus": 1, "memory": 1024})
        doc_id = "7" * 32
        job_id = batch.submit_job(jobName=f"medintake-extract-{doc_id}-a1", jobQueue="medintake-dev",
                                  jobDefinition="medintake-dev-extract-0123abcd")["jobId"]
        deadline = time.monotonic() + 30
        while True:
            described = batch.describe_jobs(jobs=[job_id])["jobs"][0]
            if described["status"] in ("SUCCEEDED", "FAILED") or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        stream = described["attempts"][-1]["container"]["logStreamName"]
        logs = boto3.client("logs", region_name=REGION)
        logs.create_log_group(logGroupName="/aws/batch/medintake-dev")
        logs.create_log_stream(logGroupName="/aws/batch/medintake-dev", logStreamName=stream)
        start = int(time.time() * 1000) - 60_000
        logs.put_log_events(logGroupName="/aws/batch/medintake-dev", logStreamName=stream,
                            logEvents=[{"timestamp": start + i, "message": json.dumps({"n": i, "job_id": job_id})}
                                       for i in range(60)])
        settings = Settings.load(data_dir=tmp_path / "data", compute_backend="batch", aws_region=REGION,
                                 job_queue="medintake-dev", job_definition_prefix="medintake-dev")
        database.upgrade(settings)
        with transaction(settings) as s:
            _insert(s, doc_id, "COMPLETED", "uploads/u/Jane Doe.pdf", datetime.now(timezone.utc))
            s.add(Job(id=job_id, document_id=doc_id, attempt=1, kind="extract",
                      name=f"medintake-extract-{doc_id}-a1", status="SUCCEEDED", tries=1, exit_code=0,
                      depends_on=[]))
        env = {"MEDINTAKE_COMPUTE_BACKEND": "batch", "MEDINTAKE_AWS_REGION": REGION,
               "MEDINTAKE_JOB_DEFINITION_PREFIX": "medintake-dev", "MEDINTAKE_JOB_QUEUE": "medintake-dev"}
        yield {"settings": settings, "job_id": job_id, "stream": stream, "env": env, "logs": logs}


def test_jobs_show_tails_the_cloudwatch_stream_batch_names(moto_job):
    s, job_id = moto_job["settings"], moto_job["job_id"]
    result = run(s, "jobs", "show", job_id, "--lines", "5", env=moto_job["env"])
    assert result.exit_code == 0, result.output
    assert f"/aws/batch/medintake-dev {moto_job['stream']}" in result.stdout
    tail = result.stdout.split(moto_job["stream"] + "\n", 1)[1].strip().splitlines()
    assert [json.loads(line)["n"] for line in tail] == [55, 56, 57, 58, 59]
    data = json.loads(run(s, "jobs", "show", job_id, "--json", env=moto_job["env"]).stdout)
    assert data["log"]["source"] == "cloudwatch" and data["log"]["attempts"] == {"1": moto_job["stream"]}
    assert [json.loads(line)["n"] for line in data["log"]["lines"]] == list(range(20, 60))  # default 40


def test_cloudwatch_group_setting_and_missing_stream(moto_job):
    s, job_id = moto_job["settings"], moto_job["job_id"]
    # A group that does not exist: AWS answers ResourceNotFoundException (see the Stubber test below);
    # moto answers with no events. Either way nothing is printed but a note, and the exit is 0.
    other = run(s, "jobs", "show", job_id, env={**moto_job["env"], "MEDINTAKE_BATCH_LOG_GROUP": "/other/group"})
    assert other.exit_code == 0, other.output
    assert f"/other/group {moto_job['stream']}" in other.stdout
    assert other.stdout.rstrip().endswith("(no lines)") or "(the log stream does not exist" in other.stdout
    moto_job["logs"].create_log_group(logGroupName="/other/group")
    moto_job["logs"].create_log_stream(logGroupName="/other/group", logStreamName=moto_job["stream"])
    moto_job["logs"].put_log_events(logGroupName="/other/group", logStreamName=moto_job["stream"],
                                    logEvents=[{"timestamp": int(time.time() * 1000), "message": "only line"}])
    tail = job_logs.job_log_tail(s.replace(batch_log_group="/other/group"), job_id, lines=40)
    assert tail.lines == ["only line"] and tail.location == f"/other/group {moto_job['stream']}"


def test_a_job_batch_has_forgotten_says_so(moto_job):
    s = moto_job["settings"]
    gone = str(uuid.uuid4())
    with transaction(s) as session:
        session.add(Job(id=gone, document_id="7" * 32, attempt=1, kind="convert",
                        name=f"medintake-convert-{'7' * 32}-a1", status="SUCCEEDED", tries=1, depends_on=[]))
    result = run(s, "jobs", "show", gone, env=moto_job["env"])
    assert result.exit_code == 0, result.output
    assert "AWS Batch no longer describes this job" in result.stdout and "/aws/batch/medintake-dev" in result.stdout


@pytest.mark.parametrize("code, http, outcome", [
    ("ResourceNotFoundException", 400, None),
    ("AccessDeniedException", 400, 78),
    ("ThrottlingException", 400, 75),
    ("ServiceUnavailableException", 503, 75),
])
def test_cloudwatch_errors(code, http, outcome):
    """What GetLogEvents answers on AWS (moto never refuses): a gone stream is a note, the rest our errors."""
    from botocore.stub import Stubber

    from pipeline.errors import MedintakeError

    client = boto3.client("logs", region_name=REGION)
    with Stubber(client) as stub:
        stub.add_client_error("get_log_events", service_error_code=code, http_status_code=http,
                              expected_params={"logGroupName": "/g", "logStreamName": "s", "startFromHead": False,
                                               "limit": 40})
        if outcome is None:
            assert job_logs.tail_cloudwatch("/g", "s", 40, client) is None
        else:
            with pytest.raises(MedintakeError) as info:
                job_logs.tail_cloudwatch("/g", "s", 40, client)
            assert int(info.value.exit_code) == outcome


def test_a_log_that_cannot_be_read_still_shows_the_job_and_exits_with_its_code(moto_job, monkeypatch):
    from pipeline.errors import TransientError

    def down(*args, **kwargs):
        raise TransientError("CloudWatch Logs GetLogEvents failed (ServiceUnavailableException)")

    monkeypatch.setattr(job_logs, "tail_cloudwatch", down)
    result = run(moto_job["settings"], "jobs", "show", moto_job["job_id"], env=moto_job["env"])
    assert result.exit_code == 75
    assert f"job\t{moto_job['job_id']}" in result.stdout and "the log could not be read" in result.stderr


def run_in_terminal(settings: Settings, *args: str) -> str:
    """The command in a pseudo-terminal, as an operator sees it (stdout is a TTY: styled tables)."""
    import os
    import pty
    import subprocess
    import sys

    from conftest import REPO

    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, str(REPO / "cli.py"), "--data-dir", str(settings.data_dir), *args],
                            stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, cwd=REPO)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the terminal's other side closed
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=60) == 0
    return b"".join(chunks).decode()


def test_on_a_terminal_the_tables_are_aligned_and_styled_without_phi(local):
    import re

    screen = run_in_terminal(local["settings"], "documents", "list")
    assert "\x1b[1m" in screen  # bold headers: styled, not tab-separated
    plain = re.sub(r"\x1b\[[0-9;]*m", "", screen).replace("\r", "")
    lines = [line for line in plain.splitlines() if line.strip()]
    assert "\t" not in plain and len(lines) == 4
    column = lines[0].index("status")
    assert all(line[column:].split()[0] in ("status", "COMPLETED", "FAILED", "REJECTED") for line in lines)
    assert_no_phi(plain, local)
    job = job_of(local["settings"], local["rejected"], "extract")
    shown = re.sub(r"\x1b\[[0-9;]*m", "", run_in_terminal(local["settings"], "jobs", "show", job.id)).replace("\r", "")
    assert re.search(r"^exit code\s+65$", shown, re.M) and "exit=65" in shown
    assert_no_phi(shown, local)


# ---- the array shape: one `process` row per try of a document -----------------------------------

@pytest.fixture(scope="module")
def processed_array(tmp_path_factory):
    from compute.runtime import LocalRuntime

    root = tmp_path_factory.mktemp("views-array")
    inbox = root / "inbox"
    inbox.mkdir()
    names = {"completed": ("digital_referral.pdf", "Jane Doe referral.pdf"),
             "rejected": ("corrupt.pdf", "Jane Doe corrupt.pdf"),
             "labs": ("screenshot_labs.png", "Jane Doe labs.png"),
             "failed": ("screenshot_labs.png", "Jane Doe gone.png")}
    for source, name in names.values():
        shutil.copy(FILES / source, inbox / name)
    settings = Settings.load(data_dir=root / "data", workers=2, job_shape="array", array_child_documents=2,
                             document_retries=1)
    with LocalRuntime(settings) as runtime:
        refs = {k: runtime.upload(inbox / name) for k, (_, name) in names.items()}
        runtime.store.delete_prefix(refs["failed"].key)  # every try of this one fails
        runtime.dispatcher.handle_event({"Records": [r for ref in refs.values()
                                                     for r in s3_notification(ref)["Records"]]})
        ids = {k: ref.document_id for k, ref in refs.items()}
        runtime.run_until_final(list(ids.values()), max_seconds=300)
    docs = repository.find_documents(settings, list(ids.values()))
    assert {k: docs[i].status for k, i in ids.items()} == {
        "completed": "COMPLETED", "rejected": "REJECTED", "labs": "COMPLETED", "failed": "FAILED"}
    text = runtime.store.get_bytes(f"results/{ids['completed']}/text.txt").decode()
    database.dispose_engines()
    return {"settings": settings, **ids, "keys": {d.id: d.object_key for d in docs.values()}, "text": text}


@pytest.fixture
def array_local(processed_array, tmp_path):
    target = tmp_path / "data"
    shutil.copytree(processed_array["settings"].data_dir, target, ignore=shutil.ignore_patterns(".lock"))
    return {**processed_array, "settings": Settings.load(data_dir=target, workers=2, job_shape="array")}


def rows_of(settings, doc_id: str) -> list[Job]:
    return repository.jobs_for(settings, doc_id, 1)


def test_array_documents_show_array_job_child_try_and_stage_timings(array_local):
    s = array_local["settings"]
    doc_id = array_local["completed"]
    (row,) = rows_of(s, doc_id)
    parent, index = row.id.split("#")[0].split(":")
    result = run(s, "documents", "show", doc_id)
    assert result.exit_code == 0, result.output
    out = result.stdout
    header, line = out.split("# attempt 1 (current)\n", 1)[1].splitlines()[:2]
    assert header.split("\t")[-4:] == ["try", "batch job", "index", "position"]
    assert line.split("\t")[:4] == ["process", row.id, "SUCCEEDED", "1"]  # ran in the child's 1st attempt
    assert line.split("\t")[-4:] == ["1", parent, index, row.id.split("#")[1]]
    assert "extract\ttext_layer\t" in out and "convert\tconvert\t" in out and "extract\tjob\t" in out
    assert f"text\tresults/{doc_id}/text.txt" in out and f"manifest\tresults/{doc_id}/manifest.json" in out
    assert "pages\t2" in out and "renditions\t3" in out
    assert_no_phi(result.output, array_local)

    data = json.loads(run(s, "documents", "show", doc_id, "--json").stdout)
    (job,) = data["attempts"][0]["jobs"]
    assert (job["kind"], job["batch_job_id"], job["array_index"], job["document_try"]) == (
        "process", parent, int(index), 1)
    assert set(data["timings"]) == {"process", "extract", "entities", "convert"}
    for stage in ("extract", "entities", "convert"):  # the child's own per-stage wall seconds
        assert 0 < data["timings"][stage]["seconds"] <= data["timings"]["process"]["seconds"] + 0.5
    assert data["timings"]["extract"]["stages"]["total"] >= 0
    assert {"text", "manifest", "renditions/thumbnail"} <= set(data["outputs"])
    # The manifest's timings are each stage's own seconds too, not the whole document's three times.
    manifest = json.loads((s.data_dir / "buckets" / "uploads" / data["outputs"]["manifest"]).read_text())
    assert {k: round(v["seconds"], 3) for k, v in manifest["timings"].items()} == {
        k: data["timings"][k]["seconds"] for k in ("extract", "entities", "convert")}


def test_array_documents_show_each_try_where_it_ran(array_local):
    s = array_local["settings"]
    first, second = rows_of(s, array_local["failed"])
    data = json.loads(run(s, "documents", "show", array_local["failed"], "--json").stdout)
    jobs = data["attempts"][0]["jobs"]
    assert [(j["job_id"], j["document_try"], j["status"]) for j in jobs] == [
        (first.id, 1, "FAILED"), (second.id, 2, "FAILED")]
    assert jobs[0]["array_index"] is not None and jobs[0]["batch_job_id"] == first.id.split(":")[0]
    assert jobs[1]["array_index"] is None and jobs[1]["batch_job_id"] == second.id.split("#")[0]  # alone
    assert jobs[0]["reason_code"] == "resubmitted" and data["reason_code"] == "job_failed"
    rejected = json.loads(run(s, "documents", "show", array_local["rejected"], "--json").stdout)
    (job,) = rejected["attempts"][0]["jobs"]
    assert job["exit_code"] == 65 and job["reason_code"] == "corrupt_file"
    assert list(rejected["outputs"]) == ["manifest"]


def test_array_jobs_show_a_document_row_with_its_part_of_the_child_log(array_local):
    s = array_local["settings"]
    (row,) = rows_of(s, array_local["rejected"])
    child = row.id.split("#")[0]
    mates = [r for k in ("completed", "labs", "failed") for r in rows_of(s, array_local[k])
             if r.id.split("#")[0] == child]
    assert mates, "the rejected document shared its child with another"
    result = run(s, "jobs", "show", row.id)
    assert result.exit_code == 0, result.output
    out = result.stdout
    parent, index = child.split(":")
    assert f"batch job\t{parent}" in out and f"array index\t{index}" in out and f"child\t{child}" in out
    assert "exit code\t65" in out and "reason\tcorrupt_file" in out
    changes = out.split("# state changes\n", 1)[1].split("\n\n", 1)[0].splitlines()[1:]
    assert [c.split("\t")[1] for c in changes][-1] == "SUCCEEDED"  # the child's: it ran its slice
    log = s.data_dir.resolve() / "logs" / f"process-{parent}-{index}-1.log"
    assert log.is_file()
    assert f"this document's part, last 40 lines: {log}" in out
    part = out.split(f"last 40 lines: {log}\n", 1)[1].strip().splitlines()
    assert f"medintake-row {row.id} begins" in part[0] and f"medintake-row {row.id} ends" in part[-1]
    assert any("rejected (corrupt_file)" in line for line in part)
    whole = log.read_text()
    for mate in mates:
        assert f"medintake-row {mate.id} begins" in whole and mate.id not in "\n".join(part)
    assert_no_phi(result.output, array_local)
    data = json.loads(run(s, "jobs", "show", row.id, "--json").stdout)
    assert data["unit"] == "document" and data["log"]["section"] == "document"
    assert data["tries_detail"][0]["outcome"] == "SUCCEEDED"
    assert list(data["stages"]) == ["extract"] and data["stages"]["extract"] > 0  # rejected inside extract
    done = json.loads(run(s, "jobs", "show", rows_of(s, array_local["completed"])[0].id, "--json").stdout)
    assert {"extract", "entities", "convert", "extract.total"} <= set(done["stages"])


def test_array_jobs_show_a_child_and_the_array_job_as_batch_means_them(array_local):
    s = array_local["settings"]
    (row,) = rows_of(s, array_local["completed"])
    child = row.id.split("#")[0]
    parent, index = child.split(":")
    shown = run(s, "jobs", "show", child)
    assert shown.exit_code == 0, shown.output
    data = json.loads(run(s, "jobs", "show", child, "--json").stdout)
    assert (data["unit"], data["batch_job_id"], data["array_index"], data["status"]) == (
        "child", parent, int(index), "SUCCEEDED")
    assert row.id in [d["job_id"] for d in data["documents"]]
    assert [c["status"] for c in data["changes"]][-1] == "SUCCEEDED" and data["tries_detail"]
    assert data["log"]["section"] is None and data["log"]["lines"]  # the child's whole log
    assert f"medintake-row {row.id} begins" in "\n".join(data["log"]["lines"])
    assert "# documents (" in shown.stdout and row.document_id in shown.stdout

    arr = json.loads(run(s, "jobs", "show", parent, "--json").stdout)
    assert arr["unit"] == "array" and arr["status"] == "SUCCEEDED" and arr["tries_detail"] == []
    assert [c["job_id"] for c in arr["children"]] == [f"{parent}:{i}" for i in range(len(arr["children"]))]
    assert sum(c["documents"] for c in arr["children"]) == 4 and len(arr["children"]) == 2
    assert "an array job runs nothing itself" in arr["log"]["note"]
    text = run(s, "jobs", "show", parent).stdout
    assert "# children (2)" in text and f"{parent}:0" in text
    # A document resubmitted alone ran in a plain job: its id and its name show that job.
    second = rows_of(s, array_local["failed"])[1]
    plain = json.loads(run(s, "jobs", "show", second.id.split("#")[0], "--json").stdout)
    assert plain["unit"] == "plain" and plain["document_id"] == array_local["failed"]
    by_name = json.loads(run(s, "jobs", "show", second.name, "--json").stdout)
    assert by_name["job_id"] == second.id.split("#")[0]
    assert run(s, "jobs", "show", f"{parent}:9").exit_code == 2
    # `queue status` counts what Batch counts: the two children and the plain retry, not 4 documents.
    status = json.loads(run(s, "queue", "status", "--json").stdout)
    assert status["queues"][0]["counts"]["SUCCEEDED"] == 3, status["queues"][0]["counts"]


def test_a_document_part_of_a_child_stream_on_cloudwatch(moto_job):
    """A row of the array shape on AWS: its unit's stream (DescribeJobs), its part cut out."""
    s, unit, stream = moto_job["settings"], moto_job["job_id"], moto_job["stream"]
    lines = []
    for pos in (0, 1):
        lines += [f"medintake-row {unit}#{pos} begins: document d{pos} attempt 1",
                  *[json.dumps({"doc": pos, "n": n}) for n in range(3)], f"medintake-row {unit}#{pos} ends"]
    start = int(time.time() * 1000)
    moto_job["logs"].put_log_events(logGroupName="/aws/batch/medintake-dev", logStreamName=stream,
                                    logEvents=[{"timestamp": start + i, "message": m} for i, m in enumerate(lines)])
    with transaction(s) as session:
        session.add(Job(id=f"{unit}#1", document_id="7" * 32, attempt=1, kind="process",
                        name=f"medintake-process-{'7' * 32}-a1-t1", status="SUCCEEDED", tries=1, depends_on=[]))
    data = json.loads(run(s, "jobs", "show", f"{unit}#1", "--json", env=moto_job["env"]).stdout)
    assert data["log"]["section"] == "document" and data["log"]["log_job_id"] == unit
    assert data["log"]["lines"] == lines[5:]
    assert job_logs.document_section(lines, f"{unit}#7") is None
    assert job_logs.document_section(lines[:7], f"{unit}#1") == lines[5:7]  # still running: to the end


def test_a_document_part_of_a_long_local_child_log(tmp_path):
    """A child's file larger than what is read: its end is read, the cut first line dropped."""
    path = tmp_path / "process-p-0-1.log"
    lines = [f"line {n} " + "x" * 50 for n in range(5000)]
    lines[4990] = "medintake-row p:0#3 begins: document d attempt 1"
    lines[4995] = "medintake-row p:0#3 ends"
    path.write_text("\n".join(lines) + "\n")
    end = job_logs.read_end(path, max_bytes=2000)
    assert end == lines[-len(end):] and 20 < len(end) < 40
    assert job_logs.document_section(end, "p:0#3") == lines[4990:4996]
    assert job_logs.read_end(path) == lines


def test_array_list_and_terminal_views(array_local):
    import re

    s = array_local["settings"]
    listed = json.loads(run(s, "documents", "list", "--json").stdout)
    assert sorted(d["status"] for d in listed) == ["COMPLETED", "COMPLETED", "FAILED", "REJECTED"]
    assert all(d["duration_seconds"] is not None and d["duration_seconds"] >= 0 for d in listed)
    (row,) = rows_of(s, array_local["completed"])
    screen = re.sub(r"\x1b\[[0-9;]*m", "", run_in_terminal(s, "documents", "show", array_local["completed"]))
    screen = screen.replace("\r", "")
    header = next(line for line in screen.splitlines() if line.startswith("kind ") and "batch job" in line)
    line = next(line for line in screen.splitlines() if line.startswith("process ") and row.id in line)
    assert line.index(row.id.split(":")[0], len("process ") + len(row.id)) == header.index("batch job")
    assert_no_phi(screen, array_local)
    shown = re.sub(r"\x1b\[[0-9;]*m", "", run_in_terminal(s, "jobs", "show", row.id)).replace("\r", "")
    assert re.search(rf"^array index\s+{row.id.split('#')[0].split(':')[1]}$", shown, re.M)
    assert "this document's part" in shown and f"medintake-row {row.id} begins" in shown
    assert_no_phi(shown, array_local)
