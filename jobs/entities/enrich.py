"""The rest of Comprehend Medical's surface, added to the local extractor's DetectEntitiesV2 response.

The local extractor (:mod:`jobs.entities.local`) finds medications, conditions, tests, procedures
and anatomy with their medication attributes and context traits. This module adds, from small
rule modules that know nothing of each other:

- TEST_VALUE / TEST_UNIT attributes of tests (:mod:`jobs.entities.lab_values`), and lab tests
  the lexicon lacks when a value follows them; a "medication" that is really a lab analyte with a
  lab unit ("creatinine 1.1 mg/dL") becomes the test it is;
- DIRECTION of body sites and SYSTEM_ORGAN_SITE links from conditions (:mod:`jobs.entities.anatomy`);
- PROTECTED_HEALTH_INFORMATION entities (:mod:`jobs.entities.phi`);
- TIME_EXPRESSION entities linked to the entity they refer to (:mod:`jobs.entities.time_expressions`).

Why after, not inside, the extractor: the extractor's spans come from a trained model that
another part of the project owns and retrains; these rules only fill what it does not produce,
and never move its spans (except a test name grown to the longer listed name its value follows,
"Hemoglobin" -> "Hemoglobin A1c: 8.1 %"). The response is renumbered at the end (one Id counter for entities
and attributes, as Comprehend Medical does).
"""
from __future__ import annotations

import bisect
import re

from jobs.entities import anatomy, lab_values, phi, time_expressions
from jobs.entities.phi import Found

# PHI types that win over a medical entity they overlap ("Dr. Parkinson" is a name, not a disease).
_PHI_FIRST = frozenset({"NAME", "ID", "EMAIL", "URL", "PHONE_OR_FAX", "ADDRESS"})
_LAB_UNIT = re.compile(r"/\s?(?:dL|dl|L|l)$|%|mmol|mEq|IU|/[u\u00b5]L|mL/min", re.I)


class _Spans:
    """Sorted character ranges already taken by entities or attributes.

    ``free`` looks only at the ranges that can reach ``b``: those starting less than the longest
    range's length before it. Scanning every range that starts before ``e`` made enrichment
    quadratic in the entities of a document (40 % of the entities stage on long born-digital
    documents, 2026-11-28).
    """

    def __init__(self) -> None:
        self.items: list[tuple[int, int]] = []
        self.longest = 0

    def add(self, b: int, e: int) -> None:
        bisect.insort(self.items, (b, e))
        self.longest = max(self.longest, e - b)

    def free(self, b: int, e: int) -> bool:
        k = bisect.bisect_left(self.items, (e, e))  # ranges starting before e
        # A range ending after b starts after b - longest (its length is at most longest).
        j = bisect.bisect_left(self.items, (b - self.longest, b - self.longest))
        return not any(oe > b for _, oe in self.items[j:k])


def _attribute(text: str, f: Found, category: str, relationship: str | None = None) -> dict:
    return {"Type": f.type, "Score": f.score, "RelationshipScore": 0.8, "RelationshipType": relationship or f.type,
            "Id": -1, "BeginOffset": f.begin, "EndOffset": f.end, "Text": text[f.begin:f.end],
            "Category": category, "Traits": []}


def _entity(text: str, f: Found, category: str) -> dict:
    return {"Id": -1, "BeginOffset": f.begin, "EndOffset": f.end, "Score": f.score, "Text": text[f.begin:f.end],
            "Category": category, "Type": f.type, "Traits": [], "Attributes": []}


def enrich(text: str, response: dict) -> dict:
    """``response`` (DetectEntitiesV2 shape over ``text``) with test values, PHI and time expressions."""
    entities = [dict(e, Attributes=list(e.get("Attributes", []))) for e in response.get("Entities", [])]
    _tests(text, entities)
    _anatomy(text, entities)
    taken = _Spans()
    for e in entities:
        taken.add(e["BeginOffset"], e["EndOffset"])
        for a in e["Attributes"]:
            taken.add(a["BeginOffset"], a["EndOffset"])
    entities = _phi(text, entities, taken)
    _times(text, entities, taken)
    return {**response, "Entities": renumber(entities)}


def _tests(text: str, entities: list[dict]) -> None:
    """Values and units of tests; lab analytes read as medications become tests."""
    covered = sorted((e["BeginOffset"], e["EndOffset"]) for e in entities)
    for e in entities:
        if e["Category"] == "MEDICATION" and lab_values.TEST_NAMES.fullmatch(e["Text"]):
            found = lab_values.value_and_unit(text, e["EndOffset"])
            unit = next((f for f in found if f.type == "TEST_UNIT"), None)
            if unit is not None and _LAB_UNIT.search(text[unit.begin:unit.end]):
                e.update(Category="TEST_TREATMENT_PROCEDURE", Type="TEST_NAME", Traits=[], Attributes=[])
        if e["Category"] == "TEST_TREATMENT_PROCEDURE" and e["Type"] == "TEST_NAME" and not any(
                a["Type"] == "TEST_VALUE" for a in e["Attributes"]):
            end = lab_values.longer_name(text, e["BeginOffset"], e["EndOffset"])
            if end > e["EndOffset"] and lab_values.value_and_unit(text, end) and not any(
                    b < end and e["EndOffset"] < en for b, en in covered if b >= e["EndOffset"]):
                e.update(EndOffset=end, Text=text[e["BeginOffset"]:end])  # "Hemoglobin" -> "Hemoglobin A1c"
            e["Attributes"] += [_attribute(text, f, e["Category"])
                                for f in lab_values.value_and_unit(text, e["EndOffset"])]
    starts = [b for b, _ in covered]
    for f in lab_values.find_tests(text):
        k = bisect.bisect_right(starts, f.begin) - 1
        if (k >= 0 and covered[k][1] > f.begin) or (k + 1 < len(covered) and covered[k + 1][0] < f.end):
            continue  # the extractor already has something here
        values = lab_values.value_and_unit(text, f.end)
        if not values:
            continue  # a bare "K" or "PT" is too ambiguous without its value
        ent = _entity(text, f, "TEST_TREATMENT_PROCEDURE")
        ent["Attributes"] = [_attribute(text, v, "TEST_TREATMENT_PROCEDURE") for v in values]
        entities.append(ent)


def _anatomy(text: str, entities: list[dict]) -> None:
    """DIRECTION of body sites, and SYSTEM_ORGAN_SITE from a condition to the site it is in."""
    sites = [e for e in entities if e["Category"] == "ANATOMY"]
    for site in sites:
        side = anatomy.direction(text, site["BeginOffset"])
        if side is not None and not any(a["Type"] == "DIRECTION" for a in site["Attributes"]):
            site["Attributes"].append(_attribute(text, side, "ANATOMY"))
    for cond in entities:
        if cond["Category"] != "MEDICAL_CONDITION":
            continue
        for site in sites:
            if anatomy.site_of(text, (cond["BeginOffset"], cond["EndOffset"]),
                               (site["BeginOffset"], site["EndOffset"])):
                f = Found(site["BeginOffset"], site["EndOffset"], "SYSTEM_ORGAN_SITE", site["Score"])
                cond["Attributes"].append(_attribute(text, f, "ANATOMY"))
                break


def _overlaps(e: dict, b: int, end: int) -> bool:
    if e["BeginOffset"] < end and b < e["EndOffset"]:
        return True
    return any(a["BeginOffset"] < end and b < a["EndOffset"] for a in e["Attributes"])


def _phi(text: str, entities: list[dict], taken: _Spans) -> list[dict]:
    out = entities
    for f in phi.find_phi(text):
        if taken.free(f.begin, f.end):
            out.append(_entity(text, f, phi.CATEGORY))
            taken.add(f.begin, f.end)
            continue
        if f.type not in _PHI_FIRST:
            continue
        hit = [e for e in out if _overlaps(e, f.begin, f.end)]
        if any(e["Category"] == phi.CATEGORY for e in hit):
            continue
        if all(e["Attributes"] == [] and e["Category"] != "TIME_EXPRESSION" for e in hit):
            out = [e for e in out if e not in hit] + [_entity(text, f, phi.CATEGORY)]
            taken.add(f.begin, f.end)
    return out


def _times(text: str, entities: list[dict], taken: _Spans) -> None:
    """TIME_EXPRESSION entities, typed by and linked to the nearest entity of their sentence."""
    for f in time_expressions.find_time_expressions(text):
        if not taken.free(f.begin, f.end):
            continue
        target = _nearest(text, entities, f)
        typ = time_expressions.time_type_for(target) if target is not None else None
        ent = _entity(text, Found(f.begin, f.end, typ or "TIME_EXPRESSION", f.score), "TIME_EXPRESSION")
        if target is not None and typ is not None:
            target["Attributes"].append({**_attribute(text, Found(f.begin, f.end, typ, f.score), "TIME_EXPRESSION",
                                                      "OVERLAP")})
        entities.append(ent)
        taken.add(f.begin, f.end)


_SENTENCE_BREAK = re.compile(r"[.!?;]\s|\n\s*\n|\f")


def _nearest(text: str, entities: list[dict], f: Found) -> dict | None:
    """The closest condition, medication, test or procedure in the same sentence, if any."""
    best: tuple[int, dict] | None = None
    for e in entities:
        if time_expressions.time_type_for(e) is None:
            continue
        a, b = (e["EndOffset"], f.begin) if e["EndOffset"] <= f.begin else (f.end, e["BeginOffset"])
        if b < a or _SENTENCE_BREAK.search(text, a, b) or b - a > 80:
            continue
        if best is None or b - a < best[0]:
            best = (b - a, e)
    return best[1] if best else None


def renumber(entities: list[dict]) -> list[dict]:
    """Entities sorted by offset; Ids from one counter over entities and their attributes."""
    next_id = 0
    out = []
    for e in sorted(entities, key=lambda e: (e["BeginOffset"], e["EndOffset"])):
        e = dict(e, Id=next_id)
        next_id += 1
        attrs = []
        for a in sorted(e.get("Attributes", []), key=lambda a: (a["BeginOffset"], a["EndOffset"])):
            attrs.append(dict(a, Id=next_id))
            next_id += 1
        e["Attributes"] = attrs
        out.append(e)
    return out
