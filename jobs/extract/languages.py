"""Which Tesseract traineddata reads a page: pinned by the operator, or chosen per page.

``ocr_languages`` other than ``auto`` pins the set: every page is read with it, nothing is
detected. With ``auto`` (the default) the page is chosen among ``ocr_auto_languages`` (the
region's packs, all shipped in the worker image) at no cost for a page in the first-pass
language:

* The first pass reads with the first Latin-script language of the list (``eng`` by default;
  a German region would put ``deu`` first). One call, as before, for most pages.
* A page in another script reads as garbage in that pass (mean word confidence 10-30 on Chinese,
  Japanese and Korean pages), which already makes :mod:`jobs.extract.orientation` consult OSD.
  OSD names the script as well as the rotation, so its answer is reused (OSD costs about as much
  as a recognition on a 300 dpi page: it is never run twice, and never on a page that read well).
  Han goes to ``chi_sim+chi_tra`` (one call: each model alone misreads the other's page, CER
  0.30 for chi_sim on a traditional page; together they match the right one pinned, at 1.5x its
  CPU), Japanese to ``jpn``, Korean (Hangul) to ``kor``; only listed languages are used.
* A Latin page that read well is checked for its language by function words (the, und, les, de,
  che...): counting them in the first pass's text takes microseconds, where a statistical
  identifier's model took 2-3 s to load per worker process (py3langid, measured). When another
  listed language wins clearly, the page is read again with it, and that reading is kept unless
  its mean word confidence is clearly lower. A page with too little text to tell keeps the first
  pass.

bench/README-languages.md has what each choice costs and gains.
"""
from __future__ import annotations

import re

from pipeline.settings import Settings

AUTO = "auto"

#: OSD script name -> languages that write it (those listed are joined into one ``-l`` value).
SCRIPT_LANGUAGES: dict[str, tuple[str, ...]] = {
    "Han": ("chi_sim", "chi_tra"),
    "Japanese": ("jpn",),
    "Katakana": ("jpn",),
    "Hiragana": ("jpn",),
    "Korean": ("kor",),
    "Hangul": ("kor",),
    "Cyrillic": ("rus", "ukr", "bul", "srp"),
    "Arabic": ("ara", "fas", "urd"),
    "Greek": ("ell",),
    "Hebrew": ("heb",),
    "Devanagari": ("hin", "mar", "nep"),
    "Thai": ("tha",),
}
NON_LATIN = {code for codes in SCRIPT_LANGUAGES.values() for code in codes}

#: Frequent function words per Latin-script language (lower case, no accents needed to match:
#: an English first pass often drops them, so both spellings are listed where they differ).
_FUNCTION_WORDS: dict[str, frozenset[str]] = {
    "eng": frozenset("the and of to in is was with for on that by this are be as from at an "
                     "were has have not or his her she he it".split()),
    "deu": frozenset("der die das und ist wurde wurden mit von den dem des ein eine einer im "
                     "zu auf nicht bei sich sie er für fur über uber auch nach als am".split()),
    "fra": frozenset("le la les et des du de un une est a été ete pour dans au aux par sur "
                     "il elle pas qui que avec ses son sa lui".split()),
    "spa": frozenset("el la los las y de del en un una es fue por para con se que al le "
                     "su sus como más mas ha sido".split()),
    "ita": frozenset("il lo la le gli e di del della dei in un una è è stata stato per con "
                     "che al alla si ha non nel sono".split()),
    "por": frozenset("o a os as e de do da dos das em um uma é foi para com no na por que "
                     "ao se não nao sua seu".split()),
    "nld": frozenset("de het een en van in is werd met op voor niet zijn bij dat die te "
                     "aan er ook naar".split()),
}
#: Words of the other languages' lists that English labels and addresses use too ("Invoice No",
#: "yahoo.com", "as per", "Tel No") count for English only. Found on the development receipts, where
#: "No" five times made an English receipt Portuguese and paid a second tesseract run on 3 of 79.
_ENGLISH_TOO = frozenset("no as do com per am die son con in is an on at so te den mas sun".split())
_FUNCTION_WORDS = {code: words if code == "eng" else words - _ENGLISH_TOO for code, words in _FUNCTION_WORDS.items()}
_WORD = re.compile(r"[^\W\d_]+")
_MIN_HITS = 6  # function words needed before a page's language is trusted
_MARGIN = 1.5  # the winner needs this many times the first-pass language's hits

def is_auto(settings: Settings) -> bool:
    return settings.ocr_languages.strip().lower() == AUTO


def _listed(settings: Settings) -> list[str]:
    return [code for code in settings.ocr_auto_languages.split("+") if code]


def first_pass(settings: Settings) -> str:
    """The ``-l`` value of a page's first recognition: the pinned set, or the first Latin one."""
    if not is_auto(settings):
        return settings.ocr_languages
    latin = [code for code in _listed(settings) if code not in NON_LATIN]
    return latin[0] if latin else "eng"


def for_script(script: str | None, settings: Settings) -> str | None:
    """The language for a page OSD says is in ``script``; None for Latin, unknown or unlisted."""
    if not script or not is_auto(settings):
        return None
    listed = _listed(settings)
    candidates = [code for code in listed if code in SCRIPT_LANGUAGES.get(script, ())]
    return "+".join(candidates) or None


def latin_guess(text: str, used: str, settings: Settings) -> str | None:
    """A listed Latin language whose function words clearly outnumber the first pass's, or None."""
    if not is_auto(settings):
        return None
    candidates = [code for code in _listed(settings) if code in _FUNCTION_WORDS]
    if used not in candidates or len(candidates) < 2:  # a CJK page stays CJK
        return None
    words = [w.lower() for w in _WORD.findall(text) if len(w) >= 2]  # OCR noise is single letters
    hits = {code: sum(w in _FUNCTION_WORDS[code] for w in words) for code in candidates}
    best = max(candidates, key=lambda code: hits[code])
    if best == used or hits[best] < _MIN_HITS or hits[best] < _MARGIN * hits.get(used, 0):
        return None
    return best
