"""Encryption of the connection to MySQL/MariaDB and PostgreSQL (settings ``database_tls``,
``database_ca_file``).

Why: the database holds every document's text and entities (PHI). On AWS it is RDS MySQL inside
the VPC; the stack also makes the server refuse unencrypted connections
(``require_secure_transport``), so the client must always speak TLS to it, and should check that
the server is the RDS instance it names (RDS certificates chain to Amazon's own RDS CAs, which no
system trust store holds: the worker image carries AWS's bundle, see the Dockerfile).

Modes (``auto`` is the default): ``verify`` checks the certificate chain and the host name;
``require`` encrypts but accepts any certificate (protects against listening, not against an
impostor); ``off`` sends plain text; ``auto`` is ``verify`` for an RDS endpoint when a CA bundle is
found, ``require`` for an RDS endpoint without one, and the driver's own default for anything
else (a local server: PyMySQL plain, libpq TLS when the server offers it). SQLite has no
connection to protect.
"""
from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from pipeline.errors import ConfigError
from pipeline.settings import Settings

# Where the worker image puts AWS's RDS CA bundle (Dockerfile); the Lambda package carries it
# beside the code when the deploying machine had it (compute/lambda_package.py).
RDS_BUNDLE_NAME = "rds-global-bundle.pem"
IMAGE_BUNDLE = Path("/opt/medintake/certs") / RDS_BUNDLE_NAME
PACKAGE_BUNDLE = Path(__file__).resolve().parent.parent / "certs" / RDS_BUNDLE_NAME
_RDS_SUFFIXES = (".rds.amazonaws.com", ".rds.amazonaws.com.cn")


def is_rds_host(host: str | None) -> bool:
    return bool(host) and host.lower().rstrip(".").endswith(_RDS_SUFFIXES)


def ca_file(settings: Settings) -> Path | None:
    """The CA bundle to verify against: the setting, else the RDS bundle where it is shipped or cached."""
    if settings.database_ca_file is not None:
        if not settings.database_ca_file.is_file():
            raise ConfigError("database_ca_file does not name a readable file")
        return settings.database_ca_file
    # The image's, the Lambda zip's, or the one `medintake deploy` fetched into this machine's
    # cache (an operator's `--migrate-with direct` then verifies too).
    for candidate in (IMAGE_BUNDLE, PACKAGE_BUNDLE, settings.effective_cache_dir / RDS_BUNDLE_NAME):
        if candidate.is_file():
            return candidate
    return None


def effective_mode(settings: Settings, url: str) -> str:
    """verify | require | off | driver (``auto`` resolved: the driver's default elsewhere than RDS)."""
    u = make_url(url)
    if u.drivername.startswith("sqlite"):
        return "off"
    mode = settings.database_tls
    if mode != "auto":
        return mode
    if not is_rds_host(u.host):
        return "driver"
    return "verify" if ca_file(settings) is not None else "require"


def connect_args(settings: Settings, url: str) -> dict[str, Any]:
    """The DBAPI connect arguments that give ``url`` the TLS of the settings (empty: none)."""
    mode = effective_mode(settings, url)
    driver = make_url(url).drivername
    if mode == "driver" or driver.startswith("sqlite"):
        return {}
    if mode == "off":
        return {"ssl_disabled": True} if driver.startswith("mysql") else {"sslmode": "disable"}
    ca = ca_file(settings)
    if driver.startswith("mysql"):
        return {"ssl": _mysql_context(mode, ca)}
    if driver.startswith("postgresql"):
        if mode == "require":
            return {"sslmode": "require"}
        return {"sslmode": "verify-full", "sslrootcert": str(ca) if ca else "system"}
    raise ConfigError(f"database_tls is not supported for the {driver} driver")


def _mysql_context(mode: str, ca: Path | None) -> ssl.SSLContext:
    """PyMySQL takes a ready SSLContext as its ``ssl`` argument (and then insists on TLS)."""
    if mode == "verify":
        ctx = ssl.create_default_context(cafile=str(ca) if ca else None)
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx
