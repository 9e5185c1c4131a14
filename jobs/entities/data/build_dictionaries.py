"""Rebuild ``drug_names.txt.gz`` and ``icd10cm_conditions.txt.gz`` from two registry data packages.

Why frozen copies instead of importing the packages at run time: the sequence model
(``jobs/entities/model``) was trained with dictionary features computed from these exact lists, so
the lists must not change under it when a package is upgraded; and loading them from a small
gzipped text file is faster than unpickling the drug package's 100,000-entry dictionary with
its n-gram index. Rebuild (then retrain the model) with:

    .venv/bin/pip install "drug-named-entity-recognition>=2.0,<3" "simple-icd-10-cm>=1.5,<2"
    .venv/bin/python jobs/entities/data/build_dictionaries.py

Sources (both MIT licensed, see data/README.md):
* drug-named-entity-recognition (Fast Data Science): drug name variants (generic, brand, synonyms,
  from DrugBank/MeSH/NHS/Wikipedia), with an ``is_brand`` flag where the package has one.
* simple-icd-10-cm (S. Trevisani): the CMS ICD-10-CM tabular list. A description such as
  "Cicatricial entropion of right upper eyelid" is cut at its first qualifier (of, with, due to,
  comma...) into a name a text would use ("cicatricial entropion"); inclusion terms likewise.
  Chapters of injuries and external causes (S-Y) and factors (Z) are left out: they are not
  condition names.
"""
from __future__ import annotations

import bz2
import gzip
import pickle
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
DRUGS_OUT = HERE / "drug_names.txt.gz"
ICD_OUT = HERE / "icd10cm_conditions.txt.gz"

_CUT = re.compile(r",|;|:| \[| (?:with|without|of|due to|in|involving|affecting|following|complicating|"
                  r"associated with|and|or|not elsewhere|NOS|by|from|on|at|as|after|during|for)\b", re.I)
_PAREN = re.compile(r"\([^)]*\)")
_LEAD = re.compile(r"^(?:other specified|other and unspecified|other|unspecified|specified|personal history of)\s+",
                   re.I)
_GENERIC = {"disease", "diseases", "disorder", "disorders", "condition", "conditions", "abnormal", "other",
            "unspecified", "complication", "complications", "type", "stage", "injury", "effects", "sequelae",
            "findings", "symptoms", "signs", "history", "encounter"}


def drug_names() -> list[str]:
    """Lower-cased drug name variants of at most 4 words, ``name<TAB>B`` for brand names."""
    import drug_named_entity_recognition  # noqa: F401  (only to locate its data file)

    path = Path(drug_named_entity_recognition.__file__).parent / "drug_ner_dictionary.pkl.bz2"
    with bz2.open(path, "rb") as fh:
        data = pickle.load(fh)  # the package's own shipped file, trusted as the package is
    brand = data["drug_variant_to_variant_data"]
    out = []
    for name in data["drug_variant_to_canonical"]:
        name = " ".join(name.split())
        if len(name) < 3 or len(name.split()) > 4:
            continue
        out.append(name + ("\tB" if brand.get(name, {}).get("is_brand") else ""))
    return sorted(set(out))


def condition_name(text: str) -> str:
    """"Cicatricial entropion of right upper eyelid" -> "cicatricial entropion"."""
    t = _PAREN.sub(" ", text)
    t = _CUT.split(t, maxsplit=1)[0]
    t = _LEAD.sub("", " ".join(t.split())).strip(" -").lower()
    return t


def icd_conditions() -> list[str]:
    """Condition names from ICD-10-CM categories and subcategories: ``name<TAB>code``, first code wins."""
    import simple_icd_10_cm as icd

    names: dict[str, str] = {}
    for code in icd.get_all_codes(with_dots=True):
        if code[0] in "STUVWXYZ" or not icd.is_category_or_subcategory(code):
            continue
        for text in [icd.get_description(code)] + list(icd.get_inclusion_term(code)):
            name = condition_name(text)
            words = name.split()
            if not words or len(name) < 4 or len(words) > 5 or name in _GENERIC or words[-1] in {"of", "and"}:
                continue
            names.setdefault(name, code)
    return sorted(f"{n}\t{c}" for n, c in names.items())


def write(path: Path, header: str, lines: list[str]) -> None:
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=9) as fh:
        fh.write(header)
        fh.write("\n".join(lines) + "\n")


def main() -> int:
    import importlib.metadata as md

    drugs = drug_names()
    write(DRUGS_OUT, f"# drug-named-entity-recognition {md.version('drug-named-entity-recognition')} (MIT): "
                     "lower-cased name variants, <=4 words; <TAB>B = brand name\n", drugs)
    conds = icd_conditions()
    write(ICD_OUT, f"# simple-icd-10-cm {md.version('simple-icd-10-cm')} (MIT), CMS ICD-10-CM tabular list: "
                   "condition names cut from descriptions and inclusion terms (chapters A-R)<TAB>code\n", conds)
    print(f"{len(drugs)} drug names -> {DRUGS_OUT.name}; {len(conds)} condition names -> {ICD_OUT.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
