"""Languages benchmark: the OCR step unpinned (ocr_languages=auto) against the right language
pinned, against English only (what a wrong guess costs), same pages, same run.

Pages: the ground-truth paragraphs of bench/lang_texts.py rendered by bench/lang_pages.py (A4,
300 dpi, 11 pt, mild scan noise), ``--pages`` noise seeds per language. Systems per page:

* ``auto``          - ``jobs.extract.ocr.ocr_image`` with the default settings (no pinning)
* ``pinned``        - the same with ``ocr_languages`` set to the page's language
* ``eng``           - the same pinned to English (a wrong guess on a non-English page)
* ``tess-pinned``   - plain ``tesseract IMG stdout -l LANG``, one thread (the issue's reference)
* ``tess-latin``    - plain ``tesseract -l eng+deu+fra+spa+ita+por+nld`` on Latin pages (the
                      alternative to choosing: every Latin language in one call)

CER: Levenshtein distance / reference length, whitespace folded (Latin, Korean) or removed
(Chinese, Japanese, whose words are not spaced). CPU: this process's and its children's
user+system seconds per page (the machine may be shared).

    .venv/bin/python bench/bench_languages.py                 # 2 pages per language
    .venv/bin/python bench/bench_languages.py --pages 1 --langs deu,jpn --json out.json
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_ocr import levenshtein  # noqa: E402
from lang_pages import NO_SPACES, render_page  # noqa: E402
from lang_texts import TEXTS  # noqa: E402

LATIN_SET = "eng+deu+fra+spa+ita+por+nld"
LATIN = {"eng", "deu", "fra", "spa", "ita", "por", "nld"}


def cer(reference: str, hypothesis: str, no_spaces: bool) -> float:
    fold = (lambda s: "".join(s.split())) if no_spaces else (lambda s: " ".join(s.split()))
    ref, hyp = fold(reference), fold(hypothesis)
    return levenshtein(ref, hyp) / max(1, len(ref))


def cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def ours(languages: str) -> Callable[[Path], tuple[str, str]]:
    from PIL import Image

    from jobs.extract.ocr import ocr_image
    from pipeline.settings import Settings

    settings = Settings(ocr_languages=languages)

    def run(path: Path) -> tuple[str, str]:
        with Image.open(path) as img:
            page = ocr_image(img, settings, dpi=300, want_pdf=True)
        return page.recognition.text, page.recognition.languages
    return run


def plain_tesseract(languages: str) -> Callable[[Path], tuple[str, str]]:
    env = dict(os.environ, OMP_THREAD_LIMIT="1")

    def run(path: Path) -> tuple[str, str]:
        out = subprocess.run(["tesseract", str(path), "stdout", "-l", languages, "--dpi", "300"],
                             capture_output=True, text=True, env=env, check=True).stdout
        return out, languages
    return run


def bench(langs: list[str], pages: int, work: Path) -> dict[str, dict[str, dict[str, object]]]:
    report: dict[str, dict[str, dict[str, object]]] = {}
    for code in langs:
        files = []
        for seed in range(pages):
            image, reference = render_page(code, TEXTS[code], seed=seed)
            path = work / f"{code}-{seed}.png"
            image.save(path)
            files.append((path, reference))
        systems = {"auto": ours("auto"), "pinned": ours(code), "eng": ours("eng"),
                   "tess-pinned": plain_tesseract(code)}
        if code in LATIN:
            systems["tess-latin"] = plain_tesseract(LATIN_SET)
        if not report:
            ours("eng")(files[0][0])  # warm imports and first-call set-up outside the timings
        report[code] = {}
        for name, run in systems.items():
            cers, cpu, chosen = [], 0.0, []
            for path, reference in files:
                t0 = cpu_seconds()
                text, used = run(path)
                cpu += cpu_seconds() - t0
                cers.append(cer(reference, text, code in NO_SPACES))
                chosen.append(used)
            report[code][name] = {"cer": round(sum(cers) / len(cers), 4),
                                  "cpu_per_page": round(cpu / len(files), 3),
                                  "languages": sorted(set(chosen))}
            print(f"{code:8s} {name:12s} CER {report[code][name]['cer']:.4f}  "
                  f"CPU/page {report[code][name]['cpu_per_page']:.2f} s  -l {','.join(sorted(set(chosen)))}",
                  flush=True)
    return report


def table(report: dict[str, dict[str, dict[str, object]]]) -> str:
    names = ["auto", "pinned", "eng", "tess-pinned", "tess-latin"]
    rows = ["| page | " + " | ".join(f"{n} CER" for n in names) + " | auto - tess-pinned | "
            + " | ".join(f"{n} CPU s" for n in names) + " | auto chose |",
            "|" + "---|" * (2 * len(names) + 3)]
    for code, systems in report.items():
        cells = [f"{systems[n]['cer']:.4f}" if n in systems else "" for n in names]
        delta = float(systems["auto"]["cer"]) - float(systems["tess-pinned"]["cer"])
        cpus = [f"{systems[n]['cpu_per_page']:.2f}" if n in systems else "" for n in names]
        rows.append(f"| {code} | " + " | ".join(cells) + f" | {delta:+.4f} | " + " | ".join(cpus)
                    + f" | {'/'.join(systems['auto']['languages'])} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--langs", default="eng,deu,fra,spa,ita,chi_sim,chi_tra,jpn,kor")
    parser.add_argument("--pages", type=int, default=2, help="noise seeds per language")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")
    with tempfile.TemporaryDirectory(prefix="bench-languages-") as tmp:
        report = bench(args.langs.split(","), args.pages, Path(tmp))
    print()
    print(table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
