"""The review page's HTML: pages (picture, word boxes, text with highlights), entities, renditions,
manifest and job timeline, poured into ``page.html`` with ``page.css`` and ``page.js`` inline.

One file, no request: pictures are data: URIs and a Content-Security-Policy forbids anything
else (``default-src 'none'``; the one script is allowed by its hash). A 300-page document stays
quick because each page's picture waits in a <template> and its word boxes in a JSON block until
the page comes near the viewport, and off-screen pages skip layout (content-visibility).
"""
from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from datetime import datetime
from importlib import resources
from typing import Any

from pipeline.review import entities as ents
from pipeline.review import spans as spanmod
from pipeline.review.collect import ReviewData

#: Browser-displayable renditions are inlined up to this size; bigger ones (full PNG) are listed.
INLINE_RENDITION_BYTES = 600_000
SEP = " \u00b7 "
INLINE_MIME = ("image/jpeg", "image/webp", "image/png", "image/gif")


def _asset(name: str) -> str:
    return resources.files("pipeline.review").joinpath(name).read_text(encoding="utf-8")


def e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _json_script(value: Any) -> str:
    """JSON safe inside <script>: no "</script>", no "<!--" (escaped as \\u003c)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c").replace(">", "\\u003e")


def _when(value: Any) -> str:
    if isinstance(value, datetime):
        return value.replace(microsecond=0, tzinfo=None).isoformat(sep=" ") + " UTC"
    return e(value)


def confidence_class(conf: Any) -> str:
    """Box colour class: h >= 90, m >= 70, l below, t no confidence (a PDF text layer)."""
    if conf is None:
        return "t"
    conf = float(conf)
    return "h" if conf >= 90 else "m" if conf >= 70 else "l"


def turn(page: dict[str, Any]) -> int:
    """Clockwise degrees between pages.json's frame and the upright picture.

    Only text-layer pages: their boxes are in the unrotated crop box while the picture is shown
    as a viewer shows it (/Rotate applied). OCR boxes are already in the picture's frame (the
    recorded rotation is what OCR applied to read the page).
    """
    if page.get("source") != "text-layer":
        return 0
    try:
        return int(page.get("rotation") or 0) % 360
    except (TypeError, ValueError):
        return 0


def display_size(page: dict[str, Any]) -> tuple[float, float]:
    width, height = float(page.get("width") or 0), float(page.get("height") or 0)
    return (height, width) if turn(page) in (90, 270) else (width, height)


def display_box(box: list[float], width: float, height: float, degrees: int) -> tuple[float, ...]:
    """A box of the unrotated width x height frame, in the frame turned ``degrees`` clockwise."""
    x0, y0, x1, y1 = (float(v) for v in box)
    if degrees == 90:
        return height - y1, x0, height - y0, x1
    if degrees == 180:
        return width - x1, height - y1, width - x0, height - y0
    if degrees == 270:
        return y0, width - x1, y1, width - x0
    return x0, y0, x1, y1


def word_boxes(page: dict[str, Any], start: int = 0, marks: list[tuple[int, int, str]] = ()) -> list[Any]:
    """[left %, top %, width %, height %, classes, title] per word (None for a word without a box).

    ``marks`` are entity spans in text.txt offsets (``start`` is the page's text_offset) with their
    category: a word inside one is tinted with it on the picture too ("on-medication"…), so the
    medications and conditions stand out on the page as in the text.
    """
    raw_w, raw_h = float(page.get("width") or 0), float(page.get("height") or 0)
    width, height = display_size(page)
    degrees = turn(page)
    layer = page.get("source") == "text-layer"  # its "confidence" is a constant, not a measurement
    out: list[Any] = []
    for w in page.get("words") or []:
        box = w.get("bbox")
        if not box or width <= 0 or height <= 0:
            out.append(None)
            continue
        x0, y0, x1, y1 = display_box(box, raw_w, raw_h, degrees)
        conf = w.get("confidence")
        title = f"{w.get('text', '')} ({conf:.0f}%)" if conf is not None and not layer else str(w.get("text", ""))
        css = "t" if layer else confidence_class(conf)
        if marks and isinstance(w.get("offset"), int):
            ws = start + w["offset"]
            we = ws + len(str(w.get("text", "")))
            hit = next((cat for b, e_, cat in marks if ws < e_ and b < we), None)
            if hit:
                css += " on-" + hit
        out.append([round(100 * x0 / width, 4), round(100 * y0 / height, 4), round(100 * (x1 - x0) / width, 4),
                    round(100 * (y1 - y0) / height, 4), css, title])
    return out


def _entity_marks(placed: list[spanmod.Span], start: int, end: int) -> list[tuple[int, int, str]]:
    """(begin, end, category) of the entity highlights (not attributes) within one page."""
    out = []
    for span in placed:
        if span.kind == "entity" and start <= span.begin and span.end <= end:
            cat = next((c[4:] for c in span.css.split() if c.startswith("cat-")), "")
            if cat:
                out.append((span.begin, span.end, cat))
    return out


def pages_html(data: ReviewData, images: dict[int, str], placed: list[spanmod.Span]) -> str:
    text = data.text or ""
    records = data.pages or []
    ranges = spanmod.page_ranges(text, records) if (records or text) else []
    by_no = {int(p.get("page_no", i + 1)): p for i, p in enumerate(records)}
    out = []
    for page_no, start, end in ranges:
        page = by_no.get(page_no, {})
        width, height = display_size(page) if page else (None, None)
        conf = page.get("mean_confidence")
        meta = [e(page.get("source", "text")), f"{len(page.get('words') or [])} words"]
        if conf is not None:
            meta.append(f"mean confidence {float(conf):.1f}")
        if page.get("rotation") and turn(page):
            meta.append(f"/Rotate {e(page['rotation'])}")
        elif page.get("rotation"):
            meta.append(f"turned {e(page['rotation'])}\u00b0 to read")
        if page.get("perspective_corrected"):
            meta.append("perspective corrected")
        figure = ""
        if width and height:
            picture = images.get(page_no)
            tpl = (f'<template><img src="{picture}" alt="Page {page_no} as the text was read" decoding="async"></template>'
                   if picture else "")
            none = "" if picture else '<p class="nopic">No picture of this page.</p>'
            figure = (f'<div class="frame" data-page="{page_no}" style="aspect-ratio:{float(width):g}/{float(height):g}" '
                      f'data-width="{float(width):g}" data-height="{float(height):g}" data-units="{e(page.get("units"))}">'
                      f'{tpl}{none}</div><script type="application/json" id="w-{page_no}">'
                      f'{_json_script(word_boxes(page, start, _entity_marks(placed, start, end)))}</script>')
        body = spanmod.render_text(text, start, end, placed)
        out.append(
            f'<section class="page" id="p-{page_no}" aria-labelledby="p-{page_no}-h">'
            f'<h3 id="p-{page_no}-h">Page {page_no} <span class="meta">{SEP.join(meta)}</span></h3>'
            f'<div class="page-grid">{figure}<div class="text" data-start="{start}" data-end="{end}" '
            f'aria-label="Text of page {page_no}">{body}</div></div></section>'
        )
    if not out:
        return "<p>No text for this document (see the job timeline).</p>"
    return "".join(out)


def renditions_html(data: ReviewData, blobs: dict[str, bytes]) -> str:
    if not data.renditions:
        return "<p>No renditions.</p>"
    rows = []
    for r in data.renditions:
        blob = blobs.get(r["name"])
        cell = "not inlined (format or size)"
        if blob is not None:
            uri = f"data:{r['mime']};base64,{base64.b64encode(blob).decode('ascii')}"
            cell = (f'<img src="{uri}" alt="{e(r["name"])} rendition" decoding="async" '
                    f'width="{int(r["width"])}" height="{int(r["height"])}">')
        rows.append(f'<figure class="rendition"><figcaption><b>{e(r["name"])}</b> {e(r["format"])}, '
                    f'{int(r["width"])}\u00d7{int(r["height"])} px, {int(r["bytes"]):,} bytes</figcaption>{cell}</figure>')
    return '<div class="renditions">' + "".join(rows) + "</div>"


def _table(heads: list[str], rows: list[list[str]], css: str = "") -> str:
    return (f'<div class="scroll"><table class="{css}"><thead><tr>' + "".join(f'<th scope="col">{h}</th>' for h in heads)
            + "</tr></thead><tbody>" + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
            + "</tbody></table></div>")


def _costs(value: Any, path: str = "") -> list[tuple[str, Any]]:
    """Every manifest entry whose key names a cost, wherever it sits."""
    found = []
    if isinstance(value, dict):
        for k, v in value.items():
            p = f"{path}.{k}" if path else str(k)
            if "cost" in str(k).lower():
                found.append((p, v))
            else:
                found += _costs(v, p)
    return found


def manifest_html(manifest: dict[str, Any] | None) -> str:
    if not manifest:
        return "<p>No manifest.json (the document has not reached a final state, or its results are gone).</p>"
    out = []
    timings = manifest.get("timings") or {}
    if timings:
        rows = []
        for kind, t in timings.items():
            t = t if isinstance(t, dict) else {"seconds": t}
            stages = ", ".join(f"{e(k)} {float(v):.3f} s" for k, v in (t.get("stages") or {}).items()
                               if isinstance(v, (int, float)))
            seconds = t.get("seconds")
            rows.append([e(kind), e(t.get("status", "")), e(t.get("tries", "")),
                         f"{float(seconds):.2f}" if isinstance(seconds, (int, float)) else "", stages])
        out.append("<h3>Timings</h3>" + _table(["Job", "Status", "Tries", "Seconds", "Stages"], rows))
    versions = manifest.get("tool_versions") or {}
    if versions:
        out.append("<h3>Tool versions</h3>" + _table(["Tool", "Version"], [[e(k), e(v)] for k, v in versions.items()]))
    costs = _costs(manifest)
    out.append("<h3>Estimated cost</h3>" + (
        _table(["Item", "Value"], [[e(k), f"<code>{e(json.dumps(v, ensure_ascii=False))}</code>"] for k, v in costs])
        if costs else "<p>No cost estimate in this manifest.</p>"))
    out.append('<details><summary>manifest.json</summary><pre class="json">'
               + e(json.dumps(manifest, indent=2, ensure_ascii=False, sort_keys=True)) + "</pre></details>")
    return "".join(out)


def _duration(job: dict[str, Any]) -> str:
    a, b = job.get("started_at"), job.get("stopped_at")
    if isinstance(a, datetime) and isinstance(b, datetime):
        return f"{(b - a).total_seconds():.2f}"
    return ""


def _job_cell(j: dict[str, Any]) -> str:
    """The kind, and for an array-shape row where it ran: the Batch job, the child, the try."""
    from pipeline.history import row_place

    place = row_place(j["id"], j["kind"], j.get("name"))
    if place is None:
        return e(j["kind"])
    child = f"child {place.array_index} of array job" if place.array_index is not None else "job"
    return (f'{e(j["kind"])} <small>try {e(place.document_try)}: {child} <code>{e(place.batch_job_id)}</code>, '
            f'document {e(place.position)} of its slice</small>')


def _stage_rows(j: dict[str, Any]) -> list[list[str]]:
    """An array-shape row's stages (its child ran all three): one line each, under the row."""
    from pipeline.history import row_place, stage_rows

    if row_place(j["id"], j["kind"], j.get("name")) is None:
        return []
    rows = []
    for kind, t in stage_rows(j.get("result")).items():
        seconds = t["seconds"]
        rows.append([f"&nbsp;&nbsp;&rsaquo; {e(kind)}",
                     f'<span class="st st-{t["status"].lower()}">{e(t["status"])}</span>', "", "", "", "", "",
                     f"{float(seconds):.2f}" if isinstance(seconds, (int, float)) else ""])
    return rows


def timeline_html(data: ReviewData) -> str:
    if not data.jobs:
        return "<p>No jobs recorded.</p>"
    kinds = {j["id"]: j["kind"] for j in data.jobs}
    for j in data.jobs:  # the array shape: a unit's events are its document rows'
        if j["kind"] == "process" and "#" in j["id"]:
            kinds[j["id"].rpartition("#")[0]] = f'process ({j["id"].rpartition("#")[0]})'
    out = []
    for attempt in sorted({j["attempt"] for j in data.jobs}):
        jobs = [j for j in data.jobs if j["attempt"] == attempt]
        rows = []
        for j in jobs:
            rows.append([_job_cell(j), f'<span class="st st-{e(j["status"]).lower()}">{e(j["status"])}</span>',
                         e(j["tries"]), e(j["exit_code"]),
                         e(" ".join(x for x in (j.get("reason_code"), j.get("reason_message"),
                                                j.get("status_reason")) if x)),
                         _when(j["started_at"]), _when(j["stopped_at"]), _duration(j)])
            rows.extend(_stage_rows(j))
        out.append(f"<h3>Attempt {attempt}</h3>" + _table(
            ["Job", "State", "Tries", "Exit code", "Reason", "Started", "Stopped", "Seconds"], rows))
        ids = {j["id"] for j in jobs} | {j["id"].rpartition("#")[0] for j in jobs
                                          if j["kind"] == "process" and "#" in j["id"]}
        events = [ev for ev in data.events if ev["job_id"] in ids]
        if events:
            rows = [[_when(ev["received_at"]), e(kinds.get(ev["job_id"], "?")),
                     f'<span class="st st-{e(ev["status"]).lower()}">{e(ev["status"])}</span>', e(ev["tries"]),
                     e(ev["exit_code"]), e(ev["status_reason"])] for ev in events]
            out.append(f'<details><summary>State changes of attempt {attempt} ({len(events)})</summary>'
                       + _table(["Received", "Job", "State", "Try", "Exit code", "Reason"], rows, "events") + "</details>")
    return "".join(out)


def header_html(data: ReviewData) -> str:
    d = data.document
    name = str(d.get("object_key") or "").rsplit("/", 1)[-1]
    reason = " ".join(x for x in (d.get("reason_code"), d.get("reason_message")) if x)
    facts = [("Document", f"<code>{e(d['id'])}</code>"), ("File", e(name)),
             ("Status", f'<span class="st st-{e(d["status"]).lower()}">{e(d["status"])}</span>'
              + (f" ({e(reason)})" if reason else "")),
             ("Attempt", e(d.get("attempt"))), ("Format", e(d.get("file_format"))), ("Pages", e(d.get("page_count"))),
             ("Size", f"{int(d['size']):,} bytes" if d.get("size") is not None else ""),
             ("Received", _when(d.get("created_at")))]
    return "<dl class=\"facts\">" + "".join(f"<div><dt>{k}</dt><dd>{v}</dd></div>" for k, v in facts) + "</dl>"


def legend_html() -> str:
    chips = "".join(f'<li><span class="chip {ents.css_category(c)}">{e(label)}</span></li>'
                    for c, label in ents.CATEGORY_LABELS.items())
    chips += '<li><span class="chip attr">attribute (dose, value…)</span></li>'
    chips += '<li><span class="chip cat-medical-condition neg">negated</span></li>'
    boxes = ("".join(f'<li><span class="swatch box-{c}"></span>{label}</li>' for c, label in
                     (("h", "confidence \u2265 90"), ("m", "70\u201390"), ("l", "below 70 (dotted)"),
                      ("t", "PDF text layer (no confidence)"))))
    boxes += '<li><span class="swatch box-h on-medication"></span>tinted: a word of an entity (its category colour)</li>'
    return f'<ul class="legend" aria-label="Entity categories">{chips}</ul><ul class="legend" aria-label="Word boxes">{boxes}</ul>'


def page(data: ReviewData, images: dict[int, str], renditions: dict[str, bytes]) -> str:
    """The complete HTML document."""
    text = data.text or ""
    ranges = spanmod.page_ranges(text, data.pages) if (data.pages or text) else []
    placed, left_out = spanmod.place(ents.spans(data.entities), ranges, len(text))
    script = _asset("page.js")
    script_hash = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    csp = (f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-{script_hash}'; "
           "base-uri 'none'; form-action 'none'")
    count = len(ranges)
    toc = "".join(f'<li><a href="#p-{n}">{n}</a></li>' for n, _, _ in ranges)
    parts = {
        "csp": e(csp),
        "title": e(f"medintake review {data.document['id'][:12]}"),
        "style": _asset("page.css"),
        "script": script,
        "header": header_html(data),
        "legend": legend_html(),
        "toc": toc,
        "page_count": str(count),
        "pages": pages_html(data, images, placed),
        "entities": ents.groups_html(data.entities, left_out),
        "renditions": renditions_html(data, renditions),
        "manifest": manifest_html(data.manifest),
        "timeline": timeline_html(data),
    }
    # One pass over the template only: text from the document can never be taken for a slot.
    return re.sub(r"\{\{(\w+)\}\}", lambda m: parts[m.group(1)], _asset("page.html"))
