"""The extract job: text layer or OCR -> text.txt, pages.json, searchable.pdf and the page rows."""
from __future__ import annotations

import time
from typing import Any

from jobs.runner import JobContext, sha256_file
from pipeline import repository
from pipeline.models import Page


def run(ctx: JobContext) -> dict[str, Any]:
    """Run the stage on this attempt's input; store its outputs and rows; return the manifest part."""
    from jobs.extract.text import extract_text

    t0 = time.perf_counter()
    src = ctx.fetch_original()
    # Recorded before identification, so a rejected upload's manifest still names its exact bytes.
    repository.update_document(ctx.settings, ctx.document_id, sha256=sha256_file(src), size=src.stat().st_size)
    kind, _ = ctx.identify(src)
    out = ctx.work / "out"
    out.mkdir()
    result = extract_text(src, kind, out, ctx.settings)
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
    repository.update_document(ctx.settings, ctx.document_id, file_format=kind.format, language=result.language,
                               page_count=len(result.pages))
    return {
        "outputs": outputs,
        "type": {"format": kind.format, "mime": kind.mime, "kind": kind.kind},
        "ocr_pages": result.ocr_pages,
        "pages": len(result.pages),
        "timings": {**result.timings, "total": round(time.perf_counter() - t0, 3)},
        "tool_versions": result.tool_versions,
    }
