"""The Lambda code zip: the light half of the tree (pipeline/, compute/, job_definitions/).

The Lambdas (dispatcher, tracker, upload API, queue metrics) never import ``jobs`` or the CLI, so
neither is shipped; nor are OpenCV, Tesseract or PDF engines. Their libraries (SQLAlchemy, PyMySQL,
Powertools) are installed for Lambda's platform (manylinux x86_64, CPython 3.13, the functions' runtime) by pip into a
cache keyed by the requirement list, so a second deploy installs nothing. The zip is
reproducible (sorted entries, fixed timestamps): the same tree gives the same bytes and the same
S3 key, so CloudFormation sees no code change when there is none.
"""
from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import zipfile
from pathlib import Path

from pipeline.errors import ConfigError, ToolFailed

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("pipeline", "compute", "job_definitions")
SKIP_DIRS = {"__pycache__", "cloudformation", "review"}
# boto3 is in Lambda's runtime; alembic is not needed (the schema is migrated by a Batch job).
REQUIREMENTS = ("SQLAlchemy>=2.0.25,<2.1", "PyMySQL>=1.1,<2", "aws-lambda-powertools>=3.0,<4")
_EPOCH = (2020, 1, 1, 0, 0, 0)


def _source_files(root: Path) -> list[tuple[str, Path]]:
    out = []
    for top in SOURCES:
        for path in sorted((root / top).rglob("*")):
            rel = path.relative_to(root)
            if path.is_dir() or SKIP_DIRS.intersection(rel.parts) or path.suffix in (".pyc", ".pyo"):
                continue
            out.append((rel.as_posix(), path))
    return out


def install_dependencies(cache_dir: Path, timeout: float = 600.0) -> Path:
    """pip-install REQUIREMENTS for Lambda's platform into a cached folder; return it."""
    key = hashlib.sha256("\n".join(REQUIREMENTS).encode()).hexdigest()[:12]
    target = cache_dir / f"lambda-deps-{key}"
    if (target / ".complete").is_file():
        return target
    target.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
        "--target", str(target), "--platform", "manylinux2014_x86_64", "--implementation", "cp",
        "--python-version", "3.13", "--only-binary=:all:", "--upgrade", *REQUIREMENTS,
    ]
    try:
        subprocess.run(argv, check=True, timeout=timeout, capture_output=True)
    except FileNotFoundError:
        raise ConfigError("pip is not available to install the Lambda's libraries") from None
    except subprocess.CalledProcessError as exc:
        raise ToolFailed(f"pip could not install the Lambda's libraries (exit status {exc.returncode})") from None
    except subprocess.TimeoutExpired:
        raise ToolFailed("pip timed out installing the Lambda's libraries") from None
    (target / ".complete").write_text("\n".join(REQUIREMENTS))
    return target


def build_zip(dependencies: Path | None = None, root: Path = ROOT, rds_bundle: Path | None = None) -> bytes:
    """The zip's bytes: our sources, plus the installed libraries when ``dependencies`` is given,
    plus the RDS CA bundle (``certs/``, where pipeline/database_tls.py looks) when given."""
    files = _source_files(root)
    if rds_bundle is not None:
        files.append((f"certs/{rds_bundle.name}", rds_bundle))
    if dependencies is not None:
        for path in sorted(dependencies.rglob("*")):
            rel = path.relative_to(dependencies)
            if path.is_file() and "__pycache__" not in rel.parts and rel.parts[0] != ".complete":
                files.append((rel.as_posix(), path))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, path in sorted(files):
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, path.read_bytes())
    return buf.getvalue()
