"""Relative time expressions ("yesterday", "3 days ago", "for the past two weeks", "since Monday").

Why: Comprehend Medical reports when something happened as TIME_EXPRESSION entities typed by what
they refer to (TIME_TO_DX_NAME, TIME_TO_MEDICATION_NAME, TIME_TO_TEST_NAME,
TIME_TO_PROCEDURE_NAME, TIME_TO_TREATMENT_NAME) and links them to that entity with relationship
OVERLAP. Calendar dates are PHI (DetectPHI's DATE) and are left to :mod:`jobs.entities.phi`.
Pure ``re``.
"""
from __future__ import annotations

import re

from jobs.entities.phi import Found

_N = (r"(?:\d+(?:\.\d+)?|a|an|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|several|few|a few"
      r"|couple of|a couple of)")
_UNIT = r"(?:minutes?|mins?|hours?|hrs?|days?|weeks?|wks?|months?|mos?|years?|yrs?)"
_DAY = r"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)"
_PATTERN = re.compile(
    rf"\b(?:{_N}[ \t]+{_UNIT}[ \t]+(?:ago|prior|earlier|before admission|later)"
    rf"|(?:for|over|during|in|within)[ \t]+the[ \t]+(?:past|last|next|previous)[ \t]+(?:{_N}[ \t]+)?{_UNIT}"
    rf"|(?:past|last|next|previous)[ \t]+(?:{_N}[ \t]+)?{_UNIT}"
    rf"|(?:since|on|last|this|next)[ \t]+(?:{_DAY}|yesterday|this morning|last night|admission|surgery|birth)"
    rf"|in[ \t]+{_N}[ \t]+{_UNIT}"
    rf"|yesterday|today|tonight|overnight|this morning|this afternoon|this evening|last night"
    rf"|on admission|at admission|at discharge|on discharge|at baseline)\b",
    re.I)

# Entity category/type -> the TIME_EXPRESSION type that points at it.
TIME_TO = {
    "MEDICAL_CONDITION": "TIME_TO_DX_NAME",
    "MEDICATION": "TIME_TO_MEDICATION_NAME",
    "TEST_NAME": "TIME_TO_TEST_NAME",
    "PROCEDURE_NAME": "TIME_TO_PROCEDURE_NAME",
    "TREATMENT_NAME": "TIME_TO_TREATMENT_NAME",
}


def find_time_expressions(text: str) -> list[Found]:
    """Relative time spans of ``text`` (typed TIME_EXPRESSION until linked to an entity)."""
    return [Found(m.start(), m.end(), "TIME_EXPRESSION", 0.7) for m in _PATTERN.finditer(text)]


def time_type_for(entity: dict) -> str | None:
    """The TIME_TO_* type for a time expression that refers to ``entity``, if it can refer to it."""
    if entity["Category"] in ("MEDICAL_CONDITION", "MEDICATION"):
        return TIME_TO[entity["Category"]]
    if entity["Category"] == "TEST_TREATMENT_PROCEDURE":
        return TIME_TO.get(entity["Type"])
    return None
