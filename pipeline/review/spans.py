"""Entity and attribute spans laid into the page texts as nested, non-crossing highlights.

HTML elements nest, spans in text need not: two entities can cross, and an entity can run over a
page break. A span that would cross an earlier one or a page break is not highlighted (it is
still listed with its group, marked "not highlighted"), so every highlight covers exactly
text[begin:end] of text.txt, which is what the tests hold the page to.
"""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Span:
    begin: int
    end: int
    anchor: str  # the element id of the highlight, e.g. "m-4"
    css: str  # classes
    tip: str  # tooltip text (newlines allowed)
    describedby: str  # id of the row with the details
    kind: str = "entity"  # "entity" | "attribute"
    children: list[Span] = field(default_factory=list)


def page_ranges(text: str, pages: list[dict[str, Any]] | None) -> list[tuple[int, int, int]]:
    """(page_no, start, end) of each page's text in text.txt, from pages.json's text_offset.

    Without pages.json the form feeds decide (text.txt separates pages with them).
    """
    starts: list[tuple[int, int]] = []
    if pages:
        starts = [(int(p.get("page_no", i + 1)), int(p.get("text_offset", 0))) for i, p in enumerate(pages)]
    else:
        pos = 0
        for i, part in enumerate(text.split("\f")):
            starts.append((i + 1, pos))
            pos += len(part) + 1
    ranges = []
    for i, (page_no, start) in enumerate(starts):
        end = starts[i + 1][1] - 1 if i + 1 < len(starts) else len(text)
        ranges.append((page_no, min(start, len(text)), max(min(end, len(text)), min(start, len(text)))))
    return ranges


def place(spans: list[Span], ranges: list[tuple[int, int, int]], length: int) -> tuple[list[Span], set[str]]:
    """Spans that can be highlighted (valid, inside one page, not crossing another), and the anchors left out."""
    def page_of(offset: int) -> int:
        for page_no, start, end in ranges:
            if start <= offset < end:
                return page_no
        return -1

    placed: list[Span] = []
    left_out: set[str] = set()
    stack: list[Span] = []
    for span in sorted(spans, key=lambda s: (s.begin, -s.end, s.kind != "entity")):
        if not (0 <= span.begin < span.end <= length) or page_of(span.begin) != page_of(span.end - 1):
            left_out.add(span.anchor)
            continue
        while stack and stack[-1].end <= span.begin:
            stack.pop()
        if stack and span.end > stack[-1].end:
            left_out.add(span.anchor)  # crosses the open span: would not nest
            continue
        placed.append(span)
        stack.append(span)
    return placed, left_out


def render_text(text: str, start: int, end: int, spans: list[Span]) -> str:
    """HTML of text[start:end] with the placed spans inside it as nested <mark> elements."""
    out: list[str] = []
    pos = start
    stack: list[Span] = []

    def close_until(limit: int) -> None:
        nonlocal pos
        while stack and stack[-1].end <= limit:
            top = stack.pop()
            out.append(html.escape(text[pos:top.end]))
            pos = top.end
            out.append("</mark>")

    for span in spans:
        if span.begin < start or span.end > end:
            continue
        close_until(span.begin)
        out.append(html.escape(text[pos:span.begin]))
        pos = span.begin
        out.append(
            f'<mark id="{span.anchor}" class="{span.css}" tabindex="0" data-begin="{span.begin}" '
            f'data-end="{span.end}" data-tip="{html.escape(span.tip)}" aria-describedby="{span.describedby}">'
        )
        stack.append(span)
    close_until(end)
    out.append(html.escape(text[pos:end]))
    return "".join(out)
