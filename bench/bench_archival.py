"""Benchmark: what an archival copy costs per upload - the lossless renditions or a searchable PDF/A.

Issue 9 asks whether every upload should keep two full-size lossless copies (``full.png`` and
``archival.tiff``), one of them, or instead "a searchable PDF/A for every document, images
included, as the one archival output". Per input file, the same run measures (median of
``--repeat`` runs, wall and CPU seconds, bytes):

* ``standard`` - ``make_renditions`` with the default set (thumbnail, preview, web);
* ``lossless`` - the same with ``renditions = "lossless"`` (+ full.png, archival.tiff), and the
  bytes of each lossless file; the difference to ``standard`` is what the two copies cost;
* ``pdfa``     - the extract job's ``searchable.pdf`` (already made for every scanned page and image:
  the cleaned page as JPEG + Tesseract's invisible text) converted to PDF/A-2b by Ghostscript
  (``-dPDFA=2``, sRGB OutputIntent from Ghostscript's own ``srgb.icc``, ``PDFA_def.ps``). The
  extract itself is timed once for reference; it runs in the pipeline anyway.

PDF/A validity: veraPDF is not installable from the registries this project uses (it is a Java
application distributed outside PyPI/Debian/npm), so the checks are: Ghostscript's exit status
and no PDF/A warning on its output, ``qpdf --check`` clean, and in the uncompressed file (``qpdf
--qdf``) an XMP ``pdfaid:part`` 2 / ``pdfaid:conformance`` B, a ``/GTS_PDFA1`` OutputIntent with an
embedded ICC stream, every font embedded (a ``/FontFile*`` for every ``/FontDescriptor``), no
``/Encrypt`` and no ``/JavaScript``.

Inputs: the renditions benchmark's files (``bench/bench_renditions.py``'s ``build_inputs``: a
12 MP camera JPEG, its HEIC, a 4-page G4 fax TIFF, built from ``../shared/corpus`` into
``~/.cache/medintake/bench-renditions``) plus ``tests/files/scanned_discharge.pdf`` (a 300 dpi
scan) and ``tests/files/screenshot_labs.png``. ``--files`` takes any others.

Usage (from the repository root)::

    nice -n 10 .venv/bin/python bench/bench_archival.py --repeat 3 --json /tmp/archival.json
"""
from __future__ import annotations

import argparse
import json
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def default_inputs() -> list[Path]:
    sys.path.insert(0, str(REPO / "bench"))
    from bench_renditions import DEFAULT_CORPUS, DEFAULT_WORKDIR, build_inputs

    return build_inputs(DEFAULT_CORPUS, DEFAULT_WORKDIR) + [REPO / "tests/files/scanned_discharge.pdf",
                                                          REPO / "tests/files/screenshot_labs.png"]


def timed(fn) -> tuple[Any, float, float]:
    """(result, wall s, CPU s of this process and its children)."""
    r0, c0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = fn()
    wall = time.perf_counter() - t0
    r1, c1 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime
           + c1.ru_utime - c0.ru_utime + c1.ru_stime - c0.ru_stime)
    return out, wall, cpu


def renditions(src: Path, work: Path, which: str) -> dict[str, int]:
    from jobs.convert.renditions import make_renditions
    from jobs.identify import identify
    from pipeline.settings import Settings

    settings = Settings(data_dir=work / "data", renditions=which)
    out = work / which
    shutil.rmtree(out, ignore_errors=True)
    return {r.name: r.bytes for r in make_renditions(src, identify(src, settings), out, settings)}


def searchable_pdf(src: Path, work: Path) -> Path:
    from jobs.extract.text import extract_text
    from jobs.identify import identify
    from pipeline.settings import Settings

    settings = Settings(data_dir=work / "data")
    out = work / "extract"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    extract_text(src, identify(src, settings), out, settings)
    return out / "searchable.pdf"


def gs_lib() -> tuple[Path, Path]:
    """Ghostscript's PDFA_def.ps and srgb.icc (Debian's paths)."""
    out = subprocess.run(["gs", "--version"], capture_output=True, text=True, check=True).stdout.strip()
    base = Path("/usr/share/ghostscript") / out
    icc = next(p for p in (base / "iccprofiles" / "srgb.icc", base / "iccprofiles" / "default_rgb.icc") if p.exists())
    return base / "lib" / "PDFA_def.ps", icc


def pdfa_def(work: Path) -> Path:
    """A copy of Ghostscript's PDFA_def.ps naming the sRGB profile (its only per-site setting)."""
    template, icc = gs_lib()
    text = template.read_text().replace("(srgb.icc)", f"({icc})")
    path = work / "PDFA_def.ps"
    path.write_text(text)
    return path


def to_pdfa(pdf: Path, dest: Path, definition: Path) -> str:
    proc = subprocess.run(
        ["gs", "-q", "-dPDFA=2", "-dBATCH", "-dNOPAUSE", "-dNOOUTERSAVE", "-dPDFACompatibilityPolicy=1",
         "-sColorConversionStrategy=RGB", "-sDEVICE=pdfwrite", f"--permit-file-read={definition.parent}/",
         f"--permit-file-read={gs_lib()[1]}", f"-sOutputFile={dest}", str(definition), str(pdf)],
        capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"gs exit {proc.returncode}: {proc.stderr[-300:]}")
    return proc.stdout + proc.stderr


def check_pdfa(pdf: Path, gs_output: str) -> dict[str, bool]:
    """What can be checked without veraPDF (see the module docstring)."""
    check = subprocess.run(["qpdf", "--check", str(pdf)], capture_output=True, text=True)
    with tempfile.NamedTemporaryFile(suffix=".pdf") as tmp:
        subprocess.run(["qpdf", "--qdf", "--object-streams=disable", str(pdf), tmp.name], check=False)
        raw = Path(tmp.name).read_bytes()
    descriptors = len(re.findall(rb"/Type\s*/FontDescriptor", raw))
    embedded = len(re.findall(rb"/FontFile[23]?\s", raw))
    return {
        "gs_no_pdfa_warning": "PDF/A" not in gs_output and "not be valid" not in gs_output,
        "qpdf_check_clean": check.returncode == 0,
        "xmp_pdfa_2b": bool(re.search(rb"pdfaid:part[^0-9]{0,3}2", raw))
        and bool(re.search(rb"pdfaid:conformance[^A-Z]{0,3}B", raw)),
        "output_intent_gts_pdfa1": b"/GTS_PDFA1" in raw and b"/DestOutputProfile" in raw,
        "fonts_embedded": embedded >= descriptors,
        "no_encrypt_no_js": b"/Encrypt" not in raw and b"/JavaScript" not in raw,
    }


def measure(src: Path, repeat: int, work: Path) -> dict[str, Any]:
    from jobs.identify import identify, validate
    from pipeline.settings import Settings

    settings = Settings(data_dir=work / "data")
    row: dict[str, Any] = {"file": src.name, "bytes": src.stat().st_size,
                           "pages": validate(src, identify(src, settings), settings)}
    searchable, wall, cpu = timed(lambda: searchable_pdf(src, work))
    row["extract_wall_s"], row["searchable_pdf_bytes"] = round(wall, 3), searchable.stat().st_size
    definition = pdfa_def(work)
    runs: dict[str, list[tuple[float, float]]] = {"standard": [], "lossless": [], "pdfa": []}
    for which in ("standard", "lossless"):  # warm-up: imports, codecs' first use
        renditions(src, work, which)
    for _ in range(repeat):  # interleaved, so that machine load hits every variant alike
        for which in ("standard", "lossless"):
            sizes, wall, cpu = timed(lambda: renditions(src, work, which))
            runs[which].append((wall, cpu))
            row[f"{which}_bytes"] = sizes
        gs_out, wall, cpu = timed(lambda: to_pdfa(searchable, work / "archival-pdfa.pdf", definition))
        runs["pdfa"].append((wall, cpu))
    for name, values in runs.items():
        row[f"{name}_wall_s"] = round(statistics.median(v[0] for v in values), 3)
        row[f"{name}_cpu_s"] = round(statistics.median(v[1] for v in values), 3)
    row["pdfa_bytes"] = (work / "archival-pdfa.pdf").stat().st_size
    row["pdfa_checks"] = check_pdfa(work / "archival-pdfa.pdf", gs_out)
    lossless = row["lossless_bytes"]
    row["png_bytes"], row["tiff_bytes"] = lossless.get("png"), lossless.get("archival")
    row["lossless_extra_cpu_s"] = round(row["lossless_cpu_s"] - row["standard_cpu_s"], 3)
    return row


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| file | pages | upload bytes | standard CPU s | lossless CPU s (+) | full.png bytes | archival.tiff "
             "bytes | PDF/A CPU s | searchable.pdf bytes | PDF/A bytes | PDF/A checks |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        checks = r["pdfa_checks"]
        ok = "all pass" if all(checks.values()) else "fail: " + ", ".join(k for k, v in checks.items() if not v)
        lines.append(f"| {r['file']} | {r['pages']} | {r['bytes']:,} | {r['standard_cpu_s']} | {r['lossless_cpu_s']} "
                     f"(+{r['lossless_extra_cpu_s']}) | {r['png_bytes']:,} | {r['tiff_bytes']:,} | {r['pdfa_cpu_s']} "
                     f"| {r['searchable_pdf_bytes']:,} | {r['pdfa_bytes']:,} | {ok} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", nargs="*", type=Path)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    files = args.files or default_inputs()
    rows = []
    with tempfile.TemporaryDirectory(prefix="medintake-archival-") as tmp:
        for src in files:
            work = Path(tmp) / src.name
            work.mkdir()
            rows.append(measure(src, args.repeat, work))
            print(json.dumps(rows[-1]), flush=True)
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
