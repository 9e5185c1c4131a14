"""Rules of the local extractor: medication attributes and context traits (negation and friends).

Why rules: attributes such as "500 mg", "by mouth", "twice daily" follow a small closed grammar
that regular expressions capture well, and negation in clinical notes is handled well enough by
NegEx (Chapman et al. 2001): a trigger ("no", "denies", "negative for") negates the concepts that
follow within a few words, up to a scope breaker ("but", a sentence end). Pure ``re``, no imports
beyond the standard library, so the dispatcher stays light.
"""
from __future__ import annotations

import bisect
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Attr:
    """An attribute of an entity; ``relationship`` is a DetectEntitiesV2 RelationshipType."""

    type: str
    begin: int
    end: int
    relationship: str
    score: float = 0.8
    relationship_score: float = 0.8


# --- medication attributes -------------------------------------------------------------------
_NUM = r"(?:\d+(?:,\d{3})*(?:\.\d+)?|\.\d+)"
_RANGE = rf"{_NUM}(?:\s*(?:-|to|\u2013)\s*{_NUM})?"
_WORDNUM = r"(?:one[- ]half|a half|half|one|two|three|four|five|six|seven|eight|nine|ten|1/2)"
_UNIT = r"(?:mgs?|mcg|\u00b5g|ug|gm|grams?|g|milligrams?|micrograms?|meq|mmol|international units|units?|iu|u|ml|cc)"
_FORMWORD = (r"(?:tablets?|tabs?|capsules?|caps?|pills?|puffs?|drops?|sprays?|patch(?:es)?|applications?|appl"
             r"|inhalations?|injections?|teaspoons?|tsp|tablespoons?|tbsp|vials?|ampules?|suppositor(?:y|ies)"
             r"|lozenges?|packets?|scoops?)")
_PATTERNS = [
    ("RATE", rf"{_NUM}\s*{_UNIT}\s*/\s*(?:kg\s*/\s*)?(?:hr|h|hour|min|minute)"),
    ("STRENGTH", rf"{_NUM}\s*{_UNIT}\s*/\s*(?:{_NUM}\s*)?(?:ml|l|tab|tablet|dose|actuation|act|spray|puff|kg|m2)"
                 rf"|{_NUM}\s*%"),
    ("COUNT", rf"{_WORDNUM}\s*\(\s*{_RANGE}\s*\)(?:\s*{_FORMWORD})?|(?:{_RANGE}|{_WORDNUM})\s*{_FORMWORD}"),
    ("AMOUNT", rf"{_RANGE}\s*{_UNIT}"),
    ("DURATION", rf"(?:(?:for|x|\u00d7)\s*(?:the\s+next\s+|another\s+)?(?:{_RANGE}|{_WORDNUM}|a|an)\s*(?:more\s+)?"
                 rf"(?:days?|d|weeks?|wks?|w|months?|mos?|doses?)"
                 rf"|(?:{_RANGE}|{_WORDNUM})[- ](?:day|week|month)\s+(?:course|supply|taper)"
                 rf"|until\s+(?:finished|gone|complete|follow[- ]up|further notice))"),
    ("FREQUENCY", r"(?:once|twice|thrice|one time|two times|three times|four times|\d+\s*times?|\d+\s*x)\s*"
                  r"(?:a|per|each|every)?\s*(?:day|daily|week|weekly|month|night|hour)s?"
                  r"|every\s+(?:other\s+)?(?:\d+(?:\s*(?:-|to)\s*\d+)?\s*)?(?:hours?|hrs?|h|days?|weeks?|months?|minutes?"
                  r"|mins?|morning|evening|night|day|week)"
                  r"|q\.?\s?\d+(?:\s?-\s?\d+)?\s?(?:h|hr|hrs|hours?|min)\.?"
                  r"|b\.i\.d\.?|t\.i\.d\.?|q\.i\.d\.?|q\.d\.?|q\.h\.s\.?|p\.r\.n\.?"
                  r"|bid|tid|qid|qd|qod|qam|qpm|qhs|qday|qweek|qwk|hs|prn|daily|nightly|weekly|monthly|hourly"
                  r"|once|twice|as needed"
                  r"|(?:at|before|after|with)\s+(?:bedtime|breakfast|lunch|dinner|supper|meals?|night)"
                  r"|in the (?:morning|evening|afternoon)|at night"),
    ("ROUTE_OR_MODE", r"by mouth|per os|orally|oral|p\.o\.?|po|intravenous(?:ly)?|(?-i:IV|iv)|i\.v\.?|iv push"
                      r"|intramuscular(?:ly)?|(?-i:IM)|i\.m\.|subcutaneous(?:ly)?|sub-?q|(?-i:SQ|SC)|s\.c\."
                      r"|topical(?:ly)?|transdermal(?:ly)?|inhaled|(?:via|by) inhalation|via nebuli[sz]er|nebulized"
                      r"|sublingual(?:ly)?|(?-i:SL)|per rectum|rectal(?:ly)?|(?-i:PR)|vaginal(?:ly)?"
                      r"|intranasal(?:ly)?|nasal(?:ly)?|in each nostril|ophthalmic|(?-i:OU)"
                      r"|in (?:each|both|the (?:left|right)) eyes?|(?:per|via) (?:g|j|ng|peg)[- ]?tube|by injection"),
    ("FORM", r"tablets?|tab|capsules?|cap|solution|soln|suspension|susp|elixir|syrup|powder|cream|ointment|oint|gel"
             r"|lotion|patch|inhaler|nebulizer|neb|spray|drops|injection|inj|suppository|lozenge|liquid"
             r"|(?-i:SR|ER|XR|XL|DR|CR|ODT|EC)|(?:extended|delayed|sustained)[- ]release|chewable|enteric[- ]coated"),
]
_MED_ATTR = re.compile(
    r"(?<![\w.])(?:" + "|".join(f"(?P<{name}>{pat})" for name, pat in _PATTERNS) + r")(?![\w])", re.I)
_LIST_ITEM = re.compile(r"\s[-*\u2022]\s")
_ATTACHED = re.compile(r"[ \t]*(?:\((?:[^()\n]{1,40})\)[ \t]*)?[:,]?[ \t]*")  # name, (alias), amount
_MED_WINDOW = 150  # characters after the drug name searched for its attributes


def medication_attributes(text: str, start: int, limit: int, ctx: "Context") -> list[Attr]:
    """Attributes between the end of a drug name and the next drug, sentence end or 150 characters.

    An amount written right after the name ("metformin 500 mg", "Prograf 1 mg Cap") names the
    product, so it is its STRENGTH; so is any amount when the window also has a count ("1 mg Cap
    3 capsules": the count is the DOSAGE). An amount standing apart from the name ("metformin:
    take 500 mg") is the DOSAGE. Comprehend Medical labels a lone amount either way in its own
    examples; the acceptance test of issue 8 asks STRENGTH for "metformin 500 mg PO BID".
    """
    stop = min(limit, ctx.scope_end(start), start + _MED_WINDOW)
    item = _LIST_ITEM.search(text, start, stop)  # "... daily - Os Cal D 500mg": next list item
    if item is not None:
        stop = item.start()
    found: list[tuple[str, int, int]] = []
    for m in _MED_ATTR.finditer(text, start, stop):
        kind = m.lastgroup or ""
        found.append((kind, m.start(), m.end()))
    has_count = any(k == "COUNT" for k, _, _ in found)
    out = []
    for kind, b, e in found:
        if kind == "COUNT":
            typ = "DOSAGE"
        elif kind == "AMOUNT":
            typ = "STRENGTH" if has_count or _ATTACHED.fullmatch(text, start, b) else "DOSAGE"
        else:
            typ = kind
        out.append(Attr(typ, b, e, typ))
    return out


_ACUITY = re.compile(r"\b(acute on chronic|acute|chronic|subacute)\s+$", re.I)


def acuity_attribute(text: str, begin: int) -> Attr | None:
    """"acute pancreatitis": ACUITY attribute, as Comprehend Medical reports it."""
    m = _ACUITY.search(text, max(0, begin - 20), begin)
    if m is None:
        return None
    return Attr("ACUITY", m.start(1), m.end(1), "ACUITY")


# --- context traits ----------------------------------------------------------------------------
_TERMINATOR = re.compile(
    r"[.!?;](?=\s|$)|\n[ \t]*\n|\f|\n(?=[ \t]*(?:[-*\u2022]|\d{1,2}[.)])[ \t])|\n(?=[ \t]*[A-Z][A-Za-z /&-]{2,40}:)")
_HEADER = re.compile(r"(?m)^[ \t]*([A-Za-z][A-Za-z /&-]{1,40}?)[ \t]*:")

_NEG_PRE = re.compile(
    r"\b(?:no|not|denies|denied|deny|denying|without|negative for|free of|absence of|never|neither|nor"
    r"|none|ruled out)\b", re.I)
_NEG_PSEUDO = re.compile(
    r"(?:no (?:increase|change|further|significant change|longer)|not (?:only|necessarily|certain|cause|ruled out)"
    r"|without (?:difficulty|any further)|gram negative)\b", re.I)
_NEG_POST = re.compile(
    r"[\s:,-]*(?:(?:was|were|is|are|has been|have been)\s+)?(?:ruled out|excluded|negative|absent|unlikely|none"
    r"|denied|denies|not (?:seen|present|found|noted|detected|identified))\b", re.I)
_BREAK = re.compile(
    r"\b(?:but|however|although|though|except|aside from|apart from|which|who|whose|presents?|presenting"
    r"|presented|complains?|complaining|reports?|reporting|c/o|admits?)\b", re.I)
_FAMILY = re.compile(
    r"\b(?:family history|family hx|fhx|fh|mother|father|mom|dad|sisters?|brothers?|siblings?|aunt|uncle"
    r"|grandmother|grandfather|grandparents?|parents?|cousin|daughters?|sons?|maternal|paternal)\b", re.I)
_FAMILY_BREAK = re.compile(r"\b(?:patient|pt|the patient himself|the patient herself)\b", re.I)  # back to the patient
_PAST = re.compile(r"\b(?:history of|hx of|h/o|s/p|status post|previous|prior|past|remote)\b", re.I)
_FUTURE = re.compile(
    r"\b(?:will|plan(?:ned|s)?|plan to|scheduled(?: for)?|to be|going to|repeat|recheck|follow[- ]up with|refer(?:red)? for"
    r"|order(?:ed)?|book(?:ed)?|arrange(?:d)?|due for|upcoming|next)\b", re.I)
_FUTURE_AFTER = re.compile(r"[ \t,]*(?:\n[ \t]*)?(?:is |was )?(?:in \w+ (?:days?|weeks?|months?)|next (?:week|month|visit)"
                           r"|tomorrow|scheduled|planned|pending|to be done)\b", re.I)
_HYPO = re.compile(
    r"\b(?:if|in case|should|watch for|monitor for|look out for|at risk for|risk of|prevent|prevention)\b", re.I)
_LOWCONF = re.compile(
    r"\b(?:possible|possibly|probable|probably|likely|suspected|suspicious for|questionable|concern for"
    r"|question of|rule out|r/o|differential|vs\.?|versus)\b", re.I)
_WORD = re.compile(r"\w+")
_ANSWERED = re.compile(r".*\w.*:", re.S)  # "visit: no Immunomeds: Prograf": the "no" answered an earlier question
_NEG_WINDOW = 6  # words between a negation trigger and the concept (NegEx uses 5-6)


class Context:
    """Sentence-like scopes and section headers of one text, computed once, queried per entity."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._ends = [m.start() for m in _TERMINATOR.finditer(text)]
        self._after = [m.end() for m in _TERMINATOR.finditer(text)]
        self._headers: list[tuple[int, str]] = []
        for m in _HEADER.finditer(text):
            name = m.group(1).lower()
            kind = "family" if "family" in name else (
                "past" if ("past" in name and "history" in name) or name in ("pmh", "medical history") else "")
            self._headers.append((m.end(), kind))
        self._header_pos = [p for p, _ in self._headers]

    def scope_start(self, pos: int) -> int:
        k = bisect.bisect_right(self._after, pos) - 1
        return self._after[k] if k >= 0 else 0

    def scope_end(self, pos: int) -> int:
        k = bisect.bisect_left(self._ends, pos)
        return self._ends[k] if k < len(self._ends) else len(self.text)

    def section(self, pos: int) -> str:
        k = bisect.bisect_right(self._header_pos, pos) - 1
        return self._headers[k][1] if k >= 0 else ""

    def traits(self, begin: int, end: int, category: str) -> dict[str, float]:
        """NEGATION, PERTAINS_TO_FAMILY, PAST_HISTORY, HYPOTHETICAL, LOW_CONFIDENCE for one entity.

        Conditions get all of them; tests and procedures NEGATION, FUTURE, PAST_HISTORY and
        HYPOTHETICAL (the traits Comprehend Medical gives them); others NEGATION only.
        """
        text = self.text
        s0 = self.scope_start(begin)
        prefix_start = max(s0, begin - 200)
        out: dict[str, float] = {}
        if self._negated(prefix_start, begin, end):
            out["NEGATION"] = 0.85
        prefix = text[prefix_start:begin]
        if category == "TEST_TREATMENT_PROCEDURE":
            # Comprehend Medical's traits of tests and procedures: when they happened, or will
            if _near(prefix, _FUTURE, 8) or _FUTURE_AFTER.match(text, end, min(len(text), end + 40)):
                out["FUTURE"] = 0.7
            elif _near(prefix, _PAST, 6) or self.section(begin) == "past":
                out["PAST_HISTORY"] = 0.7
            if _near(prefix, _HYPO, 20):
                out["HYPOTHETICAL"] = 0.7
            return out
        if category != "MEDICAL_CONDITION":
            return out
        section = self.section(begin)
        if section == "family" or _near(prefix, _FAMILY, 12, _FAMILY_BREAK):
            out["PERTAINS_TO_FAMILY"] = 0.8
        elif "NEGATION" not in out and (section == "past" or _near(prefix, _PAST, 6)):
            out["PAST_HISTORY"] = 0.7
        if _near(prefix, _HYPO, 20):
            out["HYPOTHETICAL"] = 0.7
        if _near(prefix, _LOWCONF, 6):
            out["LOW_CONFIDENCE"] = 0.6
        return out

    def _negated(self, a: int, begin: int, end: int) -> bool:
        text = self.text
        for m in reversed(list(_NEG_PRE.finditer(text, a, begin))):
            between = text[m.end():begin]
            if len(_WORD.findall(between)) > _NEG_WINDOW and not _in_list(between):
                break
            if _BREAK.search(between) or _ANSWERED.match(between):
                break
            if _NEG_PSEUDO.match(text, m.start()):
                continue
            return True
        stop = min(self.scope_end(end), end + 40)
        return _NEG_POST.match(text, end, stop) is not None


def _near(prefix: str, pattern: re.Pattern[str], max_words: int, extra_break: re.Pattern[str] | None = None) -> bool:
    """Does ``pattern`` occur in ``prefix`` at most ``max_words`` words before its end, unbroken?"""
    for m in reversed(list(pattern.finditer(prefix))):
        between = prefix[m.end():]
        if len(_WORD.findall(between)) > max_words:
            return False
        if extra_break is not None and extra_break.search(between):
            return False
        return _BREAK.search(between) is None
    return False


_LIST_SEP = re.compile(r"\s*(?:,|/|\bor\b|\band\b|\bnor\b)\s*", re.I)


def _in_list(between: str) -> bool:
    """"Denies fever, chills, nausea, vomiting or dysuria": a list of short items keeps the negation.

    NegEx's word window would stop after five or six words; ConText lets the scope run on
    through a list, so each item (at most four words) stays in scope, up to twelve items.
    """
    items = [i for i in _LIST_SEP.split(between) if i.strip()]
    if len(items) > 12 or len(_LIST_SEP.findall(between)) < 2:
        return False
    return all(len(_WORD.findall(i)) <= 4 for i in items)
