"""Long documents split into page ranges (docs/scale.md, "Long documents"): plans and keys.

The graph of a long document, the same on the local compute environment and on AWS Batch:

1. its ``process`` child (array shape) identifies the upload; a PDF of more than
   ``Settings.split_pages`` pages that needs OCR is not extracted there: the child settles the
   document's row SUCCEEDED with reason code :data:`SPLIT` and the page count in its result;
2. the tracker, on that child's terminal event, claims the row (:data:`SPLIT` ->
   :data:`SPLIT_SUBMITTED`, once, whoever else sees the event) and has the dispatcher submit a
   ``pages`` array job, one child per page range (``jobs.extract.ranges``), and a ``process``
   job for the document alone that ``dependsOn`` it: the merge job;
3. each range child writes its text.txt, pages.json and searchable.pdf under
   ``results/<document>/_ranges/a<attempt>/<first>-<last>/`` and ``done.json`` last, so a rerun of
   one range (Batch's retry of that child, or the document's next try) finds the others done;
4. the merge job merges them in page order as its extract stage, then runs entities and convert
   once; its row decides the document's one final state and notice as any process row does.

Light module (json only): the dispatcher and the tracker import it.
"""
from __future__ import annotations

import json
from typing import Any

#: reason_code of a process row whose document was handed to page-range jobs.
SPLIT = "split_into_ranges"
#: reason_code once the tracker submitted the range jobs and the merge job (claimed once).
SPLIT_SUBMITTED = "ranges_submitted"
PAGES_KIND = "pages"
PLAN_VERSION = 1


def plan_ranges(pages: int, split_pages: int) -> list[tuple[int, int]]:
    """Consecutive 1-based inclusive page ranges of at most ``split_pages`` pages, evened out.

    50 pages at 40 become 25 + 25, not 40 + 10: the ranges run in parallel, so the longest one
    sets the document's time.
    """
    if split_pages <= 0 or pages <= split_pages:
        return [(1, pages)]
    n = -(-pages // split_pages)
    base, extra = divmod(pages, n)
    out, first = [], 1
    for i in range(n):
        size = base + (1 if i < extra else 0)
        out.append((first, first + size - 1))
        first += size
    return out


def ranges_prefix(results_prefix: str, document_id: str, attempt: int) -> str:
    """Where the range outputs of one document attempt live (keyed by attempt, then by range)."""
    return f"{results_prefix}{document_id}/_ranges/a{attempt}/"


def range_prefix(plan: dict[str, Any], index: int) -> str:
    first, last = plan["ranges"][index]
    return f"{plan['prefix']}{first:05d}-{last:05d}/"


def plan_key(results_prefix: str, document_id: str, attempt: int, tries: int) -> str:
    return f"{ranges_prefix(results_prefix, document_id, attempt)}plan-t{tries}.json"


def plan_body(results_prefix: str, document_id: str, attempt: int, pages: int,
              ranges: list[tuple[int, int]], source_key: str) -> bytes:
    """The plan every range child and the merge job read: the upload's key, pages, ranges, prefix."""
    return json.dumps({
        "version": PLAN_VERSION, "document_id": document_id, "attempt": attempt, "pages": pages,
        "source": source_key,
        "ranges": [list(r) for r in ranges], "prefix": ranges_prefix(results_prefix, document_id, attempt),
    }, separators=(",", ":")).encode()


def parse_plan(data: bytes) -> dict[str, Any]:
    plan = json.loads(data)
    if plan.get("version") != PLAN_VERSION or not plan.get("ranges"):
        raise ValueError("not a page-range plan")
    return plan


def job_name(document_id: str, attempt: int, tries: int) -> str:
    return f"medintake-{PAGES_KIND}-{document_id}-a{attempt}-t{tries}"


def claim_split(settings: Any, row_id: str, undo: bool = False) -> bool:
    """The one caller that moves a split row SPLIT -> SPLIT_SUBMITTED submits its ranges
    (at-least-once events, two tracker Lambdas); ``undo`` gives the claim back after a failed
    submission, so the event's redelivery tries again."""
    from sqlalchemy import update

    from pipeline.database import transaction
    from pipeline.models import Job

    before, after = (SPLIT_SUBMITTED, SPLIT) if undo else (SPLIT, SPLIT_SUBMITTED)
    with transaction(settings) as s:
        res = s.execute(update(Job).where(Job.id == row_id, Job.reason_code == before).values(reason_code=after))
        return res.rowcount == 1
