"""Test results: TEST_VALUE and TEST_UNIT attributes of TEST_TREATMENT_PROCEDURE entities.

Why a module of its own: lab lines ("HbA1c 7.2 %", "Creatinine: 1.1 mg/dL", "K 4.1 mmol/L (3.5-5.1)")
follow one small grammar: a test name, an optional verb or separator, a number (or a word such as
"positive"), an optional unit. The test names come from the local extractor when it found them,
and from the short list below otherwise (lab panels abbreviate heavily: "Na", "K", "Hgb", "WBC"),
so a lab report yields its values even where the lexicon is silent. Pure ``re``.

Comprehend Medical links the value and the unit to the test as attributes with relationship types
TEST_VALUE and TEST_UNIT; the local output does the same.
"""
from __future__ import annotations

import re

from jobs.entities.phi import Found

# Lab tests as written in reports; matched case-sensitively when written in capitals.
_TESTS = (
    "hemoglobin A1c", "haemoglobin A1c", "hemoglobin Alc", "haemoglobin Alc", "HbAlc", "HbA1C", "HbA1c", "Hb A1c", "HgbA1c", "Hgb A1c", "A1c", "glycated hemoglobin",
    "hemoglobin", "haemoglobin", "Hgb", "Hb", "hematocrit", "Hct", "WBC", "white blood cell count", "RBC", "platelets",
    "platelet count", "PLT", "MCV", "MCH", "MCHC", "RDW", "neutrophils", "lymphocytes", "creatinine", "Cr", "BUN",
    "urea", "eGFR", "GFR", "sodium", "Na", "potassium", "K", "chloride", "Cl", "bicarbonate", "HCO3", "CO2",
    "calcium", "Ca", "magnesium", "Mg", "phosphate", "phosphorus", "glucose", "fasting glucose", "blood glucose",
    "blood sugar", "total cholesterol", "cholesterol", "LDL", "LDL-C", "HDL", "HDL-C", "triglycerides", "TG",
    "ALT", "AST", "ALP", "alkaline phosphatase", "GGT", "bilirubin", "total bilirubin", "albumin", "total protein",
    "TSH", "free T4", "FT4", "T3", "INR", "PT", "PTT", "aPTT", "CRP", "ESR", "troponin", "troponin I", "troponin T",
    "BNP", "NT-proBNP", "lactate", "ferritin", "iron", "B12", "vitamin D", "folate", "PSA", "uric acid", "lipase",
    "amylase", "CK", "D-dimer", "procalcitonin", "pH", "pCO2", "pO2", "SpO2", "O2 sat", "oxygen saturation",
    "temperature", "temp", "heart rate", "HR", "pulse", "respiratory rate", "RR", "blood pressure", "BP", "weight",
    "height", "BMI", "tacrolimus level", "tacrolimus trough", "FK level", "urine protein", "microalbumin",
)
_UNIT = (r"(?:%|percent|per cent|mg/dL|mg/dl|g/dL|g/dl|g/L|mmol/L|mmol/l|mmol/mol|umol/L|\u00b5mol/L|\u03bcmol/L|mEq/L|meq/L|mIU/L"
         r"|uIU/mL|\u00b5IU/mL|mIU/mL|IU/L|U/L|ng/mL|ng/ml|ng/dL|pg/mL|pg/ml|ug/L|\u00b5g/L|mcg/L|nmol/L|pmol/L"
         r"|mL/min(?:/1\.73\s?m2|/1\.73\s?m\u00b2)?|x\s?10\^?9/L|x\s?10\^?12/L|x\s?10\^?3/[u\u00b5]L|K/uL|K/\u00b5L"
         r"|M/uL|cells/[u\u00b5]L|/[u\u00b5]L|fL|pg|mm/hr?|mm\s?Hg|mmHg|bpm|beats/min|breaths/min|/min|kg|lbs?|cm|m"
         r"|\u00b0\s?[CF]|[CF]|seconds|sec|s|kg/m2|kg/m\u00b2)")
_NUM = r"[<>\u2264\u2265]?\s?\d+(?:[.,]\d+)?(?:\s?/\s?\d+(?:[.,]\d+)?)?"
_WORD_VALUE = r"(?:positive|negative|normal|abnormal|elevated|low|high|undetectable|detected|not detected|trace)"
_SEP = r"[ \t]*(?:[:=]|\bof\b|\bwas\b|\bis\b|\bwere\b|\bat\b)?[ \t]*"
_QUALIFIER = r"(?:[ \t]*\((?:fasting|random|serum|plasma|blood|urine|whole blood|venous|arterial|calc(?:ulated)?)\))?"
_VALUE = re.compile(rf"{_QUALIFIER}{_SEP}(?P<value>{_NUM}|{_WORD_VALUE})(?:[ \t]*(?P<unit>{_UNIT})(?![\w/]))?", re.I)
TEST_NAMES = re.compile(
    r"(?<![\w-])(?:" + "|".join(
        (rf"(?-i:{re.escape(t)})" if t.upper() == t or len(t) <= 3 else re.escape(t))
        for t in sorted(_TESTS, key=len, reverse=True)) + r")(?![\w-])", re.I)


def find_tests(text: str) -> list[Found]:
    """Test names of the short list (the local extractor adds those of its lexicon)."""
    return [Found(m.start(), m.end(), "TEST_NAME", 0.8) for m in TEST_NAMES.finditer(text)]


def longer_name(text: str, begin: int, end: int) -> int:
    """End of a listed test name starting at ``begin`` that is longer than [begin, end), else ``end``.

    The lexicon knows "Hemoglobin"; the report says "Hemoglobin A1c: 8.1 %" (or, after OCR,
    "Hemoglobin Alc"): the value belongs to the longer name.
    """
    m = TEST_NAMES.match(text, begin)
    return m.end() if m is not None and m.end() > end else end


def value_and_unit(text: str, end: int) -> list[Found]:
    """TEST_VALUE and TEST_UNIT right after a test name ending at ``end`` ("HbA1c 7.2 %")."""
    m = _VALUE.match(text, end)
    if m is None or "\n\n" in text[end:m.start("value")] or "\f" in text[end:m.end()]:
        return []
    out = [Found(m.start("value"), m.end("value"), "TEST_VALUE", 0.8)]
    if m.group("unit"):
        out.append(Found(m.start("unit"), m.end("unit"), "TEST_UNIT", 0.8))
    return out
