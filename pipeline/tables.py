"""Plain tables for operator commands: aligned columns on a terminal (bold headers, coloured
states), tab-separated lines when piped so that `cut`, `awk` and `sort` work.

One renderer for every command (queue status, documents, jobs, reprocess) so they read alike.
The caller decides ``styled`` (``sys.stdout.isatty()`` at the CLI boundary); this module never
looks at the terminal itself, which keeps it testable and usable from a tmux capture.
"""
from __future__ import annotations

import re
from typing import Any, Iterable, Sequence

STATE_COLOURS = {
    "SUCCEEDED": "green", "COMPLETED": "green", "RUNNING": "cyan", "STARTING": "cyan",
    "RUNNABLE": "yellow", "PENDING": "yellow", "SUBMITTED": "yellow", "QUEUED": "yellow",
    "PROCESSING": "cyan", "RECEIVED": "yellow", "FAILED": "red", "REJECTED": "magenta",
    "WARN": "yellow", "STUCK": "red", "OK": "green",
}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def visible_len(text: str) -> int:
    return len(_ANSI.sub("", text))


def render_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], styled: bool = False) -> str:
    """The table as text: aligned and styled for a terminal, tab-separated when not."""
    body = [[cell(v) for v in row] for row in rows]
    if not styled:
        return "\n".join("\t".join(r) for r in [list(headers), *body])
    import click

    def paint(text: str) -> str:
        colour = STATE_COLOURS.get(text)
        return click.style(text, fg=colour) if colour else text

    widths = [max([len(h), *(len(r[i]) for r in body)]) for i, h in enumerate(headers)]
    lines = ["  ".join(click.style(h.ljust(w), bold=True) for h, w in zip(headers, widths)).rstrip()]
    for row in body:
        parts = []
        for i, (text, width) in enumerate(zip(row, widths)):
            numeric = bool(re.fullmatch(r"-?[\d.,]+[a-z%]*", text))
            padded = text.rjust(width) if numeric else text.ljust(width)
            parts.append(padded.replace(text, paint(text), 1))
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def render_pairs(pairs: Iterable[tuple[str, Any]], styled: bool = False) -> str:
    """Key/value lines (one object's details): aligned keys on a terminal, tab-separated when not."""
    items = [(k, cell(v)) for k, v in pairs]
    if not styled:
        return "\n".join(f"{k}\t{v}" for k, v in items)
    import click

    width = max((len(k) for k, _ in items), default=0)
    return "\n".join(f"{click.style(k.ljust(width), bold=True)}  {STATE_COLOURS.get(v) and click.style(v, fg=STATE_COLOURS[v]) or v}"
                     for k, v in items)
