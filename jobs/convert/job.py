"""The convert job: the upload -> renditions/ (thumbnail, preview, web; + png, archival by setting) and their rows.

The result names the page the renditions show (``rendition_page``: page 1 of a PDF or document,
frame 1 of an image, whatever the page count; the lossless archival copy alone holds every page).
"""
from __future__ import annotations

import time
from typing import Any

from jobs.runner import JobContext
from pipeline import repository
from pipeline.models import Rendition


def run(ctx: JobContext) -> dict[str, Any]:
    """Run the stage on this attempt's input; store its outputs and rows; return the manifest part."""
    from jobs.convert.renditions import SOURCE_PAGE, make_renditions

    t0, c0 = time.perf_counter(), time.process_time()
    src = ctx.fetch_original()
    kind, _ = ctx.identify(src)
    out = ctx.work / "out"
    out.mkdir()
    renditions = make_renditions(src, kind, out, ctx.settings)
    ctx.store.delete_prefix(ctx.prefix + "renditions/")
    outputs = {}
    rows = []
    for r in renditions:
        key = ctx.upload(f"renditions/{r.filename}", out / "renditions" / r.filename, r.mime)
        outputs[f"renditions/{r.name}"] = key
        rows.append(Rendition(document_id=ctx.document_id, name=r.name, object_key=key, format=r.format,
                              mime=r.mime, width=r.width, height=r.height, bytes=r.bytes))
    repository.replace_renditions(ctx.settings, ctx.document_id, rows)
    # Wall and CPU seconds of the whole job (download, renditions, uploads, rows): the CPU figure is
    # this process's own, so a child running the stages one after the other gets each stage's share.
    return {"outputs": outputs, "renditions": len(rows), "rendition_page": SOURCE_PAGE,
            "timings": {"convert": round(time.perf_counter() - t0, 3),
                        "convert_cpu": round(time.process_time() - c0, 3)}}
