"""Job definitions: valid Batch requests, the retry contract, and Batch's evaluateOnExit rules."""
from __future__ import annotations

import json

import botocore.session
import pytest
from botocore.validate import ParamValidator

from conftest import REPO
from pipeline.errors import ExitCode
from pipeline.jobdefs import GRAPH, evaluate_on_exit, load_job_definitions

DEFS = load_job_definitions(REPO / "job_definitions")


@pytest.mark.parametrize("kind", [*sorted(GRAPH), "migrate"])
def test_definition_is_a_valid_register_job_definition_request(kind):
    model = botocore.session.get_session().get_service_model("batch")
    shape = model.operation_model("RegisterJobDefinition").input_shape
    raw = json.loads((REPO / "job_definitions" / f"{kind}.json").read_text())
    report = ParamValidator().validate(raw, shape)
    assert not report.has_errors(), report.generate_report()


@pytest.mark.parametrize("kind", sorted(GRAPH))
def test_retry_contract(kind):
    d = DEFS[kind]
    rules = d.evaluate_on_exit
    assert d.command[:3] == ("python", "-m", "jobs") and "Ref::document_id" in d.command
    assert d.timeout_seconds and d.timeout_seconds >= 60 and 1 < d.attempts <= 10
    assert len(rules) <= 5
    assert rules[0] == {"onExitCode": str(int(ExitCode.REJECTED_INPUT)), "action": "EXIT"}
    assert any(r.get("onStatusReason") == "Host EC2*" and r["action"] == "RETRY" for r in rules)
    assert rules[-1]["action"] == "EXIT" and "*" in rules[-1].values()


@pytest.mark.parametrize(
    "exit_code,reason,status_reason,action",
    [
        (65, None, "Essential container in task exited", "EXIT"),  # rejected input: never retried
        (1, None, "Essential container in task exited", "RETRY"),
        (137, "OutOfMemoryError: Container killed due to memory usage", "x", "RETRY"),
        (75, None, "", "RETRY"),
        (None, None, "Host EC2 (instance i-0abc) terminated.", "RETRY"),  # EC2 Spot reclaim
        (None, None, "Your Spot Task was interrupted.", "RETRY"),  # Fargate Spot reclaim (ECS stoppedReason)
        (None, "CannotPullContainerError: pull access denied", "Task failed to start", "EXIT"),
    ],
)
def test_evaluate_on_exit_as_batch(exit_code, reason, status_reason, action):
    assert evaluate_on_exit(DEFS["extract"].evaluate_on_exit, exit_code, reason, status_reason) == action


def test_evaluate_on_exit_semantics():
    rules = ({"onExitCode": "6*", "onReason": "OOM*", "action": "EXIT"},)
    assert evaluate_on_exit(rules, 65, "OOM killed", None) == "EXIT"  # all conditions match
    assert evaluate_on_exit(rules, 65, "other", None) == "RETRY"  # one fails: no match -> retry
    assert evaluate_on_exit((), 1, None, None) == "RETRY"


def test_names_are_content_hashed():
    d = DEFS["extract"]
    assert d.registered_name.startswith("medintake-extract-") and len(d.content_hash) == 12
    assert d.resolve_command({"document_id": "abc", "attempt": "3"})[-4:] == ["--document-id", "abc", "--attempt", "3"]
