"""What AWS Batch says about a job queue right now, for ``medintake queue status``.

A small wrapper around four read-only calls (ListJobs, DescribeJobs, DescribeJobQueues,
DescribeComputeEnvironments) that knows Batch's traps:

- ListJobs without ``jobStatus`` lists only RUNNING jobs, so every state is listed on its own;
- ListJobs pages with ``nextToken`` (at most 100 per page by default), DescribeJobs takes at most
  100 ids per call;
- finished jobs are forgotten after about a day, so SUCCEEDED/FAILED here only cover a short
  window and our own database stays the history (latency and throughput come from there);
- throttling (ThrottlingException, TooManyRequestsException, HTTP 429) and 5xx answers are retried
  with exponential back-off and full jitter; anything else surfaces at once as one of our errors
  (pipeline/errors.py), so a missing permission or a wrong queue name is never retried for minutes.

botocore's own retries are turned off on the client made here (one attempt per call), so the
back-off is ours alone and the tests drive it with a fake sleep instead of waiting.

The answer is a ``QueueFacts``: the queue, its compute environments in queue order and the jobs
that matter (all unfinished ones, and those finished inside the window), in a shape the local
compute environment can produce too, so one diagnosis (compute/queue_status.py) serves both.
"""
from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from pipeline.errors import ConfigError, TransientError

log = logging.getLogger("medintake.compute.batch_status")

ACTIVE_STATES = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING")
FINISHED_STATES = ("SUCCEEDED", "FAILED")
ALL_STATES = ACTIVE_STATES + FINISHED_STATES
THROTTLING_CODES = frozenset({"ThrottlingException", "TooManyRequestsException", "Throttling",
                              "ThrottledException", "RequestLimitExceeded"})
DESCRIBE_BATCH = 100  # DescribeJobs takes at most 100 job ids


@dataclass(frozen=True)
class JobFacts:
    """One job as the status needs it. Times are epoch seconds; sizes as requested."""

    job_id: str
    name: str  # medintake-<kind>-<document id>-a<attempt>: ids only, no PHI
    status: str
    created_at: float
    runnable_since: float | None = None  # when it (last) became RUNNABLE, if known
    stopped_at: float | None = None
    status_reason: str | None = None
    exit_code: int | None = None
    vcpus: float | None = None
    memory_mib: int | None = None
    cluster: str | None = None  # the ECS cluster its task runs in (which environment it is on)


@dataclass(frozen=True)
class EnvironmentFacts:
    name: str
    order: int
    type: str  # FARGATE, FARGATE_SPOT, EC2, SPOT, LOCAL
    state: str  # ENABLED | DISABLED
    status: str  # VALID | INVALID | CREATING | UPDATING | DELETING ...
    status_reason: str | None
    max_vcpus: float | None
    cluster: str | None = None


@dataclass(frozen=True)
class QueueFacts:
    source: str  # "batch" | "local"
    region: str
    queue: str
    state: str
    status: str
    status_reason: str | None
    environments: tuple[EnvironmentFacts, ...]
    job_facts: tuple[JobFacts, ...]
    runner_alive: bool | None = None  # local only: does a process hold the data folder?


def status_client(region: str, endpoint_url: str | None = None):
    """A Batch client with botocore's retries off: BatchStatusClient does the back-off."""
    import boto3
    from botocore.config import Config

    return boto3.client("batch", region_name=region, endpoint_url=endpoint_url or None,
                        config=Config(retries={"mode": "standard", "total_max_attempts": 1}))


class BatchStatusClient:
    def __init__(
        self,
        client: Any,
        sleep: Callable[[float], None] | None = None,
        rand: Callable[[], float] = random.random,
        max_attempts: int = 8,
        base_delay: float = 0.5,
        max_delay: float = 20.0,
    ) -> None:
        self.client = client
        self.sleep = sleep or (lambda seconds: time.sleep(seconds))  # looked up when called
        self.rand = rand
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.calls = 0

    # ---- the one place calls are made --------------------------------------------------------
    def call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        from botocore.exceptions import (BotoCoreError, ConnectionError as BotoConnectionError,
                                         NoCredentialsError, NoRegionError, PartialCredentialsError)
        from botocore.exceptions import ClientError

        for attempt in range(1, self.max_attempts + 1):
            self.calls += 1
            try:
                return getattr(self.client, operation)(**kwargs)
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
                if not (code in THROTTLING_CODES or status == 429 or status >= 500):
                    # Only the code and status are repeated: AWS's message may name anything.
                    if 400 <= status < 500 or not status:
                        raise ConfigError(f"AWS Batch refused {operation} ({code or status})",
                                          fix="Check the job queue name, the region and the credentials' "
                                              "batch:List*/Describe* permissions.") from None
                    raise TransientError(f"AWS Batch {operation} failed ({code or status})") from None
                why = code or str(status)
            except (NoCredentialsError, PartialCredentialsError, NoRegionError) as exc:
                raise ConfigError(f"AWS Batch {operation}: {type(exc).__name__}",
                                  fix="Configure AWS credentials and a region (--region).") from None
            except BotoConnectionError as exc:
                why = type(exc).__name__  # connection trouble is worth the same patience as a 5xx
            except BotoCoreError as exc:
                raise TransientError(f"AWS Batch {operation}: {type(exc).__name__}") from None
            if attempt == self.max_attempts:
                break
            # Full jitter (AWS Architecture Blog, "Exponential Backoff And Jitter").
            delay = self.rand() * min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
            log.info("AWS Batch %s: %s, retrying in %.1fs", operation, why, delay)
            self.sleep(delay)
        raise TransientError(f"AWS Batch {operation} still failing after {self.max_attempts} attempts ({why})",
                             fix="Batch is throttling or unavailable; try again in a minute.")

    # ---- the four operations -----------------------------------------------------------------
    def list_jobs(self, queue: str, status: str) -> list[dict[str, Any]]:
        """Every job summary in one state, following nextToken to the last page."""
        out: list[dict[str, Any]] = []
        token = None
        while True:
            kwargs: dict[str, Any] = {"jobQueue": queue, "jobStatus": status}
            if token:
                kwargs["nextToken"] = token
            page = self.call("list_jobs", **kwargs)
            out.extend(page.get("jobSummaryList", []))
            token = page.get("nextToken")
            if not token:
                return out

    def describe_jobs(self, job_ids: Iterable[str]) -> list[dict[str, Any]]:
        ids = list(dict.fromkeys(job_ids))
        out: list[dict[str, Any]] = []
        for i in range(0, len(ids), DESCRIBE_BATCH):
            out.extend(self.call("describe_jobs", jobs=ids[i:i + DESCRIBE_BATCH]).get("jobs", []))
        return out

    def describe_job_queue(self, queue: str) -> dict[str, Any]:
        found = self.call("describe_job_queues", jobQueues=[queue]).get("jobQueues", [])
        if not found:
            raise ConfigError("no such job queue in this region",
                              fix="Check MEDINTAKE_JOB_QUEUE and --region (the stack names it medintake-<env>).")
        return found[0]

    def describe_compute_environments(self, names: list[str]) -> list[dict[str, Any]]:
        if not names:
            return []
        out: list[dict[str, Any]] = []
        token = None
        while True:
            kwargs: dict[str, Any] = {"computeEnvironments": names}
            if token:
                kwargs["nextToken"] = token
            page = self.call("describe_compute_environments", **kwargs)
            out.extend(page.get("computeEnvironments", []))
            token = page.get("nextToken")
            if not token:
                return out


def _arn_tail(value: str | None) -> str | None:
    return value.rsplit("/", 1)[-1] if value else None


def _task_cluster(task_arn: str | None) -> str | None:
    """arn:aws:ecs:<region>:<acct>:task/<cluster>/<task id> -> <cluster> (the long ARN format)."""
    if not task_arn or ":task/" not in task_arn:
        return None
    parts = task_arn.split(":task/", 1)[1].split("/")
    return parts[0] if len(parts) == 2 else None


def requested_resources(detail: dict[str, Any]) -> tuple[float | None, int | None]:
    """vCPUs and MiB a job asks for (resourceRequirements, or the legacy vcpus/memory fields)."""
    container = detail.get("container") or {}
    found = {r.get("type"): r.get("value") for r in container.get("resourceRequirements") or []}
    vcpus = found.get("VCPU", container.get("vcpus"))
    memory = found.get("MEMORY", container.get("memory"))
    try:
        return (float(vcpus) if vcpus is not None else None, int(memory) if memory is not None else None)
    except (TypeError, ValueError):
        return None, None


def queue_name(queue: str) -> str:
    """The name part of a queue ARN: another region's queue of the same stack has the same name."""
    return _arn_tail(queue) or queue if queue.startswith("arn:") else queue


def is_array_parent(summary: dict[str, Any]) -> bool:
    """An array job (ListJobs gives its ``arrayProperties.size``; a child has an ``index``)."""
    props = summary.get("arrayProperties") or {}
    return props.get("size") is not None and props.get("index") is None


def array_children_facts(summary: dict[str, Any], detail: dict[str, Any]) -> list[JobFacts]:
    """An array job as Batch runs it: its children, one fact each, in the states DescribeJobs'
    ``statusSummary`` counts (the parent itself never runs; it stays PENDING while they do).

    A child's own id and times are not in the summary: each stands as its parent (the parent's
    id, which `medintake jobs show` takes to list the children, its name and its creation time:
    the children are created with it). Without a summary the parent counts as one job in its own
    state.
    """
    counts = ((detail.get("arrayProperties") or {}).get("statusSummary")
              or (summary.get("arrayProperties") or {}).get("statusSummary") or {})
    vcpus, memory = requested_resources(detail) if detail else (None, None)
    created = (summary.get("createdAt") or 0) / 1000
    stopped = summary["stoppedAt"] / 1000 if summary.get("stoppedAt") else None
    name = summary.get("jobName", "")
    if not any(int(n or 0) for n in counts.values()):
        return [JobFacts(job_id=summary["jobId"], name=name, status=summary["status"], created_at=created,
                         stopped_at=stopped, status_reason=summary.get("statusReason"), exit_code=None,
                         vcpus=vcpus, memory_mib=memory, cluster=None)]
    out = []
    for state, n in counts.items():
        if state not in ALL_STATES:
            continue
        for _ in range(int(n or 0)):
            out.append(JobFacts(
                job_id=summary["jobId"], name=f"{name}: a child", status=state,
                created_at=created, stopped_at=(stopped or created) if state in FINISHED_STATES else None,
                status_reason=("Array child failed: medintake jobs show " + summary["jobId"])
                if state == "FAILED" else None, exit_code=None, vcpus=vcpus, memory_mib=memory, cluster=None))
    return out


def collect(api: BatchStatusClient, queue: str, region: str, since: float) -> QueueFacts:
    """The queue, its environments and its jobs: all unfinished, and finished ones since ``since``."""
    q = api.describe_job_queue(queue)
    order = sorted(q.get("computeEnvironmentOrder", []), key=lambda o: o.get("order", 0))
    described = {c.get("computeEnvironmentArn"): c for c in
                 api.describe_compute_environments([o["computeEnvironment"] for o in order])}
    described.update({c.get("computeEnvironmentName"): c for c in described.values()})
    envs = []
    for o in order:
        ce = described.get(o["computeEnvironment"]) or {}
        res = ce.get("computeResources") or {}
        envs.append(EnvironmentFacts(
            name=ce.get("computeEnvironmentName") or _arn_tail(o["computeEnvironment"]) or "?",
            order=int(o.get("order", 0)),
            type=res.get("type") or ce.get("type") or "?",
            state=ce.get("state", "?"), status=ce.get("status", "?"),
            status_reason=ce.get("statusReason"),
            max_vcpus=float(res["maxvCpus"]) if res.get("maxvCpus") is not None else None,
            cluster=_arn_tail(ce.get("ecsClusterArn")),
        ))
    summaries: list[dict[str, Any]] = []
    for status in ALL_STATES:
        for s in api.list_jobs(queue, status):
            s.setdefault("status", status)
            if status in FINISHED_STATES and (s.get("stoppedAt") or s.get("createdAt") or 0) / 1000 < since:
                continue
            summaries.append(s)
    # Requested sizes and where running jobs run are only in DescribeJobs; so are an array job's
    # children's states (ListJobs lists the array job, not its children: the array shape).
    wanted = [s["jobId"] for s in summaries
              if s["status"] in ("RUNNABLE", "STARTING", "RUNNING") or is_array_parent(s)]
    details = {d["jobId"]: d for d in api.describe_jobs(wanted)}
    facts = []
    for s in summaries:
        d = details.get(s["jobId"], {})
        if is_array_parent(s):
            facts.extend(array_children_facts(s, d))
            continue
        vcpus, memory = requested_resources(d) if d else (None, None)
        container = d.get("container") or s.get("container") or {}
        exit_code = (s.get("container") or {}).get("exitCode", container.get("exitCode"))
        facts.append(JobFacts(
            job_id=s["jobId"], name=s.get("jobName", ""), status=s["status"],
            created_at=(s.get("createdAt") or 0) / 1000,
            stopped_at=s["stoppedAt"] / 1000 if s.get("stoppedAt") else None,
            status_reason=s.get("statusReason") or d.get("statusReason"),
            exit_code=int(exit_code) if exit_code is not None else None,
            vcpus=vcpus, memory_mib=memory, cluster=_task_cluster(container.get("taskArn")),
        ))
    return QueueFacts(
        source="batch", region=region, queue=q.get("jobQueueName") or queue_name(queue),
        state=q.get("state", "?"), status=q.get("status", "?"), status_reason=q.get("statusReason"),
        environments=tuple(envs), job_facts=tuple(facts),
    )
