"""The entities job: text.txt -> entities.json (DetectEntitiesV2 shape) and the entity rows."""
from __future__ import annotations

import json
import time
from typing import Any

from jobs.runner import JobContext
from pipeline import repository
from pipeline.models import Entity


def run(ctx: JobContext) -> dict[str, Any]:
    """Run the stage on this attempt's input; store its outputs and rows; return the manifest part."""
    from jobs.entities.detect import detect_entities

    t0 = time.perf_counter()
    text = ctx.store.get_bytes(ctx.prefix + "text.txt").decode("utf-8")
    response = detect_entities(text, ctx.settings)
    path = ctx.work / "entities.json"
    path.write_text(json.dumps(response, ensure_ascii=False, indent=1), encoding="utf-8")
    outputs = {"entities": ctx.upload("entities.json", path, "application/json")}
    repository.replace_entities(
        ctx.settings,
        ctx.document_id,
        [Entity(document_id=ctx.document_id, entity_no=int(e.get("Id", i)), category=e["Category"], type=e["Type"],
                text=e["Text"], begin_offset=e["BeginOffset"], end_offset=e["EndOffset"], score=float(e["Score"]),
                traits=e.get("Traits", []), attributes=e.get("Attributes", []))
         for i, e in enumerate(response.get("Entities", []))],
    )
    return {
        "outputs": outputs,
        "entities": len(response.get("Entities", [])),
        "timings": {"entities": round(time.perf_counter() - t0, 3)},
        "tool_versions": {"entities": str(response.get("ModelVersion", ""))},
    }
