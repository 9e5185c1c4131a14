"""Credentials from the Secrets Manager secret, after a rotation: a long-lived process (a Lambda
container, a worker) that read the secret before the password changed reads it again, once, when
the server refuses its login. Real MariaDB (a private server: the test changes a user's password)
and Secrets Manager through moto."""
from __future__ import annotations

import json
import uuid

import boto3
import pytest
from moto import mock_aws
from sqlalchemy import create_engine, text

from drills.servers import serving
from pipeline import database
from pipeline.database import transaction
from pipeline.errors import TransientError
from pipeline.settings import Settings

REGION = "eu-west-1"
SECRET = "medintake/test/database"


@pytest.fixture(scope="module")
def server():
    with serving("mariadb") as srv:
        admin = create_engine(srv.url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text("CREATE USER 'app'@'%' IDENTIFIED BY 'first-pass'"))
            conn.execute(text("GRANT ALL ON drill.* TO 'app'@'%'"))
        srv.admin = admin
        yield srv
        admin.dispose()


def _set_password(server, password: str) -> None:
    with server.admin.connect() as conn:
        conn.execute(text(f"ALTER USER 'app'@'%' IDENTIFIED BY '{password}'"))


def _secret(sm, password: str) -> None:
    sm.put_secret_value(SecretId=SECRET, SecretString=json.dumps({"username": "app", "password": password}))


def test_a_rotated_password_is_read_again_from_the_secret(server, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    _set_password(server, "first-pass")
    with mock_aws():
        sm = boto3.client("secretsmanager", region_name=REGION)
        sm.create_secret(Name=SECRET, SecretString=json.dumps({"username": "app", "password": "first-pass"}))
        settings = Settings.load(data_dir=tmp_path, aws_region=REGION, database_secret=SECRET,
                                 database_url=f"mysql://127.0.0.1:{server.port}/drill", database_retry_seconds=0)
        database.dispose_engines()
        with transaction(settings) as s:
            assert s.execute(text("SELECT CURRENT_USER()")).scalar().startswith("app@")
        # The rotation: the server's password and the secret change; this process's pool is
        # recycled (or its connections dropped), so the next transaction logs in again.
        _set_password(server, "second-pass")
        _secret(sm, "second-pass")
        database.get_engine(settings).dispose()
        with transaction(settings) as s:
            assert s.execute(text("SELECT 1")).scalar() == 1
        # A secret that is simply wrong is read again once, then the error stands (no loop).
        _secret(sm, "not-the-password")
        database.dispose_engines()
        with pytest.raises(TransientError):
            with transaction(settings):
                pass
    database.dispose_engines()


class StartedRotation:
    """moto's Secrets Manager, as the service leaves a secret when it starts a rotation.

    AWS's RotateSecret labels a new version (the token) AWSPENDING before it calls the function's
    first step, with no value yet; moto cannot hold a label without a value (its RotateSecret,
    with no function to call, completes the rotation at once). So describe_secret's answer gets
    that label until createSecret has stored the pending value; every other call is moto's.
    """

    def __init__(self, sm, token: str) -> None:
        self.sm, self.token = sm, token
        self.exceptions = sm.exceptions

    def __getattr__(self, name):  # noqa: ANN001, ANN204
        return getattr(self.sm, name)

    def describe_secret(self, **kwargs):  # noqa: ANN003, ANN201
        meta = self.sm.describe_secret(**kwargs)
        meta["VersionIdsToStages"].setdefault(self.token, ["AWSPENDING"])
        return meta


def test_the_rotation_lambda_changes_the_password_in_four_steps_and_clients_follow(server, tmp_path, monkeypatch,
                                                                                 caplog):
    """pipeline/rotation.py as Secrets Manager drives it (moto's RotateSecret makes the pending
    version; the steps are called as the service calls them, each twice: they must be idempotent),
    against the real server; then a client holding the old secret keeps working."""
    from pipeline import rotation

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    _set_password(server, "first-pass")
    caplog.set_level("DEBUG", logger="medintake")
    with mock_aws():
        sm = boto3.client("secretsmanager", region_name=REGION)
        arn = sm.create_secret(Name=SECRET, SecretString=json.dumps({
            "username": "app", "password": "first-pass", "host": "127.0.0.1", "port": server.port,
            "dbname": "drill"}))["ARN"]
        settings = Settings.load(data_dir=tmp_path, aws_region=REGION, database_secret=SECRET,
                                 database_url=f"mysql://127.0.0.1:{server.port}/drill", database_retry_seconds=0)
        database.dispose_engines()
        with transaction(settings) as s:  # a long-lived client reads the secret before the rotation
            s.execute(text("SELECT 1"))

        sm.rotate_secret(SecretId=arn, RotationRules={"AutomaticallyAfterDays": 30}, RotateImmediately=False)
        token = str(uuid.uuid4())  # what the service passes to each step as ClientRequestToken
        service = StartedRotation(sm, token)
        for step in ("createSecret", "setSecret", "testSecret", "finishSecret"):
            for _ in range(2):
                rotation.handler({"SecretId": arn, "ClientRequestToken": token, "Step": step}, client=service)

        new = json.loads(sm.get_secret_value(SecretId=arn, VersionStage="AWSCURRENT")["SecretString"])
        assert new["password"] != "first-pass" and len(new["password"]) == 32
        assert not set(new["password"]) & set(rotation.EXCLUDED)
        assert "AWSCURRENT" in sm.describe_secret(SecretId=arn)["VersionIdsToStages"][token]
        assert rotation._can_log_in(new) and not rotation._can_log_in(new | {"password": "first-pass"})

        database.get_engine(settings).dispose()  # the client's pool is recycled: it logs in again
        with transaction(settings) as s:
            assert s.execute(text("SELECT 1")).scalar() == 1
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("medintake"))
    assert "rotation setSecret: done" in logged
    assert new["password"] not in logged and "first-pass" not in logged
    database.dispose_engines()


def test_a_rotation_refuses_a_version_that_is_not_pending(server, monkeypatch):
    from pipeline import rotation
    from pipeline.errors import ConfigError

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        sm = boto3.client("secretsmanager", region_name=REGION)
        arn = sm.create_secret(Name=SECRET, SecretString=json.dumps({"username": "app", "password": "x"}))["ARN"]
        with pytest.raises(ConfigError, match="not enabled"):
            rotation.handler({"SecretId": arn, "ClientRequestToken": "t" * 32, "Step": "createSecret"}, client=sm)
        sm.rotate_secret(SecretId=arn, RotationRules={"AutomaticallyAfterDays": 30})
        with pytest.raises(ConfigError, match="not a version"):
            rotation.handler({"SecretId": arn, "ClientRequestToken": "u" * 32, "Step": "createSecret"}, client=sm)
