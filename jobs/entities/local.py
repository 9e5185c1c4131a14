"""Local medical entity extractor: a trained CRF + lexicons + rules, in DetectEntitiesV2 shape.

Why local: the embedded default must run with no network, no model download and no heavy import,
and some regions cannot send text to Comprehend Medical. Medications and conditions come from a
trained sequence model shipped in the package (``jobs.entities.model``: CRF with word, affix and
dictionary features, abbreviations propagated), because hand-typed lists cannot cover their
vocabulary; the lexicons (a token trie, longest match) still give tests, procedures and anatomy,
and medications or conditions where the model is silent (brand names and typos in clinical
notes). Then rule-based medication attributes (jobs.entities.rules) and NegEx-style context traits.

Offsets are Python ``str`` indices (code points), which is also what Comprehend Medical returns.
"""
from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterable

from jobs.entities import rules

MODEL_VERSION = "medintake-local-2.0"
DATA_DIR = Path(__file__).resolve().parent / "data"

# Letters, digit runs, or one punctuation character: "G6PD" -> G 6 PD, "h/o" -> h / o.
_TOKEN = re.compile(r"[^\W\d_]+|\d+|[^\w\s]")
_SKIP = frozenset("-\u2010\u2011\u2012\u2013")  # hyphens are ignored: "type-2" == "type 2"
_WORDCHAR = re.compile(r"\w")

# Score given by source: curated lists are trusted most, suffix guesses least.
SCORE_CURATED = 0.9
SCORE_DERIVED = 0.75
SCORE_RULE = 0.6
SCORE_FUZZY = 0.5
FUZZY_MIN = 7  # shorter names have too many real words one letter away

# USAN-style stems that mark a drug name; checked on whole lower-cased tokens of >= 7 letters.
_DRUG_SUFFIXES = (
    "pril", "sartan", "olol", "alol", "ilol", "statin", "conazole", "prazole", "dazole", "floxacin",
    "oxacin", "mycin", "micin", "cillin", "cycline", "dipine", "tidine", "vudine", "navir", "previr",
    "buvir", "clovir", "umab", "ximab", "zumab", "tinib", "parin", "xaban", "gatran", "oxetine", "triptan",
    "afil", "gliptin", "gliflozin", "glitazone", "lukast", "semide", "thiazide", "tiazem", "azepam",
    "azolam", "barbital", "profen", "fenac", "coxib", "caine", "dronate", "setron", "olone", "asone",
    "isone", "ortisone", "buterol", "meterol", "moterol", "tropium", "curonium", "platin", "rubicin",
    "taxel", "azepine", "peridol", "iapine", "zapine", "ridone", "sidone", "pramine", "triptyline",
    "lutamide", "phylline", "thromycin", "penem", "bactam", "fungin", "pamil", "trexate",
)
_DRUG_NOT = frozenset({"examine", "cholesterol", "profile", "reason", "season", "poison", "caffeine"})
# Disease-word endings, checked on whole lower-cased tokens of >= 6 letters.
_DISEASE_SUFFIXES = (
    "itis", "osis", "emia", "aemia", "oma", "omas", "pathy", "pathies", "algia", "plegia", "paresis",
    "trophy", "plasia", "ectasia", "megaly", "penia", "uria", "rrhea", "rrhoea", "rrhage", "toxicity",
    "cardia", "lepsy", "iasis", "ismus", "kinesia", "kinesias", "algesia", "thermia", "cephaly", "tonia",
    "taxia", "phasia", "myolysis", "stasis", "mnesia", "rhythmia", "rhythmias", "spasm", "esthesia", "phagia",
    "sthenia", "thisia",
)
_DISEASE_NOT = frozenset({
    "diagnosis", "prognosis", "apoptosis", "mitosis", "meiosis", "osmosis", "symbiosis", "anastomosis",
    "phagocytosis", "endocytosis", "exocytosis", "stoma", "stroma", "diploma", "aroma", "chroma",
    "empathy", "sympathy", "telepathy", "homeopathy", "naturopathy", "trophy", "genoma", "hypothesis",
    "glycemia", "normoglycemia", "normocalcemia", "normokalemia", "kalemia", "natremia", "diuresis", "curia",
    "cytotoxicity", "genotoxicity", "homeostasis", "hemostasis", "haemostasis", "anesthesia", "anaesthesia",
    "hypothermia",  # often induced on purpose in surgery
})


# Words that, right before a condition, belong to its name ("pulmonary edema", "aplastic anemia",
# "bladder cancer"). Acuity words (acute, chronic) are left out: they become ACUITY attributes.
_DX_MODIFIERS = frozenset("""
renal hepatic cardiac myocardial pulmonary cerebral gastric intestinal thrombotic interstitial orthostatic
hemorrhagic haemorrhagic aplastic hemolytic haemolytic neuropathic autonomic peripheral coronary ventricular
atrial supraventricular vascular cerebrovascular diabetic toxic cholestatic allergic bacterial viral fungal
ischemic ischaemic idiopathic congenital hereditary familial malignant metastatic respiratory urinary spinal
subarachnoid intracranial intracerebral subdural epidural retinal ocular optic cutaneous skeletal muscular
tubular glomerular papillary hepatocellular colorectal pancreatic ovarian prostatic lymphoblastic myeloid
lymphocytic myelogenous primary secondary essential gestational portal intraocular systemic systolic
diastolic sensorineural major postoperative drug-induced neonatal infantile juvenile febrile focal
bladder breast lung colon prostate skin liver kidney bone brain pituitary thyroid cervical endometrial
uterine testicular esophageal oesophageal rectal oral nasal venous arterial
""".split())


@dataclass(frozen=True)
class Entry:
    """What a lexicon term means. ``exact`` terms (abbreviations) must match letter case too."""

    category: str
    type: str
    trait: str = ""  # DIAGNOSIS | SYMPTOM | SIGN for conditions
    score: float = SCORE_CURATED
    exact: str = ""  # letters of the term when it is matched case-sensitively
    priority: int = 0  # higher wins when two sources define the same key


@dataclass
class Span:
    """A detected entity before it is turned into a DetectEntitiesV2 dict."""

    begin: int
    end: int
    entry: Entry
    traits: dict[str, float] = field(default_factory=dict)
    attributes: list[rules.Attr] = field(default_factory=list)


def norm(token: str) -> str:
    """Lower-case and strip a plural "s" so "tumors" matches "tumor"; applied to terms and text alike."""
    t = token.lower()
    if len(t) > 4 and t.endswith("s") and not t.endswith(("ss", "us", "is")):
        return t[:-1]
    return t


def _keys(term: str) -> tuple[str, ...]:
    return tuple(norm(t) for t in _TOKEN.findall(term) if t not in _SKIP)


def _letters(s: str) -> str:
    return "".join(c for c in s if c.isalnum())


class Lexicon:
    """A token trie: ``node[token] -> child``; entries sit under the key ``""`` (never a token)."""

    def __init__(self) -> None:
        self.root: dict = {}
        self.size = 0
        self.fuzzy: dict[str, set[str]] = {}  # one-letter deletions of long drug names -> names
        self.fuzzy_entry: dict[str, Entry] = {}

    def add(self, term: str, entry: Entry) -> None:
        keys = _keys(term)
        if not keys or (len(keys) == 1 and len(keys[0]) < 2):
            return
        if term.isupper():  # abbreviations: "PAD" is a disease, "pad" is not
            entry = Entry(**{**entry.__dict__, "exact": _letters(term)})
        node = self.root
        for k in keys:
            node = node.setdefault(k, {})
        entries: list[Entry] = node.setdefault("", [])
        for i, old in enumerate(entries):
            if old.exact == entry.exact:
                if entry.priority > old.priority:
                    entries[i] = entry
                return
        entries.append(entry)
        entries.sort(key=lambda e: (not e.exact, -e.priority))  # case-sensitive readings first
        self.size += 1
        if entry.category == "MEDICATION" and len(keys) == 1 and len(keys[0]) >= FUZZY_MIN and keys[0].isalpha():
            self.fuzzy_entry.setdefault(keys[0], entry)
            for d in _deletes(keys[0]):
                self.fuzzy.setdefault(d, set()).add(keys[0])

    def fuzzy_drug(self, key: str) -> Entry | None:
        """A drug name one typo away ("porgraf" -> Prograf): OCR and typing errors are common in notes."""
        if len(key) < FUZZY_MIN or not key.isalpha() or not self.fuzzy:
            return None
        candidates: set[str] = set()
        for d in _deletes(key):
            candidates |= self.fuzzy.get(d, set())
        for c in sorted(candidates):
            if _one_edit(key, c):
                return Entry(**{**self.fuzzy_entry[c].__dict__, "score": SCORE_FUZZY, "exact": ""})
        return None

    def add_many(self, terms: Iterable[tuple[str, Entry]]) -> "Lexicon":
        for term, entry in terms:
            self.add(term, entry)
        return self


def _deletes(word: str) -> set[str]:
    return {word} | {word[:i] + word[i + 1:] for i in range(len(word))}


def _one_edit(a: str, b: str) -> bool:
    """Exactly one substitution, insertion, deletion or adjacent transposition apart."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        return len(diff) == 1 or (len(diff) == 2 and diff[1] == diff[0] + 1
                                  and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]])
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    return any(long_[:i] + long_[i + 1:] == short for i in range(len(long_)))


def _data_lines(name: str) -> Iterable[list[str]]:
    with (DATA_DIR / name).open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip() and not line.startswith("#"):
                yield line.rstrip("\n").split("\t")


@lru_cache(maxsize=1)
def default_lexicon() -> Lexicon:
    """The shipped lexicons (see jobs/entities/data/README.md), loaded once per process."""
    return load_shipped(Lexicon())


def load_shipped(lex: Lexicon) -> Lexicon:
    """Add the shipped lexicons to ``lex`` (the benchmark extends them with other terms)."""
    for parts in _data_lines("drugs.tsv"):
        lex.add(parts[0], Entry("MEDICATION", "GENERIC_NAME", priority=3))
        for brand in (parts[1].split("|") if len(parts) > 1 and parts[1] else ()):
            lex.add(brand, Entry("MEDICATION", "BRAND_NAME", priority=3))
    for parts in _data_lines("conditions.tsv"):
        lex.add(parts[0], Entry("MEDICAL_CONDITION", "DX_NAME", parts[1] if len(parts) > 1 else "", priority=2))
    for parts in _data_lines("procedures.tsv"):
        lex.add(parts[0], Entry(parts[1], parts[2], priority=2))
    for parts in _data_lines("ncbi_disease_terms.txt"):
        lex.add(parts[0], Entry("MEDICAL_CONDITION", "DX_NAME", "DIAGNOSIS", SCORE_DERIVED, priority=1))
    return lex


_RULE_DRUG = Entry("MEDICATION", "GENERIC_NAME", score=SCORE_RULE)
_RULE_DX = Entry("MEDICAL_CONDITION", "DX_NAME", "DIAGNOSIS", score=SCORE_RULE)


def _rule_entry(token: str) -> Entry | None:
    t = token.lower()
    if not t.isalpha():
        return None
    if len(t) >= 7 and t.endswith(_DRUG_SUFFIXES) and t not in _DRUG_NOT:
        return _RULE_DRUG
    if len(t) >= 6 and t.endswith(_DISEASE_SUFFIXES) and t not in _DISEASE_NOT:
        return _RULE_DX
    return None


_DOSE_NEXT = re.compile(r"\s{0,3}[:(]?\s{0,3}(?:\d|(?:po|by mouth|bid|tid|qid|qd|daily|prn)\b)", re.I)


def _gap_ok(text: str, a: int, b: int) -> bool:
    """Tokens of one term may be separated by spaces, hyphens or one line break, never a page."""
    gap = text[a:b]
    return "\f" not in gap and gap.count("\n") <= 1


def match(text: str, lexicon: Lexicon, rules: bool = True,
          suffixes: Iterable[str] = ("MEDICATION", "MEDICAL_CONDITION")) -> list[Span]:
    """Greedy left-to-right longest match of lexicon terms, then suffix rules on unmatched tokens.

    ``rules``: suffix rules and typo-tolerant drug names; ``suffixes``: the categories whose suffix
    rules apply (none where the model covers the category: it learns stems and endings from affixes).
    """
    suffixes = frozenset(suffixes)
    toks = [(m.start(), m.end(), m.group()) for m in _TOKEN.finditer(text) if m.group() not in _SKIP]
    keys = [norm(t[2]) for t in toks]
    n = len(toks)
    spans: list[Span] = []
    i = 0
    while i < n:
        start = toks[i][0]
        if start > 0 and text[start - 1].isalnum():
            i += 1
            continue  # inside a word such as "G6PD": never start a match there
        node = lexicon.root
        best: tuple[int, Entry] | None = None
        j = i
        while j < n:
            if j > i and not _gap_ok(text, toks[j - 1][1], toks[j][0]):
                break
            node = node.get(keys[j])
            if node is None:
                break
            entries = node.get("")
            end = toks[j][1]
            if entries and not (end < len(text) and text[end].isalnum() and text[end - 1].isalnum()):
                for e in entries:
                    if not e.exact or _letters(text[start:end]) == e.exact:
                        best = (j, e)
                        break
            j += 1
        if best is not None:
            spans.append(Span(start, toks[best[0]][1], best[1]))
            i = best[0] + 1
            continue
        tok = toks[i][2]
        entry = _rule_entry(tok) if rules else None
        if entry is not None and entry.category not in suffixes:
            entry = None
        if rules and entry is None and _DOSE_NEXT.match(text, toks[i][1]):
            entry = lexicon.fuzzy_drug(keys[i])  # a typo'd drug name only where a dose or sig follows
        end = toks[i][1]
        if entry is not None and not (end < len(text) and text[end].isalnum()):
            spans.append(Span(start, end, entry))
        i += 1
    return spans


_PREV_WORD = re.compile(r"([A-Za-z][\w-]*)[ \t-]$")


def extend_conditions(text: str, spans: list[Span]) -> None:
    """Grow condition spans leftwards over up to three modifier words ("acute [renal failure]" stays)."""
    floor = 0
    for s in spans:
        if s.entry.category == "MEDICAL_CONDITION":
            for _ in range(3):
                m = _PREV_WORD.search(text, max(floor, s.begin - 40), s.begin)
                if m is None or m.group(1).lower() not in _DX_MODIFIERS:
                    break
                s.begin = m.start(1)
        floor = s.end


_SALT = re.compile(r"[ \t]+(sodium|potassium|calcium|magnesium|hydrochloride|hcl|sulfate|sulphate|nitrate|tartrate"
                   r"|succinate|citrate|acetate|phosphate|mesylate|besylate|maleate|fumarate|bromide|chloride"
                   r"|mofetil|hyclate|monohydrate|dihydrate)\b", re.I)


def extend_drugs(text: str, spans: list[Span]) -> list[Span]:
    """"Heparin Sodium", "Miconazole Nitrate": the salt is part of the drug's name, not a second drug."""
    out: list[Span] = []
    for s in spans:
        if out and out[-1].entry.category == "MEDICATION" and s.begin < out[-1].end:
            continue  # swallowed by the salt of the previous drug
        if s.entry.category == "MEDICATION":
            m = _SALT.match(text, s.end)
            if m is not None:
                s.end = m.end()
        out.append(s)
    return out


_ABBREV = re.compile(r"\s?\(\s?([A-Za-z][\w\-]{0,9})\s?\)")


def propagate_abbreviations(text: str, spans: list[Span]) -> list[Span]:
    """"Tourette syndrome (TS)": tag "TS" here and everywhere else in this text, case-sensitively."""
    defined: dict[str, Entry] = {}
    for s in spans:
        m = _ABBREV.match(text, s.end)
        if m and any(c.isupper() for c in m.group(1)) and len(m.group(1)) >= 2:
            sf = m.group(1)
            initials = {w[0].lower() for w in _TOKEN.findall(text[s.begin:s.end]) if w[0].isalnum()}
            if sf[0].lower() in initials:  # Schwartz-Hearst: the short form starts like a long-form word
                defined.setdefault(sf, Entry(**{**s.entry.__dict__, "score": round(s.entry.score - 0.05, 2)}))
    if not defined:
        return spans
    taken = sorted((s.begin, s.end) for s in spans)
    pattern = re.compile(r"(?<![\w-])(" + "|".join(re.escape(k) for k in sorted(defined, key=len, reverse=True))
                         + r")(?![\w-])")
    extra: list[Span] = []
    starts = [b for b, _ in taken]
    for m in pattern.finditer(text):
        k = bisect.bisect_right(starts, m.start()) - 1
        if k >= 0 and taken[k][1] > m.start():
            continue  # inside an existing entity
        if k + 1 < len(taken) and taken[k + 1][0] < m.end():
            continue
        extra.append(Span(m.start(), m.end(), defined[m.group(1)]))
    return sorted(spans + extra, key=lambda s: s.begin)


_ACUITY_LEAD = re.compile(r"(?:acute on chronic|acute|chronic|subacute)\s+", re.I)


@lru_cache(maxsize=1)
def _condition_traits() -> dict[str, str]:
    """Lower-cased condition term -> DIAGNOSIS | SYMPTOM | SIGN, from conditions.tsv."""
    return {p[0].lower(): p[1] for p in _data_lines("conditions.tsv") if len(p) > 1 and p[1]}


def model_spans(text: str) -> list[Span]:
    """Medications and conditions found by the shipped sequence model, as spans with their entries."""
    from jobs.entities.model.dictionary import brand_names
    from jobs.entities.model.predict import LABELS, predict

    brands = brand_names()
    traits = _condition_traits()
    out: list[Span] = []
    for m in predict(text):
        score = round(max(SCORE_RULE, min(0.99, m.score)), 4)
        words = text[m.begin:m.end]
        if LABELS[m.label] == "MEDICATION":
            kind = "BRAND_NAME" if words.lower() in brands else "GENERIC_NAME"
            out.append(Span(m.begin, m.end, Entry("MEDICATION", kind, score=score)))
        else:
            begin = m.begin
            acuity = _ACUITY_LEAD.match(words)
            if acuity is not None and acuity.end() < len(words):
                begin += acuity.end()  # "acute renal failure": ACUITY attribute + "renal failure", as Comprehend
                words = text[begin:m.end]
            trait = traits.get(words.lower(), "DIAGNOSIS")
            out.append(Span(begin, m.end, Entry("MEDICAL_CONDITION", "DX_NAME", trait, score=score)))
    return out


@lru_cache(maxsize=1)
def model_categories() -> frozenset[str]:
    """The categories the shipped model tags (a build without BC5CDR knows no chemicals)."""
    from jobs.entities.model.predict import LABELS, tagger

    return frozenset(LABELS[t[2:]] for t in tagger().labels() if t[2:] in LABELS)


def merge(model: list[Span], lexical: list[Span]) -> list[Span]:
    """Model spans, plus lexicon spans that overlap none of them (tests, anatomy, names the model missed)."""
    taken = sorted((s.begin, s.end) for s in model)
    starts = [b for b, _ in taken]
    out = list(model)
    for s in lexical:
        k = bisect.bisect_right(starts, s.begin) - 1
        if k >= 0 and taken[k][1] > s.begin:
            continue
        if k + 1 < len(taken) and taken[k + 1][0] < s.end:
            continue
        out.append(s)
    return sorted(out, key=lambda s: (s.begin, s.end))


def find_spans(text: str, lexicon: Lexicon | None = None, use_model: bool = True) -> list[Span]:
    """Every entity span of ``text``: the model's medications and conditions, then the lexicons'.

    Lexicon conditions are grown over modifier words and drugs over their salt before the merge
    (the model learnt its own boundaries from the training data, so its spans are left as they are).
    """
    covered = model_categories() if use_model else frozenset()
    lexical = match(text, lexicon or default_lexicon(),
                    suffixes=[c for c in ("MEDICATION", "MEDICAL_CONDITION") if c not in covered])
    extend_conditions(text, lexical)
    lexical = extend_drugs(text, lexical)
    spans = merge(model_spans(text), lexical) if use_model else lexical
    return propagate_abbreviations(text, spans)


def extract(text: str, lexicon: Lexicon | None = None) -> dict:
    """Run the local extractor on ``text``; returns a DetectEntitiesV2-shaped dict."""
    if not text or not text.strip():
        return {"Entities": [], "UnmappedAttributes": [], "ModelVersion": MODEL_VERSION}
    spans = find_spans(text, lexicon)
    ctx = rules.Context(text)
    meds = [s for s in spans if s.entry.category == "MEDICATION"]
    aliases = {k for k, s in enumerate(meds) if k and _is_alias(text, meds[k - 1], s)}
    for k, s in enumerate(meds):
        if k in aliases:
            continue  # "Clonidine 0.2 mg (Catapres) 1 tablet": the attributes belong to Clonidine
        nxt = next((m for j, m in enumerate(meds[k + 1:], k + 1) if j not in aliases), None)
        s.attributes = rules.medication_attributes(text, s.end, nxt.begin if nxt else len(text), ctx)
    for s in spans:
        if s.entry.category == "MEDICAL_CONDITION":
            if s.entry.trait:
                s.traits[s.entry.trait] = 0.8
            acuity = rules.acuity_attribute(text, s.begin)
            if acuity is not None:
                s.attributes.append(acuity)
        if s.entry.category != "ANATOMY":
            s.traits.update(ctx.traits(s.begin, s.end, s.entry.category))
        if s.entry.score == SCORE_FUZZY:
            s.traits["LOW_CONFIDENCE"] = 0.5
    return to_response(text, spans)


def _is_alias(text: str, prev: Span, cur: Span) -> bool:
    """Is ``cur`` a parenthesised other name of ``prev`` ("Valtrex (Valacyclovir)")?"""
    before = text[max(prev.end, cur.begin - 30):cur.begin]
    return before.rstrip().endswith("(") and text[cur.end:cur.end + 2].lstrip().startswith(")") \
        and cur.begin - prev.end <= 30


def to_response(text: str, spans: list[Span]) -> dict:
    """Number entities and their attributes from one counter, as Comprehend Medical does."""
    next_id = 0
    entities = []
    for s in sorted(spans, key=lambda s: (s.begin, s.end)):
        eid = next_id
        next_id += 1
        attrs = []
        for a in sorted(s.attributes, key=lambda a: a.begin):
            attrs.append({
                "Type": a.type, "Score": a.score, "RelationshipScore": a.relationship_score,
                "RelationshipType": a.relationship, "Id": next_id, "BeginOffset": a.begin, "EndOffset": a.end,
                "Text": text[a.begin:a.end], "Category": s.entry.category, "Traits": [],
            })
            next_id += 1
        entities.append({
            "Id": eid, "BeginOffset": s.begin, "EndOffset": s.end, "Score": s.entry.score,
            "Text": text[s.begin:s.end], "Category": s.entry.category, "Type": s.entry.type,
            "Traits": [{"Name": n, "Score": sc} for n, sc in s.traits.items()],
            "Attributes": attrs,
        })
    return {"Entities": entities, "UnmappedAttributes": [], "ModelVersion": MODEL_VERSION}
