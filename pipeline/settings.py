"""One Settings object for every component.

Precedence: explicit argument > ``MEDINTAKE_<FIELD>`` environment variable > embedded default.
The embedded defaults run everything on one machine with nothing to configure: a data folder
holding the SQLite database, a folder standing in for the bucket, the local compute environment
and notices appended to a JSON-lines file. On AWS the same fields pick S3, RDS, Batch and SNS.
"""
from __future__ import annotations

import dataclasses
import os
import re
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from pipeline.errors import ConfigError

ENV_PREFIX = "MEDINTAKE_"


def _default_job_definitions_dir() -> Path:
    here = Path(__file__).resolve().parent.parent / "job_definitions"
    if here.is_dir():
        return here
    return Path(sys.prefix) / "share" / "medintake" / "job_definitions"


# A web origin as browsers send it: https, or http on the local machine (a developer's page).
_ORIGIN = re.compile(r"(https://[A-Za-z0-9.-]+|http://(localhost|127\.0\.0\.1))(:[0-9]{1,5})?")


@dataclass(frozen=True)
class Settings:
    """Frozen configuration, passed whole to every component (no long parameter lists)."""

    data_dir: Path = Path(".medintake")
    database_url: str = ""  # default: sqlite:///<data_dir>/medintake.db
    # Secrets Manager secret (name or ARN) holding the database's username and password (and host,
    # port, dbname when present, which win over database_url's); on AWS the URL carries none.
    database_secret: str = ""
    # Encryption of the database connection (pipeline/database_tls.py): "auto" = verify for an RDS
    # endpoint (*.rds.amazonaws.com; against database_ca_file, the RDS bundle the worker image
    # carries, or encrypted without verification where no bundle is found), none elsewhere;
    # "verify" = TLS with the server's certificate and name checked (database_ca_file, else the
    # system's CAs); "require" = TLS without checking who answers; "off" = no TLS.
    database_tls: str = "auto"
    database_ca_file: Path | None = None
    store_backend: str = "folder"  # folder | s3
    bucket: str = "uploads"  # S3 bucket name; for the folder store, a folder under data_dir/buckets
    store_root: Path | None = None  # folder store root; default <data_dir>/buckets
    s3_endpoint_url: str = ""  # moto / MinIO / VPC endpoint
    uploads_prefix: str = "uploads/"
    results_prefix: str = "results/"
    compute_backend: str = "local"  # local | batch
    job_definitions_dir: Path = field(default_factory=_default_job_definitions_dir)
    job_queue: str = "medintake"
    worker_image: str = "medintake-worker:latest"  # Batch: the image job definitions run
    # Batch: job definitions are registered as <prefix>-<kind>-<hash> (IAM allows <prefix>-*).
    job_definition_prefix: str = "medintake"
    batch_job_role_arn: str = ""  # Batch: the role the worker container runs as
    batch_execution_role_arn: str = ""  # Batch on Fargate: pulls the image, writes the logs
    batch_log_group: str = ""  # Batch: awslogs group; default /aws/batch/<job_definition_prefix>
    # SubmitJob calls per second from one dispatcher (Lambda container or CLI); times the
    # dispatcher's reserved concurrency it stays under Batch's ~50/s per account.
    submit_rate: float = 8.0
    # The shape of the compute step (docs/scale.md): array = one Batch array job per dispatcher
    # batch, each child running every stage for its slice of documents in one process (the
    # simulation's choice); per_document = three jobs per document with dependsOn (the old shape).
    job_shape: str = "array"
    array_child_documents: int = 20  # array shape: documents per child at most
    array_child_seconds: float = 60.0  # array shape: estimated seconds of work per child at most
    document_retries: int = 2  # array shape: resubmissions of a document that failed transiently
    # Design E (docs/scale.md): documents of up to lambda_max_seconds of estimated work go to the
    # processing Lambda's SQS queue while it holds fewer than processing_queue_limit messages;
    # the rest, and every retry, go to Batch as array jobs. Off without processing_queue_url.
    processing_queue_url: str = ""
    lambda_max_seconds: float = 30.0
    processing_queue_limit: int = 200  # 2 x the processing Lambda's reserved concurrency
    workers: int = 0  # local compute: worker processes; 0 = number of CPUs
    worker_start: str = "fork"  # local compute: fork attempts from a warm server | exec a new python
    notifier: str = "file"  # file | sns
    notices_path: Path | None = None  # default <data_dir>/notices.jsonl
    sns_topic_arn: str = ""
    aws_region: str = ""
    entities_backend: str = "local"  # local | comprehendmedical
    # Comprehend Medical operations called per document, comma-separated; DetectEntitiesV2 gives
    # entities.json, DetectPHI phi.json, InferICD10CM icd10cm.json, InferRxNorm rxnorm.json.
    comprehend_operations: str = "DetectEntitiesV2"
    comprehend_concurrency: int = 4  # requests in flight at once per document (all operations)
    local_icd10cm: str = "on"  # local backend: icd10cm.json from the simple-icd-10-cm code set | off
    # Built indexes reused by later worker processes (the ICD-10-CM index: ~3.5 s to build, ~0.5 s
    # to read back). Default: the user's cache folder ($XDG_CACHE_HOME or ~/.cache)/medintake, so
    # one machine builds it once whatever the data folder; the worker image ships one built.
    cache_dir: Path | None = None
    ocr_low_confidence: float = 60.0  # entities over an OCR word below this confidence get LOW_CONFIDENCE
    # "auto": each page's language chosen among ocr_auto_languages (first Latin one read first,
    # OSD's script and function words pick another; jobs/extract/languages.py); anything else,
    # e.g. "eng" or "deu+eng", pins the set for every page and skips detection.
    ocr_languages: str = "auto"
    ocr_auto_languages: str = "eng+deu+fra+spa+ita+por+nld+chi_sim+chi_tra+jpn+kor"
    ocr_page_workers: int = 1  # pages OCR'd in parallel inside one extract job (match its vCPUs)
    text_engine: str = "pdfium"  # text-layer reader: pdfium (fast, column order) | pdfplumber
    tesseract_cmd: str = "tesseract"  # the tesseract program (another build, a wrapper)
    # "library": Tesseract's library kept loaded in a helper process per worker, when it is the
    # program's version (jobs/extract/tessapi.py; saves the program's ~0.2 CPU s start per page);
    # "program": start tesseract_cmd for every call (also what any other tesseract_cmd means).
    ocr_engine: str = "library"
    ocr_timeout: float = 300.0  # seconds per page for one tesseract call
    ocr_dpi: int = 300  # rendering resolution for textless PDF pages
    # Long documents (docs/scale.md "Long documents"): a PDF of more than split_pages pages that
    # needs OCR is OCR'd by page-range jobs of split_pages pages each, in parallel, then merged in
    # page order by one merge job (array shape; 0 = never split). A page taking more than
    # page_timeout_seconds (render, preprocessing and OCR) is recorded as failed in pages.json and
    # the others go on (0 = no limit but ocr_timeout per tesseract call).
    split_pages: int = 40
    page_timeout_seconds: float = 120.0
    max_upload_bytes: int = 200 * 1024 * 1024
    upload_max_bytes: int = 200 * 1024 * 1024  # upload API: the largest upload it signs for
    # Upload API: web origins (scheme://host[:port], comma-separated) whose pages may call it and
    # POST to the uploads bucket from a browser (CORS); empty: none (apps and servers need none).
    upload_allowed_origins: str = ""
    max_pages: int = 2000
    max_image_pixels: int = 178_956_970  # Pillow's own default bomb limit (2x = error)
    # Renditions per upload: "standard" = thumbnail, preview and web image (the original is kept
    # unchanged); "lossless" adds the full-size lossless copies (jobs/convert/renditions.py).
    renditions: str = "standard"
    # Seconds a new transaction waits, with back-off, for an unreachable database (a restart, an RDS
    # failover) before it fails with a retryable error; 0: fail at once.
    database_retry_seconds: float = 60.0
    # Folder store: the octal mode of result files (results/<document>/...), the files users open.
    # "0640": the user's group may read them (their folders 0750; the data folder 0710, so the
    # group can reach results by path but list nothing); "0600": everything owner-only (0700).
    # Originals, the database and the notices file are always owner-only (pipeline/store.py).
    output_mode: str = "0640"
    log_level: str = "INFO"

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Build settings: ``overrides`` (None values ignored) > environment > defaults."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            if overrides.get(f.name) is not None:
                values[f.name] = _coerce(f, overrides[f.name])
            elif ENV_PREFIX + f.name.upper() in env:
                values[f.name] = _coerce(f, env[ENV_PREFIX + f.name.upper()])
        unknown = set(overrides) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        return cls(**values).validated()

    def validated(self) -> "Settings":
        choices = {
            "store_backend": ("folder", "s3"),
            "compute_backend": ("local", "batch"),
            "notifier": ("file", "sns"),
            "entities_backend": ("local", "comprehendmedical"),
            "text_engine": ("pdfium", "pdfplumber"),
            "ocr_engine": ("library", "program"),
            "worker_start": ("fork", "exec"),
            "local_icd10cm": ("on", "off"),
            "job_shape": ("array", "per_document"),
            "renditions": ("standard", "lossless"),
            "database_tls": ("auto", "verify", "require", "off"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}")
        operations = [op.strip() for op in self.comprehend_operations.split(",") if op.strip()]
        known = ("DetectEntitiesV2", "DetectPHI", "InferICD10CM", "InferRxNorm")
        if "DetectEntitiesV2" not in operations or any(op not in known for op in operations):
            raise ConfigError(f"comprehend_operations must include DetectEntitiesV2 and name only {', '.join(known)}")
        if self.submit_rate <= 0:
            raise ConfigError("submit_rate must be positive")
        if not 1 <= self.array_child_documents <= 1000 or self.array_child_seconds <= 0 or self.document_retries < 0:
            raise ConfigError("array_child_documents must be 1-1000, array_child_seconds positive, document_retries >= 0")
        if self.split_pages < 0 or self.split_pages == 1 or self.page_timeout_seconds < 0:
            raise ConfigError("split_pages must be 0 (never split) or at least 2; "
                              "page_timeout_seconds must not be negative")
        if self.database_retry_seconds < 0:
            raise ConfigError("database_retry_seconds must not be negative")
        if self.lambda_max_seconds < 0 or self.processing_queue_limit < 0:
            raise ConfigError("lambda_max_seconds and processing_queue_limit must not be negative")
        if self.comprehend_concurrency < 1:
            raise ConfigError("comprehend_concurrency must be at least 1")
        if self.notifier == "sns" and not self.sns_topic_arn:
            raise ConfigError("notifier=sns needs MEDINTAKE_SNS_TOPIC_ARN")
        for prefix in (self.uploads_prefix, self.results_prefix):
            if not prefix.endswith("/") or prefix.startswith("/"):
                raise ConfigError("key prefixes must end with '/' and not start with '/'")
        for origin in self.allowed_origins:
            if not _ORIGIN.fullmatch(origin):
                raise ConfigError("upload_allowed_origins must list origins as https://host[:port] "
                                  "(http:// only for localhost), no paths, no wildcard")
        return self

    @property
    def allowed_origins(self) -> tuple[str, ...]:
        return tuple(o.strip().rstrip("/") for o in self.upload_allowed_origins.split(",") if o.strip())

    # Derived values, computed rather than stored so that a replace() keeps them consistent.
    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'medintake.db').resolve()}"

    @property
    def effective_store_root(self) -> Path:
        return (self.store_root or self.data_dir / "buckets").resolve()

    @property
    def effective_notices_path(self) -> Path:
        return (self.notices_path or self.data_dir / "notices.jsonl").resolve()

    @property
    def effective_cache_dir(self) -> Path:
        if self.cache_dir:
            return self.cache_dir.resolve()
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        return (Path(base) / "medintake").resolve()

    @property
    def effective_workers(self) -> int:
        return self.workers or max(1, os.cpu_count() or 1)

    def replace(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **changes).validated()

    def to_env(self) -> dict[str, str]:
        """The environment that reproduces these settings in a worker process or container."""
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if f.name == "data_dir" or isinstance(value, Path):
                value = str(Path(value).resolve())
            out[ENV_PREFIX + f.name.upper()] = str(value)
        return out


def _coerce(f: dataclasses.Field, raw: Any) -> Any:
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    if raw is None:
        return None
    try:
        if kind.startswith("Path"):
            return Path(raw) if raw != "" else None if "None" in kind else Path(".")
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        return str(raw)
    except ValueError as exc:
        raise ConfigError(f"setting {f.name} has an invalid value") from exc
