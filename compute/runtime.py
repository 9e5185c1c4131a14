"""Everything wired together on one machine: store, database, notifier, tracker, local compute
and dispatcher, as ``medintake process`` and ``medintake watch`` use them.

Uploading a local file goes through the same path as on AWS: the file is stored under the uploads
prefix, an S3 ``ObjectCreated`` notification is built for it and handed to the dispatcher, whose
jobs the local compute environment runs, whose state changes the tracker turns into final states
and notices.
"""
from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from compute.local import LocalComputeEnvironment, prestart_warm_server
from pipeline import database, repository
from pipeline.dispatcher import Dispatcher
from pipeline.errors import TransientError
from pipeline.events import UploadRef, s3_notification
from pipeline.models import FINAL_STATUSES, Document
from pipeline.notify import flush_outbox, open_notifier
from pipeline.settings import Settings
from pipeline.store import open_store
from pipeline.tracker import Tracker

log = logging.getLogger("medintake.runtime")


@dataclass(frozen=True)
class Submitted:
    input: str  # the path as the user gave it (shown to that user only; never logged)
    document_id: str


def upload_key(settings: Settings, path: Path) -> str:
    """uploads/<first 16 hex of sha256>/<file name>: two files of one name never overwrite."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return f"{settings.uploads_prefix}{h.hexdigest()[:16]}/{path.name}"


def _lock_data_dir(settings: Settings):
    import fcntl

    from pipeline.errors import ConfigError

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    fh = (settings.data_dir / ".lock").open("a")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise ConfigError(
            "another medintake process is running on this data folder",
            fix="Wait for it to finish (or stop it), or give this one its own --data-dir.",
        ) from None
    return fh


class LocalRuntime:
    """One per data folder at a time (a lock file says so): local jobs live in this process, so a
    document left mid-flight in the database can only belong to a process that is gone."""

    def __init__(self, settings: Settings, listeners=None) -> None:
        self.settings = settings
        # First of all: the warm server forked from this process must not inherit the lock or a
        # database connection (compute/warm_fork.py).
        prestart_warm_server(settings)
        self._lock = _lock_data_dir(settings)
        database.upgrade(settings)
        self.store = open_store(settings)
        self.notifier = open_notifier(settings)
        self.tracker = Tracker(settings, self.store, self.notifier)
        self.compute = LocalComputeEnvironment(settings, listeners=[self.tracker.handle, *(listeners or [])])
        self.dispatcher = Dispatcher(settings, self.compute, self.store, self.notifier)
        self.tracker.dispatcher = self.dispatcher  # array shape: a failed document is resubmitted alone

    def close(self) -> None:
        self.compute.shutdown()
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None

    def __enter__(self) -> "LocalRuntime":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def upload(self, path: Path) -> UploadRef:
        key = upload_key(self.settings, path)
        info = self.store.head(key) or self.store.put_file(key, path)
        return UploadRef(self.store.bucket, key, info.version_id, info.etag, info.size)

    def submit(self, path: Path, display: str | None = None) -> Submitted:
        """Store ``path`` as an upload and dispatch its S3 event; returns the document id."""
        return self.submit_many([(display or str(path), path)])[0]

    def submit_many(self, inputs: list[tuple[str, Path]]) -> list[Submitted]:
        """Store every file and dispatch them as one event (one S3 notification of many records,
        as an SQS batch brings them on AWS): in the array shape, one array job for all of them."""
        refs = [self.upload(path) for _, path in inputs]
        if refs:
            event = {"Records": [r for ref in refs for r in s3_notification(ref)["Records"]]}
            result = self.dispatcher.handle_event(event)
            if result["batchItemFailures"]:
                raise RuntimeError("the dispatcher could not take every upload")  # not expected: no ids locally
        for ref in refs:
            doc = repository.get_document(self.settings, ref.document_id)
            if doc.status not in FINAL_STATUSES and not self._has_local_jobs(doc):
                # Left mid-flight by an earlier process whose workers died with it: start again.
                attempt = repository.start_new_attempt(self.settings, doc.id, force=True)
                self.dispatcher.submit_graph(doc.id, attempt)
        return [Submitted(display, ref.document_id) for (display, _), ref in zip(inputs, refs)]

    def reprocess(self, document_id: str) -> int:
        attempt = repository.start_new_attempt(self.settings, document_id)
        if attempt:
            self.dispatcher.submit_graph(document_id, attempt)
        return attempt

    def _has_local_jobs(self, doc: Document) -> bool:
        ours = set(self.compute.jobs)
        # An array shape row's id is <child or plain job id>#<position>.
        return any(j.id.split("#", 1)[0] in ours for j in repository.jobs_for(self.settings, doc.id, doc.attempt))

    def final(self, document_ids: list[str]) -> bool:
        docs = repository.find_documents(self.settings, set(document_ids))
        return all(d.status in FINAL_STATUSES for d in docs.values())

    def run_until_final(self, document_ids: list[str], on_step=None, max_seconds: float | None = None,
                        check_every: float = 0.5) -> None:
        # The compute loop steps every 50 ms (reaping and starting workers is cheap), but asking the
        # database whether every document is final costs a query over all of them: at most every
        # ``check_every`` seconds, or a long batch's CLI spends more CPU polling than on any stage
        # (bench/README-pipeline.md, long batch: 1.6 of 2.5 CPU s for 50 documents).
        last_check = [float("-inf")]

        def done() -> bool:
            now = time.monotonic()
            if now - last_check[0] < check_every:
                return False
            last_check[0] = now
            try:
                if on_step is not None:
                    on_step()
                return self.final(document_ids)
            except TransientError:
                # This poll lost its connection (a killed session, a restart: the outage drill).
                # Not final yet; the next poll's transaction waits out an outage, bounded.
                return False

        self.compute.run(until=done, max_seconds=max_seconds)
        flush_outbox(self.settings, self.notifier)

    def outputs(self, document_id: str) -> dict[str, str]:
        """Output name -> local file path (folder store) or s3:// URI, from the manifest."""
        import json

        key = f"{self.settings.results_prefix}{document_id}/manifest.json"
        try:
            manifest = json.loads(self.store.get_bytes(key))
        except KeyError:
            return {}
        out = {}
        for name, okey in sorted(manifest.get("outputs", {}).items()):
            local = self.store.local_path(okey)
            out[name] = str(local) if local else f"s3://{self.store.bucket}/{okey}"
        return out
