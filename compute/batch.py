"""The AWS Batch compute environment: job definitions registered by content, jobs submitted.

Job definitions are registered under ``<name>-<hash of content>`` and only when no ACTIVE
revision of that name exists, so deploying the same definitions twice registers nothing and a
changed definition can never be confused with the old one (Metaflow's approach). Throttling and
5xx answers are retried with back-off by botocore's standard retry mode; other errors surface.
"""
from __future__ import annotations

import copy
import logging
from typing import Any

from pipeline.compute_api import JobSubmission
from pipeline.errors import ConfigError, TransientError
from pipeline.jobdefs import JobDefinition
from pipeline.settings import Settings

log = logging.getLogger("medintake.compute.batch")


def batch_client(settings: Settings):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "batch",
        region_name=settings.aws_region or None,
        config=Config(retries={"mode": "standard", "max_attempts": 8}),
    )


class BatchComputeEnvironment:
    def __init__(self, settings: Settings, client: Any = None) -> None:
        self.settings = settings
        self.client = client or batch_client(settings)
        self._arns: dict[str, str] = {}

    def registration_request(self, definition: JobDefinition) -> dict[str, Any]:
        request = copy.deepcopy(dict(definition.raw))
        request["jobDefinitionName"] = definition.registered_name
        request["containerProperties"]["image"] = self.settings.worker_image
        return request

    def ensure_job_definition(self, definition: JobDefinition) -> str:
        """The ARN of this exact definition, registering it only if Batch lacks it."""
        name = definition.registered_name
        if name in self._arns:
            return self._arns[name]
        found = self._call(self.client.describe_job_definitions, jobDefinitionName=name, status="ACTIVE")
        revisions = sorted(found.get("jobDefinitions", []), key=lambda d: d["revision"])
        if revisions:
            arn = revisions[-1]["jobDefinitionArn"]
        else:
            arn = self._call(self.client.register_job_definition, **self.registration_request(definition))[
                "jobDefinitionArn"
            ]
            log.info("registered job definition %s", name)
        self._arns[name] = arn
        return arn

    def submit(self, submission: JobSubmission) -> str:
        kwargs: dict[str, Any] = {
            "jobName": submission.name,
            "jobQueue": self.settings.job_queue,
            "jobDefinition": self.ensure_job_definition(submission.definition),
            "parameters": dict(submission.parameters),
            "dependsOn": [{"jobId": j} for j in submission.depends_on],
            "tags": dict(submission.tags),
            "propagateTags": True,
        }
        if submission.timeout_seconds:
            kwargs["timeout"] = {"attemptDurationSeconds": max(60, int(submission.timeout_seconds))}
        return self._call(self.client.submit_job, **kwargs)["jobId"]

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
