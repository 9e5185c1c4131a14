"""Bench: medication attribute recall of the local backend on the clinical-medication gold, per attribute.

Gold: ``../shared/corpus/ner/clinical-medication/medExtractR/mxr_tune/tune_note{1,2,3}.txt`` with the
realigned brat annotations (``*.realigned.ann``; see the corpus SOURCE.txt): the target drug only
(tacrolimus/Prograf) with Strength, DoseStrength, DoseAmt, Route, Frequency. medExtractR's types
map to Comprehend Medical's attribute types as below; a gold span counts as found when an
attribute of an accepted type, attached to a MEDICATION entity, overlaps it ("overlap") or has
exactly its span ("exact"). Other drugs in the notes are not annotated, so precision is not
measured here (bench/bench_entities.py measures entity precision on BC5CDR and NCBI-disease).

ICD-10-CM: top-1 and top-5 agreement with the code a coder would pick for 50 common conditions
written plainly (ICD_EXPECTED below, chosen for this bench).

Also timed: the whole local backend (extractor + test values, PHI and time-expression rules) and
the ICD-10-CM lookup, in words per second on every clinical-medication note (one core).

    .venv/bin/python bench/bench_entities_surface.py [--corpus ../shared/corpus]
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from jobs.entities.detect import analyse  # noqa: E402
from jobs.entities.icd10 import default_index  # noqa: E402
from pipeline.settings import Settings  # noqa: E402

# medExtractR type -> Comprehend Medical attribute types accepted for it
ACCEPT = {
    "Strength": {"STRENGTH"},
    "DoseStrength": {"DOSAGE", "STRENGTH"},  # "Prograf 2 mg": the amount taken, written as a strength
    "Dose": {"DOSAGE", "STRENGTH"},
    "DoseAmt": {"DOSAGE"},
    "Route": {"ROUTE_OR_MODE"},
    "Frequency": {"FREQUENCY"},
    "IntakeTime": {"FREQUENCY"},
}


# Common conditions as written in notes -> the code a coder would pick with nothing more said
# (chosen for this bench from the ICD-10-CM tabular list and alphabetic index; not a published set).
ICD_EXPECTED = {
    "type 2 diabetes mellitus": "E11.9", "diabetes": "E11.9", "DM2": "E11.9", "type 1 diabetes mellitus": "E10.9",
    "essential hypertension": "I10", "hypertension": "I10", "HTN": "I10", "hyperlipidemia": "E78.5",
    "hypercholesterolemia": "E78.00", "obesity": "E66.9", "asthma": "J45.909", "COPD": "J44.9",
    "pneumonia": "J18.9", "chest pain": "R07.9", "headache": "R51.9", "migraine": "G43.909", "fever": "R50.9",
    "nausea": "R11.0", "dizziness": "R42", "atrial fibrillation": "I48.91", "heart failure": "I50.9",
    "congestive heart failure": "I50.9", "coronary artery disease": "I25.10", "stroke": "I63.9",
    "chronic kidney disease": "N18.9", "acute kidney injury": "N17.9", "urinary tract infection": "N39.0",
    "depression": "F32.A", "anxiety": "F41.9", "hypothyroidism": "E03.9", "GERD": "K21.9", "osteoarthritis": "M19.90",
    "rheumatoid arthritis": "M06.9", "anemia": "D64.9", "breast cancer": "C50.919", "lung cancer": "C34.90",
    "prostate cancer": "C61", "epilepsy": "G40.909", "seizure": "R56.9", "acute pancreatitis": "K85.90",
    "deep vein thrombosis": "I82.409", "pulmonary embolism": "I26.99", "sepsis": "A41.9", "cellulitis": "L03.90",
    "low back pain": "M54.50", "insomnia": "G47.00", "gout": "M10.9", "psoriasis": "L40.9", "rash": "R21",
    "constipation": "K59.00",
}


def bench_icd10() -> None:
    index = default_index()
    top1 = top5 = 0
    misses = []
    for mention, code in ICD_EXPECTED.items():
        codes = [c["Code"] for c in index.lookup(mention)]
        top1 += bool(codes) and codes[0] == code
        top5 += code in codes
        if not codes or codes[0] != code:
            misses.append(f"{mention} -> {codes[0] if codes else '-'} (expected {code})")
    n = len(ICD_EXPECTED)
    print(f"\nICD-10-CM on {n} common conditions: top-1 {top1 / n:.2f}, among the codes (top-5) {top5 / n:.2f}")
    for miss in misses:
        print(f"  {miss}")


def read_gold(ann: Path) -> list[tuple[str, int, int, str]]:
    out = []
    for line in ann.read_text(encoding="utf-8").splitlines():
        if line.startswith("T"):
            _, mid, surface = line.split("\t")
            typ, b, e = mid.split()
            out.append((typ, int(b), int(e), surface))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=REPO.parent / "shared" / "corpus")
    args = ap.parse_args()
    root = args.corpus / "ner" / "clinical-medication"
    tune = root / "medExtractR" / "mxr_tune"
    settings = Settings(entities_backend="local", local_icd10cm="off")
    found: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # gold, overlap, exact
    for txt in sorted(tune.glob("tune_note*.txt")):
        text = txt.read_text(encoding="utf-8")
        gold = read_gold(txt.with_suffix(".realigned.ann"))
        meds = [e for e in analyse(text, settings).entities["Entities"] if e["Category"] == "MEDICATION"]
        for typ, b, e, surface in gold:
            assert text[b:e] == surface, (txt.name, typ, surface)
            counts = found[typ]
            counts[0] += 1
            if typ == "DrugName":
                hits = [(m["BeginOffset"], m["EndOffset"]) for m in meds]
            else:
                hits = [(a["BeginOffset"], a["EndOffset"]) for m in meds for a in m["Attributes"]
                        if a["Type"] in ACCEPT[typ]]
            counts[1] += any(hb < e and b < he for hb, he in hits)
            counts[2] += (b, e) in hits
    print("clinical-medication (medExtractR tune notes, realigned gold, target drug only)")
    print(f"{'attribute':<14}{'CM type(s)':<22}{'gold':>5}{'overlap':>10}{'exact':>8}")
    total = [0, 0, 0]
    for typ in ["DrugName", *[t for t in ACCEPT if t in found]]:
        g, o, x = found[typ]
        total = [total[0] + g, total[1] + o, total[2] + x]
        kinds = "MEDICATION" if typ == "DrugName" else "/".join(sorted(ACCEPT[typ]))
        print(f"{typ:<14}{kinds:<22}{g:>5}{o / g:>10.2f}{x / g:>8.2f}")
    print(f"{'all':<36}{total[0]:>5}{total[1] / total[0]:>10.2f}{total[2] / total[0]:>8.2f}")

    notes = sorted(root.rglob("*.txt"))
    texts = [p.read_text(encoding="utf-8") for p in notes]
    words = sum(len(t.split()) for t in texts)
    analyse(texts[0], settings)  # load the model and lexicons before timing
    t0 = time.perf_counter()
    conditions = []
    for t in texts:
        entities = analyse(t, settings).entities["Entities"]
        conditions += [e["Text"] for e in entities if e["Category"] == "MEDICAL_CONDITION"]
    local_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    index = default_index()
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for c in conditions:
        index.lookup(c)
    lookup_s = time.perf_counter() - t0
    print(f"\nlocal backend (extractor + rules): {len(notes)} notes, {words} words, {local_s:.2f} s, "
          f"{words / local_s:,.0f} words/s")
    print(f"ICD-10-CM: index built in {build_s:.2f} s (once per process); {len(conditions)} conditions coded in "
          f"{lookup_s:.3f} s ({1000 * lookup_s / max(1, len(conditions)):.2f} ms each)")
    # What a document costs the entities job: everything the local backend writes (entities.json
    # and icd10cm.json), CPU time of this one process (one core), the index already loaded.
    full = settings.replace(local_icd10cm="on")
    analyse(texts[0], full)
    c0 = time.process_time()
    for t in texts:
        analyse(t, full)
    full_s = time.process_time() - c0
    print(f"whole local backend (entities + ICD-10-CM codes): {words / full_s:,.0f} words per CPU second")
    bench_icd10()


if __name__ == "__main__":
    main()
