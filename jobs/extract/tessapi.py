"""Tesseract's library kept loaded in a helper process: the program's work without its start-up.

Every ``tesseract`` run loads its traineddata before reading a page: ~0.17 CPU s of the ~0.5 s a
receipt costs the program (measured, ``bench/README-ocr.md``). A worker reads many pages, so it
starts one helper (:mod:`jobs.extract.tessapi_child`, a small stdlib-only Python) that loads
Tesseract's shared library through its C API with ctypes, initialises each language set once and
reads page after page.

What stays as with the program:

* the same library, so the same text: the helper serves only when the library's version is the
  program's (``tesseract --version``), and a test compares the two byte for byte. The tesserocr
  binding was not used: its wheels bundle another Tesseract (5.5 against the image's 5.3), and
  building it needs a compiler and -dev packages in the worker image;
* isolation: a crash or a hang kills the helper, not the worker. A request past its timeout, or
  interrupted (the page deadline's alarm, Ctrl-C), kills the helper; the next request starts a
  new one. The helper dies with the worker (``PR_SET_PDEATHSIG``), shows as ``tesseract-lib``,
  and runs with one OpenMP thread unless ``OMP_THREAD_LIMIT`` says otherwise;
* the call sites: :func:`run_tesseract` and :func:`image_to_osd` take pytesseract's arguments and
  raise pytesseract's errors, so :func:`jobs.extract.tesseract.call` (the one place Tesseract is
  started) translates them as before, and tests count them by the same names.

Settings: ``ocr_engine = library`` (default) uses the helper when it can, ``program`` always
starts ``tesseract_cmd``; a ``tesseract_cmd`` other than ``tesseract`` (another build, a wrapper)
also means the program.
"""
from __future__ import annotations

import json
import os
import select
import shlex
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from pytesseract import pytesseract as _program

from pipeline.settings import Settings

_CHILD = str(Path(__file__).with_name("tessapi_child.py"))
DEFAULT_CMD = "tesseract"


class _Unusable(Exception):
    """This request (or this process) cannot use the helper: the program does it instead."""


class Helper:
    """One helper process and its pipes; owned by the process that started it."""

    def __init__(self) -> None:
        env = dict(os.environ)
        env.setdefault("OMP_THREAD_LIMIT", "1")
        self.owner = os.getpid()
        self.proc = subprocess.Popen([sys.executable, "-I", "-S", _CHILD], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
                                     close_fds=True)

    def request(self, message: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send one request and wait for its reply; on a timeout or an interruption the helper is
        killed (its state is unknown) and the exception goes on."""
        try:
            if message:
                body = json.dumps(message).encode()
                assert self.proc.stdin is not None
                try:
                    self.proc.stdin.write(struct.pack(">I", len(body)) + body)
                    self.proc.stdin.flush()
                except BrokenPipeError:  # it died since it was last asked
                    raise _program.TesseractError(self.proc.wait(), "the tesseract library helper exited") from None
            deadline = time.monotonic() + timeout if timeout > 0 else None
            head = self._read(4, deadline)
            return json.loads(self._read(struct.unpack(">I", head)[0], deadline))
        except BaseException:
            self.kill()
            raise

    def _read(self, size: int, deadline: float | None) -> bytes:
        assert self.proc.stdout is not None
        fd, out = self.proc.stdout.fileno(), b""
        while len(out) < size:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([fd], [], [], wait)
            if not ready:
                raise RuntimeError("Tesseract process timeout")  # pytesseract's words: call() knows them
            chunk = os.read(fd, size - len(out))
            if not chunk:
                status = self.proc.wait()
                raise _program.TesseractError(status, "the tesseract library helper exited")
            out += chunk
        return out

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGKILL)
            except OSError:
                pass
        try:
            self.proc.wait(timeout=5)
        except (subprocess.TimeoutExpired, ChildProcessError):
            pass
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                if pipe:
                    pipe.close()
            except OSError:
                pass

    @property
    def alive(self) -> bool:
        return self.owner == os.getpid() and self.proc.poll() is None


_helper: Helper | None = None
_lock = threading.Lock()  # one request at a time on the pipes (pages are parallel across processes)
_unusable_reason: str | None = None  # set once this process knows the helper cannot serve


def _forget_in_child() -> None:
    global _helper, _lock
    _helper = None  # a forked process must not talk on its parent's pipes
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_in_child)


def usable(settings: Settings) -> bool:
    """Whether requests go to the helper (else to the program)."""
    return (getattr(settings, "ocr_engine", "library") == "library" and settings.tesseract_cmd == DEFAULT_CMD
            and _unusable_reason is None)


def _get_helper(timeout: float) -> Helper:
    global _helper, _unusable_reason
    if _helper is not None and _helper.alive:
        return _helper
    if _helper is not None and _helper.owner == os.getpid():
        _helper.kill()
    _helper = None
    try:
        helper = Helper()
        hello = helper.request({}, max(timeout, 30.0))  # kills the helper itself when it fails
    except (OSError, RuntimeError, _program.TesseractError):
        hello = {}  # no Python to start, or it died or hung loading the library
    if "ok" not in hello:
        if hello:
            helper.kill()
        _unusable_reason = "the tesseract library could not be loaded"
        raise _Unusable(_unusable_reason)
    from jobs.extract.tesseract import tesseract_version

    if str(hello["ok"]) != tesseract_version(DEFAULT_CMD):
        helper.kill()
        _unusable_reason = "the tesseract library's version is not the program's"
        raise _Unusable(_unusable_reason)
    _helper = helper
    return helper


def stop() -> None:
    """End this process's helper (tests; a worker's helper otherwise dies with the worker)."""
    global _helper
    if _helper is not None and _helper.owner == os.getpid():
        _helper.kill()
    _helper = None


def helper_cpu_seconds() -> float:
    """CPU seconds of this process's live helper so far (benchmarks: a helper is counted in
    ``RUSAGE_CHILDREN`` only once it has exited and been reaped); 0 without one."""
    if _helper is None or not _helper.alive:
        return 0.0
    try:
        fields = Path(f"/proc/{_helper.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def parse_config(config: str) -> tuple[int, dict[str, str]]:
    """``--psm N --dpi D -c k=v ...`` as the program reads them: (psm, variables)."""
    psm, variables = 3, {}
    words = shlex.split(config)
    i = 0
    while i < len(words):
        word = words[i]
        if word == "--psm" and i + 1 < len(words):
            psm = int(words[i + 1])
        elif word == "--dpi" and i + 1 < len(words):
            variables["user_defined_dpi"] = str(int(words[i + 1]))
        elif word == "-c" and i + 1 < len(words) and "=" in words[i + 1]:
            name, value = words[i + 1].split("=", 1)
            variables[name] = value
        else:
            raise _Unusable("an option the helper does not take")
        i += 2
    return psm, variables


def _errors(reply: dict[str, Any], lang: str) -> dict[str, Any]:
    error = reply.get("error")
    if error is None:
        return reply
    if error == "language":
        raise _program.TesseractError(1, f"Failed loading language '{lang}'")
    if error == "variable":
        raise _Unusable("a variable the helper cannot set after initialisation")
    raise _program.TesseractError(1, f"the tesseract library failed ({error})")


def run_tesseract(input_filename: str, output_filename_base: str, extension: str, lang: str | None,
                  config: str = "", nice: int = 0, timeout: float = 0) -> None:
    """pytesseract's ``run_tesseract`` for TSV output, served by the helper when it can.

    Writes ``<output_filename_base>.tsv`` as the program would; anything the helper does not do
    (another output format, an option it does not know, an init-only variable) is handed to the
    program, as is every call once the library turned out unusable in this process."""
    try:
        if extension or not lang:
            raise _Unusable("not a TSV-only recognition")
        psm, variables = parse_config(config)
        variables.pop("tessedit_create_tsv", None)
        with _lock:
            helper = _get_helper(timeout)
            reply = helper.request({"op": "recognise", "image": str(input_filename), "lang": lang, "psm": psm,
                                    "vars": variables, "tsv": f"{output_filename_base}.tsv"}, timeout)
        _errors(reply, lang)
    except _Unusable:
        _program.run_tesseract(input_filename, output_filename_base, extension, lang, config, nice, timeout)


def image_to_osd(image: str, lang: str = "osd", config: str = "", nice: int = 0, output_type: str = "string",
                 timeout: float = 0) -> str:
    """pytesseract's ``image_to_osd`` (string output, an image path), served by the helper."""
    try:
        if config or lang != "osd" or output_type != "string":
            raise _Unusable("an OSD request the helper does not serve")
        with _lock:
            reply = _get_helper(timeout).request({"op": "osd", "image": str(image)}, timeout)
        return str(_errors(reply, lang)["ok"])
    except _Unusable:
        return _program.image_to_osd(image, lang=lang, config=config, nice=nice, output_type=output_type,
                                     timeout=timeout)
