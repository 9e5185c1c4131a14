"""The database connection over TLS (pipeline/database_tls.py), against real servers that refuse
plain connections: a private MariaDB (RDS MySQL's stand-in) with ``require_secure_transport`` and a
private PostgreSQL whose TCP access is ``hostssl`` only, both with a certificate from a test CA for
``localhost`` (tests/drills/servers.py)."""
from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from pipeline import database, database_tls
from pipeline.database import transaction
from pipeline.errors import ConfigError, TransientError
from pipeline.models import Document
from pipeline.settings import Settings
from drills.servers import make_tls_files, serving

_CIPHER_SQL = {"mariadb": "SHOW SESSION STATUS LIKE 'Ssl_cipher'",
               "postgres": "SELECT cipher FROM pg_stat_ssl WHERE pid = pg_backend_pid()"}


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module", params=["mariadb", "postgres"])
def server(request, tls_files):
    with serving(request.param, tls_files) as srv:
        yield srv


def _settings(tmp_path: Path, url: str, **tls) -> Settings:
    tls.setdefault("database_retry_seconds", 5)
    return Settings.load(data_dir=tmp_path / "data", database_url=url, **tls)


def _cipher(settings: Settings, dialect: str) -> str | None:
    with transaction(settings) as s:
        row = s.execute(text(_CIPHER_SQL[dialect])).fetchone()
    return row[-1] if row else None


def test_verify_encrypts_and_checks_the_certificate_and_name(server, tls_files, tmp_path):
    """verify: the whole database layer (schema, rows) works over TLS with the CA's certificate."""
    url = server.url.replace("127.0.0.1", "localhost")
    settings = _settings(tmp_path, url, database_tls="verify", database_ca_file=str(tls_files.ca))
    database.upgrade(settings)
    with transaction(settings) as s:
        s.add(Document(id="d" * 12, bucket="b", object_key="uploads/x.pdf", status="RECEIVED"))
    with transaction(settings) as s:
        assert s.get(Document, "d" * 12).status == "RECEIVED"
    assert _cipher(settings, server.dialect)  # a TLS session, as the server reports it


def test_require_encrypts_without_a_ca(server, tmp_path):
    settings = _settings(tmp_path, server.url, database_tls="require")
    assert _cipher(settings, server.dialect)


def test_a_certificate_that_does_not_verify_fails_at_once_with_a_clear_error(server, tls_files, tmp_path):
    """Not an outage to wait out: a config error (or an impostor), raised before any back-off."""
    slept: list[float] = []
    # No CA given: the test CA is in no system store.
    settings = _settings(tmp_path, server.url.replace("127.0.0.1", "localhost"), database_tls="verify")
    with pytest.raises(ConfigError, match="TLS certificate was not accepted") as info:
        database._open(settings, sleep=slept.append)
    with pytest.raises(ConfigError, match="TLS certificate was not accepted"):
        database.upgrade(settings)  # the schema check and migration connect on their own
    # The right CA, but the server reached by an address its certificate does not name.
    settings = _settings(tmp_path, server.url, database_tls="verify", database_ca_file=str(tls_files.ca))
    with pytest.raises(ConfigError, match="TLS certificate was not accepted"):
        database._open(settings, sleep=slept.append)
    assert slept == []
    assert "localhost" not in str(info.value) and "127.0.0.1" not in str(info.value)


def test_the_server_refuses_a_plain_connection(server, tmp_path):
    """What the stack's parameter group does to a client with database_tls=off."""
    settings = _settings(tmp_path, server.url, database_tls="off", database_retry_seconds=0)
    with pytest.raises(TransientError):
        with transaction(settings):
            pass


# ---- which mode, without a server ----------------------------------------------------------------

RDS_URL = "mysql+pymysql://u:p@medintake-prod.c9akciq32.eu-west-1.rds.amazonaws.com:3306/medintake"


def test_auto_verifies_an_rds_endpoint_against_the_shipped_bundle(tmp_path, monkeypatch):
    bundle = tmp_path / "rds-global-bundle.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setattr(database_tls, "IMAGE_BUNDLE", bundle)
    settings = Settings.load(data_dir=tmp_path)
    assert database_tls.effective_mode(settings, RDS_URL) == "verify"
    assert database_tls.effective_mode(settings, RDS_URL.replace(".com:", ".com.cn:")) == "verify"
    pg = RDS_URL.replace("mysql+pymysql", "postgresql+psycopg")
    assert database_tls.connect_args(settings, pg) == {"sslmode": "verify-full", "sslrootcert": str(bundle)}


def test_auto_without_a_bundle_still_encrypts_an_rds_endpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(database_tls, "IMAGE_BUNDLE", tmp_path / "absent.pem")
    monkeypatch.setattr(database_tls, "PACKAGE_BUNDLE", tmp_path / "absent.pem")
    settings = Settings.load(data_dir=tmp_path, cache_dir=str(tmp_path / "cache"))
    assert database_tls.effective_mode(settings, RDS_URL) == "require"
    # The bundle `medintake deploy` fetched into the cache folder serves this machine too.
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / database_tls.RDS_BUNDLE_NAME).write_text("-----BEGIN CERTIFICATE-----\n")
    assert database_tls.effective_mode(settings, RDS_URL) == "verify"
    settings = Settings.load(data_dir=tmp_path, cache_dir=str(tmp_path / "empty-cache"))
    assert database_tls.connect_args(settings, RDS_URL.replace("mysql+pymysql", "postgresql+psycopg")) == {
        "sslmode": "require"}


def test_auto_leaves_other_servers_and_sqlite_to_the_driver(tmp_path):
    settings = Settings.load(data_dir=tmp_path)
    assert database_tls.connect_args(settings, "mysql+pymysql://u:p@127.0.0.1:3306/x") == {}
    assert database_tls.connect_args(settings, "postgresql+psycopg://u@db.internal/x") == {}
    assert database_tls.effective_mode(settings, "sqlite:///x.db") == "off"


def test_settings_reject_an_unknown_mode_and_a_missing_ca_file(tmp_path):
    with pytest.raises(ConfigError, match="database_tls"):
        Settings.load(database_tls="on")
    settings = Settings.load(data_dir=tmp_path, database_tls="verify", database_ca_file=str(tmp_path / "none.pem"))
    with pytest.raises(ConfigError, match="database_ca_file"):
        database_tls.connect_args(settings, "mysql+pymysql://u:p@localhost/x")


# ---- AWS's RDS CA bundle, fetched at build time (compute/rds_bundle.py) ---------------------------

@pytest.fixture
def http_folder(tmp_path):
    """A real HTTP server on localhost serving a folder (standing in for AWS's trust store URL)."""
    import functools
    import http.server
    import threading

    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_the_bundle_is_downloaded_checked_and_cached(http_folder, tls_files, tmp_path):
    from compute import rds_bundle

    root, base = http_folder
    (root / "global-bundle.pem").write_bytes(tls_files.ca.read_bytes())
    (root / "portal.html").write_text("<html>Please log in to the Wi-Fi</html>")
    cache = tmp_path / "cache"
    assert rds_bundle.fetch(cache, url=f"{base}/portal.html") is None  # not certificates: not kept
    assert rds_bundle.fetch(cache, url=f"{base}/missing.pem") is None
    assert not (cache / database_tls.RDS_BUNDLE_NAME).exists()
    path = rds_bundle.fetch(cache, url=f"{base}/global-bundle.pem")
    assert path == cache / database_tls.RDS_BUNDLE_NAME and path.read_bytes() == tls_files.ca.read_bytes()
    (root / "global-bundle.pem").unlink()
    assert rds_bundle.fetch(cache, url=f"{base}/global-bundle.pem") == path  # cached: no second download


def test_the_lambda_zip_carries_the_bundle_where_database_tls_looks(tls_files):
    import io
    import zipfile

    from compute.lambda_package import build_zip

    bundle = tls_files.ca.with_name(database_tls.RDS_BUNDLE_NAME)
    bundle.write_bytes(tls_files.ca.read_bytes())
    names = zipfile.ZipFile(io.BytesIO(build_zip(rds_bundle=bundle))).namelist()
    repo = Path(database_tls.__file__).resolve().parent.parent
    assert database_tls.PACKAGE_BUNDLE.relative_to(repo).as_posix() in names


def test_the_cli_reports_a_refused_certificate_as_a_config_error(server, tmp_path, monkeypatch):
    """What an operator sees: the fix-it sentence and exit status 78, no traceback."""
    from click.testing import CliRunner

    import cli

    monkeypatch.setenv("MEDINTAKE_DATABASE_URL", server.url.replace("127.0.0.1", "localhost"))
    monkeypatch.setenv("MEDINTAKE_DATABASE_TLS", "verify")
    database.dispose_engines()
    result = CliRunner().invoke(cli.main, ["--data-dir", str(tmp_path / "data"), "db", "upgrade"])
    assert result.exit_code == 78, result.output
    assert "TLS certificate was not accepted" in result.output and "Traceback" not in result.output
