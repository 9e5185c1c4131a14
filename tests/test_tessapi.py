"""The tesseract library helper (jobs/extract/tessapi.py): the program's output without its start.

Real Tesseract on real images throughout: the helper and the program are run on the same page
image with the same options and their output files compared byte for byte.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import pytest

from jobs.extract import tessapi, tesseract
from jobs.extract.tesseract import detect_orientation, recognise
from pipeline.errors import ToolFailed, ToolMissing
from pipeline.settings import Settings

FILES = Path(__file__).parent / "files"
LIBRARY = Settings(ocr_languages="eng")
PROGRAM = Settings(ocr_languages="eng", ocr_engine="program")


@pytest.fixture(autouse=True)
def fresh_helper():
    tessapi.stop()
    yield
    tessapi.stop()


def _page(name: str = "screenshot_labs.png") -> "cv2.Mat":
    image = cv2.imread(str(FILES / name), cv2.IMREAD_GRAYSCALE)
    assert image is not None
    return image


def _helper_pid() -> int:
    assert tessapi._helper is not None and tessapi._helper.alive
    return tessapi._helper.proc.pid


def _gone(pid: int, seconds: float = 5.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("name", ["screenshot_labs.png", "phone_photo_exif6.jpg"])
@pytest.mark.parametrize("psm", [3, 6])
def test_helper_writes_the_programs_tsv_byte_for_byte(tmp_path, name, psm):
    image = tesseract.write_pgm(_page(name), tmp_path / "page.pgm")
    config = f"--psm {psm} --dpi 300 -c tessedit_create_tsv=1" + (" -c tessedit_do_invert=0" if psm == 6 else "")
    tessapi.run_tesseract(image, str(tmp_path / "lib"), "", "eng", config)
    assert tessapi._helper is not None  # the helper served it
    tesseract.call(tessapi._program.run_tesseract, PROGRAM, input_filename=image,
                   output_filename_base=str(tmp_path / "prog"), extension="", lang="eng", config=config)
    assert (tmp_path / "lib.tsv").read_bytes() == (tmp_path / "prog.tsv").read_bytes()


def test_recognition_and_osd_match_the_program_on_turned_pages(tmp_path):
    page = _page("phone_photo_exif6.jpg")
    decided = []
    for turned in (page, cv2.rotate(page, cv2.ROTATE_90_CLOCKWISE), cv2.rotate(page, cv2.ROTATE_180)):
        lib = detect_orientation(turned, LIBRARY, workdir=tmp_path)
        prog = detect_orientation(turned, PROGRAM, workdir=tmp_path)
        assert lib == prog  # rotation, script and both confidences, also where OSD cannot decide
        decided.append(lib is not None)
        a = recognise(turned, LIBRARY, dpi=300, want_pdf=False, workdir=tmp_path)
        b = recognise(turned, PROGRAM, dpi=300, want_pdf=False, workdir=tmp_path)
        assert (a.text, a.words, a.mean_confidence) == (b.text, b.words, b.mean_confidence)
    assert sum(decided) >= 2


def test_one_helper_serves_many_pages_and_puts_variables_back(tmp_path):
    """A variable set for one page (psm 6's tessedit_do_invert=0) must not leak into the next."""
    page = _page()
    plain = recognise(page, PROGRAM, dpi=300, want_pdf=False, workdir=tmp_path, psm=3)
    recognise(page, LIBRARY, dpi=300, want_pdf=False, workdir=tmp_path, psm=6)
    pid = _helper_pid()
    again = recognise(page, LIBRARY, dpi=300, want_pdf=False, workdir=tmp_path, psm=3)
    assert _helper_pid() == pid  # the same process, languages loaded once
    assert again.words == plain.words


def test_helper_runs_one_thread_and_shows_as_tesseract(tmp_path):
    recognise(_page(), LIBRARY, dpi=300, want_pdf=False, workdir=tmp_path)
    status = Path(f"/proc/{_helper_pid()}/status").read_text()
    assert "\nThreads:\t1\n" in status
    assert Path(f"/proc/{_helper_pid()}/comm").read_text().strip() == "tesseract-lib"


def test_a_page_past_its_timeout_kills_the_helper_and_the_next_starts_a_new_one(tmp_path):
    page = _page()
    recognise(page, LIBRARY, dpi=300, want_pdf=False, workdir=tmp_path)
    first = _helper_pid()
    with pytest.raises(ToolFailed, match="timed out"):
        recognise(page, LIBRARY.replace(ocr_timeout=0.01), dpi=300, want_pdf=False, workdir=tmp_path)
    assert _gone(first)
    again = recognise(page, LIBRARY, dpi=300, want_pdf=False, workdir=tmp_path)
    assert again.words and _helper_pid() != first


def test_a_crashed_helper_fails_the_page_not_the_worker(tmp_path):
    page = _page()
    recognise(page, LIBRARY, dpi=300, want_pdf=False, workdir=tmp_path)
    os.kill(_helper_pid(), signal.SIGKILL)  # between pages: the next call starts a new helper
    assert _gone(tessapi._helper.proc.pid)
    assert recognise(page, LIBRARY, dpi=300, want_pdf=False, workdir=tmp_path).words
    victim = _helper_pid()

    def crash(*_):
        os.kill(victim, signal.SIGSEGV)

    previous = signal.signal(signal.SIGALRM, crash)
    signal.setitimer(signal.ITIMER_REAL, 0.05)  # while it reads the page
    try:
        with pytest.raises(ToolFailed, match="status"):
            recognise(page, LIBRARY, dpi=300, want_pdf=False, workdir=tmp_path)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert recognise(page, LIBRARY, dpi=300, want_pdf=False, workdir=tmp_path).words


def test_an_interrupted_request_kills_the_helper(tmp_path):
    """The page deadline raises from its alarm handler while the worker waits: the helper's state
    is unknown then, so it is killed, not left reading a page nobody waits for."""
    page = _page()
    recognise(page, LIBRARY, dpi=300, want_pdf=False, workdir=tmp_path)
    pid = _helper_pid()

    class Deadline(Exception):
        pass

    def expired(*_):
        raise Deadline

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, 0.05)
    try:
        with pytest.raises(Deadline):
            recognise(page, LIBRARY, dpi=300, want_pdf=False, workdir=tmp_path)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert _gone(pid)


def test_missing_language_data_is_tool_missing(tmp_path):
    with pytest.raises(ToolMissing, match="language data"):
        recognise(_page(), LIBRARY, dpi=300, want_pdf=False, workdir=tmp_path, languages="xxx")
    assert recognise(_page(), LIBRARY, dpi=300, want_pdf=False, workdir=tmp_path).words


def test_program_setting_and_other_command_never_start_a_helper(tmp_path):
    recognise(_page(), PROGRAM, dpi=300, want_pdf=False, workdir=tmp_path)
    detect_orientation(_page(), PROGRAM, workdir=tmp_path)
    assert tessapi._helper is None
    assert not tessapi.usable(LIBRARY.replace(tesseract_cmd="/usr/local/bin/tesseract-wrapper"))


def test_a_library_of_another_version_leaves_the_work_to_the_program(tmp_path, monkeypatch):
    monkeypatch.setattr(tesseract, "tesseract_version", lambda cmd="tesseract": "0.0.0")
    monkeypatch.setattr(tessapi, "_unusable_reason", None)
    page = recognise(_page(), LIBRARY, dpi=300, want_pdf=False, workdir=tmp_path)
    assert page.words and tessapi._helper is None
    assert not tessapi.usable(LIBRARY)  # decided once for the process


def test_a_helper_that_cannot_start_leaves_the_work_to_the_program(tmp_path, monkeypatch):
    monkeypatch.setattr(tessapi, "_CHILD", str(tmp_path / "missing_child.py"))  # python exits at once
    monkeypatch.setattr(tessapi, "_unusable_reason", None)
    page = recognise(_page(), LIBRARY, dpi=300, want_pdf=False, workdir=tmp_path)
    assert page.words and tessapi._helper is None and not tessapi.usable(LIBRARY)


def test_a_helper_dead_since_the_last_page_is_a_tool_failure_not_a_broken_pipe(tmp_path):
    recognise(_page(), LIBRARY, dpi=300, want_pdf=False, workdir=tmp_path)
    helper = tessapi._helper
    helper.proc.kill()
    helper.proc.wait()
    with pytest.raises(tessapi._program.TesseractError):
        helper.request({"op": "osd", "image": str(tmp_path / "none.pgm")}, 5.0)


def test_the_helper_dies_with_its_worker(tmp_path):
    """A worker killed mid-document (SIGKILL: no clean-up runs) must not leave a helper behind."""
    image = tesseract.write_pgm(_page(), tmp_path / "page.pgm")
    script = textwrap.dedent(f"""
        import os, sys
        from jobs.extract import tessapi
        tessapi.run_tesseract({image!r}, {str(tmp_path / 'out')!r}, "", "eng", "--psm 3")
        print(tessapi._helper.proc.pid, flush=True)
        sys.stdin.read()
    """)
    worker = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, cwd=Path(__file__).parent.parent)
    helper = int(worker.stdout.readline())
    assert not _gone(helper, 0.2)
    worker.kill()
    worker.wait()
    assert _gone(helper)


def test_an_unknown_engine_is_a_settings_error():
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match="ocr_engine must be one of library, program"):
        Settings.load(env={"MEDINTAKE_OCR_ENGINE": "libary"})
    assert Settings.load(env={"MEDINTAKE_OCR_ENGINE": "program"}).ocr_engine == "program"


def test_parse_config_reads_what_recognise_passes():
    assert tessapi.parse_config("--psm 6 --dpi 212 -c tessedit_create_tsv=1 -c tessedit_do_invert=0") == (
        6, {"user_defined_dpi": "212", "tessedit_create_tsv": "1", "tessedit_do_invert": "0"})
    with pytest.raises(tessapi._Unusable):
        tessapi.parse_config("--oem 0")


def test_a_request_that_fails_inside_the_helper_fails_alone(tmp_path):
    """An output the helper cannot write (here: a folder that does not exist) fails that call with
    a tool failure; the same helper reads the next page."""
    image = tesseract.write_pgm(_page(), tmp_path / "page.pgm")
    tessapi.run_tesseract(image, str(tmp_path / "ok"), "", "eng", "--psm 3")
    pid = _helper_pid()
    with pytest.raises(ToolFailed, match="status 1"):
        tesseract.call(tessapi.run_tesseract, LIBRARY, input_filename=image,
                       output_filename_base=str(tmp_path / "missing" / "out"), extension="", lang="eng",
                       config="--psm 3")
    tessapi.run_tesseract(image, str(tmp_path / "again"), "", "eng", "--psm 3")
    assert _helper_pid() == pid and (tmp_path / "again.tsv").read_bytes() == (tmp_path / "ok.tsv").read_bytes()
