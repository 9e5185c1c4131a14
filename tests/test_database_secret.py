"""Credentials from the Secrets Manager secret, after a rotation: a long-lived process (a Lambda
container, a worker) that read the secret before the password changed reads it again, once, when
the server refuses its login. Real MariaDB (a private server: the test changes a user's password)
and Secrets Manager through moto."""
from __future__ import annotations

import json

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
