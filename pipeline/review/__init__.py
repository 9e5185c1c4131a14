"""The review page: one self-contained HTML file showing what the pipeline saw in a document.

``medintake show DOCUMENT_ID`` calls :func:`write`. The page is built from the configured
database and store only (SQLite + bucket folder here, RDS + S3 for an operator on AWS), so it
shows exactly what a consumer of the results would get.

It holds PHI by nature (text, entities, the file name), so it is written owner-only (0600, in a
0700 folder when the folder is ours), never uploaded anywhere, and nothing about it is logged but
ids and counts. Parts: :mod:`.collect` (rows and objects), :mod:`.images` (page pictures in the
boxes' frame), :mod:`.spans` and :mod:`.entities` (highlights and groups), :mod:`.render` (HTML,
with ``page.html``, ``page.css`` and ``page.js`` shipped as package data).
"""
from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from pipeline.settings import Settings

log = logging.getLogger(__name__)

REVIEW_DIR = "review"


def default_path(settings: Settings, document_id: str) -> Path:
    """<data_dir>/review/<document_id>.html: inside the data folder, which already holds PHI."""
    return Path(settings.data_dir) / REVIEW_DIR / f"{document_id}.html"


def build(settings: Settings, document_id: str, store: Any | None = None) -> str:
    """The page's HTML for one document; raises DocumentNotFound for an unknown id."""
    from pipeline.review import collect, images, render
    from pipeline.store import open_store

    started = time.perf_counter()
    store = store or open_store(settings)
    data = collect.load(settings, document_id, store)
    pictures: dict[int, str] = {}
    if data.pages:
        needs_original = any(p.get("source") == "text-layer" for p in data.pages)
        needs_searchable = any(p.get("source") != "text-layer" for p in data.pages)
        original = None
        if needs_original and data.document.get("object_key"):
            original = collect.get_optional(store, data.document["object_key"])
            if original is not None and not original.startswith(b"%PDF"):
                original = None  # an image upload: its pages come from searchable.pdf
        searchable = collect.get_optional(store, data.results_prefix + collect.SEARCHABLE) if needs_searchable else None
        pictures = images.page_images(data.pages, original, searchable)
    blobs: dict[str, bytes] = {}
    for r in data.renditions:
        if r["mime"] in render.INLINE_MIME and int(r["bytes"] or 0) <= render.INLINE_RENDITION_BYTES:
            blob = collect.get_optional(store, r["object_key"])
            if blob is not None:
                blobs[r["name"]] = blob
    page = render.page(data, pictures, blobs)
    log.info("review page built: document %s, %d pages, %d entities, %d bytes, %.2f s", document_id,
             len(data.pages or []), len((data.entities or {}).get("Entities", [])), len(page),
             time.perf_counter() - started)
    return page


def write(settings: Settings, document_id: str, out: Path | None = None) -> Path:
    """Build the page and write it owner-only (0600), atomically; returns its path."""
    page = build(settings, document_id)
    path = Path(out) if out is not None else default_path(settings, document_id)
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700)  # a folder we make is owner-only too
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".review-", suffix=".tmp")  # mkstemp: 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(page)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path.resolve()
