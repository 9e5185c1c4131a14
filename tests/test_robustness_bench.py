"""bench/robustness.py over 5 of pydicom's installed test files (no download): the JSON's shape."""
import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench" / "robustness.py"


def test_robustness_bench_on_five_dicom_files(tmp_path):
    spec = importlib.util.spec_from_file_location("robustness_bench", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out, md = tmp_path / "r.json", tmp_path / "r.md"
    code = mod.main(["--suite", "pydicom", "--limit", "5", "--quiet", "--cache", str(tmp_path / "cache"),
                     "--json", str(out), "--md", str(md)])
    data = json.loads(out.read_text())
    summary = data["summary"]
    assert summary["files"] == 5 == len(data["results"])
    assert sum(summary["counts"]["pydicom"].values()) == 5
    assert all(o == "ok" or o.startswith(("rejected:", "error:")) or o in ("crash", "timeout")
               for o in summary["counts"]["pydicom"])
    assert summary["times"]["pydicom"]["files"] == 5
    assert summary["times"]["pydicom"]["max_s"] >= summary["times"]["pydicom"]["median_s"] >= 0
    for r in data["results"]:
        assert r["suite"] == "pydicom" and r["seconds"] >= 0
        assert "exception" not in r or "message" not in r  # type and frames only
    assert code == (1 if summary["crashes_timeouts_errors"] else 0)
    assert not (tmp_path / "cache").exists()  # pydicom's files are read in place, nothing fetched
    assert "| pydicom | 5 |" in md.read_text()
