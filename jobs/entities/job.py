"""The entities job: text.txt (+ pages.json) -> entities.json, icd10cm.json... and the entity rows.

Outputs under results/<id>/: ``entities.json`` (DetectEntitiesV2 shape) always; ``icd10cm.json``
(InferICD10CM shape) from the local code set or the service; ``rxnorm.json`` (InferRxNorm) and
``phi.json`` (DetectPHI) when the Comprehend Medical backend is asked for them. pages.json is read
for OCR word confidences (LOW_CONFIDENCE traits); a document without it is processed all the same.
The result dict carries ``usage`` (billed units and estimated cost of Comprehend Medical), which the
tracker copies into manifest.json.
"""
from __future__ import annotations

import json
import time
from typing import Any

from jobs.runner import JobContext
from pipeline import repository


def run(ctx: JobContext) -> dict[str, Any]:
    """Run the stage on this attempt's input; store its outputs and rows; return the manifest part."""
    from jobs.entities.detect import FILES, analyse

    t0, c0 = time.perf_counter(), time.process_time()
    text = ctx.store.get_bytes(ctx.prefix + "text.txt").decode("utf-8")
    analysis = analyse(text, ctx.settings, _low_confidence(ctx))
    response = analysis.entities
    outputs = {"entities": _write(ctx, "entities.json", response)}
    for op, name in sorted(FILES.items()):
        if op in analysis.others:
            outputs[name.removesuffix(".json")] = _write(ctx, name, analysis.others[op])
        else:
            ctx.store.delete_prefix(ctx.prefix + name)  # a rerun with other settings must not keep a stale one
    repository.replace_entities(
        ctx.settings,
        ctx.document_id,
        # Plain dicts of the columns (pipeline/repository.py inserts them as they are): building ~200
        # ORM Entity objects per document cost more CPU than inserting their rows.
        [dict(document_id=ctx.document_id, entity_no=int(e.get("Id", i)), category=e["Category"], type=e["Type"],
              text=e["Text"], begin_offset=e["BeginOffset"], end_offset=e["EndOffset"], score=float(e["Score"]),
              traits=e.get("Traits", []), attributes=e.get("Attributes", []))
         for i, e in enumerate(response.get("Entities", []))],
    )
    result: dict[str, Any] = {
        "outputs": outputs,
        "entities": len(response.get("Entities", [])),
        "low_confidence_entities": analysis.low_confidence,
        "timings": {"entities": round(time.perf_counter() - t0, 3), "entities_cpu": round(time.process_time() - c0, 3)},
        "tool_versions": {"entities": str(response.get("ModelVersion", "")),
                          **{f"entities_{op}": str(o.get("ModelVersion", "")) for op, o in analysis.others.items()}},
    }
    if analysis.billing is not None:
        result["usage"] = analysis.billing  # manifest.json: usage.entities
    return result


def _write(ctx: JobContext, name: str, payload: dict) -> str:
    path = ctx.work / name
    path.write_text(json.dumps(payload, ensure_ascii=False, indent=1), encoding="utf-8")
    return ctx.upload(name, path, "application/json")


def _low_confidence(ctx: JobContext) -> Any:
    """Low-confidence OCR words of this document (None without pages.json: nothing to mark)."""
    from jobs.entities.ocr_confidence import LowConfidence

    try:
        data = ctx.store.get_bytes(ctx.prefix + "pages.json")
    except KeyError:
        return None
    if not any(marker in data for marker in _OCR_PAGE):
        # Only OCR'd pages carry word confidences that can be low (LowConfidence skips the rest);
        # a born-digital document's pages.json need not be parsed at all (a byte search instead).
        return None
    return LowConfidence.from_json(data, ctx.settings.ocr_low_confidence)  # page by page: bounded memory


#: How an OCR'd page's record says so in pages.json (json.dumps' default and compact separators).
#: Inside a string value (a word's text) the quotes would be escaped, so this never misses a page.
_OCR_PAGE = (b'"source": "ocr"', b'"source":"ocr"')
