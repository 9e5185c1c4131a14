"""Long documents: one page range OCR'd per job, and the merge of the ranges in page order.

``python -m jobs pages --plan KEY`` is a child of the ``pages`` array job
(job_definitions/pages.json; pipeline/page_ranges.py has the graph): child ``i`` reads range
``i`` of the plan with the same extract stage as a whole document (jobs/extract/text.py, pages
``first``-``last``) and stores text.txt, pages.json and searchable.pdf under the range's own
prefix, then ``done.json`` last. A range whose ``done.json`` exists is not read again, so Batch's
retry of one child, or the document's next try after a range failed for good, redoes only the
ranges that did not finish. The child needs the store only, not the database.

:func:`merge_ranges` is the merge job's extract stage: the ranges' outputs concatenated in page
order (text offsets shifted, searchable PDFs joined file to file by qpdf), one range's records in
memory at a time.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pipeline import page_ranges
from pipeline.errors import CorruptFile, MedintakeError, RejectedInput, TransientError
from pipeline.settings import Settings

log = logging.getLogger("medintake.jobs.ranges")

DONE = "done.json"


def pages_to_ocr(src: Path) -> int:
    """How many pages of the PDF have no usable text layer (pdfium, one page at a time): a long
    born-digital PDF reads its text layer in seconds and is not worth splitting."""
    import pypdfium2 as pdfium

    from jobs.extract import pdf as pdfmod
    from jobs.identify import open_pdfium

    doc = open_pdfium(src)
    try:
        need = 0
        for index in range(len(doc)):
            try:
                page = doc[index]
            except pdfium.PdfiumError:
                need += 1
                continue
            try:
                need += not pdfmod.is_usable_text(pdfmod.read_text_layer_pdfium(page).text)
            finally:
                page.close()
        return need
    finally:
        doc.close()


def run_range(settings: Settings, plan_key: str, index: int) -> str:
    """Read range ``index`` of the plan into the store; 'done', or 'skipped' if done before."""
    from jobs.extract.text import extract_text
    from jobs.identify import identify
    from pipeline.store import open_store

    store = open_store(settings)
    plan = page_ranges.parse_plan(store.get_bytes(plan_key))
    if not 0 <= index < len(plan["ranges"]):
        raise MedintakeError("the page-range plan has no range for this child")
    first, last = plan["ranges"][index]
    prefix = page_ranges.range_prefix(plan, index)
    if store.head(prefix + DONE) is not None:
        log.info("pages %d-%d were read by an earlier run", first, last)
        return "skipped"
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="medintake-range-") as tmp:
        src = Path(tmp) / "original"
        store.download(plan["source"], src)
        out = Path(tmp) / "out"
        out.mkdir()
        try:
            result = extract_text(src, identify(src, settings), out, settings, pages=(first, last))
        except RejectedInput as exc:  # the merge job rejects the document with this reason
            store.put_bytes(prefix + DONE, json.dumps({"range": [first, last], "rejected": [
                exc.reason_code, exc.message]}).encode(), "application/json")
            return "done"
        store.put_file(prefix + "text.txt", out / "text.txt", "text/plain; charset=utf-8")
        store.put_file(prefix + "pages.json", out / "pages.json", "application/json")
        if result.searchable_pdf:
            store.put_file(prefix + "searchable.pdf", out / "searchable.pdf", "application/pdf")
    done = {"range": [first, last], "pages": [asdict(p) for p in result.pages], "searchable": result.searchable_pdf,
            "timings": {**result.timings, "range_total": round(time.perf_counter() - t0, 3)},
            "tool_versions": result.tool_versions}
    store.put_bytes(prefix + DONE, json.dumps(done).encode(), "application/json")  # last: the range is done
    log.info("pages %d-%d read in %.1f s", first, last, time.perf_counter() - t0)
    return "done"


def merge_ranges(ctx: Any, plan_key: str, t0: float) -> dict[str, Any]:
    """The merge job's extract stage: every range's outputs in page order -> the document's."""
    from jobs.extract.job import store_outputs
    from jobs.extract.results import ExtractResult, PageResult
    from jobs.extract.text import (
        PAGE_SEPARATOR, PAGES_FILE, SEARCHABLE_FILE, TEXT_FILE, PageTimeout, _document_languages, concatenate_pdfs,
    )

    plan = page_ranges.parse_plan(ctx.store.get_bytes(plan_key))
    work = ctx.work / "ranges"
    work.mkdir()
    out = ctx.work / "out"
    out.mkdir()
    pages: list[PageResult] = []
    timings: dict[str, float] = {}
    versions: dict[str, str] = {}
    parts: list[tuple[Path | None, int, int]] = []  # None: the original's pages
    any_searchable = False
    error_codes: set[str] = set()
    offset = 0
    with (out / f".{TEXT_FILE}.part").open("w", encoding="utf-8", newline="") as text_out, \
            (out / f".{PAGES_FILE}.part").open("w", encoding="utf-8") as pages_out:
        pages_out.write("[")
        for index, (first, last) in enumerate(plan["ranges"]):
            prefix = page_ranges.range_prefix(plan, index)
            try:
                done = json.loads(ctx.store.get_bytes(prefix + DONE))
            except Exception:
                raise TransientError(f"page range {index + 1} has no outputs yet") from None
            if done.get("rejected"):
                exc = RejectedInput(done["rejected"][1])
                exc.reason_code = done["rejected"][0]
                raise exc
            ctx.store.download(prefix + "text.txt", work / "text.txt")
            ctx.store.download(prefix + "pages.json", work / "pages.json")
            text = (work / "text.txt").read_text(encoding="utf-8")
            records = json.loads((work / "pages.json").read_text(encoding="utf-8"))
            if [r["page_no"] for r in records] != list(range(first, last + 1)):
                raise TransientError(f"page range {index + 1} is incomplete")
            if index:
                text_out.write(PAGE_SEPARATOR)
                offset += len(PAGE_SEPARATOR)
            for record in records:
                record["text_offset"] += offset
                if record.get("source") == "error":
                    error_codes.add(record.get("error") or "")
                pages_out.write(("," if pages else "") + "\n" + json.dumps(record, ensure_ascii=False))
                pages.append(PageResult(**next(p for p in done["pages"] if p["page_no"] == record["page_no"])))
            text_out.write(text)
            offset += len(text)
            for name, seconds in (done.get("timings") or {}).items():
                timings[name] = timings.get(name, 0.0) + float(seconds)
            versions.update(done.get("tool_versions") or {})
            if done.get("searchable"):
                any_searchable = True
                path = work / f"{first:05d}-{last:05d}.pdf"
                ctx.store.download(prefix + "searchable.pdf", path)
                parts.append((path, 1, last - first + 1))
            else:
                parts.append((None, first, last))
        pages_out.write("\n]\n")
    failed = [p for p in pages if p.source == "error"]
    if failed and len(failed) == len(pages):  # nothing readable: the document's error, as unsplit
        if error_codes == {"corrupt_file"}:
            raise CorruptFile("no page of the PDF can be read")
        raise PageTimeout("no page of the PDF was read within its time limit")
    if any_searchable:
        t1 = time.perf_counter()
        original = ctx.fetch_original() if any(p is None for p, _, _ in parts) else None
        concatenate_pdfs([(p or original, a, b) for p, a, b in parts], out / f".{SEARCHABLE_FILE}.part")
        os.replace(out / f".{SEARCHABLE_FILE}.part", out / SEARCHABLE_FILE)
        timings["merge_searchable_pdf"] = time.perf_counter() - t1
    os.replace(out / f".{TEXT_FILE}.part", out / TEXT_FILE)
    os.replace(out / f".{PAGES_FILE}.part", out / PAGES_FILE)
    result = ExtractResult(pages=pages, language=_document_languages(pages, ctx.settings),
                           searchable_pdf=any_searchable, tool_versions=versions,
                           timings={k: round(v, 4) for k, v in timings.items()})
    type_info = {"format": ctx.doc.file_format or "PDF", "mime": "application/pdf", "kind": "pdf"}
    return store_outputs(ctx, out, result, type_info, t0, extra={"ranges": len(plan["ranges"])})

