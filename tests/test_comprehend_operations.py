"""Comprehend Medical's four synchronous operations through botocore's Stubber.

moto does not implement comprehendmedical, so requests are checked by botocore against the service
model (Text at most 20,000 characters for DetectEntitiesV2/DetectPHI, 10,000 for InferICD10CM and
InferRxNorm) and canned responses against each operation's output shape. The canned responses
locate markers in the part they are given, with the part's own code-point offsets, as the service
does; the tests check that the merged offsets land on the same words of the whole text.
"""
from __future__ import annotations

import json
import random
import re
import threading
import time

import boto3
import pytest
from botocore.stub import Stubber
from botocore.validate import ParamValidator

from jobs.entities import comprehend
from jobs.entities.detect import FILES, analyse
from pipeline.errors import ConfigError
from pipeline.settings import Settings
from pipeline.tracker import build_manifest

MARK = "metformin"


def _client():
    return boto3.client("comprehendmedical", region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing")


def _shape(op: str):
    return _client().meta.service_model.operation_model(op).output_shape


def _entity(op: str, part: str, m: re.Match, eid: int) -> dict:
    base = {"Id": eid, "BeginOffset": m.start(), "EndOffset": m.end(), "Score": 0.95, "Text": m.group(),
            "Traits": [], "Attributes": []}
    if op == "InferICD10CM":
        return {**base, "Category": "MEDICAL_CONDITION", "Type": "DX_NAME",
                "ICD10CMConcepts": [{"Code": "E11.9", "Description": "Type 2 diabetes mellitus without complications",
                                     "Score": 0.9}]}
    if op == "InferRxNorm":
        return {**base, "Category": "MEDICATION", "Type": "GENERIC_NAME",
                "RxNormConcepts": [{"Code": "6809", "Description": "metformin", "Score": 0.9}]}
    if op == "DetectPHI":
        return {**base, "Category": "PROTECTED_HEALTH_INFORMATION", "Type": "NAME"}
    return {**base, "Category": "MEDICATION", "Type": "GENERIC_NAME"}


PATTERN = {"InferICD10CM": r"diabetes", "DetectPHI": r"Jane", "InferRxNorm": MARK, "DetectEntitiesV2": MARK}


def _response(op: str, part: str, start_id: int = 0) -> dict:
    ents = [_entity(op, part, m, start_id + k) for k, m in enumerate(re.finditer(PATTERN[op], part))]
    out = {"Entities": ents, "ModelVersion": "2.1.0"}
    if op == "DetectEntitiesV2":
        out["UnmappedAttributes"] = []
    return out


def _multibyte_text(n_blocks: int = 14) -> str:
    """Accents, CJK without spaces (3 bytes each), emoji (4 bytes) and markers across many blocks."""
    blocks = []
    for i in range(n_blocks):
        blocks.append("Caf\u00e9 na\u00efve \u00e9t\u00e9 " * 40)           # 2-byte letters with spaces
        blocks.append("\u75c5\u6b74\u60a3\u8005\u8a3a\u65ad" * (150 + 13 * i))  # CJK run, no break inside
        blocks.append(f" Jane takes {MARK} for diabetes \U0001F600\U0001F48A ")
        blocks.append("\U0001F9EA" * (40 + i))                       # emoji run
        blocks.append("\n" if i % 4 else "\f")
    return "".join(blocks)


@pytest.mark.parametrize("op", ["DetectEntitiesV2", "DetectPHI", "InferICD10CM", "InferRxNorm"])
def test_byte_limited_parts_keep_multibyte_offsets_exact(op):
    text = _multibyte_text()
    limit = comprehend.OPERATIONS[op][1]
    assert len(text.encode()) > 3 * limit
    parts = comprehend.split_text(text, limit, limit)
    assert "".join(p for _, p in parts) == text
    assert any(len(p.encode()) > len(p) * 2 for _, p in parts)  # the byte limit is what binds
    for offset, part in parts:
        assert text[offset:offset + len(part)] == part
        assert len(part) <= limit and len(part.encode("utf-8")) <= limit
    client = _client()
    cm = comprehend.ComprehendMedical(client)
    with Stubber(client) as stub:
        for _, part in parts:  # Stubber validates every request against the model's length limit
            stub.add_response(comprehend.OPERATIONS[op][0], _response(op, part, random.Random(len(part)).randint(0, 9)),
                              {"Text": part})
        result = cm.run(text, op)
        stub.assert_no_pending_responses()
    word = re.compile(PATTERN[op])
    assert [e["BeginOffset"] for e in result["Entities"]] == [m.start() for m in word.finditer(text)]
    for e in result["Entities"]:
        assert text[e["BeginOffset"]:e["EndOffset"]] == e["Text"]
    assert len({e["Id"] for e in result["Entities"]}) == len(result["Entities"])
    report = ParamValidator().validate(result, _shape(op))
    assert not report.has_errors(), report.generate_report()
    units = sum(comprehend.billed_units(p) for _, p in parts)
    assert cm.usage == {op: {"requests": len(parts), "characters": len(text), "units": units}}


def test_a_cut_inside_a_multibyte_run_never_splits_a_character():
    text = "\u60a3" * 7001 + " " + "\U0001F600" * 5001  # no whitespace near the byte limit
    parts = comprehend.split_text(text, 20_000, 20_000)
    assert "".join(p for _, p in parts) == text
    for _, part in parts:
        encoded = part.encode("utf-8")
        assert len(encoded) <= 20_000 and encoded.decode("utf-8") == part


def test_throttling_is_retried_with_jittered_backoff_on_every_operation():
    client = _client()
    sleeps: list[float] = []
    now = [0.0]

    def sleep(seconds: float) -> None:  # a clock that the back-off moves on
        sleeps.append(seconds)
        now[0] += seconds

    text = "Jane takes metformin for diabetes."
    cm = comprehend.ComprehendMedical(client, sleep=sleep, base_delay=1.0, rng=random.Random(3),
                                      clock=lambda: now[0])
    with Stubber(client) as stub:
        for op in ("DetectEntitiesV2", "InferICD10CM", "InferRxNorm", "DetectPHI"):
            method = comprehend.OPERATIONS[op][0]
            stub.add_client_error(method, "ThrottlingException", "Rate exceeded", 400)
            stub.add_client_error(method, "TooManyRequestsException", "Rate exceeded", 400)
            stub.add_response(method, _response(op, text), {"Text": text})
            assert len(cm.run(text, op)["Entities"]) == 1
        stub.assert_no_pending_responses()
    assert cm.retries == 8 and len(sleeps) == 8
    for k, delay in enumerate(sleeps):
        cap = 1.0 * 2 ** (k % 2)
        assert cap / 2 <= delay <= cap
    assert len(set(sleeps)) == 8  # jittered, not lock-step
    assert cm.gate_waits == 0  # one request at a time: the back-off already covered the gate
    # throttled attempts are not billed: one request of one unit per operation
    assert all(u == {"requests": 1, "characters": len(text), "units": 1} for u in cm.usage.values())


def test_a_too_large_request_is_halved_and_billed_per_request():
    client = _client()
    text = ("Jane has diabetes. " * 50 + "\n") * 8  # 7,608 characters: one InferICD10CM request
    cm = comprehend.ComprehendMedical(client)
    with Stubber(client) as stub:
        stub.add_client_error("infer_icd10_cm", "TextSizeLimitExceededException", "Input text too large", 400)
        halves = comprehend.split_text(text, len(text) // 2, len(text.encode()) // 2)
        assert len(halves) == 2
        for _, half in halves:
            stub.add_response("infer_icd10_cm", _response("InferICD10CM", half), {"Text": half})
        result = cm.run(text, "InferICD10CM")
        stub.assert_no_pending_responses()
    assert len(result["Entities"]) == 400
    for e in result["Entities"]:
        assert text[e["BeginOffset"]:e["EndOffset"]] == "diabetes"
    assert cm.usage["InferICD10CM"]["requests"] == 2
    assert cm.usage["InferICD10CM"]["units"] == sum(comprehend.billed_units(h) for _, h in halves)


@pytest.mark.parametrize("chars,units", [(1, 1), (99, 1), (100, 1), (101, 2), (250, 3), (20_000, 200)])
def test_billed_units(chars, units):
    assert comprehend.billed_units("x" * chars) == units


class _SlowClient:
    """A stand-in client that counts requests in flight (the Stubber is not meant for threads)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.in_flight = 0
        self.peak = 0
        self.calls = 0

    def detect_entities_v2(self, Text: str) -> dict:  # noqa: N803 (boto3's parameter name)
        with self.lock:
            self.in_flight += 1
            self.calls += 1
            self.peak = max(self.peak, self.in_flight)
        time.sleep(0.05)
        with self.lock:
            self.in_flight -= 1
        return _response("DetectEntitiesV2", Text)


class _ThrottleOnceClient(_SlowClient):
    """Throttles its second request once; records when each request started."""

    def __init__(self) -> None:
        super().__init__()
        self.starts: list[float] = []
        self.throttled_at: float | None = None

    def detect_entities_v2(self, Text: str) -> dict:  # noqa: N803
        from botocore.exceptions import ClientError

        with self.lock:
            self.starts.append(time.monotonic())
            throttle = len(self.starts) == 2
            if throttle:
                self.throttled_at = time.monotonic()
        if throttle:
            raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"},
                               "ResponseMetadata": {"HTTPStatusCode": 400}}, "DetectEntitiesV2")
        return super().detect_entities_v2(Text)


def test_a_throttled_request_holds_back_the_pool():
    text = (f"Take {MARK} daily. " * 60 + "\n\n") * 12
    client = _ThrottleOnceClient()
    cm = comprehend.ComprehendMedical(client, max_chars=1200, max_bytes=1200, concurrency=3, base_delay=0.4,
                                      rng=random.Random(1))
    result = cm.run(text, "DetectEntitiesV2")
    parts = len(comprehend.split_text(text, 1200, 1200))
    assert client.calls == parts and len(client.starts) == parts + 1 and cm.retries == 1
    assert cm.gate_waits >= 1
    gate = cm._gate
    assert gate - client.throttled_at >= 0.2 * 0.9  # equal jitter: at least half the 0.4 s cap
    early = [t for t in client.starts if client.throttled_at + 0.01 < t < gate - 0.02]  # (the gate is set ~µs later)
    assert early == []  # nobody started a request while the back-off ran
    assert [e["BeginOffset"] for e in result["Entities"]] == [m.start() for m in re.finditer(MARK, text)]


def test_requests_in_flight_never_exceed_the_concurrency_bound():
    text = (f"Take {MARK} daily. " * 60 + "\n\n") * 12
    client = _SlowClient()
    cm = comprehend.ComprehendMedical(client, max_chars=1200, max_bytes=1200, concurrency=3)
    result = cm.run(text, "DetectEntitiesV2")
    assert client.calls == len(comprehend.split_text(text, 1200, 1200)) >= 10
    assert client.peak == 3
    assert [e["BeginOffset"] for e in result["Entities"]] == [m.start() for m in re.finditer(MARK, text)]


def test_configured_operations_reach_their_files_and_the_manifest(monkeypatch):
    client = _client()
    monkeypatch.setattr(comprehend, "make_client", lambda region: client)
    settings = Settings.load(entities_backend="comprehendmedical", aws_region="us-east-1",
                             comprehend_operations="DetectEntitiesV2,InferICD10CM,InferRxNorm,DetectPHI",
                             comprehend_concurrency=1)
    text = "Jane takes metformin for diabetes. " * 10
    with Stubber(client) as stub:
        for op in ("DetectEntitiesV2", "InferICD10CM", "InferRxNorm", "DetectPHI"):
            stub.add_response(comprehend.OPERATIONS[op][0], _response(op, text), {"Text": text})
        analysis = analyse(text, settings)
        stub.assert_no_pending_responses()
    assert set(analysis.others) == {"InferICD10CM", "InferRxNorm", "DetectPHI"} == set(FILES)
    assert analysis.others["InferICD10CM"]["Entities"][0]["ICD10CMConcepts"][0]["Code"] == "E11.9"
    bill = analysis.billing
    assert set(bill["operations"]) == {"DetectEntitiesV2", "InferICD10CM", "InferRxNorm", "DetectPHI"}
    for op, u in bill["operations"].items():
        assert u["units"] == 4 and u["requests"] == 1  # 350 characters
        assert u["estimated_cost_usd"] == pytest.approx(4 * comprehend.PRICE_PER_UNIT_USD[op])
    assert bill["estimated_cost_usd"] == pytest.approx(sum(4 * p for p in comprehend.PRICE_PER_UNIT_USD.values()))

    # the job's result dict is what the tracker writes into manifest.json
    from types import SimpleNamespace

    job = SimpleNamespace(kind="entities", status="SUCCEEDED", tries=1, started_at=None, stopped_at=None,
                          result={"usage": bill, "tool_versions": {"entities": "2.1.0"}})
    doc = SimpleNamespace(id="d", attempt=1, bucket="b", object_key="k", version_id=None, etag="e", size=1,
                          sha256="s", file_format=None, page_count=1, language=None)
    manifest = build_manifest(doc, "COMPLETED", None, [job], {})
    usage = json.loads(json.dumps(manifest))["usage"]["entities"]
    assert usage["estimated_cost_usd"] == bill["estimated_cost_usd"] and usage["service"] == "comprehendmedical"
    assert usage["operations"]["DetectEntitiesV2"]["estimated_cost_usd"] == pytest.approx(0.04)
    assert "usage" not in build_manifest(doc, "COMPLETED", None, [SimpleNamespace(**{**job.__dict__, "result": {}})],
                                         {})


@pytest.mark.parametrize("value", ["InferICD10CM", "DetectEntitiesV2,InferSNOMEDCT", ""])
def test_operations_setting_is_checked(value):
    with pytest.raises(ConfigError):
        Settings.load(comprehend_operations=value)


def test_settings_operations_order_and_empty_text():
    settings = Settings.load(comprehend_operations="InferRxNorm, DetectEntitiesV2 ,InferRxNorm")
    assert comprehend.operations(settings) == ["DetectEntitiesV2", "InferRxNorm"]
    responses, bill = comprehend.analyse("  \f ", settings, client=object())
    assert responses["DetectEntitiesV2"] == {"Entities": [], "ModelVersion": "", "UnmappedAttributes": []}
    assert responses["InferRxNorm"] == {"Entities": [], "ModelVersion": ""}
    assert bill["estimated_cost_usd"] == 0


def test_low_confidence_marks_service_responses_whose_shape_allows_it(monkeypatch):
    from jobs.entities.ocr_confidence import LowConfidence

    client = _client()
    monkeypatch.setattr(comprehend, "make_client", lambda region: client)
    settings = Settings.load(entities_backend="comprehendmedical", aws_region="us-east-1",
                             comprehend_operations="DetectEntitiesV2,InferICD10CM,InferRxNorm,DetectPHI")
    text = "Jane takes metformin for diabetes."
    doubtful = LowConfidence([(text.index("metformin") + 2, text.index("metformin") + 5, 31.0),
                              (text.index("diabetes"), text.index("diabetes") + 8, 12.0)])
    with Stubber(client) as stub:
        for op in ("DetectEntitiesV2", "InferICD10CM", "InferRxNorm", "DetectPHI"):
            stub.add_response(comprehend.OPERATIONS[op][0], _response(op, text), {"Text": text})
        analysis = analyse(text, settings, doubtful)

    def low(response):
        return {e["Text"]: t["Score"] for e in response["Entities"] for t in e["Traits"]
                if t["Name"] == "LOW_CONFIDENCE"}

    assert low(analysis.entities) == {"metformin": 0.69} and analysis.low_confidence == 1
    assert low(analysis.others["InferICD10CM"]) == {"diabetes": 0.88}
    assert low(analysis.others["InferRxNorm"]) == {}  # InferRxNorm has no such trait
    assert low(analysis.others["DetectPHI"]) == {}  # "Jane" was read well
    for op in ("InferICD10CM", "InferRxNorm", "DetectPHI"):
        assert not ParamValidator().validate(analysis.others[op], _shape(op)).has_errors()


def test_entities_command_with_the_service_backend(monkeypatch, tmp_path):
    from click.testing import CliRunner

    import cli

    client = _client()
    monkeypatch.setattr(comprehend, "make_client", lambda region: client)
    monkeypatch.setenv("MEDINTAKE_AWS_REGION", "us-east-1")
    text = "Jane takes metformin for diabetes."
    with Stubber(client) as stub:
        stub.add_response("detect_entities_v2", _response("DetectEntitiesV2", text), {"Text": text})
        result = CliRunner().invoke(cli.main, ["entities", "--backend", "comprehendmedical", "--data-dir",
                                               str(tmp_path)], input=json.dumps({"id": "x", "text": text}) + "\n",
                                    catch_exceptions=False)
        stub.assert_no_pending_responses()
    assert result.exit_code == 0, result.output
    row = json.loads(result.output)
    assert row["id"] == "x" and [e["Text"] for e in row["entities"]] == [MARK]

    with Stubber(client) as stub:  # a refusal ends the command with the error's exit code, no text shown
        stub.add_client_error("detect_entities_v2", "AccessDeniedException", f"denied: {text}", 400)
        result = CliRunner().invoke(cli.main, ["entities", "--backend", "comprehendmedical"],
                                    input=json.dumps({"id": "x", "text": text}) + "\n")
    assert result.exit_code == int(ConfigError("x").exit_code)
    assert "Jane" not in result.output
