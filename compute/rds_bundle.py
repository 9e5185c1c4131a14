"""AWS's RDS certificate bundle, fetched where the code is built: into the worker image (Dockerfile)
and into the Lambda zip (``medintake deploy``), so that both can verify the database they talk to
(pipeline/database_tls.py).

Why fetched and not kept in the repository: the bundle is AWS's to publish and rotate (new RDS CAs
appear before old ones expire); the build takes the current one over HTTPS from AWS's trust store
and checks that it is a set of CA certificates before using it. A build that cannot reach it still
works: the database connection is then encrypted without verification, and the deploy says so.

``python -m compute.rds_bundle FOLDER`` writes FOLDER/rds-global-bundle.pem (exit status 1 if it
cannot).
"""
from __future__ import annotations

import logging
import os
import ssl
import sys
import urllib.request
from pathlib import Path

from pipeline.database_tls import RDS_BUNDLE_NAME

log = logging.getLogger("medintake.deploy")

RDS_BUNDLE_URL = "https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem"
_MAX_BYTES = 2 * 1024 * 1024


def valid_bundle(data: bytes) -> bool:
    """Whether ``data`` is PEM text holding at least one CA certificate Python's ssl can load
    (a proxy's or captive portal's HTML page is not)."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        return False
    if "-----BEGIN CERTIFICATE-----" not in text:
        return False
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        ctx.load_verify_locations(cadata=text)
    except (ssl.SSLError, ValueError):
        return False
    return ctx.cert_store_stats().get("x509_ca", 0) > 0


def fetch(folder: Path, url: str = RDS_BUNDLE_URL, timeout: float = 30.0) -> Path | None:
    """FOLDER/rds-global-bundle.pem, downloaded unless a valid one is there; None if it cannot be had."""
    path = folder / RDS_BUNDLE_NAME
    if path.is_file() and valid_bundle(path.read_bytes()):
        return path
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - a fixed https URL
            data = response.read(_MAX_BYTES + 1)
    except (OSError, ValueError) as exc:
        log.warning("RDS CA bundle not downloaded (%s)", type(exc).__name__)
        return None
    if len(data) > _MAX_BYTES or not valid_bundle(data):
        log.warning("RDS CA bundle not used: the download is not a set of CA certificates")
        return None
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m compute.rds_bundle FOLDER", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    path = fetch(Path(args[0]))
    if path is None:
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
