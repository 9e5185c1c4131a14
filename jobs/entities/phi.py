"""Protected health information found by patterns, with DetectPHI's entity types.

Why patterns: the identifiers that letters and lab reports carry (dates, ages, phone and fax
numbers, e-mail addresses, URLs, record and insurance numbers, street addresses) have regular
surface forms, and names are found where a cue introduces them ("Patient:", "Dr.", "Mrs.",
"Dear"). A name nobody introduces is missed: that is the price of having no name list and no
model here; Comprehend Medical's DetectPHI (setting ``comprehend_operations``) does better.

Every span is an entity of category PROTECTED_HEALTH_INFORMATION with one of DetectPHI's types:
NAME, AGE, DATE, PHONE_OR_FAX, EMAIL, ID, URL, ADDRESS, PROFESSION. Pure ``re``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

CATEGORY = "PROTECTED_HEALTH_INFORMATION"


@dataclass(frozen=True)
class Found:
    """One span of ``text`` with its entity type and score (also used by the other rule modules)."""

    begin: int
    end: int
    type: str
    score: float


_MONTH = (r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?"
          r"|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\.?")
_PROFESSIONS = (r"(?:teacher|nurse|engineer|farmer|lawyer|accountant|electrician|plumber|carpenter|mechanic|truck driver"
                r"|bus driver|driver|firefighter|police officer|physician|doctor|pharmacist|cashier|chef|cook|waiter"
                r"|waitress|secretary|student|soldier|construction worker|miner|painter|programmer|software engineer"
                r"|manager|salesman|saleswoman|hairdresser|welder|pilot|dentist|veterinarian|librarian|clerk|janitor"
                r"|housekeeper|social worker|professor|architect|banker|musician|writer|journalist|baker|butcher"
                r"|fisherman|machinist|laborer|labourer|paramedic|caregiver)")
_CAP = r"[A-Z][a-z'\u2019-]+(?:-[A-Z][a-z]+)?"
_NAME = rf"(?:{_CAP}|[A-Z]\.)(?:[ \t]+(?:{_CAP}|[A-Z]\.)){{0,3}}"
_NAME_OR_LAST_FIRST = rf"(?:{_CAP},[ \t]*{_CAP}(?:[ \t]+[A-Z]\.?(?!\w))?|{_NAME})"

# (type, score, pattern, group holding the value; 0 = the whole match)
_RULES: list[tuple[str, float, str, int]] = [
    ("EMAIL", 0.95, r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", 0),
    ("URL", 0.9, r"\b(?:https?://|www\.)[^\s<>\"')\]]+[^\s<>\"')\].,;:]", 0),
    ("ID", 0.9, r"\b(?:SSN|Social Security(?: No\.?| Number)?)[ \t]*[:#]?[ \t]*(\d{3}-\d{2}-\d{4})", 1),
    ("ID", 0.85, r"\b(?:MRN|Medical Record(?: Number| No\.?| #)?|Patient ID|Pt ID|Account(?: No\.?| Number| #)?|Acct"
                 r"|Member(?: ID| No\.?| Number| #)|Policy(?: No\.?| Number| #| ID)?|Group(?: No\.?| Number| #| ID)"
                 r"|Insurance(?: ID| No\.?| Number| #)|Subscriber(?: ID| No\.?| #)|Claim(?: No\.?| Number| #)"
                 r"|Medicare(?: No\.?| Number| ID| #)?|Medicaid(?: No\.?| Number| ID| #)?|NPI|DEA(?: No\.?| #)?"
                 r"|License(?: No\.?| #)|Case(?: No\.?| #)|Chart(?: No\.?| #)|ID(?: No\.?| Number| #)?)"
                 r"[ \t]*(?:[:#]|No\.?|is)?[ \t]*((?=[A-Z-]*\d)[A-Z0-9][A-Z0-9-]{3,19}\b)", 1),  # has a digit
    ("PHONE_OR_FAX", 0.9, r"(?<![\w-])(?:\+?1[ \t.-]?)?(?:\(\d{3}\)[ \t]?|\d{3}[ \t.-])\d{3}[ \t.-]\d{4}(?![\w-])"
                          r"(?:[ \t]*(?:x|ext\.?)[ \t]*\d{1,5})?", 0),
    ("PHONE_OR_FAX", 0.8, r"\b(?:Tel|Phone|Ph|Fax|Mobile|Cell)\.?[ \t]*:?[ \t]*(\+\d[\d \t().-]{7,18}\d)", 1),
    ("DATE", 0.9, r"\b\d{4}-\d{2}-\d{2}\b", 0),
    ("DATE", 0.9, r"\b\d{1,2}[/.]\d{1,2}[/.](?:\d{4}|\d{2})\b", 0),
    ("DATE", 0.9, rf"\b{_MONTH}[ \t]+\d{{1,2}}(?:st|nd|rd|th)?,?[ \t]+\d{{4}}\b", 0),
    ("DATE", 0.9, rf"\b\d{{1,2}}(?:st|nd|rd|th)?[ \t]+(?:of[ \t]+)?{_MONTH}[ \t,]+\d{{4}}\b", 0),
    ("DATE", 0.8, rf"\b{_MONTH}[ \t]+\d{{4}}\b", 0),
    ("DATE", 0.75, rf"\b(?:on|since|from|until|by)[ \t]+({_MONTH}[ \t]+\d{{1,2}}(?:st|nd|rd|th)?)\b", 1),
    ("AGE", 0.9, r"\b(\d{1,3})(?:[ \t-]*(?:years?|yrs?|y)[ \t-]*(?:old|o\b)|[ \t-]*y/o\b|[ \t-]*yo\b)", 1),
    ("AGE", 0.85, r"\b(?:age|aged|Age)[ \t]*:?[ \t]*(\d{1,3})\b", 1),
    ("AGE", 0.8, r"\b(\d{1,3})[ \t]*(?:M|F)\b(?=[ \t]+(?:with|presents|here|who|pt|patient))", 1),
    ("ADDRESS", 0.85, r"\b\d{1,6}[ \t]+(?:[A-Z][A-Za-z.]*[ \t]+){1,4}"
                      r"(?:Street|St\.?|Avenue|Ave\.?|Road|Rd\.?|Boulevard|Blvd\.?|Lane|Ln\.?|Drive|Dr\.?|Court|Ct\.?"
                      r"|Way|Place|Pl\.?|Terrace|Circle|Cir\.?|Highway|Hwy\.?|Parkway|Pkwy\.?|Square|Sq\.?)"
                      r"(?:,?[ \t]+(?:Apt|Suite|Ste|Unit|#)\.?[ \t]*\w+)?"
                      r"(?:,?[ \t]*\n?[ \t]*[A-Z][A-Za-z]+(?:[ \t]+[A-Z][A-Za-z]+){0,2},?[ \t]+[A-Z]{2}[ \t]+\d{5}(?:-\d{4})?)?", 0),
    ("ADDRESS", 0.8, r"\b[A-Z][A-Za-z]+(?:[ \t]+[A-Z][A-Za-z]+){0,2},[ \t]+[A-Z]{2}[ \t]+\d{5}(?:-\d{4})?\b", 0),
    ("ADDRESS", 0.7, r"\b(?:P\.?O\.?[ \t]*Box)[ \t]+\d+", 0),
    ("NAME2", 0.85, rf"\b(?:Patient|Pt|Name|Re|RE|Patient Name|Pt Name|Attending|Physician|Provider|Doctor|Referring"
                   rf"(?: Physician| Provider| Doctor)?|PCP|Signed(?: by)?|Dictated by|Electronically signed by"
                   rf"|Emergency Contact|Next of Kin|Guarantor|Subscriber|Insured|cc)[ \t]*:[ \t]*({_NAME_OR_LAST_FIRST})", 1),
    ("NAME", 0.85, rf"\b(?:Dr|Mr|Mrs|Ms|Miss|Mx|Prof)\.?[ \t]+({_NAME})", 1),
    ("NAME", 0.8, rf"\bDear[ \t]+(?:Dr\.?|Mr\.?|Mrs\.?|Ms\.?|Miss)?[ \t]*({_NAME})", 1),
    ("NAME", 0.8, rf"^[ \t]*({_NAME}),[ \t]*(?:MD|M\.D\.|DO|D\.O\.|RN|NP|PA-C|PA|PhD|FACP|MBBS)\b", 1),
    ("PROFESSION", 0.7, rf"\b(?:works as an?|worked as an?|employed as an?|occupation[ \t]*:|profession[ \t]*:|job[ \t]*:"
                        rf"|(?:she|he|patient|pt) is an?|retired)[ \t]+(?:retired[ \t]+)?({_PROFESSIONS})\b", 1),
]
_COMPILED = [(t, s, re.compile(p, re.M), g) for t, s, p, g in _RULES]

# Words a cue may be followed by that are never a name ("Patient: Denies ...", "Dr. Visit").
_NOT_NAMES = frozenset("""
denies denied reports reported presents presented complains states stated is was has had with the a an
and or of in on at to for no not none unknown visit office note notes signature date follow patient
attending physician doctor provider nurse resident fellow surgeon team service clinic department primary care
""".split())
# Section words that start with a capital and would otherwise be swallowed into a name.
_NAME_STOP = re.compile(r"[ \t]+(?:MD|M\.D\.|DO|RN|NP|Date|DOB|MRN|Age|Sex|Phone|Tel|Fax|Re|Dear|Patient)\b.*$", re.S)


def find_phi(text: str) -> list[Found]:
    """PHI spans of ``text``, non-overlapping, earliest and then longest first."""
    found: list[Found] = []
    for typ, score, pattern, group in _COMPILED:
        for m in pattern.finditer(text):
            b, e = m.span(group)
            if b < 0 or e <= b:
                continue
            if typ in ("NAME", "NAME2"):
                b, e = _trim_name(text, b, e)
                if e <= b or (typ == "NAME2" and len(text[b:e].replace(",", " ").split()) < 2):
                    continue  # after "Patient:" one capitalised word is more often "Alert" than a name
                typ = "NAME"
            if typ == "PROFESSION" and text[b:e].lower() in _NOT_NAMES:
                continue
            found.append(Found(b, e, typ, score))
    return non_overlapping(found)


def _trim_name(text: str, b: int, e: int) -> tuple[int, int]:
    """Cut a name at a following label ("Jane Roe DOB") and refuse common words ("Patient: Denies")."""
    value = text[b:e]
    cut = _NAME_STOP.search(value)
    if cut is not None:
        value = value[:cut.start()]
    words = value.split()
    while words and words[-1].lower().strip(".,") in _NOT_NAMES:
        words.pop()
    if not words or words[0].lower().strip(".,") in _NOT_NAMES:
        return b, b
    value = " ".join(words)
    end = text.find(words[-1], b) + len(words[-1])
    return b, end if text[b:end].split() == value.split() else e


def non_overlapping(found: list[Found]) -> list[Found]:
    """Keep the earliest span, the longest at one start, then the higher score; drop what overlaps."""
    out: list[Found] = []
    for f in sorted(found, key=lambda f: (f.begin, -(f.end - f.begin), -f.score)):
        if out and f.begin < out[-1].end:
            continue
        out.append(f)
    return out
