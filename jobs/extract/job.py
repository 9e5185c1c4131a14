"""The extract job: text layer or OCR -> text.txt, pages.json, searchable.pdf and the page rows.

In the array shape a long PDF (more than ``split_pages`` pages needing OCR) is not read here: the
stage returns ``{"split": ...}`` and the child hands the document to page-range jobs
(pipeline/page_ranges.py); the merge job then runs this stage with the plan and merges the
ranges' outputs (jobs/extract/ranges.py). The per_document shape always reads the whole document
in its one extract job (its entities job dependsOn it, so there is nothing to hand over to).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from jobs.runner import JobContext, sha256_file
from pipeline import repository
from pipeline.models import Page


def run(ctx: JobContext) -> dict[str, Any]:
    """Run the stage on this attempt's input; store its outputs and rows; return the manifest part."""
    from jobs.extract.text import extract_text

    t0 = time.perf_counter()
    item = getattr(ctx, "item", None)
    if item is not None and getattr(item, "ranges", ""):
        from jobs.extract.ranges import merge_ranges

        return merge_ranges(ctx, item.ranges, t0)
    src = ctx.fetch_original()
    # Recorded before identification, so a rejected upload's manifest still names its exact bytes.
    repository.update_document(ctx.settings, ctx.document_id, sha256=sha256_file(src), size=src.stat().st_size)
    kind, pages = ctx.identify(src)
    if item is not None and kind.kind == "pdf" and ctx.settings.split_pages and pages > ctx.settings.split_pages:
        from jobs.extract.ranges import pages_to_ocr

        ocr = pages_to_ocr(src)
        if ocr > ctx.settings.split_pages:  # a long scan: page-range jobs read it
            repository.update_document(ctx.settings, ctx.document_id, file_format=kind.format, page_count=pages)
            return {"split": {"pages": pages, "ocr_pages": ocr},
                    "type": {"format": kind.format, "mime": kind.mime, "kind": kind.kind},
                    "timings": {"identify": round(time.perf_counter() - t0, 3)}}
    out = ctx.work / "out"
    out.mkdir()
    result = extract_text(src, kind, out, ctx.settings)
    return store_outputs(ctx, out, result, {"format": kind.format, "mime": kind.mime, "kind": kind.kind}, t0)


def store_outputs(ctx: JobContext, out: Path, result: Any, type_info: dict[str, str], t0: float,
                  extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Upload text.txt, pages.json (and searchable.pdf), replace the page rows; the manifest part."""
    outputs = {
        "text": ctx.upload("text.txt", out / "text.txt", "text/plain; charset=utf-8"),
        "pages": ctx.upload("pages.json", out / "pages.json", "application/json"),
    }
    if (out / "searchable.pdf").exists():
        outputs["searchable_pdf"] = ctx.upload("searchable.pdf", out / "searchable.pdf", "application/pdf")
    else:
        ctx.store.delete_prefix(ctx.prefix + "searchable.pdf")  # a rerun must not keep a stale one
    repository.replace_pages(
        ctx.settings,
        ctx.document_id,
        [Page(document_id=ctx.document_id, page_no=p.page_no, source=p.source, width=p.width, height=p.height,
              rotation=p.rotation, dpi=p.dpi, chars=p.chars, words=p.words, mean_confidence=p.mean_confidence)
         for p in result.pages],
    )
    repository.update_document(ctx.settings, ctx.document_id, file_format=type_info["format"],
                               language=result.language, page_count=len(result.pages))
    failed = [p.page_no for p in result.pages if p.source == "error"]
    return {
        "outputs": outputs,
        "type": type_info,
        "ocr_pages": result.ocr_pages,
        "pages": len(result.pages),
        **({"failed_pages": failed} if failed else {}),
        **(extra or {}),
        "timings": {**result.timings, "total": round(time.perf_counter() - t0, 3)},
        "tool_versions": result.tool_versions,
    }
