"""AWS Batch's part, played in-process for tests against moto's server.

moto records what is submitted (names, definitions, dependencies, parameters) but runs nothing
without Docker: it marks every job SUCCEEDED at once. This emulator does what Batch does with a
submitted job instead: it reads the job and its registered definition back from moto, resolves
``Ref::`` parameters into the command, runs ``python -m MODULE ...`` in this process with the
container's environment (the definition's variables plus AWS_BATCH_*; none of the test's
MEDINTAKE_* settings), applies the definition's ``retryStrategy`` to failed attempts (faults such
as a lost Spot host or an out-of-memory kill are injected per attempt, since nothing real can
produce them here), and delivers each state change, shaped as EventBridge delivers it, to a
listener: the tracker Lambda's handler.

Array jobs (``arrayProperties.size``): moto creates the children ``<parent>:<index>`` (same name,
definition and parameters; it runs none of them). The emulator runs each child as above with
AWS_BATCH_JOB_ARRAY_INDEX set, its events carrying ``arrayProperties.index``, and emits the
parent's own events as Batch does: SUBMITTED, PENDING once a child is RUNNABLE, then SUCCEEDED if
every child succeeded or FAILED once all are terminal and one failed (with ``arrayProperties``
size and statusSummary).
"""
from __future__ import annotations

import os
import runpy
import sys
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from pipeline.batch_events import DEPENDENCY_REASON, TIMEOUT_REASON, job_state_change_event
from pipeline.jobdefs import evaluate_on_exit

EXITED = "Essential container in task exited"
# Injected attempt outcomes: (exit code, container reason, status reason) as Batch reports them.
FAULTS = {
    "host_terminated": (None, None, "Host EC2 (instance i-0123456789abcdef0) terminated."),
    "oom": (137, "OutOfMemoryError: Container killed due to memory usage", EXITED),
    "timeout": (None, None, TIMEOUT_REASON),
    # The command runs to its end, then the attempt is reported lost (a Spot reclaim just before
    # the container's exit was recorded): Batch retries it and the rerun sees finished work.
    "spot_after_run": (None, None, "Your Spot Task was interrupted."),
}


@contextmanager
def container_environment(variables: dict[str, str], cwd: str) -> Iterator[None]:
    saved_env, saved_argv, saved_cwd = dict(os.environ), list(sys.argv), os.getcwd()
    for name in list(os.environ):
        if name.startswith("MEDINTAKE_"):
            del os.environ[name]
    os.environ.update(variables)
    os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        sys.argv[:] = saved_argv


class BatchEmulator:
    def __init__(self, batch_client: Any, listener: Callable[[dict], Any], workdir: str,
                 region: str, account: str = "123456789012") -> None:
        self.batch = batch_client
        self.listener = listener
        self.workdir = workdir
        self.region = region
        self.account = account
        self.finished: dict[str, dict[str, Any]] = {}  # job id -> final description
        self.decisions: list[tuple[str, str]] = []  # (job name, RETRY|EXIT) per failed attempt
        self.commands_run: list[list[str]] = []

    # ---- what Batch knows of a job ---------------------------------------------------------
    def describe(self, job_id: str) -> dict[str, Any]:
        return self.batch.describe_jobs(jobs=[job_id])["jobs"][0]

    def definition(self, arn: str) -> dict[str, Any]:
        return self.batch.describe_job_definitions(jobDefinitions=[arn])["jobDefinitions"][0]

    def command(self, job: dict[str, Any], definition: dict[str, Any]) -> list[str]:
        values = {**definition.get("parameters", {}), **job.get("parameters", {})}
        return [values[t[5:]] if t.startswith("Ref::") else t for t in definition["containerProperties"]["command"]]

    # ---- running ------------------------------------------------------------------------------
    def run_command(self, job_id: str, command: list[str], environment: dict[str, str], attempt: int,
                    array_index: int | None = None) -> int:
        """``python -m MODULE ARGS`` in this process, as the container would run it."""
        assert command[:2] in (["python", "-m"], ["python3", "-m"]), command
        self.commands_run.append(command)
        env = {**environment, "AWS_BATCH_JOB_ID": job_id, "AWS_BATCH_JOB_ATTEMPT": str(attempt)}
        if array_index is not None:
            env["AWS_BATCH_JOB_ARRAY_INDEX"] = str(array_index)
        with container_environment(env, self.workdir):
            sys.argv[:] = [command[2], *command[3:]]
            try:
                runpy.run_module(command[2], run_name="__main__", alter_sys=True)
            except SystemExit as exc:
                return int(exc.code or 0) if not isinstance(exc.code, str) else 1
        return 0

    def _emit(self, state: dict[str, Any]) -> None:
        self.listener(job_state_change_event(state, region=self.region, account=self.account))

    def run(self, job_id: str, faults: list[str] | dict[int, list[str]] | None = None) -> dict[str, Any]:
        """Take the job from SUBMITTED to SUCCEEDED or FAILED, emitting every state change.

        For an array parent, ``faults`` maps a child's index to its faults.
        """
        job = self.describe(job_id)
        size = (job.get("arrayProperties") or {}).get("size")
        if size:
            return self.run_array(job, int(size), faults if isinstance(faults, dict) else {})
        return self._run_one(job_id, job, list(faults or []))

    def run_array(self, parent: dict[str, Any], size: int, faults: dict[int, list[str]]) -> dict[str, Any]:
        """Every child in index order, and the parent's own events around them."""
        base = {k: parent[k] for k in ("jobId", "jobName", "jobQueue", "jobDefinition", "parameters", "dependsOn",
                                       "createdAt") if k in parent}
        states = ["SUBMITTED"] * size

        def parent_state(status: str) -> dict[str, Any]:
            summary = {k: states.count(k) for k in ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING",
                                                    "SUCCEEDED", "FAILED")}
            return {**base, "status": status, "attempts": [], "arrayProperties": {"size": size, "statusSummary": summary}}

        self._emit(parent_state("SUBMITTED"))
        for index in range(size):
            states[index] = "RUNNABLE"
            if index == 0:
                self._emit(parent_state("PENDING"))
            child_id = f"{parent['jobId']}:{index}"
            final = self._run_one(child_id, self.describe(child_id), list(faults.get(index, [])), index)
            states[index] = final["status"]
        status = "SUCCEEDED" if all(st == "SUCCEEDED" for st in states) else "FAILED"
        final = {**parent_state(status), "statusReason": f"Array Child Job {status.lower()}",
                 "stoppedAt": int(time.time() * 1000)}
        self._emit(final)
        self.finished[parent["jobId"]] = final
        return final

    def _run_one(self, job_id: str, job: dict[str, Any], faults: list[str], array_index: int | None = None,
                 ) -> dict[str, Any]:
        definition = self.definition(job["jobDefinition"])
        emit = self._emit
        base = {k: job[k] for k in ("jobId", "jobName", "jobQueue", "jobDefinition", "parameters", "dependsOn",
                                    "createdAt") if k in job}
        base["jobDefinition"] = definition["jobDefinitionArn"]
        if array_index is not None:
            base["arrayProperties"] = {"index": array_index}
        deps = [d["jobId"] for d in job.get("dependsOn", [])]
        if any(self.finished.get(d, {}).get("status") == "FAILED" for d in deps):
            final = {**base, "status": "FAILED", "statusReason": DEPENDENCY_REASON, "attempts": []}
            emit(final)
            self.finished[job_id] = final
            return final
        assert all(self.finished.get(d, {}).get("status") == "SUCCEEDED" for d in deps), "dependency not run"
        strategy = definition.get("retryStrategy") or {}
        max_attempts = int(strategy.get("attempts", 1))
        rules = tuple(strategy.get("evaluateOnExit", []))
        env = {e["name"]: e["value"] for e in definition["containerProperties"].get("environment", [])}
        attempts: list[dict[str, Any]] = []
        for state in ("SUBMITTED", "PENDING", "RUNNABLE"):
            emit({**base, "status": state, "attempts": []})
        while True:
            emit({**base, "status": "STARTING", "attempts": list(attempts)})
            emit({**base, "status": "RUNNING", "attempts": list(attempts), "startedAt": int(time.time() * 1000)})
            fault = faults.pop(0) if faults else None
            if fault is None:
                code = self.run_command(job_id, self.command(job, definition), env, len(attempts) + 1, array_index)
                exit_code, reason, status_reason = code, None, EXITED
            else:
                if fault == "spot_after_run":
                    self.run_command(job_id, self.command(job, definition), env, len(attempts) + 1, array_index)
                exit_code, reason, status_reason = FAULTS[fault]
            container = {k: v for k, v in (("exitCode", exit_code), ("reason", reason)) if v is not None}
            attempts.append({"container": container, "statusReason": status_reason,
                             "startedAt": int(time.time() * 1000), "stoppedAt": int(time.time() * 1000)})
            if exit_code == 0:
                final = {**base, "status": "SUCCEEDED", "statusReason": EXITED, "attempts": attempts,
                         "container": container, "stoppedAt": int(time.time() * 1000)}
                break
            if status_reason == TIMEOUT_REASON:
                action = "EXIT"  # Batch does not retry an attempt it stopped for its timeout
            else:
                action = evaluate_on_exit(rules, exit_code, reason, status_reason)
            self.decisions.append((job["jobName"], action))
            if action == "RETRY" and len(attempts) < max_attempts:
                emit({**base, "status": "RUNNABLE", "attempts": list(attempts)})
                continue
            final = {**base, "status": "FAILED", "statusReason": status_reason, "attempts": attempts,
                     "container": container, "stoppedAt": int(time.time() * 1000)}
            break
        emit(final)
        self.finished[job_id] = final
        return final

    def run_graph(self, job_ids: list[str], faults: dict[str, list[str]] | None = None) -> dict[str, dict]:
        """Run a document's jobs in dependency order; ``faults`` by job name prefix (kind)."""
        faults = faults or {}
        pending = list(job_ids)
        out = {}
        while pending:
            for job_id in list(pending):
                job = self.describe(job_id)
                if all(d["jobId"] in self.finished for d in job.get("dependsOn", [])):
                    kind = job["jobName"].split("-")[1]
                    out[kind] = self.run(job_id, faults.get(kind))
                    pending.remove(job_id)
        return out
