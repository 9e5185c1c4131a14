"""The upload API Lambda against moto's S3 server, with real multipart POSTs and real boto3 calls.

The presigned POST the API signs is sent over HTTP, as a browser would, to moto's server; the
document is then registered as the dispatcher does (SQLite in a temporary data folder) and read
back through both GET routes, as its owner and as another user.

What moto (5.2) enforces of a POST policy: nothing. Its ``_bucket_response_post`` stores the file
under the form's ``key`` without checking the signature, the expiration, the key, the
Content-Type or the content-length-range. So every "S3 refuses it" case below posts the form to
moto and, where moto accepts it (the gap), asserts instead that the signed policy refuses it, with
``policy_refusal``: S3's documented evaluation of a POST policy (every form field covered by a
condition; exact match, starts-with, content-length-range; expiration), applied to the policy
decoded from the fields the API returned, whose SigV4 signature is checked too. If a later moto
enforces policies, those cases assert its 403 instead.
"""
from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import logging
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone

import boto3
import pytest
import requests

from conftest import EVENTS, FILES, REPO
from pipeline import database, repository, upload_api
from pipeline.events import UploadRef
from pipeline.models import Job
from pipeline.settings import Settings

REGION = "eu-west-1"
BUCKET = "medintake-uploads-test"
LIMIT = 4096  # the upload limit in these tests (bytes)
OWNER = "7d4c2a1e-5b3f-4e8a-9c6d-1f2e3a4b5c6d"
OTHER = "0b9e8d7c-6a5f-4e3d-2c1b-0a9f8e7d6c5b"
NAME = "Jane Doé référence.pdf"  # fabricated; spaces and non-ASCII letters must survive
PHI_MARKERS = ("Jane", "Doé", "Doe", "référence", "reference")
PDF = (FILES / "digital_referral.pdf").read_bytes()


# ---- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_endpoint():
    from moto.server import ThreadedMotoServer

    # The fake S3's own access log (werkzeug) prints keys; it is not part of the Lambda.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def api(moto_endpoint, tmp_path, monkeypatch):
    requests.post(f"{moto_endpoint}/moto-api/reset", timeout=10).raise_for_status()
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "MEDINTAKE_DATA_DIR": str(tmp_path / "data"),
        "MEDINTAKE_STORE_BACKEND": "s3",
        "MEDINTAKE_BUCKET": BUCKET,
        "MEDINTAKE_S3_ENDPOINT_URL": moto_endpoint,
        "MEDINTAKE_AWS_REGION": REGION,
        # The limit under both names: upload_max_bytes is on its way into Settings.
        "MEDINTAKE_UPLOAD_MAX_BYTES": str(LIMIT),
        "MEDINTAKE_MAX_UPLOAD_BYTES": str(LIMIT),
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name=REGION)
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    settings = Settings.load()
    database.upgrade(settings)  # the dispatcher's cold start does this on AWS
    upload_api.reset()
    yield {"s3": s3, "settings": settings}
    upload_api.reset()


# ---- API Gateway events -----------------------------------------------------------------------

TEMPLATE = json.loads((EVENTS / "apigw_rest_cognito.json").read_text())


def event(method: str, resource: str, params: dict | None = None, body=None, sub: str | None = OWNER,
          claims: object = "default", base64_body: bool = False) -> dict:
    """A REST API (v1) proxy event as API Gateway sends it with a Cognito user pool authorizer."""
    ev = copy.deepcopy(TEMPLATE)
    params = params or None
    path = resource
    for k, v in (params or {}).items():
        path = path.replace("{" + k + "}", v)
    ev.update(httpMethod=method, resource=resource, path=path, pathParameters=params)
    ctx = ev["requestContext"]
    ctx.update(httpMethod=method, resourcePath=resource, path=f"/prod{path}", requestId=str(uuid.uuid4()))
    if claims != "default":
        ctx["authorizer"] = {"claims": claims} if claims is not None else {"claims": None, "scopes": None}
    elif sub is None:
        del ctx["authorizer"]
    else:
        ctx["authorizer"]["claims"].update({"sub": sub, "cognito:username": sub})
    if body is not None and not isinstance(body, str):
        body = json.dumps(body)
    if base64_body and body is not None:
        body = base64.b64encode(body.encode()).decode()
    ev.update(body=body, isBase64Encoded=base64_body)
    return ev


def handler_logs(caplog) -> str:
    """Every log line of the test but the fake S3 server's access log (boto3's included)."""
    return "\n".join(r.getMessage() for r in caplog.records if r.name != "werkzeug")


def call(ev: dict) -> tuple[int, dict]:
    resp = upload_api.handler(ev, None)
    assert resp["headers"]["Content-Type"] == "application/json"
    assert resp["isBase64Encoded"] is False
    return resp["statusCode"], json.loads(resp["body"])


def create(name: str = NAME, content_type: str = "application/pdf", size: int = len(PDF), sub: str = OWNER):
    return call(event("POST", "/uploads", body={"file_name": name, "content_type": content_type, "size": size},
                      sub=sub))


def get_upload(upload_id: str, sub: str = OWNER):
    return call(event("GET", "/uploads/{upload_id}", {"upload_id": upload_id}, sub=sub))


def get_document(document_id: str, sub: str = OWNER):
    return call(event("GET", "/documents/{document_id}", {"document_id": document_id}, sub=sub))


def post_form(grant: dict, data: bytes, filename: str = NAME, **overrides) -> requests.Response:
    """The browser's multipart/form-data POST: the fields as given, then the file, last."""
    fields = {**grant["fields"], **overrides}
    return requests.post(grant["url"], data=fields, files={"file": (filename, data, fields.get("Content-Type"))},
                         timeout=10)


def register(api, key: str, version_id: str) -> UploadRef:
    """What the dispatcher does with the S3 event of that object version."""
    head = api["s3"].head_object(Bucket=BUCKET, Key=key, VersionId=version_id)
    ref = UploadRef(BUCKET, key, head.get("VersionId"), head["ETag"].strip('"'), head["ContentLength"])
    doc, created = repository.register_document(api["settings"], ref)
    assert created and doc.id == ref.document_id
    return ref


def versions(api, key: str) -> list[str]:
    listed = api["s3"].list_object_versions(Bucket=BUCKET, Prefix=key).get("Versions", [])
    return [v["VersionId"] for v in sorted(listed, key=lambda v: v["LastModified"]) if v["Key"] == key]


# ---- the POST policy, as S3 evaluates it --------------------------------------------------------


def sigv4_policy_signature(policy_b64: str, credential: str, secret: str) -> str:
    _, date, region, service, _ = credential.split("/")
    key = ("AWS4" + secret).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, policy_b64.encode(), hashlib.sha256).hexdigest()


def policy_refusal(form: dict, file_size: int, bucket: str = BUCKET, now: datetime | None = None) -> str | None:
    """Why S3 would refuse this POST under its policy (None: it would accept), per the S3 docs
    "Creating a POST policy": expiration, every condition met, every form field covered."""
    policy = json.loads(base64.b64decode(form["policy"]))
    now = now or datetime.now(timezone.utc)
    if now >= datetime.strptime(policy["expiration"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc):
        return "expired"
    values = {k.lower(): v for k, v in form.items()} | {"bucket": bucket}
    covered = {"bucket"}
    for cond in policy["conditions"]:
        if isinstance(cond, dict):
            ((name, expected),) = cond.items()
            op, name = "eq", name.lower()
        elif cond[0] == "content-length-range":
            if not cond[1] <= file_size <= cond[2]:
                return "content-length-range"
            continue
        else:
            op, name, expected = cond[0], cond[1].lstrip("$").lower(), cond[2]
        covered.add(name)
        actual = values.get(name)
        if actual is None or (op == "eq" and actual != expected) or (
                op == "starts-with" and not actual.startswith(expected)):
            return f"condition on {name}"
    exempt = {"policy", "x-amz-signature", "file"}
    extra = [k for k in values if k not in covered | exempt and not k.startswith("x-ignore-")]
    return f"field not in the policy: {extra[0]}" if extra else None


def refused(resp: requests.Response, form: dict, file_size: int) -> None:
    """Refused by S3, or, where moto does not enforce POST policies (the gap), by the policy."""
    if resp.status_code >= 400:
        assert resp.status_code == 403
    else:  # moto accepted it: the signed policy is what refuses it on S3
        assert policy_refusal(form, file_size) is not None


# ---- the upload, end to end -------------------------------------------------------------------


def test_presigned_post_puts_the_file_under_its_exact_key_and_the_owner_sees_its_status(api, caplog):
    caplog.set_level(logging.INFO)
    status, grant = create()
    assert status == 201
    upload_id = grant["upload_id"]
    assert uuid.UUID(upload_id).version == 4
    key = f"uploads/{OWNER}/{upload_id}/{NAME}"
    assert grant["key"] == key
    assert grant["expires_in"] == 900 and grant["max_bytes"] == len(PDF)
    assert grant["url"] == f"{api['settings'].s3_endpoint_url}/{BUCKET}"  # path style on an explicit endpoint
    fields = grant["fields"]
    assert fields["key"] == key and fields["Content-Type"] == "application/pdf"
    assert fields["x-amz-algorithm"] == "AWS4-HMAC-SHA256"  # SigV4, never the deprecated SigV2
    assert fields["x-amz-signature"] == sigv4_policy_signature(fields["policy"], fields["x-amz-credential"], "testing")
    policy = json.loads(base64.b64decode(fields["policy"]))
    assert {"key": key} in policy["conditions"] and {"bucket": BUCKET} in policy["conditions"]
    assert {"Content-Type": "application/pdf"} in policy["conditions"]
    assert ["content-length-range", 1, len(PDF)] in policy["conditions"]
    expires = datetime.strptime(policy["expiration"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    assert timedelta(minutes=14) < expires - datetime.now(timezone.utc) <= timedelta(minutes=15)
    assert policy_refusal(fields, len(PDF)) is None  # the genuine form passes the policy

    # Before the upload: nothing under the caller's prefix.
    assert get_upload(upload_id)[0] == 404

    resp = post_form(grant, PDF)
    assert resp.status_code == 204, resp.text
    (version,) = versions(api, key)
    obj = api["s3"].get_object(Bucket=BUCKET, Key=key)
    assert obj["Body"].read() == PDF and obj["ContentType"] == "application/pdf"
    assert [o["Key"] for o in api["s3"].list_objects_v2(Bucket=BUCKET)["Contents"]] == [key]

    # Uploaded, not yet registered by the dispatcher: the owner is told to wait, others get 404.
    assert get_upload(upload_id) == (200, {"upload_id": upload_id, "status": "waiting", "documents": []})
    assert get_upload(upload_id, sub=OTHER)[0] == 404

    ref = register(api, key, version)
    status, body = get_upload(upload_id)
    assert status == 200 and body["upload_id"] == upload_id and body["status"] == "received"
    (item,) = body["documents"]
    assert item["document_id"] == ref.document_id
    assert (item["status"], item["attempt"], item["reason_code"], item["reason"]) == ("RECEIVED", 1, None, None)
    assert item["received_at"].endswith("Z") and item["finished_at"] is None
    assert item["outputs"] == {} and item["counts"] == {}
    assert get_document(ref.document_id) == (200, item)

    # Another user: 404 for both, exactly as for ids that never existed.
    assert get_upload(upload_id, sub=OTHER) == (404, {"message": "no such upload"})
    assert get_document(ref.document_id, sub=OTHER) == (404, {"message": "no such document"})
    assert get_document("0" * 32) == (404, {"message": "no such document"})

    # No file name, no key in any answer but the grant, nor in any log line.
    logs = handler_logs(caplog)
    everything = json.dumps([body, item]) + logs
    assert key not in everything and not any(m in everything for m in PHI_MARKERS)
    assert upload_id in logs and ref.document_id in logs  # ids are logged, with the route template
    assert "GET /uploads/{upload_id} -> 404" in logs and "GET /documents/{document_id} -> 200" in logs


def test_a_new_object_version_is_a_new_document_and_progress_shows(api, caplog):
    caplog.set_level(logging.INFO)
    _, grant = create()
    assert post_form(grant, PDF).status_code == 204
    assert post_form(grant, PDF).status_code == 204  # the same form again, within its expiry
    first, second = versions(api, grant["key"])
    ref1, ref2 = register(api, grant["key"], first), register(api, grant["key"], second)
    assert ref1.document_id != ref2.document_id

    # The first document completes as the tracker records it: job results, then the notice.
    settings = api["settings"]
    doc_id = ref1.document_id
    assert repository.claim(settings, doc_id, 1, "RECEIVED", "QUEUED")
    outputs = {"text": f"results/{doc_id}/text.txt", "entities": f"results/{doc_id}/entities.json"}
    repository.add_job(settings, Job(id="job-extract-1", document_id=doc_id, attempt=1, kind="extract",
                                     name=f"medintake-extract-{doc_id}-a1", status="SUCCEEDED", tries=1,
                                     depends_on=[]))
    repository.save_job_result(settings, "job-extract-1", result={"outputs": outputs})
    status, item = get_document(doc_id)
    assert status == 200 and item["status"] == "QUEUED" and item["outputs"] == outputs and item["finished_at"] is None
    final_outputs = {**outputs, "manifest": f"results/{doc_id}/manifest.json"}
    counts = {"pages": 2, "entities": 7, "renditions": 2, "ocr_pages": 0}
    assert repository.finalize(settings, doc_id, 1, "COMPLETED", None,
                               {"document_id": doc_id, "outputs": final_outputs, "counts": counts})
    # The second one is rejected.
    assert repository.finalize(settings, ref2.document_id, 1, "REJECTED",
                               ("encrypted_pdf", "the PDF is password-protected"), {"outputs": {}, "counts": {}})

    status, body = get_upload(grant["upload_id"])
    assert status == 200
    done, rejected = body["documents"]
    assert done["document_id"] == doc_id and done["status"] == "COMPLETED"
    assert done["outputs"] == final_outputs and done["counts"] == counts and done["finished_at"].endswith("Z")
    assert (rejected["status"], rejected["reason_code"], rejected["reason"]) == (
        "REJECTED", "encrypted_pdf", "the PDF is password-protected")
    assert get_document(ref2.document_id) == (200, rejected)
    text = json.dumps(body) + handler_logs(caplog)
    assert grant["key"] not in text and not any(m in text for m in PHI_MARKERS)


def test_s3_refuses_posts_outside_the_policy(api):
    _, grant = create()
    fields = grant["fields"]
    other_key = f"uploads/{OTHER}/{grant['upload_id']}/{NAME}"
    cases = [
        ("another key", {"key": other_key}, PDF),
        ("another Content-Type", {"Content-Type": "text/html"}, PDF),
        ("a body over the declared size", {}, PDF + b"\n%%EOF padding"),
        ("a body over the upload limit", {}, PDF + b"\0" * (LIMIT + 1 - len(PDF))),
        ("a field the policy does not name", {"acl": "public-read"}, PDF),
        ("an empty body", {}, b""),
    ]
    for what, overrides, data in cases:
        resp = post_form(grant, data, **overrides)
        form = {**fields, **overrides}
        assert policy_refusal(form, len(data)) is not None, what
        refused(resp, form, len(data))
    # A forged policy (a wider length range) no longer matches the signature.
    policy = json.loads(base64.b64decode(fields["policy"]))
    policy["conditions"] = [["content-length-range", 1, 10**12] if isinstance(c, list) else c
                            for c in policy["conditions"]]
    forged = base64.b64encode(json.dumps(policy).encode()).decode()
    assert sigv4_policy_signature(forged, fields["x-amz-credential"], "testing") != fields["x-amz-signature"]
    # Expired: S3 checks the expiration when the POST arrives.
    assert policy_refusal(fields, len(PDF), now=datetime.now(timezone.utc) + timedelta(seconds=901)) == "expired"
    # The genuine upload still goes through, to the one key.
    assert post_form(grant, PDF).status_code == 204
    assert api["s3"].head_object(Bucket=BUCKET, Key=grant["key"])["ContentLength"] == len(PDF)


def test_the_limit_not_the_declared_size_caps_what_is_signed(api):
    status, grant = create(size=LIMIT)
    assert status == 201 and grant["max_bytes"] == LIMIT
    policy = json.loads(base64.b64decode(grant["fields"]["policy"]))
    assert ["content-length-range", 1, LIMIT] in policy["conditions"]
    assert create(size=LIMIT + 1)[0] == 413


# ---- errors ---------------------------------------------------------------------------------------


def test_without_claims_the_answer_is_401(api):
    evs = [
        event("GET", "/uploads/{upload_id}", {"upload_id": str(uuid.uuid4())}, sub=None),  # no authorizer
        event("POST", "/uploads", body={"file_name": NAME, "content_type": "application/pdf", "size": 10},
              claims=None),  # the shape of an event with no authorizer configured
        event("GET", "/documents/{document_id}", {"document_id": "0" * 32}, claims={"email": "a@example.org"}),
        event("GET", "/documents/{document_id}", {"document_id": "0" * 32}, sub=""),
        event("GET", "/documents/{document_id}", {"document_id": "0" * 32}, sub=f"{OWNER}/../{OTHER}"),
        event("GET", "/nowhere", sub=None),  # routes are not revealed to strangers
    ]
    for ev in evs:
        assert call(ev) == (401, {"message": "not authenticated"})


def test_unknown_routes_and_malformed_ids_are_404(api):
    for ev in [
        event("GET", "/uploads"),
        event("DELETE", "/documents/{document_id}", {"document_id": "0" * 32}),
        event("PUT", "/uploads/{upload_id}", {"upload_id": str(uuid.uuid4())}),
        event("GET", "/results"),
        event("GET", "/uploads/{upload_id}", {"upload_id": "../../etc"}),
        event("GET", "/documents/{document_id}", {"document_id": "not-a-document"}),
        event("GET", "/{proxy+}", {"proxy": "uploads/x/y"}),
    ]:
        status, body = call(ev)
        assert status == 404 and set(body) == {"message"}
    # A greedy proxy resource reaches the same routes.
    assert call(event("GET", "/{proxy+}", {"proxy": f"documents/{'0' * 32}"})) == (404, {"message": "no such document"})
    status, _ = call(event("POST", "/{proxy+}", {"proxy": "uploads"},
                           body={"file_name": "a.pdf", "content_type": "application/pdf", "size": 5}))
    assert status == 201


def test_bad_requests_say_what_is_wrong_without_quoting_the_name(api, caplog):
    caplog.set_level(logging.INFO)
    good = {"file_name": NAME, "content_type": "application/pdf", "size": 100}
    cases = [
        (None, 400, "the request body is missing"),
        ("{not json", 400, "the request body is not valid JSON"),
        (f'{{"file_name": "{NAME}", ', 400, "the request body is not valid JSON"),
        ([good], 400, "the request body must be a JSON object"),
        ({**good, "file_name": ""}, 400, "file_name must be a non-empty string"),
        ({**good, "file_name": 12}, 400, "file_name must be a non-empty string"),
        ({k: v for k, v in good.items() if k != "content_type"}, 400, "content_type must be a non-empty string"),
        ({**good, "size": "100"}, 400, "size must be a positive integer"),
        ({**good, "size": True}, 400, "size must be a positive integer"),
        ({**good, "size": 0}, 400, "size must be a positive integer"),
        ({**good, "size": 1.5}, 400, "size must be a positive integer"),
        ({**good, "file_name": "x" * 20000}, 400, "the request body is larger than"),
        ({**good, "content_type": "application/zip"}, 415, "content_type is not one the pipeline reads"),
        ({**good, "content_type": "image/svg+xml"}, 415, "content_type is not one the pipeline reads"),
        ({**good, "content_type": "text/html"}, 415, "content_type is not one the pipeline reads"),
        ({**good, "size": LIMIT + 1}, 413, f"size is larger than the upload limit of {LIMIT} bytes"),
    ]
    for body, expected, message in cases:
        status, answer = call(event("POST", "/uploads", body=body))
        assert status == expected, (body, answer)
        assert answer["message"].startswith(message)
        assert not any(m in answer["message"] for m in PHI_MARKERS)
    _, answer = call(event("POST", "/uploads", body={**good, "content_type": "application/zip"}))
    assert "application/pdf" in answer["message"] and "application/dicom" in answer["message"]
    logs = handler_logs(caplog)
    assert not any(m in logs for m in PHI_MARKERS)
    assert "POST /uploads -> 415" in logs and "POST /uploads -> 413" in logs and "POST /uploads -> 400" in logs


def test_failures_answer_without_detail_and_log_only_the_error_type(api, caplog, monkeypatch):
    caplog.set_level(logging.INFO)

    def broken(*args):
        raise ValueError(f"cannot read uploads/{OWNER}/x/{NAME}")

    monkeypatch.setattr(upload_api, "upload_status", broken)
    assert get_upload(str(uuid.uuid4())) == (500, {"message": "internal error"})

    def unavailable(*args):
        raise upload_api.TransientError(f"database unavailable for {NAME}")

    monkeypatch.setattr(upload_api, "document_status", unavailable)
    status, body = get_document("0" * 32)
    assert status == 503 and NAME not in body["message"]
    logs = handler_logs(caplog)
    assert "internal error (ValueError)" in logs and "GET /documents/{document_id} -> 503" in logs
    assert not any(m in logs for m in PHI_MARKERS)
    assert call({"requestContext": [], "httpMethod": "GET"}) == (401, {"message": "not authenticated"})


def test_base64_bodies_and_content_type_aliases(api):
    body = {"file_name": "scan.JPG", "content_type": "IMAGE/JPG", "size": 1000}
    status, grant = call(event("POST", "/uploads", body=body, base64_body=True))
    assert status == 201 and grant["fields"]["Content-Type"] == "image/jpeg"
    assert grant["key"].endswith("/scan.JPG")
    status, grant = create(name="notes.txt", content_type="text/plain; charset=utf-8", size=10)
    assert status == 201 and grant["fields"]["Content-Type"] == "text/plain"
    bad = event("POST", "/uploads", body="%%%not base64", base64_body=False)
    bad["isBase64Encoded"] = True
    assert call(bad) == (400, {"message": "the request body is not valid base64"})
    for accepted in ("image/tiff", "image/webp", "image/gif", "image/bmp", "image/heic", "image/heif", "image/jp2",
                     "application/dicom", "application/vnd.oasis.opendocument.text", "application/rtf",
                     "application/vnd.openxmlformats-officedocument.wordprocessingml.document"):
        assert create(name="f", content_type=accepted, size=10)[0] == 201, accepted


def test_a_real_file_of_another_type_uploads_with_its_type(api):
    data = (FILES / "fax_two_pages.tiff").read_bytes()
    status, grant = create(name="Fax — Müller 2.tiff", content_type="image/tiff", size=len(data))
    assert status == 201 and grant["key"].endswith("/Fax — Müller 2.tiff")
    assert post_form(grant, data, filename="fax.tiff").status_code == 204
    obj = api["s3"].get_object(Bucket=BUCKET, Key=grant["key"])
    assert obj["ContentType"] == "image/tiff" and obj["Body"].read() == data


# ---- file names -----------------------------------------------------------------------------------


@pytest.mark.parametrize("raw, expected", [
    ("Jane Doé référence.pdf", "Jane Doé référence.pdf"),
    ("Jane Doe\u0301 re\u0301fe\u0301rence.pdf", "Jane Doé référence.pdf"),  # NFD (macOS) -> NFC
    ("C:\\Users\\jane\\Desktop\\scan 1.pdf", "scan 1.pdf"),
    ("../../etc/passwd", "passwd"),
    ("/", "upload"),
    ("..", "upload"),
    ("...", "upload"),
    ("", "upload"),
    ("  \t\n ", "upload"),
    (".bashrc", "bashrc"),
    ("..hidden.pdf", "hidden.pdf"),
    (" . report.pdf ", "report.pdf"),
    ("a\x00b\x1fc\x7f.pdf", "abc.pdf"),
    ("line\nbreak\r.pdf", "linebreak.pdf"),
    ("invoice\u202efdp.exe", "invoicefdp.exe"),  # RIGHT-TO-LEFT OVERRIDE disguising an extension
    ("zero\u200bwidth.pdf", "zerowidth.pdf"),
    ("${filename}.pdf", "$_{filename}.pdf"),  # S3 substitutes ${filename} in a POST's key
    ("患者 報告書.pdf", "患者 報告書.pdf"),
    ("Ωμέγα & Co, (2) + labs; #1 @ 50%.pdf", "Ωμέγα & Co, (2) + labs; #1 @ 50%.pdf"),
])
def test_safe_file_name(raw, expected):
    assert upload_api.safe_file_name(raw) == expected


def test_long_names_are_cut_to_200_utf8_bytes_keeping_the_extension():
    for raw in ("é" * 300 + ".pdf", "a" * 500 + ".docx", "報" * 150 + ".tiff", "x" * 300, "n." + "e" * 300):
        out = upload_api.safe_file_name(raw)
        assert len(out.encode("utf-8")) <= 200 and out.encode("utf-8").decode("utf-8") == out
        assert out[:1] == raw[:1]
        if "." in raw and len(raw.rpartition(".")[2]) <= 16:
            assert out.endswith(raw[raw.rindex("."):])
    assert upload_api.safe_file_name("é" * 300 + ".pdf") == "é" * 98 + ".pdf"


# ---- the Lambda stays light -------------------------------------------------------------------------


def test_the_upload_api_imports_nothing_heavy():
    from test_layout import HEAVY, violations

    assert violations(REPO, ("pipeline.upload_api",)) == []
    code = ("import sys, pipeline.upload_api\n"
            f"print([m for m in {list(HEAVY) + ['jobs', 'compute']!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"


# ---- browsers: CORS (upload_allowed_origins) ------------------------------------------------------

APP = "https://app.example-telehealth.org"


def _from(ev: dict, origin: str) -> dict:
    ev["headers"] = dict(ev.get("headers") or {}, origin=origin)  # API Gateway keeps the client's case
    return ev


def test_a_listed_web_origin_may_call_the_api_and_others_get_no_cors_headers(api, monkeypatch):
    monkeypatch.setenv("MEDINTAKE_UPLOAD_ALLOWED_ORIGINS", f"{APP}, http://localhost:5173")
    upload_api.reset()
    # The preflight carries no token: answered before the caller is looked for.
    pre = upload_api.handler(_from(event("OPTIONS", "/uploads", sub=None), APP), None)
    assert pre["statusCode"] == 204
    assert pre["headers"]["Access-Control-Allow-Origin"] == APP
    assert "POST" in pre["headers"]["Access-Control-Allow-Methods"]
    assert "Authorization" in pre["headers"]["Access-Control-Allow-Headers"]
    ev = _from(event("POST", "/uploads", body={"file_name": NAME, "content_type": "application/pdf",
                                                "size": len(PDF)}), APP)
    resp = upload_api.handler(ev, None)
    assert resp["statusCode"] == 201
    assert resp["headers"]["Access-Control-Allow-Origin"] == APP and resp["headers"]["Vary"] == "Origin"
    # An error answer carries them too, or the page could not read why.
    resp = upload_api.handler(_from(event("GET", "/documents/{document_id}", {"document_id": "0" * 32}), APP), None)
    assert resp["statusCode"] == 404 and resp["headers"]["Access-Control-Allow-Origin"] == APP
    for stranger in ("https://evil.example", "https://app.example-telehealth.org.evil.example", "null"):
        pre = upload_api.handler(_from(event("OPTIONS", "/uploads", sub=None), stranger), None)
        assert pre["statusCode"] == 403 and "Access-Control-Allow-Origin" not in pre["headers"]
        resp = upload_api.handler(_from(event("POST", "/uploads", body={"file_name": NAME, "content_type":
                                                                       "application/pdf", "size": 10}), stranger), None)
        assert "Access-Control-Allow-Origin" not in resp["headers"]


def test_by_default_no_origin_is_allowed(api):
    pre = upload_api.handler(_from(event("OPTIONS", "/uploads", sub=None), APP), None)
    assert pre["statusCode"] == 403 and "Access-Control-Allow-Origin" not in pre["headers"]


@pytest.mark.parametrize("bad", ["*", "https://app.example.org/upload", "http://app.example.org",
                                 "app.example.org", "https://a.example.org,ftp://b.example.org"])
def test_origins_are_checked_when_the_settings_load(bad):
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match="upload_allowed_origins"):
        Settings.load(upload_allowed_origins=bad)
