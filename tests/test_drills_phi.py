"""PHI hygiene drill: documents full of marker PHI go through the pipeline; every place that is
not meant to hold PHI is scanned for the markers and must hold none.

Marker PHI (fabricated, distinctive so a hit cannot be a coincidence): a patient's name (also in
the file names), a date of birth, a record number and a phone number, in a text PDF, a DOCX, an
image read by OCR, an empty upload and a corrupt one (rejections and their messages). Scanned:
every log record of every logger at DEBUG in this process (the CLI, dispatcher, tracker, local
compute), the worker processes' log files, every notice, every database column except the two
meant for PHI (documents.object_key, entities.text), every manifest field except ``source.key``,
every exception message we raise, the output of every operator command run without its PHI flag,
and on the AWS path (moto) the Lambdas' Powertools logs at DEBUG, their EMF metrics and the SNS
notice.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import boto3
from click.testing import CliRunner
from conftest import FILES, batch_queue, fixture_makers, subscribed_topic
from sqlalchemy import MetaData, select
from sqlalchemy.exc import SQLAlchemyError

from pipeline import database, repository

NAME = "Quirinus Vanderzwaluw"
MARKERS = ["Quirinus", "Vanderzwaluw", "29/02/1936", "1936-02-29", "7731904482", "867-2309", "867 2309"]
LINES = [
    f"Referral for {NAME}",
    "DOB 29/02/1936 (1936-02-29)  MRN 7731904482",
    "Phone (555) 867-2309",
    "Started metformin 500 mg twice daily for type 2 diabetes mellitus.",
    "No chest pain. HbA1c 8.1 percent.",
]
NOT_PHI_COLUMNS = {("documents", "object_key"), ("entities", "text")}  # the two columns meant for PHI


def hits(text: str) -> list[str]:
    low = text.lower()
    return [m for m in MARKERS if m.lower() in low]


def make_documents(folder: Path) -> list[Path]:
    fixtures = fixture_makers()
    folder.mkdir()
    pdf = folder / f"{NAME} referral.pdf"
    pdf.write_bytes(fixtures.build_text_pdf([LINES]))
    import docx

    d = docx.Document()
    d.core_properties.author = NAME
    d.core_properties.title = f"Discharge {NAME}"
    for line in LINES:
        d.add_paragraph(line)
    office = folder / "Vanderzwaluw, Quirinus - discharge.docx"
    d.save(office)
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("L", (1700, 420), 255)
    draw = ImageDraw.Draw(img)
    font = ImageFont.truetype(fixtures.FONT, 44)
    for i, line in enumerate(LINES[:3]):
        draw.text((40, 40 + i * 110), line, font=font, fill=0)
    card = folder / "Quirinus_Vanderzwaluw_card.png"
    img.save(card)
    empty = folder / f"{NAME} empty.pdf"
    empty.write_bytes(b"")
    corrupt = folder / "Vanderzwaluw Quirinus.pdf"
    corrupt.write_bytes(b"%PDF-1.7\n1 0 obj <</Type /Catalog Quirinus Vanderzwaluw>> broken")
    return [pdf, office, card, empty, corrupt]


def db_rows(settings) -> dict[str, list[dict]]:
    engine = database.get_engine(settings)
    meta = MetaData()
    meta.reflect(engine)
    out = {}
    with engine.connect() as conn:
        for table in meta.sorted_tables:
            rows = [dict(r._mapping) for r in conn.execute(select(table))]
            out[table.name] = [{k: v for k, v in r.items() if (table.name, k) not in NOT_PHI_COLUMNS} for r in rows]
    return out


def test_no_marker_phi_outside_the_places_meant_for_it(tmp_path, monkeypatch, caplog):
    import cli
    from pipeline.logs import configure_logging

    data = tmp_path / "data"
    docs = make_documents(tmp_path / "in")
    monkeypatch.setenv("MEDINTAKE_LOG_LEVEL", "DEBUG")  # workers log at DEBUG too
    monkeypatch.setenv("MEDINTAKE_WORKERS", "2")
    root = logging.getLogger()
    handlers = list(root.handlers)
    configure_logging("DEBUG")  # the production logging set-up (its floors for chatty libraries)
    caplog.set_level(logging.DEBUG)  # every logger, every record, at DEBUG
    runner = CliRunner()
    outputs: dict[str, str] = {}
    try:
        run = runner.invoke(cli.main, ["--data-dir", str(data), "-v", "process", "--json", str(tmp_path / "in")])
        # The one echo of the user's own input: `process` shows each input path as typed, to that user.
        outputs["process --json"] = "\n".join(
            json.dumps({k: v for k, v in json.loads(line).items() if k != "input"})
            for line in run.stdout.splitlines() if line.startswith("{")) + run.stderr
        results = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
        assert len(results) == len(docs), run.output
        ids = [r["document_id"] for r in results]
        statuses = sorted(r["status"] for r in results)
        jobs = [j for i in ids for j in repository.jobs_for(_settings(data), i, 1)]
        commands = {
            "documents list": ["documents", "list"],
            "documents list --json": ["documents", "list", "--json"],
            "queue status": ["queue", "status"],
            "notices list": ["notices", "list", "--state", "sent"],
            "reprocess --dry-run": ["reprocess", "--status", "rejected", "--status", "failed", "--dry-run", "--json"],
            **{f"documents show {i}": ["documents", "show", i] for i in ids},
            **{f"documents show --json {i}": ["documents", "show", "--json", i] for i in ids},
            **{f"jobs show {j.id}": ["jobs", "show", j.id] for j in jobs},
        }
        for label, args in commands.items():
            res = runner.invoke(cli.main, ["--data-dir", str(data), *args])
            assert res.exit_code in (0, 1), (label, res.output)
            outputs[label] = res.stdout + res.stderr
    finally:
        root.handlers[:] = handlers
    settings = _settings(data)
    found: dict[str, list[str]] = {}

    def scan(where: str, text: str) -> None:
        if h := hits(text):
            found.setdefault(where, []).extend(h)

    records = caplog.records
    for rec in records:
        scan(f"log {rec.name}", rec.getMessage() + (rec.exc_text or "") + str(rec.args))
    logs = [p for p in data.rglob("*") if p.is_file() and (p.suffix == ".log" or "log" in p.parent.name)]
    for p in logs:
        scan(f"worker log {p.name}", p.read_text(errors="replace"))
    scan("notices file", settings.effective_notices_path.read_text())
    for table, rows in db_rows(settings).items():
        scan(f"table {table}", json.dumps(rows, default=str))
    manifests = 0
    for i in ids:
        manifest = json.loads((data / "buckets" / settings.bucket / "results" / i / "manifest.json").read_text())
        manifest["source"].pop("key")
        scan(f"manifest {i}", json.dumps(manifest))
        manifests += 1
    for label, text in outputs.items():
        scan(f"CLI {label}", text)
    exceptions = _our_exception_messages(settings)
    for label, text in exceptions.items():
        scan(f"exception {label}", text)
    # The markers did go through: they are where PHI is meant to be.
    assert any(NAME in d.object_key for d in repository.find_documents(settings, ids).values())
    assert found == {}, found
    assert any("7731904482" in p.read_text(errors="replace") for p in (data / "buckets").rglob("text.txt"))
    print(f"\n[drill PHI] {len(docs)} documents with marker PHI ({', '.join(statuses)}); scanned {len(records)} log "
          f"records (DEBUG, all loggers), {len(logs)} worker log files, {len(results)} notices, "
          f"{sum(len(r) for r in db_rows(settings).values())} database rows, {manifests} manifests, "
          f"{len(outputs)} CLI outputs, {len(exceptions)} exception messages: 0 occurrences")


def _settings(data: Path):
    from pipeline.settings import Settings

    return Settings.load(data_dir=data)


def _duplicate_document(settings) -> None:
    from pipeline.models import Document

    doc = repository.notices(settings)[0]
    with database.transaction(settings) as s:
        s.add(Document(id=doc.document_id, bucket="b", object_key=f"uploads/{NAME}.pdf", status="RECEIVED", attempt=1))


def _our_exception_messages(settings) -> dict[str, str]:
    """Our error paths given PHI-laden keys and ids: their messages (what ends up in logs and rows)."""
    from pipeline.errors import MedintakeError
    from pipeline.store import open_store

    store = open_store(settings)
    out: dict[str, str] = {}
    attempts = {
        "missing object": lambda: store.get_bytes(f"uploads/{NAME}.pdf"),
        "unsafe key": lambda: store.get_bytes(f"uploads/../{NAME}.pdf"),
        "overlong key": lambda: store.head(f"uploads/{NAME}" * 80),
        "unknown document": lambda: repository.get_document(settings, f"{NAME}"),
        "a database error": lambda: _duplicate_document(settings),  # what a Lambda's runtime would log
    }
    for label, fn in attempts.items():
        try:
            fn()
        except (MedintakeError, KeyError, SQLAlchemyError) as exc:
            out[label] = f"{type(exc).__name__}: {exc}"
        else:
            raise AssertionError(f"{label} did not fail")
    return out


def test_no_marker_phi_on_the_aws_path(tmp_path, monkeypatch, capsys):
    """Dispatcher and tracker Lambdas on moto: Powertools logs at DEBUG, EMF metrics, the notice."""
    from moto import mock_aws

    from pipeline import aws_lambda
    from pipeline.batch_events import job_state_change_event
    from pipeline.events import UploadRef, s3_notification, sqs_envelope
    from pipeline.settings import Settings
    from conftest import deploy_steps

    region = "eu-west-1"
    key = f"uploads/{NAME} DOB 29-02-1936 MRN 7731904482.pdf"
    with mock_aws(config={"batch": {"use_docker": False}}):
        s3 = boto3.client("s3", region_name=region)
        s3.create_bucket(Bucket="phi-drill", CreateBucketConfiguration={"LocationConstraint": region})
        batch = batch_queue(region, "q", "phi-ce")
        topic, sqs, queue_url = subscribed_topic(region, "notices", "sub")
        env = {"MEDINTAKE_DATA_DIR": str(tmp_path / "data"), "MEDINTAKE_STORE_BACKEND": "s3",
               "MEDINTAKE_BUCKET": "phi-drill", "MEDINTAKE_COMPUTE_BACKEND": "batch", "MEDINTAKE_JOB_QUEUE": "q",
               "MEDINTAKE_WORKER_IMAGE": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/w:1",
               "MEDINTAKE_NOTIFIER": "sns", "MEDINTAKE_SNS_TOPIC_ARN": topic, "MEDINTAKE_AWS_REGION": region,
               "MEDINTAKE_LOG_LEVEL": "DEBUG", "POWERTOOLS_LOG_LEVEL": "DEBUG", "MEDINTAKE_JOB_SHAPE": "per_document"}
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        aws_lambda.reset()
        try:
            deploy_steps(Settings.load())
            body = (FILES / "digital_referral.pdf").read_bytes()
            resp = s3.put_object(Bucket="phi-drill", Key=key, Body=body)
            ref = UploadRef("phi-drill", key, resp.get("VersionId"), resp["ETag"].strip('"'), len(body))
            capsys.readouterr()
            aws_lambda.dispatch_handler(sqs_envelope(s3_notification(ref), message_id="m-1"))
            aws_lambda.dispatch_handler(s3_notification(ref))  # a duplicate: another log and metric path
            settings = aws_lambda._parts()["settings"]
            jobs = repository.jobs_for(settings, ref.document_id, 1)
            for job in batch.describe_jobs(jobs=[j.id for j in jobs])["jobs"]:
                event = job_state_change_event({**job, "status": "SUCCEEDED",
                                                "attempts": [{"container": {"exitCode": 0}}]},
                                               region=region, account="123456789012")
                aws_lambda.tracker_handler(event)
            out = capsys.readouterr()
            messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
        finally:
            aws_lambda.reset()
    assert repository.get_document(settings, ref.document_id).status == "COMPLETED"
    emf = [line for line in out.out.splitlines() if '"_aws"' in line]
    assert emf and len(messages) == 1
    leaks = {"stdout (Powertools logs, EMF)": hits(out.out), "stderr": hits(out.err),
             "notice": hits(json.dumps(messages))}
    assert all(not v for v in leaks.values()), leaks
    print(f"\n[drill PHI AWS path] key with name, DOB and MRN: {len(out.out.splitlines())} Lambda log/EMF lines "
          f"({len(emf)} EMF), 1 SNS notice: 0 occurrences")
