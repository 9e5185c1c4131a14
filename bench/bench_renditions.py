"""Benchmark: our renditions against libvips and ImageMagick on photos and a fax (time, CPU, peak RSS).

One command measures, on the same files in the same run, interleaved and repeated (median of N):

* ``medintake`` - ``jobs.convert.renditions.make_renditions`` in a fresh Python process, once with
  the default set (thumbnail, preview, web) and once with the full set (+ full.png, archival.tiff);
* ``vips``      - the libvips CLI (Debian's libvips-tools): one ``vips thumbnail`` per output, which
  decodes with shrink-on-load, applies the EXIF orientation and, for a file with an embedded ICC
  profile, converts to sRGB (``--export-profile srgb``);
* ``magick``    - ImageMagick (Debian's ``convert-im6.q16``, or IM7 ``magick``): one process, one
  decode, the same cascade as ours (``+clone -write`` for each output, then ``-resize`` to the next
  smaller size), ``-auto-orient``, ``-profile sRGB`` only when the file embeds a profile;
* ``pyvips``    - optional (when ``pyvips`` imports): libvips in one process, one decode into
  memory, then the same cascade as ours (``thumbnail_image`` of the previous output); it shows
  what libvips costs without the CLI's decode per output.

Every tool makes the same outputs: sizes and encoder settings are read from
``jobs.convert.renditions.RENDITIONS`` (JPEG quality / progressive / 4:2:0 / optimised Huffman,
WebP quality and method, PNG zlib level with adaptive filters, TIFF LZW + horizontal predictor),
metadata stripped, no ICC profile attached, page 1 of a multi-page file.

Each run of a tool on a file is its own child process (``sh -c`` for a chain of CLI calls); its CPU
time (user + sys) and peak RSS come from ``wait4``'s rusage, which covers the whole process tree.
Libraries run single-threaded (``VIPS_CONCURRENCY=1``, ``MAGICK_THREAD_LIMIT=1``,
``OMP_NUM_THREADS=1``) like our workers, one job per core. The start-up of each tool (Python with
our imports; ``vips``; ``convert``) is measured the same way and reported beside the figures.

Inputs are built at run time from ``../shared/corpus`` into a cache folder outside the repository
(``--workdir``); see bench/README-renditions.md for the recipe. Nothing is copied into the repo.

Usage (from the repository root)::

    nice -n 10 .venv/bin/python bench/bench_renditions.py --repeat 5 --json /tmp/renditions.json
    .venv/bin/python bench/bench_renditions.py --quick --files a.jpg b.tif   # any files, 1 run
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = REPO.parent / "shared" / "corpus"
DEFAULT_WORKDIR = Path.home() / ".cache" / "medintake" / "bench-renditions"
SETS = ("default", "full")
LOSSLESS = ("png", "archival")  # the two full-size outputs that only the full set makes
TOOLS = ("medintake", "vips", "magick", "pyvips")
SINGLE_THREAD = {"VIPS_CONCURRENCY": "1", "MAGICK_THREAD_LIMIT": "1", "OMP_NUM_THREADS": "1"}

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


# --- the output specification, read from our code ------------------------------------------------


@dataclass(frozen=True)
class Output:
    """One rendition every tool must make: file name, format, box (None = full size), options."""

    name: str
    filename: str
    format: str
    max_side: int | None
    options: dict[str, Any]


def outputs(which: str) -> list[Output]:
    """The outputs of a set, largest first (the cascade order), from ``renditions.RENDITIONS``."""
    from jobs.convert.renditions import RENDITIONS

    specs = [Output(s.name, s.filename, s.format, s.max_side, dict(s.save_options)) for s in RENDITIONS]
    return [o for o in specs if which == "full" or o.name not in LOSSLESS]


def fitted(size: tuple[int, int], max_side: int | None) -> tuple[int, int]:
    from jobs.convert.renditions import fitted_size

    return size if max_side is None else fitted_size(size, max_side)


@dataclass(frozen=True)
class Source:
    """What the driver knows of an input before timing: oriented size, ICC, bytes per row."""

    path: Path
    size: tuple[int, int]  # after orientation, page 1
    icc: bool
    bilevel: bool

    @classmethod
    def inspect(cls, path: Path) -> "Source":
        from PIL import Image

        from jobs.identify import open_image
        from pipeline.settings import Settings

        with open_image(path, Settings()) as img:
            width, height = img.size
            if img.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                width, height = height, width
            return cls(path, (width, height), bool(img.info.get("icc_profile")),
                       img.mode == "1")


# --- the tools' commands ----------------------------------------------------------------------


def ours_command(which: str, src: Path, out: Path) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--run-ours", which, str(src), str(out)]


def vips_command(which: str, src: Source, out: Path, vips: str) -> list[list[str]]:
    """One ``vips thumbnail`` per output: shrink-on-load, autorotate, sRGB if tagged."""
    cmds = []
    for o in outputs(which):
        width, height = fitted(src.size, o.max_side)
        cmd = [vips, "thumbnail", str(src.path), str(out / o.filename) + vips_save_options(o),
               str(width), "--height", str(height), "--size", "down"]
        if src.icc:
            cmd += ["--export-profile", "srgb"]
        cmds.append(cmd)
    return cmds


def vips_save_options(o: Output) -> str:
    """Our encoder settings in vips' ``file[options]`` syntax."""
    opts = o.options
    if o.format == "JPEG":
        parts = [f"Q={opts['quality']}", "strip"]
        if opts.get("optimize"):
            parts.append("optimize_coding")
        if opts.get("progressive"):
            parts.append("interlace")
        if opts.get("subsampling") == "4:2:0":
            parts.append("subsample_mode=on")
        return "[" + ",".join(parts) + "]"
    if o.format == "WEBP":
        return f"[Q={opts['quality']},effort={opts.get('method', 4)},strip]"
    if o.format == "PNG":  # Pillow filters every row adaptively: vips' "all"
        return f"[compression={opts.get('compress_level', 6)},filter=all,strip]"
    if o.format == "TIFF":
        predictor = ",predictor=horizontal" if opts.get("tiffinfo", {}).get(317) == 2 else ""
        return f"[compression=lzw{predictor},strip]"
    raise ValueError(o.format)


def magick_command(which: str, src: Source, out: Path, magick: list[str], srgb_icc: Path) -> list[str]:
    """One ImageMagick process: decode once, then the same cascade as ours with ``+clone -write``."""
    cmd = [*magick, "-respect-parentheses", str(src.path) + "[0]", "-auto-orient"]
    if src.icc:
        cmd += ["-profile", str(srgb_icc)]
    if not src.bilevel:  # IM's HEIC coder hands over YCbCr, which its TIFF writer would keep
        cmd += ["-colorspace", "sRGB"]
    cmd += ["-strip"]
    outs = outputs(which)
    current = src.size
    for index, o in enumerate(outs):
        size = fitted(src.size, o.max_side)
        if size != current:
            cmd += ["-resize", f"{size[0]}x{size[1]}!"]
            current = size
        settings = magick_save_options(o, size)
        if src.bilevel and o.max_side is None:  # IM would keep 1 bit; ours and vips' are 8-bit grey
            settings = ["-type", "Grayscale", "-depth", "8", *settings]
        target = f"{o.format.lower()}:{out / o.filename}"
        if index == len(outs) - 1:
            cmd += [*settings, target]
        else:
            cmd += ["(", "+clone", *settings, "-write", target, "+delete", ")"]
    return cmd


def magick_save_options(o: Output, size: tuple[int, int]) -> list[str]:
    opts = o.options
    if o.format == "JPEG":
        out = ["-quality", str(opts["quality"]), "-define", f"jpeg:optimize-coding={str(bool(opts.get('optimize'))).lower()}",
               "-interlace", "JPEG" if opts.get("progressive") else "None"]
        if opts.get("subsampling") == "4:2:0":
            out += ["-sampling-factor", "2x2,1x1,1x1"]
        return out
    if o.format == "WEBP":
        return ["-quality", str(opts["quality"]), "-define", f"webp:method={opts.get('method', 4)}"]
    if o.format == "PNG":  # filter 5 = adaptive, like Pillow
        return ["-define", f"png:compression-level={opts.get('compress_level', 6)}",
                "-define", "png:compression-filter=5"]
    if o.format == "TIFF":
        rows = max(1, opts.get("strip_size", 1 << 16) // max(1, size[0] * 3))  # our strip size
        out = ["-compress", "LZW", "-define", f"tiff:rows-per-strip={rows}"]
        if opts.get("tiffinfo", {}).get(317) == 2:
            out += ["-define", "tiff:predictor=2"]
        return out
    raise ValueError(o.format)


def pyvips_command(which: str, src: Source, out: Path) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--run-pyvips", which, str(src.path), str(out),
            f"{src.size[0]}x{src.size[1]}", "icc" if src.icc else "-"]


def find_vips() -> str | None:
    return shutil.which("vips")


def find_magick() -> list[str] | None:
    """The real ImageMagick: IM7 ``magick``, else Debian's IM6 binary (never a shell stand-in)."""
    for name in ("magick", "convert-im6.q16", "convert-im7.q16", "convert"):
        path = shutil.which(name)
        if not path:
            continue
        with open(path, "rb") as fh:
            if fh.read(2) == b"#!":  # a script standing in for the program
                continue
        try:
            version = subprocess.run([path, "-version"], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        if "ImageMagick" in version:
            return [path]
    return None


def pyvips_available() -> bool:
    done = subprocess.run([sys.executable, "-c", "import pyvips"], capture_output=True)
    return done.returncode == 0


def tool_versions(vips: str | None, magick: list[str] | None) -> dict[str, str]:
    import PIL
    import pillow_heif

    versions = {"python": sys.version.split()[0], "Pillow": PIL.__version__,
                "pillow-heif": pillow_heif.__version__,
                "libheif (pillow-heif)": pillow_heif.libheif_info().get("libheif", "?")}
    if vips:
        versions["libvips"] = subprocess.run([vips, "--version"], capture_output=True, text=True).stdout.strip()
    if magick:
        first = subprocess.run([*magick, "-version"], capture_output=True, text=True).stdout.splitlines()[0]
        versions["ImageMagick"] = first.replace("Version: ", "")
    return versions


# --- running inside a child process ---------------------------------------------------------------


def run_ours(which: str, src: Path, out: Path) -> None:
    """Our stage as the worker calls it; the default set by settings if they allow, else by hand."""
    from jobs.convert import renditions as r
    from jobs.identify import identify
    from pipeline.settings import Settings

    settings, handled = settings_for(which)
    out.mkdir(parents=True, exist_ok=True)
    if handled or which == "full":
        made = r.make_renditions(src, identify(src, settings), out, settings)
        names = {m.name for m in made}
        if names == {o.name for o in outputs(which)}:
            return
        if which == "full":
            raise SystemExit(f"make_renditions made {sorted(names)}, not the full set")
        shutil.rmtree(out / r.RENDITIONS_DIR)
    # No setting chooses the default set (yet): the same steps make_renditions takes, three outputs.
    target = out / r.RENDITIONS_DIR
    target.mkdir(parents=True, exist_ok=True)
    r.quiet_pillow_debug_logging()
    current = r.load_normalised(src, identify(src, settings), settings)
    full_size = current.size
    for spec in r.RENDITIONS:
        if spec.name in LOSSLESS:
            continue
        current = r.fit_within(current, full_size, spec.max_side)
        r.write_rendition(current, spec, target)


def settings_for(which: str) -> tuple["Any", bool]:
    """Settings asking for ``which`` set, and whether a setting chooses it (``renditions``)."""
    import dataclasses

    from pipeline.settings import Settings

    if "renditions" in {f.name for f in dataclasses.fields(Settings)}:
        return Settings().replace(renditions="lossless" if which == "full" else "standard"), True
    return Settings(), False  # before the setting existed: the five outputs, always


def run_ours_startup() -> None:
    """What a fresh worker process pays before the first pixel: the imports of the stage.

    numpy and jobs.dicom are imported lazily by the stage (the grey check, ``identify``), so they
    count here: ours minus this start-up is what a warm worker (forked from a server) spends.
    """
    import numpy  # noqa: F401
    import pillow_heif  # noqa: F401
    from PIL import Image

    import jobs.dicom  # noqa: F401

    import jobs.convert.renditions  # noqa: F401
    import jobs.identify  # noqa: F401
    from pipeline.settings import Settings

    Settings()
    Image.init()


def run_pyvips(which: str, src: Path, out: Path, size: str, icc: str) -> None:
    """libvips in one process the way a service would use it: decode once, then our cascade.

    The ``vips`` CLI decodes the file again for every output (shrink-on-load makes that cheap
    for a JPEG's small outputs, not for HEIC); here the oriented, sRGB image is decoded into
    memory once and each output is ``thumbnail_image`` of the one before, as ours does.
    """
    import pyvips

    width, height = (int(v) for v in size.split("x"))
    current = pyvips.Image.new_from_file(str(src)).autorot()
    if icc == "icc":
        current = current.icc_transform("srgb", embedded=True)
    current = current.copy_memory()
    for o in outputs(which):
        w, h = fitted((width, height), o.max_side)
        if (current.width, current.height) != (w, h):
            current = current.thumbnail_image(w, height=h, size="force").copy_memory()
        current.write_to_file(str(out / o.filename) + vips_save_options(o))


# --- measuring -------------------------------------------------------------------------------------


@dataclass
class Sample:
    wall: float
    cpu: float
    rss_mib: float


def measure(argv: list[str]) -> Sample:
    """Run ``argv`` as a child; CPU and peak RSS of its whole tree from wait4's rusage."""
    env = dict(os.environ, **SINGLE_THREAD)
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    stderr = proc.stderr.read() if proc.stderr else b""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)[:300]} exited {proc.returncode}: {stderr.decode(errors='replace')[-800:]}")
    return Sample(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)


def chain(commands: list[list[str]]) -> list[str]:
    """Several CLI calls as one child process tree."""
    return ["sh", "-c", " && ".join(shlex.join(c) for c in commands)]


@dataclass
class Plan:
    """What to run: the tools found, how to call them."""

    tools: list[str]
    vips: str | None
    magick: list[str] | None
    srgb_icc: Path

    def argv(self, tool: str, which: str, src: Source, out: Path) -> list[str]:
        if tool == "medintake":
            return ours_command(which, src.path, out)
        target = out / "renditions"
        target.mkdir(parents=True)  # as make_renditions does; the others expect the folder
        if tool == "vips":
            return chain(vips_command(which, src, target, self.vips or "vips"))
        if tool == "magick":
            return magick_command(which, src, target, self.magick or ["convert"], self.srgb_icc)
        if tool == "pyvips":
            return pyvips_command(which, src, target)
        raise ValueError(tool)

    def startup_argv(self, tool: str) -> list[str]:
        """The tool started and stopped with no work (the vips CLI through sh, like its runs)."""
        if tool == "medintake":
            return [sys.executable, str(Path(__file__).resolve()), "--run-ours-startup"]
        if tool == "vips":
            return chain([[self.vips or "vips", "--version"]])
        if tool == "magick":
            return [*(self.magick or ["convert"]), "-version"]
        if tool == "pyvips":
            return [sys.executable, "-c", "import pyvips"]
        raise ValueError(tool)


def run_all(plan: Plan, sources: list[Source], repeat: int, keep: Path) -> dict[str, Any]:
    """Interleave every (tool, set) on every file, ``repeat`` rounds; medians per cell."""
    cells = [(tool, which) for tool in plan.tools for which in SETS]
    samples: dict[tuple[str, str, str], list[Sample]] = {}
    startup: dict[str, list[Sample]] = {tool: [] for tool in plan.tools}
    for src in sources:
        src.path.read_bytes()  # into the page cache before the first timed run
    for round_no in range(repeat):
        for tool in plan.tools:
            startup[tool].append(measure(plan.startup_argv(tool)))
        for src in sources:
            shift = round_no % len(cells)
            for tool, which in cells[shift:] + cells[:shift]:  # rotate who goes first
                out = keep / f"{src.path.name}-{tool}-{which}"
                shutil.rmtree(out, ignore_errors=True)
                samples.setdefault((src.path.name, tool, which), []).append(
                    measure(plan.argv(tool, which, src, out)))
    results: dict[str, Any] = {"startup": {}, "runs": []}
    for tool, got in startup.items():
        results["startup"][tool] = median_of(got)
    for (name, tool, which), got in samples.items():
        out = keep / f"{name}-{tool}-{which}" / "renditions"
        results["runs"].append({"file": name, "tool": tool, "set": which, **median_of(got), "repeat": len(got),
                                "outputs": describe_outputs(out)})
    add_differences(results["runs"], keep)
    return results


def median_of(samples: list[Sample]) -> dict[str, float]:
    return {"wall_s": statistics.median(s.wall for s in samples),
            "cpu_s": statistics.median(s.cpu for s in samples),
            "rss_mib": statistics.median(s.rss_mib for s in samples)}


def describe_outputs(folder: Path) -> dict[str, dict[str, Any]]:
    from PIL import Image

    described = {}
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        with Image.open(path) as img:
            described[path.name] = {"bytes": path.stat().st_size, "size": list(img.size), "mode": img.mode}
    return described


def add_differences(runs: list[dict[str, Any]], keep: Path) -> None:
    """Mean absolute difference (0-255) of each tool's web.jpg from ours: orientation, colour, size."""
    import numpy as np
    from PIL import Image

    def pixels(name: str, tool: str, which: str, size: tuple[int, int] | None = None) -> "np.ndarray | None":
        path = keep / f"{name}-{tool}-{which}" / "renditions" / "web.jpg"
        if not path.exists():
            return None
        with Image.open(path) as img:
            img = img.convert("RGB")
            if size and img.size != size:
                img = img.resize(size, Image.Resampling.LANCZOS)
            return np.asarray(img, dtype=np.int16)

    for run in runs:
        ours = pixels(run["file"], "medintake", run["set"])
        if ours is None:
            continue
        theirs = pixels(run["file"], run["tool"], run["set"], (ours.shape[1], ours.shape[0]))
        if theirs is not None:
            run["web_mad_vs_ours"] = round(float(np.abs(theirs - ours).mean()), 2)


# --- the inputs --------------------------------------------------------------------------------------


PHOTO_CROP = (3008, 4000, 224, 304)  # 12.03 MP out of the 3456x4608 Sony photo, iMCU-aligned
FAX_PAGE = (1728, 2156)  # ITU-T T.4 fine mode: 1728 pels across, 196 lines/inch x 11 in
FAX_DPI = (204, 196)


def build_inputs(corpus: Path, workdir: Path) -> list[Path]:
    """The three files: a 12 MP camera JPEG (orientation 6), its HEIC, a 4-page G4 fax TIFF."""
    workdir.mkdir(parents=True, exist_ok=True)
    jpeg = workdir / "photo-12mp.jpg"
    heic = workdir / "photo-12mp.heic"
    fax = workdir / "fax-4-pages.tif"
    if not jpeg.exists():
        make_photo(corpus / "ocr" / "phone-photos-no-gt" / "linguistics_thesis_a.jpg", jpeg)
    if not heic.exists():
        make_heic(jpeg, heic)
    if not fax.exists():
        make_fax(corpus / "ocr" / "tesseract", fax)
    return [jpeg, heic, fax]


def make_photo(original: Path, dest: Path) -> None:
    """Lossless (DCT-domain) crop to 3008x4000 and rotation with jpegtran, then EXIF Orientation=6.

    The pixels stay the camera's own; stored sideways with orientation 6, as phones store
    portrait photos, so every tool has to rotate.
    """
    jpegtran = shutil.which("jpegtran")
    if not jpegtran:
        raise SystemExit("jpegtran not found: apt-get install -y libjpeg-turbo-progs")
    width, height, x, y = PHOTO_CROP
    with tempfile.TemporaryDirectory() as tmp:
        cropped = Path(tmp) / "crop.jpg"
        subprocess.run([jpegtran, "-copy", "all", "-perfect", "-crop", f"{width}x{height}+{x}+{y}",
                        "-outfile", str(cropped), str(original)], check=True)
        rotated = subprocess.run([jpegtran, "-copy", "all", "-perfect", "-rotate", "270", str(cropped)],
                                 check=True, capture_output=True).stdout
    dest.write_bytes(set_jpeg_orientation(rotated, 6))


def set_jpeg_orientation(data: bytes, value: int) -> bytes:
    """Rewrite the Orientation tag in a JPEG's EXIF IFD0 in place (the tag must exist)."""
    buf = bytearray(data)
    pos = 2
    while pos + 4 <= len(buf) and buf[pos] == 0xFF:
        marker, length = buf[pos + 1], struct.unpack(">H", buf[pos + 2:pos + 4])[0]
        if marker == 0xE1 and buf[pos + 4:pos + 10] == b"Exif\0\0":
            tiff = pos + 10
            endian = "<" if buf[tiff:tiff + 2] == b"II" else ">"
            ifd = tiff + struct.unpack(endian + "I", buf[tiff + 4:tiff + 8])[0]
            for index in range(struct.unpack(endian + "H", buf[ifd:ifd + 2])[0]):
                entry = ifd + 2 + 12 * index
                if struct.unpack(endian + "H", buf[entry:entry + 2])[0] == 0x0112:
                    buf[entry + 8:entry + 10] = struct.pack(endian + "H", value)
                    return bytes(buf)
        if marker == 0xDA:
            break
        pos += 2 + length
    raise ValueError("no EXIF Orientation tag to rewrite")


HEIC_QUALITY = 60


def make_heic(jpeg: Path, dest: Path) -> None:
    """The same photo, oriented, encoded by pillow-heif (x265) - the corpus has no real HEIC."""
    import pillow_heif
    from PIL import Image, ImageOps

    pillow_heif.register_heif_opener()
    with Image.open(jpeg) as img:
        upright = ImageOps.exif_transpose(img)
        upright.info = {}
        upright.save(dest, "HEIF", quality=HEIC_QUALITY)


def make_fax(tesseract_dir: Path, dest: Path) -> None:
    """Four real scanned pages resampled to fax fine mode (204x196 dpi), 1-bit, CCITT G4, one TIFF.

    Page 1 and 2 are the UNLV-ISRI 300 dpi bilevel pages (page 2 a landscape spread, reduced to
    the fax width), 3 and 4 the tesseract test scans (eurotext at 300 dpi, phototest at 200 dpi)
    centred on a white page, as a fax of a partial page looks.
    """
    from PIL import Image

    pages = []
    for name in ("unlv_8087_054.3B.tif", "unlv_8071_093.3B.tif", "eurotext.tif", "phototest.tif"):
        with Image.open(tesseract_dir / name) as scan:
            dpi = scan.info.get("dpi", (300, 300))
            grey = scan.convert("L")
        size = (round(grey.width * FAX_DPI[0] / float(dpi[0])), round(grey.height * FAX_DPI[1] / float(dpi[1])))
        if size[0] > FAX_PAGE[0]:  # wider than the fax line (a landscape page): reduced to fit, as faxes do
            size = (FAX_PAGE[0], round(size[1] * FAX_PAGE[0] / size[0]))
        grey = grey.resize(size, Image.Resampling.LANCZOS)
        page = Image.new("L", FAX_PAGE, 255)
        page.paste(grey.crop((0, 0, min(size[0], FAX_PAGE[0]), min(size[1], FAX_PAGE[1]))),
                   (max(0, (FAX_PAGE[0] - size[0]) // 2), max(0, (FAX_PAGE[1] - size[1]) // 2)))
        pages.append(page.point(lambda v: 255 if v >= 128 else 0).convert("1", dither=Image.Dither.NONE))
    pages[0].save(dest, "TIFF", compression="group4", dpi=FAX_DPI, save_all=True, append_images=pages[1:])


def srgb_profile(workdir: Path) -> Path:
    from PIL import ImageCms

    path = workdir / "sRGB.icc"
    if not path.exists():
        path.write_bytes(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    return path


# --- the report -----------------------------------------------------------------------------------------


def describe_source(src: Source) -> str:
    from PIL import Image

    from jobs.identify import open_image
    from pipeline.settings import Settings

    with open_image(src.path, Settings()) as img:
        pages = getattr(img, "n_frames", 1)
        orientation = img.getexif().get(0x0112, 1)
        stored = img.size
        fmt, mode = img.format, img.mode
        compression = img.info.get("compression", "")
    extra = f", {pages} pages, {compression}" if pages > 1 else ""
    return (f"`{src.path.name}`: {fmt} {mode} {stored[0]}x{stored[1]} stored"
            f" ({stored[0] * stored[1] / 1e6:.1f} MP), orientation {orientation}, "
            f"{'ICC' if src.icc else 'no ICC'}{extra}, {src.path.stat().st_size / 2**20:.2f} MiB")


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b > 0 else "-"


def table(results: dict[str, Any], tools: list[str]) -> str:
    """Markdown: per file and set, each tool's medians, bytes, and ours / theirs ratios."""
    lines = ["| file | set | tool | wall s | CPU s | peak RSS MiB | output KiB | web.jpg MAD vs ours "
             "| ours/tool CPU | ours/tool wall | ours/tool RSS | ours warm/tool CPU |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    warm_cpu = results["startup"]["medintake"]["cpu_s"]
    runs = {(r["file"], r["tool"], r["set"]): r for r in results["runs"]}
    for name in dict.fromkeys(r["file"] for r in results["runs"]):
        for which in SETS:
            ours = runs.get((name, "medintake", which))
            for tool in tools:
                run = runs.get((name, tool, which))
                if not run or not ours:
                    continue
                kib = sum(o["bytes"] for o in run["outputs"].values()) / 1024
                mad = run.get("web_mad_vs_ours", "-")
                lines.append(
                    f"| {name} | {which} | {tool} | {run['wall_s']:.2f} | {run['cpu_s']:.2f} | {run['rss_mib']:.0f} "
                    f"| {kib:,.0f} | {mad} | "
                    + (f" | | | (warm {ours['cpu_s'] - warm_cpu:.2f} s) |" if tool == "medintake" else
                       f"{ratio(ours['cpu_s'], run['cpu_s'])} | {ratio(ours['wall_s'], run['wall_s'])} "
                       f"| {ratio(ours['rss_mib'], run['rss_mib'])} | {ratio(ours['cpu_s'] - warm_cpu, run['cpu_s'])} |"))
    lines.append("")
    lines.append("| start-up (no work) | " + " | ".join(tools) + " |")
    lines.append("|---" * (len(tools) + 1) + "|")
    for key, label in (("cpu_s", "CPU s"), ("wall_s", "wall s"), ("rss_mib", "peak RSS MiB")):
        lines.append(f"| {label} | " + " | ".join(f"{results['startup'][t][key]:.3f}" if key != "rss_mib"
                                                   else f"{results['startup'][t][key]:.0f}" for t in tools) + " |")
    return "\n".join(lines)


def outputs_table(results: dict[str, Any]) -> str:
    """Per file, full set: each output's size in pixels and KiB per tool (same sizes is the point)."""
    lines = ["| file | output | " + " | ".join(dict.fromkeys(r["tool"] for r in results["runs"])) + " |"]
    tools = list(dict.fromkeys(r["tool"] for r in results["runs"]))
    lines.append("|---" * (len(tools) + 2) + "|")
    runs = {(r["file"], r["tool"]): r for r in results["runs"] if r["set"] == "full"}
    for name in dict.fromkeys(r["file"] for r in results["runs"]):
        for o in outputs("full"):
            cells = []
            for tool in tools:
                got = runs.get((name, tool), {}).get("outputs", {}).get(o.filename)
                cells.append(f"{got['size'][0]}x{got['size'][1]} {got['mode']}, {got['bytes'] / 1024:,.0f}"
                             if got else "-")
            lines.append(f"| {name} | {o.filename} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help="where the inputs are built")
    parser.add_argument("--files", type=Path, nargs="+", help="measure these files instead of building inputs")
    parser.add_argument("--repeat", type=int, default=5, help="rounds; the median is reported")
    parser.add_argument("--tools", default=",".join(TOOLS), help="subset of " + ",".join(TOOLS))
    parser.add_argument("--quick", action="store_true", help="one round (a smoke test)")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    parser.add_argument("--keep", type=Path, help="keep the last round's outputs here (default: removed)")
    parser.add_argument("--run-ours", nargs=3, metavar=("SET", "SRC", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--run-ours-startup", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--run-pyvips", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.run_ours:
        run_ours(args.run_ours[0], Path(args.run_ours[1]), Path(args.run_ours[2]))
        return 0
    if args.run_ours_startup:
        run_ours_startup()
        return 0
    if args.run_pyvips:
        which, src, out, size, icc = args.run_pyvips
        run_pyvips(which, Path(src), Path(out), size, icc)
        return 0

    vips, magick = find_vips(), find_magick()
    wanted = [t for t in args.tools.split(",") if t]
    found = {"medintake": True, "vips": bool(vips), "magick": bool(magick),
             "pyvips": "pyvips" in wanted and pyvips_available()}
    for tool in wanted:
        if not found.get(tool):
            print(f"{tool}: not installed, skipped (see bench/README-renditions.md)", file=sys.stderr)
    tools = [t for t in TOOLS if t in wanted and found[t]]
    files = args.files or build_inputs(args.corpus, args.workdir)
    repeat = 1 if args.quick else args.repeat
    sources = [Source.inspect(f) for f in files]
    with tempfile.TemporaryDirectory(prefix="bench-renditions-") as tmp:
        keep = args.keep or Path(tmp)
        keep.mkdir(parents=True, exist_ok=True)
        plan = Plan(tools, vips, magick, srgb_profile(Path(tmp)))
        results = run_all(plan, sources, repeat, keep)
    results.update({"versions": tool_versions(vips, magick), "repeat": repeat, "cpus": os.cpu_count(),
                    "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "tools": tools,
                    "files": [describe_source(s) for s in sources]})
    print("\n".join(f"- {line}" for line in results["files"]))
    print("- " + ", ".join(f"{k} {v}" for k, v in results["versions"].items()))
    print(f"- {results['date']}, {results['cpus']} CPUs, median of {repeat} interleaved rounds\n")
    print(table(results, tools))
    print()
    print(outputs_table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
