"""bench/bench_renditions.py --quick on two small files: the command works, the table has its shape.

Runs our renditions plus whichever of libvips / ImageMagick / pyvips the machine has (CI has only
ours): every tool must make the same outputs at the same sizes, oriented, and be measured.
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "bench_renditions.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_renditions", BENCH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def make_inputs(folder: Path) -> tuple[Path, Path]:
    """A 600x400 JPEG stored sideways (EXIF orientation 6) and a two-page CCITT G4 fax TIFF."""
    from PIL import Image, ImageDraw

    photo = Image.new("RGB", (600, 400), (200, 120, 40))
    ImageDraw.Draw(photo).rectangle((0, 0, 149, 99), fill=(20, 60, 220))  # marks the stored top-left
    exif = Image.Exif()
    exif[0x0112] = 6
    jpeg = folder / "sideways.jpg"
    photo.save(jpeg, "JPEG", quality=90, exif=exif.tobytes())
    pages = []
    for shade in (0, 1):
        page = Image.new("1", (1728, 2156), 1)
        ImageDraw.Draw(page).rectangle((100, 100 + 400 * shade, 1600, 300 + 400 * shade), fill=0)
        pages.append(page)
    fax = folder / "fax.tif"
    pages[0].save(fax, "TIFF", compression="group4", dpi=(204, 196), save_all=True, append_images=pages[1:])
    return jpeg, fax


def test_quick_run_measures_every_present_tool_on_the_same_outputs(bench, tmp_path, capsys):
    jpeg, fax = make_inputs(tmp_path)
    out = tmp_path / "figures.json"
    assert bench.main(["--quick", "--files", str(jpeg), str(fax), "--json", str(out),
                       "--keep", str(tmp_path / "kept")]) == 0
    data = json.loads(out.read_text())
    tools = data["tools"]
    assert tools[0] == "medintake" and set(tools) <= set(bench.TOOLS)
    assert data["repeat"] == 1
    runs = {(r["file"], r["tool"], r["set"]): r for r in data["runs"]}
    assert len(runs) == 2 * len(tools) * 2  # files x tools x sets, each measured
    expected = {
        "sideways.jpg": {"thumbnail.jpg": (171, 256), "preview.webp": (400, 600), "web.jpg": (400, 600),
                         "full.png": (400, 600), "archival.tiff": (400, 600)},  # oriented: portrait
        "fax.tif": {"thumbnail.jpg": (205, 256), "preview.webp": (821, 1024), "web.jpg": (1641, 2048),
                    "full.png": (1728, 2156), "archival.tiff": (1728, 2156)},
    }
    for (name, tool, which), run in runs.items():
        assert run["cpu_s"] > 0 and run["wall_s"] > 0 and run["rss_mib"] > 1
        want = expected[name] if which == "full" else {
            k: v for k, v in expected[name].items() if k not in ("full.png", "archival.tiff")}
        assert set(run["outputs"]) == set(want), (tool, which)
        for filename, (width, height) in want.items():
            got = run["outputs"][filename]["size"]
            assert abs(got[0] - width) <= 1 and abs(got[1] - height) <= 1, (tool, filename, got)
        # Same picture as ours (a tool ignoring the orientation would differ by far more).
        assert run["web_mad_vs_ours"] < 6, (tool, name, run["web_mad_vs_ours"])
    assert set(data["startup"]) == set(tools)
    table = capsys.readouterr().out
    header = "| file | set | tool | wall s | CPU s | peak RSS MiB | output KiB | web.jpg MAD vs ours |"
    assert header in table
    for prefix in ("| sideways.jpg | default |", "| fax.tif | full |"):
        rows = [line for line in table.splitlines() if line.startswith(prefix)]
        assert len(rows) == len(tools) and all(line.count("|") == 13 for line in rows)
    assert "| start-up (no work) | " + " | ".join(tools) + " |" in table
    # Every tool's web.jpg is upright: the block stored top-left is shown top-right.
    from PIL import Image

    for tool in tools:
        with Image.open(tmp_path / "kept" / f"sideways.jpg-{tool}-default" / "renditions" / "web.jpg") as web:
            assert web.convert("RGB").getpixel((390, 10))[2] > 150, tool
            assert web.convert("RGB").getpixel((10, 10))[2] < 100, tool
