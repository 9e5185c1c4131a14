"""The convert job: the upload -> renditions/ (thumbnail, preview, web; + png, archival by setting) and their rows."""
from __future__ import annotations

import time
from typing import Any

from jobs.runner import JobContext
from pipeline import repository
from pipeline.models import Rendition


def run(ctx: JobContext) -> dict[str, Any]:
    """Run the stage on this attempt's input; store its outputs and rows; return the manifest part."""
    from jobs.convert.renditions import make_renditions

    t0 = time.perf_counter()
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
    return {"outputs": outputs, "renditions": len(rows), "timings": {"convert": round(time.perf_counter() - t0, 3)}}
