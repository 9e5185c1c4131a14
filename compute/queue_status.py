"""``medintake queue status``: is the pipeline healthy, what is stuck and why.

The report is built from ``QueueFacts`` (compute/batch_status.py), which come either from AWS
Batch or from the local compute environment's database (the jobs table holds Batch states as the
tracker recorded them), so the diagnosis below is one piece of code for both. Latency and
throughput always come from our database: Batch forgets finished jobs after about a day, and only
we know when a document's notice was written.

A RUNNABLE job older than the threshold is "stuck"; the likely cause is the first of these that
holds (the order is the order an operator should check them in):

1. the job queue is DISABLED or INVALID;
2. every compute environment of the queue is DISABLED or INVALID (their statusReason is quoted);
3. the job asks for more than any Fargate task offers (16 vCPU, 120 GiB), for a vCPU/memory pair
   Fargate does not offer, or for more vCPUs than any usable environment's maxvCpus;
4. the vCPU cap is reached: RUNNING/STARTING jobs plus this one exceed the usable environments'
   maxvCpus;
5. Fargate Spot has no capacity: nothing runs on the Spot environment and no On-Demand environment
   follows it in the queue order;
6. locally only: no process holds the data folder, so nothing will ever start the job;
otherwise "unknown: check the compute environment's events".
"""
from __future__ import annotations

import dataclasses

import math
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from compute.batch_status import ACTIVE_STATES, ALL_STATES, EnvironmentFacts, JobFacts, QueueFacts
from pipeline.settings import Settings

# Fargate task sizes (vCPU -> allowed memory in MiB), as AWS Batch on Fargate documents them.
FARGATE_SIZES: dict[float, tuple[int, ...]] = {
    0.25: (512, 1024, 2048),
    0.5: tuple(range(1024, 4096 + 1, 1024)),
    1.0: tuple(range(2048, 8192 + 1, 1024)),
    2.0: tuple(range(4096, 16384 + 1, 1024)),
    4.0: tuple(range(8192, 30720 + 1, 1024)),
    8.0: tuple(range(16384, 61440 + 1, 4096)),
    16.0: tuple(range(32768, 122880 + 1, 8192)),
}
FARGATE_MAX_VCPUS = 16.0
FARGATE_MAX_MEMORY_MIB = 120 * 1024
FARGATE_TYPES = ("FARGATE", "FARGATE_SPOT")
SPOT_TYPES = ("FARGATE_SPOT", "SPOT")
UNKNOWN_CAUSE = "unknown: check the compute environment's events"


@dataclass(frozen=True)
class Cause:
    code: str  # queue_disabled, queue_invalid, environments_unusable, job_too_large, invalid_fargate_size,
    #            larger_than_environment, vcpu_cap, spot_capacity, runner_gone, unknown
    message: str


@dataclass(frozen=True)
class Failure:
    status_reason: str | None
    exit_code: int | None
    count: int


@dataclass(frozen=True)
class Environment:
    name: str
    order: int
    type: str
    state: str
    status: str
    status_reason: str | None
    max_vcpus: float | None
    used_vcpus: float | None  # vCPUs of STARTING/RUNNING jobs placed on it, when Batch says where


@dataclass(frozen=True)
class QueueReport:
    source: str
    region: str
    queue: str
    state: str
    status: str
    status_reason: str | None
    counts: dict[str, int]  # the five active states now; SUCCEEDED and FAILED over the window
    oldest_runnable_id: str | None
    oldest_runnable_name: str | None
    oldest_runnable_seconds: float | None
    stuck: bool
    cause: Cause | None
    failures: tuple[Failure, ...]
    environments: tuple[Environment, ...]
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class DocumentMetrics:
    """The last hour from our database: documents finished and upload-to-notice latency."""

    finished: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    p50_seconds: float | None = None
    p95_seconds: float | None = None
    latency_samples: int = 0
    error: str | None = None  # the database could not be read (shown, not fatal)


@dataclass(frozen=True)
class StatusReport:
    generated_at: datetime
    window_seconds: float
    stuck_after_seconds: float
    max_failures: int
    queues: tuple[QueueReport, ...]
    documents: DocumentMetrics

    @property
    def warnings(self) -> tuple[str, ...]:
        return tuple(w for q in self.queues for w in q.warnings)

    @property
    def exit_code(self) -> int:
        return EXIT_WARNING if self.warnings else 0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["generated_at"] = self.generated_at.isoformat()
        out["healthy"] = not self.warnings
        out["warnings"] = list(self.warnings)
        out["exit_code"] = self.exit_code
        return out


EXIT_WARNING = 3


# ---- diagnosis ---------------------------------------------------------------------------------
def _usable(env: EnvironmentFacts | Environment) -> bool:
    return env.state == "ENABLED" and env.status != "INVALID"


def fargate_problem(vcpus: float | None, memory: int | None) -> Cause | None:
    """Why no Fargate task can hold this job, or None when one can (or the size is unknown)."""
    if vcpus is None and memory is None:
        return None
    if (vcpus or 0) > FARGATE_MAX_VCPUS or (memory or 0) > FARGATE_MAX_MEMORY_MIB:
        return Cause("job_too_large", f"the job asks for {_size(vcpus, memory)}; the largest Fargate task is "
                                      f"16 vCPU / 120 GiB, so no environment will ever start it")
    if vcpus is not None and memory is not None and memory not in FARGATE_SIZES.get(vcpus, ()):
        allowed = FARGATE_SIZES.get(vcpus)
        hint = (f"{_num(vcpus)} vCPU takes {allowed[0]}-{allowed[-1]} MiB" if allowed
                else "vCPU must be one of 0.25, 0.5, 1, 2, 4, 8, 16")
        return Cause("invalid_fargate_size", f"the job asks for {_size(vcpus, memory)}, not a Fargate task size "
                                             f"({hint}), so it is never placed")
    return None


def diagnose(facts: QueueFacts, job: JobFacts) -> Cause:
    """The likely reason ``job`` (RUNNABLE for too long) has not started; see the module docstring."""
    if facts.state == "DISABLED":
        return Cause("queue_disabled", f"job queue {facts.queue} is DISABLED: new submissions are refused; "
                                       "enable it before looking further")
    if facts.status == "INVALID":
        return Cause("queue_invalid", f"job queue {facts.queue} is INVALID: \"{facts.status_reason or 'no reason given'}\"")
    envs = facts.environments
    if not envs or not any(_usable(e) for e in envs):
        detail = "; ".join(f"{e.name} {e.state}/{e.status}: \"{e.status_reason or 'no reason given'}\"" for e in envs)
        return Cause("environments_unusable",
                     f"every compute environment of the queue is DISABLED or INVALID ({detail or 'none attached'})")
    usable = [e for e in envs if _usable(e)]
    if any(e.type in FARGATE_TYPES for e in usable):
        problem = fargate_problem(job.vcpus, job.memory_mib)
        if problem:
            return problem
    caps = [e.max_vcpus for e in usable if e.max_vcpus is not None]
    need = job.vcpus or 1.0
    if caps and need > max(caps):
        return Cause("larger_than_environment",
                     f"the job asks for {_num(need)} vCPU; the largest usable environment allows {_num(max(caps))}")
    used = sum(j.vcpus or 1.0 for j in facts.job_facts if j.status in ("STARTING", "RUNNING"))
    if caps and len(caps) == len(usable) and used + need > sum(caps):
        return Cause("vcpu_cap", f"vCPU cap reached: STARTING/RUNNING jobs use {_num(used)} of {_num(sum(caps))} "
                                 f"vCPUs (maxvCpus of the usable environments); the job needs {_num(need)} more")
    spot = [e for e in usable if e.type in SPOT_TYPES]
    if spot and len(spot) == len(usable):
        clusters = {e.cluster for e in spot if e.cluster}
        running = [j for j in facts.job_facts if j.status in ("STARTING", "RUNNING")
                   and (not clusters or j.cluster is None or j.cluster in clusters)]
        if not running:
            names = ", ".join(e.name for e in spot)
            return Cause("spot_capacity", f"Fargate Spot capacity unavailable: nothing runs on {names} and no usable "
                                          "On-Demand environment follows it in the queue order")
    if facts.runner_alive is False:
        return Cause("runner_gone", "no medintake process holds this data folder: local jobs live in the process "
                                    "that submitted them, so these will never start")
    return Cause("unknown", UNKNOWN_CAUSE)


def build_queue_report(facts: QueueFacts, now: float, stuck_after: float, max_failures: int,
                       window_label: str = "") -> QueueReport:
    counts = {s: 0 for s in ALL_STATES}
    for j in facts.job_facts:
        counts[j.status] = counts.get(j.status, 0) + 1
    runnable = [j for j in facts.job_facts if j.status == "RUNNABLE"]
    oldest = min(runnable, key=lambda j: j.runnable_since or j.created_at, default=None)
    age = max(0.0, now - (oldest.runnable_since or oldest.created_at)) if oldest else None
    stuck = age is not None and age > stuck_after
    cause = diagnose(facts, oldest) if stuck and oldest else None
    groups: dict[tuple[str | None, int | None], int] = {}
    for j in facts.job_facts:
        if j.status == "FAILED":
            key = (j.status_reason, j.exit_code)
            groups[key] = groups.get(key, 0) + 1
    failures = tuple(Failure(r, c, n) for (r, c), n in
                     sorted(groups.items(), key=lambda kv: (-kv[1], kv[0][0] or "", -1 if kv[0][1] is None else kv[0][1])))
    where = f"{facts.queue} ({facts.region})"
    warnings = []
    if stuck and oldest is not None and cause is not None:
        warnings.append(f"{where}: oldest RUNNABLE job waiting {format_duration(age)} "
                        f"(over {format_duration(stuck_after)}); likely cause: {cause.message}")
    if counts["FAILED"] > max_failures:
        warnings.append(f"{where}: {counts['FAILED']} jobs FAILED over {window_label or 'the window'} "
                        f"(more than {max_failures})")
    envs = []
    for e in facts.environments:
        placed = [j for j in facts.job_facts if j.status in ("STARTING", "RUNNING") and e.cluster and j.cluster == e.cluster]
        if e.type == "LOCAL":
            placed = [j for j in facts.job_facts if j.status in ("STARTING", "RUNNING")]
        used = sum(j.vcpus or 1.0 for j in placed) if (e.cluster or e.type == "LOCAL") else None
        envs.append(Environment(e.name, e.order, e.type, e.state, e.status, e.status_reason, e.max_vcpus, used))
    return QueueReport(
        source=facts.source, region=facts.region, queue=facts.queue, state=facts.state, status=facts.status,
        status_reason=facts.status_reason, counts=counts,
        oldest_runnable_id=oldest.job_id if oldest else None, oldest_runnable_name=oldest.name if oldest else None,
        oldest_runnable_seconds=age, stuck=stuck, cause=cause, failures=failures,
        environments=tuple(envs), warnings=tuple(warnings),
    )


# ---- the local source --------------------------------------------------------------------------
def _epoch(value: datetime | None) -> float | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite hands back naive datetimes; we always store UTC
        value = value.replace(tzinfo=timezone.utc)
    return value.timestamp()


def runner_alive(settings: Settings) -> bool:
    """Does a ``medintake process``/``watch`` hold the data folder's lock (compute/runtime.py)?

    Read from /proc/locks so that looking never takes the lock (a runtime starting at that moment
    would be refused); elsewhere, a non-blocking shared lock tried and released at once.
    """
    path = settings.data_dir / ".lock"
    if not path.exists():
        return False
    inode = path.stat().st_ino
    try:
        with open("/proc/locks") as fh:
            return any(line.split()[5].rsplit(":", 1)[-1] == str(inode) for line in fh
                       if "FLOCK" in line and len(line.split()) > 5)
    except OSError:
        import fcntl

        with path.open("a") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(fh, fcntl.LOCK_UN)
            return False


def local_facts(settings: Settings, since: float) -> QueueFacts:
    """The local compute environment as Batch would describe it, from the jobs and events tables.

    One queue (settings.job_queue) and one environment of ``workers`` vCPUs; a job's requested
    vCPUs come from its kind's job definition. Rows of attempt 0 (jobs retired when a graph was
    half-submitted) are left out.
    """
    from sqlalchemy import func, or_, select

    from pipeline.database import transaction
    from pipeline.jobdefs import load_job_definitions
    from pipeline.models import Job, JobEvent

    definitions = load_job_definitions(settings.job_definitions_dir)
    since_dt = datetime.fromtimestamp(since, tz=timezone.utc)
    with transaction(settings) as s:
        rows = list(s.execute(select(Job.id, Job.name, Job.kind, Job.status, Job.created_at, Job.stopped_at,
                                     Job.updated_at, Job.status_reason, Job.exit_code).where(
            Job.attempt != 0,
            or_(Job.status.in_(ACTIVE_STATES), func.coalesce(Job.stopped_at, Job.updated_at) >= since_dt))))
        runnable_ids = [r.id for r in rows if r.status == "RUNNABLE"]
        became = {job_id: at for job_id, at in s.execute(
            select(JobEvent.job_id, func.max(JobEvent.received_at))
            .where(JobEvent.job_id.in_(runnable_ids), JobEvent.status == "RUNNABLE")
            .group_by(JobEvent.job_id))} if runnable_ids else {}
        rows, units = _array_units(s, rows)
    facts = []
    for r in rows:
        stopped = _epoch(r.stopped_at or r.updated_at) if r.status in ("SUCCEEDED", "FAILED") else None
        if r.status in ("SUCCEEDED", "FAILED") and (stopped or 0) < since:
            continue
        d = definitions.get(r.kind)
        facts.append(JobFacts(
            job_id=r.id, name=r.name, status=r.status, created_at=_epoch(r.created_at) or 0.0,
            runnable_since=_epoch(became.get(r.id)), stopped_at=stopped, status_reason=r.status_reason,
            exit_code=r.exit_code, vcpus=min(d.vcpus, settings.effective_workers) if d else None,
            memory_mib=d.memory_mib if d else None,
        ))
    d = definitions.get("process")
    for u in units:
        if u.status in ("SUCCEEDED", "FAILED") and (u.stopped_at or 0) < since:
            continue
        facts.append(dataclasses.replace(u, vcpus=min(d.vcpus, settings.effective_workers) if d else None,
                                         memory_mib=d.memory_mib if d else None))
    alive = runner_alive(settings)
    env = EnvironmentFacts(name="local", order=1, type="LOCAL", state="ENABLED", status="VALID",
                           status_reason=None if alive else "no medintake process holds the data folder",
                           max_vcpus=float(settings.effective_workers))
    return QueueFacts(source="local", region="local", queue=settings.job_queue, state="ENABLED", status="VALID",
                      status_reason=None, environments=(env,), job_facts=tuple(facts), runner_alive=alive)


def _array_units(s: Any, rows: list[Any]) -> tuple[list[Any], list[JobFacts]]:
    """The array shape: a child (or plain process job) runs several documents, each with its own
    row ``<unit>#<position>``; Batch counts the child, once. Returns the other rows and one fact
    per unit, its state from its own recorded state changes (the rows' when none is recorded).
    """
    from sqlalchemy import select

    from pipeline.models import JobEvent

    plain, grouped = [], {}
    for r in rows:
        unit, sep, pos = r.id.rpartition("#")
        if r.kind == "process" and sep and pos.isdigit():
            grouped.setdefault(unit, []).append(r)
        else:
            plain.append(r)
    if not grouped:
        return plain, []
    last: dict[str, Any] = {}
    runnable: dict[str, datetime] = {}
    for e in s.scalars(select(JobEvent).where(JobEvent.job_id.in_(list(grouped)))
                       .order_by(JobEvent.received_at, JobEvent.id)):
        last[e.job_id] = e
        if e.status == "RUNNABLE":
            runnable[e.job_id] = e.received_at
    units = []
    for unit, rs in grouped.items():
        e = last.get(unit)
        if e is not None:
            status, reason, code, stopped = e.status, e.status_reason, e.exit_code, e.received_at
        else:
            active = [r for r in rs if r.status in ACTIVE_STATES]
            status = active[0].status if active else ("FAILED" if all(r.status == "FAILED" for r in rs) else "SUCCEEDED")
            reason, code = None, None
            stopped = max((r.stopped_at or r.updated_at for r in rs), default=None)
        units.append(JobFacts(
            job_id=unit, name=rs[0].name if len(rs) == 1 else f"medintake-process ({len(rs)} documents)", status=status,
            created_at=min(_epoch(r.created_at) or 0.0 for r in rs), runnable_since=_epoch(runnable.get(unit)),
            stopped_at=_epoch(stopped) if status in ("SUCCEEDED", "FAILED") else None, status_reason=reason,
            exit_code=code, vcpus=None, memory_mib=None))
    return plain, units


# ---- documents: throughput and latency from our database ----------------------------------------
def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (no interpolation: the value some document really took)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def document_metrics(settings: Settings, now: float, period: float = 3600.0) -> DocumentMetrics:
    """Documents that reached a final state in the last ``period`` seconds and how long they took.

    Latency is upload to notice: documents.created_at to the notice row of the document's current
    attempt (written in the same transaction as the final state), or documents.updated_at when
    there is no notice. Reprocessed documents (attempt > 1) count as finished but not in the
    latency, which would otherwise measure the time since the original upload.
    """
    from sqlalchemy import and_, select

    from pipeline.database import transaction
    from pipeline.models import FINAL_STATUSES, Document, Notice

    start = datetime.fromtimestamp(now - period, tz=timezone.utc)
    with transaction(settings) as s:
        rows = list(s.execute(
            select(Document.status, Document.attempt, Document.created_at, Document.updated_at, Notice.created_at)
            .outerjoin(Notice, and_(Notice.document_id == Document.id, Notice.attempt == Document.attempt))
            .where(Document.status.in_(FINAL_STATUSES), Document.updated_at >= start)))
    by_status: dict[str, int] = {}
    latencies = []
    for status, attempt, created, updated, noticed in rows:
        end = _epoch(noticed) or _epoch(updated)
        if end is None or end < now - period:
            continue
        by_status[status] = by_status.get(status, 0) + 1
        if attempt == 1:
            latencies.append(max(0.0, end - (_epoch(created) or end)))
    return DocumentMetrics(finished=sum(by_status.values()), by_status=dict(sorted(by_status.items())),
                           p50_seconds=percentile(latencies, 50), p95_seconds=percentile(latencies, 95),
                           latency_samples=len(latencies))


# ---- durations ---------------------------------------------------------------------------------
def parse_duration(text: str) -> float:
    """'90s', '30m', '2h', '1d' (or plain seconds) -> seconds."""
    text = text.strip().lower()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], text[-1]) if text[-1:] in units else (text, "s")
    value = float(number)  # ValueError for the caller to report
    if value <= 0 or not math.isfinite(value):
        raise ValueError("a duration must be positive")
    return value * units[unit]


def format_duration(seconds: float | None) -> str:
    """45s, 30m, 42m10s, 1h, 2h05m, 1d03h: two units at most, zero tails dropped."""
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    for size, unit, small, sub in ((86400, "d", 3600, "h"), (3600, "h", 60, "m"), (60, "m", 1, "s")):
        if seconds >= size:
            rest = seconds % size // small
            return f"{seconds // size}{unit}" + (f"{rest:02d}{sub}" if rest else "")
    return f"{seconds}s"


def _num(value: float | None) -> str:
    return "-" if value is None else (f"{value:g}")


def _size(vcpus: float | None, memory: int | None) -> str:
    return f"{_num(vcpus)} vCPU / {memory if memory is not None else '-'} MiB"


def build_report(facts: list[QueueFacts], documents: DocumentMetrics, now: float, window: float,
                 stuck_after: float, max_failures: int) -> StatusReport:
    label = format_duration(window)
    return StatusReport(
        generated_at=datetime.fromtimestamp(now, tz=timezone.utc), window_seconds=window,
        stuck_after_seconds=stuck_after, max_failures=max_failures,
        queues=tuple(build_queue_report(f, now, stuck_after, max_failures, label) for f in facts),
        documents=documents,
    )


# ---- one call for the CLI ----------------------------------------------------------------------
def _queue_for_region(queue: str, region: str) -> str:
    """A queue ARN names one region; the same stack's queue elsewhere has the same name."""
    from compute.batch_status import queue_name

    if queue.startswith("arn:") and queue.split(":")[3:4] != [region]:
        return queue_name(queue)
    return queue


def _no_sqlite_file(settings: Settings) -> bool:
    url = settings.effective_database_url
    return url.startswith("sqlite:///") and not url.endswith(":memory:") and not os.path.exists(url[len("sqlite:///"):])


def gather(settings: Settings, *, regions: tuple[str, ...] = (), window: float = 3600.0,
           stuck_after: float = 1800.0, max_failures: int = 10, now: float | None = None,
           endpoint_url: str | None = None, client_factory: Any = None, sleep: Any = None) -> StatusReport:
    """The whole report: from AWS Batch (compute_backend=batch, per region) or the local database.

    ``client_factory(region)`` and ``sleep`` are for tests (Stubber clients, a fake clock).
    """
    import time

    from sqlalchemy.exc import SQLAlchemyError

    from pipeline.errors import ConfigError, MedintakeError, TransientError

    now = time.time() if now is None else now
    since = now - window
    facts: list[QueueFacts] = []
    if settings.compute_backend == "batch":
        from compute.batch_status import BatchStatusClient, collect, status_client

        chosen = tuple(dict.fromkeys(regions)) or ((settings.aws_region,) if settings.aws_region else ())
        if not chosen:
            raise ConfigError("no AWS region to look at", fix="Set MEDINTAKE_AWS_REGION or pass --region.")
        for region in chosen:
            client = client_factory(region) if client_factory else status_client(region, endpoint_url)
            api = BatchStatusClient(client, **({"sleep": sleep} if sleep else {}))
            facts.append(collect(api, _queue_for_region(settings.job_queue, region), region, since))
    else:
        if _no_sqlite_file(settings):
            raise ConfigError("no database in this data folder",
                              fix="Check --data-dir / MEDINTAKE_DATA_DIR (medintake process creates it).")
        try:
            facts.append(local_facts(settings, since))
        except SQLAlchemyError as exc:
            raise TransientError(f"the database could not be read ({type(exc).__name__})") from None
    try:
        if _no_sqlite_file(settings):  # looking must not create an empty SQLite file
            raise ConfigError("no database in the data folder")
        documents = document_metrics(settings, now)
    except (MedintakeError, SQLAlchemyError) as exc:  # e.g. RDS not reachable from this machine
        why = exc.message if isinstance(exc, MedintakeError) else type(exc).__name__  # ours are PHI-free
        documents = DocumentMetrics(error=f"our database is not readable from here ({why})")
    return build_report(facts, documents, now, window, stuck_after, max_failures)
