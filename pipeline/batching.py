"""The array shape of the compute step (docs/scale.md, design C): slices, manifests, row ids.

One dispatcher batch becomes one Batch array job (a plain job when it holds one slice). Child
``i`` runs every stage, document after document, for slice ``i`` of a manifest the dispatcher
writes to the store before SubmitJob, so that the child, the tracker and a redelivered event all
read the same assignment. Each document of a child has one ``jobs`` row whose id is the child's
job id (``<parent>:<index>``, or the plain job's id) + ``#`` + its position in the slice: the
worker records the document's outcome there, the tracker finds a child's documents by primary key
(positions 0 .. ``per_child``-1), and the row is created from the manifest by whoever needs it
first if an event overtakes the dispatcher's insert. Light module (json only): dispatcher path.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any, Iterable

PROCESS_KIND = "process"
BATCH_PREFIX = "medintake-batch-"
#: The job state change reason a worker writes on a document's row when it finished it.
DOCUMENT_DONE = "Document finished in its child"
#: reason_code of a transiently failed row whose document was resubmitted alone.
RETRIED = "resubmitted"
MAX_ARRAY_SIZE = 10_000  # AWS Batch: array size 2-10,000


@dataclass(frozen=True)
class Item:
    """One document attempt to process, with its try number and rough work estimate."""

    document_id: str
    attempt: int
    tries: int = 1  # 1 for the first submission of this attempt, n+1 for a resubmission
    seconds: float = 5.0
    # A long document's merge job (pipeline/page_ranges.py): the store key of its page-range plan;
    # the extract stage then merges the ranges' outputs instead of reading the upload.
    ranges: str = ""


def estimate_seconds(size: int | None) -> float:
    """Rough work of a document from its size alone (the dispatcher reads nothing else).

    About 2 s of fixed cost (fetch, identify, three stages' overhead) plus 1.5 s per MB (phone
    photos ~3 MB: ~6 s; scanned pages ~0.3-1 MB each). Only used to cut slices, never to decide.
    """
    return 2.0 + 1.5 * (size or 0) / 1_000_000


def slices(items: list[Item], per_child: int, child_seconds: float) -> list[list[Item]]:
    """Consecutive slices of at most ``per_child`` documents or ~``child_seconds`` of work.

    A document whose estimate alone exceeds the budget gets a child to itself. At most
    MAX_ARRAY_SIZE slices: past that, slices grow beyond ``per_child`` rather than a second job.
    """
    out: list[list[Item]] = []
    current: list[Item] = []
    work = 0.0
    for item in items:
        if current and (len(current) >= per_child or work + item.seconds > child_seconds):
            out.append(current)
            current, work = [], 0.0
        current.append(item)
        work += item.seconds
    if current:
        out.append(current)
    if len(out) > MAX_ARRAY_SIZE:
        flat = [i for s in out for i in s]
        n = -(-len(flat) // MAX_ARRAY_SIZE)
        out = [flat[k:k + n] for k in range(0, len(flat), n)]
    return out


def new_batch_id() -> str:
    return uuid.uuid4().hex


def manifest_key(results_prefix: str, batch_id: str) -> str:
    return f"{results_prefix}_batches/{batch_id}.json"


def job_name(batch_id: str, plan: list[list[Item]]) -> str:
    if len(plan) == 1 and len(plan[0]) == 1:
        i = plan[0][0]
        return f"medintake-{PROCESS_KIND}-{i.document_id}-a{i.attempt}-t{i.tries}"
    return f"{BATCH_PREFIX}{batch_id}"


def row_name(item: Item) -> str:
    return f"medintake-{PROCESS_KIND}-{item.document_id}-a{item.attempt}-t{item.tries}"


def manifest_body(batch_id: str, plan: list[list[Item]]) -> bytes:
    return json.dumps(
        {
            "version": 1,
            "batch": batch_id,
            "per_child": max(len(s) for s in plan),
            "children": [[[i.document_id, i.attempt, i.tries, *([i.ranges] if i.ranges else [])] for i in s]
                         for s in plan],
        },
        separators=(",", ":"),
    ).encode()


def parse_manifest(data: bytes) -> list[list[Item]]:
    raw = json.loads(data)
    return [[Item(e[0], int(e[1]), int(e[2]), ranges=str(e[3]) if len(e) > 3 else "") for e in child]
            for child in raw["children"]]


def row_id(unit_job_id: str, position: int) -> str:
    """The jobs row of the document at ``position`` of the child (or plain job) ``unit_job_id``."""
    return f"{unit_job_id}#{position}"


def unit_of(job_id: str) -> tuple[str, int]:
    """(parent job id, array index) of a child's id ``<parent>:<index>``; a plain job is index 0."""
    parent, sep, index = job_id.rpartition(":")
    if sep and index.isdigit():
        return parent, int(index)
    return job_id, 0


def child_entries(plan: list[list[Item]], unit_job_id: str) -> list[tuple[str, Item]]:
    """(row id, item) for every document of the child ``unit_job_id`` in ``plan``."""
    _, index = unit_of(unit_job_id)
    if len(plan) == 1:
        index = 0
    if index >= len(plan):
        return []
    return [(row_id(unit_job_id, pos), item) for pos, item in enumerate(plan[index])]


def plan_parameters(key: str, plan: list[list[Item]]) -> dict[str, str]:
    return {"manifest": key, "per_child": str(max(len(s) for s in plan))}


def candidate_row_ids(unit_job_id: str, parameters: dict[str, Any]) -> list[str]:
    """Row ids a child may have, from the job's parameters alone (no store read)."""
    try:
        n = int(parameters.get("per_child") or 0)
    except ValueError:
        n = 0
    return [row_id(unit_job_id, p) for p in range(max(0, min(n, 1000)))]


def chunked(values: Iterable[Any], n: int) -> Iterable[list[Any]]:
    chunk: list[Any] = []
    for v in values:
        chunk.append(v)
        if len(chunk) >= n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
