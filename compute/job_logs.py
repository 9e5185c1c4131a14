"""A job's log and its last lines, wherever the job ran: `medintake jobs show`.

compute/ knows where jobs run, so it knows where their logs go:

- the local compute environment (compute/local.py) writes one file per compute attempt,
  ``<data_dir>/logs/<kind>-<job id>-<attempt>.log`` (the path its events carry as
  ``container.logStreamName``; our database does not store it, so the files are found by name);
- AWS Batch sends a container's output to CloudWatch Logs: DescribeJobs names each attempt's
  stream (``attempts[].container.logStreamName``; a running attempt's is on ``container``) and the
  group is ``settings.batch_log_group`` or ``/aws/batch/<job_definition_prefix>`` (the stack's).
  Batch forgets finished jobs after about a day; the streams outlive that, but without DescribeJobs
  their names are not known, which the answer says instead of guessing.

The array shape (docs/scale.md): a document's row ``<child>#<position>`` has no log of its own;
its child (``<parent>:<index>``, or a plain job) ran it with the other documents of its slice, so
the child's log is read (locally ``process-<parent>-<index>-<attempt>.log``; on AWS the child's own
stream: DescribeJobs on ``<parent>:<index>``) and the document's part is cut out between the
markers the child writes around each document (jobs/runner.py ``ROW_MARK``). Without the markers
(an older child) the child's whole log is shown and the answer says so. An array job itself never
runs: it has no log, and the answer names its children.

The lines are printed as they are: our workers log ids, codes and counts only (pipeline/logs.py),
never text or file names, so a log holds PHI only if our code put it there by mistake.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError, TransientError
from pipeline.settings import Settings

DEFAULT_LINES = 40
_BLOCK = 8192


#: The runner's marker (jobs/runner.py ROW_MARK), repeated here: the dispatcher-light module
#: must not import the worker.
ROW_MARK = "medintake-row"
#: How much of a child's log is read to find one document's part (a child runs ~20 documents).
SECTION_MAX_LINES = 100_000
SECTION_MAX_BYTES = 64 << 20


@dataclass
class LogTail:
    source: str  # local | cloudwatch
    attempt: int | None  # the compute attempt shown (1-based), None when there is no log
    location: str | None  # the file, or "<group> <stream>"
    lines: list[str] = field(default_factory=list)
    attempts: dict[int, str] = field(default_factory=dict)  # every attempt's file or stream
    note: str | None = None  # why there is nothing to show
    # The array shape: the child whose log this is, and whether ``lines`` are the document's part
    # only ("document"), or the child's whole log because its part could not be found ("child").
    log_job_id: str | None = None
    section: str | None = None


def unit_job(job_id: str) -> tuple[str, str | None]:
    """(the job whose log it is, the document row to cut out or None): ``<unit>#<n>`` is a row."""
    unit, sep, pos = job_id.rpartition("#")
    if sep and pos.isdigit():
        return unit, job_id
    return job_id, None


def document_section(lines: list[str], row_id: str) -> list[str] | None:
    """The lines from the row's begin marker to its end marker (the last run of it, if the child
    was retried and logged it twice); None when the log has no begin marker for the row."""
    begin, end = f"{ROW_MARK} {row_id} begins", f"{ROW_MARK} {row_id} ends"
    starts = [i for i, line in enumerate(lines) if begin in line]
    if not starts:
        return None
    first = starts[-1]
    stop = next((i for i in range(first, len(lines)) if end in lines[i]), None)
    if stop is None:  # still running, or the child died inside it: up to the next document
        stop = next((i - 1 for i in range(first + 1, len(lines)) if f"{ROW_MARK} " in lines[i] and " begins" in lines[i]),
                    len(lines) - 1)
    return lines[first:stop + 1]


def _cut(tail: LogTail, whole: list[str], row_id: str | None, lines: int) -> None:
    if row_id is None:
        tail.lines = whole[-lines:] if lines > 0 else []
        return
    part = document_section(whole, row_id)
    if part is None:
        tail.section = "child"
        tail.lines = whole[-lines:] if lines > 0 else []
        tail.note = "the child's log has no section for this document (an older child?): its whole log is shown"
    else:
        tail.section = "document"
        tail.lines = part[-lines:] if lines > 0 else []


def log_group(settings: Settings) -> str:
    return settings.batch_log_group or f"/aws/batch/{settings.job_definition_prefix}"


# ---- local ---------------------------------------------------------------------------------------
def local_log_files(settings: Settings, job_id: str) -> dict[int, Path]:
    """Attempt number -> log file of the local compute environment (named as compute/local.py does)."""
    folder = (settings.data_dir / "logs").resolve()
    job_id = job_id.replace(":", "-")  # an array child <parent>:<index>, as compute/local.py names it
    pattern = re.compile(rf"^[a-z_]+-{re.escape(job_id)}-(\d+)\.log$")
    found: dict[int, Path] = {}
    if folder.is_dir():
        for path in folder.glob(f"*-{glob_escape(job_id)}-*.log"):
            m = pattern.match(path.name)
            if m:
                found[int(m.group(1))] = path
    return dict(sorted(found.items()))


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def tail_file(path: Path, lines: int) -> list[str]:
    """The last ``lines`` lines of a file, read backwards in blocks (a log can be large)."""
    if lines <= 0:
        return []
    with path.open("rb") as fh:
        fh.seek(0, 2)
        end = fh.tell()
        data = b""
        while end > 0 and data.count(b"\n") <= lines:
            start = max(0, end - _BLOCK)
            fh.seek(start)
            data = fh.read(end - start) + data
            end = start
    text = data.decode("utf-8", errors="replace").splitlines()
    return text[-lines:]


def read_end(path: Path, max_bytes: int = SECTION_MAX_BYTES) -> list[str]:
    """A child's log to cut a document's part from: all of it, or its last ``max_bytes``."""
    with path.open("rb") as fh:
        fh.seek(0, 2)
        size = fh.tell()
        fh.seek(max(0, size - max_bytes))
        data = fh.read()
    lines = data.decode("utf-8", errors="replace").splitlines()
    return lines[1:] if size > max_bytes else lines  # the first line may be cut


# ---- AWS Batch and CloudWatch Logs ---------------------------------------------------------------
def batch_log_streams(settings: Settings, job_id: str, client: Any = None) -> dict[int, str] | None:
    """Attempt number -> CloudWatch stream, from DescribeJobs; None when Batch no longer knows the job."""
    from compute.batch_status import BatchStatusClient, status_client

    api = BatchStatusClient(client or status_client(settings.aws_region or None))
    found = api.describe_jobs([job_id])
    if not found:
        return None
    job = found[0]
    streams: dict[int, str] = {}
    for n, attempt in enumerate(job.get("attempts") or [], 1):
        name = (attempt.get("container") or {}).get("logStreamName")
        if name:
            streams[n] = name
    current = (job.get("container") or {}).get("logStreamName")
    if current and current not in streams.values() and job.get("status") in ("STARTING", "RUNNING"):
        streams[len(job.get("attempts") or []) + 1] = current  # the attempt running now
    return streams


def logs_client(settings: Settings, endpoint_url: str | None = None):
    import boto3
    from botocore.config import Config

    return boto3.client("logs", region_name=settings.aws_region or None, endpoint_url=endpoint_url or None,
                        config=Config(retries={"mode": "standard", "max_attempts": 5}))


def read_cloudwatch(group: str, stream: str, client: Any, max_lines: int = SECTION_MAX_LINES) -> list[str] | None:
    """A stream from its head (a child's log, to cut one document's part out); None if gone."""
    from botocore.exceptions import ClientError

    out: list[str] = []
    token: str | None = None
    while len(out) < max_lines:
        kwargs: dict[str, Any] = {"logGroupName": group, "logStreamName": stream, "startFromHead": True}
        if token:
            kwargs["nextToken"] = token
        try:
            answer = client.get_log_events(**kwargs)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code", "") == "ResourceNotFoundException":
                return None
            raise
        for event in answer.get("events", []):
            out.extend(str(event.get("message", "")).rstrip("\n").split("\n"))
        nxt = answer.get("nextForwardToken")
        if not answer.get("events") or not nxt or nxt == token:
            break
        token = nxt
    return out


def tail_cloudwatch(group: str, stream: str, lines: int, client: Any) -> list[str] | None:
    """The last ``lines`` events of a stream (GetLogEvents from the tail); None if the stream is gone."""
    from botocore.exceptions import ClientError

    if lines <= 0:
        return []

    def read() -> Any:
        try:
            return client.get_log_events(logGroupName=group, logStreamName=stream, startFromHead=False,
                                         limit=min(lines, 10000))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code", "") == "ResourceNotFoundException":
                return None
            raise

    answer = _guarded(read)
    if answer is None:
        return None
    out: list[str] = []
    for event in answer.get("events", []):
        out.extend(str(event.get("message", "")).rstrip("\n").split("\n"))
    return out[-lines:]


# ---- one answer for both ---------------------------------------------------------------------------
def job_log_tail(settings: Settings, job_id: str, lines: int = DEFAULT_LINES, attempt: int | None = None,
                 batch_client: Any = None, cloudwatch: Any = None, array_children: list[str] | None = None
                 ) -> LogTail:
    """The last ``lines`` lines of one attempt's log (default: the latest attempt), from where it ran.

    A document row of the array shape (``<child>#<n>``) gets its part of its child's log;
    ``array_children`` (an array job's child ids, from pipeline/history.py) says the id is an
    array job, which has no log of its own.
    """
    log_id, row_id = unit_job(job_id)
    if array_children is not None:
        tail = LogTail("local" if settings.compute_backend != "batch" else "cloudwatch", None, None)
        first = array_children[0] if array_children else f"{job_id}:0"
        tail.note = (f"an array job runs nothing itself: each child has its own log "
                     f"(medintake jobs show {first}; {len(array_children)} child(ren) recorded)")
        return tail
    if settings.compute_backend != "batch":
        files = local_log_files(settings, log_id)
        tail = LogTail("local", None, None, attempts={n: str(p) for n, p in files.items()},
                       log_job_id=log_id if row_id else None)
        if not files:
            tail.note = "no log file: the job has not run (yet), or it ran with another data folder"
            return tail
        number = attempt or max(files)
        if number not in files:
            tail.note = f"no log file for attempt {number}"
            return tail
        tail.attempt, tail.location = number, str(files[number])
        if row_id is None:
            tail.lines = tail_file(files[number], lines)
        else:
            _cut(tail, read_end(files[number]), row_id, lines)
        return tail
    group = log_group(settings)
    streams = batch_log_streams(settings, log_id, batch_client)
    tail = LogTail("cloudwatch", None, None, attempts=dict(streams or {}), log_job_id=log_id if row_id else None)
    if streams is None:
        tail.note = ("AWS Batch no longer describes this job (finished jobs are kept about a day), "
                     f"so its log stream is not known; look in the log group {group}")
        return tail
    if not streams:
        tail.note = "no log stream yet: the job has not started"
        return tail
    number = attempt or max(streams)
    if number not in streams:
        tail.note = f"no log stream for attempt {number}"
        return tail
    tail.attempt, tail.location = number, f"{group} {streams[number]}"
    client = cloudwatch or logs_client(settings)
    if row_id is None:
        found = tail_cloudwatch(group, streams[number], lines, client)
    else:
        found = _guarded(lambda: read_cloudwatch(group, streams[number], client))
    if found is None:
        tail.note = "the log stream does not exist (expired under the group's retention, or never written)"
    elif row_id is None:
        tail.lines = found
    else:
        _cut(tail, found, row_id, lines)
    return tail


def _guarded(read: Any) -> Any:
    """``read()`` with CloudWatch Logs' errors as ours: throttling and 5xx are transient (retry),
    anything else is the deployment's configuration (region, log group, permission)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return read()
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if status >= 500 or code in ("ThrottlingException", "ServiceUnavailableException"):
            raise TransientError(f"CloudWatch Logs GetLogEvents failed ({code or status})",
                                 fix="Try again in a minute.") from None
        raise ConfigError(f"CloudWatch Logs refused GetLogEvents ({code or status})",
                          fix="Check the region, MEDINTAKE_BATCH_LOG_GROUP and the logs:GetLogEvents "
                              "permission.") from None
    except BotoCoreError as exc:
        raise TransientError(f"CloudWatch Logs GetLogEvents: {type(exc).__name__}") from None
