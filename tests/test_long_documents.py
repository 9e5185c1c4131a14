"""Long documents (issue 10, docs/scale.md "Long documents"): page-range jobs and their merge.

The documents are real PDFs made here from the real scanned page of tests/files
(scanned_discharge.pdf): each page two of its text lines, so each page differs and OCRs in a
fraction of a second; real tesseract reads every page. Locally the ranges run as a ``pages`` array
job on the local compute environment's worker processes (SQLite and MariaDB); on the AWS path the
same graph goes through moto and the Batch emulator.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from conftest import FILES, MYSQL_URL, _server_database, batch_path_on_moto, read_notices
from compute.runtime import LocalRuntime
from pipeline import aws_lambda, page_ranges, repository
from pipeline.settings import Settings

REGION = "eu-west-1"
# Text-line bands of the scan (pixel rows): the title and the four lines of the summary.
BANDS = [(92, 148), (150, 212), (215, 280), (282, 345), (348, 412)]


def _scan():
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument(FILES / "scanned_discharge.pdf")
    try:
        return list(doc[0].get_objects())[0].get_bitmap().to_pil().convert("L")
    finally:
        doc.close()


def scanned_pdf(path: Path, pages: int = 12, dense: tuple[int, ...] = (), broken: tuple[int, ...] = ()) -> Path:
    """A PDF of ``pages`` scanned pages; pages in ``dense`` are full Letter pages of 100 lines (a
    few seconds of OCR each); pages in ``broken`` have a page-tree entry pointing at the catalog,
    which pdfium cannot load as a page."""
    from PIL import Image

    scan = _scan()
    out = []
    for k in range(pages):
        if k + 1 in dense:
            page = Image.new("L", (2550, 3300), 255)
            block = scan.crop((60, 90, 980, 415))
            for y in range(100, 3200, 330):
                for x in (50, 1290):
                    page.paste(block, (x, y))
        else:
            a, b = BANDS[k % 5], BANDS[(k // 5 + 1 + k % 5) % 5]
            page = Image.new("L", (1000, 260), 255)
            page.paste(scan.crop((0, a[0], 1000, a[1])), (0, 40))
            page.paste(scan.crop((0, b[0], 1000, b[1])), (0, 150))
        out.append(page)
    out[0].save(path, save_all=True, append_images=out[1:], resolution=300)
    if broken:
        data = path.read_bytes()
        kids = re.search(rb"/Kids \[([^\]]*)\]", data)
        refs = kids.group(1).split(b" R")
        for n in broken:  # same length: the xref offsets stay right; only the tree is wrong
            old = refs[n - 1] + b" R"
            refs[n - 1] = b" 1 0".rjust(len(refs[n - 1]))
            assert len(refs[n - 1] + b" R") == len(old)
        data = data.replace(kids.group(0), b"/Kids [" + b" R".join(refs) + b"]")
        path.write_bytes(data)
    return path


def unsplit(src: Path, settings: Settings, tmp: Path) -> tuple[str, list[dict]]:
    """The same document read by the whole-document extract stage, in this process."""
    from jobs.extract.text import extract_text
    from jobs.identify import identify

    out = tmp / "unsplit"
    out.mkdir()
    extract_text(src, identify(src, settings), out, settings)
    return (out / "text.txt").read_text(encoding="utf-8"), json.loads((out / "pages.json").read_text())


@pytest.fixture(params=["sqlite", "mariadb"])
def database_url(request):
    if request.param == "sqlite":
        yield None
        return
    gen = _server_database(MYSQL_URL, "mysql")
    url = next(gen)
    try:
        yield url
    finally:
        next(gen, None)


def run_local(settings: Settings, src: Path, on_step=None):
    with LocalRuntime(settings) as rt:
        sub = rt.submit(src)
        rt.run_until_final([sub.document_id], on_step=(lambda: on_step(rt)) if on_step else None, max_seconds=240)
        jobs = {j: rt.compute.describe(j) for j in rt.compute.jobs}
        return repository.get_document(settings, sub.document_id), rt.outputs(sub.document_id), jobs


def page_texts(text: str, records: list[dict]) -> list[str]:
    return [text[r["text_offset"]:r["text_offset"] + r["chars"]] for r in records]


def test_a_12_page_scan_is_read_in_3_ranges_in_parallel_and_merged_as_one_run(tmp_path, database_url):
    settings = Settings.load(data_dir=tmp_path / "data", workers=2, job_shape="array", split_pages=5,
                             database_url=database_url)
    src = scanned_pdf(tmp_path / "bundle.pdf")
    doc, outputs, jobs = run_local(settings, src)
    assert (doc.status, doc.page_count) == ("COMPLETED", 12)
    ranges = [d for d in jobs.values() if d["jobName"].startswith("medintake-pages-")]
    parent = next(d for d in ranges if "size" in d.get("arrayProperties", {}))
    children = [d for d in ranges if "index" in d.get("arrayProperties", {})]
    assert parent["arrayProperties"]["size"] == 3 and len(children) == 3
    assert all(d["status"] == "SUCCEEDED" and len(d["attempts"]) == 1 for d in children)
    # Two worker slots: two ranges ran at the same time.
    spans = sorted((d["startedAt"], d["stoppedAt"]) for d in children)
    assert spans[1][0] < spans[0][1]
    # The merge job is a process job that dependsOn the range job; the split row handed over to it.
    rows = repository.jobs_for(settings, doc.id, 1)
    assert sorted((r.status, r.reason_code or "") for r in rows) == [("SUCCEEDED", ""),
                                                               ("SUCCEEDED", page_ranges.SPLIT_SUBMITTED)]
    merge = next(d for d in jobs.values() if d["dependsOn"])
    assert merge["dependsOn"] == [{"jobId": parent["jobId"]}] and merge["parameters"]["manifest"]
    # Text and pages.json as one whole-document run gives them, page for page, in order.
    text = Path(outputs["text"]).read_text(encoding="utf-8")
    records = json.loads(Path(outputs["pages"]).read_text())
    whole_text, whole_records = unsplit(src, settings, tmp_path)
    assert [r["page_no"] for r in records] == list(range(1, 13))
    assert page_texts(text, records) == page_texts(whole_text, whole_records)
    assert text == whole_text and [r["words"] for r in records] == [r["words"] for r in whole_records]
    assert "metformin" in text and all(r["source"] == "ocr" for r in records)
    import pypdfium2 as pdfium

    searchable = pdfium.PdfDocument(outputs["searchable_pdf"])
    assert len(searchable) == 12
    searchable.close()
    manifest = json.loads(Path(outputs["manifest"]).read_text())
    assert manifest["page_ranges"] == 3 and manifest["ocr_pages"] == 12 and manifest["status"] == "COMPLETED"
    assert set(manifest["timings"]) == {"extract", "entities", "convert"}
    notices = read_notices(settings)
    assert [(n["notice_id"], n["status"], n["counts"]["pages"]) for n in notices] == [(f"{doc.id}:1", "COMPLETED", 12)]
    # Entities ran once, on the merged text: their offsets point into it.
    entities = json.loads(Path(outputs["entities"]).read_text())["Entities"]
    assert entities and all(text[e["BeginOffset"]:e["EndOffset"]] == e["Text"] for e in entities)
    assert not list((settings.effective_store_root / settings.bucket).rglob("_ranges/*/*/done.json"))
    # The range jobs' state changes are kept once each under the document, for the operator's history.
    from sqlalchemy import select

    from pipeline.database import transaction
    from pipeline.models import JobEvent

    with transaction(settings) as s:
        seen = {(e.job_id, e.status) for e in s.scalars(select(JobEvent).where(JobEvent.document_id == doc.id))}
    assert {(d["jobId"], "SUCCEEDED") for d in [parent, *children]} <= seen


def test_a_range_that_fails_is_retried_alone_and_the_others_are_not_read_again(tmp_path):
    settings = Settings.load(data_dir=tmp_path / "data", workers=2, job_shape="array", split_pages=5)
    src = scanned_pdf(tmp_path / "bundle.pdf")
    root = settings.effective_store_root / settings.bucket
    blocked: list[Path] = []

    def step(rt: LocalRuntime) -> None:
        # The second range's text.txt cannot be written (a directory stands in its place): that
        # child's first attempt fails (exit 70, retryable); the obstacle goes once it failed.
        plans = list(root.glob("results/*/_ranges/a1/plan-t1.json"))
        if plans and not blocked:
            target = root / page_ranges.range_prefix(json.loads(plans[0].read_bytes()), 1) / "text.txt"
            target.mkdir(parents=True)
            blocked.append(target)
        second = [j for j in rt.compute.jobs.values() if j.array_index == 1 and j.sub.kind == page_ranges.PAGES_KIND]
        if blocked and blocked[0].is_dir() and second and second[0].attempts:
            blocked[0].rmdir()

    doc, outputs, jobs = run_local(settings, src, on_step=step)
    assert doc.status == "COMPLETED" and blocked
    children = sorted((d for d in jobs.values() if "index" in d.get("arrayProperties", {})),
                      key=lambda d: d["arrayProperties"]["index"])
    assert [len(d["attempts"]) for d in children] == [1, 2, 1]  # Batch's retry of that child only
    assert children[1]["attempts"][0]["container"]["exitCode"] != 0
    assert [r.name.rsplit("-", 1)[1] for r in repository.jobs_for(settings, doc.id, 1)] == ["t1", "t1"]
    whole_text, _ = unsplit(src, settings, tmp_path)
    assert Path(outputs["text"]).read_text(encoding="utf-8") == whole_text
    assert len(read_notices(settings)) == 1


def test_a_page_over_its_time_limit_and_a_damaged_page_fail_alone(tmp_path):
    """Page 3 cannot be loaded and page 7 takes longer than page_timeout_seconds: the document
    is COMPLETED with both recorded as failed pages (pages.json, manifest, notice counts)."""
    settings = Settings.load(data_dir=tmp_path / "data", workers=2, job_shape="array", split_pages=5,
                             page_timeout_seconds=1.0)
    src = scanned_pdf(tmp_path / "bundle.pdf", dense=(7,), broken=(3,))
    doc, outputs, _ = run_local(settings, src)
    assert doc.status == "COMPLETED"
    records = json.loads(Path(outputs["pages"]).read_text())
    assert [r["page_no"] for r in records] == list(range(1, 13))
    failed = {r["page_no"]: r["error"] for r in records if r["source"] == "error"}
    assert failed == {3: "corrupt_file", 7: "page_timeout"}
    assert "longer than 1 s" in records[6]["message"] and records[6]["chars"] == 0
    assert all(r["source"] == "ocr" and r["chars"] > 20 for r in records if r["page_no"] not in failed)
    manifest = json.loads(Path(outputs["manifest"]).read_text())
    assert manifest["failed_pages"] == [3, 7] and manifest["ocr_pages"] == 10
    (notice,) = read_notices(settings)
    assert (notice["status"], notice["counts"]["failed_pages"], notice["counts"]["ocr_pages"]) == ("COMPLETED", 2, 10)
    import pypdfium2 as pdfium

    searchable = pdfium.PdfDocument(outputs["searchable_pdf"])
    assert len(searchable) == 12  # the damaged page's place kept (blank), the slow page copied as scanned
    searchable.close()


def test_the_per_document_shape_reads_a_long_document_in_its_one_extract_job(tmp_path):
    settings = Settings.load(data_dir=tmp_path / "data", workers=2, job_shape="per_document", split_pages=5)
    src = scanned_pdf(tmp_path / "bundle.pdf", pages=7)
    doc, outputs, jobs = run_local(settings, src)
    assert doc.status == "COMPLETED" and doc.page_count == 7
    assert sorted(d["jobName"].split("-")[1] for d in jobs.values()) == ["convert", "entities", "extract"]
    assert len(json.loads(Path(outputs["pages"]).read_text())) == 7


# ---- the AWS path: the same graph through moto and the Batch emulator -------------------------------

@pytest.fixture
def aws(tmp_path, monkeypatch):
    with batch_path_on_moto(tmp_path, monkeypatch, REGION, MEDINTAKE_SPLIT_PAGES="5") as world:
        yield world


def test_on_batch_a_range_that_fails_for_good_costs_one_more_try_of_that_range_only(aws, tmp_path):
    from batch_emulator import BatchEmulator
    from test_array_jobs import sns_notices, sqs_batch

    from pipeline.events import UploadRef

    src = scanned_pdf(tmp_path / "bundle.pdf")
    body = src.read_bytes()
    put = aws["s3"].put_object(Bucket="medintake-uploads-eu", Key="uploads/x/Jane Doe bundle.pdf", Body=body)
    ref = UploadRef("medintake-uploads-eu", "uploads/x/Jane Doe bundle.pdf", put.get("VersionId"),
                    put["ETag"].strip('"'), len(body))
    assert aws_lambda.dispatch_handler(sqs_batch([ref])) == {"batchItemFailures": []}
    settings = aws["settings"]
    (row,) = repository.jobs_for(settings, ref.document_id, 1)
    emu = BatchEmulator(aws["batch"], aws_lambda.tracker_handler, aws["workdir"], REGION)
    assert emu.run(row.id.split("#")[0])["status"] == "SUCCEEDED"  # identified, handed over

    def graph() -> tuple[str, dict]:
        rows = repository.jobs_for(settings, ref.document_id, 1)
        merge_row = max((r for r in rows if not r.reason_code), key=lambda r: r.name)
        merge = emu.describe(merge_row.id.split("#")[0])
        return merge["dependsOn"][0]["jobId"], merge

    ranges_id, merge = graph()
    assert emu.describe(ranges_id)["arrayProperties"]["size"] == 3
    assert emu.describe(ranges_id)["jobDefinition"].split("/")[-1].startswith("medintake-pages-")
    # Range 2 is killed out of memory on all three of its attempts: the range job fails, so the
    # merge job fails on its dependency and the document gets its next try.
    assert emu.run(ranges_id, faults={1: ["oom", "oom", "oom"]})["status"] == "FAILED"
    assert emu.run(merge["jobId"])["status"] == "FAILED"
    done = {o["Key"]: o["LastModified"] for o in aws["s3"].list_objects_v2(
        Bucket="medintake-uploads-eu", Prefix=f"results/{ref.document_id}/_ranges/")["Contents"]
        if o["Key"].endswith("/done.json")}
    assert len(done) == 2
    rows = repository.jobs_for(settings, ref.document_id, 1)
    retry = next(r for r in rows if r.name.endswith("-t2"))
    assert emu.run(retry.id.split("#")[0])["status"] == "SUCCEEDED"  # try 2 splits again
    ranges_id, merge = graph()
    before = len(emu.commands_run)
    assert emu.run(ranges_id)["status"] == "SUCCEEDED"
    assert len(emu.commands_run) - before == 3  # three children ran ...
    after = {o["Key"]: o["LastModified"] for o in aws["s3"].list_objects_v2(
        Bucket="medintake-uploads-eu", Prefix=f"results/{ref.document_id}/_ranges/")["Contents"]
        if o["Key"].endswith("/done.json")}
    assert len(after) == 3 and all(after[k] == v for k, v in done.items())  # ... two found their range done
    assert emu.run(merge["jobId"])["status"] == "SUCCEEDED"
    doc = repository.get_document(settings, ref.document_id)
    assert (doc.status, doc.page_count) == ("COMPLETED", 12)
    text = aws["s3"].get_object(Bucket="medintake-uploads-eu", Key=f"results/{doc.id}/text.txt")["Body"].read().decode()
    whole_text, _ = unsplit(src, Settings.load(data_dir=tmp_path / "u"), tmp_path)
    assert text == whole_text
    notices = sns_notices(aws)
    assert [(n["notice_id"], n["status"]) for n in notices] == [(f"{doc.id}:1", "COMPLETED")]
    assert all("Jane" not in json.dumps(n) for n in notices)


# ---- the plan and the tracker's order of rows (no pipeline) -----------------------------------------

def test_ranges_are_evened_out_and_the_merge_item_survives_the_manifest():
    from pipeline import batching

    assert page_ranges.plan_ranges(12, 5) == [(1, 4), (5, 8), (9, 12)]
    assert page_ranges.plan_ranges(50, 40) == [(1, 25), (26, 50)]
    assert page_ranges.plan_ranges(40, 40) == [(1, 40)] and page_ranges.plan_ranges(500, 0) == [(1, 500)]
    ranges = page_ranges.plan_ranges(500, 40)
    assert len(ranges) == 13 and ranges[-1][1] == 500 and max(b - a + 1 for a, b in ranges) <= 40
    assert all(b + 1 == c for (_, b), (c, _) in zip(ranges, ranges[1:]))
    items = [batching.Item("d1", 1, 2, ranges="results/d1/_ranges/a1/plan-t2.json"), batching.Item("d2", 3, 1)]
    assert batching.parse_manifest(batching.manifest_body("b", [items])) == [items]


def test_within_a_try_the_merge_row_speaks_for_the_document_even_created_the_same_second():
    from datetime import datetime, timezone

    from pipeline.models import Job
    from pipeline.tracker import decide_rows

    second = datetime(2026, 11, 28, 15, 0, 0, tzinfo=timezone.utc)  # MariaDB DATETIME: whole seconds

    def row(rid: str, status: str, reason: str | None, tries: int = 1) -> Job:
        return Job(id=rid, document_id="d", attempt=1, kind="process", name=f"medintake-process-d-a1-t{tries}",
                   status=status, tries=1, exit_code=0 if status == "SUCCEEDED" else 70, reason_code=reason,
                   created_at=second, depends_on=[])

    split = row("child#0", "SUCCEEDED", page_ranges.SPLIT)
    assert decide_rows([split], retries=2) == ("SPLIT", None)
    submitted = row("child#0", "SUCCEEDED", page_ranges.SPLIT_SUBMITTED)
    assert decide_rows([submitted], retries=2) is None  # waiting for the merge row
    merge = row("merge#0", "RUNNING", None)
    for rows in ([submitted, merge], [merge, submitted]):
        assert decide_rows(rows, retries=2) is None
    done = row("merge#0", "SUCCEEDED", None)
    assert decide_rows([done, submitted], retries=2) == ("COMPLETED", None)
    failed = row("merge#0", "FAILED", None)
    assert decide_rows([submitted, failed], retries=2) == ("RETRY", None)


def test_nothing_readable_is_still_the_documents_error_and_pdfium_assembles_without_qpdf(tmp_path, monkeypatch):
    import shutil

    import pypdfium2 as pdfium

    from jobs.extract import text as textmod
    from jobs.extract.text import PageTimeout, extract_text
    from jobs.identify import identify
    from pipeline.errors import CorruptFile

    settings = Settings.load(data_dir=tmp_path / "data", page_timeout_seconds=1.0)
    broken = scanned_pdf(tmp_path / "broken.pdf", pages=2, broken=(1, 2))
    with pytest.raises(CorruptFile):  # REJECTED corrupt_file, as before pages could fail alone
        extract_text(broken, identify(broken, settings), tmp_path, settings)
    slow = scanned_pdf(tmp_path / "slow.pdf", pages=1, dense=(1,))
    with pytest.raises(PageTimeout):  # retryable (a tool failure), then FAILED
        extract_text(slow, identify(slow, settings), tmp_path, settings)
    children = []  # no tesseract of ours outlives the page it was reading
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            raw = stat.read_text()
        except OSError:
            continue
        if "(tesseract)" in raw and int(raw.rsplit(")", 1)[1].split()[1]) == os.getpid():
            children.append(stat)
    assert children == []
    # Without qpdf, pdfium's writer assembles the same pages (in memory).
    src = scanned_pdf(tmp_path / "four.pdf", pages=4)
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name == "qpdf" else "/usr/bin/" + name)
    out = tmp_path / "out"
    out.mkdir()
    extract_text(src, identify(src, settings), out, settings, pages=(2, 4))
    doc = pdfium.PdfDocument(out / "searchable.pdf")
    assert len(doc) == 3
    doc.close()
    assert textmod.shutil.which("qpdf") is None


def test_the_page_alarm_stops_a_tesseract_that_outlives_the_page(tmp_path):
    """The alarm covers what tesseract's own timeout does not (a page's Python side, a call that
    started late): it raises PageTimeout and kills the tesseract this process started."""
    import subprocess
    import time

    from jobs.extract.text import PageTimeout, _deadline

    page = scanned_pdf(tmp_path / "dense.pdf", pages=1, dense=(1,))
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument(page)
    doc[0].render(scale=300 / 72).to_pil().save(tmp_path / "dense.png")
    doc.close()
    proc = subprocess.Popen(["tesseract", str(tmp_path / "dense.png"), "stdout"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    t0 = time.monotonic()
    with pytest.raises(PageTimeout):
        with _deadline(1.2):  # the page's limit 0.2 s (+1 s margin for tesseract's own timeout)
            proc.wait()
    assert time.monotonic() - t0 < 3  # the page's limit, not the page's OCR (about 3-6 s)
    assert not Path(f"/proc/{proc.pid}").exists()  # killed and reaped at once
