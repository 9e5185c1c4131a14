"""The helper process that keeps Tesseract's library loaded (see :mod:`jobs.extract.tessapi`).

Started as ``python -I -S tessapi_child.py`` by the worker, so it imports the standard library
only (no site, no project code: a small process that starts in a few milliseconds). It speaks
length-prefixed JSON on stdin/stdout, one request at a time:

* ``{"op": "recognise", "image": P, "lang": L, "psm": N, "vars": {...}, "tsv": OUT}``: what
  ``tesseract P OUTBASE -l L --psm N -c k=v... -c tessedit_create_tsv=1`` does for one image,
  writing the same TSV file (header line included) to ``OUT``;
* ``{"op": "osd", "image": P}``: the text ``tesseract P stdout -l osd --psm 0`` prints.

Each language set is initialised once (the ~0.2 CPU s the program pays for every page) and kept
for the next pages (at most :data:`KEEP_LANGUAGES` sets, the least recently used is ended).
Variables set for one request are put back to their defaults before the next, so every page is
read as a fresh program would read it. Replies are ``{"ok": ...}`` or ``{"error": KIND}``; they
never carry recognised text. The process exits at end of input and is killed with its parent
(``PR_SET_PDEATHSIG``).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import signal
import struct
import sys
from collections import OrderedDict

KEEP_LANGUAGES = 3
PSM_OSD_ONLY = 0
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """The kernel kills us when the worker that started us dies (a crash, SIGKILL, a timeout)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        with open("/proc/self/comm", "w", encoding="ascii") as fh:
            fh.write("tesseract-lib")  # ps, and the page deadline's clean-up, see a tesseract
    except (OSError, AttributeError):
        pass


def _load(sonames: tuple[str, ...], name: str) -> ctypes.CDLL:
    """The library by its usual sonames (Debian 12: libtesseract.so.5, liblept.so.5; newer
    Leptonica: libleptonica.so.6), else where ctypes finds it (which may run ldconfig or gcc)."""
    for candidate in sonames:
        try:
            return ctypes.CDLL(candidate)
        except OSError:
            continue
    path = ctypes.util.find_library(name)
    if path:
        return ctypes.CDLL(path)
    raise OSError("library not found")


class Library:
    """ctypes declarations of the part of Tesseract's C API (capi.h) and Leptonica used here."""

    def __init__(self) -> None:
        tess = _load(("libtesseract.so.5",), "tesseract")
        lept = _load(("libleptonica.so.6", "liblept.so.5"), "lept")
        p, c, i = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
        self.tess, self.lept = tess, lept
        for name, restype, argtypes in (
            ("TessVersion", c, []),
            ("TessBaseAPICreate", p, []),
            ("TessBaseAPIDelete", None, [p]),
            ("TessBaseAPIEnd", None, [p]),
            ("TessBaseAPIInit3", i, [p, c, c]),
            ("TessBaseAPISetVariable", i, [p, c, c]),
            ("TessBaseAPIGetIntVariable", i, [p, c, ctypes.POINTER(i)]),
            ("TessBaseAPIGetBoolVariable", i, [p, c, ctypes.POINTER(i)]),
            ("TessBaseAPIGetDoubleVariable", i, [p, c, ctypes.POINTER(ctypes.c_double)]),
            ("TessBaseAPIGetStringVariable", c, [p, c]),
            ("TessBaseAPISetPageSegMode", None, [p, i]),
            ("TessBaseAPISetInputName", None, [p, c]),
            ("TessBaseAPISetImage2", None, [p, p]),
            ("TessBaseAPIRecognize", i, [p, p]),
            ("TessBaseAPIGetTsvText", p, [p, i]),
            ("TessBaseAPIDetectOrientationScript", i, [p, ctypes.POINTER(i), ctypes.POINTER(ctypes.c_float),
                                                        ctypes.POINTER(c), ctypes.POINTER(ctypes.c_float)]),
            ("TessBaseAPIClear", None, [p]),
            ("TessDeleteText", None, [p]),
        ):
            fn = getattr(tess, name)
            fn.restype, fn.argtypes = restype, argtypes
        lept.pixRead.restype, lept.pixRead.argtypes = p, [c]
        lept.pixDestroy.restype, lept.pixDestroy.argtypes = None, [ctypes.POINTER(p)]

    def version(self) -> str:
        return self.tess.TessVersion().decode("ascii", "replace")


class Api:
    """One initialised TessBaseAPI for one language set."""

    def __init__(self, lib: Library, lang: str) -> None:
        self.lib, self.t = lib, lib.tess
        self.handle = self.t.TessBaseAPICreate()
        if self.t.TessBaseAPIInit3(self.handle, None, lang.encode("ascii")) != 0:
            self.close()
            raise LookupError(lang)
        self.defaults: dict[str, str] = {}  # variables changed since Init, with their Init values
        self.changed: set[str] = set()

    def close(self) -> None:
        if self.handle:
            self.t.TessBaseAPIEnd(self.handle)
            self.t.TessBaseAPIDelete(self.handle)
            self.handle = None

    def _current(self, name: str) -> str | None:
        key = name.encode("ascii")
        number, real = ctypes.c_int(), ctypes.c_double()
        if self.t.TessBaseAPIGetIntVariable(self.handle, key, ctypes.byref(number)):
            return str(number.value)
        if self.t.TessBaseAPIGetBoolVariable(self.handle, key, ctypes.byref(number)):
            return "1" if number.value else "0"
        if self.t.TessBaseAPIGetDoubleVariable(self.handle, key, ctypes.byref(real)):
            return repr(real.value)
        text = self.t.TessBaseAPIGetStringVariable(self.handle, key)
        return None if text is None else text.decode("utf-8", "replace")

    def configure(self, variables: dict[str, str]) -> str | None:
        """Put back every variable the last request changed, then set this request's; the name of
        one that cannot be set after Init (an init-only one) or does not exist, else None."""
        for name in sorted(self.changed - set(variables)):
            self.t.TessBaseAPISetVariable(self.handle, name.encode("ascii"), self.defaults[name].encode("utf-8"))
        self.changed &= set(variables)
        for name, value in variables.items():
            if name not in self.defaults:
                default = self._current(name)
                if default is None:
                    return name
                self.defaults[name] = default
            if not self.t.TessBaseAPISetVariable(self.handle, name.encode("ascii"), value.encode("utf-8")):
                return name
            self.changed.add(name)
        return None

    def set_image(self, path: str) -> bool:
        pix = ctypes.c_void_p(self.lib.lept.pixRead(path.encode()))
        if not pix.value:
            return False
        self.t.TessBaseAPISetInputName(self.handle, path.encode())
        self.t.TessBaseAPISetImage2(self.handle, pix)  # the API keeps its own reference
        self.lib.lept.pixDestroy(ctypes.byref(pix))
        return True


class Server:
    def __init__(self, lib: Library) -> None:
        self.lib = lib
        self.apis: OrderedDict[str, Api] = OrderedDict()

    def api(self, lang: str) -> Api:
        if lang in self.apis:
            self.apis.move_to_end(lang)
            return self.apis[lang]
        api = Api(self.lib, lang)
        self.apis[lang] = api
        while len(self.apis) > KEEP_LANGUAGES:
            self.apis.popitem(last=False)[1].close()
        return api

    def handle(self, request: dict) -> dict:
        op = request.get("op")
        try:
            api = self.api("osd" if op == "osd" else request["lang"])
        except LookupError:
            return {"error": "language"}
        try:
            if op == "recognise":
                return self.recognise(api, request)
            if op == "osd":
                return self.osd(api, request)
            return {"error": "request"}
        finally:
            if api.handle:
                self.lib.tess.TessBaseAPIClear(api.handle)

    def recognise(self, api: Api, request: dict) -> dict:
        bad = api.configure(request.get("vars", {}))
        if bad is not None:
            return {"error": "variable", "name": bad}
        self.lib.tess.TessBaseAPISetPageSegMode(api.handle, int(request.get("psm", 3)))
        if not api.set_image(request["image"]):
            return {"error": "image"}
        if self.lib.tess.TessBaseAPIRecognize(api.handle, None) < 0:
            return {"error": "recognition"}
        text = self.lib.tess.TessBaseAPIGetTsvText(api.handle, 0)
        try:
            body = ctypes.string_at(text) if text else b""
        finally:
            if text:
                self.lib.tess.TessDeleteText(text)
        with open(request["tsv"], "wb") as fh:  # as the program's TSV renderer writes it
            fh.write(b"level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext\n")
            fh.write(body)
        return {"ok": True}

    def osd(self, api: Api, request: dict) -> dict:
        api.configure({})
        self.lib.tess.TessBaseAPISetPageSegMode(api.handle, PSM_OSD_ONLY)
        if not api.set_image(request["image"]):
            return {"error": "image"}
        deg, conf, script, script_conf = ctypes.c_int(), ctypes.c_float(), ctypes.c_char_p(), ctypes.c_float()
        if not self.lib.tess.TessBaseAPIDetectOrientationScript(
                api.handle, ctypes.byref(deg), ctypes.byref(conf), ctypes.byref(script), ctypes.byref(script_conf)):
            return {"error": "osd"}  # the program says "Too few characters" and fails the same way
        rotate = {0: 0, 1: 270, 2: 180, 3: 90}[(deg.value // 90) % 4]  # tesseract's OrientationIdToValue
        name = (script.value or b"").decode("ascii", "replace")
        return {"ok": f"Page number: 0\nOrientation in degrees: {deg.value}\nRotate: {rotate}\n"
                      f"Orientation confidence: {conf.value:.2f}\nScript: {name}\n"
                      f"Script confidence: {script_conf.value:.2f}\n"}


def read_message(stream) -> dict | None:
    head = stream.read(4)
    if len(head) < 4:
        return None
    (size,) = struct.unpack(">I", head)
    return json.loads(stream.read(size))


def write_message(stream, message: dict) -> None:
    body = json.dumps(message).encode()
    stream.write(struct.pack(">I", len(body)) + body)
    stream.flush()


def main() -> None:
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the worker's to handle
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but replies on the reply pipe
    try:
        lib = Library()
    except (OSError, AttributeError):
        write_message(stdout, {"error": "library"})
        return
    write_message(stdout, {"ok": lib.version()})
    server = Server(lib)
    while True:
        request = read_message(stdin)
        if request is None:
            break
        try:
            reply = server.handle(request)
        except Exception as exc:  # noqa: BLE001 - a bad request or a full disk fails that request only
            reply = {"error": type(exc).__name__}
        write_message(stdout, reply)
    for api in server.apis.values():
        api.close()


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    os._exit(0)
