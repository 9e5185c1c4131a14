"""The local compute environment: AWS Batch semantics with worker processes on this machine.

It reads the same job definitions Batch registers and behaves as Batch does, so that everything
above it (dispatcher, tracker, retry rules) is exercised locally exactly as on AWS:
- states SUBMITTED -> PENDING (waiting on dependsOn) -> RUNNABLE -> STARTING -> RUNNING ->
  SUCCEEDED | FAILED; a failed dependency fails its dependents ("Dependent Job failed");
- each attempt runs the definition's command (``Ref::`` parameters substituted) in its own process
  group with AWS_BATCH_JOB_ID / AWS_BATCH_JOB_ATTEMPT set; a signal death becomes 128+signal as in
  a container, so a SIGKILLed worker exits 137;
- a failed attempt is retried while attempts remain and ``evaluateOnExit`` says RETRY;
- an attempt past ``attemptDurationSeconds`` gets SIGTERM, then SIGKILL after a grace period, and
  the job FAILS without retry, as on Batch;
- vCPUs are the scheduling unit: ``workers`` slots, a job takes min(vCPUs, workers) of them;
- every state change is emitted as an EventBridge "Batch Job State Change" event to the listeners
  (the tracker), delivered in order and redelivered if a listener fails;
- array jobs (``array_size`` 2-10,000) as Batch runs them: children ``<parent>:<index>`` run and
  fail independently, each with AWS_BATCH_JOB_ARRAY_INDEX set and its own state events (with
  ``arrayProperties.index``); the parent never runs, goes PENDING when a child is RUNNABLE,
  SUCCEEDED only when every child succeeded, FAILED once all are terminal and one failed (its
  events carry ``arrayProperties.size`` and ``statusSummary``); a job that dependsOn the parent
  waits for all children; terminating the parent terminates its children.
Jobs live in memory: this is the embedded default for one machine, not a cluster.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from compute.warm import WarmProcess, prestart, python_module_command
from pipeline.batch_events import DEPENDENCY_REASON, TERMINAL, TIMEOUT_REASON, job_state_change_event
from pipeline.compute_api import JobSubmission
from pipeline.jobdefs import JobDefinition, evaluate_on_exit
from pipeline.settings import Settings

log = logging.getLogger("medintake.compute.local")

EXITED = "Essential container in task exited"


def _ms() -> int:
    return int(time.time() * 1000)


@dataclass
class _Job:
    sub: JobSubmission
    job_id: str
    status: str = "SUBMITTED"
    status_reason: str | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    created_at: int = field(default_factory=_ms)
    started_at: int | None = None
    stopped_at: int | None = None
    proc: Any = None  # subprocess.Popen or compute.warm.WarmProcess
    attempt_started: float = 0.0  # monotonic
    term_sent: float | None = None
    timed_out: bool = False
    log_path: Path | None = None
    scratch: Path | None = None
    exit_code: int | None = None
    array_index: int | None = None  # a child of an array job
    parent: str | None = None
    children: list[str] = field(default_factory=list)  # an array parent (never runs itself)

    @property
    def slots(self) -> int:
        return max(1, int(round(self.sub.definition.vcpus)))

    @property
    def timeout(self) -> int | float | None:
        return self.sub.timeout_seconds or self.sub.definition.timeout_seconds


def local_command(cmd: list[str]) -> list[str]:
    """A definition's command as run here: its ``python`` is this interpreter (the container's is
    the image's)."""
    if cmd and cmd[0] in ("python", "python3"):
        cmd[0] = sys.executable
    return cmd


def definition_environment(definition: JobDefinition, settings: Settings) -> dict[str, str]:
    """An attempt's environment before its per-attempt values: ours, the definition's, the settings'."""
    env = dict(os.environ)
    for item in definition.raw.get("containerProperties", {}).get("environment", []):
        env[item["name"]] = item["value"]
    env.update(settings.to_env())
    return env


def prestart_warm_server(settings: Settings) -> bool:
    """Fork the warm server from this process now, for the job definition the first attempt runs.

    Called by the local runtime before it takes its lock or opens the database (what the server
    must not inherit); see compute/warm_fork.py. The first attempt is the array shape's
    ``process`` job or the per-document shape's ``extract``; either way the server only preloads,
    and any attempt can be forked from it. False (the server then starts at the first attempt, as
    before) when attempts are started with exec or the definition is not ``python -m``.
    """
    if settings.worker_start != "fork":
        return False
    from pipeline.batching import PROCESS_KIND
    from pipeline.jobdefs import load_job_definitions

    definitions = load_job_definitions(settings.job_definitions_dir)
    definition = definitions.get(PROCESS_KIND if settings.job_shape == "array" else "extract")
    if definition is None:
        return False
    warm = python_module_command(local_command(list(definition.command)))
    if warm is None:
        return False
    return prestart(warm[0], definition_environment(definition, settings))


class LocalComputeEnvironment:
    def __init__(
        self,
        settings: Settings,
        listeners: list[Callable[[dict], None]] | None = None,
        grace_seconds: float = 2.0,
        listener_patience: float = 120.0,
    ) -> None:
        self.settings = settings
        self.listener_patience = listener_patience  # seconds a failing listener is retried
        self._failing_since: float | None = None
        self.listeners = list(listeners or [])
        self.grace_seconds = grace_seconds
        self.capacity = settings.effective_workers
        self.jobs: dict[str, _Job] = {}
        self._order: list[str] = []  # FIFO queue order, as a Batch job queue
        self._outbox: deque[dict] = deque()
        self.log_dir = (settings.data_dir / "logs").resolve()

    # ---- the Batch-like API ---------------------------------------------------------------
    def submit(self, submission: JobSubmission) -> str:
        job = _Job(submission, str(uuid.uuid4()))
        unknown = [d for d in submission.depends_on if d not in self.jobs]
        if unknown:
            raise ValueError("dependsOn names a job this environment does not know")
        size = submission.array_size
        if size is not None and not 2 <= size <= 10_000:
            raise ValueError("an array job has 2 to 10,000 children")
        self.jobs[job.job_id] = job
        if size is None:
            self._order.append(job.job_id)
            self._emit(job)
            self._advance_waiting(job)
            return job.job_id
        for index in range(size):
            child = _Job(submission, f"{job.job_id}:{index}", array_index=index, parent=job.job_id)
            self.jobs[child.job_id] = child
            job.children.append(child.job_id)
            self._order.append(child.job_id)
        self._emit(job)
        for child_id in job.children:
            self._emit(self.jobs[child_id])
        for child_id in job.children:
            self._advance_waiting(self.jobs[child_id])
        return job.job_id

    def describe(self, job_id: str) -> dict[str, Any]:
        """The job in DescribeJobs' shape (what the events carry in ``detail``)."""
        job = self.jobs[job_id]
        d = job.sub.definition
        container: dict[str, Any] = {
            "image": d.raw.get("containerProperties", {}).get("image", ""),
            "command": d.resolve_command(job.sub.parameters),
            "resourceRequirements": d.raw.get("containerProperties", {}).get("resourceRequirements", []),
        }
        if job.log_path is not None:
            container["logStreamName"] = str(job.log_path)
        if job.exit_code is not None and job.status in TERMINAL:
            container["exitCode"] = job.exit_code
        out: dict[str, Any] = {
            "jobName": job.sub.name,
            "jobId": job.job_id,
            "jobQueue": f"arn:aws:batch:local:000000000000:job-queue/{self.settings.job_queue}",
            "status": job.status,
            "attempts": [dict(a) for a in job.attempts],
            "createdAt": job.created_at,
            "retryStrategy": {"attempts": d.attempts, "evaluateOnExit": list(d.evaluate_on_exit)},
            "dependsOn": [{"jobId": j} for j in job.sub.depends_on],
            "jobDefinition": f"arn:aws:batch:local:000000000000:job-definition/{d.registered_name}:1",
            "parameters": dict(job.sub.parameters),
            "container": container,
            "tags": dict(job.sub.tags),
        }
        if job.children:
            summary = {k: 0 for k in ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED", "FAILED")}
            for child_id in job.children:
                summary[self.jobs[child_id].status] += 1
            out["arrayProperties"] = {"size": len(job.children), "statusSummary": summary}
            out["attempts"] = []
        elif job.array_index is not None:
            out["arrayProperties"] = {"index": job.array_index}
        if job.timeout:
            out["timeout"] = {"attemptDurationSeconds": job.timeout}
        if job.status_reason:
            out["statusReason"] = job.status_reason
        if job.started_at:
            out["startedAt"] = job.started_at
        if job.stopped_at:
            out["stoppedAt"] = job.stopped_at
        return out

    def cancel(self, job_id: str, reason: str) -> None:
        """TerminateJob: stop the job whatever its state; it ends FAILED with ``reason``."""
        job = self.jobs.get(job_id)
        if job is None or job.status in TERMINAL:
            return
        if job.children:  # TerminateJob on a parent terminates its children
            for child_id in job.children:
                self.cancel(child_id, reason)
            return
        if job.proc is not None and job.proc.poll() is None:
            _kill_group(job.proc, signal.SIGKILL)
            job.proc.wait()
        job.proc = None
        if job.scratch is not None:
            shutil.rmtree(job.scratch, ignore_errors=True)
        self._set(job, "FAILED", reason)

    def running_pids(self) -> dict[str, int]:
        return {j.job_id: j.proc.pid for j in self.jobs.values() if j.proc is not None and j.status == "RUNNING"}

    def active(self) -> bool:
        return any(j.status not in TERMINAL for j in self.jobs.values()) or bool(self._outbox)

    # ---- the scheduler loop ---------------------------------------------------------------
    def run(
        self,
        until: Callable[[], bool] | None = None,
        poll: float = 0.05,
        max_seconds: float | None = None,
    ) -> None:
        """Schedule and supervise until ``until()`` holds (default: no job left to run)."""
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        try:
            while True:
                self.step()
                if until is not None and until() and not self._outbox:
                    return
                if until is None and not self.active():
                    return
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError("local compute environment did not finish in time")
                time.sleep(poll)
        except BaseException:
            self.shutdown()
            raise

    def step(self) -> None:
        self._reap()
        self._start_runnable()
        self._flush()

    def shutdown(self) -> None:
        """Kill every running worker (used on Ctrl-C and errors)."""
        for job in self.jobs.values():
            if job.proc is not None and job.proc.poll() is None:
                _kill_group(job.proc, signal.SIGKILL)
                job.proc.wait()

    # ---- internals --------------------------------------------------------------------------
    def _emit(self, job: _Job) -> None:
        # Queued, not delivered at once: like EventBridge, delivery is asynchronous to the call
        # that caused it (submit() returns before the tracker hears of the job).
        self._outbox.append(job_state_change_event(self.describe(job.job_id), region="local"))

    def _flush(self) -> None:
        while self._outbox:
            event = self._outbox[0]
            try:
                for listener in self.listeners:
                    listener(event)
            except Exception as exc:  # the tracker failed: keep the event and redeliver it later
                now = time.monotonic()
                self._failing_since = self._failing_since or now
                if now - self._failing_since > self.listener_patience:
                    raise  # e.g. the database has been down for minutes: stop, tell the operator
                log.warning("event listener failed (%s); will redeliver", type(exc).__name__)
                return
            self._failing_since = None
            self._outbox.popleft()

    def _set(self, job: _Job, status: str, reason: str | None = None) -> None:
        job.status = status
        job.status_reason = reason
        if status in TERMINAL:
            job.stopped_at = _ms()
        self._emit(job)
        if job.parent is not None:
            self._update_parent(self.jobs[job.parent])
        if status in TERMINAL:
            self._on_terminal(job)

    def _update_parent(self, parent: _Job) -> None:
        """The parent's state from its children's, as Batch sums it up (Batch's array_jobs page: a
        parent is SUBMITTED, PENDING once a child is RUNNABLE, then SUCCEEDED or FAILED)."""
        states = [self.jobs[c].status for c in parent.children]
        if parent.status in TERMINAL:
            return
        if all(st in TERMINAL for st in states):
            if all(st == "SUCCEEDED" for st in states):
                self._set(parent, "SUCCEEDED", "Array Child Job succeeded")
            else:
                self._set(parent, "FAILED", "Array Child Job failed")
        elif parent.status == "SUBMITTED" and any(st not in ("SUBMITTED", "PENDING") for st in states):
            self._set(parent, "PENDING")  # a parent is only ever SUBMITTED, PENDING, SUCCEEDED or FAILED
        if parent.status in ("SUCCEEDED", "FAILED") and parent.started_at is None:
            parent.started_at = min((self.jobs[c].started_at for c in parent.children
                                     if self.jobs[c].started_at), default=None)

    def _advance_waiting(self, job: _Job) -> None:
        deps = [self.jobs[d] for d in job.sub.depends_on]
        if any(d.status == "FAILED" for d in deps):
            self._set(job, "FAILED", DEPENDENCY_REASON)
        elif all(d.status == "SUCCEEDED" for d in deps):
            self._set(job, "RUNNABLE")
        elif job.status == "SUBMITTED":
            self._set(job, "PENDING")

    def _on_terminal(self, finished: _Job) -> None:
        for job in list(self.jobs.values()):
            if job.status in ("SUBMITTED", "PENDING") and finished.job_id in job.sub.depends_on:
                self._advance_waiting(job)

    def _used_slots(self) -> int:
        return sum(j.slots for j in self.jobs.values() if j.status in ("STARTING", "RUNNING"))

    def _start_runnable(self) -> None:
        for job_id in self._order:
            job = self.jobs[job_id]
            if job.status != "RUNNABLE":
                continue
            need = min(job.slots, self.capacity)
            if self._used_slots() + need > self.capacity:
                break  # FIFO: do not let small jobs starve the head of the queue
            self._launch(job)

    def _launch(self, job: _Job) -> None:
        self._set(job, "STARTING")
        attempt_no = len(job.attempts) + 1
        cmd = local_command(job.sub.definition.resolve_command(job.sub.parameters))
        env = definition_environment(job.sub.definition, self.settings)
        env.update(
            AWS_BATCH_JOB_ID=job.job_id,
            AWS_BATCH_JOB_ATTEMPT=str(attempt_no),
            AWS_BATCH_JQ_NAME=self.settings.job_queue,
            AWS_BATCH_CE_NAME="local",
        )
        env.pop("AWS_BATCH_JOB_ARRAY_INDEX", None)
        if job.array_index is not None:
            env["AWS_BATCH_JOB_ARRAY_INDEX"] = str(job.array_index)
        # Scratch space per attempt, removed when the attempt ends however it ends (even SIGKILL),
        # so a copy of the upload never outlives its job.
        job.scratch = (self.settings.data_dir / "work" / f"{job.job_id.replace(':', '-')}-{attempt_no}").resolve()
        job.scratch.mkdir(parents=True, exist_ok=True)
        env["TMPDIR"] = str(job.scratch)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        job.log_path = self.log_dir / f"{job.sub.kind}-{job.job_id.replace(':', '-')}-{attempt_no}.log"
        cwd = str(self.settings.data_dir.resolve())
        warm = python_module_command(cmd) if self.settings.worker_start == "fork" else None
        if warm is not None:
            job.proc = WarmProcess(warm[0], warm[1], env, job.log_path, cwd)
        else:
            with job.log_path.open("wb") as log_fh:
                job.proc = subprocess.Popen(
                    cmd, env=env, stdin=subprocess.DEVNULL, stdout=log_fh, stderr=subprocess.STDOUT,
                    start_new_session=True, cwd=cwd,
                )
        job.attempt_started = time.monotonic()
        job.term_sent = None
        job.timed_out = False
        job.exit_code = None
        job.started_at = job.started_at or _ms()
        self._set(job, "RUNNING")

    def _reap(self) -> None:
        now = time.monotonic()
        for job in self.jobs.values():
            if job.status != "RUNNING" or job.proc is None:
                continue
            code = job.proc.poll()
            if code is None:
                self._enforce_timeout(job, now)
                continue
            self._finish_attempt(job, 128 - code if code < 0 else code)

    def _enforce_timeout(self, job: _Job, now: float) -> None:
        if not job.timeout or now - job.attempt_started < job.timeout:
            return
        if job.term_sent is None:
            job.timed_out = True
            job.term_sent = now
            _kill_group(job.proc, signal.SIGTERM)
        elif now - job.term_sent >= self.grace_seconds:
            _kill_group(job.proc, signal.SIGKILL)

    def _finish_attempt(self, job: _Job, exit_code: int) -> None:
        # The attempt's main process is gone: what it started (a tesseract child) dies with it, as
        # a container's processes do with its main process. The kill drill found a SIGKILLed
        # worker's tesseract still running next to the retry. Its group only: its pid is reaped.
        try:
            os.killpg(job.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError, AttributeError):
            pass
        started_ms = int(job.started_at or _ms())
        status_reason = TIMEOUT_REASON if job.timed_out else EXITED
        job.attempts.append(
            {
                "container": {"exitCode": exit_code, "logStreamName": str(job.log_path)},
                "startedAt": started_ms,
                "stoppedAt": _ms(),
                "statusReason": status_reason,
            }
        )
        job.exit_code = exit_code
        job.proc = None
        if job.scratch is not None:
            shutil.rmtree(job.scratch, ignore_errors=True)
        if exit_code == 0 and not job.timed_out:
            self._set(job, "SUCCEEDED", EXITED)
            return
        if job.timed_out:  # Batch never retries an attempt it terminated for its timeout
            self._set(job, "FAILED", TIMEOUT_REASON)
            return
        action = evaluate_on_exit(job.sub.definition.evaluate_on_exit, exit_code, None, status_reason)
        if action == "RETRY" and len(job.attempts) < job.sub.definition.attempts:
            log.info("job %s attempt %d exited %d: retrying", job.sub.kind, len(job.attempts), exit_code)
            self._set(job, "RUNNABLE")
        else:
            self._set(job, "FAILED", EXITED)


def _kill_group(proc: Any, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        try:  # a forked attempt that has not called setsid() yet has no group of its own
            os.kill(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
