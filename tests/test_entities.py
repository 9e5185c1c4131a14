"""Tests of the entities stage: the local extractor and the Comprehend Medical backend.

moto 5.2 does not implement comprehendmedical (DetectEntitiesV2 answers 404 "Not yet implemented"),
so the service backend is tested with botocore's Stubber on a real boto3 client: botocore validates
every request against the service model (Text at most 20,000 characters) and every canned response
against the DetectEntitiesV2 output shape.
"""
from __future__ import annotations

import random
import re

import boto3
import pytest
from botocore.stub import Stubber
from botocore.validate import ParamValidator

from jobs.entities import comprehend
from jobs.entities.detect import (
    ATTRIBUTE_KEYS,
    ENTITY_KEYS,
    RESPONSE_KEYS,
    detect_entities,
)
from pipeline.errors import ConfigError, TransientError
from pipeline.settings import Settings

LOCAL = Settings(entities_backend="local")


def _client():
    return boto3.client("comprehendmedical", region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing")


def _output_shape():
    return _client().meta.service_model.operation_model("DetectEntitiesV2").output_shape


def check_offsets(text: str, result: dict) -> None:
    """text[Begin:End] == Text for every entity and attribute; Ids unique."""
    ids = []
    for e in result["Entities"]:
        assert text[e["BeginOffset"]:e["EndOffset"]] == e["Text"]
        ids.append(e["Id"])
        for a in e["Attributes"]:
            assert text[a["BeginOffset"]:a["EndOffset"]] == a["Text"]
            ids.append(a["Id"])
    assert len(ids) == len(set(ids))


def find(result: dict, surface: str) -> dict:
    hits = [e for e in result["Entities"] if e["Text"] == surface]
    assert hits, f"{surface!r} not found in {[e['Text'] for e in result['Entities']]}"
    return hits[0]


def attrs(entity: dict) -> dict[str, str]:
    return {a["Type"]: a["Text"] for a in entity["Attributes"]}


def traits(entity: dict) -> set[str]:
    return {t["Name"] for t in entity["Traits"]}


# --- local extractor: medications ----------------------------------------------------------------
def test_medication_with_dose_route_frequency():
    text = "Plan: start metformin 500 mg by mouth twice daily for 30 days."
    result = detect_entities(text, LOCAL)
    check_offsets(text, result)
    med = find(result, "metformin")
    assert (med["Category"], med["Type"]) == ("MEDICATION", "GENERIC_NAME")
    assert attrs(med) == {"STRENGTH": "500 mg", "ROUTE_OR_MODE": "by mouth", "FREQUENCY": "twice daily",
                          "DURATION": "for 30 days"}
    assert med["BeginOffset"] == text.index("metformin")
    for a in med["Attributes"]:
        assert a["Category"] == "MEDICATION" and a["RelationshipType"] == a["Type"]


def test_brand_name_strength_form_count():
    text = "MEDS: - Prograf 1 mg Cap 3 capsules by mouth twice a day - Valtrex (Valacyclovir) 1000 mg daily"
    result = detect_entities(text, LOCAL)
    check_offsets(text, result)
    prograf = find(result, "Prograf")
    assert prograf["Type"] == "BRAND_NAME"
    assert attrs(prograf) == {"STRENGTH": "1 mg", "FORM": "Cap", "DOSAGE": "3 capsules", "ROUTE_OR_MODE": "by mouth",
                              "FREQUENCY": "twice a day"}
    # "Valtrex (Valacyclovir) 1000 mg": the parenthesised alias does not cut Valtrex's attributes off
    assert find(result, "Valtrex")["Type"] == "BRAND_NAME"
    assert attrs(find(result, "Valtrex")) == {"STRENGTH": "1000 mg", "FREQUENCY": "daily"}
    assert attrs(find(result, "Valacyclovir")) == {}
    # list items separated by " - " keep their own attributes
    assert all(a["EndOffset"] <= text.index("- Valtrex") for a in prograf["Attributes"])


def test_sig_line_attributes():
    text = ("1. Acetaminophen 160 mg/5 mL Elixir Sig: One (1)  PO Q4-6H\n(every 4 to 6 hours) as needed.\n"
            "2. Heparin Sodium (Porcine) 5,000 unit/mL Solution Sig: One (1)\nInjection TID (3 times a day).")
    result = detect_entities(text, LOCAL)
    check_offsets(text, result)
    apap = find(result, "Acetaminophen")
    types = [(a["Type"], a["Text"]) for a in apap["Attributes"]]
    assert ("STRENGTH", "160 mg/5 mL") in types and ("FORM", "Elixir") in types
    assert ("DOSAGE", "One (1)") in types and ("ROUTE_OR_MODE", "PO") in types
    assert ("FREQUENCY", "Q4-6H") in types and ("FREQUENCY", "as needed") in types
    heparin = find(result, "Heparin Sodium")  # the salt is part of the name, not a second drug
    assert ("STRENGTH", "5,000 unit/mL") in [(a["Type"], a["Text"]) for a in heparin["Attributes"]]
    assert ("DOSAGE", "One (1)\nInjection") in [(a["Type"], a["Text"]) for a in heparin["Attributes"]]
    # attributes never reach past the next list item
    assert all(a["EndOffset"] <= text.index("2. Heparin") for a in apap["Attributes"])
    assert [e["Text"] for e in result["Entities"] if e["Category"] == "MEDICATION"] == ["Acetaminophen",
                                                                                       "Heparin Sodium"]


def test_drug_stem_rule_finds_unlisted_drug():
    result = detect_entities("Started on zanubrutinib and fosinopril.", LOCAL)
    assert {e["Text"] for e in result["Entities"] if e["Category"] == "MEDICATION"} == {"zanubrutinib", "fosinopril"}


def test_typo_in_drug_name_only_with_dose_evidence():
    text = "Continue porgraf 3mg bid. The transplant program called."
    result = detect_entities(text, LOCAL)
    typo = find(result, "porgraf")
    assert typo["Category"] == "MEDICATION" and "LOW_CONFIDENCE" in traits(typo)
    assert attrs(typo) == {"STRENGTH": "3mg", "FREQUENCY": "bid"}
    assert "program" not in {e["Text"] for e in result["Entities"]}


def test_condition_modifiers_and_suffix_rule():
    text = "History of pulmonary edema and acute renal failure; now rhabdomyolysis."
    result = detect_entities(text, LOCAL)
    check_offsets(text, result)
    assert find(result, "pulmonary edema")["Category"] == "MEDICAL_CONDITION"
    assert attrs(find(result, "renal failure")) == {"ACUITY": "acute"}
    assert find(result, "rhabdomyolysis")["Score"] < find(result, "renal failure")["Score"]


# --- local extractor: conditions and context ---------------------------------------------------
@pytest.mark.parametrize("text,surface,negated", [
    ("No history of hypertension.", "hypertension", True),
    ("Patient denies chest pain.", "chest pain", True),
    ("Patient has hypertension.", "hypertension", False),
    ("Reports chest pain since Monday.", "chest pain", False),
    ("Denies chest pain but reports shortness of breath.", "chest pain", True),
    ("Denies chest pain but reports shortness of breath.", "shortness of breath", False),
    ("No fever, chills, nausea or vomiting.", "vomiting", True),
    ("Pneumonia was ruled out.", "Pneumonia", True),
    ("Negative for diabetes mellitus.", "diabetes mellitus", True),
    ("No change in her hypertension.", "hypertension", False),
    ("No known allergies. Hypertension, well controlled.", "Hypertension", False),
    ("Hospitalizations since last visit: no Meds: Prograf 2 mg po qd", "Prograf", False),
    ("Denies: chest pain.", "chest pain", True),
])
def test_negation(text, surface, negated):
    result = detect_entities(text, LOCAL)
    check_offsets(text, result)
    entity = find(result, surface)
    assert entity["Type"] in ("DX_NAME", "BRAND_NAME")
    assert ("NEGATION" in traits(entity)) is negated


def test_condition_traits():
    text = ("Past Medical History:\n1. Type II Diabetes Mellitus\nFamily History:\nMother with breast cancer.\n"
            "HPI: c/o nausea and fever. Acute pancreatitis.")
    result = detect_entities(text, LOCAL)
    check_offsets(text, result)
    assert {"DIAGNOSIS", "PAST_HISTORY"} <= traits(find(result, "Type II Diabetes Mellitus"))
    assert "PERTAINS_TO_FAMILY" in traits(find(result, "breast cancer"))
    assert "SYMPTOM" in traits(find(result, "nausea"))
    assert "SIGN" in traits(find(result, "fever"))
    assert attrs(find(result, "pancreatitis")) == {"ACUITY": "Acute"}


def test_abbreviation_defined_in_text_is_propagated():
    text = "Patients with Duchenne muscular dystrophy (DMD) were seen. DMD progressed."
    result = detect_entities(text, LOCAL)
    check_offsets(text, result)
    dmd = [e for e in result["Entities"] if e["Text"] == "DMD"]
    assert len(dmd) == 2 and all(e["Category"] == "MEDICAL_CONDITION" for e in dmd)


def test_tests_procedures_anatomy():
    text = "CBC and BMP ordered; ERCP done. Pain in the abdomen."
    result = detect_entities(text, LOCAL)
    assert find(result, "CBC")["Type"] == "TEST_NAME"
    assert find(result, "ERCP")["Type"] == "PROCEDURE_NAME"
    assert find(result, "abdomen")["Category"] == "ANATOMY"


def test_abbreviations_are_case_sensitive():
    result = detect_entities("Pt has HTN. Then he said: pt was fine, ok.", LOCAL)
    assert [e["Text"] for e in result["Entities"]] == ["HTN"]


def test_offsets_across_page_breaks():
    pages = ["Discharge summary, page one.\nNo chest pain.", "Medications:\nLisinopril 10 mg PO daily",
             "", "Assessment: hypertension; chest\fpain"]
    text = "\f".join(pages)
    result = detect_entities(text, LOCAL)
    check_offsets(text, result)
    by_text = {e["Text"]: e for e in result["Entities"]}
    lis = by_text["Lisinopril"]
    assert text.count("\f", 0, lis["BeginOffset"]) == 1  # on page 2
    assert lis["BeginOffset"] == len(pages[0]) + 1 + pages[1].index("Lisinopril")
    assert attrs(lis) == {"STRENGTH": "10 mg", "ROUTE_OR_MODE": "PO", "FREQUENCY": "daily"}
    assert text.count("\f", 0, by_text["hypertension"]["BeginOffset"]) == 3
    assert "chest\fpain" not in by_text  # a term never spans two pages
    assert "NEGATION" in traits(by_text["chest pain"])


def test_non_ascii_text_offsets():
    text = "Patient\u2019s na\u00efve caf\u00e9 note \u2014 taking ibuprofen 200\u00a0mg PO q6h \U0001F600 for headache."
    result = detect_entities(text, LOCAL)
    check_offsets(text, result)
    assert attrs(find(result, "ibuprofen")) == {"STRENGTH": "200\u00a0mg", "ROUTE_OR_MODE": "PO", "FREQUENCY": "q6h"}


@pytest.mark.parametrize("text", ["", "   \n\f\f  "])
def test_empty_text(text):
    result = detect_entities(text, LOCAL)
    assert result["Entities"] == [] and result["UnmappedAttributes"] == [] and result["ModelVersion"]


def test_local_output_has_detect_entities_v2_shape():
    text = ("Meds: aspirin 81 mg PO daily, Lasix 40 mg IV BID. Denies chest pain. Mother with stroke.\f"
            "CT abdomen showed pancreatitis. If fever, call.")
    result = detect_entities(text, LOCAL)
    shape = _output_shape()
    report = ParamValidator().validate(result, shape)
    assert not report.has_errors(), report.generate_report()
    assert set(RESPONSE_KEYS) == set(shape.members) - {"PaginationToken"}
    entity_shape = shape.members["Entities"].member
    attribute_shape = entity_shape.members["Attributes"].member
    assert set(ENTITY_KEYS) == set(entity_shape.members)
    assert set(ATTRIBUTE_KEYS) == set(attribute_shape.members)
    entity_types = set(entity_shape.members["Type"].enum)
    trait_names = set(entity_shape.members["Traits"].member.members["Name"].enum)
    relationships = set(attribute_shape.members["RelationshipType"].enum)
    assert result["Entities"]
    for e in result["Entities"]:
        assert set(e) == set(ENTITY_KEYS)
        assert e["Category"] in entity_shape.members["Category"].enum and e["Type"] in entity_types
        assert {t["Name"] for t in e["Traits"]} <= trait_names
        for a in e["Attributes"]:
            assert set(a) == set(ATTRIBUTE_KEYS)
            assert a["Type"] in entity_types and a["RelationshipType"] in relationships
    check_offsets(text, result)


# --- Comprehend Medical: splitting ---------------------------------------------------------------
def test_split_text_limits_and_whitespace_boundaries():
    words = [f"word{i}" for i in range(12000)]
    text = " ".join(words)  # ~ 100k characters, no line breaks
    parts = comprehend.split_text(text)
    assert len(parts) >= 5
    assert "".join(p for _, p in parts) == text
    for offset, part in parts:
        assert text[offset:offset + len(part)] == part
        assert len(part) <= comprehend.MAX_CHARS and len(part.encode()) <= comprehend.MAX_BYTES
    for offset, part in parts[:-1]:
        assert part[-1] == " "  # cut after whitespace, never inside a word


def test_split_text_counts_utf8_bytes_and_prefers_paragraphs():
    para = "Caf\u00e9 na\u00efve \u00e9t\u00e9 " * 400  # 2-byte characters
    text = "\n\n".join([para] * 10)
    parts = comprehend.split_text(text)
    assert "".join(p for _, p in parts) == text
    for _, part in parts:
        assert len(part.encode()) <= comprehend.MAX_BYTES
    for _, part in parts[:-1]:
        assert part.endswith("\n\n")
    assert comprehend.split_text("  \n\f ") == []


def _fake_response(part: str, rng: random.Random) -> dict:
    """What the service would say: each "metformin" with its "500 mg" attribute, ids out of order."""
    entities = []
    base = rng.randint(0, 50)
    for k, m in enumerate(re.finditer(r"metformin (500 mg)", part)):
        entities.append({
            "Id": base + 2 * k, "BeginOffset": m.start(), "EndOffset": m.start() + 9, "Score": 0.99,
            "Text": "metformin", "Category": "MEDICATION", "Type": "GENERIC_NAME", "Traits": [],
            "Attributes": [{
                "Type": "DOSAGE", "Score": 0.9, "RelationshipScore": 0.9, "RelationshipType": "DOSAGE",
                "Id": base + 2 * k + 1, "BeginOffset": m.start(1), "EndOffset": m.end(1), "Text": "500 mg",
                "Category": "MEDICATION", "Traits": []}],
        })
    unmapped = [{"Type": "MEDICATION", "Attribute": {
        "Type": "ROUTE_OR_MODE", "Score": 0.8, "Id": base + 1000 + k, "BeginOffset": m.start(), "EndOffset": m.end(),
        "Text": "PO", "Category": "MEDICATION", "Traits": []}} for k, m in enumerate(re.finditer(r"\bPO\b", part))]
    return {"Entities": entities, "UnmappedAttributes": unmapped, "ModelVersion": "2.6.0"}


def _long_text() -> str:
    filler = "The patient was seen in clinic today and is doing well overall. "
    blocks = []
    for i in range(9):
        blocks.append(filler * (60 + 7 * i) + "Continue metformin 500 mg daily. Take PO.\n")
        if i % 3 == 2:
            blocks.append("\f")
    return "".join(blocks)


def test_comprehend_splits_maps_offsets_and_renumbers():
    text = _long_text()
    assert len(text) > 2 * comprehend.MAX_CHARS
    client = _client()
    rng = random.Random(1)
    parts = comprehend.split_text(text)
    with Stubber(client) as stub:
        for _, part in parts:  # Stubber checks the request against the model (max 20,000 chars)
            stub.add_response("detect_entities_v2", _fake_response(part, rng), {"Text": part})
        result = comprehend.ComprehendMedical(client).detect(text)
        stub.assert_no_pending_responses()
    assert len(result["Entities"]) == text.count("metformin 500 mg") == 9
    assert len(result["UnmappedAttributes"]) == 9
    check_offsets(text, result)
    for ua in result["UnmappedAttributes"]:
        a = ua["Attribute"]
        assert text[a["BeginOffset"]:a["EndOffset"]] == "PO"
    ids = [e["Id"] for e in result["Entities"]] + [a["Id"] for e in result["Entities"] for a in e["Attributes"]]
    ids += [ua["Attribute"]["Id"] for ua in result["UnmappedAttributes"]]
    assert len(ids) == len(set(ids))
    assert result["ModelVersion"] == "2.6.0"
    assert not ParamValidator().validate(result, _output_shape()).has_errors()


def test_comprehend_retries_throttling_with_backoff():
    client = _client()
    sleeps: list[float] = []
    with Stubber(client) as stub:
        stub.add_client_error("detect_entities_v2", "TooManyRequestsException", "Rate exceeded", 400)
        stub.add_client_error("detect_entities_v2", "ThrottlingException", "Rate exceeded", 400)
        stub.add_client_error("detect_entities_v2", "ServiceUnavailableException", "", 503)
        stub.add_response("detect_entities_v2", _fake_response("metformin 500 mg", random.Random(0)),
                          {"Text": "metformin 500 mg"})
        cm = comprehend.ComprehendMedical(client, sleep=sleeps.append, base_delay=1.0, rng=random.Random(0))
        result = cm.detect("metformin 500 mg")
    assert len(result["Entities"]) == 1 and cm.retries == 3
    assert len(sleeps) == 3
    for attempt, delay in enumerate(sleeps):
        cap = min(cm.max_delay, 1.0 * 2 ** attempt)
        assert cap / 2 <= delay <= cap  # exponential, jittered, bounded


def test_comprehend_gives_up_after_bounded_attempts_without_phi():
    client = _client()
    secret = "Jane Roe has syphilis"
    with Stubber(client) as stub:
        for _ in range(3):
            stub.add_client_error("detect_entities_v2", "ThrottlingException", f"text: {secret}", 400)
        with pytest.raises(TransientError) as info:
            comprehend.ComprehendMedical(client, max_attempts=3, sleep=lambda s: None).detect(secret)
    assert secret not in str(info.value) and "ThrottlingException" in str(info.value)


@pytest.mark.parametrize("code,status,error", [
    ("AccessDeniedException", 400, ConfigError),
    ("UnrecognizedClientException", 400, ConfigError),
    ("InvalidRequestException", 400, TransientError),
    ("InternalServerException", 500, TransientError),
])
def test_comprehend_error_translation(code, status, error):
    client = _client()
    secret = "Jane Roe, DOB 1970-01-01, metformin"
    with Stubber(client) as stub:
        for _ in range(2):
            stub.add_client_error("detect_entities_v2", code, f"Value '{secret}' at 'text' failed", status)
        with pytest.raises(error) as info:
            comprehend.ComprehendMedical(client, max_attempts=2, sleep=lambda s: None).detect(secret)
    assert secret not in str(info.value) and "Jane" not in info.value.message
    exc = info.value  # the ClientError (whose message may echo text) is neither cause nor shown context
    assert exc.__cause__ is None and (exc.__context__ is None or exc.__suppress_context__)


def test_comprehend_halves_a_part_refused_as_too_large():
    client = _client()
    text = "Take metformin 500 mg daily. " * 100  # 2,900 characters
    with Stubber(client) as stub:
        stub.add_client_error("detect_entities_v2", "TextSizeLimitExceededException", "too big", 400)
        stub.add_response("detect_entities_v2", _fake_response(text[:1450], random.Random(0)))
        stub.add_response("detect_entities_v2", _fake_response(text[1450:], random.Random(0)))
        result = comprehend.ComprehendMedical(client).detect(text)
        stub.assert_no_pending_responses()
    assert len(result["Entities"]) == 100
    check_offsets(text, result)


def test_detect_entities_dispatches_to_comprehend(monkeypatch):
    client = _client()
    monkeypatch.setattr(comprehend, "make_client", lambda region: client)
    text = "metformin 500 mg daily"
    with Stubber(client) as stub:
        stub.add_response("detect_entities_v2", _fake_response(text, random.Random(0)), {"Text": text})
        result = detect_entities(text, Settings(entities_backend="comprehendmedical", aws_region="us-east-1"))
    assert find(result, "metformin")["Attributes"][0]["Text"] == "500 mg"
    assert detect_entities(" \f ", Settings(entities_backend="comprehendmedical"))["Entities"] == []


def test_make_client_rejects_region_without_the_service():
    with pytest.raises(ConfigError):
        comprehend.make_client("eu-south-9")


# --- issue 8: the acceptance phrases and the ConText-style rules -------------------------------
def test_issue_phrases_negation_family_and_medication_attributes():
    denies = detect_entities("Patient denies chest pain", LOCAL)
    assert "NEGATION" in traits(find(denies, "chest pain"))
    family = detect_entities("mother had breast cancer", LOCAL)
    assert "PERTAINS_TO_FAMILY" in traits(find(family, "breast cancer"))
    assert "NEGATION" not in traits(find(family, "breast cancer"))
    text = "metformin 500 mg PO BID"
    med = find(detect_entities(text, LOCAL), "metformin")
    assert attrs(med) == {"STRENGTH": "500 mg", "ROUTE_OR_MODE": "PO", "FREQUENCY": "BID"}


def test_amount_apart_from_the_name_is_dosage_and_duration_form_forms():
    text = "Amoxicillin: take 500 mg three times a day x7d. Prednisone 10 mg tablet PO daily, 5-day course."
    result = detect_entities(text, LOCAL)
    check_offsets(text, result)
    assert attrs(find(result, "Amoxicillin")) == {"DOSAGE": "500 mg", "FREQUENCY": "three times a day",
                                                  "DURATION": "x7d"}
    assert attrs(find(result, "Prednisone")) == {"STRENGTH": "10 mg", "FORM": "tablet", "ROUTE_OR_MODE": "PO",
                                                 "FREQUENCY": "daily", "DURATION": "5-day course"}


@pytest.mark.parametrize("text,surface,expected,absent", [
    # a negated list runs past NegEx's six-word window, item by item
    ("Denies fever, chills, night sweats, nausea, diarrhea, abdominal pain or dysuria.", "dysuria",
     {"NEGATION"}, set()),
    # a long sentence without a list still ends the scope
    ("No fever today and the patient was walking in the garden with her grandson when she had a seizure.",
     "seizure", set(), {"NEGATION"}),
    # the family cue stops where the sentence returns to the patient
    ("Mother was diagnosed with breast cancer at 45 and the patient has asthma.", "asthma", set(),
     {"PERTAINS_TO_FAMILY"}),
    ("Mother was diagnosed with breast cancer at 45 and the patient has asthma.", "breast cancer",
     {"PERTAINS_TO_FAMILY"}, set()),
    ("No family history of colon cancer.", "colon cancer", {"NEGATION", "PERTAINS_TO_FAMILY"}, set()),
    ("Past history of stroke.", "stroke", {"PAST_HISTORY"}, {"NEGATION"}),
    ("If chest pain recurs, return to the emergency department.", "chest pain", {"HYPOTHETICAL"}, {"NEGATION"}),
    ("Possible pneumonia on the film.", "pneumonia", {"LOW_CONFIDENCE"}, {"NEGATION"}),
])
def test_context_traits(text, surface, expected, absent):
    result = detect_entities(text, LOCAL)
    check_offsets(text, result)
    got = traits(find(result, surface))
    assert expected <= got and not (absent & got), got


def test_tests_and_procedures_carry_when_they_happen():
    text = ("Plan: review renal function and repeat HbA1c in three months. Colonoscopy scheduled for next week. "
            "History of appendectomy. No CT scan done.")
    result = detect_entities(text, LOCAL)
    check_offsets(text, result)
    assert "FUTURE" in traits(find(result, "HbA1c"))
    assert "FUTURE" in traits(find(result, "Colonoscopy"))
    assert traits(find(result, "appendectomy")) == {"PAST_HISTORY"}
    assert traits(find(result, "CT scan")) == {"NEGATION"}


def test_taken_spans_answer_as_a_full_scan_does():
    """enrich._Spans.free looks only near the asked range; it must answer as checking every
    taken range would, overlapping and nested ranges included."""
    import random

    from jobs.entities.enrich import _Spans

    rng = random.Random(7)
    for _ in range(200):
        spans, taken = _Spans(), []
        for _ in range(rng.randint(0, 40)):
            b = rng.randint(0, 500)
            e = b + rng.choice([1, 2, 5, 30, 120])
            spans.add(b, e)
            taken.append((b, e))
        for _ in range(30):
            b = rng.randint(0, 520)
            e = b + rng.randint(1, 60)
            assert spans.free(b, e) == (not any(ob < e and oe > b for ob, oe in taken))


def test_icd10_rankings_are_reused_as_copies():
    """A condition named again is ranked once (icd10.Index memo); what a caller does with the
    concepts it got never changes what the next caller gets."""
    from jobs.entities import icd10

    index = icd10.default_index(Settings().effective_cache_dir)
    first = index.lookup("type 2 diabetes")
    assert first and first[0]["Code"].startswith("E11")
    first[0]["Code"] = "changed"
    again = index.lookup("Type 2 Diabetes")  # same words: served from the memo
    assert again[0]["Code"].startswith("E11") and again == index.lookup("type 2 diabetes")
