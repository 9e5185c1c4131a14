"""The database secret's rotation Lambda: Secrets Manager's four steps for one MySQL user.

Why our own function rather than AWS's hosted one: the hosted rotation needs the SAM transform in
the template; this is the same single-user scheme (the user changes its own password) in ~100
lines over the connection the rest of the pipeline uses (TLS verified against the RDS bundle,
pipeline/database_tls.py). Clients need no restart: a process whose login is refused reads the
secret again (pipeline/database.py).

Steps (``event["Step"]``), each safe to run again, as Secrets Manager may:
- createSecret: a new random password, stored as the AWSPENDING version of ``ClientRequestToken``;
- setSecret: the account sets its own password to the pending one (``ALTER USER USER()``), logged
  in with the current one (or the previous one, if a failed earlier run already changed it);
- testSecret: log in with the pending password;
- finishSecret: move AWSCURRENT to the pending version.
Passwords never reach a log line or an exception message.
"""
from __future__ import annotations

import json
import logging
from typing import Any

from pipeline.errors import ConfigError

log = logging.getLogger("medintake.rotation")

# Characters left out of generated passwords (URL and shell trouble), as the stack's first one.
EXCLUDED = "\"@/\\'`:?#[]{}%&+ "


def handler(event: dict[str, Any], context: Any = None, client: Any = None) -> None:
    import boto3

    from pipeline.logs import configure_logging

    configure_logging("INFO")
    sm = client or boto3.client("secretsmanager")
    arn, token, step = event["SecretId"], event["ClientRequestToken"], event["Step"]
    meta = sm.describe_secret(SecretId=arn)
    if not meta.get("RotationEnabled"):
        raise ConfigError("rotation is not enabled on the database secret")
    stages = meta.get("VersionIdsToStages", {})
    if token not in stages:
        raise ConfigError("the rotation's version is not a version of the secret")
    if "AWSCURRENT" in stages[token]:
        log.info("rotation %s: version already current", step)
        return
    if "AWSPENDING" not in stages[token]:
        raise ConfigError("the rotation's version is not pending")
    steps = {"createSecret": create_secret, "setSecret": set_secret, "testSecret": test_secret,
             "finishSecret": finish_secret}
    if step not in steps:
        raise ConfigError("unknown rotation step")
    steps[step](sm, arn, token)
    log.info("rotation %s: done", step)


def _value(sm: Any, arn: str, stage: str, token: str | None = None) -> dict[str, Any]:
    kwargs = {"SecretId": arn, "VersionStage": stage} | ({"VersionId": token} if token else {})
    return json.loads(sm.get_secret_value(**kwargs)["SecretString"])


def create_secret(sm: Any, arn: str, token: str) -> None:
    current = _value(sm, arn, "AWSCURRENT")
    try:
        _value(sm, arn, "AWSPENDING", token)
        return  # made by an earlier run of this step
    except sm.exceptions.ResourceNotFoundException:
        pass
    password = sm.get_random_password(PasswordLength=32, ExcludeCharacters=EXCLUDED)["RandomPassword"]
    sm.put_secret_value(SecretId=arn, ClientRequestToken=token, SecretString=json.dumps(current | {"password": password}),
                        VersionStages=["AWSPENDING"])


def set_secret(sm: Any, arn: str, token: str) -> None:
    pending = _value(sm, arn, "AWSPENDING", token)
    if _can_log_in(pending):
        return  # already set by an earlier run
    for stage in ("AWSCURRENT", "AWSPREVIOUS"):
        try:
            known = _value(sm, arn, stage)
        except sm.exceptions.ResourceNotFoundException:
            continue
        engine = _engine(known)
        try:
            with engine.begin() as conn:
                conn.exec_driver_sql(_own_password_sql(conn.exec_driver_sql("SELECT VERSION()").scalar()),
                                     (pending["password"],))
            return
        except Exception as exc:  # noqa: BLE001 - try the other known password; the type only
            log.warning("rotation setSecret: %s could not log in (%s)", stage, type(exc).__name__)
        finally:
            engine.dispose()
    raise ConfigError("the database refused both the current and the previous password")


def _own_password_sql(version: str) -> str:
    """The statement by which an account changes its own password, needing no privilege: MySQL's
    ``ALTER USER USER()`` (RDS); MariaDB (the tests' stand-in) keeps ALTER USER for CREATE USER
    holders and takes ``SET PASSWORD = PASSWORD(...)``, a function MySQL 8 removed."""
    if "mariadb" in (version or "").lower():
        return "SET PASSWORD = PASSWORD(%s)"
    return "ALTER USER USER() IDENTIFIED BY %s"


def test_secret(sm: Any, arn: str, token: str) -> None:
    if not _can_log_in(_value(sm, arn, "AWSPENDING", token)):
        raise ConfigError("the database refused the new password")


def finish_secret(sm: Any, arn: str, token: str) -> None:
    stages = sm.describe_secret(SecretId=arn)["VersionIdsToStages"]
    current = next((v for v, s in stages.items() if "AWSCURRENT" in s), None)
    if current == token:
        return
    sm.update_secret_version_stage(SecretId=arn, VersionStage="AWSCURRENT", MoveToVersionId=token,
                                   RemoveFromVersionId=current)


def _engine(secret: dict[str, Any]):  # noqa: ANN202
    """A one-connection engine from the secret's own fields, with the pipeline's TLS."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import URL
    from sqlalchemy.pool import NullPool

    from pipeline.database_tls import connect_args
    from pipeline.settings import Settings

    if not secret.get("host"):
        raise ConfigError("the database secret has no host (is it attached to the instance?)")
    url = URL.create("mysql+pymysql", username=str(secret["username"]), password=str(secret["password"]),
                     host=str(secret["host"]), port=int(secret.get("port") or 3306),
                     database=str(secret.get("dbname") or "") or None)
    rendered = url.render_as_string(hide_password=False)
    return create_engine(url, poolclass=NullPool, hide_parameters=True,
                         connect_args=connect_args(Settings.load(), rendered) | {"connect_timeout": 10})


def _can_log_in(secret: dict[str, Any]) -> bool:
    engine = _engine(secret)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        return True
    except Exception as exc:  # noqa: BLE001 - refused or unreachable: the caller decides; type only
        log.info("rotation: login refused (%s)", type(exc).__name__)
        return False
    finally:
        engine.dispose()
