"""The Batch backend's deploy-time contract: submissions under the rate, definitions named by the
whole request, half-submitted graphs never left running twice, credentials from Secrets Manager,
and the Lambda zip holding the light half of the tree only."""
from __future__ import annotations

import io
import json
import zipfile

import boto3
import pytest
from moto import mock_aws

from compute.batch import BatchComputeEnvironment, worker_environment
from compute.ratelimit import TokenBucket
from conftest import FakeClock, FILES, REPO
from pipeline import database, repository
from pipeline.jobdefs import load_job_definitions
from pipeline.settings import Settings

REGION = "eu-west-1"


def test_token_bucket_keeps_1000_calls_under_the_rate_with_a_fake_clock():
    clock = FakeClock()
    bucket = TokenBucket(rate=9.0, burst=9.0, clock=clock, sleep=clock.sleep)
    times = []
    for _ in range(1000):
        bucket.acquire()
        times.append(clock.now)
    # In any one-second window no more than rate + burst calls; overall no faster than the rate.
    j = 0
    for i, t in enumerate(times):
        while times[j] <= t - 1.0:
            j += 1
        assert i - j + 1 <= 18
    assert times[-1] - times[0] >= (1000 - 9) / 9.0 - 1e-6
    assert TokenBucket(rate=50.0, clock=FakeClock(), sleep=lambda s: None).capacity == 50.0


@pytest.fixture
def batch_settings(tmp_path, monkeypatch):
    with mock_aws(config={"batch": {"use_docker": False}}):
        iam = boto3.client("iam", region_name=REGION)
        role = iam.create_role(RoleName="batch", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        batch = boto3.client("batch", region_name=REGION)
        ce = batch.create_compute_environment(computeEnvironmentName="medintake-ce", type="UNMANAGED", state="ENABLED",
                                              serviceRole=role)["computeEnvironmentArn"]
        batch.create_job_queue(jobQueueName="medintake-q", state="ENABLED", priority=1,
                               computeEnvironmentOrder=[{"order": 1, "computeEnvironment": ce}])
        yield Settings.load(data_dir=tmp_path / "data", compute_backend="batch", job_queue="medintake-q", aws_region=REGION,
                            job_definition_prefix="medintake-dev", worker_image="acct/img:1",
                            batch_job_role_arn=role, store_backend="s3", bucket="b")


def test_definition_names_follow_the_whole_request(batch_settings):
    defs = load_job_definitions(batch_settings.job_definitions_dir)
    env = BatchComputeEnvironment(batch_settings)
    name = env.definition_name(defs["extract"])
    assert name.startswith("medintake-dev-extract-")
    assert BatchComputeEnvironment(batch_settings).definition_name(defs["extract"]) == name  # stable
    for change in ({"worker_image": "acct/img:2"}, {"bucket": "other"}, {"ocr_languages": "eng+deu"}):
        assert BatchComputeEnvironment(batch_settings.replace(**change)).definition_name(defs["extract"]) != name
    # Settings that are the dispatcher's own business do not change the workers' definitions.
    assert BatchComputeEnvironment(batch_settings.replace(submit_rate=3.0, workers=7)).definition_name(
        defs["extract"]) == name
    request = env.registration_request(defs["extract"])
    variables = {e["name"]: e["value"] for e in request["containerProperties"]["environment"]}
    assert variables["MEDINTAKE_BUCKET"] == "other" or variables["MEDINTAKE_BUCKET"] == "b"
    assert "MEDINTAKE_DATA_DIR" not in variables and "MEDINTAKE_COMPUTE_BACKEND" not in variables
    assert request["containerProperties"]["jobRoleArn"] == batch_settings.batch_job_role_arn
    assert request["containerProperties"]["logConfiguration"]["options"]["awslogs-group"] == "/aws/batch/medintake-dev"
    assert set(worker_environment(Settings())) == set()  # defaults: nothing to pass


def test_registration_happens_once_and_submission_goes_by_name(batch_settings):
    defs = load_job_definitions(batch_settings.job_definitions_dir)
    env = BatchComputeEnvironment(batch_settings)
    arns = {k: env.ensure_job_definition(d) for k, d in defs.items()}
    again = BatchComputeEnvironment(batch_settings)
    assert {k: again.ensure_job_definition(d) for k, d in defs.items()} == arns
    client = boto3.client("batch", region_name=REGION)
    assert len(client.describe_job_definitions(status="ACTIVE")["jobDefinitions"]) == len(defs)


def test_submissions_pass_the_token_bucket(batch_settings):
    from pipeline.compute_api import JobSubmission

    defs = load_job_definitions(batch_settings.job_definitions_dir)
    clock = FakeClock()
    env = BatchComputeEnvironment(batch_settings, limiter=TokenBucket(5.0, 5.0, clock, clock.sleep))
    env.ensure_job_definition(defs["convert"])
    for i in range(20):
        env.submit(JobSubmission(name=f"medintake-convert-d{i}-a1", kind="convert", definition=defs["convert"],
                                 parameters={"document_id": f"d{i}", "attempt": "1"}))
    assert clock.now - 1000.0 == pytest.approx((20 - 5) / 5.0)


def test_database_credentials_come_from_the_secret(tmp_path):
    with mock_aws():
        sm = boto3.client("secretsmanager", region_name=REGION)
        sm.create_secret(Name="medintake/dev/database", SecretString=json.dumps(
            {"username": "app", "password": "p@ss/word", "host": "db.internal", "port": 3307, "dbname": "med"}))
        s = Settings.load(data_dir=tmp_path, aws_region=REGION, database_secret="medintake/dev/database",
                          database_url="mysql://rds.example:3306/medintake")
        from sqlalchemy.engine import make_url

        u = make_url(database.database_url(s))
        assert (u.username, u.password, u.host, u.port, u.database) == ("app", "p@ss/word", "db.internal", 3307, "med")
        from pipeline.errors import ConfigError

        database.dispose_engines()
        with pytest.raises(ConfigError, match="cannot be read"):
            database.database_url(s.replace(database_secret="medintake/none"))


class FlakyCompute:
    """The local compute environment, with SubmitJob failing for one kind and, optionally,
    TerminateJob failing: what an AWS outage half-way through a graph looks like."""

    def __init__(self, inner, fail_kind: str, cancel_fails: bool) -> None:
        self.inner, self.fail_kind, self.cancel_fails = inner, fail_kind, cancel_fails
        self.submitted: list[str] = []
        self.cancelled: list[str] = []

    def submit(self, sub):
        if sub.kind == self.fail_kind:
            from pipeline.errors import TransientError

            raise TransientError("AWS Batch error (503)")
        self.submitted.append(sub.name)
        return self.inner.submit(sub)

    def cancel(self, job_id, reason):
        if self.cancel_fails:
            from pipeline.errors import TransientError

            raise TransientError("AWS Batch error (503)")
        self.cancelled.append(job_id)
        self.inner.cancel(job_id, reason)


@pytest.mark.parametrize("cancel_fails", [False, True], ids=["terminated", "reused-by-name"])
def test_half_submitted_graph_never_runs_twice(settings, cancel_fails):
    from compute.runtime import LocalRuntime

    with LocalRuntime(settings) as runtime:
        flaky = FlakyCompute(runtime.compute, "convert", cancel_fails)
        runtime.dispatcher.compute = flaky
        ref = runtime.upload(FILES / "digital_referral.pdf")
        from pipeline.events import sqs_envelope, s3_notification

        event = sqs_envelope(s3_notification(ref), message_id="m-1")
        assert runtime.dispatcher.handle_event(event)["batchItemFailures"] == [{"itemIdentifier": "m-1"}]
        doc = repository.get_document(settings, ref.document_id)
        assert doc.status == "RECEIVED"
        left = repository.jobs_for(settings, ref.document_id, 1)
        if cancel_fails:  # kept, to be reused by its name
            assert [j.kind for j in left] == ["extract"]
        else:  # terminated and retired to attempt 0
            assert left == [] and len(flaky.cancelled) == 1
            assert runtime.compute.jobs[flaky.cancelled[0]].status == "FAILED"
        flaky.fail_kind = None  # the outage is over; SQS redelivers the message
        assert runtime.dispatcher.handle_event(event)["batchItemFailures"] == []
        runtime.run_until_final([ref.document_id], max_seconds=300)
        names = flaky.submitted
        assert names.count(f"medintake-extract-{ref.document_id}-a1") == (1 if cancel_fails else 2)
        live = repository.jobs_for(settings, ref.document_id, 1)
        assert sorted(j.kind for j in live) == ["convert", "entities", "extract"]
        assert repository.get_document(settings, ref.document_id).status == "COMPLETED"
        ran = [j for j in runtime.compute.jobs.values() if j.sub.kind == "extract" and j.status == "SUCCEEDED"]
        assert len(ran) == 1  # extract ran once, whichever way the first failure was cleaned up


def test_the_lambda_zip_holds_the_light_half_only_and_is_reproducible():
    from compute.lambda_package import build_zip

    first, second = build_zip(), build_zip()
    assert first == second
    names = set(zipfile.ZipFile(io.BytesIO(first)).namelist())
    for needed in ("pipeline/aws_lambda.py", "pipeline/upload_api.py", "pipeline/dispatcher.py", "compute/batch.py",
                   "compute/ratelimit.py", "job_definitions/extract.json", "job_definitions/migrate.json"):
        assert needed in names, needed
    assert not any(n.startswith(("jobs/", "tests/", "cli.py", "compute/cloudformation/")) for n in names)
    assert not any("__pycache__" in n for n in names)
    assert (REPO / "compute" / "lambda_package.py").is_file()


def test_the_lambda_libraries_are_installed_for_lambdas_platform(tmp_path):
    """Real pip, from the package index: wheels for CPython 3.13 on manylinux x86_64 (the
    functions' runtime), cached so that a second deploy installs nothing."""
    from compute.lambda_package import build_zip, install_dependencies

    deps = install_dependencies(tmp_path)
    assert install_dependencies(tmp_path) == deps  # cached
    names = zipfile.ZipFile(io.BytesIO(build_zip(deps))).namelist()
    for package in ("sqlalchemy/__init__.py", "pymysql/__init__.py", "aws_lambda_powertools/__init__.py"):
        assert package in names, package
    native = [n for n in names if n.endswith(".so")]
    assert native and all("cpython-313-x86_64-linux-gnu" in n or "abi3" in n for n in native), native[:3]


def test_queue_metrics_report_runnable_jobs_and_the_oldest_age(monkeypatch, capsys):
    """moto cannot hold a job in RUNNABLE (without Docker it finishes every job at once), so the
    ListJobs pages are what botocore's Stubber answers: two pages, 101 RUNNABLE jobs."""
    import time

    from botocore.stub import Stubber

    from compute import batch as batch_module
    from pipeline import aws_lambda

    client = boto3.client("batch", region_name=REGION)
    now = int(time.time() * 1000)
    first = [{"jobId": f"j{i}", "jobName": f"medintake-extract-d{i}-a1", "createdAt": now - 60_000} for i in range(100)]
    second = [{"jobId": "old", "jobName": "medintake-extract-old-a1", "createdAt": now - 3_600_000}]
    with Stubber(client) as stub:
        stub.add_response("list_jobs", {"jobSummaryList": first, "nextToken": "t"},
                          {"jobQueue": "medintake-q", "jobStatus": "RUNNABLE"})
        stub.add_response("list_jobs", {"jobSummaryList": second},
                          {"jobQueue": "medintake-q", "jobStatus": "RUNNABLE", "nextToken": "t"})
        monkeypatch.setattr(batch_module, "batch_client", lambda settings, endpoint_url=None: client)
        monkeypatch.setenv("MEDINTAKE_JOB_QUEUE", "medintake-q")
        result = aws_lambda.queue_metrics_handler({"source": "aws.events"})
    assert result["runnable"] == 101 and 3590 <= result["oldest_runnable_seconds"] <= 3700
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    assert emf and emf[-1]["JobsRunnable"] == [101.0] and emf[-1]["OldestRunnableSeconds"][0] >= 3590
