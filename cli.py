"""The ``medintake`` command line. Exit statuses are decided here and nowhere else.

    medintake process PATH...     files or folders -> text, entities, renditions, rows, notices
    medintake watch DIR           process files as they appear (local stand-in for upload events)
    medintake reprocess ...       new attempts, by ids or filters (--dry-run, rate-limited)
    medintake queue status        queue health: counts, the oldest RUNNABLE job and why, failures
    medintake documents list|show documents by status, reason, time, prefix; one in detail
    medintake jobs show JOB       a job's attempts, state changes and log tail
    medintake notices list|resend|confirm   the notice outbox; unconfirmed notices (operator)
    medintake deploy              the AWS stack per region, job definitions, schema
    medintake show DOC_ID         one offline HTML page: what the pipeline saw (PHI: written 0600)
    medintake entities            JSON lines {"id", "text"} on stdin -> {"id", "entities"} on stdout
    medintake db upgrade          create or migrate the schema
"""
from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from pipeline.errors import ConfigError, MedintakeError
from pipeline.settings import Settings

EXIT_SOME_NOT_COMPLETED = 1


_GLOBALS_KEY = "medintake.global_options"


class GlobalOption(click.Option):
    """An option every command takes, typed before or after the command name (see GLOBAL_OPTIONS).

    Its value is not passed to the command's function but kept in one record for the whole
    invocation (the root context's meta); commands read it with ``_global(ctx, name)``. The root
    context records whatever it resolved (typed, environment or default); a subcommand's context
    records only a value typed on the command line. So the value typed last wins, and a default
    after the command name never replaces a value typed before it.

    The record is made after click has noted where the value came from: click 8.4 runs an
    option's callback before that, so a callback cannot tell a default from a typed value.
    Give each global option an explicit default (click >= 8.2 may otherwise report a sentinel).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("expose_value", False)
        super().__init__(*args, **kwargs)

    def handle_parse_result(self, ctx: click.Context, opts: Mapping[str, Any],
                            args: list[str]) -> tuple[Any, list[str]]:
        value, args = super().handle_parse_result(ctx, opts, args)
        record = ctx.find_root().meta.setdefault(_GLOBALS_KEY, {})
        typed = ctx.get_parameter_source(self.name) in (ParameterSource.COMMANDLINE, ParameterSource.PROMPT)
        if typed or self.name not in record:
            record[self.name] = value
        return value, args


def _verbose(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    """-v turns logging on wherever it is typed (before or after the command name)."""
    if value and not ctx.resilient_parsing:
        from pipeline.logs import configure_logging

        configure_logging("INFO")
    return value


# The one place to add a global option: every command and group of `medintake` takes these.
GLOBAL_OPTIONS: tuple[GlobalOption, ...] = (
    GlobalOption(["--data-dir"], type=click.Path(file_okay=False, path_type=Path), default=None,
                 help="Data folder (database, bucket folder, notices). "
                      "Default: $MEDINTAKE_DATA_DIR or ./.medintake"),
    GlobalOption(["-v", "--verbose"], is_flag=True, default=False, callback=_verbose,
                 help="Log progress (ids and codes only) to stderr."),
)


def _global(ctx: click.Context, name: str) -> Any:
    """A global option's value: the one typed last, else the default.

    Read it inside a command, not in a group's callback: a group's callback runs before the
    options after the command name are parsed.
    """
    return ctx.find_root().meta.get(_GLOBALS_KEY, {}).get(name)


class _Group(click.Group):
    """A group whose commands and subgroups (at any depth) all take GLOBAL_OPTIONS.

    The options are attached when a command is added (``@group.command()``, ``@group.group()``
    and ``add_command`` all go through here), so a new subcommand cannot forget them.
    """

    group_class = type  # subgroups made with @group.group() are of this class too

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        cmd.params.extend(opt for opt in GLOBAL_OPTIONS if opt not in cmd.params)
        super().add_command(cmd, name)


def _settings(ctx: click.Context, **overrides) -> Settings:
    try:
        return Settings.load(data_dir=_global(ctx, "data_dir"), **overrides)
    except ConfigError as exc:
        raise click.ClickException(f"{exc.message}. {exc.fix}") from None


@click.group(cls=_Group, params=list(GLOBAL_OPTIONS), context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """medintake: searchable text, medical entities and renditions from medical uploads.

    Global options go before or after the command name (each command's --help lists them).
    """


def _fail(exc: MedintakeError) -> None:
    """Our errors end the command with their own exit code and fix-it sentence, no traceback."""
    click.echo(f"error: {exc.message}. {exc.fix}".rstrip(), err=True)
    sys.exit(int(exc.exit_code))


def _stop_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so running workers (own process groups) are stopped too."""
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))


def _expand(paths: tuple[Path, ...]) -> list[tuple[str, Path]]:
    """(as given, file) pairs in the order given; a folder's files sorted by name."""
    out: list[tuple[str, Path]] = []
    for p in paths:
        if p.is_dir():
            for child in sorted(c for c in p.rglob("*") if c.is_file() and not c.name.startswith(".")):
                out.append((str(child), child))
        else:
            out.append((str(p), p))
    return out


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per input per line.")
@click.option("--workers", type=int, default=None, help="Worker processes (default: CPU count).")
@click.pass_context
def process(ctx: click.Context, paths: tuple[Path, ...], as_json: bool, workers: int | None) -> None:
    """Process files or folders end to end and wait until every document is final."""
    from compute.runtime import LocalRuntime
    from pipeline import repository

    settings = _settings(ctx, workers=workers)
    _stop_on_sigterm()
    inputs = _expand(paths)
    if not inputs:
        raise click.UsageError("no files found in the given paths")
    try:
        with LocalRuntime(settings) as runtime:
            submitted = runtime.submit_many(inputs)  # one event: one array job in the array shape
            ids = [s.document_id for s in submitted]
            _run_with_progress(runtime, ids, show=sys.stdout.isatty() and not as_json)
        docs = repository.find_documents(settings, set(ids))
    except MedintakeError as exc:
        _fail(exc)
    rows = []
    for s in submitted:
        doc = docs[s.document_id]
        rows.append({
            "input": s.input,
            "document_id": doc.id,
            "status": doc.status,
            "reason_code": doc.reason_code,
            "outputs": runtime.outputs(doc.id),
        })
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, ensure_ascii=False))
    else:
        _print_table(settings, rows, docs)
    if any(r["status"] != "COMPLETED" for r in rows):
        sys.exit(EXIT_SOME_NOT_COMPLETED)


def _run_with_progress(runtime, ids: list[str], show: bool) -> None:
    unique = list(dict.fromkeys(ids))
    if not show:
        runtime.run_until_final(unique)
        return
    with click.progressbar(length=len(unique), label="processing", show_pos=True) as bar:
        state = {"done": 0}

        def on_step() -> None:
            from pipeline import repository
            from pipeline.models import FINAL_STATUSES

            docs = repository.find_documents(runtime.settings, unique)
            done = sum(1 for d in docs.values() if d.status in FINAL_STATUSES)
            if done > state["done"]:
                bar.update(done - state["done"])
                state["done"] = done

        runtime.run_until_final(unique, on_step=on_step)


def _print_table(settings: Settings, rows: list[dict], docs: dict) -> None:
    from pipeline import repository

    header = ("input", "document", "status", "reason", "pages", "entities")
    lines = [header]
    for r in rows:
        doc = docs[r["document_id"]]
        counts = repository.counts_for(settings, doc.id) if doc.status == "COMPLETED" else {}
        lines.append((r["input"], r["document_id"][:12], r["status"], r["reason_code"] or "",
                      str(doc.page_count or ""), str(counts.get("entities", ""))))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    for n, line in enumerate(lines):
        click.echo("  ".join(str(v).ljust(w) for v, w in zip(line, widths)).rstrip())
        if n == 0:
            click.echo("  ".join("-" * w for w in widths))
    for r in rows:
        doc = docs[r["document_id"]]
        if doc.reason_message:
            click.echo(f"  {r['input']}: {doc.reason_message}")
    done = sum(1 for r in rows if r["status"] == "COMPLETED")
    if settings.store_backend == "s3":
        where = f"s3://{settings.bucket}/{settings.results_prefix}"
    else:
        where = f"{settings.effective_store_root / settings.bucket}/{settings.results_prefix}"
    click.echo(f"\n{done} of {len(rows)} completed. Results: {where}<document>/ (--json lists every file)")


@main.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--interval", type=float, default=2.0, show_default=True, help="Seconds between scans.")
@click.option("--once", is_flag=True, help="Process what is there now, then exit.")
@click.pass_context
def watch(ctx: click.Context, directory: Path, interval: float, once: bool) -> None:
    """Process files as they appear in DIRECTORY (a file is taken once its size is stable)."""
    from compute.runtime import LocalRuntime
    from pipeline import repository
    from pipeline.models import FINAL_STATUSES

    settings = _settings(ctx)
    _stop_on_sigterm()
    try:
        runtime = LocalRuntime(settings)
    except MedintakeError as exc:
        _fail(exc)
    seen: dict[Path, tuple[int, float]] = {}
    sizes: dict[Path, int] = {}
    pending: dict[str, str] = {}
    try:
        while True:
            ready: list[tuple[str, Path]] = []
            for display, path in _expand((directory,)):
                stat = path.stat()
                sig = (stat.st_size, stat.st_mtime)
                if seen.get(path) == sig:
                    continue
                if not once and sizes.get(path) != stat.st_size:
                    sizes[path] = stat.st_size  # still being written? look again next scan
                    continue
                seen[path] = sig
                ready.append((display, path))
            # One event per scan: in the array shape, the files of a scan run as one array job.
            for submitted in runtime.submit_many(ready) if ready else []:
                pending[submitted.document_id] = submitted.input
            deadline = time.monotonic() + interval
            while time.monotonic() < deadline or (once and pending):
                runtime.compute.step()
                docs = repository.find_documents(settings, list(pending))
                for doc_id, doc in docs.items():
                    if doc.status in FINAL_STATUSES:
                        click.echo(json.dumps({"input": pending.pop(doc_id), "document_id": doc_id,
                                               "status": doc.status, "reason_code": doc.reason_code}))
                time.sleep(0.1)
            if once:
                return
    except KeyboardInterrupt:
        pass
    finally:
        runtime.close()


def _stdin_is_terminal() -> bool:
    """Whether a person can answer a prompt (tests stand in for one by replacing this)."""
    return sys.stdin.isatty()


_REPROCESS_EPILOG = """\b
Exit status:
  0  every selected document was submitted (local, waiting: and completed);
     also a dry run, and a selection that matched nothing
  1  a document failed or was rejected again, or was skipped or not submitted
  2  usage error, unknown document id, or refused: above --confirm-above
     without --yes and no terminal to ask, or the prompt answered no
  75 database or AWS unavailable; 78 bad settings, or (local) another
     medintake process holds the data folder
"""


@main.command(epilog=_REPROCESS_EPILOG)
@click.argument("document_ids", nargs=-1)
@click.option("--status", "statuses", multiple=True, type=click.Choice(["failed", "rejected", "stuck", "completed"]),
              help="Select by status (repeatable). stuck: RECEIVED/QUEUED/PROCESSING with no change for "
                   "--stuck-after; its unfinished jobs are terminated before the new attempt.")
@click.option("--reason", "reasons", multiple=True, metavar="CODE", help="Only this reason code (repeatable).")
@click.option("--since", default=None, metavar="WHEN",
              help="Last changed at or after WHEN: ISO time (UTC unless it says) or relative (30m, 2h, 3d).")
@click.option("--until", default=None, metavar="WHEN", help="Last changed before WHEN (same forms as --since).")
@click.option("--prefix", default=None, metavar="KEY_PREFIX",
              help="Only uploads whose object key starts with this (keys are never printed).")
@click.option("--stuck-after", default="1h", show_default=True, metavar="DURATION",
              help="How long without any change makes an unfinished document stuck.")
@click.option("--dry-run", is_flag=True, help="List what would run (id, status, attempt -> attempt+1, reason); "
                                               "change nothing.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask, however many documents are selected.")
@click.option("--confirm-above", type=click.IntRange(min=0), default=20, show_default=True,
              help="Ask before reprocessing more documents than this (refused without a terminal).")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Local compute: run the new attempts until final. AWS Batch never waits (the tracker "
                   "finishes them).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per document per line.")
@click.pass_context
def reprocess(ctx: click.Context, document_ids: tuple[str, ...], statuses: tuple[str, ...],
              reasons: tuple[str, ...], since: str | None, until: str | None, prefix: str | None,
              stuck_after: str, dry_run: bool, yes: bool, confirm_above: int, wait: bool, as_json: bool) -> None:
    """Run documents again: same id, a new attempt, outputs replaced, one notice per attempt.

    Select by DOCUMENT_IDS, by filters, or both (they combine; several --status are either).
    Without --status, ids select final documents and stuck ones. Submissions go through the
    compute backend the settings name: the local worker pool (waits until final unless
    --no-wait) or AWS Batch (submits at submit_rate per second, like one more dispatcher).

    \b
      medintake reprocess --status failed --since 2h --dry-run
      medintake reprocess --status failed --reason job_timeout --yes --json
      medintake reprocess --status stuck --stuck-after 2h
      medintake reprocess 3f2a... 9c41...
    """
    from pipeline import reprocess as rp

    settings = _settings(ctx)
    try:
        stuck_delta = rp.parse_duration(stuck_after)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--stuck-after") from None
    bounds = {}
    for name, text in (("since", since), ("until", until)):
        try:
            bounds[name] = rp.parse_when(text) if text else None
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint=f"--{name}") from None
    try:
        filters = rp.Filters(document_ids=document_ids, statuses=statuses, reasons=reasons, prefix=prefix,
                             stuck_after=stuck_delta, **bounds)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    styled = sys.stdout.isatty() and not as_json
    _stop_on_sigterm()
    waited = False
    try:
        if dry_run:
            selection = rp.select(settings, filters)
            _reprocess_check_ids(selection)
            _reprocess_print_plan(selection, as_json, styled)
            return
        if settings.compute_backend == "batch":
            from compute.batch import BatchComputeEnvironment
            from compute.ratelimit import TokenBucket
            from pipeline.dispatcher import Dispatcher
            from pipeline.notify import open_notifier
            from pipeline.store import open_store

            selection = rp.select(settings, filters)
            _reprocess_gate(selection, yes, confirm_above)
            # One more submitter at the dispatcher's rate; the same bucket paces TerminateJob calls.
            limiter = TokenBucket(settings.submit_rate)
            dispatcher = Dispatcher(settings, BatchComputeEnvironment(settings, limiter=limiter),
                                    open_store(settings), open_notifier(settings))
            outcomes = _reprocess_submit(settings, dispatcher, selection, limiter, styled)
        else:
            from compute.runtime import LocalRuntime

            with LocalRuntime(settings) as runtime:  # holds the data folder's lock: nothing else runs
                selection = rp.select(settings, filters)
                _reprocess_gate(selection, yes, confirm_above)
                outcomes = _reprocess_submit(settings, runtime.dispatcher, selection, None, styled)
                started = [o.candidate.document_id for o in outcomes if o.action == "submitted"]
                if wait and started:
                    _run_with_progress(runtime, started, show=styled)
                    waited = True
                elif started:
                    click.echo("note: local jobs run inside this command; with --no-wait they stop when it "
                               "exits and the documents stay QUEUED until `medintake reprocess --status stuck`.",
                               err=True)
        rows = _reprocess_rows(settings, outcomes, selection)
    except MedintakeError as exc:
        _fail(exc)
    _reprocess_print_rows(rows, as_json, styled)
    submitted = [r for r in rows if r["action"] == "submitted"]
    done = sum(1 for r in submitted if r["status"] == "COMPLETED")
    if not as_json:  # --json output stays pure JSON lines, even where stderr is shown with it
        summary = f"{len(submitted)} of {len(rows)} submitted"
        click.echo(summary + (f"; {done} completed" if waited else ""), err=True)
    bad = len(submitted) < len(rows) or (waited and done < len(submitted))
    sys.exit(EXIT_SOME_NOT_COMPLETED if bad else 0)


def _reprocess_check_ids(selection) -> None:
    if selection.missing:
        click.echo(f"error: no document with id {', '.join(selection.missing)}", err=True)
        sys.exit(2)


def _reprocess_gate(selection, yes: bool, confirm_above: int) -> None:
    """Unknown ids refuse the whole run; a large selection needs --yes or a person's answer."""
    from collections import Counter

    _reprocess_check_ids(selection)
    n = len(selection.documents)
    if n <= confirm_above or yes:
        return
    by_status = Counter(("stuck" if c.stuck else c.status.lower()) for c in selection.documents)
    summary = ", ".join(f"{k} {v}" for k, v in sorted(by_status.items()))
    if not _stdin_is_terminal():
        click.echo(f"refused: {n} document(s) selected ({summary}), more than --confirm-above {confirm_above}, "
                   "and no terminal to ask. Check them with --dry-run, then add --yes.", err=True)
        sys.exit(2)
    if not click.confirm(f"Reprocess {n} document(s) ({summary})?", default=False, err=True):
        click.echo("nothing reprocessed", err=True)
        sys.exit(2)


def _reprocess_submit(settings: Settings, dispatcher, selection, limiter, show: bool) -> list:
    from pipeline import reprocess as rp

    docs = selection.documents
    if not show or not docs:
        return rp.reprocess(settings, dispatcher, docs, limiter)
    with click.progressbar(length=len(docs), label="submitting", show_pos=True) as bar:
        return rp.reprocess(settings, dispatcher, docs, limiter, on_progress=lambda _outcome: bar.update(1))


def _reprocess_plan_row(c, action: str, note: str | None) -> dict:
    return {"document_id": c.document_id, "status": c.status, "reason_code": c.reason_code,
            "attempt": c.attempt, "next_attempt": c.next_attempt if action == "would-reprocess" else None,
            "stuck": c.stuck, "terminate_jobs": len(c.open_jobs) if action == "would-reprocess" else 0,
            "action": action, "note": note}


def _reprocess_print_plan(selection, as_json: bool, styled: bool) -> None:
    from pipeline.tables import render_table

    rows = [_reprocess_plan_row(c, "would-reprocess",
                                ("stuck" + (f"; terminate {len(c.open_jobs)} job(s) first" if c.open_jobs else ""))
                                if c.stuck else None)
            for c in selection.documents]
    rows += [_reprocess_plan_row(c, "skipped", "in flight, not stuck") for c in selection.ineligible]
    if as_json:
        for r in rows:
            click.echo(json.dumps(r))
    elif rows:
        table = [(r["document_id"], r["status"], r["reason_code"],
                  f"{r['attempt']} -> {r['next_attempt']}" if r["next_attempt"] else str(r["attempt"]),
                  r["action"], r["note"]) for r in rows]
        click.echo(render_table(("document", "status", "reason", "attempt", "action", "note"), table, styled))
    if not as_json:
        click.echo(f"dry run: {len(selection.documents)} document(s) would be reprocessed; nothing was changed",
                   err=True)


def _reprocess_rows(settings: Settings, outcomes: list, selection) -> list[dict]:
    from pipeline import repository

    docs = repository.find_documents(settings, [o.candidate.document_id for o in outcomes])
    rows = []
    for o in outcomes:
        c, d = o.candidate, docs.get(o.candidate.document_id)
        rows.append({"document_id": c.document_id, "attempt": d.attempt if d else o.attempt,
                     "status": d.status if d else None, "reason_code": d.reason_code if d else None,
                     "action": o.action, "previous_status": c.status, "previous_attempt": c.attempt,
                     "previous_reason_code": c.reason_code, "terminated_jobs": len(o.terminated),
                     "note": o.detail})
    for c in selection.ineligible:
        rows.append({"document_id": c.document_id, "attempt": c.attempt, "status": c.status,
                     "reason_code": c.reason_code, "action": "skipped", "previous_status": c.status,
                     "previous_attempt": c.attempt, "previous_reason_code": c.reason_code,
                     "terminated_jobs": 0, "note": "in flight, not stuck (see --stuck-after)"})
    return rows


def _reprocess_print_rows(rows: list[dict], as_json: bool, styled: bool) -> None:
    from pipeline.tables import render_table

    if as_json:
        for r in rows:
            click.echo(json.dumps(r))
        return
    if not rows:
        click.echo("nothing to reprocess", err=True)
        return
    table = [(r["document_id"], r["previous_status"],
              f"{r['previous_attempt']} -> {r['attempt']}" if r["attempt"] != r["previous_attempt"]
              else str(r["attempt"]), r["action"], r["status"], r["reason_code"], r["note"]) for r in rows]
    click.echo(render_table(("document", "was", "attempt", "action", "status", "reason", "note"), table, styled))


@main.command()
@click.argument("document_id")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write the page. Default: <data dir>/review/<DOCUMENT_ID>.html")
@click.option("--open", "open_it", is_flag=True, help="Open the page in the default browser.")
@click.pass_context
def show(ctx: click.Context, document_id: str, out: Path | None, open_it: bool) -> None:
    """Write one offline HTML page showing what the pipeline saw in a document.

    The page (pictures with word boxes, highlighted entities, renditions, manifest, job timeline)
    holds PHI: it is written readable by you only (0600) and never uploaded.
    """
    from pipeline import review

    settings = _settings(ctx)
    try:
        path = review.write(settings, document_id, out)
    except MedintakeError as exc:
        _fail(exc)
    click.echo(str(path))
    click.echo("note: the page holds PHI; it is readable by you only. Do not upload or share it.", err=True)
    if open_it:
        import webbrowser

        webbrowser.open(path.as_uri())


@main.command()
@click.option("--backend", type=click.Choice(["local", "comprehendmedical"]), default=None,
              help="Entities backend (default: the entities_backend setting).")
@click.pass_context
def entities(ctx: click.Context, backend: str | None) -> None:
    """Entities of JSON lines {"id", "text"} on stdin -> {"id", "entities"} lines on stdout.

    Any corpus can be scored without the rest of the pipeline: no database, no bucket. Errors name
    the line number only (a line's text may be PHI).
    """
    from jobs.entities.detect import detect_entities

    settings = _settings(ctx, entities_backend=backend)
    for number, line in enumerate(sys.stdin, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            doc_id, text = record["id"], record["text"]
            if not isinstance(text, str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise click.ClickException(f"line {number}: expected a JSON object with \"id\" and a string \"text\"") \
                from None
        try:
            found = detect_entities(text, settings)["Entities"]
        except MedintakeError as exc:
            _fail(exc)
        click.echo(json.dumps({"id": doc_id, "entities": found}, ensure_ascii=False))


@main.command()
@click.option("--region", "regions", multiple=True, required=True,
              help="AWS region to deploy to; repeat for several (each gets its own stack).")
@click.option("--env", "environment", type=click.Choice(["dev", "test", "prod"]), required=True)
@click.option("--worker-image", required=True,
              help="Worker image URI in the region's ECR, or a tag of the stack's repository (the git commit).")
@click.option("--cost-centre", default="medintake", show_default=True, help="Cost-allocation tag value.")
@click.option("--alarm-email", default="", help="E-mail subscribed to the alarm topic.")
@click.option("--parameter", "parameters", multiple=True, metavar="KEY=VALUE",
              help="Another template parameter (MaxVcpus=256, DatabaseInstanceClass=db.r6g.large...).")
@click.option("--migrate-with", type=click.Choice(["batch", "direct", "skip"]), default="batch", show_default=True,
              help="batch: a one-off Batch job in the VPC; direct: from this machine (needs a route to RDS).")
@click.option("--endpoint-url", default=None, help="Send every AWS call here (moto's server in tests).")
@click.option("--lambda-dependencies/--no-lambda-dependencies", default=True, show_default=True,
              help="pip-install the Lambdas' libraries into their zip (off: a layer or the test server).")
@click.option("--json", "as_json", is_flag=True, help="The outputs as JSON.")
def deploy(regions: tuple[str, ...], environment: str, worker_image: str, cost_centre: str, alarm_email: str,
           parameters: tuple[str, ...], migrate_with: str, endpoint_url: str | None,
           lambda_dependencies: bool, as_json: bool) -> None:
    """Create or update the stack in each region, register the job definitions, migrate the schema.

    Prints the outputs: upload API URL, bucket, job queue, notices topic. Exit 0 when every region
    is deployed; the first failing region stops the run with its reason.
    """
    import dataclasses
    import json
    import os

    from compute.deploy import DeploySpec, deploy as run_deploy

    extra = {}
    for item in parameters:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter("expected KEY=VALUE", param_hint="--parameter")
        extra[key] = value
    if endpoint_url:  # every client, including the ones the steps make (Secrets Manager), goes there
        os.environ["AWS_ENDPOINT_URL"] = endpoint_url
    spec = DeploySpec(regions=tuple(regions), environment=environment, worker_image=worker_image,
                      cost_centre=cost_centre, alarm_email=alarm_email, endpoint_url=endpoint_url,
                      migrate_with=migrate_with, lambda_dependencies=lambda_dependencies, parameters=extra)
    echo = (lambda line: click.echo(line, err=True))
    try:
        results = run_deploy(spec, echo=echo)
    except MedintakeError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(r) for r in results], indent=2, sort_keys=True))
        return
    shown = ("UploadApiUrl", "UploadsBucketName", "JobQueueArn", "NoticesTopicArn", "EcrRepositoryUri",
             "UserPoolId", "UserPoolClientId")
    for r in results:
        click.echo(f"{r.region}  {r.stack_name}  {r.action}  migration={r.migration}")
        for key in shown:
            if key in r.outputs:
                click.echo(f"  {key:<20} {r.outputs[key]}")


# ---- queue status (compute/queue_status.py, compute/batch_status.py, compute/queue_view.py) -------
class _Duration(click.ParamType):
    """30m, 2h, 1d, 90s (or plain seconds)."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        from compute.queue_status import parse_duration

        try:
            return parse_duration(str(value))
        except ValueError:
            self.fail(f"{value!r} is not a duration like 30m, 2h or 1d", param, ctx)


@main.group()
def queue() -> None:
    """Job queues: counts, stuck jobs and why, failures, latency."""


@queue.command("status")
@click.option("--window", type=_Duration(), default="1h", show_default=True,
              help="SUCCEEDED/FAILED counts and failure groups over this window (30m, 2h, 1d).")
@click.option("--stuck-after", type=_Duration(), default="30m", show_default=True,
              help="A RUNNABLE job older than this is stuck: warning and likely cause.")
@click.option("--max-failures", type=click.IntRange(min=0), default=10, show_default=True,
              help="Warn when more jobs than this FAILED over the window (per queue).")
@click.option("--region", "regions", multiple=True,
              help="AWS region (compute_backend=batch); repeat for several. Default: MEDINTAKE_AWS_REGION.")
@click.option("--watch", "watch_every", type=float, default=None, is_flag=False, flag_value=5.0, metavar="[SECONDS]",
              help="Redraw in place every SECONDS (default 5) until Ctrl-C (which exits 0).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object (with --watch: one per refresh, per line).")
@click.option("--endpoint-url", default=None, hidden=True, help="Send the Batch calls here (moto's server).")
@click.option("--now", "at", type=float, default=None, hidden=True,
              help="Report as of this Unix time (a fixed clock: tests, replaying a screen).")
@click.pass_context
def queue_status(ctx: click.Context, window: float, stuck_after: float, max_failures: int,
                 regions: tuple[str, ...], watch_every: float | None, as_json: bool, endpoint_url: str | None,
                 at: float | None) -> None:
    """Per job queue and state: counts, the oldest RUNNABLE job and the likely cause when it is
    stuck, failures grouped by status reason and exit code, documents finished and p50/p95
    upload-to-notice latency over the last hour (always from our database).

    Source: AWS Batch when compute_backend=batch (the job queue MEDINTAKE_JOB_QUEUE in each
    --region), else the local compute environment's database.

    \b
    Exit codes:
      0   healthy
      3   a warning: a RUNNABLE job older than --stuck-after, or more than
          --max-failures jobs FAILED over --window
      2   usage error
      75  AWS Batch or the database unreachable, or still throttling after retries
      78  configuration: no region, no such queue, credentials or permissions
    """
    from compute.queue_status import gather
    from compute.queue_view import render

    settings = _settings(ctx)
    if regions and settings.compute_backend != "batch":
        raise click.UsageError("--region applies to AWS Batch (MEDINTAKE_COMPUTE_BACKEND=batch)")
    styled = sys.stdout.isatty() and not as_json

    def once() -> int:
        report = gather(settings, regions=regions, window=window, stuck_after=stuck_after,
                        max_failures=max_failures, endpoint_url=endpoint_url, now=at)
        text = json.dumps(report.to_dict(), sort_keys=True) if as_json else render(report, styled)
        if watch_every is not None and not as_json:
            click.clear()
        click.echo(text)
        return report.exit_code

    try:
        if watch_every is None:
            sys.exit(once())
        while True:
            try:
                once()
            except MedintakeError as exc:
                if int(exc.exit_code) != 75:  # only passing trouble is worth watching through
                    raise
                click.echo(f"error: {exc.message} (retrying in {watch_every:g}s)", err=True)
            time.sleep(max(0.5, watch_every))
    except KeyboardInterrupt:
        sys.exit(0)
    except MedintakeError as exc:
        _fail(exc)


# ---- documents and jobs: history from our database (pipeline/history.py, compute/job_logs.py) ----
_HISTORY_EPILOG = """\b
Exit status:
  0  shown (an empty list too)
  2  usage error, or no document / job with that id
  75 database, AWS Batch or CloudWatch Logs unavailable
  78 bad settings, or AWS refused (region, permissions)
"""
_STATUS_CHOICES = ("received", "queued", "processing", "completed", "failed", "rejected")


def _when(value: Any) -> str | None:
    """A time as operators read it in a table: UTC, to the second."""
    from pipeline.history import aware

    return aware(value).strftime("%Y-%m-%d %H:%M:%S") if value is not None else None


def _took(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def _section(title: str, styled: bool) -> None:
    click.echo("")
    click.echo(click.style(title, bold=True) if styled else f"# {title}")


@main.group()
def documents() -> None:
    """Documents from our database: list with filters, show one (no PHI unless --show-phi)."""


@documents.command("list", epilog=_HISTORY_EPILOG)
@click.option("--status", "statuses", multiple=True, type=click.Choice(_STATUS_CHOICES, case_sensitive=False),
              help="Only this status (repeatable: either).")
@click.option("--reason", "reasons", multiple=True, metavar="CODE", help="Only this reason code (repeatable).")
@click.option("--since", default=None, metavar="WHEN",
              help="Last changed at or after WHEN: ISO time (UTC unless it says) or relative (30m, 2h, 3d).")
@click.option("--until", default=None, metavar="WHEN", help="Last changed before WHEN (same forms as --since).")
@click.option("--prefix", default=None, metavar="KEY_PREFIX",
              help="Only uploads whose object key starts with this (the key is printed only with --show-phi).")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True,
              help="At most this many, most recently changed first.")
@click.option("--show-phi", is_flag=True, help="Add the object key (it may hold a patient's name).")
@click.option("--json", "as_json", is_flag=True, help="A JSON array.")
@click.pass_context
def documents_list(ctx: click.Context, statuses: tuple[str, ...], reasons: tuple[str, ...], since: str | None,
                   until: str | None, prefix: str | None, limit: int, show_phi: bool, as_json: bool) -> None:
    """Documents, most recently changed first: id, status, attempt, reason, format, pages, times.

    The time window is on the last change (for a final document: when it became final), as for
    `medintake reprocess`, so the same filters list what it would pick. Duration: from the current
    attempt's first job to the final state (empty while in flight).

    \b
      medintake documents list --status failed --since 2h
      medintake documents list --status rejected --reason corrupt_file --json
    """
    from pipeline import history
    from pipeline.reprocess import parse_when
    from pipeline.tables import render_table

    settings = _settings(ctx)
    bounds = {}
    for name, text in (("since", since), ("until", until)):
        try:
            bounds[name] = parse_when(text) if text else None
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint=f"--{name}") from None
    filters = history.DocumentFilters(statuses=statuses, reasons=reasons, prefix=prefix, limit=limit, **bounds)
    try:
        page = history.list_documents(settings, filters, show_phi=show_phi)
    except MedintakeError as exc:
        _fail(exc)
    if as_json:
        rows = [history.to_json(r) for r in page.rows]
        if not show_phi:
            for r in rows:
                r.pop("object_key", None)
        click.echo(json.dumps(rows, indent=2))
        return
    styled = sys.stdout.isatty()
    headers = ["document", "status", "attempt", "reason", "format", "pages", "created", "updated", "duration"]
    table = [[r.document_id, r.status, r.attempt, r.reason_code, r.format, r.pages, _when(r.created_at),
              _when(r.updated_at), _took(r.duration_seconds)] + ([r.object_key] if show_phi else [])
             for r in page.rows]
    click.echo(render_table(headers + (["key"] if show_phi else []), table, styled))
    if page.total > len(page.rows):
        click.echo(f"{len(page.rows)} of {page.total} shown, most recently changed first (--limit for more)",
                   err=True)
    elif not page.rows:
        click.echo("no documents match", err=True)


@documents.command("show", epilog=_HISTORY_EPILOG)
@click.argument("document_id")
@click.option("--show-phi", is_flag=True, help="Add the object key and the first 500 characters of the text.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@click.pass_context
def documents_show(ctx: click.Context, document_id: str, show_phi: bool, as_json: bool) -> None:
    """One document: status, every attempt's jobs and notice, stage timings, outputs, counts."""
    from pipeline import history
    from pipeline.tables import render_pairs, render_table

    settings = _settings(ctx)
    try:
        d = history.show_document(settings, document_id, show_phi=show_phi)
    except MedintakeError as exc:
        _fail(exc)
    if as_json:
        out = history.to_json(d)
        if not show_phi:
            out.pop("object_key", None)
            out.pop("text_excerpt", None)
        click.echo(json.dumps(out, indent=2))
        return
    styled = sys.stdout.isatty()
    pairs = [("document", d.document_id), ("status", d.status), ("attempt", d.attempt),
             ("reason", d.reason_code), ("reason message", d.reason_message), ("format", d.format),
             ("pages", d.pages), ("language", d.language), ("size", d.size), ("created", _when(d.created_at)),
             ("updated", _when(d.updated_at)), ("duration", _took(d.duration_seconds))]
    if show_phi:
        pairs.insert(1, ("key", d.object_key))
    click.echo(render_pairs(pairs, styled))
    for a in d.attempts:
        label = "retired (half-submitted graph)" if a.attempt == 0 else str(a.attempt)
        _section(f"attempt {label}" + (" (current)" if a.attempt == d.attempt else ""), styled)
        # The array shape: one `process` row per try of the document; where it ran (the array
        # job, the child's index, the document's place in the child's slice) is in the columns.
        placed = any(j.batch_job_id for j in a.jobs)
        click.echo(render_table(("kind", "job", "status", "tries", "exit", "status reason", "started", "stopped",
                                 "duration") + (("try", "batch job", "index", "position") if placed else ()),
                                [(j.kind, j.job_id, j.status, j.tries, j.exit_code, j.status_reason,
                                  _when(j.started_at), _when(j.stopped_at), _took(j.duration_seconds))
                                 + ((j.document_try, j.batch_job_id, j.array_index, j.position) if placed else ())
                                 for j in a.jobs], styled))
        if a.notice:
            n = a.notice
            click.echo(f"notice: {n['status']}" + (f" ({n['reason_code']})" if n["reason_code"] else "")
                       + f", written {_when(n['created_at'])}, "
                       + (f"sent {_when(n['sent_at'])}" if n["sent_at"] else
                          f"UNCONFIRMED (may not have reached subscribers: medintake notices list, notice "
                          f"{n.get('notice_id')})" if n.get("state") == "unconfirmed" else "not sent yet"))
    _section("stage timings (current attempt, seconds)", styled)
    rows = []
    for kind, t in d.timings.items():
        rows.append((kind, "job", t["seconds"]))
        rows.extend((kind, stage, seconds) for stage, seconds in t["stages"].items())
    click.echo(render_table(("kind", "stage", "seconds"), rows, styled))
    _section("outputs", styled)
    click.echo(render_pairs(list(d.outputs.items()) or [("(none)", None)], styled))
    _section("counts", styled)
    click.echo(render_pairs(list(d.counts.items()), styled))
    if show_phi:
        _section(f"text (first {history.TEXT_EXCERPT_CHARS} characters; PHI)", styled)
        click.echo(d.text_excerpt if d.text_excerpt is not None else "(no text.txt)")


@main.group()
def jobs() -> None:
    """Jobs from our database, with their log tail (local files or CloudWatch Logs)."""


@jobs.command("show", epilog=_HISTORY_EPILOG)
@click.argument("job_id", metavar="JOB_ID|JOB_NAME")
@click.option("--lines", type=click.IntRange(min=0), default=40, show_default=True, help="Log lines to show.")
@click.option("--attempt", "try_no", type=click.IntRange(min=1), default=None,
              help="Whose log: this compute attempt (default: the latest).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@click.pass_context
def jobs_show(ctx: click.Context, job_id: str, lines: int, try_no: int | None, as_json: bool) -> None:
    """A job: its compute attempts (exit codes, status reasons, timings), every state change
    recorded, its stage timings and the tail of its log.

    The log is the local compute environment's file (<data dir>/logs/<kind>-<job>-<attempt>.log)
    or, with compute_backend=batch, the CloudWatch Logs stream DescribeJobs names (Batch keeps
    finished jobs about a day; after that the stream is not known).

    In the array shape (job_shape=array) JOB_ID may be a document's row (<child>#<position>: the
    document's part of its child's log), a child as Batch names it (<array job id>:<index>: its
    documents and compute attempts) or the array job's id (its children).
    """
    from compute.job_logs import job_log_tail
    from pipeline import history
    from pipeline.tables import render_pairs, render_table

    settings = _settings(ctx)
    try:
        job = history.show_job(settings, job_id)
    except MedintakeError as exc:
        _fail(exc)
    log_error: MedintakeError | None = None
    try:
        tail = job_log_tail(settings, job.job_id, lines=lines, attempt=try_no,
                            array_children=[c["job_id"] for c in job.children] if job.unit == "array" else None)
    except MedintakeError as exc:
        tail, log_error = None, exc
    if as_json:
        out = history.to_json(job)
        out["log"] = history.to_json(tail) if tail else {"error": log_error.message}
        click.echo(json.dumps(out, indent=2))
    else:
        styled = sys.stdout.isatty()
        click.echo(render_pairs([
            ("job", job.job_id), ("name", job.name), ("kind", job.kind), ("document", job.document_id),
            ("attempt", job.attempt), ("status", job.status), ("tries", job.tries), ("exit code", job.exit_code),
            ("status reason", job.status_reason), ("reason", job.reason_code),
            ("reason message", job.reason_message), ("created", _when(job.created_at)),
            ("started", _when(job.started_at)), ("stopped", _when(job.stopped_at)),
            ("duration", _took(job.duration_seconds))]
            + ([("unit", job.unit), ("batch job", job.batch_job_id), ("array index", job.array_index),
                ("position", job.position), ("document try", job.document_try), ("child", job.unit_job_id)]
               if job.unit != "job" else []), styled))
        if job.unit == "document":
            click.echo(f"(one document of the child {job.unit_job_id}: the attempts and state changes below are "
                       "the child's)")
        if job.children:
            _section(f"children ({len(job.children)})", styled)
            click.echo(render_table(("index", "child", "status", "tries", "exit", "documents", "failed"),
                                    [(c["index"], c["job_id"], c["status"], c["tries"], c["exit_code"],
                                      c["documents"], c["failed"]) for c in job.children], styled))
        if job.documents:
            _section(f"documents ({len(job.documents)})", styled)
            click.echo(render_table(("position", "row", "document", "attempt", "try", "status", "exit", "reason",
                                     "duration"),
                                    [(d["position"], d["job_id"], d["document_id"], d["attempt"], d["document_try"],
                                      d["status"], d["exit_code"], d["reason_code"], _took(d["seconds"]))
                                     for d in job.documents], styled))
        logs = tail.attempts if tail else {}
        _section("attempts" if job.unit != "array" else "attempts (an array job has none: its children do)", styled)
        click.echo(render_table(("try", "started", "stopped", "duration", "exit", "outcome", "status reason", "log"),
                                [(t.number, _when(t.started_at), _when(t.stopped_at), _took(t.duration_seconds),
                                  t.exit_code, t.outcome, t.status_reason, logs.get(t.number))
                                 for t in job.tries_detail], styled))
        _section("state changes", styled)
        click.echo(render_table(("time", "status", "tries", "exit", "status reason"),
                                [(_when(c.time), c.status, c.tries, c.exit_code, c.status_reason)
                                 for c in job.changes], styled))
        if job.stages:
            _section("stage timings (seconds)", styled)
            click.echo(render_pairs(list(job.stages.items()), styled))
        if tail is not None and tail.location:
            part = {"document": "this document's part, ", "child": "the child's whole log, "}.get(tail.section or "", "")
            _section(f"log, attempt {tail.attempt}, {part}last {lines} lines: {tail.location}", styled)
            if tail.note:
                click.echo(f"({tail.note})")
            click.echo("\n".join(tail.lines) if tail.lines else "(no lines)")
        elif tail is not None:
            _section("log", styled)
            click.echo(f"({tail.note})")
    if log_error is not None:
        click.echo(f"error: the log could not be read: {log_error.message}. {log_error.fix}".rstrip(), err=True)
        sys.exit(int(log_error.exit_code))


@main.group()
def notices() -> None:
    """The notice outbox: list notices by state; resend or confirm unconfirmed ones (docs/operators.md)."""


def _notice_row(n) -> dict[str, Any]:
    """No payload, no key: ids, states, counts, times and an error class only (no PHI)."""
    return {"id": n.id, "document_id": n.document_id, "attempt": n.attempt, "status": n.status,
            "state": n.state, "publish_tries": n.publish_tries, "created_at": _when(n.created_at),
            "unknown_since": _when(n.unknown_since), "sent_at": _when(n.sent_at), "last_error": n.last_error}


@notices.command("list")
@click.option("--state", "states", multiple=True, type=click.Choice(["pending", "publishing", "sent", "unconfirmed"]),
              help="Only this state (repeatable). Default: all but sent.")
@click.option("--limit", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="A JSON array.")
@click.pass_context
def notices_list(ctx: click.Context, states: tuple[str, ...], limit: int, as_json: bool) -> None:
    """Notices not yet known sent, oldest first; `unconfirmed` ones need an operator.

    An unconfirmed notice's publish had an unknown outcome (the tracker died inside the call, or
    SNS did not answer after the request went out): its subscribers got it once or not at all.
    Check with them (or the topic's delivery logs), then `medintake notices resend ID` or
    `medintake notices confirm ID`.
    """
    from pipeline import database, repository
    from pipeline.tables import render_table

    settings = _settings(ctx)
    try:
        database.upgrade(settings)
        rows = [_notice_row(n) for n in repository.notices(settings, states or
                                                             ("pending", "publishing", "unconfirmed"), limit)]
    except MedintakeError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    headers = ["notice", "document", "attempt", "status", "state", "tries", "created", "unknown since", "last error"]
    click.echo(render_table(headers, [[r["id"], r["document_id"], r["attempt"], r["status"], r["state"],
                                       r["publish_tries"], r["created_at"], r["unknown_since"], r["last_error"]]
                                      for r in rows], sys.stdout.isatty()))
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    click.echo(", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "no notices match", err=True)


@notices.command("resend")
@click.argument("notice_ids", nargs=-1, type=int, required=True)
@click.pass_context
def notices_resend(ctx: click.Context, notice_ids: tuple[int, ...]) -> None:
    """Publish unconfirmed notices again (their subscribers may get a second copy). Exit 1 if any was not unconfirmed."""
    from pipeline import repository
    from pipeline.notify import flush_outbox, open_notifier

    settings = _settings(ctx)
    try:
        taken = [i for i in notice_ids if repository.resend_notice(settings, i)]
        flush_outbox(settings, open_notifier(settings))
        sent = {i for i, state in repository.notice_states(settings, taken).items() if state == "sent"}
    except MedintakeError as exc:
        _fail(exc)
    for i in notice_ids:
        click.echo(f"notice {i}: " + ("sent" if i in taken and i in sent else
                                      "queued, not sent yet" if i in taken else "not unconfirmed: left alone"))
    sys.exit(0 if len(taken) == len(notice_ids) else 1)


@notices.command("confirm")
@click.argument("notice_ids", nargs=-1, type=int, required=True)
@click.pass_context
def notices_confirm(ctx: click.Context, notice_ids: tuple[int, ...]) -> None:
    """Record unconfirmed notices as sent without sending (the subscribers did get them). Exit 1 if any was not unconfirmed."""
    from pipeline import repository

    settings = _settings(ctx)
    try:
        done = [i for i in notice_ids if repository.confirm_notice(settings, i)]
    except MedintakeError as exc:
        _fail(exc)
    for i in notice_ids:
        click.echo(f"notice {i}: " + ("recorded as sent" if i in done else "not unconfirmed: left alone"))
    sys.exit(0 if len(done) == len(notice_ids) else 1)


@main.group()
def db() -> None:
    """Database schema commands."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@click.pass_context
def db_upgrade(ctx: click.Context, revision: str) -> None:
    """Create or migrate the schema to REVISION."""
    from pipeline import database

    settings = _settings(ctx)
    try:
        database.upgrade(settings, revision)
        click.echo(f"database at revision {database.current_revision(settings)}")
    except MedintakeError as exc:
        _fail(exc)


if __name__ == "__main__":
    main()
