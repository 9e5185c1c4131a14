"""The AWS Batch compute environment: job definitions registered by content, jobs submitted.

Job definitions are registered as ``<prefix>-<kind>-<hash>`` where the hash covers the whole
registration request (the JSON in ``job_definitions/``, the image, the roles, the environment), and
only when no ACTIVE revision of that name exists (Metaflow's approach): deploying twice registers
nothing, a changed image or setting is a new name, and the dispatcher, which computes the same
request from the same settings, submits by name without a describe call per cold start. IAM lets
the dispatcher submit only to ``<prefix>-*`` definitions; ``medintake deploy`` registers them.

Throttling and 5xx answers are retried with back-off by botocore's standard retry mode; other
errors surface. SubmitJob calls pass a per-process token bucket (``submit_rate``) so that the
dispatcher's reserved concurrency times the rate stays under Batch's ~50 submissions/s/account.
An array job (the array shape, docs/scale.md) is one SubmitJob with ``arrayProperties`` however
many children it has.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from typing import Any, Callable

from compute.ratelimit import TokenBucket
from pipeline.compute_api import JobSubmission
from pipeline.errors import ConfigError, TransientError
from pipeline.jobdefs import JobDefinition
from pipeline.settings import Settings

log = logging.getLogger("medintake.compute.batch")

# The settings a worker container needs, passed in its job definition's environment. Only values
# that differ from the defaults are written, so the request (and its hash) depends on what was set.
WORKER_SETTINGS = (
    "store_backend", "bucket", "s3_endpoint_url", "uploads_prefix", "results_prefix",
    "database_url", "database_secret", "aws_region", "entities_backend", "comprehend_operations",
    "comprehend_concurrency", "local_icd10cm", "ocr_low_confidence", "ocr_languages", "ocr_auto_languages",
    "ocr_page_workers", "text_engine", "ocr_timeout", "ocr_dpi", "split_pages", "page_timeout_seconds",
    "max_upload_bytes", "max_pages",
    "max_image_pixels", "log_level",
)


def batch_client(settings: Settings, endpoint_url: str | None = None):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "batch",
        region_name=settings.aws_region or None,
        endpoint_url=endpoint_url or None,
        config=Config(retries={"mode": "standard", "max_attempts": 8}),
    )


def worker_environment(settings: Settings) -> dict[str, str]:
    """MEDINTAKE_* variables for the worker container: the settings that differ from defaults."""
    defaults = Settings()
    env = settings.to_env()
    out = {}
    for name in WORKER_SETTINGS:
        key = "MEDINTAKE_" + name.upper()
        if key in env and getattr(settings, name) != getattr(defaults, name):
            out[key] = env[key]
    return out


class BatchComputeEnvironment:
    def __init__(
        self,
        settings: Settings,
        client: Any = None,
        limiter: TokenBucket | None = None,
    ) -> None:
        self.settings = settings
        self.client = client or batch_client(settings)
        self.limiter = limiter or TokenBucket(settings.submit_rate)
        self._arns: dict[str, str] = {}

    # ---- job definitions ----------------------------------------------------------------------
    def registration_request(self, definition: JobDefinition) -> dict[str, Any]:
        """The RegisterJobDefinition request for this stack, named by the hash of its content."""
        s = self.settings
        request = copy.deepcopy(dict(definition.raw))
        props = request["containerProperties"]
        props["image"] = s.worker_image
        env = {e["name"]: e["value"] for e in props.get("environment", [])}
        env.update(worker_environment(s))
        props["environment"] = [{"name": k, "value": v} for k, v in sorted(env.items())]
        if s.batch_job_role_arn:
            props["jobRoleArn"] = s.batch_job_role_arn
        if s.batch_execution_role_arn:
            props["executionRoleArn"] = s.batch_execution_role_arn
        if s.aws_region:
            props["logConfiguration"] = {
                "logDriver": "awslogs",
                "options": {
                    "awslogs-group": s.batch_log_group or f"/aws/batch/{s.job_definition_prefix}",
                    "awslogs-region": s.aws_region,
                    "awslogs-stream-prefix": definition.kind,
                },
            }
        request.pop("jobDefinitionName", None)
        canonical = json.dumps(request, sort_keys=True, separators=(",", ":")).encode()
        digest = hashlib.sha256(canonical).hexdigest()[:12]
        request["jobDefinitionName"] = f"{s.job_definition_prefix}-{definition.kind}-{digest}"
        return request

    def definition_name(self, definition: JobDefinition) -> str:
        return self.registration_request(definition)["jobDefinitionName"]

    def ensure_job_definition(self, definition: JobDefinition) -> str:
        """The ARN of this exact definition, registering it only if Batch lacks it (deploy)."""
        request = self.registration_request(definition)
        name = request["jobDefinitionName"]
        if name in self._arns:
            return self._arns[name]
        found = self._call(self.client.describe_job_definitions, jobDefinitionName=name, status="ACTIVE")
        revisions = sorted(found.get("jobDefinitions", []), key=lambda d: d["revision"])
        if revisions:
            arn = revisions[-1]["jobDefinitionArn"]
        else:
            arn = self._call(self.client.register_job_definition, **request)["jobDefinitionArn"]
            log.info("registered job definition %s", name)
        self._arns[name] = arn
        return arn

    # ---- jobs ---------------------------------------------------------------------------------
    def submit(self, submission: JobSubmission) -> str:
        kwargs: dict[str, Any] = {
            "jobName": submission.name,
            "jobQueue": self.settings.job_queue,
            # By name: Batch takes the latest ACTIVE revision of this exact content.
            "jobDefinition": self.definition_name(submission.definition),
            "parameters": dict(submission.parameters),
            "dependsOn": [{"jobId": j} for j in submission.depends_on],
            "tags": dict(submission.tags),
            "propagateTags": True,
        }
        if submission.array_size:  # children <id>:0..n-1, each with AWS_BATCH_JOB_ARRAY_INDEX
            kwargs["arrayProperties"] = {"size": int(submission.array_size)}
        if submission.timeout_seconds:
            kwargs["timeout"] = {"attemptDurationSeconds": max(60, int(submission.timeout_seconds))}
        self.limiter.acquire()
        return self._call(self.client.submit_job, **kwargs)["jobId"]

    def cancel(self, job_id: str, reason: str) -> None:
        """TerminateJob works in every state (CancelJob only before RUNNING); idempotent."""
        self._call(self.client.terminate_job, jobId=job_id, reason=reason[:256])

    def wait(
        self,
        job_id: str,
        timeout: float = 1800.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> dict[str, Any]:
        """Poll DescribeJobs until the job is SUCCEEDED or FAILED; returns the job description.

        Back-off grows from 2 s to 30 s; botocore retries throttling (429) and 5xx underneath.
        """
        deadline = clock() + timeout
        delay = 2.0
        while True:
            jobs = self._call(self.client.describe_jobs, jobs=[job_id]).get("jobs", [])
            if jobs and jobs[0]["status"] in ("SUCCEEDED", "FAILED"):
                return jobs[0]
            if clock() + delay > deadline:
                raise TransientError("the job did not finish in time")
            sleep(delay)
            delay = min(30.0, delay * 1.5)

    @staticmethod
    def _call(fn, **kwargs) -> dict[str, Any]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(**kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code in ("ClientException",) and status == 400:
                raise ConfigError(f"AWS Batch refused the request ({code})") from None
            raise TransientError(f"AWS Batch error ({code or status})") from None
        except BotoCoreError as exc:
            raise TransientError(f"AWS Batch unreachable ({type(exc).__name__})") from None
