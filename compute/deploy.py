"""`medintake deploy`: stand the service up, or update it, in one region at a time.

Steps per region, each safe to repeat: validate the template and the request; make the artifacts
bucket (once per account and region, like SAM's); upload the Lambda zip under its content hash;
create or update the stack ``medintake-<env>`` and wait; register the job definitions for exactly
the settings the dispatcher Lambda runs with (read back from the deployed function, so the names
the dispatcher computes are the names registered); migrate the schema with the one-off ``migrate``
Batch job (or, ``migrate_with="direct"``, from this machine through a tunnel); return the outputs.
Every region's stack is self-contained (bucket, database, queue, topic): no PHI crosses regions.
"""
from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from compute.batch import BatchComputeEnvironment
from pipeline.compute_api import JobSubmission
from pipeline.errors import ConfigError, MedintakeError, TransientError
from pipeline.jobdefs import load_job_definitions
from pipeline.settings import Settings

log = logging.getLogger("medintake.compute.deploy")

TEMPLATE = Path(__file__).resolve().parent / "cloudformation" / "medintake.yaml"
ENVIRONMENTS = ("dev", "test", "prod")
# Where Amazon Comprehend Medical is offered (AWS regional services list). Elsewhere (ap-east-1,
# ap-southeast-1, eu-central-1, ...) the local extractor runs, so PHI never leaves the region.
COMPREHEND_MEDICAL_REGIONS = frozenset(
    {"us-east-1", "us-east-2", "us-west-2", "ca-central-1", "eu-west-1", "eu-west-2", "ap-southeast-2"}
)
_IMAGE = re.compile(r"^(?P<registry>[^/]+)/(?P<repo>[a-z0-9._/-]+)(:(?P<tag>[\w][\w.-]{0,127})|@sha256:[0-9a-f]{64})$")
_ECR = re.compile(r"^\d{12}\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(\.cn)?$")


class DeployError(MedintakeError):
    """The deployment did not complete."""

    fix = "Read the reason above; `aws cloudformation describe-stack-events` gives every event."


@dataclass(frozen=True)
class DeploySpec:
    """Everything one `medintake deploy` run needs; one frozen object, not a parameter list."""

    regions: tuple[str, ...]
    environment: str
    worker_image: str  # a full image URI, or a tag of the stack's own ECR repository
    cost_centre: str = "medintake"
    alarm_email: str = ""
    endpoint_url: str | None = None  # moto's server in tests; a VPC/proxy endpoint otherwise
    migrate_with: str = "batch"  # batch (one-off job in the VPC) | direct (from here) | skip
    lambda_dependencies: bool = True  # pip-install the Lambdas' libraries into the zip
    parameters: Mapping[str, str] = field(default_factory=dict)  # other template parameters
    template: Path = TEMPLATE
    cache_dir: Path | None = None
    wait_seconds: float = 3600.0


@dataclass(frozen=True)
class RegionResult:
    region: str
    stack_name: str
    action: str  # created | updated | unchanged
    outputs: dict[str, str]
    job_definitions: dict[str, str]
    migration: str


JobRunner = Callable[[BatchComputeEnvironment, str], dict[str, Any]]


def stack_name(environment: str) -> str:
    return f"medintake-{environment}"


def entities_backend_for(region: str) -> str:
    return "comprehendmedical" if region in COMPREHEND_MEDICAL_REGIONS else "local"


class RegionDeployer:
    def __init__(self, spec: DeploySpec, region: str, run_job: JobRunner | None = None,
                 echo: Callable[[str], None] = lambda line: None) -> None:
        self.spec = spec
        self.region = region
        self.run_job = run_job or (lambda batch, job_id: batch.wait(job_id, timeout=spec.wait_seconds))
        self.echo = echo
        self._clients: dict[str, Any] = {}

    def client(self, service: str):
        if service not in self._clients:
            import boto3
            from botocore.config import Config

            self._clients[service] = boto3.client(
                service, region_name=self.region, endpoint_url=self.spec.endpoint_url or None,
                config=Config(retries={"mode": "standard", "max_attempts": 8}),
            )
        return self._clients[service]

    # ---- steps ----------------------------------------------------------------------------------
    def run(self) -> RegionResult:
        self.check_request()
        account = self.client("sts").get_caller_identity()["Account"]
        image = self.worker_image(account)
        bucket = self.ensure_artifacts_bucket(account)
        template_url = self.upload_template(bucket)
        code_key = self.upload_code(bucket)
        parameters = {
            "Environment": self.spec.environment,
            "CostCentre": self.spec.cost_centre,
            "WorkerImage": image,
            "CodeBucket": bucket,
            "CodeKey": code_key,
            "EntitiesBackend": entities_backend_for(self.region),
            "AlarmEmail": self.spec.alarm_email,
            **dict(self.spec.parameters),
        }
        self.validate(template_url, parameters)
        action = self.deploy_stack(template_url, parameters)
        outputs = self.outputs()
        settings = self.runtime_settings(outputs)
        definitions = self.register_job_definitions(settings)
        migration = self.migrate(settings)
        return RegionResult(self.region, stack_name(self.spec.environment), action, outputs, definitions, migration)

    def check_request(self) -> None:
        if self.spec.environment not in ENVIRONMENTS:
            raise ConfigError(f"environment must be one of {', '.join(ENVIRONMENTS)}")
        if not re.fullmatch(r"[a-z]{2}(-gov)?-[a-z]+-\d", self.region):
            raise ConfigError("region must look like eu-west-1")
        if self.spec.migrate_with not in ("batch", "direct", "skip"):
            raise ConfigError("migrate_with must be batch, direct or skip")
        if not self.spec.template.is_file():
            raise ConfigError("the CloudFormation template is missing")

    def upload_template(self, bucket: str) -> str:
        """Templates over 51,200 bytes must come from S3; ours is one."""
        body = self.spec.template.read_bytes()
        key = f"templates/medintake-{hashlib.sha256(body).hexdigest()[:16]}.yaml"
        self._call("upload the template", self.client("s3").put_object, Bucket=bucket, Key=key, Body=body)
        return f"https://{bucket}.s3.{self.region}.amazonaws.com/{key}"

    def validate(self, template_url: str, parameters: Mapping[str, str]) -> None:
        answer = self._call("validate the template", self.client("cloudformation").validate_template,
                            TemplateURL=template_url)
        declared = {p["ParameterKey"] for p in answer.get("Parameters", [])}
        unknown = set(parameters) - declared
        if declared and unknown:
            raise ConfigError(f"unknown template parameter(s): {', '.join(sorted(unknown))}")

    def worker_image(self, account: str) -> str:
        """A full URI as given, or ``<tag>`` of this stack's ECR repository.

        The workers pull through the VPC's ECR endpoints (there is no NAT), which reach only this
        region's registry: an image in another region's ECR would fail at every job start.
        """
        image = self.spec.worker_image
        if "/" not in image:
            return f"{account}.dkr.ecr.{self.region}.amazonaws.com/medintake-{self.spec.environment}-worker:{image}"
        m = _IMAGE.match(image)
        if not m:
            raise ConfigError("the worker image must be REGISTRY/REPOSITORY:TAG or a tag of the stack's repository")
        ecr = _ECR.match(m.group("registry"))
        if ecr and ecr.group("region") != self.region:
            raise ConfigError(
                "the worker image is in another region's ECR; the workers have no route to it",
                fix=f"Push the image to {self.region}'s repository (output EcrRepositoryUri) and pass that URI.",
            )
        return image

    def ensure_artifacts_bucket(self, account: str) -> str:
        s3 = self.client("s3")
        name = f"medintake-artifacts-{account}-{self.region}"
        try:
            s3.head_bucket(Bucket=name)
            return name
        except Exception:  # noqa: BLE001 - absent (404) or not ours (403): create tells which
            pass
        kwargs: dict[str, Any] = {"Bucket": name}
        if self.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        self._call("create the artifacts bucket", s3.create_bucket, **kwargs)
        s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration={
            "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True})
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms"}, "BucketKeyEnabled": True}]})
        self.echo(f"{self.region}: created artifacts bucket {name}")
        return name

    def upload_code(self, bucket: str) -> str:
        from compute import lambda_package

        deps = bundle = None
        if self.spec.lambda_dependencies:
            from compute import rds_bundle

            cache = self.spec.cache_dir or Settings().effective_cache_dir
            deps = lambda_package.install_dependencies(cache)
            bundle = rds_bundle.fetch(cache)
            if bundle is None:
                self.echo(f"{self.region}: warning: the RDS CA bundle could not be downloaded; the Lambdas "
                          "will encrypt their database connections without verifying the server")
        body = lambda_package.build_zip(deps, rds_bundle=bundle)
        key = f"lambda/medintake-{hashlib.sha256(body).hexdigest()[:16]}.zip"
        self._call("upload the Lambda code", self.client("s3").put_object, Bucket=bucket, Key=key, Body=body)
        return key

    def deploy_stack(self, template_url: str, parameters: dict[str, str]) -> str:
        cfn = self.client("cloudformation")
        name = stack_name(self.spec.environment)
        request = {
            "StackName": name,
            "TemplateURL": template_url,
            "Parameters": [{"ParameterKey": k, "ParameterValue": str(v)} for k, v in parameters.items()],
            "Capabilities": ["CAPABILITY_NAMED_IAM"],
            "Tags": [
                {"Key": "medintake:environment", "Value": self.spec.environment},
                {"Key": "medintake:cost-centre", "Value": self.spec.cost_centre},
                {"Key": "app", "Value": "medintake"},
            ],
        }
        existing = self._stack(cfn, name)
        if existing is None or existing["StackStatus"] == "REVIEW_IN_PROGRESS":
            self._call("create the stack", cfn.create_stack, **request,
                       EnableTerminationProtection=self.spec.environment == "prod")
            action, waiter = "created", "stack_create_complete"
        else:
            try:
                cfn.update_stack(**request)
            except Exception as exc:  # noqa: BLE001
                if "No updates are to be performed" in str(exc):
                    self.echo(f"{self.region}: stack {name} is up to date")
                    return "unchanged"
                raise DeployError(f"CloudFormation refused the update ({type(exc).__name__})") from None
            action, waiter = "updated", "stack_update_complete"
        self.echo(f"{self.region}: stack {name}: {'creating' if action == 'created' else 'updating'}")
        try:
            cfn.get_waiter(waiter).wait(StackName=name, WaiterConfig={
                "Delay": 5 if self.spec.endpoint_url else 20, "MaxAttempts": int(self.spec.wait_seconds // 5)})
        except Exception:  # noqa: BLE001 - the reason is in the stack events
            raise DeployError(f"stack {name} failed: {self._failure_reason(cfn, name)}") from None
        return action

    def outputs(self) -> dict[str, str]:
        stack = self._stack(self.client("cloudformation"), stack_name(self.spec.environment)) or {}
        return {o["OutputKey"]: o.get("OutputValue", "") for o in stack.get("Outputs", [])}

    def runtime_settings(self, outputs: Mapping[str, str]) -> Settings:
        """The settings the deployed dispatcher runs with, read from its own configuration."""
        function = outputs.get("DispatcherFunctionName")
        if not function:
            raise DeployError("the stack has no DispatcherFunctionName output")
        config = self._call("read the dispatcher's configuration",
                            self.client("lambda").get_function_configuration, FunctionName=function)
        env = (config.get("Environment") or {}).get("Variables") or {}
        return Settings.load(env=env)

    def register_job_definitions(self, settings: Settings) -> dict[str, str]:
        batch = BatchComputeEnvironment(settings, client=self.client("batch"))
        registered = {}
        for kind, definition in load_job_definitions(settings.job_definitions_dir).items():
            registered[kind] = batch.ensure_job_definition(definition)
        self.echo(f"{self.region}: job definitions {', '.join(a.rsplit('/', 1)[-1] for a in registered.values())}")
        return registered

    def migrate(self, settings: Settings) -> str:
        if self.spec.migrate_with == "skip":
            return "skipped"
        if self.spec.migrate_with == "direct":
            from pipeline import database

            database.upgrade(settings)
            revision = database.current_revision(settings)
            self.echo(f"{self.region}: schema migrated from this machine to {revision}")
            return f"direct:{revision}"
        batch = BatchComputeEnvironment(settings, client=self.client("batch"))
        definition = load_job_definitions(settings.job_definitions_dir)["migrate"]
        job_id = batch.submit(JobSubmission(
            name=f"medintake-migrate-{time.strftime('%Y%m%dT%H%M%S')}", kind="migrate", definition=definition,
            parameters={}, tags={"app": "medintake", "job-kind": "migrate"}))
        self.echo(f"{self.region}: migrating the schema (Batch job {job_id})")
        job = self.run_job(batch, job_id)
        if job.get("status") != "SUCCEEDED":
            raise DeployError(f"the migration job {job_id} ended {job.get('status')}: {job.get('statusReason', '')}")
        return f"batch:{job_id}"

    # ---- helpers --------------------------------------------------------------------------------
    @staticmethod
    def _stack(cfn: Any, name: str) -> dict[str, Any] | None:
        try:
            stacks = cfn.describe_stacks(StackName=name)["Stacks"]
        except Exception as exc:  # noqa: BLE001
            if "does not exist" in str(exc):
                return None
            raise TransientError(f"CloudFormation error ({type(exc).__name__})") from None
        return stacks[0] if stacks else None

    @staticmethod
    def _failure_reason(cfn: Any, name: str) -> str:
        try:
            events = cfn.describe_stack_events(StackName=name)["StackEvents"]
        except Exception:  # noqa: BLE001
            return "unknown (stack events unavailable)"
        failed = [e for e in events if e.get("ResourceStatus", "").endswith("FAILED")]
        if not failed:
            return events[0].get("ResourceStatus", "unknown") if events else "unknown"
        first = failed[-1]  # events are newest first: the last failure listed happened first
        return f"{first.get('LogicalResourceId')} ({first.get('ResourceType')}): {first.get('ResourceStatusReason', '')}"

    @staticmethod
    def _call(what: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(**kwargs)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            # Deploy-time AWS messages name resources and parameters, never a patient's data.
            raise DeployError(f"could not {what} ({error.get('Code', '')}: {error.get('Message', '')[:400]})") from None
        except BotoCoreError as exc:
            raise TransientError(f"could not {what} ({type(exc).__name__})") from None


def deploy(spec: DeploySpec, run_job: JobRunner | None = None,
           echo: Callable[[str], None] = lambda line: None) -> list[RegionResult]:
    """Deploy every region of ``spec`` in turn; the first failure stops the run."""
    if not spec.regions:
        raise ConfigError("name at least one region")
    return [RegionDeployer(spec, region, run_job, echo).run() for region in spec.regions]
