"""The convert job in the whole local pipeline: a long born-digital PDF gets page 1's renditions only.

Why: the renditions contract (SPEC 5.3) is thumbnail, preview and web image of an image or of page
1 of a PDF; at Batch scale a long PDF must not cost one rendering per page. Through the real local
pipeline (dispatcher, array child, SQLite rows, folder store, manifest): a 30-page text PDF is
never OCR'd, ends with exactly three renditions (rows and stored objects), the job's result and the
manifest say which page they show, and the stages report their own CPU seconds next to their wall seconds.
"""
from __future__ import annotations

import json
from pathlib import Path

from compute.runtime import LocalRuntime
from pipeline import repository
from pipeline.settings import Settings
from test_renditions_pdf import text_pdf


def test_thirty_page_pdf_renditions_are_page_one_only(tmp_path: Path) -> None:
    settings = Settings.load(data_dir=tmp_path / "data", workers=1, job_shape="array")
    src = tmp_path / "bundle.pdf"
    src.write_bytes(text_pdf(30, colour_first=True))
    with LocalRuntime(settings) as rt:
        (sub,) = rt.submit_many([(src.name, src)])
        rt.run_until_final([sub.document_id], max_seconds=240)
        doc = repository.get_document(settings, sub.document_id)
        outputs = rt.outputs(sub.document_id)
    assert doc.status == "COMPLETED" and doc.page_count == 30
    manifest = json.loads(Path(outputs["manifest"]).read_text())
    assert manifest["ocr_pages"] == 0  # born-digital: never OCR'd
    assert sorted(k for k in outputs if k.startswith("renditions/")) == [
        "renditions/preview", "renditions/thumbnail", "renditions/web"]
    folder = Path(outputs["renditions/web"]).parent
    assert sorted(p.name for p in folder.iterdir()) == ["preview.webp", "thumbnail.jpg", "web.jpg"]
    assert repository.counts_for(settings, sub.document_id)["renditions"] == 3
    (row,) = repository.jobs_for(settings, sub.document_id, 1)
    convert = row.result["stages"]["convert"]
    assert convert["rendition_page"] == 1 and convert["renditions"] == 3
    stages = manifest["timings"]["convert"]["stages"]
    assert 0 < stages["convert_cpu"] and 0 < stages["convert"]
    assert 0 < manifest["timings"]["entities"]["stages"]["entities_cpu"]
    assert manifest["renditions"] == {"page": 1, "count": 3}  # the manifest says which page they show
