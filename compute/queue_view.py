"""The text screen of ``medintake queue status``, through pipeline/tables.py like every operator
command: aligned and coloured on a terminal, tab-separated lines when piped.

Kept apart from the report (compute/queue_status.py) so the report stays data (``--json`` prints
it as is) and the screen can change without touching the diagnosis. Nothing here shows a file
name, an object key or any text: job names carry document ids only.
"""
from __future__ import annotations

from compute.batch_status import ALL_STATES
from compute.queue_status import StatusReport, format_duration
from pipeline.tables import render_pairs, render_table


def _wrap(line: str, styled: bool) -> str:
    """Long sentences folded for a terminal (100 columns); one line when piped, for grep."""
    if not styled:
        return line
    import textwrap

    return "\n".join(textwrap.wrap(line, width=100, subsequent_indent="    ", break_on_hyphens=False,
                                   break_long_words=False))


def _cap(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def render(report: StatusReport, styled: bool = False) -> str:
    window = format_duration(report.window_seconds)
    head = (f"medintake queue status  {report.generated_at:%Y-%m-%d %H:%M:%S} UTC  window {window}  "
            f"stuck after {format_duration(report.stuck_after_seconds)}")
    out = [head, ""]
    states = [s if s not in ("SUCCEEDED", "FAILED") else f"{s}/{window}" for s in ALL_STATES]
    rows = []
    for q in report.queues:
        health = "STUCK" if q.stuck else ("WARN" if q.warnings else "OK")
        rows.append([q.region, q.queue, *(q.counts.get(s, 0) for s in ALL_STATES),
                     format_duration(q.oldest_runnable_seconds), health])
    out.append(render_table(["REGION", "QUEUE", *states, "OLDEST RUNNABLE", "HEALTH"], rows, styled))

    for q in report.queues:
        if q.stuck and q.cause:
            out += ["", _wrap(f"STUCK  {q.queue} ({q.region}): job {q.oldest_runnable_id} ({q.oldest_runnable_name}) "
                              f"RUNNABLE for {format_duration(q.oldest_runnable_seconds)}", styled),
                    _wrap(f"  likely cause [{q.cause.code}]: {q.cause.message}", styled)]
        for w in q.warnings:
            if "FAILED over" in w:
                out += ["", _wrap(f"WARN   {w}", styled)]

    env_rows = [[q.queue, e.order, e.name, e.type, e.state, e.status, f"{_cap(e.used_vcpus)}/{_cap(e.max_vcpus)}",
                 e.status_reason or "-"] for q in report.queues for e in q.environments]
    queue_notes = [q for q in report.queues if q.state != "ENABLED" or q.status != "VALID"]
    out += ["", "Compute environments (queue order)"]
    for q in queue_notes:
        out.append(f"  job queue {q.queue}: {q.state}/{q.status} {q.status_reason or ''}".rstrip())
    out.append(render_table(["QUEUE", "ORDER", "ENVIRONMENT", "TYPE", "STATE", "STATUS", "vCPU USED/MAX", "REASON"],
                            env_rows, styled))

    fail_rows = [[q.queue, f.count, "-" if f.exit_code is None else f.exit_code, f.status_reason or "-"]
                 for q in report.queues for f in q.failures]
    out += ["", f"Failures over {window} (by status reason and exit code)"]
    out.append(render_table(["QUEUE", "COUNT", "EXIT", "STATUS REASON"], fail_rows, styled) if fail_rows
               else "  none")

    d = report.documents
    out += ["", "Documents, last hour (our database)"]
    if d.error:
        out.append(f"  unavailable: {d.error}")
    else:
        split = ", ".join(f"{k} {v}" for k, v in d.by_status.items()) or "none"
        out.append(render_pairs([
            ("finished", f"{d.finished} ({split})"),
            ("latency p50", format_duration(d.p50_seconds)),
            ("latency p95", format_duration(d.p95_seconds)),
            ("latency samples", d.latency_samples),
        ], styled))
    out += ["", "healthy" if not report.warnings else f"{len(report.warnings)} warning(s): exit 3"]
    return "\n".join(out)
