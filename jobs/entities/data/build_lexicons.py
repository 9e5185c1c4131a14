"""Rebuild ``ncbi_disease_terms.txt`` from the NCBI Disease corpus TRAINING split.

Why a script: the derived list must be reproducible and provably built from the training split
only (the benchmark evaluates on the development split). Run from the repo root:

    python jobs/entities/data/build_lexicons.py [../shared/corpus/ner/ncbi-disease/NCBItrainset_corpus.txt]

Filtering keeps the list useful on clinical text: abbreviations are dropped (they are defined per
abstract, "DM" means myotonic dystrophy there and diabetes in a clinic note), as are very short or
bracketed mentions.
"""
from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_SOURCE = HERE.parents[1] / ".." / "shared" / "corpus" / "ner" / "ncbi-disease" / "NCBItrainset_corpus.txt"
OUTPUT = HERE / "ncbi_disease_terms.txt"

# Mentions that are disease words in the abstracts but too ambiguous in a clinical note.
STOP = {"was", "as", "deficiency", "deficient", "disease", "diseases", "disorder", "disorders", "syndrome",
        "lesions", "lesion", "defect", "defects", "affected", "no eyes", "frda", "chrpes", "canavan",
        "norrie", "mcleod"}

HEADER = """\
# Disease mentions from the NCBI Disease corpus, TRAINING split only (NCBItrainset_corpus.txt).
# Source: NCBI Disease corpus (Dogan, Leaman & Lu 2014), US Government work, public domain.
# Rebuilt by jobs/entities/data/build_lexicons.py; lower-cased, abbreviations and short mentions dropped.
"""


def mentions(path: Path) -> set[str]:
    out: set[str] = set()
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 6:
                continue
            surface = parts[3].strip()
            if not any(c.islower() for c in surface):
                continue  # abbreviation such as DMD, A-T
            if len(surface) < 4 or any(c in surface for c in "()[]"):
                continue
            term = " ".join(surface.lower().split())
            if term in STOP:
                continue
            out.add(term)
    return out


def main(argv: list[str]) -> int:
    source = Path(argv[1]) if len(argv) > 1 else DEFAULT_SOURCE
    terms = sorted(mentions(source))
    OUTPUT.write_text(HEADER + "\n".join(terms) + "\n", encoding="utf-8")
    print(f"wrote {len(terms)} terms to {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
