"""The shipped entities model (jobs.entities.model) and the local extractor built on it.

Nothing is trained here: the tests load the model file that ships in the package and check what
it does on real sentences (offsets, multi-byte text, abbreviations, long text, empty text).
Accuracy and speed are measured by bench/bench_entities.py, not by tests.
"""
from __future__ import annotations

import configparser

import pytest

from conftest import REPO
from jobs.entities import local
from jobs.entities.model import predict as model
from jobs.entities.model.dictionary import dictionaries
from jobs.entities.model.tokenize import sentences, tokens

CLINICAL = "The patient developed acute renal failure after treatment with gentamicin and vancomycin."


def _entities(text: str) -> list[tuple[str, str, int, int]]:
    return [(e["Text"], e["Category"], e["BeginOffset"], e["EndOffset"]) for e in local.extract(text)["Entities"]]


def test_model_ships_in_the_package_small_and_is_loaded_once():
    assert model.MODEL_PATH.is_file()
    assert model.MODEL_PATH.stat().st_size < 5 * 1024 * 1024
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    assert "model/*.crfsuite" in cfg["options.package_data"]["jobs.entities"]
    assert "python-crfsuite" in cfg["options"]["install_requires"]
    assert model.tagger() is model.tagger()


def test_drug_and_disease_found_with_exact_offsets():
    found = _entities(CLINICAL)
    for drug in ("gentamicin", "vancomycin"):
        b = CLINICAL.index(drug)
        assert (drug, "MEDICATION", b, b + len(drug)) in found
    conditions = [f for f in found if f[1] == "MEDICAL_CONDITION"]
    assert any("renal failure" in text for text, *_ in conditions)
    for text, _, b, e in found:
        assert CLINICAL[b:e] == text


def test_model_mentions_carry_corpus_labels_and_a_score():
    mentions = model.predict(CLINICAL)
    assert {m.label for m in mentions} == {"Chemical", "Disease"}
    assert all(0.0 < m.score <= 1.0 for m in mentions)
    assert [m.begin for m in mentions] == sorted(m.begin for m in mentions)


@pytest.mark.parametrize("prefix", ["Ärztin Müller, café crème: ", "医生报告 — ", "🩺💊 notes 👩‍⚕️: ", "\u00a0\t\n"])
def test_multibyte_text_keeps_offsets(prefix: str):
    plain = {(m.begin, m.end, m.label) for m in model.predict(CLINICAL)}
    text = prefix + CLINICAL
    shifted = {(m.begin - len(prefix), m.end - len(prefix), m.label) for m in model.predict(text)}
    assert shifted == plain
    for text_, _, b, e in _entities(text):
        assert text[b:e] == text_


def test_tokens_and_sentences_keep_offsets_on_mixed_scripts():
    text = "Naïve patient (患者) took 5-HT3 antagonists 😀.\nNext line: ibuprofen 400mg"
    toks = tokens(text)
    assert all(text[t.begin:t.end] == t.text for t in toks)
    assert [t.text for t in toks][:4] == ["Naïve", "patient", "(", "患者"]
    seqs = sentences(text, toks)
    assert len(seqs) == 2 and seqs[1][0].text == "Next"
    assert sum(len(s) for s in seqs) == len(toks)


def test_empty_and_blank_text():
    assert model.predict("") == []
    assert model.predict(" \n\f ") == []
    assert local.extract("")["Entities"] == []
    assert local.extract("   \n")["Entities"] == []
    assert local.extract("...")["Entities"] == []


def test_abbreviation_defined_in_the_text_is_tagged_everywhere():
    text = ("Seizures were treated with carbamazepine (CBZ). After two weeks CBZ was stopped "
            "because of hyponatremia.")
    found = _entities(text)
    cbz = [f for f in found if f[0] == "CBZ"]
    assert len(cbz) == 2 and all(f[1] == "MEDICATION" for f in cbz)
    assert ("hyponatremia", "MEDICAL_CONDITION", text.index("hyponatremia"), text.index("hyponatremia") + 12) in found


def test_fifty_page_text_is_tagged_with_valid_offsets():
    block = (CLINICAL + " Blood pressure was 150/90; she denies chest pain.\n"
             "Metformin 500 mg PO BID for type 2 diabetes mellitus.\f")
    text = block * 600  # about 50 pages of 3,000 characters
    assert len(text) > 50 * 3000 // 2
    res = local.extract(text)
    per_block = len(local.extract(block)["Entities"])
    assert per_block >= 5
    assert len(res["Entities"]) == 600 * per_block
    assert all(text[e["BeginOffset"]:e["EndOffset"]] == e["Text"] for e in res["Entities"])


def test_clinical_note_brand_name_and_attributes_still_found():
    text = "Prograf 1 mg capsule by mouth twice a day. Denies headache."
    ents = local.extract(text)["Entities"]
    prograf = next(e for e in ents if e["Text"] == "Prograf")
    assert prograf["Category"] == "MEDICATION" and prograf["Type"] == "BRAND_NAME"
    assert {"ROUTE_OR_MODE", "FREQUENCY"} <= {a["Type"] for a in prograf["Attributes"]}
    headache = next(e for e in ents if e["Text"] == "headache")
    assert "NEGATION" in {t["Name"] for t in headache["Traits"]}


def test_dictionaries_from_registry_packages_are_loaded():
    d = dictionaries()
    assert "metformin" in d["D"] and "Lipitor" in d["D"]
    assert "type 2 diabetes mellitus" in d["C"] and "essential hypertension" in d["C"]
    assert "metformin" not in d["C"]


def test_bio_decoding():
    toks = tokens("a b c d e")
    assert model.decode(toks, ["B-Chemical", "I-Chemical", "O", "I-Disease", "B-Disease"]) == [
        (0, 2, "Chemical"), (3, 4, "Disease"), (4, 5, "Disease")]


def test_training_labels_line_up_with_tokens(tmp_path):
    """The training script's reader and BIO labelling on a two-mention PubTator abstract (nothing trained)."""
    from jobs.entities.model.train import labelled, read_pubtator

    title = "Naloxone reverses hypertension."
    path = tmp_path / "tiny.PubTator.txt"
    path.write_text(f"1|t|{title}\n1|a|It was given.\n1\t0\t8\tNaloxone\tChemical\tD009270\n"
                    "1\t18\t30\thypertension\tDisease\tD006973\n\n", encoding="utf-8")
    [(pmid, text, gold)] = read_pubtator(path)
    assert pmid == "1" and text == title + " It was given."
    assert gold == {(0, 8, "Chemical"), (18, 30, "Disease")}
    seqs = labelled(text, gold)
    assert [y for _, y in seqs] == [["B-Chemical", "O", "B-Disease", "O"], ["O", "O", "O", "O"]]
    assert all(len(x) == len(y) and all(isinstance(f, str) for fs in x for f in fs) for x, y in seqs)


def test_shipped_compiled_dictionaries_match_their_sources():
    """The entities job reads the compiled dictionaries (0.1 s instead of 0.65 s of tokenising);
    they must be what the source lists give today: after editing a list, run
    ``python -m jobs.entities.model.dictionary``."""
    from jobs.entities.model import dictionary

    compiled = dictionary._compiled()
    assert compiled is not None, "jobs/entities/data/dictionaries.json.gz is stale: recompile it"
    built = dictionary.build_dictionaries()
    for k in ("D", "C", "P"):
        assert compiled[k] == built[k].entries
    assert frozenset(compiled["brands"]) == dictionary._build_brands()
