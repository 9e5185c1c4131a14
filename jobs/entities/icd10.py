"""ICD-10-CM codes for conditions, locally, in InferICD10CM's response shape.

Why this way: the code set comes from the ``simple-icd-10-cm`` package (the CMS ICD-10-CM tabular
list, MIT licence), installed with medintake, so nothing is downloaded at run time. A condition's
words are matched against every billable (leaf) code's description and its inclusion terms
("hypertension (arterial) (benign) (essential) ..." under I10; "diabetes NOS" under E11, given to
E11.9, the unspecified child of the category that lists it):

- words in parentheses are ICD-10-CM's non-essential modifiers: they may match, they are not needed;
- "unspecified", "without complications", "NOS" say "nothing more is known", so a mention with
  nothing more ("type 2 diabetes mellitus") is best coded by the code that says so (E11.9);
- each word weighs its inverse document frequency over the descriptions, so "diabetes" counts
  more than "disease"; score = (share of the mention's weight found) x sqrt(share of the code's
  required weight found), times 0.9 for "Other ..." residual codes and 0.85 for pregnancy,
  perinatal and congenital codes unless the mention says so; at most five concepts per condition
  scoring at least 0.6, best first, as Comprehend returns.

The index is built once per process on first use (about three seconds with the package's own
load), or read from the cache folder (setting ``cache_dir``) where an earlier process left it (a
fraction of a second), and never on the dispatcher's path.
"""
from __future__ import annotations

import contextlib
import gc
import hashlib
import logging
import marshal
import math
import os
import re
from collections import defaultdict
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

log = logging.getLogger(__name__)

MODEL_VERSION = "medintake-icd10cm-1.0"
MAX_CONCEPTS = 5
MIN_SCORE = 0.6  # below it the best code was mostly wrong on the clinical notes (bench README)
_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset("of the and or in to by a an as at on for due from other its".split())
_NEUTRAL = frozenset("unspecified without complication complications nos not otherwise elsewhere classified "
                     "site specified organism female male".split())
_ROMAN = {"i": "1", "ii": "2", "iii": "3", "iv": "4"}
# Clinical shorthand -> ICD-10-CM wording (whole mention, lower-cased).
_EXPAND = {
    "htn": "hypertension", "high blood pressure": "hypertension", "dm": "type 2 diabetes mellitus",
    "t2dm": "type 2 diabetes mellitus", "dm2": "type 2 diabetes mellitus", "dm ii": "type 2 diabetes mellitus",
    "niddm": "type 2 diabetes mellitus", "t1dm": "type 1 diabetes mellitus", "dm1": "type 1 diabetes mellitus",
    "iddm": "type 1 diabetes mellitus",
    # the ICD-10-CM alphabetic index codes diabetes of no stated type as type 2 (E11.-)
    "diabetes": "type 2 diabetes mellitus", "diabetes mellitus": "type 2 diabetes mellitus",
    "esrd": "end stage renal disease", "icterus": "unspecified jaundice",
    "swelling": "localized swelling, mass and lump, unspecified", "edema": "edema, unspecified",
    "deep vein thrombosis": "acute embolism and thrombosis of unspecified deep veins of unspecified lower extremity",
    "coronary arteriosclerosis": "atherosclerotic heart disease of native coronary artery",
    "aortic stenosis": "nonrheumatic aortic valve stenosis", "aortic valve stenosis": "nonrheumatic aortic valve stenosis", "copd": "chronic obstructive pulmonary disease", "chf": "heart failure",
    "congestive heart failure": "heart failure", "cad": "atherosclerotic heart disease of native coronary artery",
    "coronary artery disease": "atherosclerotic heart disease of native coronary artery",
    "mi": "myocardial infarction", "heart attack": "myocardial infarction", "afib": "atrial fibrillation",
    "a fib": "atrial fibrillation", "af": "atrial fibrillation", "ckd": "chronic kidney disease",
    "uti": "urinary tract infection", "gerd": "gastro-esophageal reflux disease",
    "acid reflux": "gastro-esophageal reflux disease", "cva": "cerebral infarction", "stroke": "cerebral infarction",
    "dvt": "deep vein thrombosis", "pe": "pulmonary embolism", "osa": "obstructive sleep apnea",
    "bph": "benign prostatic hyperplasia", "high cholesterol": "hypercholesterolemia", "sob": "shortness of breath",
    "aki": "acute kidney failure", "acute renal failure": "acute kidney failure", "arf": "acute kidney failure",
    "ra": "rheumatoid arthritis", "oa": "osteoarthritis", "ibs": "irritable bowel syndrome", "hld": "hyperlipidemia",
    "tia": "transient cerebral ischemic attack", "pna": "pneumonia", "hypothyroid": "hypothyroidism",
}
# Spelling variants: British -> American as in the code set, and adjectives -> nouns used there.
_VARIANTS = {"haemorrhage": "hemorrhage", "anaemia": "anemia", "oedema": "edema", "oesophageal": "esophageal",
             "oesophagitis": "esophagitis", "diarrhoea": "diarrhea", "ischaemic": "ischemic",
             "haematuria": "hematuria", "leukaemia": "leukemia", "paediatric": "pediatric", "diabetic": "diabetes",
             "hypertensive": "hypertensive", "renal": "kidney", "oesophagus": "esophagus", "gastroesophageal":
             "gastro esophageal", "faecal": "fecal", "cancer": "malignant neoplasm",
             "carcinoma": "malignant neoplasm", "tumor": "neoplasm", "tumour": "neoplasm", "dm": "diabetes mellitus"}
# Chapters O (pregnancy), P (perinatal) and Q (congenital) fit only when the mention says so.
_SPECIAL_CHAPTERS = "OPQ"
_SPECIAL_WORDS = frozenset("pregnancy pregnant puerperium puerperal postpartum neonatal newborn congenital gestational "
                           "perinatal fetal maternal obstetric labor delivery childbirth infant".split())


class _Term(NamedTuple):
    """One wording of one code (an index read from the cache holds the same fields as plain tuples)."""

    code: str
    required: frozenset[str]
    optional: frozenset[str]
    neutral: bool  # the wording says "nothing more is known"
    other: bool  # "Other specified ...": a residual code, second to the plain one


def _tokens(text: str) -> list[str]:
    """Lower-cased words with spelling variants, "type II" -> "type 2" and plural "s" removed."""
    out: list[str] = []
    previous = ""
    for w in _WORD.findall(text.lower()):
        if previous == "type" and w in _ROMAN:
            out.append(_ROMAN[w])
        else:
            out.extend(_norm(w))
        previous = w
    return out


@lru_cache(maxsize=None)
def _norm(word: str) -> tuple[str, ...]:
    parts = _VARIANTS.get(word, word).split()
    return tuple(p[:-1] if len(p) > 4 and p.endswith("s") and not p.endswith(("ss", "us", "is")) else p
                 for p in parts)


def _term(code: str, wording: str) -> _Term:
    """Required and optional (parenthesised) words of one description or inclusion term."""
    optional = set(_tokens(" ".join(re.findall(r"\(([^)]*)\)", wording))))
    words = set(_tokens(re.sub(r"\([^)]*\)", " ", wording)))
    neutral = bool(words & _NEUTRAL)
    required = frozenset(words - _STOP - _NEUTRAL)
    return _Term(code, required, frozenset(optional - required - _STOP - _NEUTRAL), neutral, "other" in words)


class Index:
    """Every leaf code's wordings, an inverted index over their words, and word weights."""

    def __init__(self, items: list[tuple[str, str]], descriptions: dict[str, str]) -> None:
        self.descriptions = descriptions
        self.terms = [t for t in (_term(c, w) for c, w in items) if t.required]
        postings: dict[str, list[int]] = defaultdict(list)
        for i, t in enumerate(self.terms):
            for w in t.required | t.optional:
                postings[w].append(i)
        self.postings = dict(postings)
        n = len(self.terms)
        self.idf = {w: math.log(1 + n / len(p)) for w, p in self.postings.items()}
        self._memo: dict[frozenset[str], list[dict]] = {}
        self._required_weight: dict[int, float] = {}  # a term's weight, computed when first needed

    def weight(self, words: set[str] | frozenset[str]) -> float:
        return sum(self.idf.get(w, 0.0) for w in words)

    def lookup(self, mention: str) -> list[dict]:
        """ICD10CMConcepts for a condition mention: up to five {Code, Description, Score}, best first."""
        text = _EXPAND.get(mention.lower().strip(), mention)
        text = _EXPAND.get(text.lower(), text)  # "dvt" -> "deep vein thrombosis" -> the code's wording
        query = {w for w in _tokens(text) if w not in _STOP and w not in _NEUTRAL}
        # The ranking depends on the query's words alone, and a document names its conditions
        # again and again: each set of words is ranked once per process.
        key = frozenset(query)
        ranked = self._memo.get(key)
        if ranked is None:
            if len(self._memo) >= 20_000:  # a bound for long-lived workers
                self._memo.clear()
            ranked = self._memo[key] = self._rank(query)
        return [dict(c) for c in ranked]

    def _rank(self, query: set[str]) -> list[dict]:
        known = {w for w in query if w in self.postings}
        if not known:
            return []
        q_idf = {w: self.idf.get(w, 0.0) for w in query}
        q_weight = sum(q_idf.values())
        special = bool(query & _SPECIAL_WORDS)
        candidates: set[int] = set()
        for w in sorted(known, key=lambda w: len(self.postings[w])):
            if len(self.postings[w]) <= 4000 or not candidates:
                candidates.update(self.postings[w])
        best: dict[str, float] = {}
        weigh = q_idf.__getitem__  # every word weighed below is a query word
        for i in candidates:
            code, required, optional, neutral, other = self.terms[i]  # _Term's fields, in order
            found = query & (required | optional)
            cover_q = sum(map(weigh, found)) / q_weight
            r_weight = self._required_weight.get(i)
            if r_weight is None:
                r_weight = self._required_weight[i] = self.weight(required)
            cover_r = sum(map(weigh, query & required)) / (r_weight or 1.0)
            score = cover_q * math.sqrt(cover_r) * (0.9 if other else 1.0) + (0.01 if neutral else 0.0)
            if code[0] in _SPECIAL_CHAPTERS and not special:
                score *= 0.85
            if score > best.get(code, 0.0):
                best[code] = score
        # Only codes that can be returned are ranked: those below MIN_SCORE (less a rounding
        # margin, so that ties at the boundary order as before) never are, and sorting the
        # thousands of candidates of a common word was half of a lookup.
        pool = [kv for kv in best.items() if kv[1] >= MIN_SCORE - 1e-6]
        ranked = sorted(pool, key=lambda kv: (-round(kv[1], 6), kv[0]))  # ties: the lower code
        return [{"Code": c, "Description": self.descriptions[c], "Score": round(min(1.0, s), 4)}
                for c, s in ranked[:MAX_CONCEPTS] if s >= MIN_SCORE]


    def to_bytes(self) -> bytes:
        """The index as plain data (marshal: strings, frozensets, lists, floats), for the cache."""
        return marshal.dumps((CACHE_FORMAT, [tuple(t) for t in self.terms], self.descriptions, self.postings,
                              self.idf))

    @classmethod
    def from_bytes(cls, data: bytes) -> "Index":
        with gc_paused():
            fmt, terms, descriptions, postings, idf = marshal.loads(data)
            if fmt != CACHE_FORMAT:
                raise ValueError("other cache format")
            index = cls.__new__(cls)
            index.descriptions, index.postings, index.idf = descriptions, postings, idf
            index._memo, index._required_weight = {}, {}
            # Kept as the plain tuples marshal gives (lookup unpacks them in _Term's field order):
            # making 75,000 NamedTuples cost ~0.1 CPU s of every load.
            index.terms = terms
        return index


@contextlib.contextmanager
def gc_paused():
    """No cyclic garbage collection while a large index is built or read.

    Why: reading the cache makes ~1.3 million containers (tuples, frozensets, lists) that are all
    kept; the collector, triggered every 700 allocations, walked the growing heap again and again:
    0.3-0.5 CPU s of a 0.1 s load (measured 2026-11-28). None of it is garbage, so nothing is lost
    by collecting once afterwards instead (the next automatic collection does).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


CACHE_FORMAT = 2


def _cache_file(cache_dir: Path) -> Path:
    """One cache file per code-set version and per version of this module's wording rules."""
    from importlib.metadata import version

    rules = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]
    return cache_dir / f"icd10cm-{version('simple-icd-10-cm')}-{rules}.marshal"


@lru_cache(maxsize=4)
def default_index(cache_dir: Path | None = None) -> Index:
    """The index over simple-icd-10-cm's code set, chapters A00-T88 (conditions and injuries).

    With ``cache_dir`` (the entities job passes ``settings.effective_cache_dir``) the built index is kept as
    plain data and read back in a fraction of a second by the next worker process, instead of
    importing the package (1.7 s) and tokenising 75,000 wordings again; an unreadable or stale
    cache is rebuilt, an unwritable folder only costs the time.
    """
    if cache_dir is not None:
        path = _cache_file(cache_dir)
        try:
            return Index.from_bytes(path.read_bytes())
        except (OSError, ValueError, EOFError, TypeError):
            pass
    with gc_paused():  # the same many-containers build, from the package
        index = _build()
    if cache_dir is not None:
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}")
            tmp.write_bytes(index.to_bytes())
            os.replace(tmp, path)
        except OSError:
            log.info("icd10cm: index cache not written (folder not writable)")
    return index


def _build() -> Index:
    """Read the code set from the package and index it."""
    import warnings

    with warnings.catch_warnings():  # the package reads its data with importlib.resources' legacy calls
        warnings.simplefilter("ignore", DeprecationWarning)
        import simple_icd_10_cm as cm

    descriptions: dict[str, str] = {}
    items: list[tuple[str, str]] = []
    for code in cm.get_all_codes(True):
        if not code[:1].isalpha() or code[0] > "T" or "-" in code:
            continue  # chapters and blocks; V-Z are external causes and encounter reasons
        if cm.is_leaf(code):
            descriptions[code] = cm.get_description(code)
            items.append((code, descriptions[code]))
            items += [(code, w) for w in cm.get_inclusion_term(code) + cm.get_includes(code)]
        else:
            extra = cm.get_inclusion_term(code) + cm.get_includes(code)
            target = _unspecified_leaf(cm, code) if extra else None
            if target is not None:
                items += [(target, w) for w in extra]
    return Index(items, descriptions)


def _unspecified_leaf(cm: object, code: str) -> str | None:
    """The leaf under ``code`` that says "without complications" or is "..., unspecified" (E11 -> E11.9)."""
    found: list[tuple[int, int, str]] = []
    for child in cm.get_descendants(code):  # type: ignore[attr-defined]
        if cm.is_leaf(child):  # type: ignore[attr-defined]
            d = cm.get_description(child).lower()  # type: ignore[attr-defined]
            if "without complications" in d:
                found.append((0, len(d), child))
            elif d.endswith(", unspecified") or d.startswith("unspecified "):
                found.append((1 if " without " in d else 2, len(d), child))
    return min(found)[2] if found else None


# InferICD10CM's narrower enums (botocore's model): other traits and attributes are left out.
_TRAITS = frozenset({"NEGATION", "DIAGNOSIS", "SIGN", "SYMPTOM", "PERTAINS_TO_FAMILY", "HYPOTHETICAL",
                     "LOW_CONFIDENCE"})
_ATTR_CATEGORY = {"ACUITY": "DX_NAME", "DIRECTION": "DX_NAME", "SYSTEM_ORGAN_SITE": "DX_NAME", "QUALITY": "DX_NAME",
                  "QUANTITY": "DX_NAME", "TIME_TO_DX_NAME": "TIME_EXPRESSION", "TIME_EXPRESSION": "TIME_EXPRESSION"}


_RELATIONSHIP = {"SYSTEM_ORGAN_SITE": "SYSTEM_ORGAN_SITE", "QUALITY": "QUALITY"}


def infer_icd10cm(entities_response: dict, index: Index | None = None, cache_dir: Path | None = None) -> dict:
    """An InferICD10CM response for the MEDICAL_CONDITION entities of a DetectEntitiesV2 response.

    The index (~0.44 s to read) is loaded only when there is a condition to code: receipts, forms
    and letters without one never pay for it.
    """
    if not any(e.get("Category") == "MEDICAL_CONDITION" for e in entities_response.get("Entities", [])):
        return {"Entities": [], "ModelVersion": MODEL_VERSION}
    index = index or default_index(cache_dir)
    sides = {(e["BeginOffset"], e["EndOffset"]): " ".join(a["Text"] for a in e.get("Attributes", [])
                                                          if a["Type"] == "DIRECTION")
             for e in entities_response.get("Entities", []) if e.get("Category") == "ANATOMY"}
    out = []
    next_id = 0
    for e in entities_response.get("Entities", []):
        if e.get("Category") != "MEDICAL_CONDITION":
            continue
        acuity = " ".join(a["Text"] for a in e.get("Attributes", []) if a["Type"] == "ACUITY")
        site = " ".join(sides.get((a["BeginOffset"], a["EndOffset"]), "") + " " + a["Text"]
                        for a in e.get("Attributes", []) if a["Type"] == "SYSTEM_ORGAN_SITE").strip()
        concepts = index.lookup(f"{acuity} {e['Text']}".strip())
        if site:  # "Pain" in the "left knee": M25.562 when the site's code fits at least as well
            located = index.lookup(f"{acuity} {e['Text']} {site}".strip())
            if located and (not concepts or located[0]["Score"] >= concepts[0]["Score"]):
                concepts = located
        if acuity and not concepts:
            concepts = index.lookup(e["Text"])
        eid = next_id
        next_id += 1
        attrs = []
        for a in e.get("Attributes", []):
            if a["Type"] in _ATTR_CATEGORY:
                attrs.append({"Type": a["Type"], "Score": a["Score"], "RelationshipScore": a.get("RelationshipScore", 0.8),
                              "Id": next_id, "BeginOffset": a["BeginOffset"], "EndOffset": a["EndOffset"],
                              "Text": a["Text"], "Traits": [], "Category": _ATTR_CATEGORY[a["Type"]],
                              "RelationshipType": _RELATIONSHIP.get(a["Type"], "OVERLAP")})
                next_id += 1
        out.append({
            "Id": eid, "Text": e["Text"], "Category": "MEDICAL_CONDITION", "Type": "DX_NAME", "Score": e["Score"],
            "BeginOffset": e["BeginOffset"], "EndOffset": e["EndOffset"], "Attributes": attrs,
            "Traits": [t for t in e.get("Traits", []) if t["Name"] in _TRAITS], "ICD10CMConcepts": concepts,
        })
    return {"Entities": out, "ModelVersion": MODEL_VERSION}


def main(argv: list[str] | None = None) -> int:
    """``python -m jobs.entities.icd10 CACHE_DIR``: build the index cache (the worker image does,
    so that no job container pays the build)."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m jobs.entities.icd10 CACHE_DIR", file=sys.stderr)
        return 2
    cache = Path(args[0])
    default_index(cache)
    print(f"icd10cm index cached in {_cache_file(cache)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
