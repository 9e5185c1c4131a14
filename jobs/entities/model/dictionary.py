"""Dictionary features: which tokens sit inside a known drug name, condition name or test/procedure.

Why dictionaries in a trained model: the training abstracts hold a few thousand distinct names;
the dictionaries hold 100,000 drug names and 11,000 condition names, so a name never seen in
training still lights a feature the model learnt to trust. Sources (data/README.md): the
drug-named-entity-recognition and simple-icd-10-cm packages (frozen copies in data/), plus the
hand-written lists for what they lack (brand names common in notes, symptoms and signs, tests).
The NCBI-derived term list is NOT used here: it comes from the training split, where such a
feature would be right every time and the model would learn to trust it too much.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import logging
from functools import lru_cache
from pathlib import Path
from typing import Iterable

from jobs.entities.model.tokenize import TOKEN

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
#: The dictionaries as built from SOURCES, shipped compiled: tokenising 114,000 names took 0.65 s
#: of CPU in every entities job; reading this file takes about 0.1 s.
COMPILED = DATA_DIR / "dictionaries.json.gz"
SOURCES = ("drug_names.txt.gz", "drugs.tsv", "icd10cm_conditions.txt.gz", "conditions.tsv", "procedures.tsv")

log = logging.getLogger(__name__)
HYPHENS = frozenset("-\u2010\u2011\u2012\u2013")
_PREFIX, _FULL = 1, 2


def key(token: str) -> str:
    """Lower case, plural "s" stripped ("Tumors" -> "tumor"); the same for dictionary and text."""
    t = token.lower()
    if len(t) > 4 and t[-1] == "s" and not t.endswith(("ss", "us", "is")):
        return t[:-1]
    return t


def names_keys(name: str) -> list[str]:
    """The token keys of a name, hyphens left out ("Type-2 diabetes" -> ["type", "2", "diabete"])."""
    return [key(t) for t in TOKEN.findall(name) if t not in HYPHENS]


class Dictionary:
    """Names as token-key strings, with every proper prefix marked so a lookup knows when to stop."""

    def __init__(self, names: Iterable[str] = ()) -> None:
        self.entries: dict[str, int] = {}
        for name in names:
            self.add(name)

    @classmethod
    def from_entries(cls, entries: dict[str, int]) -> "Dictionary":
        out = cls()
        out.entries = entries
        return out

    def add(self, name: str) -> None:
        keys = names_keys(name)
        if not keys or (len(keys) == 1 and len(keys[0]) < 3):
            return
        for k in range(1, len(keys)):
            p = " ".join(keys[:k])
            self.entries[p] = self.entries.get(p, 0) | _PREFIX
        full = " ".join(keys)
        self.entries[full] = self.entries.get(full, 0) | _FULL

    def __contains__(self, name: str) -> bool:
        return bool(self.entries.get(" ".join(names_keys(name)), 0) & _FULL)

    def spans(self, keys: list[str]) -> list[tuple[int, int]]:
        """Greedy longest matches over token keys (hyphen tokens given as ""): [(first, last+1)]."""
        idx = [i for i, k in enumerate(keys) if k]
        out: list[tuple[int, int]] = []
        n = len(idx)
        a = 0
        get = self.entries.get
        while a < n:
            best = -1
            cur = keys[idx[a]]
            b = a
            while True:
                flag = get(cur, 0)
                if flag & _FULL:
                    best = b
                if not flag & _PREFIX or b + 1 >= n:
                    break
                b += 1
                cur = cur + " " + keys[idx[b]]
            if best >= 0:
                out.append((idx[a], idx[best] + 1))
                a = best + 1
            else:
                a += 1
        return out


def _lines(path: Path) -> Iterable[list[str]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            if line.strip() and not line.startswith("#"):
                yield line.rstrip("\n").split("\t")


@lru_cache(maxsize=1)
def dictionaries() -> dict[str, Dictionary]:
    """{"D": drugs, "C": conditions, "P": tests/procedures/anatomy}, loaded once per process.

    From the compiled file when it was made from the sources as they are now, else built.
    """
    compiled = _compiled()
    if compiled is not None:
        return {k: Dictionary.from_entries(compiled[k]) for k in ("D", "C", "P")}
    log.warning("entities: compiled dictionaries are stale or missing; building them (python -m %s)", __name__)
    return build_dictionaries()


def sources_digest() -> str:
    """What the compiled file was made from: the source lists and the key rules of this module."""
    h = hashlib.sha256(Path(__file__).read_bytes())
    for name in SOURCES:
        h.update(name.encode())
        h.update((DATA_DIR / name).read_bytes())
    return h.hexdigest()


@lru_cache(maxsize=1)
def _compiled() -> dict | None:
    try:
        data = json.loads(gzip.decompress(COMPILED.read_bytes()))
    except (OSError, ValueError, EOFError):
        return None
    return data if data.get("digest") == sources_digest() else None


def compile_dictionaries(path: Path = COMPILED) -> Path:
    """Write the built dictionaries and brand names as plain data, stamped with the sources' digest."""
    data = {k: d.entries for k, d in build_dictionaries().items()}
    data["brands"] = sorted(_build_brands())
    data["digest"] = sources_digest()
    raw = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
    path.write_bytes(gzip.compress(raw, 9, mtime=0))
    return path


def build_dictionaries() -> dict[str, Dictionary]:
    """The dictionaries from their source lists (what the compiled file holds)."""
    drugs = Dictionary(p[0] for p in _lines(DATA_DIR / "drug_names.txt.gz"))
    for p in _lines(DATA_DIR / "drugs.tsv"):
        drugs.add(p[0])
        for brand in (p[1].split("|") if len(p) > 1 and p[1] else ()):
            drugs.add(brand)
    conds = Dictionary(p[0] for p in _lines(DATA_DIR / "icd10cm_conditions.txt.gz"))
    for p in _lines(DATA_DIR / "conditions.tsv"):
        conds.add(p[0])
    procs = Dictionary(p[0] for p in _lines(DATA_DIR / "procedures.tsv"))
    return {"D": drugs, "C": conds, "P": procs}


def brand_names() -> frozenset[str]:
    """Lower-cased brand names (drug package flag and drugs.tsv), for the entity Type."""
    return _brands()


@lru_cache(maxsize=1)
def _brands() -> frozenset[str]:
    compiled = _compiled()
    if compiled is not None:
        return frozenset(compiled["brands"])
    return _build_brands()


def _build_brands() -> frozenset[str]:
    out = {p[0] for p in _lines(DATA_DIR / "drug_names.txt.gz") if len(p) > 1 and p[1] == "B"}
    for p in _lines(DATA_DIR / "drugs.tsv"):
        out.update(b.lower() for b in (p[1].split("|") if len(p) > 1 and p[1] else ()))
    return frozenset(out)


def load_terms(path: Path) -> dict[str, Dictionary]:
    """A model's training-mention dictionaries ("TC" chemicals, "TD" diseases) from ``name<TAB>type`` lines."""
    out = {"TC": Dictionary(), "TD": Dictionary()}
    if path.is_file():
        for p in _lines(path):
            out["TC" if p[1] == "Chemical" else "TD"].add(p[0])
    return out


def mention_terms(docs: Iterable[tuple[str, str, set[tuple[int, int, str]]]]) -> dict[str, str]:
    """Training mentions worth a dictionary entry: lower-cased name -> its most frequent type.

    Abbreviations (capitals) are left out: they are defined per abstract ("DM" is myotonic
    dystrophy in one, diabetes in another), and the abbreviation rule finds them anyway.
    """
    votes: dict[str, dict[str, int]] = {}
    for _, text, gold in docs:
        for b, e, kind in gold:
            s = text[b:e]
            if len(s) < 3 or sum(c.isupper() for c in s) >= 2 and len(s) <= 8:
                continue
            v = votes.setdefault(s.lower(), {})
            v[kind] = v.get(kind, 0) + 1
    return {name: max(v, key=v.get) for name, v in votes.items()}


if __name__ == "__main__":  # python -m jobs.entities.model.dictionary: recompile after editing a source
    print(f"wrote {compile_dictionaries()}")
