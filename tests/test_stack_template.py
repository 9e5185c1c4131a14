"""The CloudFormation template compute/cloudformation/medintake.yaml.

Three kinds of test:

* lint: cfn-lint reports nothing and checkov fails no check (each deliberate exception is
  suppressed in the template itself, in the resource's ``Metadata.checkov.skip``, with a reason).
  Both tools live in ``.venv-tools`` (``.ci/setup --test`` makes it; checkov pins libraries that
  clash with ours) and run offline.
* posture: structural assertions that fail if an edit weakens the security or reliability
  posture (encryption, public access, TLS-only, least privilege, private networking, alarms).
* moto: the stack is created in moto in-process with real parameter values; it must reach
  CREATE_COMPLETE with every output a non-empty string. moto skips the resource types listed in
  MOTO_SKIPPED_TYPES, so nothing a supported resource, a Lambda environment or an output needs
  may come from one of those (the template computes such values with !Sub instead).
"""
from __future__ import annotations

import io
import json
import os
import re
import subprocess
import warnings
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import pytest
import yaml

from conftest import REPO

TEMPLATE = REPO / "compute" / "cloudformation" / "medintake.yaml"
TOOLS = REPO / ".venv-tools" / "bin"

# Resource types of this template that moto 5.2's CloudFormation skips (it warns "No Moto
# CloudFormation support" and creates nothing; a Ref to one resolves to None), each with what
# stands in for it in the tests. The end-to-end test reuses this map; test_moto_skips_exactly_these
# keeps it true for the installed moto.
MOTO_SKIPPED_TYPES: dict[str, str] = {
    "AWS::SecretsManager::Secret": (
        "the test creates the secret named medintake/<env>/database (JSON username, password; "
        "host, port, dbname to point at its database) with the Secrets Manager API; the code "
        "addresses it by that name"
    ),
    "AWS::SecretsManager::RotationSchedule": (
        "nothing: the rotation function's steps run against a real MariaDB and moto's Secrets "
        "Manager in tests/test_database_secret.py"
    ),
    "AWS::SecretsManager::SecretTargetAttachment": (
        "nothing: the test puts host/port/dbname in the secret itself"
    ),
    "AWS::Cognito::UserPool": (
        "the test calls the upload API handler with a proxy event carrying "
        "requestContext.authorizer.claims.sub, as the Cognito authorizer would; the UserPoolId "
        "output is absent in moto"
    ),
    "AWS::Cognito::UserPoolClient": "nothing; the UserPoolClientId output is absent in moto",
    "AWS::ApiGateway::Authorizer": (
        "the claims the authorizer would add are put in the event by the test (the methods are "
        "created without their AuthorizerId)"
    ),
    "AWS::ApiGateway::Account": "nothing (the account-level CloudWatch role for stage logs)",
    "AWS::ApiGateway::Stage": (
        "nothing: UploadApiUrl is built with !Sub from the RestApi id and the stage name v1; "
        "tests call the handler directly"
    ),
    "AWS::CloudWatch::Alarm": "nothing: test_alarms_cover_every_failure_mode checks them in the template",
    "AWS::CloudTrail::Trail": "nothing (audit trail of the uploads bucket's S3 data events)",
    "AWS::S3::BucketPolicy": "nothing: test_buckets_are_private_encrypted_tls_only checks the TLS-only policy",
    "AWS::SQS::QueuePolicy": (
        "nothing: moto delivers S3 notifications and EventBridge dead letters without a queue "
        "policy; the policies are checked in the template"
    ),
    "AWS::SNS::Subscription": "nothing (the optional alarm e-mail); tests subscribe their own SQS queue to a topic",
}

# Outputs that come from a skipped type: moto leaves them out of describe_stacks.
MOTO_ABSENT_OUTPUTS = {"UserPoolId", "UserPoolClientId"}

# Properties of supported types that moto's CloudFormation ignores (it creates the resource
# without them). apply_moto_stand_ins() sets the ones the pipeline needs through the API.
MOTO_IGNORED_PROPERTIES: dict[str, str] = {
    "AWS::S3::Bucket.NotificationConfiguration": (
        "apply_moto_stand_ins puts the template's notification (s3:ObjectCreated:* with prefix "
        "uploads/ to the upload-events queue)"
    ),
    "AWS::S3::Bucket.VersioningConfiguration": "apply_moto_stand_ins enables versioning",
    "AWS::S3::Bucket.LifecycleConfiguration": "nothing (checked in the template)",
    "AWS::S3::Bucket.PublicAccessBlockConfiguration": "nothing (checked in the template)",
}

# docs/deploy.md: "Parameters", "Stack outputs", "Environment of the Lambdas", "Lambda handlers"
CONTRACT_PARAMETERS = {
    "Environment", "CostCentre", "WorkerImage", "CodeBucket", "CodeKey", "EntitiesBackend",
    "ComprehendOperations", "AlarmEmail", "MaxVcpus", "DatabaseInstanceClass", "UploadMaxBytes",
    "DispatcherConcurrency", "SubmitRatePerSecond", "JobShape", "DispatcherBatchSize", "DispatcherBatchWindow",
    "ProcessingLambdaConcurrency", "UploadAllowedOrigins",
}
CONTRACT_OUTPUTS = {
    "UploadApiUrl", "UploadsBucketName", "UploadEventsQueueUrl", "JobQueueArn", "NoticesTopicArn",
    "AlarmTopicArn", "WorkerJobRoleArn", "BatchExecutionRoleArn", "DatabaseEndpoint", "DatabasePort",
    "DatabaseSecretName", "EcrRepositoryUri", "UserPoolId", "UserPoolClientId", "KmsKeyArn",
    "DispatcherFunctionName", "TrackerFunctionName", "UploadApiFunctionName",
}
CONTRACT_ENVIRONMENT = {
    "MEDINTAKE_STORE_BACKEND", "MEDINTAKE_BUCKET", "MEDINTAKE_COMPUTE_BACKEND", "MEDINTAKE_JOB_QUEUE",
    "MEDINTAKE_JOB_DEFINITION_PREFIX", "MEDINTAKE_WORKER_IMAGE", "MEDINTAKE_BATCH_JOB_ROLE_ARN",
    "MEDINTAKE_BATCH_EXECUTION_ROLE_ARN", "MEDINTAKE_NOTIFIER", "MEDINTAKE_SNS_TOPIC_ARN",
    "MEDINTAKE_AWS_REGION", "MEDINTAKE_DATABASE_URL", "MEDINTAKE_DATABASE_SECRET",
    "MEDINTAKE_ENTITIES_BACKEND", "MEDINTAKE_COMPREHEND_OPERATIONS", "MEDINTAKE_SUBMIT_RATE",
    "MEDINTAKE_UPLOAD_MAX_BYTES", "MEDINTAKE_LOG_LEVEL", "POWERTOOLS_SERVICE_NAME",
    "POWERTOOLS_METRICS_NAMESPACE", "MEDINTAKE_JOB_SHAPE",
}
HANDLERS = {
    "DispatcherFunction": "pipeline.aws_lambda.dispatch_handler",
    "TrackerFunction": "pipeline.aws_lambda.tracker_handler",
    "UploadApiFunction": "pipeline.upload_api.handler",
    "RotationFunction": "pipeline.rotation.handler",
    "QueueMetricsFunction": "pipeline.aws_lambda.queue_metrics_handler",
}
COST_TAGS = {"app", "medintake:environment", "medintake:cost-centre"}
# Taggable, yet untagged in the template on purpose (the stack's tags from deploy reach them).
UNTAGGED_ON_PURPOSE = {
    "Key": "moto 5.2 reads a KMS key's CloudFormation tags as TagKey/TagValue",
    "Dashboard": "cfn-lint 1.51 (what moto's ValidateTemplate runs) has no Tags on a dashboard",
}

# Real-looking parameter values, as `medintake deploy` passes them.
ACCOUNT = "123456789012"
REGION = "eu-west-1"
CODE_BUCKET = f"medintake-artifacts-{ACCOUNT}-{REGION}"
PARAMETERS = {
    "Environment": "test",
    "CostCentre": "cc-medintake-test",
    "WorkerImage": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/medintake-test-worker:0123abcd",
    "CodeBucket": CODE_BUCKET,
    "CodeKey": "lambda/medintake-0123abcd.zip",
    "EntitiesBackend": "comprehendmedical",
    "ComprehendOperations": "DetectEntitiesV2,InferICD10CM",
    "AlarmEmail": "ops@example.org",
    "MaxVcpus": "16",
    "DatabaseInstanceClass": "db.t4g.medium",
    "UploadMaxBytes": "104857600",
    "UploadAllowedOrigins": "https://app.example-telehealth.org,https://clinic.example-telehealth.org",
    "DispatcherConcurrency": "4",
    "SubmitRatePerSecond": "9",
}
BUCKET_ARN = "arn:${AWS::Partition}:s3:::medintake-${Environment}-uploads-${AWS::AccountId}-${AWS::Region}"
SECRET_ARN = ("arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:"
              "secret:medintake/${Environment}/database-??????")


# ---- reading the template ------------------------------------------------------------------
class CfnLoader(yaml.SafeLoader):
    """SafeLoader that turns CloudFormation short forms (!Ref, !Sub, ...) into their long forms."""


def _construct_intrinsic(loader: CfnLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if tag_suffix == "Ref" else f"Fn::{tag_suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if tag_suffix == "GetAtt":
            value = value.split(".", 1)  # as CloudFormation does: the attribute keeps its dots
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


CfnLoader.add_multi_constructor("!", _construct_intrinsic)


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    return yaml.load(path.read_text(), Loader=CfnLoader)  # noqa: S506 (a SafeLoader subclass)


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


def resources_of(template: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == type_}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def statements(role: dict[str, Any]) -> list[dict[str, Any]]:
    """Every statement of a role's inline policies (of an Fn::If, both branches)."""
    out = []
    for policy in role["Properties"].get("Policies", []):
        for st in policy["PolicyDocument"]["Statement"]:
            if "Fn::If" in st:
                out.extend(b for b in st["Fn::If"][1:] if isinstance(b, dict) and "Effect" in b)
            else:
                out.append(st)
    return out


def text(value: Any) -> str:
    """A !Sub's text, a plain string, or else the JSON of the value (for comparisons)."""
    if isinstance(value, dict) and "Fn::Sub" in value:
        sub = value["Fn::Sub"]
        return sub if isinstance(sub, str) else sub[0]
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def allowed(role: dict[str, Any], action: str) -> list[str]:
    """The resources (as text) of a role's Allow statements that name this action exactly."""
    found = []
    for st in statements(role):
        if st["Effect"] == "Allow" and action in as_list(st["Action"]):
            found.extend(text(r) for r in as_list(st["Resource"]))
    return found


# ---- lint ----------------------------------------------------------------------------------
def _tool(name: str) -> str:
    path = TOOLS / name
    if not path.exists():
        pytest.fail(f"{path} is missing: .ci/setup --test installs cfn-lint and checkov in .venv-tools")
    return str(path)


def _offline_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BC_", "CKV_", "CHECKOV_"))}
    env.update(
        BC_SKIP_MAPPING="TRUE",  # no download of the check mapping from the Prisma Cloud platform
        CKV_SKIP_PACKAGE_UPDATE_CHECK="true",
        CHECKOV_REQUEST_RETRIES="0",
        PYTHONWARNINGS="ignore",
    )
    return env


def test_cfn_lint_is_clean():
    proc = subprocess.run(
        [_tool("cfn-lint"), "--format", "parseable", "--", str(TEMPLATE)],
        capture_output=True, text=True, timeout=300, env=_offline_env(),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == ""  # no errors, no warnings


@pytest.fixture(scope="module")
def checkov_report() -> dict[str, Any]:
    """One offline checkov run for the module (a few seconds)."""
    proc = subprocess.run(
        [_tool("checkov"), "-f", str(TEMPLATE), "--framework", "cloudformation", "--compact",
         "--skip-download", "-o", "json"],
        capture_output=True, text=True, timeout=600, env=_offline_env(), cwd=REPO,
    )
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    return report[0] if isinstance(report, list) else report


def test_checkov_fails_no_check(checkov_report):
    summary = checkov_report["summary"]
    failed = [f"{c['check_id']} {c['resource']}: {c['check_name']}"
              for c in checkov_report["results"].get("failed_checks", [])]
    assert summary["parsing_errors"] == 0
    assert failed == []
    assert summary["passed"] > 100  # it did read the template


def test_every_checkov_suppression_says_why(checkov_report, template):
    for name, resource in template["Resources"].items():
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
            assert re.fullmatch(r"CKV2?_AWS_\d+", skip["id"]), (name, skip)
            assert len(skip.get("comment", "").split()) >= 8, f"{name} {skip['id']}: give the reason"
    skipped = checkov_report["results"].get("skipped_checks", [])
    assert skipped and all(c["check_result"].get("suppress_comment") for c in skipped)
    # No stale suppressions: each one suppresses a check that would otherwise fail.
    declared = sorted((name, skip["id"]) for name, r in template["Resources"].items()
                      for skip in r.get("Metadata", {}).get("checkov", {}).get("skip", []))
    assert declared == sorted((c["resource"].split(".", 1)[1], c["check_id"]) for c in skipped)


# ---- the contract with docs/deploy.md ------------------------------------------------------
def test_parameters_and_outputs_are_the_contract(template):
    assert set(template["Parameters"]) == CONTRACT_PARAMETERS
    assert set(template["Outputs"]) == CONTRACT_OUTPUTS
    assert template["Parameters"]["Environment"]["AllowedValues"] == ["dev", "test", "prod"]
    assert "Transform" not in template  # plain CloudFormation
    assert text(template["Outputs"]["DatabaseSecretName"]["Value"]) == "medintake/${Environment}/database"
    assert text(template["Outputs"]["UploadApiUrl"]["Value"]) == (
        "https://${UploadApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}/v1")


def test_lambdas_run_the_contract_handlers_with_the_contract_environment(template):
    functions = resources_of(template, "AWS::Lambda::Function")
    # The processing Lambda (design E, docs/scale.md) is the worker image, run through awslambdaric.
    image = functions.pop("ProcessingFunction")
    assert image["Condition"] == "HasProcessingLambda" and image["Properties"]["PackageType"] == "Image"
    assert image["Properties"]["Code"] == {"ImageUri": {"Ref": "WorkerImage"}}
    assert image["Properties"]["ImageConfig"] == {"EntryPoint": ["python", "-m", "awslambdaric"],
                                                  "Command": ["jobs.lambda_handler.handler"]}
    assert image["Properties"]["ReservedConcurrentExecutions"] == {"Ref": "ProcessingLambdaConcurrency"}
    assert template["Parameters"]["ProcessingLambdaConcurrency"]["Default"] == 0
    assert set(image["Properties"]["Environment"]["Variables"]) == CONTRACT_ENVIRONMENT
    assert {name: f["Properties"]["Handler"] for name, f in functions.items()} == HANDLERS
    for name, fn in functions.items():
        props = fn["Properties"]
        assert props["Runtime"] == "python3.13", name  # 3.11 is deprecated on Lambda
        assert props["Code"] == {"S3Bucket": {"Ref": "CodeBucket"}, "S3Key": {"Ref": "CodeKey"}}, name
        assert props["TracingConfig"] == {"Mode": "Active"}, name
        assert text(props["FunctionName"]).startswith("medintake-${Environment}-"), name
        env = props["Environment"]["Variables"]
        if name == "DispatcherFunction":  # where small uploads go (design E), when that Lambda exists
            assert env.pop("MEDINTAKE_PROCESSING_QUEUE_URL") == {
                "Fn::If": ["HasProcessingLambda", {"Ref": "ProcessingQueue"}, ""]}
        if name == "UploadApiFunction":  # the web origins it answers CORS for
            assert env.pop("MEDINTAKE_UPLOAD_ALLOWED_ORIGINS") == {"Ref": "UploadAllowedOrigins"}
        if name == "RotationFunction":  # talks to Secrets Manager and the database only
            assert set(env) == {"MEDINTAKE_AWS_REGION", "MEDINTAKE_LOG_LEVEL"}
            continue
        assert set(env) == CONTRACT_ENVIRONMENT, name
        assert env["MEDINTAKE_STORE_BACKEND"] == "s3"
        assert env["MEDINTAKE_COMPUTE_BACKEND"] == "batch"
        assert env["MEDINTAKE_NOTIFIER"] == "sns"
        assert env["POWERTOOLS_METRICS_NAMESPACE"] == "medintake"
        assert text(env["MEDINTAKE_DATABASE_SECRET"]) == "medintake/${Environment}/database"
        assert text(env["MEDINTAKE_JOB_DEFINITION_PREFIX"]) == "medintake-${Environment}"
        assert text(env["POWERTOOLS_SERVICE_NAME"]) == "medintake-${Environment}"  # the alarms' dimension
    assert functions["DispatcherFunction"]["Properties"]["ReservedConcurrentExecutions"] == {"Ref": "DispatcherConcurrency"}


def _taggable_types(types: list[str]) -> dict[str, str]:
    """Resource type -> its tags property, from cfn-lint's resource schemas (in .venv-tools)."""
    code = (
        "import json, sys\n"
        "from cfnlint.schema import PROVIDER_SCHEMA_MANAGER as m\n"
        "out = {}\n"
        "for t in json.loads(sys.argv[1]):\n"
        "    props = m.get_resource_schema('us-east-1', t).schema.get('properties', {})\n"
        "    found = [k for k in ('Tags', 'UserPoolTags') if k in props]\n"
        "    if found:\n"
        "        out[t] = found[0]\n"
        "print(json.dumps(out))\n"
    )
    python = str(Path(_tool("cfn-lint")).parent / "python")
    proc = subprocess.run([python, "-c", code, json.dumps(types)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_every_taggable_resource_carries_the_cost_tags(template):
    taggable = _taggable_types(sorted({r["Type"] for r in template["Resources"].values()}))
    assert "AWS::Lambda::Function" in taggable
    for name, resource in template["Resources"].items():
        field = taggable.get(resource["Type"])
        if field is None or name in UNTAGGED_ON_PURPOSE:
            continue
        tags = resource["Properties"].get(field)
        assert tags is not None, f"{name} ({resource['Type']}) has no {field}"
        keys = {t["Key"] for t in tags} if isinstance(tags, list) else set(tags)
        assert COST_TAGS <= keys, name


# ---- posture -------------------------------------------------------------------------------
def test_buckets_are_private_encrypted_tls_only(template):
    buckets = resources_of(template, "AWS::S3::Bucket")
    policies = {p["Properties"]["Bucket"]["Ref"]: p for p in resources_of(template, "AWS::S3::BucketPolicy").values()}
    assert "UploadsBucket" in buckets
    for name, bucket in buckets.items():
        props = bucket["Properties"]
        assert props["VersioningConfiguration"] == {"Status": "Enabled"}, name
        (rule,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        assert rule["ServerSideEncryptionByDefault"] == {
            "SSEAlgorithm": "aws:kms", "KMSMasterKeyID": {"Fn::GetAtt": ["Key", "Arn"]}}, name
        assert rule["BucketKeyEnabled"] is True, name
        assert props["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True, "RestrictPublicBuckets": True,
        }, name
        assert bucket["DeletionPolicy"] == "Retain", name
        tls_only = [
            st for st in policies[name]["Properties"]["PolicyDocument"]["Statement"]
            if st["Effect"] == "Deny" and st["Principal"] == "*" and st["Action"] == "s3:*"
            and st["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        ]
        assert tls_only, f"{name} has no TLS-only statement"
        assert {text(r) for r in tls_only[0]["Resource"]} == {
            f"arn:${{AWS::Partition}}:s3:::${{{name}}}", f"arn:${{AWS::Partition}}:s3:::${{{name}}}/*"}


def test_uploads_bucket_lifecycle(template):
    rules = template["Resources"]["UploadsBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    assert all(r["Status"] == "Enabled" for r in rules)
    abort = [r for r in rules if "AbortIncompleteMultipartUpload" in r]
    assert abort[0]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1} and "Prefix" not in abort[0]
    noncurrent = {r.get("Prefix", ""): r["NoncurrentVersionExpiration"]["NoncurrentDays"]
                  for r in rules if "NoncurrentVersionExpiration" in r}
    assert noncurrent[""] >= 30 and noncurrent["results/"] < noncurrent[""]
    # The original upload is never deleted: current versions never expire.
    assert not any("ExpirationInDays" in r or "ExpirationDate" in r for r in rules)


def test_only_uploads_prefix_notifies_the_dispatcher_queue(template):
    bucket = template["Resources"]["UploadsBucket"]
    notifications = bucket["Properties"]["NotificationConfiguration"]
    assert set(notifications) == {"QueueConfigurations"}
    (config,) = notifications["QueueConfigurations"]
    assert config["Event"] == "s3:ObjectCreated:*"
    assert config["Queue"] == {"Fn::GetAtt": ["UploadEventsQueue", "Arn"]}
    assert config["Filter"]["S3Key"]["Rules"] == [{"Name": "prefix", "Value": "uploads/"}]
    assert bucket["DependsOn"] in ("UploadEventsQueuePolicy", ["UploadEventsQueuePolicy"])
    policy = template["Resources"]["UploadEventsQueuePolicy"]["Properties"]
    assert policy["Queues"] == [{"Ref": "UploadEventsQueue"}]
    (send,) = [st for st in policy["PolicyDocument"]["Statement"] if st["Effect"] == "Allow"]
    assert send["Principal"] == {"Service": "s3.amazonaws.com"} and send["Action"] == "sqs:SendMessage"
    assert text(send["Condition"]["ArnLike"]["aws:SourceArn"]) == BUCKET_ARN
    assert send["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    assert f"arn:${{AWS::Partition}}:s3:::{text(bucket['Properties']['BucketName'])}" == BUCKET_ARN


def test_queues_are_encrypted_and_dead_lettered(template):
    queues = resources_of(template, "AWS::SQS::Queue")
    for name, queue in queues.items():
        assert queue["Properties"]["KmsMasterKeyId"] == {"Ref": "Key"}, name
    upload = queues["UploadEventsQueue"]["Properties"]
    assert upload["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["UploadEventsDeadLetterQueue", "Arn"]}, "maxReceiveCount": 5}
    dispatcher_timeout = template["Resources"]["DispatcherFunction"]["Properties"]["Timeout"]
    assert upload["VisibilityTimeout"] >= 6 * dispatcher_timeout
    for dlq in ("UploadEventsDeadLetterQueue", "TrackerDeadLetterQueue"):
        assert queues[dlq]["Properties"]["MessageRetentionPeriod"] == 14 * 24 * 3600
    mapping = template["Resources"]["DispatcherEventSource"]["Properties"]
    # The array shape (docs/scale.md): one array job per batch of up to DispatcherBatchSize events.
    assert mapping["BatchSize"] == {"Ref": "DispatcherBatchSize"}
    assert mapping["MaximumBatchingWindowInSeconds"] == {"Ref": "DispatcherBatchWindow"}
    params = template["Parameters"]
    assert params["JobShape"]["Default"] == "array" and params["DispatcherBatchSize"]["MaxValue"] == 10000
    assert params["DispatcherBatchWindow"]["MaxValue"] == 300
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["EventSourceArn"] == {"Fn::GetAtt": ["UploadEventsQueue", "Arn"]}
    assert mapping["FunctionName"] == {"Ref": "DispatcherFunction"}


def test_tracker_gets_our_queues_job_state_changes_with_a_dead_letter_queue(template):
    rule = template["Resources"]["TrackerRule"]["Properties"]
    assert rule["EventPattern"] == {
        "source": ["aws.batch"], "detail-type": ["Batch Job State Change"],
        "detail": {"jobQueue": [{"Ref": "JobQueue"}]},
    }
    (target,) = rule["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": ["TrackerFunction", "Arn"]}
    assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": ["TrackerDeadLetterQueue", "Arn"]}}
    assert target["RetryPolicy"]["MaximumRetryAttempts"] > 0
    # Function errors of the asynchronous invocation, after Lambda's own retries, too.
    tracker = template["Resources"]["TrackerFunction"]["Properties"]
    assert tracker["DeadLetterConfig"] == {"TargetArn": {"Fn::GetAtt": ["TrackerDeadLetterQueue", "Arn"]}}
    invokers = {(text(p["Properties"]["FunctionName"]), p["Properties"]["Principal"], text(p["Properties"]["SourceArn"]))
                for p in resources_of(template, "AWS::Lambda::Permission").values()}
    assert (text({"Ref": "TrackerFunction"}), "events.amazonaws.com", text({"Fn::GetAtt": ["TrackerRule", "Arn"]})) in invokers
    assert (text({"Ref": "QueueMetricsFunction"}), "events.amazonaws.com",
            text({"Fn::GetAtt": ["QueueMetricsSchedule", "Arn"]})) in invokers
    assert (text({"Ref": "UploadApiFunction"}), "apigateway.amazonaws.com",
            "arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:${UploadApi}/v1/*") in invokers
    assert (text({"Ref": "RotationFunction"}), "secretsmanager.amazonaws.com", text({"Ref": "DatabaseSecret"})) in invokers
    rotation = template["Resources"]["DatabaseSecretRotation"]
    assert rotation["Properties"]["RotationLambdaARN"] == {"Fn::GetAtt": ["RotationFunction", "Arn"]}
    assert "DatabaseSecretAttachment" in rotation["DependsOn"]  # the secret names the host first
    schedule = template["Resources"]["QueueMetricsSchedule"]["Properties"]
    assert schedule["ScheduleExpression"] == "rate(5 minutes)"
    assert schedule["Targets"][0]["Arn"] == {"Fn::GetAtt": ["QueueMetricsFunction", "Arn"]}


def test_dispatcher_submits_only_to_our_queue_and_definitions(template):
    role = template["Resources"]["DispatcherRole"]
    assert sorted(allowed(role, "batch:SubmitJob")) == sorted([
        text({"Ref": "JobQueue"}),
        "arn:${AWS::Partition}:batch:${AWS::Region}:${AWS::AccountId}:job-definition/medintake-${Environment}-*",
    ])
    for st in statements(role):
        assert st["Effect"] == "Allow"
        assert "*" not in as_list(st["Resource"]), st
        assert not any(a.endswith("*") for a in as_list(st["Action"])), st
    (terminate,) = [st for st in statements(role) if "batch:TerminateJob" in as_list(st["Action"])]
    assert terminate["Condition"] == {"StringEquals": {"aws:ResourceTag/app": "medintake"}}
    assert allowed(role, "s3:PutObject") == [f"{BUCKET_ARN}/results/*"]
    assert allowed(role, "s3:GetObject") == []
    assert allowed(role, "sns:Publish") == [text({"Ref": "NoticesTopic"})]
    assert allowed(role, "sqs:DeleteMessage") == [text({"Fn::GetAtt": ["UploadEventsQueue", "Arn"]})]


def test_worker_reads_uploads_but_writes_only_results(template):
    role = template["Resources"]["WorkerJobRole"]
    trust = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert [st["Principal"] for st in trust] == [{"Service": "ecs-tasks.amazonaws.com"}]
    assert f"{BUCKET_ARN}/uploads/*" in allowed(role, "s3:GetObject")
    assert f"{BUCKET_ARN}/uploads/*" in allowed(role, "s3:GetObjectVersion")
    for write in ("s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion", "s3:PutObjectAcl"):
        assert set(allowed(role, write)) <= {f"{BUCKET_ARN}/results/*"}, write
    assert allowed(role, "s3:PutObject") == [f"{BUCKET_ARN}/results/*"]
    for st in statements(role):
        assert not any(a in ("*", "s3:*") or a.startswith("s3:Put*") for a in as_list(st["Action"])), st
        if "s3:ListBucket" in as_list(st["Action"]):
            assert st["Condition"] == {"StringLike": {"s3:prefix": "results/*"}}
    (comprehend,) = [st for st in role["Properties"]["Policies"][0]["PolicyDocument"]["Statement"] if "Fn::If" in st]
    condition, statement, otherwise = comprehend["Fn::If"]
    assert condition == "UseComprehendMedical" and otherwise == {"Ref": "AWS::NoValue"}
    assert all(a.startswith(("comprehendmedical:Detect", "comprehendmedical:Infer")) for a in statement["Action"])
    assert template["Conditions"]["UseComprehendMedical"] == {
        "Fn::Equals": [{"Ref": "EntitiesBackend"}, "comprehendmedical"]}


def test_other_roles_are_least_privilege(template):
    res = template["Resources"]
    assert allowed(res["UploadApiRole"], "s3:PutObject") == [f"{BUCKET_ARN}/uploads/*"]
    assert allowed(res["TrackerRole"], "s3:PutObject") == [f"{BUCKET_ARN}/results/*"]
    assert allowed(res["TrackerRole"], "sns:Publish") == [text({"Ref": "NoticesTopic"})]
    for name in ("DispatcherRole", "TrackerRole", "UploadApiRole", "WorkerJobRole"):
        assert allowed(res[name], "secretsmanager:GetSecretValue") == [SECRET_ARN], name
    assert allowed(res["QueueMetricsRole"], "secretsmanager:GetSecretValue") == []
    for name, role in resources_of(template, "AWS::IAM::Role").items():
        for st in statements(role):
            assert st["Effect"] == "Allow", name
            assert not any(a == "*" or a.endswith(":*") for a in as_list(st["Action"])), (name, st)
            if "*" in as_list(st["Resource"]):  # only actions that have no resource-level permissions
                verbs = [a.split(":")[1] for a in as_list(st["Action"])]
                assert all(v.startswith(("Describe", "List", "GetAuthorizationToken", "Detect", "Infer",
                                         "GetRandomPassword")) for v in verbs), (name, st)


def test_private_network_only(template):
    types = {r["Type"] for r in template["Resources"].values()}
    assert not types & {"AWS::EC2::NatGateway", "AWS::EC2::InternetGateway", "AWS::EC2::EgressOnlyInternetGateway",
                        "AWS::EC2::VPCGatewayAttachment", "AWS::EC2::EIP", "AWS::EC2::Route"}
    subnets = resources_of(template, "AWS::EC2::Subnet")
    assert sorted(json.dumps(s["Properties"]["AvailabilityZone"]) for s in subnets.values()) == [
        json.dumps({"Fn::Select": [i, {"Fn::GetAZs": ""}]}) for i in (0, 1)]
    assert all(s["Properties"]["MapPublicIpOnLaunch"] is False for s in subnets.values())
    endpoints = {}
    for endpoint in resources_of(template, "AWS::EC2::VPCEndpoint").values():
        service = text(endpoint["Properties"]["ServiceName"])
        assert service.startswith("com.amazonaws.${AWS::Region}.")
        endpoints[service.removeprefix("com.amazonaws.${AWS::Region}.")] = endpoint
    assert set(endpoints) >= {"s3", "ecr.api", "ecr.dkr", "logs", "secretsmanager", "sns", "sqs", "batch", "comprehendmedical"}
    assert endpoints["s3"]["Properties"]["VpcEndpointType"] == "Gateway"
    assert endpoints["comprehendmedical"]["Condition"] == "UseComprehendMedical"
    assert all("Condition" not in e for k, e in endpoints.items() if k != "comprehendmedical")
    private = [{"Ref": "PrivateSubnetA"}, {"Ref": "PrivateSubnetB"}]
    for name, fn in resources_of(template, "AWS::Lambda::Function").items():
        assert fn["Properties"]["VpcConfig"]["SubnetIds"] == private, name
        assert fn["Properties"]["VpcConfig"]["SecurityGroupIds"] == [{"Ref": "LambdaSecurityGroup"}], name
    for name, env in resources_of(template, "AWS::Batch::ComputeEnvironment").items():
        assert env["Properties"]["ComputeResources"]["Subnets"] == private, name
        assert env["Properties"]["ComputeResources"]["SecurityGroupIds"] == [{"Ref": "BatchSecurityGroup"}], name
    assert template["Resources"]["DatabaseSubnetGroup"]["Properties"]["SubnetIds"] == private
    assert template["Resources"]["Database"]["Properties"]["VPCSecurityGroups"] == [{"Ref": "DatabaseSecurityGroup"}]
    for name, group in resources_of(template, "AWS::EC2::SecurityGroup").items():
        for rule in group["Properties"].get("SecurityGroupIngress", []):
            assert rule.get("CidrIp") != "0.0.0.0/0", name
        for rule in group["Properties"]["SecurityGroupEgress"]:
            assert rule["IpProtocol"] != "-1", name
    ingress = resources_of(template, "AWS::EC2::SecurityGroupIngress")
    assert {(i["Properties"]["GroupId"]["Ref"], i["Properties"]["SourceSecurityGroupId"]["Ref"], i["Properties"]["FromPort"])
            for i in ingress.values()} == {("DatabaseSecurityGroup", "LambdaSecurityGroup", 3306),
                                           ("DatabaseSecurityGroup", "BatchSecurityGroup", 3306)}


def test_batch_prefers_fargate_spot(template):
    envs = resources_of(template, "AWS::Batch::ComputeEnvironment")
    kinds = {name: e["Properties"]["ComputeResources"]["Type"] for name, e in envs.items()}
    assert sorted(kinds.values()) == ["FARGATE", "FARGATE_SPOT"]
    for e in envs.values():
        assert e["Properties"]["Type"] == "MANAGED"
        assert e["Properties"]["ComputeResources"]["MaxvCpus"] == {"Ref": "MaxVcpus"}
    order = sorted(template["Resources"]["JobQueue"]["Properties"]["ComputeEnvironmentOrder"], key=lambda o: o["Order"])
    assert [kinds[o["ComputeEnvironment"]["Ref"]] for o in order] == ["FARGATE_SPOT", "FARGATE"]
    assert not resources_of(template, "AWS::Batch::JobDefinition")  # medintake deploy registers them
    log_group = template["Resources"]["BatchLogGroup"]["Properties"]["LogGroupName"]
    assert text(log_group) == "/aws/batch/medintake-${Environment}"
    execution = template["Resources"]["BatchExecutionRole"]
    group_arn = "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:/aws/batch/medintake-${Environment}"
    assert allowed(execution, "logs:CreateLogStream") == allowed(execution, "logs:PutLogEvents") == [group_arn + ":*"]
    assert allowed(execution, "ecr:BatchGetImage") == [
        "arn:${AWS::Partition}:ecr:${AWS::Region}:${AWS::AccountId}:repository/medintake-${Environment}-worker"]


def test_database_is_multi_az_encrypted_backed_up_and_protected(template):
    db = template["Resources"]["Database"]
    props = db["Properties"]
    assert props["Engine"] == "mysql" and str(props["EngineVersion"]).startswith("8.4.")  # in standard support
    family = template["Resources"]["DatabaseParameterGroup"]["Properties"]["Family"]
    assert family == "mysql" + ".".join(str(props["EngineVersion"]).split(".")[:2])
    assert props["MultiAZ"] is True
    assert props["StorageEncrypted"] is True and props["KmsKeyId"] == {"Ref": "Key"}
    assert props["BackupRetentionPeriod"] >= 7
    assert props["DeletionProtection"] is True
    assert props["PubliclyAccessible"] is False
    assert props["CopyTagsToSnapshot"] is True
    assert props["EnableIAMDatabaseAuthentication"] is True
    assert db["DeletionPolicy"] == "Snapshot" and db["UpdateReplacePolicy"] == "Snapshot"
    # Credentials only through the secret named medintake/<env>/database, never a literal.
    for field, key in (("MasterUsername", "username"), ("MasterUserPassword", "password")):
        assert text(props[field]) == (
            "{{resolve:secretsmanager:medintake/${Environment}/database:SecretString:" + key + "}}")
    assert "DatabaseSecret" in as_list(db["DependsOn"])  # the dynamic references resolve
    secret = template["Resources"]["DatabaseSecret"]["Properties"]
    assert text(secret["Name"]) == "medintake/${Environment}/database"
    assert json.loads(secret["GenerateSecretString"]["SecretStringTemplate"]) == {"username": "medintake"}
    assert secret["GenerateSecretString"]["GenerateStringKey"] == "password"
    attachment = template["Resources"]["DatabaseSecretAttachment"]["Properties"]
    assert attachment["TargetId"] == {"Ref": "Database"}


def test_every_log_group_has_retention_and_encryption(template):
    groups = resources_of(template, "AWS::Logs::LogGroup")
    names = {text(g["Properties"]["LogGroupName"]) for g in groups.values()}
    for name, fn in resources_of(template, "AWS::Lambda::Function").items():
        assert "/aws/lambda/" + text(fn["Properties"]["FunctionName"]) in names, name
    # Groups AWS services would otherwise make without retention: RDS's exported logs, API
    # Gateway's execution logs.
    for export in template["Resources"]["Database"]["Properties"]["EnableCloudwatchLogsExports"]:
        assert f"/aws/rds/instance/medintake-${{Environment}}/{export}" in names
    assert "API-Gateway-Execution-Logs_${UploadApi}/v1" in names
    for name, group in groups.items():
        assert group["Properties"]["RetentionInDays"] >= 365, name
        assert group["Properties"]["KmsKeyId"] == {"Fn::GetAtt": ["Key", "Arn"]}, name


def test_key_rotates_and_data_at_rest_uses_it(template):
    res = template["Resources"]
    key = res["Key"]["Properties"]
    assert key["EnableKeyRotation"] is True
    assert res["Key"]["DeletionPolicy"] == "Retain"
    (root, *services) = key["KeyPolicy"]["Statement"]
    assert root["Principal"] == {"AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}}
    for st in services:
        assert set(st["Principal"]) == {"Service"}, st
    for name, topic in resources_of(template, "AWS::SNS::Topic").items():
        assert topic["Properties"]["KmsMasterKeyId"] == {"Ref": "Key"}, name
    for name, fn in resources_of(template, "AWS::Lambda::Function").items():
        assert fn["Properties"]["KmsKeyArn"] == {"Fn::GetAtt": ["Key", "Arn"]}, name
        # The execution role decrypts the environment (and the secret, the queue, the objects).
        role = res[fn["Properties"]["Role"]["Fn::GetAtt"][0]]
        assert allowed(role, "kms:Decrypt") == [text({"Fn::GetAtt": ["Key", "Arn"]})], name
    assert res["DatabaseSecret"]["Properties"]["KmsKeyId"] == {"Ref": "Key"}
    repo = res["EcrRepository"]["Properties"]
    assert text(repo["RepositoryName"]) == "medintake-${Environment}-worker"
    assert repo["ImageTagMutability"] == "IMMUTABLE" and repo["ImageScanningConfiguration"] == {"ScanOnPush": True}
    assert repo["EncryptionConfiguration"] == {"EncryptionType": "KMS", "KmsKey": {"Fn::GetAtt": ["Key", "Arn"]}}
    assert json.loads(repo["LifecyclePolicy"]["LifecyclePolicyText"])["rules"]
    trail = res["Trail"]["Properties"]
    assert trail["EnableLogFileValidation"] is True and trail["KMSKeyId"] == {"Fn::GetAtt": ["Key", "Arn"]}
    (selector,) = trail["EventSelectors"]
    assert selector["DataResources"] == [{"Type": "AWS::S3::Object",
                                          "Values": [{"Fn::Sub": "arn:${AWS::Partition}:s3:::${UploadsBucket}/"}]}]


def test_upload_api_requires_cognito_on_every_route(template):
    res = template["Resources"]
    routes = set()
    for method in resources_of(template, "AWS::ApiGateway::Method").values():
        props = method["Properties"]
        if props["HttpMethod"] == "OPTIONS":  # CORS preflights carry no token; the function answers
            assert props["AuthorizationType"] == "NONE"  # them for listed origins only (test_upload_api)
        else:
            assert props["AuthorizationType"] == "COGNITO_USER_POOLS"
            assert props["AuthorizerId"] == {"Ref": "UploadApiAuthorizer"}
        assert props["Integration"]["Type"] == "AWS_PROXY"
        assert "/functions/${UploadApiFunction.Arn}/invocations" in text(props["Integration"]["Uri"])
        path, node = [], res[props["ResourceId"]["Ref"]]
        while True:
            path.insert(0, node["Properties"]["PathPart"])
            parent = node["Properties"]["ParentId"]
            if "Ref" not in parent:
                assert parent == {"Fn::GetAtt": ["UploadApi", "RootResourceId"]}
                break
            node = res[parent["Ref"]]
        routes.add(f"{props['HttpMethod']} /{'/'.join(path)}")
    assert routes == {"POST /uploads", "GET /uploads/{upload_id}", "GET /documents/{document_id}",
                      "OPTIONS /uploads", "OPTIONS /uploads/{upload_id}", "OPTIONS /documents/{document_id}"}
    # Browsers of the listed origins (only) may POST the presigned form to the bucket; moto's
    # CloudFormation ignores CorsConfiguration, so the template itself is checked.
    cors = res["UploadsBucket"]["Properties"]["CorsConfiguration"]["Fn::If"]
    assert cors[0] == "HasUploadOrigins" and cors[2] == {"Ref": "AWS::NoValue"}
    (rule,) = cors[1]["CorsRules"]
    assert rule["AllowedMethods"] == ["POST"]
    assert rule["AllowedOrigins"] == {"Fn::Split": [",", {"Ref": "UploadAllowedOrigins"}]}
    assert template["Conditions"]["HasUploadOrigins"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "UploadAllowedOrigins"}, ""]}]}
    deployment = res["UploadApiDeployment"]
    assert set(deployment["DependsOn"]) == set(resources_of(template, "AWS::ApiGateway::Method"))
    authorizer = res["UploadApiAuthorizer"]["Properties"]
    assert authorizer["Type"] == "COGNITO_USER_POOLS"
    assert authorizer["ProviderARNs"] == [{"Fn::GetAtt": ["UserPool", "Arn"]}]
    stage = res["UploadApiStage"]["Properties"]
    assert stage["StageName"] == "v1" and stage["TracingEnabled"] is True
    assert stage["AccessLogSetting"]["DestinationArn"] == {"Fn::GetAtt": ["UploadApiAccessLogGroup", "Arn"]}
    assert all(s["DataTraceEnabled"] is False for s in stage["MethodSettings"])  # bodies can hold PHI
    pool = res["UserPool"]["Properties"]
    password = pool["Policies"]["PasswordPolicy"]
    assert password["MinimumLength"] >= 12
    assert all(password[k] for k in ("RequireLowercase", "RequireUppercase", "RequireNumbers", "RequireSymbols"))
    assert pool["MfaConfiguration"] in ("OPTIONAL", "ON")
    assert res["UserPoolClient"]["Properties"]["GenerateSecret"] is False


def test_alarms_cover_every_failure_mode(template):
    seen = []
    for name, alarm in resources_of(template, "AWS::CloudWatch::Alarm").items():
        props = alarm["Properties"]
        assert props["AlarmActions"] == [{"Ref": "AlarmTopic"}], name
        dims = " ".join(json.dumps(d["Value"], sort_keys=True) for d in props.get("Dimensions", []))
        seen.append((props["Namespace"], props["MetricName"], dims))

    def alarmed(namespace: str, metric: str, dimension: str) -> bool:
        return any(ns == namespace and m == metric and dimension in dims for ns, m, dims in seen)

    assert alarmed("AWS/SQS", "ApproximateNumberOfMessagesVisible", "UploadEventsDeadLetterQueue")
    assert alarmed("AWS/SQS", "ApproximateNumberOfMessagesVisible", "TrackerDeadLetterQueue")
    assert alarmed("medintake", "DocumentsFailed", "medintake-${Environment}")
    assert alarmed("medintake", "OldestRunnableSeconds", "medintake-${Environment}")
    for fn in resources_of(template, "AWS::Lambda::Function"):
        assert alarmed("AWS/Lambda", "Errors", fn), fn
        assert alarmed("AWS/Lambda", "Throttles", fn), fn
    assert alarmed("AWS/RDS", "CPUUtilization", "Database")
    assert alarmed("AWS/RDS", "FreeStorageSpace", "Database")
    assert alarmed("AWS/ApiGateway", "5XXError", "medintake-${Environment}-upload")
    assert resources_of(template, "AWS::CloudWatch::Dashboard")
    assert template["Resources"]["AlarmEmailSubscription"]["Condition"] == "HasAlarmEmail"
    assert template["Conditions"]["HasAlarmEmail"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmEmail"}, ""]}]}


# ---- moto ----------------------------------------------------------------------------------
def test_moto_skips_exactly_these(template):
    from moto.cloudformation.parsing import get_model_map

    supported = set(get_model_map())
    assert {r["Type"] for r in template["Resources"].values()} - supported == set(MOTO_SKIPPED_TYPES)


def apply_moto_stand_ins(outputs: dict[str, str], region: str, database: dict[str, Any] | None = None) -> None:
    """Inside mock_aws, after the stack is created: what moto skipped and the pipeline needs.

    The uploads bucket's versioning and its notification of uploads/ objects to the upload-events
    queue (MOTO_IGNORED_PROPERTIES), and, given ``database`` (username, password, and host, port,
    dbname pointing at a test database), the secret named by the DatabaseSecretName output
    (AWS::SecretsManager::Secret is skipped).
    """
    import boto3

    bucket = outputs["UploadsBucketName"]
    s3 = boto3.client("s3", region_name=region)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    queue_arn = boto3.client("sqs", region_name=region).get_queue_attributes(
        QueueUrl=outputs["UploadEventsQueueUrl"], AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    (config,) = load_template()["Resources"]["UploadsBucket"]["Properties"]["NotificationConfiguration"]["QueueConfigurations"]
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={"QueueConfigurations": [{
            "QueueArn": queue_arn,
            "Events": [config["Event"]],
            "Filter": {"Key": {"FilterRules": config["Filter"]["S3Key"]["Rules"]}},
        }]},
    )
    if database is not None:
        boto3.client("secretsmanager", region_name=region).create_secret(
            Name=outputs["DatabaseSecretName"], SecretString=json.dumps(database))


def _code_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("pipeline/__init__.py", "")
    return buf.getvalue()


@pytest.mark.parametrize("entities_backend", ["comprehendmedical", "local"])
def test_stack_creates_in_moto(entities_backend):
    import boto3
    from moto import mock_aws

    params = dict(PARAMETERS, EntitiesBackend=entities_backend)
    if entities_backend == "local":
        params["AlarmEmail"] = ""
    with warnings.catch_warnings(), mock_aws():
        warnings.simplefilter("ignore")  # moto warns once per skipped resource
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=CODE_BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        s3.put_object(Bucket=CODE_BUCKET, Key=params["CodeKey"], Body=_code_zip())
        cfn = boto3.client("cloudformation", region_name=REGION)
        cfn.create_stack(
            StackName="medintake-test",
            TemplateBody=TEMPLATE.read_text(),
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()],
            Capabilities=["CAPABILITY_IAM"],
            Tags=[{"Key": "app", "Value": "medintake"}, {"Key": "medintake:environment", "Value": "test"}],
        )
        stack = cfn.describe_stacks(StackName="medintake-test")["Stacks"][0]
        assert stack["StackStatus"] == "CREATE_COMPLETE", stack.get("StackStatusReason")
        outputs = {o["OutputKey"]: o.get("OutputValue") for o in stack.get("Outputs", [])}
        assert set(outputs) == CONTRACT_OUTPUTS - MOTO_ABSENT_OUTPUTS
        for key, value in outputs.items():
            assert isinstance(value, str) and value.strip() and value != "None" and "${" not in value, (key, value)
        assert re.fullmatch(rf"https://[a-z0-9]+\.execute-api\.{REGION}\.amazonaws\.com/v1", outputs["UploadApiUrl"])
        assert outputs["UploadsBucketName"] == f"medintake-test-uploads-{ACCOUNT}-{REGION}"
        assert outputs["DatabaseSecretName"] == "medintake/test/database"
        assert outputs["DatabasePort"] == "3306"
        assert outputs["JobQueueArn"] == f"arn:aws:batch:{REGION}:{ACCOUNT}:job-queue/medintake-test"
        assert outputs["EcrRepositoryUri"] == f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/medintake-test-worker"
        assert outputs["DispatcherFunctionName"] == "medintake-test-dispatcher"

        # The database refuses connections that are not TLS (pipeline/database_tls.py verifies it).
        rds = boto3.client("rds", region_name=REGION)
        (instance,) = rds.describe_db_instances()["DBInstances"]
        (group,) = instance["DBParameterGroups"]
        parameters = rds.describe_db_parameters(DBParameterGroupName=group["DBParameterGroupName"])["Parameters"]
        assert {p["ParameterName"]: p["ParameterValue"] for p in parameters}["require_secure_transport"] == "1"

        # The Lambdas got the contract's environment with real values (nothing unresolved).
        lam = boto3.client("lambda", region_name=REGION)
        for key in ("DispatcherFunctionName", "TrackerFunctionName", "UploadApiFunctionName"):
            config = lam.get_function_configuration(FunctionName=outputs[key])
            env = config["Environment"]["Variables"]
            if key == "DispatcherFunctionName":  # no processing Lambda by default: every upload to Batch
                assert env.pop("MEDINTAKE_PROCESSING_QUEUE_URL") == ""
            if key == "UploadApiFunctionName":  # browsers' origins (CORS), as deployed
                assert env.pop("MEDINTAKE_UPLOAD_ALLOWED_ORIGINS") == params["UploadAllowedOrigins"]
            assert set(env) == CONTRACT_ENVIRONMENT
            for name, value in env.items():
                assert str(value).strip() and "${" not in str(value) and str(value) != "None", (name, value)
            assert env["MEDINTAKE_BUCKET"] == outputs["UploadsBucketName"]
            assert env["MEDINTAKE_JOB_QUEUE"] == outputs["JobQueueArn"]
            assert env["MEDINTAKE_SNS_TOPIC_ARN"] == outputs["NoticesTopicArn"]
            assert env["MEDINTAKE_BATCH_JOB_ROLE_ARN"] == outputs["WorkerJobRoleArn"]
            assert env["MEDINTAKE_BATCH_EXECUTION_ROLE_ARN"] == outputs["BatchExecutionRoleArn"]
            assert env["MEDINTAKE_DATABASE_URL"] == f"mysql://{outputs['DatabaseEndpoint']}:3306/medintake"
            assert env["MEDINTAKE_DATABASE_SECRET"] == "medintake/test/database"
            assert env["MEDINTAKE_JOB_DEFINITION_PREFIX"] == "medintake-test"
            assert env["MEDINTAKE_ENTITIES_BACKEND"] == entities_backend
            assert env["MEDINTAKE_SUBMIT_RATE"] == "9" and env["MEDINTAKE_UPLOAD_MAX_BYTES"] == "104857600"
            assert env["MEDINTAKE_AWS_REGION"] == REGION
            assert env["POWERTOOLS_SERVICE_NAME"] == "medintake-test"
            assert config["VpcConfig"]["SubnetIds"]

        # moto ignored the bucket's notification and versioning (MOTO_IGNORED_PROPERTIES) and
        # skipped the secret; with the stand-ins, an upload (and only an upload) reaches the queue.
        bucket = outputs["UploadsBucketName"]
        assert "QueueConfigurations" not in s3.get_bucket_notification_configuration(Bucket=bucket)
        apply_moto_stand_ins(outputs, REGION, {"username": "medintake", "password": "not-a-secret"})
        assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
        sqs = boto3.client("sqs", region_name=REGION)
        queue_url = outputs["UploadEventsQueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sqs.purge_queue(QueueUrl=queue_url)  # an s3:TestEvent, if any
        s3.put_object(Bucket=bucket, Key="results/doc-1/manifest.json", Body=b"{}")
        s3.put_object(Bucket=bucket, Key="uploads/user-1/up-1/scan.pdf", Body=b"%PDF-1.7")
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
        keys = [unquote_plus(r["s3"]["object"]["key"]) for m in messages for r in json.loads(m["Body"]).get("Records", [])]
        assert keys == ["uploads/user-1/up-1/scan.pdf"]
        secret = boto3.client("secretsmanager", region_name=REGION).get_secret_value(SecretId=outputs["DatabaseSecretName"])
        assert json.loads(secret["SecretString"])["username"] == "medintake"
        mappings = lam.list_event_source_mappings(FunctionName=outputs["DispatcherFunctionName"])["EventSourceMappings"]
        assert [m["EventSourceArn"] for m in mappings] == [queue_arn]

        # Batch: one queue over the two Fargate environments.
        batch = boto3.client("batch", region_name=REGION)
        (queue,) = batch.describe_job_queues(jobQueues=[outputs["JobQueueArn"]])["jobQueues"]
        envs = batch.describe_compute_environments(
            computeEnvironments=[o["computeEnvironment"] for o in queue["computeEnvironmentOrder"]])["computeEnvironments"]
        assert sorted(e["computeResources"]["type"] for e in envs) == ["FARGATE", "FARGATE_SPOT"]

        # Private networking only; the Comprehend Medical endpoint only with that backend.
        ec2 = boto3.client("ec2", region_name=REGION)
        services = {e["ServiceName"] for e in ec2.describe_vpc_endpoints()["VpcEndpoints"]}
        assert f"com.amazonaws.{REGION}.secretsmanager" in services
        assert (f"com.amazonaws.{REGION}.comprehendmedical" in services) == (entities_backend == "comprehendmedical")
        assert not ec2.describe_nat_gateways()["NatGateways"]
        assert not ec2.describe_internet_gateways()["InternetGateways"]
