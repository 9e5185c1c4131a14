"""The upload API Lambda: presigned S3 POSTs for uploads, and the status of what was uploaded.

API Gateway REST API, Lambda proxy integration (event format 1.0), Cognito user pool authorizer;
the caller is ``requestContext.authorizer.claims.sub``. Handler: ``pipeline.upload_api.handler``.

Routes (every response JSON, ``Content-Type: application/json``):

``POST /uploads`` body ``{"file_name": str, "content_type": str, "size": int}``
    201 ``{"upload_id", "key", "url", "fields", "expires_in", "max_bytes"}``: the client POSTs
    ``fields`` plus its ``file`` (last) as multipart/form-data to ``url``. The signed policy
    allows exactly one key, ``<uploads_prefix><sub>/<upload_id>/<file name>``, exactly the
    declared Content-Type, between 1 and ``max_bytes`` bytes (the declared size, capped by the
    limit), for ``expires_in`` seconds. 400 bad body, 413 size over the limit, 415 a content
    type we do not process.
``GET /uploads/{upload_id}``
    200 ``{"upload_id", "status", "documents": [...]}``: the caller's documents under that
    upload, oldest first (every S3 object version is a document of its own); ``status``
    "received", each document with its own status. Upload ids are not recorded anywhere, so
    with no document yet the caller's prefix in the bucket decides: an object there that the
    dispatcher has not registered yet gives 200 with ``status`` "waiting" and no documents
    (one ListObjectsV2 call, needing s3:ListBucket on the uploads prefix); nothing there (an id
    never used, or another user's upload) gives 404.
``GET /documents/{document_id}``
    200 one document item if its object key lies under the caller's prefix, else 404 (never 403:
    another user's document is indistinguishable from a missing one).

A document item: ``document_id``, ``status``, ``attempt``, ``reason_code``, ``reason`` (the
fixed sentence that goes with the code: no PHI), ``received_at``, ``finished_at`` (final
statuses only), ``outputs`` (result object keys, named by document id only) and ``counts``,
both as the document's notice reported them once final, the outputs written so far before.
Never the object key, the file name, extracted text or entity values.

401 without a usable ``sub`` claim (checked before routing); 404 for any other route.

Logs carry the route template, the status code and ids (request, user sub, upload, document),
never a file name, key, body or exception message (any of which may hold a patient's name).

Light module: no image or PDF library; boto3 and SQLAlchemy only. The database is read, never
migrated here: documents exist only after the dispatcher (which migrates) registered them.
"""
from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import time
import unicodedata
import uuid
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import select

from pipeline.errors import TransientError
from pipeline.models import FINAL_STATUSES, Document, Job, Notice, folder_digest
from pipeline.settings import Settings

log = logging.getLogger("medintake.upload_api")

EXPIRES_IN = 900  # seconds a presigned POST stays usable (S3 checks it when the POST arrives)
MAX_NAME_BYTES = 200  # UTF-8 bytes of the file name part of the key
MAX_BODY_BYTES = 16 * 1024  # a POST /uploads body is three small fields
MAX_DOCUMENTS = 100  # per GET /uploads/{id} (each object version is a document)
DEFAULT_NAME = "upload"

# The media types the pipeline reads, with the aliases clients send for a few of them. The value
# is what is signed and stored as the object's Content-Type.
CONTENT_TYPES: dict[str, str] = {
    "application/pdf": "application/pdf",
    "image/jpeg": "image/jpeg",
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "image/png": "image/png",
    "image/tiff": "image/tiff",
    "image/tiff-fx": "image/tiff",
    "image/webp": "image/webp",
    "image/gif": "image/gif",
    "image/bmp": "image/bmp",
    "image/x-bmp": "image/bmp",
    "image/x-ms-bmp": "image/bmp",
    "image/heic": "image/heic",
    "image/heif": "image/heif",
    "image/heic-sequence": "image/heic",
    "image/heif-sequence": "image/heif",
    "image/jp2": "image/jp2",
    "image/jpx": "image/jpx",
    "image/jpm": "image/jpm",
    "application/dicom": "application/dicom",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document":
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.oasis.opendocument.text": "application/vnd.oasis.opendocument.text",
    "application/rtf": "application/rtf",
    "text/rtf": "application/rtf",
    "text/plain": "text/plain",
}
ACCEPTED = sorted(set(CONTENT_TYPES.values()))

# A Cognito sub is a UUID; anything that could leave or widen its key prefix is refused.
_SUB = re.compile(r"^[A-Za-z0-9_.:@+=-]{1,128}$")
_DOC_ID = re.compile(r"^[0-9a-f]{32}$")
# Removed from names: controls (Cc), invisible format characters such as U+202E RIGHT-TO-LEFT
# OVERRIDE that disguise an extension (Cf), surrogates (Cs), private use (Co), unassigned (Cn),
# line and paragraph separators (Zl, Zp).
_DROPPED_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}

_JSON_HEADERS = {"Content-Type": "application/json", "Cache-Control": "no-store"}

_cache: dict[str, Any] = {}


class ApiError(Exception):
    """An HTTP error answer; ``message`` is fixed text (never echoes input: it may hold PHI)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# ---- per-container parts -------------------------------------------------------------------


def _parts() -> dict[str, Any]:
    """Settings, logging and the S3 client, built once per Lambda container."""
    if not _cache:
        from pipeline.logs import configure_logging

        settings = Settings.load()
        configure_logging(settings.log_level)
        _cache.update(settings=settings, s3=s3_client(settings))
    return _cache


def reset() -> None:
    """Forget the cached parts (tests; a new configuration)."""
    _cache.clear()


def s3_client(settings: Settings):
    """The S3 client for presigning: pipeline.store's (region, endpoint) plus a Config.

    Not ``S3Store``'s client as is: a default boto3 client signs POST policies with SigV2 against
    the global ``bucket.s3.amazonaws.com`` endpoint. SigV4 on the regional virtual-hosted endpoint
    is what S3 wants (SigV2 is deprecated and absent from newer regions; a new bucket outside
    us-east-1 answers the global name with redirects a browser POST does not follow). An
    explicit endpoint (moto, MinIO, a VPC endpoint) keeps path-style addressing.
    """
    import boto3
    from botocore.config import Config

    import os

    # botocore's own endpoint variables (AWS_ENDPOINT_URL[_S3]) count as an explicit endpoint too.
    explicit = settings.s3_endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    style = "path" if explicit else "virtual"
    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url or None,
        region_name=settings.aws_region or None,
        config=Config(signature_version="s3v4", s3={"addressing_style": style}),
    )


def upload_limit(settings: Settings) -> int:
    # upload_max_bytes (MEDINTAKE_UPLOAD_MAX_BYTES) is being added to Settings; until it lands the
    # older max_upload_bytes is the limit.
    return int(getattr(settings, "upload_max_bytes", settings.max_upload_bytes))


# ---- the handler -----------------------------------------------------------------------------


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    started = time.monotonic()
    parts = _parts()
    context_ = event.get("requestContext") if isinstance(event, dict) else None
    request_id = context_.get("requestId") if isinstance(context_, dict) else None
    ids: dict[str, str] = {}  # what the log line names: the route template and ids
    answer: dict[str, Any] | None = None
    try:
        if not isinstance(event, dict):
            raise ApiError(400, "the request is not an API Gateway proxy event")
        method = str(event.get("httpMethod") or "").upper()
        if method == "OPTIONS":  # a browser's CORS preflight: no credentials, answered here
            ids["route"] = "OPTIONS preflight"
            answer = _preflight(parts["settings"], event)
            status, body = answer["statusCode"], {}
        else:
            sub = caller(event)
            ids["user"] = sub
            path = _request_path(event)
            status, body = _route(parts, method, path, sub, event, ids)
    except ApiError as exc:
        status, body = exc.status, {"message": exc.message}
    except TransientError:
        status, body = 503, {"message": "a service the API depends on is unavailable; try again"}
    except Exception as exc:  # noqa: BLE001 - the type only: a message may quote a key
        log.error("upload api internal error (%s)", type(exc).__name__)
        status, body = 500, {"message": "internal error"}
    route = ids.pop("route", "unknown route")
    log.info(
        "upload api %s -> %d (%.0f ms)%s",
        route,
        status,
        (time.monotonic() - started) * 1000,
        "".join(f" {k}={v}" for k, v in ({"request": request_id} | ids).items() if v),
    )
    return answer or response(status, body, _cors(parts["settings"], event))


def _origin(event: dict[str, Any]) -> str | None:
    headers = event.get("headers") if isinstance(event, dict) else None
    if not isinstance(headers, dict):
        return None
    for name, value in headers.items():
        if isinstance(name, str) and name.lower() == "origin" and isinstance(value, str):
            return value
    return None


def _cors(settings: Settings, event: Any) -> dict[str, str]:
    """CORS answer headers for a listed origin (upload_allowed_origins); none for any other."""
    origin = _origin(event) if isinstance(event, dict) else None
    if origin is None or origin not in settings.allowed_origins:
        return {}
    return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}


def _preflight(settings: Settings, event: dict[str, Any]) -> dict[str, Any]:
    """204 with what the API accepts for a listed origin; 403 (no CORS headers) for any other."""
    allow = _cors(settings, event)
    if not allow:
        return response(403, {"message": "origin not allowed"})
    allow |= {"Access-Control-Allow-Methods": "GET, POST, OPTIONS",
              "Access-Control-Allow-Headers": "Authorization, Content-Type",
              "Access-Control-Max-Age": "600"}
    return {"statusCode": 204, "headers": allow, "body": "", "isBase64Encoded": False}


def response(status: int, body: dict[str, Any], extra_headers: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": dict(_JSON_HEADERS) | (extra_headers or {}),
        "body": json.dumps(body, ensure_ascii=False),
        "isBase64Encoded": False,
    }


def caller(event: dict[str, Any]) -> str:
    """The Cognito user's ``sub``; 401 if the authorizer passed none (or one unsafe in a key)."""
    context = event.get("requestContext")
    authorizer = context.get("authorizer") if isinstance(context, dict) else None
    claims = authorizer.get("claims") if isinstance(authorizer, dict) else None
    if isinstance(claims, str):  # some test tools and proxies pass the claims JSON-encoded
        try:
            claims = json.loads(claims)
        except ValueError:
            claims = None
    sub = claims.get("sub") if isinstance(claims, dict) else None
    if not isinstance(sub, str) or not _SUB.match(sub) or sub in (".", ".."):
        raise ApiError(401, "not authenticated")
    return sub


def _request_path(event: dict[str, Any]) -> str:
    """The request path relative to the API: the resource template with its parameters filled.

    ``resource`` ("/uploads/{upload_id}", or "/{proxy+}") does not carry a custom domain's base
    path mapping, which ``path`` does; ``path`` is the fallback for events without a resource.
    """
    resource = event.get("resource")
    params = event.get("pathParameters") or {}
    if not isinstance(resource, str) or not resource:
        return str(event.get("path") or "")

    def fill(m: re.Match[str]) -> str:
        value = params.get(m.group(1))
        return "\0" if value is None else str(value)  # NUL: a path that matches no route

    return re.sub(r"\{([^}+]+)\+?\}", fill, resource)


_ROUTES = (
    ("POST", re.compile(r"^/uploads/?$"), "POST /uploads"),
    ("GET", re.compile(r"^/uploads/([^/]+)/?$"), "GET /uploads/{upload_id}"),
    ("GET", re.compile(r"^/documents/([^/]+)/?$"), "GET /documents/{document_id}"),
)


def _route(
    parts: dict[str, Any], method: str, path: str, sub: str, event: dict[str, Any], ids: dict[str, str]
) -> tuple[int, dict[str, Any]]:
    for route_method, pattern, name in _ROUTES:
        m = pattern.match(path)
        if m is None or method != route_method:
            continue
        ids["route"] = name
        settings = parts["settings"]
        if name == "POST /uploads":
            body = create_upload(settings, parts["s3"], sub, _json_body(event))
            ids["upload"] = body["upload_id"]
            return 201, body
        if name == "GET /uploads/{upload_id}":
            upload_id = _upload_id(m.group(1))
            ids["upload"] = upload_id
            return 200, upload_status(settings, parts["s3"], sub, upload_id)
        document_id = m.group(1).lower()
        if not _DOC_ID.match(document_id):
            raise ApiError(404, "no such document")
        ids["document"] = document_id
        return 200, document_status(settings, sub, document_id)
    raise ApiError(404, "no such route")


# ---- POST /uploads -----------------------------------------------------------------------------


def _json_body(event: dict[str, Any]) -> dict[str, Any]:
    raw = event.get("body")
    if raw is None or raw == "":
        raise ApiError(400, "the request body is missing: send a JSON object with file_name, content_type and size")
    if event.get("isBase64Encoded"):
        try:
            raw = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise ApiError(400, "the request body is not valid base64") from None
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError(400, f"the request body is larger than {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, "the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object with file_name, content_type and size")
    return body


def create_upload(settings: Settings, s3: Any, sub: str, body: dict[str, Any]) -> dict[str, Any]:
    file_name = body.get("file_name")
    if not isinstance(file_name, str) or not file_name.strip():
        raise ApiError(400, "file_name must be a non-empty string")
    content_type = body.get("content_type")
    if not isinstance(content_type, str) or not content_type.strip():
        raise ApiError(400, "content_type must be a non-empty string")
    size = body.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ApiError(400, "size must be a positive integer (the file's length in bytes)")
    media_type = CONTENT_TYPES.get(content_type.split(";", 1)[0].strip().lower())
    if media_type is None:
        raise ApiError(415, "content_type is not one the pipeline reads; accepted: " + ", ".join(ACCEPTED))
    limit = upload_limit(settings)
    if size > limit:
        raise ApiError(413, f"size is larger than the upload limit of {limit} bytes")

    upload_id = str(uuid.uuid4())
    key = f"{settings.uploads_prefix}{sub}/{upload_id}/{safe_file_name(file_name)}"
    max_bytes = min(size, limit)
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        post = s3.generate_presigned_post(
            Bucket=settings.bucket,
            Key=key,
            Fields={"Content-Type": media_type},
            Conditions=[{"Content-Type": media_type}, ["content-length-range", 1, max_bytes]],
            ExpiresIn=EXPIRES_IN,
        )
    except (BotoCoreError, ClientError) as exc:  # no credentials, usually: not the caller's fault
        raise TransientError(f"could not sign the upload ({type(exc).__name__})") from None
    return {
        "upload_id": upload_id,
        "key": key,
        "url": post["url"],
        "fields": post["fields"],
        "expires_in": EXPIRES_IN,
        "max_bytes": max_bytes,
    }


def safe_file_name(name: str, max_bytes: int = MAX_NAME_BYTES) -> str:
    """The last path segment of ``name``, made safe as the last segment of an S3 key.

    Basename (either separator: browsers on Windows may send a full path), NFC, control and
    invisible format characters and ``/`` ``\\`` removed, ``${`` defused (S3 substitutes
    ``${filename}`` in a POST's key field), leading dots and surrounding spaces stripped, cut to
    ``max_bytes`` UTF-8 bytes keeping a short extension. Spaces, punctuation and letters of every
    script are kept: "Jane Doé référence.pdf" stays as it is. Empty -> "upload".
    """
    name = re.split(r"[/\\]", name)[-1]
    name = unicodedata.normalize("NFC", name)
    name = "".join(c for c in name if unicodedata.category(c) not in _DROPPED_CATEGORIES)
    name = name.replace("${", "$_{")
    name = name.strip().lstrip(".").strip()
    if len(name.encode("utf-8")) > max_bytes:
        stem, dot, ext = name.rpartition(".")
        if dot and stem and 0 < len(ext.encode("utf-8")) <= 16:
            ext = "." + ext
        else:
            stem, ext = name, ""
        name = _cut_utf8(stem, max_bytes - len(ext.encode("utf-8"))).rstrip() + ext
    return name or DEFAULT_NAME


def _cut_utf8(text: str, max_bytes: int) -> str:
    """The longest prefix of ``text`` within ``max_bytes`` UTF-8 bytes (whole characters only)."""
    return text.encode("utf-8")[:max_bytes].decode("utf-8", "ignore")


# ---- GET /uploads/{upload_id} and GET /documents/{document_id} ---------------------------------


def _upload_id(raw: str) -> str:
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise ApiError(404, "no such upload") from None


def _owner_prefix(settings: Settings, sub: str) -> str:
    return f"{settings.uploads_prefix}{sub}/"


def upload_status(settings: Settings, s3: Any, sub: str, upload_id: str) -> dict[str, Any]:
    from pipeline.database import transaction

    prefix = f"{_owner_prefix(settings, sub)}{upload_id}/"
    with transaction(settings) as s:
        docs = list(
            s.scalars(
                select(Document)
                .where(Document.bucket == settings.bucket,
                       Document.key_folder_sha256 == folder_digest(prefix),  # indexed (a digest of the folder)
                       Document.object_key.startswith(prefix, autoescape=True))
                .order_by(Document.created_at, Document.id)
                .limit(MAX_DOCUMENTS)
            )
        )
        # Exact, case-sensitive check too: MySQL's default collation compares case-insensitively.
        docs = [d for d in docs if d.object_key.startswith(prefix)]
        items = _items(s, docs)
    if items:
        return {"upload_id": upload_id, "status": "received", "documents": items}
    if _object_under(s3, settings.bucket, prefix):
        return {"upload_id": upload_id, "status": "waiting", "documents": []}
    raise ApiError(404, "no such upload")


def _object_under(s3: Any, bucket: str, prefix: str) -> bool:
    """Whether the caller's upload prefix holds an object the dispatcher has not registered yet."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return bool(s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1).get("KeyCount"))
    except (BotoCoreError, ClientError) as exc:
        raise TransientError(f"could not list the upload ({type(exc).__name__})") from None


def document_status(settings: Settings, sub: str, document_id: str) -> dict[str, Any]:
    from pipeline.database import transaction

    with transaction(settings) as s:
        doc = s.get(Document, document_id)
        if doc is None or doc.bucket != settings.bucket or not doc.object_key.startswith(_owner_prefix(settings, sub)):
            raise ApiError(404, "no such document")
        return _items(s, [doc])[0]


def _items(s: Any, docs: list[Document]) -> list[dict[str, Any]]:
    """Document items, reading notices and job results of all ``docs`` in two queries."""
    if not docs:
        return []
    ids = [d.id for d in docs]
    attempt = {d.id: d.attempt for d in docs}
    notices: dict[str, Notice] = {}
    for n in s.scalars(select(Notice).where(Notice.document_id.in_(ids))):
        if n.attempt == attempt[n.document_id]:
            notices[n.document_id] = n
    outputs: dict[str, dict[str, str]] = {i: {} for i in ids}
    jobs = s.scalars(
        select(Job).where(Job.document_id.in_(ids), Job.status == "SUCCEEDED").order_by(Job.created_at)
    )
    for j in jobs:
        if j.attempt == attempt[j.document_id] and isinstance(j.result, dict):
            found = j.result.get("outputs")
            if isinstance(found, dict):
                outputs[j.document_id].update({str(k): str(v) for k, v in found.items()})
    return [_item(d, notices.get(d.id), outputs[d.id]) for d in docs]


def _item(doc: Document, notice: Notice | None, outputs: dict[str, str]) -> dict[str, Any]:
    final = doc.status in FINAL_STATUSES
    payload = notice.payload if notice is not None and isinstance(notice.payload, dict) else {}
    return {
        "document_id": doc.id,
        "status": doc.status,
        "attempt": doc.attempt,
        "reason_code": doc.reason_code,
        "reason": doc.reason_message,
        "received_at": _iso(doc.created_at),
        "finished_at": _iso(doc.updated_at) if final else None,
        "outputs": payload.get("outputs", outputs) if final else outputs,
        "counts": payload.get("counts", {}) if final else {},
    }


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite hands back naive datetimes; every one we write is UTC
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
