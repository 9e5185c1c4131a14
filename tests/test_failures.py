"""Infrastructure failures: nothing is lost, nothing is doubled.

A tracker that fails gets the same event again; a notice that cannot be published stays in the
outbox until it can; a database that is down is a retryable error.
"""
from __future__ import annotations

import pytest
from sqlalchemy import text

from compute.runtime import LocalRuntime
from conftest import FILES, read_notices
from pipeline import repository
from pipeline.errors import ExitCode, TransientError
from pipeline.notify import FileNotifier, flush_outbox
from pipeline.settings import Settings


def test_tracker_failure_redelivers_the_event(settings):
    runtime = LocalRuntime(settings)
    real_handle = runtime.tracker.handle
    failures = {"left": 3}

    def flaky(event):  # the database answers "locked" / the tracker Lambda times out
        if event["detail"]["status"] == "SUCCEEDED" and failures["left"]:
            failures["left"] -= 1
            raise TransientError("database unavailable")
        return real_handle(event)

    runtime.compute.listeners[0] = flaky
    doc_id = runtime.submit(FILES / "digital_referral.pdf").document_id
    runtime.run_until_final([doc_id], max_seconds=300)
    assert failures["left"] == 0
    assert repository.get_document(settings, doc_id).status == "COMPLETED"
    assert len(read_notices(settings)) == 1


class BrokenThenWorking(FileNotifier):
    def __init__(self, path, failures: int) -> None:
        super().__init__(path)
        self.failures = failures

    def publish(self, payload):
        if self.failures:
            self.failures -= 1
            raise TransientError("SNS publish failed (EndpointConnectionError)")
        super().publish(payload)


def test_unpublished_notice_stays_in_the_outbox_until_sent(settings):
    runtime = LocalRuntime(settings)
    notifier = BrokenThenWorking(settings.effective_notices_path, failures=1)
    runtime.tracker.notifier = notifier
    doc_id = runtime.submit(FILES / "empty.pdf").document_id
    # The first publish fails inside the tracker: the event is redelivered, the decision is
    # already committed, so the outbox row is what carries the notice.
    runtime.compute.run(until=lambda: runtime.final([doc_id]), max_seconds=300)
    assert repository.get_document(settings, doc_id).status == "REJECTED"
    # The redelivered event found the decision made and sent the waiting notice itself.
    assert notifier.failures == 0 and repository.unsent_notices(settings) == []
    flush_outbox(settings, notifier)  # nothing left to send twice
    notices = read_notices(settings)
    assert [(n["document_id"], n["status"], n["reason_code"]) for n in notices] == [(doc_id, "REJECTED", "empty_file")]
    assert repository.unsent_notices(settings) == []


def test_database_down_is_a_retryable_error(tmp_path):
    from pipeline import database

    settings = Settings.load(data_dir=tmp_path, database_url="mysql+pymysql://nobody:x@127.0.0.1:9/none",
                             database_retry_seconds=1)  # waited out with back-off, then given up
    with pytest.raises(TransientError) as err:
        with database.transaction(settings) as s:
            s.execute(text("SELECT 1"))
    assert err.value.exit_code == ExitCode.TRANSIENT
    assert "nobody" not in str(err.value)


def test_a_listener_that_keeps_failing_stops_the_run(settings):
    runtime = LocalRuntime(settings)
    runtime.compute.listener_patience = 0.5

    def down(event):
        raise TransientError("database unavailable")

    runtime.compute.listeners[0] = down
    doc_id = runtime.submit(FILES / "digital_referral.pdf").document_id
    with pytest.raises(TransientError):
        runtime.run_until_final([doc_id], max_seconds=120)
    procs = [j.proc for j in runtime.compute.jobs.values() if j.proc is not None]
    assert all(p.poll() is not None for p in procs)  # workers were stopped, not orphaned
