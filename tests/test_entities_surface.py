"""The rest of Comprehend Medical's surface in the local backend: PHI, test values, time expressions,
ICD-10-CM codes, LOW_CONFIDENCE from OCR words, and the ``medintake entities`` command.

Every person, address, number and address in these texts is made up.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import boto3
import pytest
from botocore.validate import ParamValidator
from click.testing import CliRunner
from conftest import FILES, REPO

import cli
from jobs.entities import icd10
from jobs.entities.detect import analyse, detect_entities
from jobs.entities.ocr_confidence import LowConfidence
from pipeline.settings import Settings

# the ICD-10-CM index cache goes to <data_dir>/cache: one folder for this module's tests
LOCAL = Settings(entities_backend="local", data_dir=Path(tempfile.gettempdir()) / "medintake-test-entities-surface")

LETTER = (
    "Riverside Family Clinic, 12 Harbor Street, Springfield, IL 62704\n"
    "Tel (555) 201-3344   Fax 555-201-3345   https://clinic.example/portal\n"
    "Patient: Jane Q. Sample   DOB: 03/14/1962   MRN: 00482913   Insurance ID: XQZ123456789\n"
    "\n"
    "Dear Dr. Alan Fictive,\n"
    "Mrs. Sample is a 61-year-old retired teacher seen on March 3, 2024. She reports chest pain for the past\n"
    "two weeks. HbA1c 7.2 %, creatinine 1.1 mg/dL. Started lisinopril 10 mg daily 3 days ago.\n"
    "Questions: a.fictive@clinic.example\n"
)


def _model(op: str):
    client = boto3.client("comprehendmedical", region_name="us-east-1")
    return client.meta.service_model.operation_model(op).output_shape


def check_offsets(text: str, response: dict) -> None:
    ids = []
    for e in response["Entities"]:
        assert text[e["BeginOffset"]:e["EndOffset"]] == e["Text"]
        ids.append(e["Id"])
        for a in e.get("Attributes", []):
            assert text[a["BeginOffset"]:a["EndOffset"]] == a["Text"]
            ids.append(a["Id"])
    assert len(ids) == len(set(ids))


def phi_of(response: dict) -> set[tuple[str, str]]:
    return {(e["Type"], e["Text"]) for e in response["Entities"] if e["Category"] == "PROTECTED_HEALTH_INFORMATION"}


# --- PHI ------------------------------------------------------------------------------------------
def test_phi_types_on_a_fabricated_letter():
    result = detect_entities(LETTER, LOCAL)
    check_offsets(LETTER, result)
    found = phi_of(result)
    expected = {
        ("ADDRESS", "12 Harbor Street, Springfield, IL 62704"),
        ("PHONE_OR_FAX", "(555) 201-3344"), ("PHONE_OR_FAX", "555-201-3345"),
        ("URL", "https://clinic.example/portal"),
        ("NAME", "Jane Q. Sample"), ("DATE", "03/14/1962"), ("ID", "00482913"), ("ID", "XQZ123456789"),
        ("NAME", "Alan Fictive"), ("NAME", "Sample"), ("AGE", "61"), ("PROFESSION", "teacher"),
        ("DATE", "March 3, 2024"), ("EMAIL", "a.fictive@clinic.example"),
    }
    assert expected <= found, expected - found
    assert not {t for t, _ in found} - {"NAME", "AGE", "DATE", "PHONE_OR_FAX", "EMAIL", "ID", "URL", "ADDRESS",
                                        "PROFESSION"}
    assert not ParamValidator().validate(result, _model("DetectEntitiesV2")).has_errors()


@pytest.mark.parametrize("text,expected", [
    ("SSN 123-45-6789 on file.", ("ID", "123-45-6789")),
    ("Seen by Dr. Parkinson today.", ("NAME", "Parkinson")),  # a name, not the disease
    ("Pt is 87 yo woman with cough.", ("AGE", "87")),
    ("Member ID: W123456789", ("ID", "W123456789")),
    ("Visit www.example.org/help for details.", ("URL", "www.example.org/help")),
    ("Follow-up on 2024-05-01.", ("DATE", "2024-05-01")),
    ("He works as a truck driver.", ("PROFESSION", "truck driver")),
    ("Patient: Roe, Jane  Name: J. Sample", ("NAME", "Roe, Jane")),
    ("Patient: Roe, Jane  Name: J. Sample", ("NAME", "J. Sample")),
])
def test_phi_patterns(text, expected):
    result = detect_entities(text, LOCAL)
    check_offsets(text, result)
    assert expected in phi_of(result)


@pytest.mark.parametrize("text", [
    "Patient: denies chest pain.",  # the cue followed by no name
    "Patient: Alert and oriented, no distress.",  # one capitalised word after the cue is no name
    "ID CONSULT requested for fever.",  # an identifier has a digit
    "Attending: Attending Physician",  # a role, not a name
    "Metformin 500 mg PO BID for 3 months.",
    "Temperature 38.5 C, HR 92, BP 130/85 mmHg.",
])
def test_no_phi_where_there_is_none(text):
    assert phi_of(detect_entities(text, LOCAL)) == set()


# --- tests with values and units, time expressions --------------------------------------------------
def test_test_values_and_units():
    text = "Labs: HbA1c 7.2 %, creatinine 1.1 mg/dL, K 4.1 mmol/L. BP 130/85 mmHg. CBC ordered."
    result = detect_entities(text, LOCAL)
    check_offsets(text, result)
    tests = {e["Text"]: {a["Type"]: a["Text"] for a in e["Attributes"]}
             for e in result["Entities"] if e["Category"] == "TEST_TREATMENT_PROCEDURE"}
    assert tests["HbA1c"] == {"TEST_VALUE": "7.2", "TEST_UNIT": "%"}
    assert tests["creatinine"] == {"TEST_VALUE": "1.1", "TEST_UNIT": "mg/dL"}  # an analyte, not a drug
    assert tests["K"] == {"TEST_VALUE": "4.1", "TEST_UNIT": "mmol/L"}
    assert tests["BP"] == {"TEST_VALUE": "130/85", "TEST_UNIT": "mmHg"}
    assert tests["CBC"] == {}
    assert not any(e["Category"] == "MEDICATION" for e in result["Entities"])
    for e in result["Entities"]:
        for a in e["Attributes"]:
            assert a["RelationshipType"] == a["Type"] and a["Category"] == "TEST_TREATMENT_PROCEDURE"


def test_time_expressions_are_linked_to_their_entity():
    text = "She reports chest pain for the past two weeks. Started lisinopril 10 mg daily 3 days ago."
    result = detect_entities(text, LOCAL)
    check_offsets(text, result)
    times = {e["Text"]: e["Type"] for e in result["Entities"] if e["Category"] == "TIME_EXPRESSION"}
    assert times == {"for the past two weeks": "TIME_TO_DX_NAME", "3 days ago": "TIME_TO_MEDICATION_NAME"}
    pain = next(e for e in result["Entities"] if e["Text"] == "chest pain")
    assert [(a["Type"], a["Text"], a["RelationshipType"]) for a in pain["Attributes"]] == [
        ("TIME_TO_DX_NAME", "for the past two weeks", "OVERLAP")]
    assert not ParamValidator().validate(result, _model("DetectEntitiesV2")).has_errors()


# --- ICD-10-CM --------------------------------------------------------------------------------------
@pytest.mark.parametrize("mention,code", [
    ("type 2 diabetes mellitus", "E11.9"),
    ("Type II Diabetes Mellitus", "E11.9"),
    ("essential hypertension", "I10"),
    ("HTN", "I10"),
    ("chest pain", "R07.9"),
    ("pneumonia", "J18.9"),
    ("breast cancer", "C50.919"),
    ("diabetes mellitus", "E11.9"),  # no type stated: the index codes it as type 2
    ("acute pancreatitis", "K85.90"),
])
def test_icd10cm_codes_for_conditions(mention, code):
    codes = [c["Code"] for c in icd10.default_index().lookup(mention)]
    assert code in codes, codes
    assert len(codes) <= icd10.MAX_CONCEPTS


def test_icd10cm_response_shape_from_the_local_backend():
    text = "History of type 2 diabetes mellitus and essential hypertension. Denies chest pain. Acute pancreatitis."
    analysis = analyse(text, LOCAL)
    response = analysis.others["InferICD10CM"]
    report = ParamValidator().validate(response, _model("InferICD10CM"))
    assert not report.has_errors(), report.generate_report()
    check_offsets(text, response)
    by_text = {e["Text"]: e for e in response["Entities"]}
    assert by_text["type 2 diabetes mellitus"]["ICD10CMConcepts"][0]["Code"] == "E11.9"
    assert by_text["essential hypertension"]["ICD10CMConcepts"][0]["Code"] == "I10"
    assert {t["Name"] for t in by_text["chest pain"]["Traits"]} >= {"NEGATION"}
    assert "PAST_HISTORY" not in {t["Name"] for e in response["Entities"] for t in e["Traits"]}  # not in its enum
    assert by_text["pancreatitis"]["ICD10CMConcepts"][0]["Code"].startswith("K85")  # ACUITY taken into account
    scores = [c["Score"] for c in by_text["essential hypertension"]["ICD10CMConcepts"]]
    assert scores == sorted(scores, reverse=True) and all(0 < s <= 1 for s in scores)
    assert "InferICD10CM" not in analyse(text, LOCAL.replace(local_icd10cm="off")).others


# --- LOW_CONFIDENCE from OCR words ------------------------------------------------------------------
def test_low_confidence_on_a_real_ocr_page(tmp_path):
    from jobs.extract.text import extract_text
    from jobs.identify import identify, validate

    settings = Settings()
    src = FILES / "scanned_discharge.pdf"
    kind = identify(src, settings)
    validate(src, kind, settings)
    extract_text(src, kind, tmp_path, settings)
    text = (tmp_path / "text.txt").read_text(encoding="utf-8")
    pages = json.loads((tmp_path / "pages.json").read_text(encoding="utf-8"))
    assert pages[0]["source"] == "ocr"

    plain = analyse(text, LOCAL).entities
    met = next(e for e in plain["Entities"] if e["Text"].lower() == "metformin")
    words = [w for p in pages for w in p["words"] if w["offset"] is not None
             and p["text_offset"] + w["offset"] < met["EndOffset"]
             and met["BeginOffset"] < p["text_offset"] + w["offset"] + len(w["text"])]
    assert words, "the drug name is an OCR word"
    threshold = min(w["confidence"] for w in words) + 0.01  # just above the drug name's confidence
    low = LowConfidence.from_pages(pages, threshold)
    analysis = analyse(text, LOCAL, low)
    marked = {e["Text"] for e in analysis.entities["Entities"]
              if any(t["Name"] == "LOW_CONFIDENCE" for t in e["Traits"])}
    assert met["Text"] in marked and analysis.low_confidence == len(marked)
    for e in analysis.entities["Entities"]:  # marked exactly when a word under it is below the threshold
        assert (e["Text"] in marked) == (low.lowest(e["BeginOffset"], e["EndOffset"]) is not None)
    everything = analyse(text, LOCAL, LowConfidence.from_pages(pages, 101.0))
    assert everything.low_confidence == len(everything.entities["Entities"]) > 0
    icd = everything.others["InferICD10CM"]["Entities"]
    assert icd and all(any(t["Name"] == "LOW_CONFIDENCE" for t in e["Traits"]) for e in icd)
    assert analyse(text, LOCAL, LowConfidence.from_pages(pages, 0.0)).low_confidence == 0
    text_layer = [dict(p, source="text-layer") for p in pages]
    assert len(LowConfidence.from_pages(text_layer, 101.0)) == 0  # digital text is never doubted


# --- the command ------------------------------------------------------------------------------------
def test_entities_command_scores_json_lines(tmp_path):
    lines = [{"id": "a", "text": "Patient denies chest pain. metformin 500 mg PO BID"},
             {"id": 7, "text": "Dr. Alan Fictive saw her; HbA1c 7.2 %"},
             {"id": "empty", "text": ""}]
    stdin = "\n".join(json.dumps(x) for x in lines) + "\n\n"
    result = CliRunner().invoke(cli.main, ["entities", "--backend", "local", "--data-dir", str(tmp_path)],
                                input=stdin, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert [r["id"] for r in rows] == ["a", 7, "empty"]
    first = {e["Text"]: e for e in rows[0]["entities"]}
    assert "NEGATION" in {t["Name"] for t in first["chest pain"]["Traits"]}
    assert {a["Type"] for a in first["metformin"]["Attributes"]} == {"STRENGTH", "ROUTE_OR_MODE", "FREQUENCY"}
    assert ("NAME", "Alan Fictive") in {(e["Type"], e["Text"]) for e in rows[1]["entities"]}
    assert rows[2]["entities"] == []
    assert not (tmp_path / "medintake.db").exists()  # no database, no bucket


def test_entities_command_as_a_program_and_its_errors():
    secret = "Jane Roe has syphilis"
    run = subprocess.run([sys.executable, str(REPO / "cli.py"), "entities"], input=json.dumps({"id": 1, "text":
                         "No fever."}) + "\n" + json.dumps({"text": secret}) + "\n", capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    assert run.returncode == 1
    assert json.loads(run.stdout.splitlines()[0])["id"] == 1
    assert "line 2" in run.stderr and secret not in run.stderr and "Jane" not in run.stdout


# --- the job in the pipeline ------------------------------------------------------------------------
def test_entities_job_writes_icd10cm_and_low_confidence_without_phi_in_notice(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDINTAKE_OCR_LOW_CONFIDENCE", "101")  # every OCR word counts as doubtful
    data = tmp_path / "d"
    result = CliRunner().invoke(cli.main, ["--data-dir", str(data), "process", "--json",
                                           str(FILES / "scanned_discharge.pdf")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (row,) = [json.loads(line) for line in result.output.splitlines()]
    outputs = row["outputs"]
    entities = json.loads(open(outputs["entities"], encoding="utf-8").read())["Entities"]
    assert entities and all(any(t["Name"] == "LOW_CONFIDENCE" for t in e["Traits"]) for e in entities)
    icd = json.loads(open(outputs["icd10cm"], encoding="utf-8").read())
    codes = {c["Code"] for e in icd["Entities"] for c in e["ICD10CMConcepts"]}
    assert "E11.9" in codes
    manifest = json.loads(open(outputs["manifest"], encoding="utf-8").read())
    assert manifest["outputs"]["icd10cm"].endswith("/icd10cm.json")
    assert "usage" not in manifest  # nothing billed locally
    notice = (data / "notices.jsonl").read_text(encoding="utf-8")
    for e in entities:
        assert e["Text"] not in notice


def test_a_rerun_without_codes_leaves_no_stale_icd10cm_file(tmp_path, monkeypatch):
    data = tmp_path / "d"
    first = CliRunner().invoke(cli.main, ["process", "--json", "--data-dir", str(data),
                                          str(FILES / "digital_referral.pdf")], catch_exceptions=False)
    assert first.exit_code == 0, first.output
    row = json.loads(first.output)
    icd = Path(row["outputs"]["icd10cm"])
    assert icd.is_file()
    monkeypatch.setenv("MEDINTAKE_LOCAL_ICD10CM", "off")
    again = CliRunner().invoke(cli.main, ["reprocess", "--json", "--data-dir", str(data), row["document_id"]],
                               catch_exceptions=False)
    assert again.exit_code == 0 and json.loads(again.output)["status"] == "COMPLETED", again.output
    assert not icd.exists()
    assert (icd.parent / "entities.json").is_file()


def _extracted(name: str, tmp_path) -> str:
    from jobs.extract.text import extract_text
    from jobs.identify import identify, validate

    settings = Settings()
    src = FILES / name
    kind = identify(src, settings)
    validate(src, kind, settings)
    tmp_path.mkdir(parents=True, exist_ok=True)
    extract_text(src, kind, tmp_path, settings)
    return (tmp_path / "text.txt").read_text(encoding="utf-8")


def test_fixture_letter_and_lab_screenshot(tmp_path):
    letter = _extracted("digital_referral.pdf", tmp_path / "letter")
    analysis = analyse(letter, LOCAL)
    check_offsets(letter, analysis.entities)
    found = {(e["Category"], e["Type"], e["Text"]) for e in analysis.entities["Entities"]}
    assert {("PROTECTED_HEALTH_INFORMATION", "NAME", "Jane Example"), ("PROTECTED_HEALTH_INFORMATION", "DATE",
            "14 March 2024"), ("PROTECTED_HEALTH_INFORMATION", "ID", "0000000"),
            ("PROTECTED_HEALTH_INFORMATION", "AGE", "64"), ("TIME_EXPRESSION", "TIME_TO_TEST_NAME", "in three months")
            } <= found
    hba1c = [e for e in analysis.entities["Entities"] if e["Text"] == "HbA1c"][0]
    assert {a["Type"]: a["Text"] for a in hba1c["Attributes"]} == {"TEST_VALUE": "8.1", "TEST_UNIT": "percent"}
    codes = {e["Text"]: e["ICD10CMConcepts"][0]["Code"] for e in analysis.others["InferICD10CM"]["Entities"]}
    assert codes["type 2 diabetes mellitus"] == "E11.9" and codes["hypertension"] == "I10"

    labs = _extracted("screenshot_labs.png", tmp_path / "labs")  # real OCR ("A1c" read as "Alc")
    tests = {e["Text"]: {a["Type"]: a["Text"] for a in e["Attributes"]}
             for e in detect_entities(labs, LOCAL)["Entities"] if e["Category"] == "TEST_TREATMENT_PROCEDURE"}
    assert tests["Glucose"] == {"TEST_VALUE": "7.2", "TEST_UNIT": "mmol/L"}  # past "(fasting):"
    assert tests["Creatinine"] == {"TEST_VALUE": "88", "TEST_UNIT": "umol/L"}
    assert {"TEST_VALUE": "8.1", "TEST_UNIT": "%"} in tests.values()


def test_body_sites_get_their_side_and_conditions_their_site():
    text = "Pain in the left knee. Swelling of both legs."
    analysis = analyse(text, LOCAL)
    check_offsets(text, analysis.entities)
    by_text = {e["Text"]: e for e in analysis.entities["Entities"]}
    assert [(a["Type"], a["Text"]) for a in by_text["knee"]["Attributes"]] == [("DIRECTION", "left")]
    assert [(a["Type"], a["Text"], a["RelationshipType"]) for a in by_text["Pain"]["Attributes"]] == [
        ("SYSTEM_ORGAN_SITE", "knee", "SYSTEM_ORGAN_SITE")]
    assert [(a["Type"], a["Text"]) for a in by_text["Swelling"]["Attributes"]] == [("SYSTEM_ORGAN_SITE", "legs")]
    icd = {e["Text"]: e for e in analysis.others["InferICD10CM"]["Entities"]}
    assert icd["Pain"]["ICD10CMConcepts"][0]["Code"] == "M25.562"  # pain in left knee
    assert icd["Swelling"]["ICD10CMConcepts"][0]["Code"].startswith("R22")  # the site did not fit better
    assert not ParamValidator().validate(analysis.entities, _model("DetectEntitiesV2")).has_errors()
    assert not ParamValidator().validate(analysis.others["InferICD10CM"], _model("InferICD10CM")).has_errors()


def test_icd10cm_index_cache_is_reused_and_rebuilt_when_bad(tmp_path, monkeypatch):
    built = icd10.default_index()  # the in-process index (no cache folder)
    icd10.default_index.cache_clear()
    first = icd10.default_index(tmp_path)
    (cache,) = tmp_path.glob("icd10cm-*.marshal")
    assert cache.stat().st_size > 1_000_000
    calls = []
    monkeypatch.setattr(icd10, "_build", lambda: calls.append(1) or built)
    icd10.default_index.cache_clear()
    again = icd10.default_index(tmp_path)  # read back, not rebuilt
    assert calls == [] and again is not first
    for mention in ("type 2 diabetes mellitus", "essential hypertension", "breast cancer", "chest pain"):
        assert again.lookup(mention) == first.lookup(mention) == built.lookup(mention)
    cache.write_bytes(b"not an index")
    icd10.default_index.cache_clear()
    assert icd10.default_index(tmp_path) is built and calls == [1]  # a bad cache is rebuilt and rewritten
    icd10.default_index.cache_clear()
    assert icd10.default_index(tmp_path).lookup("HTN")[0]["Code"] == "I10" and calls == [1]
    icd10.default_index.cache_clear()


def test_pages_json_is_read_page_by_page(tmp_path):
    from jobs.entities.ocr_confidence import iter_pages

    text = _extracted("fax_two_pages.tiff", tmp_path)
    data = (tmp_path / "pages.json").read_bytes()
    whole = json.loads(data)
    assert len(whole) == 2 and list(iter_pages(data)) == whole  # the writer's one-page-per-line layout
    assert list(iter_pages(json.dumps(whole, indent=2).encode())) == whole  # any other layout: parsed whole
    low = LowConfidence.from_json(data, 101.0)
    assert len(low) == sum(1 for p in whole for w in p["words"] if w["offset"] is not None and w["confidence"] >= 0)
    for b, e, _ in low.spans:
        assert text[b:e].strip()


def test_a_cache_built_ahead_is_what_the_entities_stage_reads(tmp_path, monkeypatch):
    """The worker image builds the index once (``python -m jobs.entities.icd10 DIR``) and points
    ``cache_dir`` at it, so no job container pays the ~3.5 s build."""
    from conftest import REPO

    prebuilt = tmp_path / "image-cache"
    proc = subprocess.run([sys.executable, "-m", "jobs.entities.icd10", str(prebuilt)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert len(list(prebuilt.glob("icd10cm-*.marshal"))) == 1
    monkeypatch.setenv("MEDINTAKE_CACHE_DIR", str(prebuilt))
    settings = Settings.load(data_dir=tmp_path / "data")
    assert settings.effective_cache_dir == prebuilt.resolve()
    monkeypatch.setattr(icd10, "_build", lambda: pytest.fail("the index was rebuilt"))
    icd10.default_index.cache_clear()
    try:
        analysis = analyse("Known type 2 diabetes mellitus.", settings.replace(entities_backend="local"))
    finally:
        icd10.default_index.cache_clear()
    codes = [c["Code"] for e in analysis.others["InferICD10CM"]["Entities"] for c in e["ICD10CMConcepts"]]
    assert "E11.9" in codes
    assert not (tmp_path / "data" / "cache").exists()


def test_no_condition_no_index_load(monkeypatch):
    """A document without a condition gets an empty InferICD10CM response without loading the index."""
    monkeypatch.setattr(icd10, "default_index", lambda *a, **k: pytest.fail("the index was loaded"))
    response = icd10.infer_icd10cm({"Entities": [{"Category": "MEDICATION", "Text": "metformin", "BeginOffset": 0,
                                                  "EndOffset": 9, "Score": 0.9, "Attributes": [], "Traits": []}]})
    assert response == {"Entities": [], "ModelVersion": icd10.MODEL_VERSION}
