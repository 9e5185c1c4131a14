"""AWS Batch "Job State Change" events: parsed for the tracker, built by the local backend.

The local compute environment emits exactly the EventBridge shape Batch emits, so the tracker has
one parser and its tests run on captured AWS events as well as on local ones.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping

_RANK = {"SUBMITTED": 0, "PENDING": 1, "RUNNABLE": 2, "STARTING": 3, "RUNNING": 4, "SUCCEEDED": 5, "FAILED": 5}
TERMINAL = ("SUCCEEDED", "FAILED")
TIMEOUT_REASON = "Job attempt duration exceeded timeout"
DEPENDENCY_REASON = "Dependent Job failed"


def status_rank(status: str) -> int:
    return _RANK.get(status, -1)


@dataclass(frozen=True)
class JobStateChange:
    event_id: str
    job_id: str
    job_name: str
    status: str
    status_reason: str | None
    tries: int  # attempts recorded so far (Batch appends one per finished attempt)
    exit_code: int | None
    reason: str | None
    parameters: Mapping[str, str]
    started_at: datetime | None
    stopped_at: datetime | None
    array_index: int | None = None  # a child of an array job (its id is <parent>:<index>)
    array_size: int | None = None  # an array parent (its state sums up its children's)


def _ms(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    return datetime.fromtimestamp(int(value) / 1000, tz=timezone.utc)


def parse_job_state_change(event: Mapping[str, Any]) -> JobStateChange | None:
    """The change in ``event``, or None when it is not a Batch job state change."""
    if event.get("source") != "aws.batch" or event.get("detail-type") != "Batch Job State Change":
        return None
    d = event.get("detail") or {}
    attempts = d.get("attempts") or []
    container = d.get("container") or {}
    last = attempts[-1] if attempts else {}
    # The job's own container block holds the latest exit code; attempts hold finished ones.
    exit_code = container.get("exitCode", (last.get("container") or {}).get("exitCode"))
    reason = container.get("reason", (last.get("container") or {}).get("reason"))
    array = d.get("arrayProperties") or {}
    return JobStateChange(
        event_id=str(event.get("id") or uuid.uuid4()),
        job_id=d["jobId"],
        job_name=d.get("jobName", ""),
        status=d["status"],
        status_reason=d.get("statusReason"),
        tries=len(attempts),
        exit_code=int(exit_code) if exit_code is not None else None,
        reason=reason,
        parameters=d.get("parameters") or {},
        started_at=_ms(d.get("startedAt")),
        stopped_at=_ms(d.get("stoppedAt")),
        array_index=int(array["index"]) if array.get("index") is not None else None,
        array_size=int(array["size"]) if array.get("size") is not None else None,
    )


def job_state_change_event(job: Mapping[str, Any], region: str = "local", account: str = "000000000000") -> dict:
    """An EventBridge event for ``job`` (a DescribeJobs-shaped dict), as Batch would send it."""
    arn = f"arn:aws:batch:{region}:{account}:job/{job['jobId']}"
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Batch Job State Change",
        "source": "aws.batch",
        "account": account,
        "time": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [arn],
        "detail": {"jobArn": arn, **job},
    }
